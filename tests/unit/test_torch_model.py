"""The PyTorch adapter: gradients against plain autograd and against the numpy models, the coded
message in one backward pass, dtypes, row independence, bad references, and a coded training
run on digits. Skips without torch on a user's machine; fails in CI (EDGECODE_REQUIRE_INFRA=1)."""

from __future__ import annotations

import copy
import doctest
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:
    import torch
    from torch import nn
except ModuleNotFoundError:
    if os.environ.get("EDGECODE_REQUIRE_INFRA") == "1":
        raise  # CI installs the torch extra: its absence is a failure there
    pytest.skip("torch is not installed (pip install 'edgecode[torch]')", allow_module_level=True)

from edgecode.codes import fractional_repetition
from edgecode.errors import BadModel, InvalidInput
from edgecode.learning import get_model, load_split, partition_bounds
from edgecode.learning import references as references_module
from edgecode.learning import torch_model as torch_model_module
from edgecode.learning.models import LeastSquares, Model, SoftmaxRegression
from edgecode.learning.optimizers import Adam, get_optimizer
from edgecode.learning.references import check_model_reference
from edgecode.learning.schedules import parse_schedule
from edgecode.learning.torch_model import TorchModel

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "torch" / "models.py"
MLP = f"torch:{EXAMPLES}:small_mlp"
CNN = f"torch:{EXAMPLES}:small_cnn"

MODELS = '''
import torch
from torch import nn


def linear(n_features, n_classes):
    return nn.Linear(n_features, n_classes)


def fixed():
    return nn.Linear(5, 3)


def any_kwargs(**kwargs):
    return nn.Linear(kwargs["n_features"], kwargs["n_classes"])


def with_norm_and_dropout(n_features, n_classes):
    return nn.Sequential(
        nn.Linear(n_features, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(6, n_classes),
    )


def frozen_first(n_features, n_classes):
    net = nn.Sequential(nn.Linear(n_features, 4), nn.Tanh(), nn.Linear(4, n_classes))
    net[0].requires_grad_(False)
    return net


def lazy(n_features, n_classes):
    return nn.Sequential(nn.LazyLinear(4), nn.Tanh(), nn.Linear(4, n_classes))


def not_a_module(n_features, n_classes):
    return 42


def raises(n_features, n_classes):
    raise RuntimeError("boom")


def wrong_width(n_features, n_classes):
    return nn.Linear(n_features, n_classes + 1)


def broken_forward(n_features, n_classes):
    return nn.Linear(n_features + 1, n_classes)


class FirstColumns(nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x):
        return x[:, : self.n_classes]


def no_parameters(n_features, n_classes):
    return FirstColumns(n_features, n_classes)


class NaNHead(nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x):
        return self.linear(x) * float("nan")


class Grows(nn.Module):
    """Adds a parameter on its third forward pass: build, round 0 fine, round 1 changed."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            self.extra = nn.Parameter(torch.zeros(3))
        return self.linear(x)


NOT_CALLABLE = 3
'''


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the 2 cores here are shared, and oversubscribed OpenMP crawls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(MODELS)
    return path


def ref(path: Path, function: str) -> str:
    return f"torch:{path}:{function}"


def problem(
    n: int, d: int, n_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n) if n_classes == 1 else rng.integers(0, n_classes, n)
    return X, y, rng


def autograd_reference(
    model: TorchModel,
    params: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    share: float,
) -> np.ndarray:
    """The summed gradient by plain autograd on a float64 copy of the module: parameters loaded
    with vector_to_parameters, a summed loss, .backward(); independent of the adapter's
    functional_call, flat views and row weights."""
    module = copy.deepcopy(model.build(X.shape[1], n_classes)).double().eval()
    trainable = [p for p in module.parameters() if p.requires_grad]
    torch.nn.utils.vector_to_parameters(torch.tensor(params), trainable)
    out = module(torch.tensor(X))
    if n_classes == 1:
        loss = 0.5 * ((out.reshape(-1) - torch.tensor(y)) ** 2).sum()
    else:
        loss = nn.functional.cross_entropy(out, torch.tensor(y), reduction="sum")
    weights = [p for p in trainable if p.ndim >= 2]
    loss = loss + share * model.l2 / 2 * sum((w**2).sum() for w in weights)
    loss.backward()
    return torch.nn.utils.parameters_to_vector([p.grad for p in trainable]).numpy()


