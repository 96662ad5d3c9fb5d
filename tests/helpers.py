"""Helpers shared by test modules in several folders: ``from helpers import require_infra``.

Importable from any test file because pyproject's ``[tool.pytest.ini_options] pythonpath``
puts ``tests/`` on ``sys.path`` before collection. (It used to live in ``tests/conftest.py``, but
every folder's ``conftest.py`` is the same top-level module name ``conftest``, so ``from conftest
import ...`` got whichever one pytest had imported last: it depended on collection order.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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
