"""Optimizers: the update formulas, exact checkpoint/resume, and convergence on real and
synthetic data with known optima."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecode.errors import InvalidInput
from edgecode.learning.datasets import Dataset, get_dataset, load_split
from edgecode.learning.models import Model, get_model, smoothness
from edgecode.learning.optimizers import (
    DEFAULT_ADAM_LR,
    DEFAULT_LR,
    SGD,
    Adam,
    GradientDescent,
    Nesterov,
    Optimizer,
    get_optimizer,
    optimizer_from_state,
)


def train(
    model: Model, data: Dataset, optimizer: Optimizer, steps: int, params: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """Run ``steps`` full-gradient steps; the mean loss before each step and the final params."""
    losses = []
    for _ in range(steps):
        losses.append(model.loss(params, data.X, data.y) / data.n_rows)
        params = optimizer.step(params, model.gradient(params, data.X, data.y), data.n_rows)
    return params, losses


# ------------------------------------------------------------------------ formulas


def test_gradient_descent_uses_the_mean_gradient_and_leaves_inputs_alone() -> None:
    opt = GradientDescent(lr=0.5)
    x, g = np.array([1.0, -2.0]), np.array([4.0, 8.0])
    new = opt.step(x, g, n_rows=4)
    assert new.tolist() == [0.5, -3.0]
    assert x.tolist() == [1.0, -2.0] and g.tolist() == [4.0, 8.0]
    assert opt.steps == 1


def test_nesterov_follows_the_t_sequence_recurrence() -> None:
    """Hand-written recurrence on f(x) = ||A x - b||^2 / 2 (one row per entry of b)."""
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((6, 3)), rng.standard_normal(6)
    lr, n = 0.1, 6
    opt = Nesterov(lr=lr)
    y = np.zeros(3)
    x_prev, t = y.copy(), 1.0
    for _ in range(8):
        grad = A.T @ (A @ y - b)
        x_next = y - (lr / n) * grad
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        expected = x_next + ((t - 1) / t_next) * (x_next - x_prev)
        y_new = opt.step(y, grad, n)
        np.testing.assert_array_equal(y_new, expected)
        np.testing.assert_array_equal(opt.iterate, x_next)
        y, x_prev, t = y_new, x_next, t_next


def test_nesterov_constant_momentum() -> None:
    opt = Nesterov(lr=1.0, momentum=0.9)
    first = opt.step(np.array([1.0]), np.array([0.5]), 1)  # x1 = 0.5, y1 = 0.5 + 0.9 * (0.5 - 1)
    assert first.tolist() == [0.5 + 0.9 * (0.5 - 1.0)]
    second = opt.step(first, np.array([0.0]), 1)  # x2 = y1, y2 = x2 + 0.9 * (x2 - x1)
    assert math.isclose(second[0], first[0] + 0.9 * (first[0] - 0.5))


# ------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize(
    "make",
    [
        lambda: GradientDescent(lr=0.3),
        lambda: Nesterov(lr=0.25),
        lambda: Nesterov(lr=0.2, momentum=0.8),
    ],
    ids=["gd", "nesterov-t", "nesterov-momentum"],
)
def test_resume_from_a_checkpoint_is_bit_identical(make: Any, tmp_path: Path) -> None:
    data, _ = load_split("breast_cancer", np.random.default_rng(0))
    model = get_model("logistic", l2=0.1)
    start = model.init_params(np.random.default_rng(1), data.n_features, 2)

    uninterrupted = make()
    reference = [start]
    for _ in range(30):
        p = reference[-1]
        reference.append(uninterrupted.step(p, model.gradient(p, data.X, data.y), data.n_rows))

    first = make()
    params = start
    for _ in range(12):
        params = first.step(params, model.gradient(params, data.X, data.y), data.n_rows)
    # The master's checkpoint: scalars as JSON, arrays as NPZ, and then a fresh process.
    state = first.state_dict()
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    (tmp_path / "state.json").write_text(json.dumps(scalars))
    np.savez(tmp_path / "state.npz", params=params, **arrays)
    del first
    with np.load(tmp_path / "state.npz") as archive:
        restored_state = json.loads((tmp_path / "state.json").read_text()) | {
            k: archive[k] for k in arrays
        }
        params = archive["params"]
    resumed = optimizer_from_state(restored_state)
    assert resumed.steps == 12
    for k in range(12, 30):
        params = resumed.step(params, model.gradient(params, data.X, data.y), data.n_rows)
        assert np.array_equal(params, reference[k + 1]), f"diverged at step {k + 1}"


def test_state_dict_is_a_copy() -> None:
    opt = Nesterov()
    opt.step(np.ones(2), np.ones(2), 1)
    state = opt.state_dict()
    state["iterate"][:] = 99.0
    assert opt.iterate is not None and not np.any(opt.iterate == 99.0)
    assert Nesterov().state_dict()["iterate"] is None


# ------------------------------------------------------------------------ convergence


def test_nesterov_default_lr_learns_breast_cancer_in_100_steps() -> None:
    train_set, test_set = load_split("breast_cancer", np.random.default_rng(0))
    model = get_model("logistic")
    params = model.init_params(np.random.default_rng(0), train_set.n_features, 2)
    params, losses = train(model, train_set, get_optimizer("nesterov"), 100, params)
    final = model.loss(params, train_set.X, train_set.y) / train_set.n_rows
    assert losses[0] > 0.6 and final < 0.06 and final < min(losses)
    assert model.accuracy(params, test_set.X, test_set.y) >= 0.9
    assert model.accuracy(params, train_set.X, train_set.y) >= 0.95


def test_nesterov_default_lr_learns_digits_in_100_steps() -> None:
    train_set, test_set = load_split("digits", np.random.default_rng(0))
    model = get_model("softmax")
    params = model.init_params(np.random.default_rng(0), train_set.n_features, 10)
    params, losses = train(model, train_set, Nesterov(), 100, params)
    assert losses[-1] < 0.05 < 2.0 < losses[0]
    assert model.accuracy(params, test_set.X, test_set.y) >= 0.9


def test_default_lr_is_safe_on_every_bundled_data_set() -> None:
    for name in ("breast_cancer", "digits", "iris", "wine", "diabetes"):
        data, _ = load_split(name, np.random.default_rng(0))
        assert DEFAULT_LR <= 1.0 / smoothness(get_model(data.default_model), data.X), name


@pytest.mark.parametrize("kind", ["gd", "nesterov"])
def test_least_squares_reaches_its_known_optimum(kind: str) -> None:
    data = get_dataset("synthetic-lsq:n=400,d=20,seed=3")
    assert data.optimum is not None
    model = get_model("least_squares")
    lr = 1.0 / smoothness(model, data.X)
    params, losses = train(model, data, get_optimizer(kind, lr=lr), 300, np.zeros(21))
    assert np.linalg.norm(params - data.optimum) < 1e-9 * np.linalg.norm(data.optimum)
    assert losses[-1] < 1e-18 * losses[0]
    if kind == "gd":  # lr <= 1 / L: no increase until the loss is at rounding level (~1e-32)
        assert all(b <= a for a, b in itertools.pairwise(losses) if a > 1e-25)


def test_nesterov_reaches_the_scipy_logistic_optimum() -> None:
    data = get_dataset("synthetic-logistic:n=2000,d=10,seed=4")
    assert data.optimum is not None
    model = get_model("logistic")
    params, _ = train(model, data, Nesterov(lr=1.0 / smoothness(model, data.X)), 400, np.zeros(11))
    best = model.loss(data.optimum, data.X, data.y) / data.n_rows
    assert model.loss(params, data.X, data.y) / data.n_rows - best < 1e-8
    assert np.linalg.norm(params - data.optimum) < 1e-3 * np.linalg.norm(data.optimum)


# ------------------------------------------------------------------------ validation


def test_bad_arguments() -> None:
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="lr"):
            GradientDescent(lr=bad)
    with pytest.raises(ValueError, match="momentum"):
        Nesterov(momentum=1.0)
    with pytest.raises(ValueError, match="name must be one of"):
        get_optimizer("rmsprop")
    with pytest.raises(ValueError, match="options"):
        get_optimizer("gd", momentum=0.9)


@pytest.mark.parametrize("kind", ["gd", "nesterov"])
def test_bad_steps_are_refused_and_leave_the_state_untouched(kind: str) -> None:
    opt = get_optimizer(kind)
    opt.step(np.zeros(3), np.ones(3), 1)
    before = opt.state_dict()
    with pytest.raises(InvalidInput, match=r"gradient must have shape \(3,\)"):
        opt.step(np.zeros(3), np.ones(4), 1)
    with pytest.raises(InvalidInput, match="finite"):
        opt.step(np.zeros(3), np.array([0.0, np.nan, 0.0]), 1)
    with pytest.raises(ValueError, match="n_rows"):
        opt.step(np.zeros(3), np.ones(3), 0)
    after = opt.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert (
            np.array_equal(after[key], value)
            if isinstance(value, np.ndarray)
            else (after[key] == value)
        )
    if kind == "nesterov":
        with pytest.raises(InvalidInput, match="like the previous steps"):
            opt.step(np.zeros(4), np.ones(4), 1)


def test_bad_states() -> None:
    with pytest.raises(ValueError, match="kind"):
        optimizer_from_state({"kind": "rmsprop"})
    with pytest.raises(ValueError, match="missing"):
        optimizer_from_state({"kind": "nesterov", "lr": 0.1, "steps": 3})
    state = Nesterov().state_dict() | {"steps": 2}
    with pytest.raises(ValueError, match="iterate"):
        optimizer_from_state(state)
    with pytest.raises(ValueError, match="steps"):
        optimizer_from_state(GradientDescent().state_dict() | {"steps": -1})
    with pytest.raises(ValueError, match="t"):
        optimizer_from_state(Nesterov().state_dict() | {"t": 0.5})


# ------------------------------------------------------------------------ SGD, Adam, schedules


def quadratic_gradients(steps: int, seed: int = 0) -> list[np.ndarray]:
    """Fixed gradient sequence, so formulas can be replayed by hand."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(4) for _ in range(steps)]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgd_follows_its_formulas(nesterov: bool, weight_decay: float) -> None:
    lr, mu, n = 0.05, 0.8, 3
    opt = SGD(lr=lr, momentum=mu, nesterov=nesterov, weight_decay=weight_decay)
    x = np.array([1.0, -2.0, 0.5, 3.0])
    expected, buffer = x.copy(), None
    for grad in quadratic_gradients(6):
        g = grad / n + weight_decay * expected
        buffer = g if buffer is None else mu * buffer + g
        expected = expected - lr * (g + mu * buffer if nesterov else buffer)
        x = opt.step(x, grad, n)
        assert np.allclose(x, expected, rtol=1e-15, atol=1e-15)