def check_close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-12) -> None:
    scale = max(1.0, float(np.max(np.abs(expected))))
    errs = np.abs(actual - expected) / scale
    assert np.all(np.isfinite(errs)) and np.all(errs <= rel), float(np.nanmax(errs))


# ------------------------------------------------------------------------ the interface


def test_torch_model_satisfies_the_model_protocol() -> None:
    model = get_model(MLP, l2=0.5)
    assert isinstance(model, TorchModel) and isinstance(model, Model)
    assert model.name == MLP and model.l2 == 0.5 and model.fit_intercept
    assert model.n_params(64, 10) == 65 * 32 + 33 * 10
    assert model.task == "multiclass"
    with pytest.raises(ValueError, match="fit_intercept"):
        get_model(MLP, fit_intercept=False)


@pytest.mark.parametrize("example", [MLP, CNN])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_gradient_and_coded_gradient_match_plain_autograd(example: str, l2: float) -> None:
    model = TorchModel(example, l2=l2)
    X, y, rng = problem(30, 64, 10)
    params = model.init_params(rng, 64, 10)
    bounds, coefficients, share = [(0, 7), (7, 19), (19, 30)], [1.5, -0.25, 2.0], 0.2
    expected = sum(
        c * autograd_reference(model, params, X[a:b], y[a:b], 10, share)
        for c, (a, b) in zip(coefficients, bounds, strict=True)
    )
    parts = [(c, X[a:b], y[a:b]) for c, (a, b) in zip(coefficients, bounds, strict=True)]
    check_close(model.coded_gradient(params, parts, reg_share=share), expected)
    full = autograd_reference(model, params, X, y, 10, share)
    check_close(model.gradient(params, X, y, reg_share=share), full)


def linear_to_softmax(flat: np.ndarray, d: int, n_classes: int) -> np.ndarray:
    """nn.Linear's [W (C, d), b (C)] as SoftmaxRegression's (d + 1, C) parameter matrix."""
    W, b = flat[: n_classes * d].reshape(n_classes, d), flat[n_classes * d :]
    return np.vstack([W.T, b]).ravel()


@pytest.mark.parametrize("l2, share", [(0.0, 1.0), (0.7, 1.0), (0.7, 0.25)])
def test_a_linear_module_is_the_numpy_softmax_and_least_squares(
    models_file: Path, l2: float, share: float
) -> None:
    d = 5
    for n_classes, numpy_model in ((4, SoftmaxRegression(l2=l2)), (1, LeastSquares(l2=l2))):
        model = TorchModel(ref(models_file, "linear"), l2=l2)
        X, y, rng = problem(40, d, n_classes, seed=n_classes)
        params = model.init_params(rng, d, n_classes) * 10.0
        as_numpy = linear_to_softmax(params, d, n_classes)
        loss = model.loss(params, X, y, reg_share=share)
        expected_loss = numpy_model.loss(as_numpy, X, y, reg_share=share)
        assert abs(loss - expected_loss) <= 1e-12 * abs(expected_loss)
        gradient = linear_to_softmax(model.gradient(params, X, y, reg_share=share), d, n_classes)
        check_close(gradient, numpy_model.gradient(as_numpy, X, y, reg_share=share))
        assert model.accuracy(params, X, y) == pytest.approx(numpy_model.accuracy(as_numpy, X, y))
        assert model.task == ("regression" if n_classes == 1 else "multiclass")


def test_numpy_and_torch_coded_gradients_agree_on_the_same_code(models_file: Path) -> None:
    d, n_classes = 6, 3
    model, numpy_model = TorchModel(ref(models_file, "linear"), l2=0.4), SoftmaxRegression(l2=0.4)
    X, y, rng = problem(24, d, n_classes)
    params = model.init_params(rng, d, n_classes)
    parts = [(0.5, X[:10], y[:10]), (-2.0, X[10:], y[10:])]
    coded = model.coded_gradient(params, parts, reg_share=1 / 3)
    numpy_coded = numpy_model.coded_gradient(
        linear_to_softmax(params, d, n_classes), parts, reg_share=1 / 3
    )
    check_close(linear_to_softmax(coded, d, n_classes), numpy_coded)


# ------------------------------------------------------------------------ dtypes and state


