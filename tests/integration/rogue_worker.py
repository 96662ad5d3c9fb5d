"""A worker that lies, for tests/integration/test_rogue_worker.py: the real worker process (its
real certificate, mutual TLS, the real gRPC service), whose coded gradient is tampered with in
random rounds. Every lie is appended to ``ROGUE_LOG`` as one JSON line (job, round, epoch).

    python tests/integration/rogue_worker.py worker --name ... (the worker's own arguments)

Environment: ``ROGUE_KIND`` (scaled | random | sign-flipped), ``ROGUE_P`` (the probability of a
lie per round), ``ROGUE_SEED``, ``ROGUE_LOG``. Test-only: nothing in edgecode can lie.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable

import numpy as np

from edgecode.cli import main
from edgecode.worker import logic

TAMPERS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "scaled": lambda v, rng: 3.0 * v,
    "random": lambda v, rng: rng.standard_normal(v.shape),
    "sign-flipped": lambda v, rng: -v,
}


def _install() -> None:
    kind = TAMPERS[os.environ["ROGUE_KIND"]]
    probability = float(os.environ["ROGUE_P"])
    log_path = os.environ["ROGUE_LOG"]
    rng = np.random.default_rng(int(os.environ.get("ROGUE_SEED", "0")))
    lock = threading.Lock()
    honest = logic.WorkerLogic.compute

    def compute(
        self: logic.WorkerLogic,
        job_id: str,
        round_: int,
        params: np.ndarray,
        epoch: int,
        cancelled: threading.Event,
    ) -> tuple[np.ndarray, float]:
        gradient, seconds = honest(self, job_id, round_, params, epoch, cancelled)
        with lock:
            if rng.random() >= probability:
                return gradient, seconds
            lie = kind(gradient, rng)
            with open(log_path, "a") as log:
                log.write(json.dumps({"job": job_id, "round": round_, "epoch": epoch}) + "\n")
        return lie, seconds

    logic.WorkerLogic.compute = compute  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    raise SystemExit(main(sys.argv[1:]))
