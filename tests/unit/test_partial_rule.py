"""The master's partial-recovery rule, exhaustively on small schemes.

For every arrival ORDER of n <= 6 workers (all n! of them) the rule must end the round at the
first prefix from which ceil(alpha k) partitions can be recovered by pairwise disjoint messages
(an independent brute-force oracle, not the scheme's decoder), recover that many, and return
the weighted sum of exactly those partitions' gradients to 1e-12; every straggler set of size s
of the n = 10 designs is checked the same way.
"""

from __future__ import annotations

import doctest
import itertools
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from edgecode.codes import combine, partial_rule, partial_schemes
from edgecode.codes.partial import (
    PartialRecoveryScheme,
    SubsetDesign,
    cyclic_partial,
    partial_load_optimum,
    subset_design,
)
from edgecode.codes.partial_rule import (
    SCALES,
    PartialDecoder,
    inclusion_probabilities,
    recovery_weights,
)
from edgecode.codes.partial_schemes import (
    InvalidPartialParameters,
    check_alpha,
    design_label,
    partial_scheme,
    worker_encoding,
)
from edgecode.codes.partial_schemes import (
    partial_designs as designs_for,
)
from edgecode.errors import Infeasible, InvalidInput

TOLERANCE = 1e-12

SMALL_SCHEMES = [
    cyclic_partial(5, 1, 0.8),
    cyclic_partial(5, 2, 0.6, 2),
    cyclic_partial(6, 2, 0.5),
    cyclic_partial(6, 2, 0.8, 2),
    cyclic_partial(6, 3, 0.5, 3),
    subset_design(4, 2, 0.7),
    subset_design(5, 2, 0.7),
    subset_design(6, 2, 0.8),
    subset_design(6, 1, 0.9),
]


def _ids(schemes: Sequence[PartialRecoveryScheme]) -> list[str]:
    return [f"n{c.n_workers}-s{c.stragglers}-a{c.alpha}-{design_label(c)}" for c in schemes]


class Oracle:
    """Most partitions recoverable from a set of workers, by brute force over the sets of
    pairwise disjoint messages (every covered set reachable by adding one disjoint message at a
    time); when every message is one partition, the union of the workers' partitions."""

    def __init__(self, scheme: PartialRecoveryScheme) -> None:
        self.messages = scheme.messages
        self.singletons = all(len(m) == 1 for worker in self.messages for m in worker)
        self._cache: dict[frozenset[int], int] = {}

    def count(self, workers: Iterable[int]) -> int:
        key = frozenset(workers)
        if key not in self._cache:
            self._cache[key] = self._count(key)
        return self._cache[key]

    def _count(self, workers: frozenset[int]) -> int:
        if self.singletons:
            return len({m[0] for w in workers for m in self.messages[w]})
        reachable = {0}
        for w in sorted(workers):
            for message in self.messages[w]:
                bits = sum(1 << j for j in message)
                reachable |= {r | bits for r in reachable if not r & bits}
        return max(bin(r).count("1") for r in reachable)


def _play(
    decoder: PartialDecoder, order: Sequence[int], responses: list[np.ndarray], rotation: int = 0
) -> tuple[int, combine.Decoded]:
    """Offer ``order``; return (arrivals used, result)."""
    rule = decoder.rule(responses[0].shape[1], rotation)
    for j, worker in enumerate(order, start=1):
        if rule.offer(worker, responses[worker]):
            return j, rule.result()
    raise AssertionError(f"the rule never completed: {rule.failure()}")


