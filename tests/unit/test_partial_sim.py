"""The partial-recovery simulator (real rule, message by message), the benchmark rows, training
to the optimum with partially recovered gradients, and the CLI output."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

from edgecode.cli import main
from edgecode.codes.partial import cyclic_partial, subset_design
from edgecode.learning.datasets import synthetic_least_squares
from edgecode.learning.models import get_model
from edgecode.planning.partial import partial_expected_round_time
from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
from edgecode.sim import partial as sim_partial
from edgecode.sim.partial import bench_cluster, partial_bench_rows, simulate_partial, train_partial

Z_LIMIT = 4.5


@pytest.mark.parametrize(
    "scheme", [cyclic_partial(10, 3, 0.8, 2), subset_design(10, 3, 0.9)], ids=["cyclic", "subset"]
)
@pytest.mark.parametrize("model", ["bernoulli", "shifted_exponential"])
def test_simulated_rounds_match_the_exact_expectation(scheme: object, model: str) -> None:
    spec = bench_cluster(model)
    result = simulate_partial(spec, scheme, 3_000, np.random.default_rng(11))  # type: ignore[arg-type]
    exact = partial_expected_round_time(spec, scheme)  # type: ignore[arg-type]
    z = abs(result.mean_round_seconds - exact) / result.standard_error
    assert z < Z_LIMIT, (result.mean_round_seconds, exact)
    errs = result.errors
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-12)
    assert np.all(result.recovered >= math.ceil(float(scheme.alpha) * scheme.n_partitions))  # type: ignore[attr-defined]
    assert np.all(result.arrivals <= 7)


def test_simulator_keeps_markov_classes_and_checks_every_round() -> None:
    workers = tuple(
        WorkerSpec(
            f"m{i}", 1.0, 2.0, model="markov", p_slow=0.9, q_as=0.1, q_sa=0.3, slow_factor=4.0
        )
        for i in range(8)
    )
    spec = ClusterSpec(edges=(EdgeSpec("e", workers),))
    result = simulate_partial(spec, cyclic_partial(8, 2, 0.75), 400, np.random.default_rng(12))
    assert result.round_seconds.shape == (400,) and np.all(result.round_seconds > 0)
    assert np.all(np.isfinite(result.errors)) and np.all(result.errors <= 1e-12)


def test_bench_rows_mark_one_auto_choice_per_case() -> None:
    rows = partial_bench_rows(
        np.random.default_rng(13), alphas=(0.8,), models=("bernoulli",), rounds=300
    )
    assert sum(r.chosen for r in rows) == 1
    chosen = next(r for r in rows if r.chosen)
    values = np.array(
        [[r.simulated_seconds, r.expected_seconds, r.full_simulated_seconds] for r in rows]
    )
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert chosen.ratio_to_full <= 0.8
    assert all(r.worst_error <= 1e-12 for r in rows)
    subset = next(r for r in rows if r.design.startswith("subset"))
    assert subset.load_over_bound == pytest.approx(1.0, rel=1e-12)


def _least_squares() -> tuple[object, np.ndarray, np.ndarray, float]:
    data = synthetic_least_squares(20_000, 10, np.random.default_rng(0), noise=1.0)
    model = get_model("least_squares")
    optimum = model.loss(data.optimum, data.X, data.y)
    return model, data.X, data.y, optimum


@pytest.mark.slow  # ~4 s of CPU: 2 x 2000 steps of 10 partial gradients over 20 000 rows
def test_training_with_partial_recovery_reaches_the_uncoded_optimum() -> None:
    """Least squares, step 0.5 / (1 + t / 4), 2000 steps: the cyclic scheme with k / |R|
    rescaling and a mixed subset design with inverse-probability weights both reach the
    optimum's loss within 1e-6 relative; the mixed design with k / |R| does not (biased)."""
    model, X, y, optimum = _least_squares()
    gaps = []
    for scheme, scale in (
        (cyclic_partial(10, 3, 0.8), "rescale"),
        (subset_design(4, 2, 0.7), "inverse-probability"),
    ):
        run = train_partial(
            model,
            X,
            y,
            scheme,
            np.zeros(11),
            2_000,
            np.random.default_rng(1),
            lr=0.5,
            decay=4.0,
            scale=scale,  # type: ignore[arg-type]
        )
        gaps.append((run.loss - optimum) / optimum)
        assert run.recovered_fraction < 1.0  # partitions really were missing
    errs = np.array(gaps)
    assert np.all(np.isfinite(errs)) and np.all(errs >= -1e-12) and np.all(errs <= 1e-6)
    biased = train_partial(
        model,
        X,
        y,
        subset_design(4, 2, 0.7),
        np.zeros(11),
        400,
        np.random.default_rng(1),
        lr=0.5,
        decay=4.0,  # type: ignore[arg-type]
    )
    assert (biased.loss - optimum) / optimum > 1e-5


def test_codes_show_partial_prints_both_loads_and_the_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["codes", "show", "partial", "--n", "10", "--s", "3", "--alpha", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "n L* = 13/7 = 1.8571" in out
    for label in ("subset r=1x3,2x4 k=210", "cyclic d=3 V=1", "cyclic d=3 V=3"):
        assert label in out
    assert "0.1857" in out and "1.615x" in out
    assert main(["codes", "show", "partial", "--n", "10", "--s", "3", "--alpha", "nan"]) == 2
    assert "0 < alpha <= 1" in capsys.readouterr().err


def test_plan_alpha_prints_partial_beside_full_coding(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    from pathlib import Path

    spec = Path(tmp_path) / "six.toml"  # type: ignore[arg-type]
    workers = "\n".join(
        f'  [[edge.worker]]\n  name = "w{i}"\n  shift = 1.0\n  rate = 2.0\n  link_seconds = 0.005'
        for i in range(6)
    )
    spec.write_text(f'[[edge]]\nname = "e"\n{workers}\n')
    assert main(["plan", str(spec), "--alpha", "0.8", "--stragglers", "2", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    partial = document["partial"]
    assert partial["alpha"] == 0.8 and partial["stragglers"] == 2
    times = [d["expected_round_seconds"] for d in partial["designs"]]
    best = next(d for d in partial["designs"] if d["design"] == partial["auto"])
    assert best["expected_round_seconds"] == min(times)
    assert best["expected_round_seconds"] < partial["full_coding_expected_round_seconds"]
    assert main(["plan", str(spec), "--alpha", "0.8", "--stragglers", "2"]) == 0
    out = capsys.readouterr().out
    assert "Partial recovery: alpha = 0.8, s = 2" in out and "full coding" in out
    assert main(["plan", str(spec), "--alpha", "0", "--stragglers", "2"]) == 2
    assert "0 < alpha <= 1" in capsys.readouterr().err


def test_docstring_examples_run() -> None:
    failures, attempted = doctest.testmod(sim_partial, raise_on_error=False)
    assert attempted > 0 and failures == 0
