"""``order=label`` data specs: the same training rows as ``order=given``, sorted by label, so
that contiguous partitions (one per worker) are not identically distributed."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edgecode.learning.data_order import label_order, split_order_option
from edgecode.learning.datasets import (
    check_dataset_spec,
    dataset_file,
    get_dataset,
    load_split,
)


def _row_keys(X: np.ndarray, y: np.ndarray) -> list[tuple[float, ...]]:
    """Every row with its label, as a sortable tuple (rows of a Gaussian draw are distinct)."""
    return sorted((*tuple(row), float(label)) for row, label in zip(X, y, strict=True))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("digits", ("digits", "given")),
        ("digits:order=label", ("digits", "label")),
        ("synthetic-lsq:n=50,d=3,order=label", ("synthetic-lsq:n=50,d=3", "label")),
        ("synthetic-lsq:order=given,n=50", ("synthetic-lsq:n=50", "given")),
        ("synthetic-lsq: n=50, order = label", ("synthetic-lsq:n=50", "label")),
        ("data/x.csv:task=binary,order=label", ("data/x.csv:task=binary", "label")),
        ("data/x.csv:task=binary", ("data/x.csv:task=binary", "given")),
    ],
)
def test_the_order_item_is_split_off_any_spec(spec: str, expected: tuple[str, str]) -> None:
    assert split_order_option(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("digits:order=labels", "order must be one of"),
        ("synthetic-lsq:n=50,order=label,order=given", "order is given 2 times"),
    ],
)
def test_a_bad_order_is_refused_naming_it(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_order_option(spec)
    with pytest.raises(ValueError, match=match):
        check_dataset_spec(spec)


def test_label_sorted_split_holds_the_same_rows_in_stable_label_order() -> None:
    spec = "synthetic-logistic:n=400,d=3"
    train, test = load_split(spec, np.random.default_rng(5))
    s_train, s_test = load_split(spec + ",order=label", np.random.default_rng(5))
    for plain, ordered in ((train, s_train), (test, s_test)):
        # the same (row, label) pairs: nothing lost, duplicated or torn from its label
        assert _row_keys(ordered.X, ordered.y) == _row_keys(plain.X, plain.y)
        assert np.all(np.diff(ordered.y) >= 0)
        # stable: within a label the rows keep the random (iid) order of the plain split
        for label in (0, 1):
            assert np.array_equal(ordered.X[ordered.y == label], plain.X[plain.y == label])
    assert 0 < int(train.y.sum()) < train.n_rows  # both labels occur: the sort is not vacuous


@pytest.mark.parametrize("k", [1, 7, 10, 105])
def test_label_sorted_partitions_cover_every_row_once_in_label_order(k: int) -> None:
    train, _ = load_split("synthetic-logistic:n=400,d=3,order=label", np.random.default_rng(2))
    blocks = train.partition(k)
    X = np.vstack([Xj for Xj, _ in blocks])
    y = np.concatenate([yj for _, yj in blocks])
    assert _row_keys(X, y) == _row_keys(train.X, train.y)  # each row in exactly one partition
    assert sum(len(yj) for _, yj in blocks) == train.n_rows
    for (_, left), (_, right) in itertools.pairwise(blocks):
        assert left.max() <= right.min()  # partition j's labels all precede partition j+1's
    if k == 10:  # one partition per worker: most workers see one label only
        pure = sum(len(np.unique(yj)) == 1 for _, yj in blocks)
        assert pure >= 8


def test_get_dataset_in_label_order_keeps_the_known_optimum() -> None:
    plain = get_dataset("synthetic-logistic:n=300,d=3,seed=4")
    ordered = get_dataset("synthetic-logistic:n=300,d=3,seed=4,order=label")
    assert np.all(np.diff(ordered.y) >= 0)
    assert _row_keys(ordered.X, ordered.y) == _row_keys(plain.X, plain.y)
    assert ordered.optimum is not None and plain.optimum is not None
    assert np.array_equal(ordered.optimum, plain.optimum)
    digits = get_dataset("digits:order=label")
    assert digits.n_rows == 1797 and np.all(np.diff(digits.y) >= 0)


def test_file_confinement_sees_the_same_path_with_an_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("1,0\n2,1\n3,0\n4,1\n")
    assert dataset_file(f"{path}:task=binary,order=label") == str(path)
    assert dataset_file(f"{path}:order=label") == str(path)
    assert dataset_file("digits:order=label") is None
    assert dataset_file("synthetic-lsq:n=50,d=3,order=label") is None
    check_dataset_spec(f"{path}:order=label")
    assert get_dataset(f"{path}:order=label").y.tolist() == [0, 0, 1, 1]


def test_label_order_is_a_stable_sorting_permutation() -> None:
    y = np.array([2, 0, 1, 0, 2, 1, 0] * 5)
    order = label_order(y)
    assert sorted(order.tolist()) == list(range(y.size))
    assert np.all(np.diff(y[order]) >= 0)
    for label in (0, 1, 2):
        picked = order[y[order] == label]
        assert np.all(np.diff(picked) > 0)  # equal labels keep their order