def _check_round(
    decoder: PartialDecoder,
    oracle: Oracle,
    order: Sequence[int],
    used: int,
    result: combine.Decoded,
    G: np.ndarray,
) -> float:
    """Assert the rule's decisions; return the relative error of its value."""
    need = decoder.need
    first = next(j for j in range(1, len(order) + 1) if oracle.count(order[:j]) >= need)
    assert used == first, f"order {order}: ended at arrival {used}, first sufficient is {first}"
    assert result.recovered is not None and result.partition_weights is not None
    recovered = list(result.recovered)
    assert len(recovered) == oracle.count(order[:used]) >= need
    arrived = set(order[:used])
    assert set(result.used) <= arrived
    held = {j for w in result.used for m in decoder.scheme.messages[w] for j in m}
    assert set(recovered) <= held
    weights = result.partition_weights
    assert np.array_equal(np.flatnonzero(weights), np.array(recovered, dtype=np.int64))
    reference = weights @ G
    return float(np.linalg.norm(result.value - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("scheme", SMALL_SCHEMES, ids=_ids(SMALL_SCHEMES))
def test_every_arrival_order_ends_at_the_first_sufficient_set(
    scheme: PartialRecoveryScheme,
) -> None:
    G = np.random.default_rng(1).standard_normal((scheme.n_partitions, 5))
    responses = [worker_encoding(scheme, w).encode(G) for w in range(scheme.n_workers)]
    decoder = PartialDecoder(scheme)
    oracle = Oracle(scheme)
    errors = []
    for rotation, order in enumerate(itertools.permutations(range(scheme.n_workers))):
        used, result = _play(decoder, order, responses, rotation)
        errors.append(_check_round(decoder, oracle, order, used, result, G))
        assert result.scale == scheme.n_partitions / len(result.recovered or ())
    errs = np.array(errors)
    assert errs.size == math.factorial(scheme.n_workers)
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(
    "scheme", [SMALL_SCHEMES[3], SMALL_SCHEMES[5]], ids=_ids([SMALL_SCHEMES[3], SMALL_SCHEMES[5]])
)
def test_every_scale_weights_exactly_the_recovered_partitions(
    scheme: PartialRecoveryScheme, scale: str
) -> None:
    G = np.random.default_rng(2).standard_normal((scheme.n_partitions, 3))
    responses = [worker_encoding(scheme, w).encode(G) for w in range(scheme.n_workers)]
    decoder = PartialDecoder(scheme, scale)
    oracle = Oracle(scheme)
    pi = inclusion_probabilities(decoder)
    errors = []
    for order in itertools.permutations(range(scheme.n_workers)):
        used, result = _play(decoder, order, responses)
        errors.append(_check_round(decoder, oracle, order, used, result, G))
        assert result.partition_weights is not None and result.recovered is not None
        weights = result.partition_weights[list(result.recovered)]
        count, k = len(result.recovered), scheme.n_partitions
        expected = {"rescale": k / count, "none": 1.0}.get(scale)
        if expected is None:  # inverse-probability
            assert np.allclose(weights, 1.0 / pi[list(result.recovered)], rtol=1e-15)
        else:
            assert np.all(weights == expected) and result.scale == expected
        assert result.exact == (count == k)
        assert math.isclose(result.residual, float(np.sum((result.partition_weights - 1) ** 2)) / k)
    errs = np.array(errors)
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)


N10_SCHEMES = [scheme for alpha in (1.0, 0.9, 0.8) for scheme in designs_for(10, 3, alpha)]


@pytest.mark.parametrize("scheme", N10_SCHEMES, ids=_ids(N10_SCHEMES))
def test_every_straggler_set_is_recovered_before_any_straggler_answers(
    scheme: PartialRecoveryScheme,
) -> None:
    """n = 10, s = 3: the 7 others answer first (in a random order), stragglers never before."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((scheme.n_partitions, 4))
    responses = [worker_encoding(scheme, w).encode(G) for w in range(scheme.n_workers)]
    decoder = PartialDecoder(scheme)
    oracle = Oracle(scheme)
    errors = []
    sets = list(itertools.combinations(range(10), 3))
    for index, stragglers in enumerate(sets):
        alive = [w for w in range(10) if w not in stragglers]
        order = [*rng.permutation(alive).tolist(), *stragglers]
        used, result = _play(decoder, order, responses, index)
        assert used <= 7, f"stragglers {stragglers}: needed arrival {used}"
        errors.append(_check_round(decoder, oracle, order, used, result, G))
    errs = np.array(errors)
    assert errs.size == math.comb(10, 3)
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)


@pytest.mark.parametrize("scheme", [*SMALL_SCHEMES, cyclic_partial(8, 3, 0.75, 2)])
def test_decoder_tables_count_what_the_oracle_recovers_and_only_grow(
    scheme: PartialRecoveryScheme,
) -> None:
    decoder = PartialDecoder(scheme)
    oracle = Oracle(scheme)
    n = scheme.n_workers
    counts = decoder.counts()
    expected = [oracle.count(w for w in range(n) if mask >> w & 1) for mask in range(1 << n)]
    assert counts.tolist() == expected
    assert [decoder.recovered_count(mask) for mask in range(1 << n)] == expected
    for i in range(n):
        with_i = np.arange(1 << n) | (1 << i)
        assert np.all(counts[with_i] >= counts)


def test_subset_designs_recover_by_count_only() -> None:
    design = subset_design(10, 3, 0.9)
    decoder = PartialDecoder(design)
    assert decoder.count_only and decoder.arrivals_needed == 7
    assert decoder.by_arrivals is not None and decoder.by_arrivals[7] == decoder.need == 189
    assert decoder.by_arrivals[6] < decoder.need


def test_rescaling_is_unbiased_for_cyclic_and_one_size_designs_only() -> None:
    """E[weight of g_j] over random orders (and rotations) replayed through the rule."""
    for scheme in (cyclic_partial(6, 2, 0.5), cyclic_partial(6, 2, 0.8, 2), subset_design(5, 1, 1)):
        weights = recovery_weights(PartialDecoder(scheme))
        assert np.all(np.isfinite(weights)) and np.allclose(weights, 1.0, rtol=0, atol=1e-12)
    mixed = subset_design(10, 3, 0.9)  # 30 partitions on 1 worker, 180 on 2
    weights = recovery_weights(PartialDecoder(mixed))
    single = mixed.membership.sum(axis=1) == 1
    assert np.allclose(weights[single], 0.7 * 210 / 189, rtol=1e-12)
    assert np.allclose(weights[~single], (1 - 3 / 45) * 210 / 189, rtol=1e-12)


@pytest.mark.parametrize(
    "scheme", [subset_design(6, 2, 0.8), cyclic_partial(6, 2, 0.8, 2), subset_design(10, 3, 0.8)]
)
def test_inverse_probability_is_unbiased_for_every_design(scheme: PartialRecoveryScheme) -> None:
    decoder = PartialDecoder(scheme, "inverse-probability")
    weights = recovery_weights(decoder)
    assert np.all(np.isfinite(weights)) and np.allclose(weights, 1.0, rtol=0, atol=1e-12)
    # pi_j from the closed forms equals the replayed recovery frequency
    frequency = recovery_weights(PartialDecoder(scheme, "none"))
    assert np.allclose(inclusion_probabilities(decoder), frequency, rtol=0, atol=1e-12)


def test_straggler_sets_are_also_recovered_in_fixed_order_with_rotation() -> None:
    """The rotation only changes which optimal arcs are used, never when the round ends."""
    scheme = cyclic_partial(7, 2, 0.6, 2)
    G = np.random.default_rng(4).standard_normal((7, 2))
    responses = [worker_encoding(scheme, w).encode(G) for w in range(7)]
    decoder = PartialDecoder(scheme)
    ends = {
        rotation: _play(decoder, list(range(7)), responses, rotation)[0] for rotation in range(7)
    }
    assert len(set(ends.values())) == 1


# --------------------------------------------------------------------------------------------
# worker encoding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SMALL_SCHEMES, ids=_ids(SMALL_SCHEMES))
def test_worker_encoding_sends_the_plain_sums_of_the_design(scheme: PartialRecoveryScheme) -> None:
    G = np.random.default_rng(5).standard_normal((scheme.n_partitions, 3))
    errors = []
    for w in range(scheme.n_workers):
        encoding = worker_encoding(scheme, w)
        held = sorted({j for m in scheme.messages[w] for j in m})
        assert list(encoding.partitions) == held
        assert set(np.unique(encoding.sums).tolist()) <= {0.0, 1.0}
        own = encoding.encode(G[list(encoding.partitions)])
        assert own.shape == (len(scheme.messages[w]), 3) == encoding.encode(G).shape
        errors.append(float(np.abs(own - scheme.encode(w, G)).max()))
        errors.append(float(np.abs(own - encoding.encode(G)).max()))
    errs = np.array(errors)
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)


def test_worker_encoding_rejects_bad_input() -> None:
    scheme = cyclic_partial(6, 2, 0.8, 2)
    with pytest.raises(InvalidInput, match=r"worker must be in \[0, 6\)"):
        worker_encoding(scheme, 6)
    encoding = worker_encoding(scheme, 0)
    with pytest.raises(InvalidInput, match="must be 2-D"):
        encoding.encode(np.zeros(3))
    with pytest.raises(InvalidInput, match="gradients must have"):
        encoding.encode(np.zeros((1, 3)))


# --------------------------------------------------------------------------------------------
# the rule's edges
# --------------------------------------------------------------------------------------------


def test_rule_rejects_bad_messages_and_explains_failures() -> None:
    scheme = cyclic_partial(6, 2, 0.8, 2)
    decoder = PartialDecoder(scheme)
    rule: combine.Rule = decoder.rule(3)
    good = np.zeros((decoder.vectors[0], 3))
    with pytest.raises(InvalidInput, match=r"sender must be in \[0, 6\)"):
        rule.offer(6, good)
    with pytest.raises(InvalidInput, match=r"must have shape \(2, 3\)"):
        rule.offer(0, np.zeros((1, 3)))
    assert rule.offer(0, good) is False
    with pytest.raises(InvalidInput, match="already answered"):
        rule.offer(0, good)
    assert rule.at_deadline() is None
    assert rule.failure().startswith(
        f"recovered {decoder.recovered_count(1)} of the ceil(alpha k) = {decoder.need}"
    )
    with pytest.raises(InvalidInput, match="not complete"):
        rule.result()
    for w in range(1, 6):
        if rule.offer(w, good):
            break
    first = rule.result()
    assert rule.offer(5, np.zeros((7, 7))) is True  # late arrivals after completion are ignored
    assert rule.result().recovered == first.recovered
    assert rule.at_deadline() is not None


def test_response_shape_is_what_every_worker_sends() -> None:
    for scheme in (*SMALL_SCHEMES, *N10_SCHEMES):
        decoder = PartialDecoder(scheme)
        vectors, length = decoder.response_shape(7)
        assert length == 7 and vectors == scheme.communication_load
        assert all(worker_encoding(scheme, w).vectors == vectors for w in range(scheme.n_workers))


def test_decoder_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="scale must be one of"):
        PartialDecoder(cyclic_partial(6, 2, 0.5), "k/|R|")
    with pytest.raises(InvalidInput, match="PartialRecoveryScheme"):
        PartialDecoder("cyclic")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="length must be an integer >= 0"):
        PartialDecoder(cyclic_partial(6, 2, 0.5)).rule(-1)


# --------------------------------------------------------------------------------------------
# parameters: every impossible request names its bound (INVALID_ARGUMENT)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha",
    [0, 0.0, -0.25, 1.0000001, 1.5, float("nan"), float("inf"), -math.inf, "0.5", None, True],
)
def test_bad_alpha_names_its_bound(alpha: object) -> None:
    with pytest.raises(InvalidInput, match=r"0 < alpha <= 1"):
        check_alpha(alpha)
    with pytest.raises(InvalidInput, match=r"0 < alpha <= 1"):
        partial_scheme(6, 2, alpha)  # type: ignore[arg-type]


def test_alpha_is_read_exactly() -> None:
    assert check_alpha(0.9) == Fraction(9, 10)
    assert check_alpha(Fraction(2, 3)) == Fraction(2, 3)
    assert check_alpha(1) == 1


INFEASIBLE = [
    ((0, 0, 0.5), {}, r"n=0 violates 1 <= n"),
    ((10, 10, 0.5), {}, r"s=10 violates 0 <= s <= 9"),
    ((10, -1, 0.5), {}, r"s=-1 violates 0 <= s <= 9"),
    ((10, 3, 0.9), {"d": 1}, r"below the LP bound L\*\(n, s, alpha\) = 0.185714"),
    ((10, 3, 0.9), {"d": 2}, r"below the cyclic lower bound s \+ 1 - floor\(n \(1 - alpha\)\) = 3"),
    ((10, 3, 0.9), {"d": 11}, r"d=11 violates 1 <= d <= 10"),
    ((5, 1, 1.0), {"d": 2}, r"leave only \d+ of the ceil\(alpha n\)=5 partitions needed"),
    ((10, 3, 0.9), {"vectors": 0}, r"vectors=0 violates 1 <= vectors"),
    ((10, 3, 0.9, "subset"), {"vectors": 3}, r"vectors=3 violates 39 <= vectors"),
    ((10, 3, 0.9, "subset"), {"max_partitions": 100}, r"k=210 partitions .* max_partitions=100"),
]


@pytest.mark.parametrize(("args", "kwargs", "message"), INFEASIBLE)
def test_infeasible_parameters_name_the_bound(
    args: tuple[object, ...], kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidPartialParameters, match=message) as caught:
        partial_scheme(*args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, InvalidInput) and isinstance(caught.value, Infeasible)


def test_infeasible_parameters_become_invalid_argument() -> None:
    grpc = pytest.importorskip("grpc")
    from edgecode.runtime.errors import status_of

    for args, kwargs, _ in INFEASIBLE:
        with pytest.raises(InvalidInput) as caught:
            partial_scheme(*args, **kwargs)  # type: ignore[arg-type]
        assert status_of(caught.value) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidInput) as bad_alpha:
        check_alpha(float("nan"))
    assert status_of(bad_alpha.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_designs_list_the_subset_design_and_every_useful_vector_count() -> None:
    designs = designs_for(10, 3, 0.9)
    assert [design_label(d) for d in designs] == [
        "subset r=1x3,2x4 k=210",
        "cyclic d=3 V=1",
        "cyclic d=3 V=2",
        "cyclic d=3 V=3",
    ]
    subset = designs[0]
    assert isinstance(subset, SubsetDesign)
    assert subset.load_exact == partial_load_optimum(10, 3, 0.9).load  # the LP bound, exactly
    assert [d.communication_load for d in designs] == [39, 1, 2, 3]
    assert [design_label(d) for d in designs_for(10, 3, 0.9, max_vectors=2)] == [
        "cyclic d=3 V=1",
        "cyclic d=3 V=2",
    ]
    # above the partition cap the subset design is left out, not an error
    assert all("subset" not in design_label(d) for d in designs_for(10, 3, 0.9, max_partitions=50))
    with pytest.raises(InvalidPartialParameters, match="max_vectors=0 violates"):
        designs_for(10, 3, 0.9, max_vectors=0)
    with pytest.raises(InvalidInput, match="design must be one of"):
        partial_scheme(10, 3, 0.9, "auto")


@pytest.mark.parametrize("module", [partial_rule, partial_schemes])
def test_docstring_examples_run(module: object) -> None:
    failures, attempted = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert attempted > 0 and failures == 0


# --------------------------------------------------------------------------------------------
# survivors of the mutation run (docs/notes/mutation.md): exact messages and labels
# --------------------------------------------------------------------------------------------

EXACT_MESSAGES = [
    ((0, 0, 0.5), {}, "n=0 violates 1 <= n (at least one worker)"),
    ((10, 10, 0.5), {}, "s=10 violates 0 <= s <= 9 (at least one worker must answer)"),
    ((10, 3, 0.9), {"d": 11}, "d=11 violates 1 <= d <= 10 (partitions held out of n)"),
    ((10, 3, 0.9), {"vectors": 0}, "vectors=0 violates 1 <= vectors (one at least)"),
    (
        (10, 3, 0.9, "subset"),
        {"max_partitions": 0},
        "max_partitions=0 violates 1 <= max_partitions (a cap on k)",
    ),
    (
        (10, 3, 0.9, "subset"),
        {"vectors": 3},
        "vectors=3 violates 39 <= vectors (the subset design for n=10, s=3, alpha=9/10 sends "
        "one vector per held partition and a worker holds 39)",
    ),
]


@pytest.mark.parametrize(("args", "kwargs", "message"), EXACT_MESSAGES)
def test_bounds_are_named_in_full(
    args: tuple[object, ...], kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidPartialParameters) as caught:
        partial_scheme(*args, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_counts_must_be_integers_and_bounds_are_inclusive() -> None:
    for bad, shown in ((2.5, "2.5"), (True, "True")):
        with pytest.raises(InvalidInput) as caught:
            partial_scheme(bad, 0, 0.5)  # type: ignore[arg-type]
        assert str(caught.value) == f"n must be an integer, got {shown}"
        assert not isinstance(caught.value, InvalidPartialParameters)
    # the upper bounds themselves are allowed: s = n - 1, d = n
    assert partial_scheme(4, 3, 1.0).stragglers == 3
    assert partial_scheme(10, 3, 0.9, d=10).d == 10
    # max_partitions = 1 is a valid cap (the design then does not fit it)
    with pytest.raises(InvalidPartialParameters, match="max_partitions=1") as caught:
        partial_scheme(10, 3, 0.9, "subset", max_partitions=1)
    assert "violates 1 <= max_partitions" not in str(caught.value)
    with pytest.raises(InvalidPartialParameters) as too_few:
        designs_for(10, 3, 0.9, max_vectors=0)
    assert str(too_few.value) == "max_vectors=0 violates 1 <= max_vectors (one vector at least)"
    assert [design_label(d) for d in designs_for(10, 3, 0.9, max_vectors=1)] == ["cyclic d=3 V=1"]


def test_labels_of_approximate_and_foreign_schemes() -> None:
    approx = subset_design(10, 3, 0.9, max_partitions=150, approximate=True)
    assert design_label(approx) == "subset r=1x1,2x2 k=100 (approx.)"

    class Foreign:
        pass

    assert design_label(Foreign()) == "Foreign"  # type: ignore[arg-type]


def test_worker_encoding_edges_in_full() -> None:
    scheme = cyclic_partial(6, 2, 0.8, 2)
    with pytest.raises(InvalidInput) as caught:
        worker_encoding(scheme, True)  # type: ignore[arg-type]
    assert str(caught.value) == "worker must be an integer, got True"
    encoding = worker_encoding(scheme, np.int64(5))  # type: ignore[arg-type]
    assert encoding.worker == 5 and type(encoding.worker) is int
    held = len(encoding.partitions)
    with pytest.raises(InvalidInput) as wrong_rows:
        encoding.encode(np.zeros((1, 7)))
    assert str(wrong_rows.value) == (
        f"worker 5 holds {held} partitions: gradients must have {held} rows (or all k), got 1"
    )


# -- partial_rule survivors ---------------------------------------------------------------------

ARCS = cyclic_partial(7, 3, 0.6)  # d = 3, V = 1: messages of several partitions


def _responses(scheme: PartialRecoveryScheme, G: np.ndarray) -> list[np.ndarray]:
    return [worker_encoding(scheme, w).encode(G) for w in range(scheme.n_workers)]


@pytest.mark.parametrize("scheme", [ARCS, cyclic_partial(7, 3, 0.6, 2, d=3)])
def test_inverse_probability_on_summed_messages(scheme: PartialRecoveryScheme) -> None:
    """Messages of several partitions (3; or 2 and 1): value = sum_{j in R} g_j / pi_j, scale =
    the mean of 1 / pi_j over R."""
    decoder = PartialDecoder(scheme, "inverse-probability")
    assert not decoder.singletons
    pi = inclusion_probabilities(decoder)
    G = np.random.default_rng(5).standard_normal((scheme.n_partitions, 3))
    responses = _responses(scheme, G)
    errors, scales = [], []
    for order in itertools.permutations(range(7), 4):
        rule = decoder.rule(3)
        if not any(rule.offer(w, responses[w]) for w in order):
            continue
        result = rule.result()
        recovered = list(result.recovered or ())
        reference = (1.0 / pi[recovered]) @ G[recovered]
        errors.append(float(np.linalg.norm(result.value - reference) / np.linalg.norm(reference)))
        scales.append(abs(result.scale - float(np.mean(1.0 / pi[recovered]))))
    values = np.array(errors + scales)
    assert len(errors) > 100
    assert np.all(np.isfinite(values)) and np.all(values <= 1e-12)


def test_rotation_reaches_the_selection() -> None:
    """Without rotation the arcs' ties favour some partitions (weights 0.97..1.03); averaged
    over the n rotations every weight is 1; the rule uses its own rotation, default 0."""
    decoder = PartialDecoder(ARCS)
    weights = recovery_weights(decoder)
    assert np.all(np.isfinite(weights)) and np.all(np.abs(weights - 1.0) <= 1e-12)
    from edgecode.codes.partial_rule import stop_set_probabilities

    def covered(mask: int, rotation: int) -> tuple[int, ...]:
        chosen = decoder.selection(mask, rotation)
        return tuple(sorted({int(j) for w, m in chosen for j in ARCS.messages[w][m]}))

    def count(workers: Sequence[int]) -> int:
        return decoder.recovered_count(sum(1 << w for w in workers))

    stops = np.flatnonzero(stop_set_probabilities(decoder)).tolist()
    mask = next(m for m in stops if covered(m, 1) != covered(m, 0))
    assert decoder.selection(mask) == decoder.selection(mask, 0) == decoder.selection(mask, 7)
    workers = [w for w in range(7) if mask >> w & 1]
    # an order of these workers that completes exactly at its last arrival
    order = next(
        list(p)
        for p in itertools.permutations(workers)
        if all(count(p[:i]) < decoder.need for i in range(1, len(p)))
    )
    G = np.random.default_rng(6).standard_normal((7, 2))
    responses = _responses(ARCS, G)
    from edgecode.codes.partial_rule import PartialRecoveryRule

    rules = ((0, decoder.rule(2)), (1, decoder.rule(2, 1)), (0, PartialRecoveryRule(decoder, 2)))
    for rotation, rule in rules:
        done = [rule.offer(w, responses[w]) for w in order]
        assert done[-1] and not any(done[:-1])
        assert rule.result().recovered == covered(mask, rotation)


def test_more_workers_than_the_table() -> None:
    """n = 16 is tabulated (2^16 counts); n = 17 is not: counts come from the scheme."""
    small = PartialDecoder(cyclic_partial(16, 3, 0.8))
    assert small.table is not None and small.counts().shape == (1 << 16,)
    scheme = cyclic_partial(17, 3, 0.8)
    decoder = PartialDecoder(scheme)
    assert decoder.table is None
    with pytest.raises(Infeasible) as caught:
        decoder.counts()
    assert str(caught.value) == "tabulating 2^17 arrival sets: n must be <= 16"
    oracle = Oracle(scheme)
    for mask in (0b1, 0b10110011, (1 << 17) - 1, 0b10101010101010101):
        workers = [w for w in range(17) if mask >> w & 1]
        assert decoder.recovered_count(mask) == oracle.count(workers)


class _Foreign(PartialRecoveryScheme):
    """A scheme of no known class (the decoder's generic paths): the arcs of ``inner``."""

    def __init__(self, inner: PartialRecoveryScheme) -> None:
        fields = {
            "inner": inner,
            "n_workers": inner.n_workers,
            "n_partitions": inner.n_partitions,
            "stragglers": inner.stragglers,
            "alpha": inner.alpha,
            "lower_bound": 0.0,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)  # the base class is a frozen dataclass

    @property
    def messages(self) -> Any:
        return self.inner.messages

    @property
    def partitions_per_worker(self) -> int:
        return self.inner.partitions_per_worker

    @property
    def communication_load(self) -> int:
        return self.inner.communication_load

    def _select(self, alive: np.ndarray) -> Any:
        return self.inner._select(alive)

    def _coverage(self, alive: np.ndarray) -> Any:
        return self.inner._coverage(alive)


def test_a_foreign_scheme_takes_the_generic_paths() -> None:
    foreign = _Foreign(ARCS)
    decoder = PartialDecoder(foreign)
    assert decoder.table is not None
    assert decoder.counts().tolist() == PartialDecoder(ARCS).counts().tolist()
    # no rotation for a scheme that is not cyclic
    assert all(decoder.selection(m, 3) == decoder.selection(m) for m in range(1 << 7))
    # pi_j by enumeration of the stopping sets = the frequency over every arrival order
    pi = inclusion_probabilities(decoder)
    G = np.eye(7)
    responses = _responses(ARCS, G)
    frequency = np.zeros(7)
    orders = list(itertools.permutations(range(7)))
    for order in orders:
        rule = decoder.rule(7)
        next(w for w in order if rule.offer(w, responses[w]))
        frequency[list(rule.result().recovered or ())] += 1.0 / len(orders)
    errors = np.abs(pi - frequency)
    assert np.all(np.isfinite(errors)) and np.all(errors <= 1e-12)
    assert np.ptp(pi) > 0.01  # unlike a cyclic scheme's, these differ
    # so inverse-probability weights would differ inside one message: refused
    with pytest.raises(InvalidInput) as caught:
        PartialDecoder(foreign, "inverse-probability")
    assert str(caught.value) == (
        "inverse-probability weights differ inside one message of _Foreign: use scale='rescale'"
    )
    # workers sending different numbers of vectors: no common response shape
    assert decoder.response_shape(3) == (1, 3)
    decoder.vectors = (1, 2, 1, 1, 1, 1, 1)
    assert decoder.response_shape(3) == (None, 3)


def test_rule_edges_in_full() -> None:
    with pytest.raises(InvalidInput) as caught:
        PartialDecoder("cyclic")  # type: ignore[arg-type]
    assert str(caught.value) == "scheme must be a PartialRecoveryScheme, got <class 'str'>"
    decoder = PartialDecoder(ARCS)
    rule = decoder.rule(0)  # length 0 is a count
    assert rule.length == 0 and rule.recovered_count == 0 and rule.arrived == ()
    with pytest.raises(InvalidInput, match="length must be an integer >= 0"):
        decoder.rule(-1)
    rule = decoder.rule(2)
    assert not rule.offer(5, np.zeros((1, 2)))
    assert not rule.offer(4, np.zeros((1, 2)))
    assert rule.arrived == (5, 4) and rule.failure().endswith("(arrived: [4, 5])")
    with pytest.raises(InvalidInput) as wrong:
        rule.offer(2, np.zeros((2, 2)))
    assert str(wrong.value) == (
        "response of worker 2 must have shape (1, 2) (its 1 message(s) of length 2), got (2, 2)"
    )
