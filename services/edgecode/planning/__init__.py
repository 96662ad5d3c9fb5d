"""Planning: the cluster spec, plans, their exact expected round time and the optimizer.

- :mod:`.spec`: ``ClusterSpec`` / ``Plan`` data types and the TOML loader;
- :mod:`.plans`: what makes a plan valid (:func:`check_plan`) for each scheme ("hgc", "flat",
  "uncoded", "ignore") and building plans from counts;
- :mod:`.timing`: the round-time model, exact ``E[T]`` by numerical integration, its CDF,
  Monte Carlo, and the "first k of n, twice" rule applied to sampled compute times (for the
  simulator);
- :mod:`.optimize`: the planner (:func:`optimize`), the exhaustive reference, the baselines
  (uncoded, flat cyclic, ignore-stragglers, the paper's uniform hierarchical plan), re-planning
  and a benchmark.
"""

from edgecode.planning.optimize import (
    bench_planner,
    best_flat_plan,
    best_uniform_plan,
    default_max_partitions,
    exhaustive_optimum,
    flat_plan,
    ignore_plan,
    optimize,
    random_cluster,
    replan,
    uncoded_plan,
    uniform_plan,
    updated_spec,
)
from edgecode.planning.partial import (
    choose_partial_design,
    monte_carlo_partial_round_time,
    partial_expected_round_time,
)
from edgecode.planning.plans import SCHEMES, build_plan, check_plan, one_layer_plan
from edgecode.planning.shuffle import Assignment, Shuffle, Transfer, aware_shuffle, random_shuffle
from edgecode.planning.spec import (
    ClusterSpec,
    EdgePlan,
    EdgeSpec,
    Plan,
    WorkerPlan,
    WorkerSpec,
    load_spec,
    spec_from_dict,
)
from edgecode.planning.timing import (
    MonteCarloEstimate,
    RoundStructure,
    expected_round_time,
    monte_carlo_round_time,
    round_structure,
    round_time_cdf,
    round_times,
    sample_round_times,
    simulate_round_times,
)

__all__ = [
    "SCHEMES",
    "Assignment",
    "ClusterSpec",
    "EdgePlan",
    "EdgeSpec",
    "MonteCarloEstimate",
    "Plan",
    "RoundStructure",
    "Shuffle",
    "Transfer",
    "WorkerPlan",
    "WorkerSpec",
    "aware_shuffle",
    "bench_planner",
    "best_flat_plan",
    "best_uniform_plan",
    "build_plan",
    "check_plan",
    "choose_partial_design",
    "default_max_partitions",
    "exhaustive_optimum",
    "expected_round_time",
    "flat_plan",
    "ignore_plan",
    "load_spec",
    "monte_carlo_partial_round_time",
    "monte_carlo_round_time",
    "one_layer_plan",
    "optimize",
    "partial_expected_round_time",
    "random_cluster",
    "random_shuffle",
    "replan",
    "round_structure",
    "round_time_cdf",
    "round_times",
    "sample_round_times",
    "simulate_round_times",
    "spec_from_dict",
    "uncoded_plan",
    "uniform_plan",
    "updated_spec",
]