def test_sgd_without_momentum_is_gradient_descent() -> None:
    sgd, gd = SGD(lr=0.3), GradientDescent(lr=0.3)
    x = y = np.ones(4)
    for grad in quadratic_gradients(5):
        x, y = sgd.step(x, grad, 2), gd.step(y, grad, 2)
        assert np.array_equal(x, y)
    assert sgd.state_dict()["buffer"] is None


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_follows_its_formulas(weight_decay: float) -> None:
    lr, b1, b2, eps, n = 0.01, 0.9, 0.99, 1e-8, 4
    opt = Adam(lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=weight_decay)
    x = expected = np.array([1.0, -2.0, 0.5, 3.0])
    m = v = np.zeros(4)
    for t, grad in enumerate(quadratic_gradients(6), start=1):
        g = grad / n
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        expected = expected * (1 - lr * weight_decay) - lr * m_hat / (np.sqrt(v_hat) + eps)
        x = opt.step(x, grad, n)
        assert np.allclose(x, expected, rtol=1e-13, atol=1e-15)


def test_adam_first_steps_have_size_lr() -> None:
    # the bias correction makes |step| = lr (up to eps) on the first step, whatever the scale
    for scale in (1e-2, 1.0, 1e6):
        x = Adam(lr=0.01).step(np.zeros(3), scale * np.array([1.0, -2.0, 3.0]), 1)
        assert np.allclose(np.abs(x), 0.01, rtol=1e-5)


