"""Property tests of the matrix codes: decoding works for EVERY straggler pattern."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode.codes.matrix import (
    cyclic_support,
    dense_mds_code,
    hall_resilient,
    join_columns,
    matvec,
    product_counting_bound,
    sparse_mm_code,
    sparse_mv_code,
    split_columns,
    weight_lower_bound,
    worker_matvec,
    worker_product,
)

TOLERANCE = 1e-8
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def random_sparse(rows: int, cols: int, density: float, seed: int) -> Any:
    return sp.random(rows, cols, density=density, format="csr", rng=np.random.default_rng(seed))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@st.composite
def code_sizes(draw: st.DrawFn, max_n: int) -> tuple[int, int]:
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(1, n))


@SETTINGS
@given(size=code_sizes(12), seed=st.integers(0, 2**16))
def test_every_k_subset_decodes(size: tuple[int, int], seed: int) -> None:
    n, k = size
    r = 2 * k + 1
    a = random_sparse(20, r, 0.25, seed=seed)
    x = np.random.default_rng(seed).standard_normal(20)
    want = a.T @ x
    blocks = split_columns(a, k)
    for code in (sparse_mv_code(n, k, seed=seed), dense_mds_code(n, k, seed=seed)):
        assert code.weight == (weight_lower_bound(n, k) if code.name == "sparse_mv_code" else k)
        coded = code.encode(blocks)
        results = {i: worker_matvec(coded[i], x) for i in range(n)}
        for alive in itertools.combinations(range(n), k):
            got = join_columns(code.decode({i: results[i] for i in alive}), r)
            assert relative_error(got, want) <= TOLERANCE, (code.name, alive)


@SETTINGS
@given(size=code_sizes(16), data=st.data())
def test_any_superset_of_k_results_decodes(size: tuple[int, int], data: st.DataObject) -> None:
    n, k = size
    alive = data.draw(st.sets(st.integers(0, n - 1), min_size=k, max_size=n))
    a = random_sparse(15, 3 * k, 0.3, seed=n + k)
    x = np.linspace(0.5, 2.0, 15)
    code = sparse_mv_code(n, k)
    got = matvec(code, code.encode(split_columns(a, k)), x, alive)
    assert relative_error(got, a.T @ x) <= TOLERANCE


def brute_force_resilient(support: list[tuple[int, ...]], m: int) -> bool:
    """Every m-subset of holders satisfies Hall's condition for all m items (by enumeration)."""
    for chosen in itertools.combinations(support, m):
        for size in range(1, m + 1):
            for items in itertools.combinations(range(m), size):
                if sum(1 for held in chosen if set(held) & set(items)) < size:
                    return False
    return True


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_hall_resilient_matches_brute_force(data: st.DataObject) -> None:
    m = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(m, 7))
    holder = st.lists(st.integers(0, m - 1), min_size=1, max_size=m, unique=True)
    support = [tuple(items) for items in data.draw(st.lists(holder, min_size=n, max_size=n))]
    assert hall_resilient(support, m) == brute_force_resilient(support, m)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(size=code_sizes(150))
def test_cyclic_windows_meet_hall_at_the_bound(size: tuple[int, int]) -> None:
    n, k = size
    assert hall_resilient(cyclic_support(n, k, weight_lower_bound(n, k)), k)


@st.composite
def product_sizes(draw: st.DrawFn) -> tuple[int, int, int]:
    k_a = draw(st.integers(1, 3))
    k_b = draw(st.integers(1, 3))
    return draw(st.integers(k_a * k_b, 9)), k_a, k_b


@settings(max_examples=20, deadline=None, derandomize=True)
@given(size=product_sizes(), seed=st.integers(0, 2**16))
def test_sparse_mm_code_decodes_every_subset(size: tuple[int, int, int], seed: int) -> None:
    n, k_a, k_b = size
    code = sparse_mm_code(n, k_a, k_b, seed=seed)
    assert code.weight_product >= product_counting_bound(n, k_a, k_b) == code.counting_bound
    assert code.verification == "exhaustive"
    a = random_sparse(12, 2 * k_a, 0.4, seed=seed)
    b = random_sparse(12, 2 * k_b + 1, 0.4, seed=seed + 1)
    want = (a.T @ b).toarray()
    coded_a = code.encode(split_columns(a, k_a))
    coded_b = code.encode_b(split_columns(b, k_b))
    products = {i: worker_product(coded_a[i], coded_b[i]) for i in range(n)}
    for alive in itertools.combinations(range(n), code.k):
        blocks = code.decode({i: products[i] for i in alive})
        got = np.block([[blocks[j * k_b + l] for l in range(k_b)] for j in range(k_a)])
        assert relative_error(got[: want.shape[0], : want.shape[1]], want) <= TOLERANCE


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 30),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_split_join_round_trip(rows: int, cols: int, k: int, seed: int) -> None:
    a = random_sparse(rows, cols, 0.5, seed=seed)
    blocks = split_columns(a, k)
    assert len(blocks) == k and len({b.shape for b in blocks}) == 1
    x = np.random.default_rng(seed).standard_normal(rows)
    assert np.allclose(join_columns([b.T @ x for b in blocks], cols), a.T @ x)
