"""``--straggle`` strings as a worker parses them: every documented key is accepted, and the
emulated time is what the model says (f * (shift + compute_seconds + X) for ``exp``)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.emulation import parse_straggle


@pytest.mark.parametrize(
    "text",
    [
        "slow:factor=5",
        "bernoulli:p=0.2,factor=5",
        "markov:p_slow=0.8,p_active=0.05,q_as=0.1,q_sa=0.2,factor=5",
        "exp:shift=0.1,rate=20",
        "exp:shift=0.18,rate=8.0",  # what `edgecode run --spec` gives a spec worker
        "bernoulli:shift=0.16,rate=6.0,p_straggle=0.1,slow_factor=5.0",
    ],
)
def test_documented_strings_parse_and_emulate(text: str) -> None:
    assert parse_straggle(text).emulates


def test_exp_shift_adds_to_the_compute_time() -> None:
    """A deterministic shift alone is emulated too: f * (shift + compute_seconds)."""
    assert parse_straggle("exp:shift=0.1").emulates
    config = parse_straggle("exp:shift=0.1", compute_seconds=0.05)
    runtime = config.runtime(8)
    samples = np.array([runtime.sample(0.25, np.random.default_rng(i)) for i in range(5)])
    assert np.all(np.isfinite(samples))
    np.testing.assert_allclose(samples, 0.25 * (0.1 + 0.05), rtol=1e-6)


@pytest.mark.parametrize("text", ["exp:name=x", "exp:model=markov", "exp:shift", "nope:factor=2"])
def test_bad_strings_name_the_problem(text: str) -> None:
    with pytest.raises(ValueError, match="--straggle"):
        parse_straggle(text)