@pytest.mark.parametrize("kind", ["gd", "nesterov", "sgd", "adam"])
def test_every_optimizer_scales_its_rate_by_the_schedule(kind: str) -> None:
    """Without momentum every kind moves by lr_k * g on a constant gradient g = (1, -1) (Adam:
    by lr_k * sign(g)), so the steps show the schedule's factors."""
    options = {"nesterov": {"momentum": 0.0}}.get(kind, {})
    opt = get_optimizer(kind, 0.1, schedule="step:every=2,gamma=0.5,warmup=2", **options)
    x = np.zeros(2)
    for factor in [0.5, 1.0, 0.5, 0.5, 0.25]:
        before, x = x, opt.step(x, np.array([1.0, -1.0]), 1)
        assert np.allclose(before - x, 0.1 * factor * np.array([1.0, -1.0]), rtol=1e-6)
    assert opt.state_dict()["schedule"] == "step:every=2,gamma=0.5,warmup=2"


@pytest.mark.parametrize(
    "spec",
    [
        ("gd", {"schedule": "cosine:total=20,warmup=3"}),
        ("nesterov", {"momentum": 0.5, "schedule": "exponential:gamma=0.97"}),
        ("sgd:momentum=0.9,nesterov=true,weight_decay=0.001", {"schedule": "step:every=7"}),
        ("adam:weight_decay=0.01", {"schedule": "cosine:total=30,floor=0.1,warmup=2"}),
    ],
    ids=["gd", "nesterov", "sgd", "adam"],
)
def test_resume_from_a_json_checkpoint_is_bit_identical(spec: tuple[str, dict[str, Any]]) -> None:
    """As the master checkpoints: arrays ``tolist()``, the whole state through JSON, and back."""
    name, options = spec
    data, _ = load_split("wine", np.random.default_rng(0))
    model = get_model("softmax")
    lr = 0.01 if name.startswith("adam") else 0.2
    start = model.init_params(np.random.default_rng(0), data.n_features, data.n_classes)
    reference, params = get_optimizer(name, lr, **options), start
    trajectory = [start]
    for _ in range(20):
        params = reference.step(params, model.gradient(params, data.X, data.y), data.n_rows)
        trajectory.append(params)
    first, params = get_optimizer(name, lr, **options), start
    for _ in range(8):
        params = first.step(params, model.gradient(params, data.X, data.y), data.n_rows)
    jsonable = {
        k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in first.state_dict().items()
    }
    resumed = optimizer_from_state(json.loads(json.dumps(jsonable)))
    params = np.asarray(json.loads(json.dumps(params.tolist())))
    assert resumed.steps == 8 and repr(resumed) == repr(first)
    for k in range(8, 20):
        params = resumed.step(params, model.gradient(params, data.X, data.y), data.n_rows)
        assert np.array_equal(params, trajectory[k + 1]), f"diverged at step {k + 1}"


