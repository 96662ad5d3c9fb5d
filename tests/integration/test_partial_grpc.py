"""Paper 3 over real gRPC (issue 12): real worker servers on port 0 compute the design's V plain
sums in one answer, a real edge forwards them, and the master's round (the one collector with
the partial-recovery rule) ends at the first sufficient arrival set.

For EVERY straggler set of size s (n = 6 and 7), with those workers held until cancelled:
the recovered vector equals the direct sum of the recovered partitions' gradients (rescaled by
K / |R|) to 1e-12, covers at least ceil(alpha K) partitions, and no held worker was used.
"""

from __future__ import annotations

import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from edgecode.aggregator.logic import FORWARD, AggregatorLogic
from edgecode.aggregator.transport import GrpcWorkerClient
from edgecode.codes.partial_rule import PartialDecoder
from edgecode.codes.partial_schemes import partial_scheme, worker_encoding
from edgecode.learning.datasets import synthetic_least_squares
from edgecode.learning.models import get_model
from edgecode.records import PlacementHeader
from edgecode.rounds import Round, StreamSource
from edgecode.runtime.conversations import serve_conversation
from edgecode.runtime.metrics import WorkerMetrics
from edgecode.worker.logic import WorkerLogic
from edgecode.worker.service import WorkerServicer, add_worker_servicer

TOL = 1e-12
CALL_TIMEOUT = 20.0


class HeldWorker:
    """The real worker servicer; a held worker answers only once its call is cancelled."""

    def __init__(self, inner: WorkerServicer) -> None:
        self.inner = inner
        self.held = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def ComputeGradient(self, request: Any, context: Any) -> Any:
        if self.held.is_set():
            done = threading.Event()
            context.add_callback(done.set)
            done.wait(CALL_TIMEOUT)
        return self.inner.ComputeGradient(request, context)

    def ComputeGradients(self, requests: Any, context: Any) -> Any:
        """The edge's stream: a held worker answers a round once it is cancelled/superseded."""
        return serve_conversation(
            requests,
            lambda request, stop: [self._gradient(request, stop)],
            lambda request: int(request.sequence),
            lambda request: bool(request.cancel),
            self.inner._gradient_error,
        )

    def _gradient(self, request: Any, stop: threading.Event) -> bytes:
        if self.held.is_set():
            stop.wait(CALL_TIMEOUT)
        return self.inner._gradient(request, stop)


class _Stream:
    """The edge's forwarded answers as round-engine messages (what the master's transport
    yields for a FORWARD edge)."""

    def __init__(self, edge: AggregatorLogic, params: np.ndarray, round_: int) -> None:
        self.active = True
        self._on_cancel: list[Any] = []
        self._results = edge.run_round(
            "job", round_, params, 1, lambda: self.active, self._on_cancel.append
        )

    def __iter__(self) -> Any:
        from edgecode.rounds import Message

        for result in self._results:
            yield Message(result.worker, np.array(result.vector), timings=result.timings)

    def cancel(self) -> bool:
        """What gRPC does when the master cancels the stream: the edge's callbacks run."""
        self.active = False
        for callback in self._on_cancel:
            callback()
        return True


@pytest.mark.parametrize(
    ("n", "s", "alpha", "design"),
    [(6, 2, 0.8, "cyclic"), (6, 2, 0.7, "subset"), (7, 2, 0.75, "cyclic")],
)
def test_every_straggler_set_recovers_exactly_over_grpc(
    inproc_servers: Any, n: int, s: int, alpha: float, design: str
) -> None:
    scheme = partial_scheme(n, s, alpha, design)
    K = scheme.n_partitions
    data = synthetic_least_squares(12 * K, 3, np.random.default_rng(1))
    blocks = data.partition(K)
    model = get_model("least_squares")
    workers, names, addresses = [], [], []
    for i in range(n):
        encoding = worker_encoding(scheme, i)
        logic = WorkerLogic(f"w{i}", metrics=WorkerMetrics())
        header = PlacementHeader(
            job_id="job",
            model="least_squares",
            n_features=3,
            n_classes=1,
            partitions=encoding.partitions,
            coefficients=tuple(1.0 for _ in encoding.partitions),
            l2=0.0,
            n_partitions=K,
            epoch=1,
            rows=tuple(int(blocks[j][0].shape[0]) for j in encoding.partitions),
            groups=tuple(int(m) for m in np.argmax(encoding.sums, axis=0)),
        )
        builder = logic.begin_placement(header)
        for j in encoding.partitions:
            builder.add(j, *blocks[j])
        builder.finish()
        held = HeldWorker(WorkerServicer(logic))
        workers.append(held)
        names.append(f"w{i}")
        addresses.append(inproc_servers.serve([(add_worker_servicer, held, "edgecode.v1.Worker")]))
    edge = AggregatorLogic("edge", GrpcWorkerClient)
    edge.configure("job", names, addresses, FORWARD, CALL_TIMEOUT, epoch=1, message_rows=-1)
    decoder = PartialDecoder(scheme)
    need = math.ceil(alpha * K - 1e-12)
    rng = np.random.default_rng(7)
    errors, checked = [], 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for round_, stragglers in enumerate(itertools.combinations(range(n), s)):
            for i, worker in enumerate(workers):
                (worker.held.set if i in stragglers else worker.held.clear)()
            params = rng.standard_normal(4)
            collector = Round(
                {f"w{i}": i for i in range(n)}, decoder.response_shape(4), CALL_TIMEOUT
            )
            stream = _Stream(edge, params, round_)
            collector.add(StreamSource("edge", stream, stream.cancel, pool))
            outcome = collector.decide(decoder.rule(4, rotation=round_))
            decoded = outcome.decoded
            recovered = decoded.recovered
            assert recovered is not None and len(recovered) >= need
            assert not set(decoded.used) & set(stragglers), (stragglers, decoded.used)
            partials = np.stack(
                [model.gradient(params, *blocks[j], reg_share=1.0 / K) for j in recovered]
            )
            want = (K / len(recovered)) * partials.sum(axis=0)
            errors.append(np.linalg.norm(decoded.value - want) / np.linalg.norm(want))
            checked += 1
    edge.close()
    errors_array = np.array(errors)
    assert checked == math.comb(n, s)
    assert np.all(np.isfinite(errors_array)) and np.all(errors_array <= TOL), errors_array.max()
