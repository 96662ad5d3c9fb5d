"""Row order of a data set spec: ``order=given`` (the default) or ``order=label``.

Gradient coding cuts the training rows into K contiguous blocks (``Dataset.partition``) after a
random train/test split, so by default every partition is a random sample of the data (i.i.d.
partitions). On edge devices the data is usually NOT identically distributed: each device sees
its own labels. ``order=label`` reproduces that: the training rows (after the split, so the same
rows as with ``order=given``) are sorted by label, stably, so partition j covers the j-th label
range and contiguous partitions, hence workers holding them, see different labels.

The option is one more ``key=value`` item at the end of any spec::

    digits:order=label
    synthetic-logistic:n=2000,d=20,order=label
    data/train.csv:task=binary,order=label

Example
-------
>>> split_order_option("synthetic-logistic:n=2000,d=20,order=label")
('synthetic-logistic:n=2000,d=20', 'label')
>>> split_order_option("digits")
('digits', 'given')
>>> label_order(np.array([1, 0, 1, 0])).tolist()
[1, 3, 0, 2]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Row orders a spec may ask for.
ORDERS: tuple[str, ...] = ("given", "label")
ORDER_KEY = "order"


def split_order_option(spec: str) -> tuple[str, str]:
    """``(spec without its order= item, the order)``; the order is "given" when absent.

    The options of a spec are the comma-separated items after its LAST colon (the grammar of
    synthetic and file specs; a bundled name takes ``NAME:order=label``). A spec that is itself
    an existing file is returned unchanged. Raises ValueError for an unknown order or an order
    given twice.
    """
    head, sep, tail = spec.rpartition(":")
    if not sep or "=" not in tail or Path(spec).is_file():
        return spec, "given"
    items = [item.strip() for item in tail.split(",")]
    keys = [item.partition("=")[0].strip() for item in items]
    chosen = [
        item.partition("=")[2].strip()
        for item, key in zip(items, keys, strict=True)
        if key == ORDER_KEY
    ]
    if not chosen:
        return spec, "given"
    if len(chosen) > 1:
        raise ValueError(f"spec {spec!r}: {ORDER_KEY} is given {len(chosen)} times, expected once")
    if chosen[0] not in ORDERS:
        raise ValueError(
            f"spec {spec!r}: {ORDER_KEY} must be one of {list(ORDERS)}, got {chosen[0]!r}"
        )
    rest = [item for item, key in zip(items, keys, strict=True) if key != ORDER_KEY]
    return (f"{head}:{','.join(rest)}" if rest else head), chosen[0]


def label_order(y: NDArray[Any]) -> NDArray[np.int64]:
    """The row permutation sorting the labels ``y`` (shape (n,)) ascending, stable: rows with
    equal labels keep their relative order."""
    return np.asarray(np.argsort(np.asarray(y), kind="stable"), dtype=np.int64)


__all__ = ["ORDERS", "label_order", "split_order_option"]