def test_checkpoints_from_before_schedules_still_load() -> None:
    for opt in (GradientDescent(lr=0.1), Nesterov(lr=0.1)):
        opt.step(np.ones(2), np.ones(2), 1)
        old = {k: v for k, v in opt.state_dict().items() if k != "schedule"}
        resumed = optimizer_from_state(old)
        assert resumed.state_dict()["schedule"] == "constant"
        assert np.array_equal(
            resumed.step(np.ones(2), np.ones(2), 1), opt.step(np.ones(2), np.ones(2), 1)
        )


def test_optimizer_specs_and_defaults() -> None:
    assert get_optimizer("adam").lr == DEFAULT_ADAM_LR  # type: ignore[attr-defined]
    assert get_optimizer("sgd").lr == DEFAULT_LR  # type: ignore[attr-defined]
    sgd = get_optimizer("sgd:momentum=0.9, nesterov=TRUE", lr=0.1)
    assert isinstance(sgd, SGD) and sgd.momentum == 0.9 and sgd.nesterov and sgd.lr == 0.1
    assert get_optimizer("nesterov:momentum=none").momentum is None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"\['momentum'\] given both"):
        get_optimizer("sgd:momentum=0.9", momentum=0.5)
    with pytest.raises(ValueError, match="'adam' does not accept"):
        get_optimizer("adam:momentum=0.9")
    with pytest.raises(ValueError, match="momentum must be a number, got 'fast'"):
        get_optimizer("sgd:momentum=fast")
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        get_optimizer("sgd:momentum")
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        get_optimizer("sgd:nesterov=true")
    with pytest.raises(ValueError, match="schedule kind"):
        get_optimizer("adam", schedule="linear")


def test_bad_sgd_and_adam_arguments_and_states() -> None:
    for bad in ({"momentum": 1.0}, {"weight_decay": -1.0}, {"nesterov": "yes"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SGD(**bad)
    for bad_adam in ({"beta1": 1.0}, {"beta2": -0.1}, {"eps": 0.0}, {"weight_decay": math.nan}):
        with pytest.raises(ValueError, match=next(iter(bad_adam))):
            Adam(**bad_adam)
    adam = Adam()
    adam.step(np.ones(3), np.ones(3), 1)
    with pytest.raises(InvalidInput, match="like the previous steps"):
        adam.step(np.ones(4), np.ones(4), 1)
    state = adam.state_dict()
    with pytest.raises(ValueError, match="one shape"):
        optimizer_from_state(state | {"v": np.ones(2)})
    with pytest.raises(ValueError, match=">= 0"):
        optimizer_from_state(state | {"v": -np.ones(3)})
    with pytest.raises(ValueError, match="'m'"):
        optimizer_from_state(state | {"m": None})
    sgd = SGD(momentum=0.5)
    sgd.step(np.ones(3), np.ones(3), 1)
    with pytest.raises(ValueError, match="'buffer'"):
        optimizer_from_state(sgd.state_dict() | {"buffer": [1.0, math.inf, 0.0]})
    with pytest.raises(ValueError, match="missing"):
        optimizer_from_state({"kind": "adam", "lr": 0.1, "steps": 0})