def test_float32_params_run_a_float32_copy_and_the_default_dtype_is_untouched() -> None:
    model = TorchModel(MLP)
    X, y, rng = problem(20, 64, 10)
    params = model.init_params(rng, 64, 10)
    assert params.dtype == np.float64
    g64 = model.gradient(params, X, y)
    g32 = model.gradient(params.astype(np.float32), X, y)
    assert g32.dtype == np.float64 and torch.get_default_dtype() == torch.float32
    assert not np.array_equal(g32, g64)  # it really ran in float32 ...
    errs = np.abs(g32 - g64) / max(1.0, float(np.max(np.abs(g64))))
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-5)  # ... to float32 accuracy
    assert model.loss(params.astype(np.float32), X, y) == pytest.approx(model.loss(params, X, y))


def test_init_params_are_seeded_by_the_generator_and_nodes_agree_on_the_layout() -> None:
    a, b = TorchModel(CNN), TorchModel(CNN)
    first = a.init_params(np.random.default_rng(5), 64, 10)
    assert np.array_equal(first, b.init_params(np.random.default_rng(5), 64, 10))
    assert not np.array_equal(first, a.init_params(np.random.default_rng(6), 64, 10))
    assert a.fingerprint(64, 10) == b.fingerprint(64, 10) != TorchModel(MLP).fingerprint(64, 10)
    with pytest.raises(ValueError, match="scale"):
        a.init_params(np.random.default_rng(0), 64, 10, scale=-1.0)


def test_rows_stay_independent_with_batch_norm_and_dropout(models_file: Path) -> None:
    """Run in eval mode: dropout off, batch norm on fixed statistics, so the coded message of
    several parts equals the sum of their separate gradients, and repeats exactly."""
    model = TorchModel(ref(models_file, "with_norm_and_dropout"))
    X, y, rng = problem(16, 4, 3)
    params = model.init_params(rng, 4, 3)
    parts = [(1.0, X[:5], y[:5]), (3.0, X[5:], y[5:])]
    coded = model.coded_gradient(params, parts)
    check_close(
        coded, model.gradient(params, X[:5], y[:5]) + 3.0 * model.gradient(params, X[5:], y[5:])
    )
    assert np.array_equal(coded, model.coded_gradient(params, parts))


def test_frozen_parameters_do_not_travel_and_two_nodes_agree(models_file: Path) -> None:
    master, worker = (TorchModel(ref(models_file, "frozen_first")) for _ in range(2))
    assert master.n_params(5, 3) == 4 * 3 + 3  # only the second layer is trained
    X, y, rng = problem(10, 5, 3)
    params = master.init_params(rng, 5, 3)
    worker.n_params(5, 3)
    assert np.array_equal(master.gradient(params, X, y), worker.gradient(params, X, y))


@pytest.mark.parametrize("function", ["fixed", "any_kwargs", "lazy"])
def test_factories_without_arguments_with_kwargs_and_lazy_layers(
    models_file: Path, function: str
) -> None:
    model = TorchModel(ref(models_file, function))
    X, y, rng = problem(8, 5, 3)
    params = model.init_params(rng, 5, 3)
    check_close(model.gradient(params, X, y), autograd_reference(model, params, X, y, 3, 1.0))


def test_concurrent_calls_match_sequential_ones() -> None:
    model = TorchModel(MLP)
    X, y, rng = problem(40, 64, 10)
    params = [model.init_params(rng, 64, 10) for _ in range(4)]
    expected = [model.gradient(p, X, y) for p in params]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        for _ in range(5):
            results[i] = model.gradient(params[i], X, y)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert np.array_equal(results[i], expected[i])


def test_sparse_rows_are_made_dense() -> None:
    import scipy.sparse as sp

    model = TorchModel(MLP)
    X, y, rng = problem(12, 64, 10)
    X[np.abs(X) < 1.0] = 0.0
    params = model.init_params(rng, 64, 10)
    assert np.array_equal(model.gradient(params, sp.csr_array(X), y), model.gradient(params, X, y))


# ------------------------------------------------------------------------ bad references


@pytest.mark.parametrize(
    "function, match",
    [
        ("nowhere", "has no 'nowhere'"),
        ("NOT_CALLABLE", "is a int, not a function"),
        ("not_a_module", "returned a int, not a torch.nn.Module"),
        ("raises", "RuntimeError: boom"),
        ("wrong_width", r"output has shape \(2, 4\) for 2 rows, expected \(2, 3\)"),
        ("broken_forward", r"forward pass on a \(2, 5\) batch failed"),
        ("no_parameters", "no trainable parameters"),
    ],
)
def test_bad_references_raise_bad_model_naming_the_reference(
    models_file: Path, function: str, match: str
) -> None:
    reference = ref(models_file, function)
    with pytest.raises(BadModel, match=match) as info:
        get_model(reference).n_params(5, 3)
    assert reference in str(info.value)
    with pytest.raises(BadModel, match=match):
        check_model_reference(reference, n_features=5, n_classes=3)


