"""Model references without torch: parsing, the built-in names, that nothing imports torch
unless a torch: model is asked for, and the message a node without torch gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecode.errors import BadModel
from edgecode.learning.references import (
    ModelReference,
    check_model_reference,
    parse_model_reference,
)

SERVICES = Path(__file__).resolve().parents[2] / "services"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("torch:mypkg.models:small_cnn", ModelReference("", "mypkg.models", "small_cnn", False)),
        ("torch:models.py:net", ModelReference("", "models.py", "net", True)),
        (
            "torch:examples/torch/models.py:small_mlp",
            ModelReference("", "examples/torch/models.py", "small_mlp", True),
        ),
        ("torch:C:\\models\\m.py:Net", ModelReference("", "C:\\models\\m.py", "Net", True)),
    ],
)
def test_references_split_at_the_last_colon(text: str, expected: ModelReference) -> None:
    parsed = parse_model_reference(text)
    assert (parsed.source, parsed.function, parsed.is_file) == (
        expected.source,
        expected.function,
        expected.is_file,
    )
    assert parsed.text == text


@pytest.mark.parametrize(
    "text",
    ["torch:", "torch:net", "torch::net", "torch:pkg:", "torch:pkg:2net", "pkg:net", "logistic"],
)
def test_malformed_references_name_themselves(text: str) -> None:
    with pytest.raises(BadModel, match="torch:") as info:
        parse_model_reference(text)
    assert repr(text) in str(info.value)


def test_built_in_names_are_checked_without_torch() -> None:
    for name in ("logistic", "softmax", "least_squares"):
        check_model_reference(name)
    with pytest.raises(ValueError, match=r"name must be one of .* got 'svm'"):
        check_model_reference("svm")


def test_nothing_imports_torch_until_a_torch_model_is_asked_for() -> None:
    result = run_python(
        "import sys, numpy as np\n"
        "import edgecode.learning as L, edgecode.learning.references as R\n"
        "from edgecode.learning import schedules, optimizers\n"
        "L.check_model_reference('softmax')\n"
        "R.parse_model_reference('torch:examples/torch/models.py:small_mlp')\n"
        "m = L.get_model('softmax'); o = L.get_optimizer('adam', schedule='cosine:total=5')\n"
        "o.step(np.zeros(3), np.ones(3), 1)\n"
        "print('torch' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_node_without_torch_says_how_to_install_it() -> None:
    result = run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "from edgecode.errors import BadModel\n"
        "from edgecode.learning import get_model, check_model_reference\n"
        "for call in (lambda: get_model('torch:pkg.models:net'),\n"
        "             lambda: check_model_reference('torch:pkg.models:net')):\n"
        "    try:\n"
        "        call()\n"
        "    except BadModel as exc:\n"
        "        print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("pip install 'edgecode[torch]'" in line for line in lines)
