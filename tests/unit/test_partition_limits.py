"""The planner respects the data (issue 9): K <= rows // min_rows_per_partition."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.bench.planner import random_cluster
from edgecode.errors import Infeasible
from edgecode.planning.optimize import optimize, partition_limits
from edgecode.planning.plans import check_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec


def test_four_edges_of_eight_workers_on_455_rows() -> None:
    """`edgecode run --edges 4 --workers-per-edge 8` used to get K = 480 for 455 rows."""
    spec = random_cluster(4, 8, np.random.default_rng(0))
    plan = optimize(spec, rows=455)
    check_plan(plan, spec)
    assert plan.partitions <= 455 // 4
    assert 455 // plan.partitions >= 4
    assert optimize(spec).partitions > 455 // 4  # without the data's size it would not fit


def test_few_rows_exclude_the_uniform_plans_large_K() -> None:
    """Homogeneous 2 x 4: the paper's uniform plans need K >= 8; 12 rows allow K <= 3."""
    edges = tuple(
        EdgeSpec(f"e{i}", tuple(WorkerSpec(f"e{i}w{j}", 0.1, 5.0) for j in range(4)))
        for i in range(2)
    )
    spec = ClusterSpec(edges)
    plan = optimize(spec, rows=12)
    check_plan(plan, spec)
    assert plan.partitions <= 3
    assert optimize(spec, rows=12, min_rows_per_partition=6).partitions <= 2


def test_infeasible_limits_name_the_condition() -> None:
    spec = random_cluster(2, 2, np.random.default_rng(1))
    with pytest.raises(Infeasible, match=r"rows // min_rows_per_partition = 25"):
        optimize(spec, partitions=30, rows=100)
    with pytest.raises(Infeasible, match="min_rows_per_partition = 4"):
        optimize(spec, rows=3)
    with pytest.raises(Infeasible, match="max_partitions = 10"):
        optimize(spec, partitions=12, max_partitions=10)
    with pytest.raises(ValueError, match="rows"):
        optimize(spec, rows=-1)
    with pytest.raises(ValueError, match="min_rows_per_partition"):
        optimize(spec, rows=100, min_rows_per_partition=0)
    with pytest.raises(ValueError, match="max_partitions"):
        optimize(spec, max_partitions=0)


def test_partition_limits() -> None:
    spec = random_cluster(4, 8, np.random.default_rng(0))
    assert partition_limits(spec) == (None, 480)
    assert partition_limits(spec, rows=455) == (None, 113)
    assert partition_limits(spec, rows=455, min_rows_per_partition=10) == (None, 45)
    assert partition_limits(spec, max_partitions=100, rows=455) == (None, 100)
    assert partition_limits(spec, partitions=60, rows=455) == (60, 113)
    assert partition_limits(spec, partitions=600) == (600, 480)  # a fixed K is the caller's
