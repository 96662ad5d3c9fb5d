"""Unit tests of the least-squares round rule (edgecode.codes.approximate)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.codes import cyclic_repetition, fractional_repetition
from edgecode.codes.approximate import LeastSquaresDecoder, LeastSquaresRule, used_partitions
from edgecode.codes.combine import Rule
from edgecode.errors import InvalidInput


def _messages(B: np.ndarray, rng: np.random.Generator, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    gradients = rng.standard_normal((B.shape[1], d))
    return gradients, B @ gradients


def test_rule_satisfies_the_protocol() -> None:
    rule: Rule = LeastSquaresDecoder(fractional_repetition(4, 1).B).rule(length=3)
    assert rule.n_senders == 4


def test_wait_ends_the_round_and_value_is_the_weighted_sum() -> None:
    rng = np.random.default_rng(0)
    code = cyclic_repetition(8, 2)
    gradients, messages = _messages(code.B, rng)
    rule = LeastSquaresDecoder(code.B).rule(length=5, wait=4)
    answers = [rule.offer(i, messages[i]) for i in (7, 3, 3, 0, 5)]
    # the repeated sender 3 counts once: complete at the 4th distinct sender (5)
    assert answers == [False, False, False, False, True]
    result = rule.result()
    assert result.weights is not None and result.partition_weights is not None
    expected = result.partition_weights @ gradients
    errs = np.abs(result.value - expected)
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-9)
    assert set(result.used) <= {0, 3, 5, 7}
    assert np.all(result.weights[[1, 2, 4, 6]] == 0.0)
    error = result.partition_weights - 1.0
    assert result.residual == pytest.approx(float(error @ error) / 8, abs=1e-12)
    assert not result.exact and result.residual > 0.0  # 4 of 8 alive cannot cover s = 2


def test_no_wait_completes_only_with_everyone() -> None:
    code = fractional_repetition(6, 2)
    rule = LeastSquaresDecoder(code.B).rule(length=1)
    assert [rule.offer(i, np.ones(1)) for i in range(6)] == [False] * 5 + [True]
    assert rule.result().exact


def test_at_deadline_returns_best_combination_or_none() -> None:
    code = fractional_repetition(6, 1)
    rule = LeastSquaresDecoder(code.B).rule(length=2, wait=5)
    assert rule.at_deadline() is None
    assert "no message" in rule.failure()
    rule.offer(2, np.array([1.0, 2.0]))
    rule.offer(3, np.array([3.0, 4.0]))
    assert "2 of 6" in rule.failure()
    late = rule.at_deadline()
    assert late is not None and not late.exact
    assert late.partition_weights is not None
    np.testing.assert_allclose(late.partition_weights, [0, 0, 1, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(late.value, [2.0, 3.0], atol=1e-12)  # (m_2 + m_3) / 2
    assert late.residual == pytest.approx(4 / 6)


def test_until_exact_stops_at_the_first_decodable_set() -> None:
    rng = np.random.default_rng(1)
    code = fractional_repetition(6, 1)
    gradients, messages = _messages(code.B, rng)
    rule = LeastSquaresDecoder(code.B).rule(length=5, until_exact=True)
    # groups {0,1}, {2,3}, {4,5}: decodable once each group has one arrival
    order = [0, 1, 2, 4]
    assert [rule.offer(i, messages[i]) for i in order] == [False, False, False, True]
    result = rule.result()
    assert result.exact and result.residual < 1e-20
    errs = np.abs(result.value - gradients.sum(axis=0))
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-9)


def test_until_exact_on_cyclic_needs_more_than_coverage() -> None:
    code = cyclic_repetition(6, 2)
    decoder = LeastSquaresDecoder(code.B)
    # workers 0 and 3 cover every partition (0..2 and 3..5) and are decodable only if the
    # coefficients happen to allow it; the rule must agree with the decoder either way
    rule = decoder.rule(length=1, until_exact=True)
    rule.offer(0, np.zeros(1))
    done = rule.offer(3, np.zeros(1))
    assert decoder.covers([0, 3])
    assert done == decoder.decode([0, 3]).exact


def test_decoder_caches_per_alive_set_and_bounds_the_cache() -> None:
    decoder = LeastSquaresDecoder(fractional_repetition(4, 1).B, cache_size=2)
    first = decoder.decode([1, 0])
    assert decoder.decode((0, 1)) is first
    decoder.decode([2])
    decoder.decode([3])  # evicts (0, 1)
    assert decoder.decode([0, 1]) is not first
    with pytest.raises(ValueError):
        first.weights[0] = 2.0  # read-only: shared across rounds


def test_empty_set_has_residual_one() -> None:
    d = LeastSquaresDecoder(cyclic_repetition(5, 1).B).decode([])
    assert d.residual == 1.0 and not d.exact and d.used == ()
    assert not used_partitions(d.partition_weights).any()


def test_general_targets() -> None:
    code = fractional_repetition(4, 1)
    targets = np.array([2.0, 2.0, 0.0, 0.0])
    d = LeastSquaresDecoder(code.B, targets=targets).decode([1])
    assert d.exact
    np.testing.assert_allclose(d.partition_weights, targets, atol=1e-12)


@pytest.mark.parametrize("wait", [0, 7, 2.5, -1])
def test_bad_wait(wait: object) -> None:
    decoder = LeastSquaresDecoder(fractional_repetition(6, 1).B)
    with pytest.raises(ValueError, match="wait"):
        LeastSquaresRule(decoder, 3, wait=wait)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="B must be"):
        LeastSquaresDecoder(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="B must be"):
        LeastSquaresDecoder(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="targets"):
        LeastSquaresDecoder(np.eye(3), targets=np.ones(2))
    rule = LeastSquaresDecoder(np.eye(3)).rule(length=2)
    with pytest.raises(InvalidInput):
        rule.offer(0, np.ones(3))
    with pytest.raises(InvalidInput):
        rule.offer(3, np.ones(2))
    with pytest.raises(ValueError, match="alive"):
        LeastSquaresDecoder(np.eye(3)).decode([5])
