"""WorkerLogic without sockets: the coded gradient is ``sum_j B[w, j] grad_j`` of the placed
partitions (dense and sparse, every model, chunked placement), stale and cancelled work is
dropped (a newer round, a re-placement, a drop or a cancel aborts even an emulated wait),
placements are validated and installed atomically, and the metrics record what happened."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from inprocess import RecordingMetrics, place

from edgecode.emulation import StraggleConfig
from edgecode.errors import InvalidInput, StaleRound, UnknownJob
from edgecode.learning.datasets import synthetic_least_squares, synthetic_sparse
from edgecode.learning.models import get_model
from edgecode.records import PlacementHeader
from edgecode.worker.logic import ROUND_GAP_SECONDS, WorkerLogic

JOB = "job-w"


def header(
    partitions: tuple[int, ...],
    coefficients: tuple[float, ...],
    rows: tuple[int, ...],
    *,
    model: str = "least_squares",
    n_features: int = 4,
    n_classes: int = 1,
    n_partitions: int = 6,
    epoch: int = 1,
    l2: float = 0.0,
    job_id: str = JOB,
) -> PlacementHeader:
    return PlacementHeader(
        job_id=job_id,
        model=model,
        n_features=n_features,
        n_classes=n_classes,
        partitions=partitions,
        coefficients=coefficients,
        l2=l2,
        n_partitions=n_partitions,
        epoch=epoch,
        rows=rows,
    )


def labelled(model: str, rng: np.random.Generator, n: int, d: int) -> tuple[Any, np.ndarray, int]:
    """(X, y, n_classes) for ``model``; sparse X for least squares."""
    if model == "least_squares":
        data = synthetic_sparse(n, d, 0.4, rng)
        return data.X, data.y, 1
    X = rng.standard_normal((n, d))
    classes = 2 if model == "logistic" else 3
    return X, rng.integers(0, classes, size=n), classes


def relative(got: np.ndarray, want: np.ndarray) -> float:
    if not np.all(np.isfinite(got)):
        return float("nan")
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("model_name", ["least_squares", "logistic", "softmax"])
def test_the_coded_gradient_is_the_coded_sum_of_partition_gradients(model_name: str) -> None:
    rng = np.random.default_rng(5)
    K, d, l2 = 6, 4, 0.3
    X, y, classes = labelled(model_name, rng, 90, d)
    bounds = np.linspace(0, 90, K + 1).astype(int)
    blocks = [(X[a:b], y[a:b]) for a, b in itertools.pairwise(bounds)]
    held = (4, 1, 3)  # out of order on purpose
    coefficients = tuple(float(c) for c in rng.standard_normal(len(held)))
    metrics = RecordingMetrics()
    worker = WorkerLogic("w0", metrics=metrics)
    h = header(
        held,
        coefficients,
        tuple(int(blocks[j][0].shape[0]) for j in held),
        model=model_name,
        n_classes=classes,
        l2=l2,
    )
    place(worker, h, [(j, *blocks[j]) for j in held])  # two row chunks per partition
    model = get_model(model_name, l2=l2)
    n_params = model.n_params(d, classes)
    assert metrics.of("holding") == [(3,)]
    errors = []
    for round_ in range(3):
        params = rng.standard_normal(n_params)
        gradient, seconds = worker.compute(JOB, round_, params, 1, threading.Event())
        want = sum(
            c * model.gradient(params, blocks[j][0], blocks[j][1], reg_share=1.0 / K)
            for j, c in zip(held, coefficients, strict=True)
        )
        errors.append(relative(gradient, np.asarray(want)))
        assert seconds >= 0
    errs = np.asarray(errors)
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-12)
    computed = metrics.of("computed")
    assert len(computed) == 3 and all(nbytes == 8 * n_params for _, nbytes in computed)
    assert sp.issparse(worker.jobs()[JOB].features[0]) == (model_name == "least_squares")


@pytest.fixture
def worker() -> WorkerLogic:
    w = WorkerLogic("w0", metrics=RecordingMetrics())
    data = synthetic_least_squares(30, 4, np.random.default_rng(2))
    blocks = data.partition(6)
    place(w, header((0, 2), (1.0, -2.0), (5, 5)), [(0, *blocks[0]), (2, *blocks[2])])
    return w


def metrics_of(worker: WorkerLogic) -> RecordingMetrics:
    metrics = worker._metrics
    assert isinstance(metrics, RecordingMetrics)
    return metrics


def test_older_rounds_are_refused_the_current_one_is_not(worker: WorkerLogic) -> None:
    params = np.zeros(5)
    worker.compute(JOB, 3, params, 1, threading.Event())
    worker.compute(JOB, 3, params, 1, threading.Event())  # a retry of the current round
    with pytest.raises(StaleRound, match="round 2 is older than round 3"):
        worker.compute(JOB, 2, params, 1, threading.Event())


def test_a_rejected_request_changes_nothing(worker: WorkerLogic) -> None:
    with pytest.raises(InvalidInput, match=r"params must have shape \(5,\)"):
        worker.compute(JOB, 9, np.zeros(6), 1, threading.Event())
    worker.compute(JOB, 4, np.zeros(5), 1, threading.Event())  # round 9 never became current


def test_unknown_job_and_wrong_epoch(worker: WorkerLogic) -> None:
    with pytest.raises(UnknownJob, match="worker w0 holds no data for job 'other'"):
        worker.compute("other", 0, np.zeros(5), 1, threading.Event())
    with pytest.raises(StaleRound, match=r"placement epoch 2 is not held \(held: \[1\]\)"):
        worker.compute(JOB, 0, np.zeros(5), 2, threading.Event())


def test_a_cancelled_computation_is_abandoned(worker: WorkerLogic) -> None:
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(StaleRound, match="cancelled or superseded"):
        worker.compute(JOB, 0, np.zeros(5), 1, cancelled)
    assert metrics_of(worker).of("abandoned_round") == [()]
    assert metrics_of(worker).of("computed") == []


def test_a_new_placement_epoch_replaces_the_old_one_at_its_first_round(
    worker: WorkerLogic,
) -> None:
    """Epoch 2 is held beside epoch 1 (rounds of epoch 1 go on while it arrives); the first
    round of epoch 2 retires epoch 1, which is refused from then on."""
    data = synthetic_least_squares(30, 4, np.random.default_rng(3))
    blocks = data.partition(6)
    before, _ = worker.compute(JOB, 0, np.zeros(5), 1, threading.Event())
    place(worker, header((5,), (1.0,), (5,), epoch=2), [(5, *blocks[5])])
    assert worker.epochs(JOB) == (1, 2)
    still, _ = worker.compute(JOB, 1, np.zeros(5), 1, threading.Event())
    assert relative(still, before) <= 1e-12
    gradient, _ = worker.compute(JOB, 2, np.zeros(5), 2, threading.Event())
    want = get_model("least_squares").gradient(np.zeros(5), *blocks[5], reg_share=1 / 6)
    assert relative(gradient, want) <= 1e-12
    assert worker.epochs(JOB) == (2,)
    assert metrics_of(worker).of("holding")[-1] == (1,)
    with pytest.raises(StaleRound, match="placement epoch 1 is not held"):
        worker.compute(JOB, 3, np.zeros(5), 1, threading.Event())


def test_drop_forgets_the_job(worker: WorkerLogic) -> None:
    assert worker.drop(JOB) is True
    assert worker.drop(JOB) is False
    assert JOB not in worker.jobs()
    assert metrics_of(worker).of("holding")[-1] == (0,)
    with pytest.raises(UnknownJob):
        worker.compute(JOB, 0, np.zeros(5), 1, threading.Event())


class CountingClock:
    """The real clock, plus an event set once it has been read ``after`` times (the worker
    reads it twice before its emulated wait and at least twice inside it)."""

    def __init__(self, after: int) -> None:
        import time

        self._time = time.monotonic
        self._after = after
        self._count = 0
        self.reached = threading.Event()

    def __call__(self) -> float:
        self._count += 1
        if self._count >= self._after:
            self.reached.set()
        return self._time()


def slow_worker(clock: CountingClock) -> WorkerLogic:
    """A worker whose every round emulates a minute of compute."""
    w = WorkerLogic(
        "slow",
        straggle=StraggleConfig(compute_seconds=60.0),
        clock=clock,
        metrics=RecordingMetrics(),
    )
    data = synthetic_least_squares(30, 4, np.random.default_rng(4))
    blocks = data.partition(2)
    place(
        w, header((0, 1), (1.0, 1.0), (15, 15), n_partitions=2), [(0, *blocks[0]), (1, *blocks[1])]
    )
    return w


def run_in_thread(target, *args: Any) -> tuple[threading.Thread, list[BaseException]]:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.mark.parametrize("how", ["newer round", "cancel", "drop", "re-placement"])
def test_stale_work_aborts_an_emulated_computation_at_once(how: str) -> None:
    clock = CountingClock(after=4)
    w = slow_worker(clock)
    cancelled = threading.Event()
    thread, errors = run_in_thread(w.compute, JOB, 1, np.zeros(5), 1, cancelled)
    assert clock.reached.wait(timeout=10), "the computation never reached its emulated wait"
    if how == "newer round":
        stop = threading.Event()
        stop.set()  # the newer round itself is cancelled at once, so the test does not wait
        with pytest.raises(StaleRound):
            w.compute(JOB, 2, np.zeros(5), 1, stop)
    elif how == "cancel":
        cancelled.set()
    elif how == "drop":
        w.drop(JOB)
    else:  # a re-placement retires the old epoch at the new epoch's first round
        data = synthetic_least_squares(30, 4, np.random.default_rng(5))
        place(w, header((0,), (1.0,), (15,), n_partitions=2, epoch=2), [(0, *data.partition(2)[0])])
        stop = threading.Event()
        stop.set()
        with pytest.raises(StaleRound):
            w.compute(JOB, 2, np.zeros(5), 2, stop)
    thread.join(timeout=10)
    assert not thread.is_alive(), "a minute of emulated compute was not abandoned"
    assert len(errors) == 1 and isinstance(errors[0], StaleRound)
    assert metrics_of(w).of("abandoned_round")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"job_id": ""}, "job_id must not be empty"),
        ({"coefficients": (1.0,)}, "one coefficient each"),
        ({"partitions": (1, 1), "coefficients": (1.0, 1.0)}, "distinct"),
        ({"partitions": (), "coefficients": (), "rows": ()}, "holds 0 partitions"),
        ({"n_partitions": 0}, "holds 2 partitions of 0"),
        ({"rows": (5,)}, "rows"),
        ({"rows": (5, 0)}, "rows"),
        ({"partitions": (0, 6)}, r"partition indices must be in \[0, 6\)"),
        ({"coefficients": (1.0, float("nan"))}, "coefficients must be finite"),
        ({"n_features": 0}, "n_features >= 1"),
        ({"l2": -1.0}, "l2 >= 0"),
        ({"model": "forest"}, "placement: name must be one of"),
    ],
)
def test_bad_placement_headers_are_refused(changes: dict, match: str) -> None:  # type: ignore[type-arg]
    args: dict[str, Any] = {"partitions": (0, 2), "coefficients": (1.0, 1.0), "rows": (5, 5)}
    args.update(changes)
    with pytest.raises(InvalidInput, match=match):
        WorkerLogic("w").begin_placement(
            header(args.pop("partitions"), args.pop("coefficients"), args.pop("rows"), **args)
        )


def test_bad_chunks_and_incomplete_placements_are_refused_and_install_nothing(
    worker: WorkerLogic,
) -> None:
    before = worker.jobs()[JOB]
    rng = np.random.default_rng(6)
    builder = worker.begin_placement(header((1,), (1.0,), (4,), epoch=2))
    with pytest.raises(InvalidInput, match="chunk for partition 3, which the header does not list"):
        builder.add(3, rng.standard_normal((4, 4)), rng.standard_normal(4))
    with pytest.raises(InvalidInput, match="features must have 4 columns"):
        builder.add(1, rng.standard_normal((4, 3)), rng.standard_normal(4))
    with pytest.raises(InvalidInput, match="has 4 rows but"):
        builder.add(1, rng.standard_normal((4, 4)), rng.standard_normal(3))
    builder.add(1, rng.standard_normal((3, 4)), rng.standard_normal(3))
    with pytest.raises(InvalidInput, match="partition 1 has 3 of its 4 rows"):
        builder.finish()
    logistic = worker.begin_placement(
        header((1,), (1.0,), (2,), model="logistic", n_classes=2, epoch=3)
    )
    logistic.add(1, rng.standard_normal((2, 4)), np.array([0, 7]))
    with pytest.raises(InvalidInput):
        logistic.finish()  # labels the model cannot take
    assert worker.jobs()[JOB] is before  # the old placement is still the one in use
    worker.compute(JOB, 0, np.zeros(5), 1, threading.Event())


def test_jobs_is_a_copy(worker: WorkerLogic) -> None:
    jobs = worker.jobs()
    jobs.clear()
    assert JOB in worker.jobs()


def test_a_new_placement_never_drops_the_epoch_rounds_use(worker: WorkerLogic) -> None:
    """Rounds use epoch 1; an abandoned shuffle left epoch 2 beside it; a later shuffle places
    epoch 3: the epoch to make room for is 2 (unused), never 1 (rounds still name it). Dropping
    the oldest install instead failed every round at once (found by a real-process test)."""
    data = synthetic_least_squares(30, 4, np.random.default_rng(3))
    blocks = data.partition(6)
    before, _ = worker.compute(JOB, 0, np.zeros(5), 1, threading.Event())
    for epoch in (2, 3):
        place(worker, header((5,), (1.0,), (5,), epoch=epoch), [(5, *blocks[5])])
    assert worker.epochs(JOB) == (1, 3)
    again, _ = worker.compute(JOB, 1, np.zeros(5), 1, threading.Event())
    assert relative(again, before) <= 1e-12


class ScriptedCpuClock:
    """A CPU clock whose every second reading is ``spent[k]`` seconds after the first."""

    def __init__(self, spent: list[float]) -> None:
        self.spent = list(spent)
        self.now = 0.0
        self.start = True

    def __call__(self) -> float:
        if not self.start:
            self.now += self.spent.pop(0)
        self.start = not self.start
        return self.now


def test_the_cpu_estimate_is_the_median_per_whole_data_set_and_announced_when_it_moves() -> None:
    """Per round: the computing thread's CPU seconds divided by the fraction held (2 of 6
    partitions); the estimate is their median, announced when it moves by more than 20 %."""
    clock = ScriptedCpuClock([0.1, 0.1, 0.5, 0.11, 0.3, 0.3, 0.3])
    w = WorkerLogic("w0", cpu_clock=clock)
    data = synthetic_least_squares(30, 4, np.random.default_rng(2))
    blocks = data.partition(6)
    place(w, header((0, 2), (1.0, -2.0), (5, 5)), [(0, *blocks[0]), (2, *blocks[2])])
    announced = []
    w.on_cpu_change = lambda: announced.append(w.cpu_seconds())
    assert w.cpu_seconds() == 0.0
    estimates = []
    for round_ in range(7):
        w.compute(JOB, round_, np.zeros(5), 1, threading.Event())
        estimates.append(w.cpu_seconds())
    want = [
        np.median(np.array([0.1, 0.1, 0.5, 0.11, 0.3, 0.3, 0.3][: k + 1]) * 3) for k in range(7)
    ]
    errors = np.abs(np.array(estimates) - want)
    assert np.all(np.isfinite(estimates)) and np.all(errors <= 1e-12), (estimates, want)
    # medians 0.3 (announced), 0.3, 0.3, 0.315 (+5 %), 0.33 (+10 %), 0.615 (+105 %: announced),
    # 0.9 (+46 % over the last announced: announced)
    assert announced == pytest.approx([0.3, 0.615, 0.9], rel=1e-12), announced


def test_an_emulated_straggle_costs_no_cpu_in_the_estimate() -> None:
    """The real clock: a worker emulating 0.2 s per whole data set reports far less CPU."""
    w = WorkerLogic("w0", StraggleConfig(compute_seconds=0.3))
    data = synthetic_least_squares(30, 4, np.random.default_rng(2))
    blocks = data.partition(6)
    place(w, header((0, 2), (1.0, -2.0), (5, 5)), [(0, *blocks[0]), (2, *blocks[2])])
    seconds = [w.compute(JOB, r, np.zeros(5), 1, threading.Event())[1] for r in range(3)]
    cpu = w.cpu_seconds()
    assert np.all(np.array(seconds) >= 0.1 - 1e-3), seconds  # 2/6 of the emulated 0.3 s
    assert np.isfinite(cpu) and 0 < cpu < 0.1, cpu


class ScriptedWallClock:
    """A wall clock that moves by ``elapsed[k]`` when the CPU clock ends round k's compute
    (the worker reads the wall clock right after the CPU clock, at the start and the end)."""

    def __init__(self, cpu: ScriptedCpuClock, elapsed: list[float]) -> None:
        self.cpu, self.elapsed = cpu, list(elapsed)
        self.now, self.rounds_seen = 100.0, 0

    def __call__(self) -> float:
        ended = len(self.elapsed) - len(self.cpu.spent)  # computations the CPU clock ended
        while self.rounds_seen < ended:
            self.now += self.elapsed[self.rounds_seen]
            self.rounds_seen += 1
        return self.now


def test_the_compute_stretch_is_the_median_wall_over_cpu_of_the_real_compute() -> None:
    """Per round: wall seconds over CPU seconds of the same computation (2 of 6 partitions
    held: the fraction cancels); the estimate is their median over the last rounds."""
    spent = [0.1, 0.2, 0.05, 0.1, 0.4]
    elapsed = [0.3, 0.2, 0.5, 0.25, 1.2]  # stretches 3, 1, 10, 2.5, 3
    cpu = ScriptedCpuClock(spent)
    w = WorkerLogic("w0", clock=ScriptedWallClock(cpu, elapsed), cpu_clock=cpu)
    data = synthetic_least_squares(30, 4, np.random.default_rng(2))
    blocks = data.partition(6)
    place(w, header((0, 2), (1.0, -2.0), (5, 5)), [(0, *blocks[0]), (2, *blocks[2])])
    assert w.compute_stretch() == 0.0
    estimates = []
    for round_ in range(5):
        w.compute(JOB, round_, np.zeros(5), 1, threading.Event())
        estimates.append(w.compute_stretch())
    ratios = np.array(elapsed) / np.array(spent)
    want = [np.median(ratios[: k + 1]) for k in range(5)]
    errors = np.abs(np.array(estimates) - want)
    assert np.all(np.isfinite(estimates)) and np.all(errors <= 1e-9), (estimates, want)


class SteppedClock:
    """A clock that returns the scripted readings in order (one per call)."""

    def __init__(self, readings: list[float]) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


class ManualClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_the_round_cpu_is_the_median_process_cpu_between_rounds_less_the_compute() -> None:
    """Process CPU from one compute's start to the next's, less the first compute's CPU, for
    rounds at most ROUND_GAP_SECONDS apart; overlapping rounds (less CPU between the starts
    than the first compute took) and rounds far apart give no sample."""
    computes = [0.05, 0.02, 0.05, 0.03, 0.05, 0.01]
    besides = [0.004, 0.006, 0.5, -0.02, 0.005]  # the third: 3 s apart; the fourth: overlap
    gaps = [0.1, 0.1, 3.0, 0.1, ROUND_GAP_SECONDS]
    readings, start = [], 10.0
    for k, compute in enumerate(computes):
        readings += [start, start + compute]
        if k < len(besides):
            start += compute + besides[k]
    wall = ManualClock()
    w = WorkerLogic("w0", clock=wall, cpu_clock=SteppedClock(readings))
    data = synthetic_least_squares(30, 4, np.random.default_rng(2))
    blocks = data.partition(6)
    place(w, header((0, 2), (1.0, -2.0), (5, 5)), [(0, *blocks[0]), (2, *blocks[2])])
    assert w.round_cpu_seconds() == 0.0
    estimates = []
    for round_ in range(len(computes)):
        w.compute(JOB, round_, np.zeros(5), 1, threading.Event())
        estimates.append(w.round_cpu_seconds())
        if round_ < len(gaps):
            wall.now += gaps[round_]
    samples = [0.004, 0.006, 0.005]  # rounds 1, 2 and 5
    want = [0.0, 0.004, 0.005, 0.005, 0.005, float(np.median(samples))]
    errors = np.abs(np.array(estimates) - want)
    assert np.all(np.isfinite(estimates)) and np.all(errors <= 1e-12), (estimates, want)


def test_rounds_back_to_back_measure_a_small_positive_round_cpu() -> None:
    """The real clocks: a worker answering rounds back to back spends some CPU per round
    besides the compute (this test's own loop), far less than a second."""
    w = WorkerLogic("w0")
    data = synthetic_least_squares(30, 4, np.random.default_rng(2))
    blocks = data.partition(6)
    place(w, header((0, 2), (1.0, -2.0), (5, 5)), [(0, *blocks[0]), (2, *blocks[2])])
    for round_ in range(12):
        w.compute(JOB, round_, np.zeros(5), 1, threading.Event())
    fixed = w.round_cpu_seconds()
    assert np.isfinite(fixed) and 0 <= fixed < 0.05, fixed
