"""Learning-rate schedules: closed forms, spec round trips, validation; and the doctests of the
optimizer and schedule modules."""

from __future__ import annotations

import doctest
import math

import pytest

from edgecode.learning import optimizers as optimizers_module
from edgecode.learning import schedules as schedules_module
from edgecode.learning.schedules import Schedule, parse_schedule


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("constant", lambda k: 1.0),
        ("", lambda k: 1.0),
        ("step:every=3", lambda k: 0.1 ** (k // 3)),
        ("step:every=2,gamma=0.5", lambda k: 0.5 ** (k // 2)),
        ("exponential:gamma=0.9", lambda k: 0.9**k),
        ("cosine:total=8", lambda k: (1 + math.cos(math.pi * min(k, 8) / 8)) / 2),
        (
            "cosine:total=8,floor=0.2",
            lambda k: 0.2 + 0.8 * (1 + math.cos(math.pi * min(k, 8) / 8)) / 2,
        ),
        ("constant:warmup=4", lambda k: min(1.0, (k + 1) / 4)),
        ("exponential:gamma=0.5,warmup=3", lambda k: 0.5**k * min(1.0, (k + 1) / 3)),
    ],
)
def test_factors_follow_their_closed_forms(spec: str, expected: object) -> None:
    schedule = parse_schedule(spec)
    for k in range(20):
        assert math.isclose(schedule.factor(k), expected(k), rel_tol=1e-15, abs_tol=1e-300)  # type: ignore[operator]
    assert parse_schedule(schedule.spec) == schedule


def test_specs_are_canonical() -> None:
    assert parse_schedule("step:gamma=0.5,every=10").spec == "step:every=10,gamma=0.5"
    assert parse_schedule("cosine:total=100").spec == "cosine:floor=0,total=100"
    assert parse_schedule(None) == Schedule() == parse_schedule("constant")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("linear", "kind must be one of"),
        ("step", r"needs \['every'\]"),
        ("step:every=0", "every must be an integer >= 1"),
        ("step:every=2.5", "every must be an integer"),
        ("step:every=2,gamma=0", r"gamma must be in \(0, 1\]"),
        ("exponential:gamma=1.5", "gamma must be in"),
        ("cosine:total=10,floor=2", r"floor must be in \[0, 1\]"),
        ("cosine:total=inf", "total must be finite"),
        ("cosine:total=10,warmup=-1", "warmup must be an integer >= 0"),
        ("cosine:total=10,gamma=0.5", "is not KEY=VALUE with KEY one of"),
        ("step:every", "is not KEY=VALUE"),
        ("step:every=ten", "every must be a number, got 'ten'"),
    ],
)
def test_bad_specs_name_the_key(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_schedule(spec)


def test_doctests() -> None:
    for module in (optimizers_module, schedules_module):
        failures, attempted = doctest.testmod(module, raise_on_error=False)
        assert attempted > 0 and failures == 0, module.__name__
