"""Helpers shared by test modules in several folders: ``from helpers import require_infra``.

Importable from any test file because pyproject's ``[tool.pytest.ini_options] pythonpath``
puts ``tests/`` on ``sys.path`` before collection. (It used to live in ``tests/conftest.py``, but
every folder's ``conftest.py`` is the same top-level module name ``conftest``, so ``from conftest
import ...`` got whichever one pytest had imported last: it depended on collection order.)
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest


def require_infra(reason: str) -> None:
    """Skip when infrastructure is missing on a user's machine; fail in CI
    (``EDGECODE_REQUIRE_INFRA=1``), where .ci/run installs it."""
    if os.environ.get("EDGECODE_REQUIRE_INFRA") == "1":
        pytest.fail(f"required infrastructure missing: {reason}")
    pytest.skip(reason)


def assert_within(
    errors: Sequence[float] | np.ndarray,
    patterns: Sequence[object],
    bound: float,
    what: str = "patterns",
) -> None:
    """Every error (one per pattern) finite and <= ``bound``; the message names the worst
    pattern, NaN first. Never a running ``max()``, which drops NaN."""
    values = np.asarray(errors, dtype=np.float64)
    assert values.shape == (len(patterns),) and values.size > 0
    bad = ~(np.isfinite(values) & (values <= bound))
    if bad.any():
        worst = int(np.argmax(np.where(np.isnan(values), np.inf, values)))
        raise AssertionError(
            f"{int(bad.sum())} of {values.size} {what} exceed {bound:g} or are not finite; "
            f"worst: {patterns[worst]} with {values[worst]!r}"
        )


def run_checked(
    command: list[str], timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with the end of its output."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (scripts/ is no package), run afresh on every call."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
