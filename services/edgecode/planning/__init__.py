"""Planning: the cluster spec, plans, their exact expected round time and the optimizer.

- :mod:`.spec`: ``ClusterSpec`` / ``Plan`` data types and the TOML loader;
- :mod:`.plans`: what makes a plan valid (:func:`check_plan`) for each scheme ("hgc", "flat",
  "uncoded", "ignore") and building plans from counts;
- :mod:`.timing`: the round-time model, exact ``E[T]`` by numerical integration, its CDF,
  Monte Carlo, and the "first k of n, twice" rule applied to sampled compute times (for the
  simulator);
- :mod:`.optimize`: the planner (:func:`optimize`); :mod:`.exhaustive`: the exhaustive reference;
  :mod:`.baselines`: uncoded, flat cyclic, ignore-stragglers, the paper's uniform hierarchical
  plan; :mod:`.replan`: re-planning and when it pays.

``bench_planner`` and ``random_cluster`` live in :mod:`edgecode.bench.planner` (the core does not
import the benchmarks).
"""

from edgecode.planning.baselines import (
    best_flat_plan,
    best_uniform_plan,
    flat_plan,
    ignore_plan,
    uncoded_plan,
    uniform_plan,
)
from edgecode.planning.exhaustive import exhaustive_optimum
from edgecode.planning.optimize import default_max_partitions, optimize, partition_limits
from edgecode.planning.partial import (
    choose_partial_design,
    monte_carlo_partial_round_time,
    partial_expected_round_time,
)
from edgecode.planning.plans import SCHEMES, build_plan, check_plan, one_layer_plan
from edgecode.planning.replan import (
    Decision,
    decide,
    replan,
    same_structure,
    updated_spec,
    worth_replacing,
)
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
    "Decision",
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
    "best_flat_plan",
    "best_uniform_plan",
    "build_plan",
    "check_plan",
    "choose_partial_design",
    "decide",
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
    "partition_limits",
    "random_shuffle",
    "replan",
    "round_structure",
    "round_time_cdf",
    "round_times",
    "same_structure",
    "sample_round_times",
    "simulate_round_times",
    "spec_from_dict",
    "uncoded_plan",
    "uniform_plan",
    "updated_spec",
    "worth_replacing",
]
