"""Shared test helpers."""

from __future__ import annotations

import os

import pytest


def require_infra(reason: str) -> None:
    """Skip when infrastructure is missing on a user's machine; fail in CI
    (``EDGECODE_REQUIRE_INFRA=1``), where .ci/run installs it."""
    if os.environ.get("EDGECODE_REQUIRE_INFRA") == "1":
        pytest.fail(f"required infrastructure missing: {reason}")
    pytest.skip(reason)