@pytest.mark.parametrize(
    "reference, match",
    [
        ("torch:no_such_package_xyz.models:net", "cannot import module 'no_such_package_xyz"),
        ("torch:/no/such/dir/models.py:net", "no such file"),
        ("torch:small_mlp", "must look like torch:MODULE:FUNCTION"),
        ("torch:mod:not-a-name", "must look like"),
    ],
)
def test_unimportable_references_fail_at_submit(reference: str, match: str) -> None:
    with pytest.raises(BadModel, match=match):
        check_model_reference(reference)
    with pytest.raises(ValueError, match=match):  # BadModel is a ValueError: INVALID_ARGUMENT
        get_model(reference)


def test_a_file_that_fails_to_load_is_a_bad_model(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def net(:\n")
    with pytest.raises(BadModel, match="SyntaxError"):
        check_model_reference(f"torch:{broken}:net")
    failing = tmp_path / "failing.py"
    failing.write_text("raise SystemExit(3)\n")
    with pytest.raises(BadModel, match="SystemExit"):
        check_model_reference(f"torch:{failing}:net")


def test_nan_loss_fails_with_a_message(models_file: Path) -> None:
    model = get_model(ref(models_file, "NaNHead"))
    X, y, rng = problem(6, 5, 3)
    params = model.init_params(rng, 5, 3)
    with pytest.raises(BadModel, match=r"loss is not finite .* in 6 of 6"):
        model.coded_gradient(params, [(1.0, X, y)])
    with pytest.raises(BadModel, match="loss is not finite"):
        model.loss(params, X, y)
    with pytest.raises(BadModel, match="loss is not finite"):
        check_model_reference(ref(models_file, "NaNHead"), n_features=5, n_classes=3)


def test_a_parameter_layout_that_changes_between_rounds_is_refused(models_file: Path) -> None:
    model = get_model(ref(models_file, "Grows"))
    X, y, rng = problem(6, 5, 3)
    params = model.init_params(rng, 5, 3)
    model.gradient(params, X, y)  # round 0
    with pytest.raises(BadModel, match="parameters changed after construction"):
        model.gradient(params, X, y)  # round 1


def test_bad_arguments_are_invalid_input() -> None:
    model = TorchModel(MLP)
    X, y, rng = problem(6, 64, 10)
    params = model.init_params(rng, 64, 10)
    with pytest.raises(InvalidInput, match="params of length 2409"):
        model.gradient(params[:-1], X, y)
    with pytest.raises(InvalidInput, match="integer labels"):
        model.gradient(params, X, np.full(6, 10))
    with pytest.raises(InvalidInput, match="finite"):
        model.gradient(np.full_like(params, np.inf), X, y)
    with pytest.raises(InvalidInput, match="parts must hold at least one"):
        model.coded_gradient(params, [])
    with pytest.raises(InvalidInput, match="coefficients must be finite"):
        model.coded_gradient(params, [(np.nan, X, y)])
    with pytest.raises(InvalidInput, match="params of length"):
        TorchModel(MLP).gradient(params, X, y)  # nothing built yet: n_params comes first


def test_file_references_can_be_confined_and_are_reloaded_when_changed(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "from torch import nn\ndef net(n_features, n_classes):\n    return nn.Linear(n_features, n_classes)\n"
    )
    reference = f"torch:{path}:net"
    check_model_reference(reference, roots=[tmp_path])
    with pytest.raises(BadModel, match="outside the model directories"):
        check_model_reference(reference, roots=[tmp_path / "elsewhere"])
    assert TorchModel(reference).n_params(4, 3) == 15
    path.write_text(
        "from torch import nn\ndef net(n_features, n_classes):\n"
        "    return nn.Sequential(nn.Linear(n_features, 2), nn.Linear(2, n_classes))\n"
    )
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert TorchModel(reference).n_params(4, 3) == 4 * 2 + 2 + 2 * 3 + 3


def test_examples_as_a_module_path_and_their_argument_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    model = get_model("torch:examples.torch.models:small_cnn")
    assert model.n_params(64, 10) == 1898
    with pytest.raises(BadModel, match="square images"):
        model.n_params(60, 10)


def test_doctests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for module in (torch_model_module, references_module):
        failures, attempted = doctest.testmod(module, raise_on_error=False)
        assert attempted > 0 and failures == 0, module.__name__


# ------------------------------------------------------------------------ a coded training run


def test_coded_rounds_decode_the_exact_gradient_and_train_digits() -> None:
    """Six workers, a code tolerating two stragglers, Adam on the master: every round's
    decoded message equals the full gradient, and small_mlp learns digits."""
    train, test = load_split("digits", np.random.default_rng(0))
    code = fractional_repetition(6, 2)
    blocks = [(train.X[a:b], train.y[a:b]) for a, b in partition_bounds(train.n_rows, 6)]
    master = TorchModel(MLP)
    workers = [TorchModel(MLP) for _ in range(6)]
    rng = np.random.default_rng(1)
    params = master.init_params(rng, train.n_features, train.n_classes)
    for worker in workers:
        assert worker.n_params(train.n_features, train.n_classes) == len(params)
    optimizer = Adam(lr=0.02)
    for round_ in range(40):
        alive = sorted(rng.choice(6, size=4, replace=False))
        messages = {
            i: workers[i].coded_gradient(
                params,
                [(code.B[i, j], *blocks[j]) for j in code.partitions_of_worker[i]],
                reg_share=1 / 6,
            )
            for i in alive
        }
        a = code.decode_vector(alive)
        decoded = sum(a[i] * messages[i] for i in alive)
        if round_ % 13 == 0:
            check_close(decoded, master.gradient(params, train.X, train.y), rel=1e-10)
        params = optimizer.step(params, decoded, train.n_rows)
    assert master.loss(params, train.X, train.y) / train.n_rows < 0.1
    assert master.accuracy(params, test.X, test.y) >= 0.9


# ------------------------------------------------------------------------ optimizers vs torch.optim


def torch_optim_step(kind: str, options: dict[str, Any]) -> Any:
    """One step of torch.optim's own single-tensor kernels (what torch.optim.SGD / Adam / AdamW
    run with foreach=False), through their functional form: the optimizer classes import
    torch._dynamo, which takes seconds."""
    from torch.optim.adam import adam
    from torch.optim.adamw import adamw
    from torch.optim.sgd import sgd

    buffers: list[torch.Tensor | None] = [None]
    state: dict[str, torch.Tensor] = {}

    def step(p: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        if kind == "sgd":
            sgd([p], [g], buffers, foreach=False, lr=lr, dampening=0.0, maximize=False, **options)
            return
        if not state:
            state.update(m=torch.zeros_like(p), v=torch.zeros_like(p), t=torch.tensor(0.0))
        kernel = adamw if kind == "adamw" else adam
        kernel([p], [g], [state["m"]], [state["v"]], [], [state["t"]], foreach=False,
               amsgrad=False, lr=lr, maximize=False, **options)  # fmt: skip

    return step


@pytest.mark.parametrize(
    "spec, kind, options",
    [
        (
            "sgd:momentum=0.9,weight_decay=0.01",
            "sgd",
            {"momentum": 0.9, "weight_decay": 0.01, "nesterov": False},
        ),
        (
            "sgd:momentum=0.8,nesterov=true",
            "sgd",
            {"momentum": 0.8, "weight_decay": 0.0, "nesterov": True},
        ),
        ("adam", "adam", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}),
        (
            "adam:weight_decay=0.05,beta2=0.99",
            "adamw",
            {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.05},
        ),
    ],
    ids=["sgd-momentum-decay", "sgd-nesterov", "adam", "adamw"],
)
def test_sgd_and_adam_match_torch_optim_step_by_step(
    spec: str, kind: str, options: dict[str, Any]
) -> None:
    """25 steps on the summed gradient of a real model; torch gets the MEAN gradient and the
    scheduled rate of each step."""
    model = TorchModel(MLP)
    X, y, rng = problem(50, 64, 10)
    params = model.init_params(rng, 64, 10)
    base, schedule = (0.01 if kind.startswith("adam") else 0.1), "cosine:total=25,warmup=3"
    ours, theirs = get_optimizer(spec, base, schedule=schedule), torch_optim_step(kind, options)
    reference = torch.tensor(params)
    for k in range(25):
        gradient = model.gradient(params, X, y)
        params = ours.step(params, gradient, 50)
        theirs(reference, torch.tensor(gradient / 50), base * parse_schedule(schedule).factor(k))
        expected = reference.numpy()
        errs = np.abs(params - expected) / max(1.0, float(np.max(np.abs(expected))))
        assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-12), (k, float(np.nanmax(errs)))
