"""Discrete-event simulation of whole clusters, and the figures drawn from it.

:func:`simulate` plays R consecutive rounds of a plan on a cluster spec, message by message (see
:mod:`edgecode.sim.engine`), with each worker's straggler model from the spec; the result holds the
per-round times and straggler counts. :mod:`edgecode.sim.figures` draws them (matplotlib, Agg).
:mod:`edgecode.sim.goco` simulates GOCO gossip learning on many peers (error vs rounds curves).
Imports only numpy, scipy, matplotlib and the edgecode core.
"""

from edgecode.sim.engine import (
    RoundSampler,
    SimResult,
    Topology,
    compile_plan,
    play_round,
    simulate,
    spec_sampler,
)
from edgecode.sim.goco import GossipRun, goco_comparison, simulate_gossip
from edgecode.sim.partial import partial_bench_rows, simulate_partial
from edgecode.sim.shuffle import ShuffleScenario, compare_shuffle, run_schemes

__all__ = [
    "GossipRun",
    "RoundSampler",
    "ShuffleScenario",
    "SimResult",
    "Topology",
    "compare_shuffle",
    "compile_plan",
    "goco_comparison",
    "partial_bench_rows",
    "play_round",
    "run_schemes",
    "simulate",
    "simulate_gossip",
    "simulate_partial",
    "spec_sampler",
]
