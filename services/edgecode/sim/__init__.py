"""Discrete-event simulation of whole clusters, and the figures drawn from it.

:func:`simulate` plays R consecutive rounds of a plan on a cluster spec, message by message (see
:mod:`edgecode.sim.engine`), with each worker's straggler model from the spec; the result holds the
per-round times and straggler counts. :mod:`edgecode.sim.figures` draws them (matplotlib, Agg).
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
from edgecode.sim.shuffle import ShuffleScenario, compare_shuffle, run_schemes

__all__ = [
    "RoundSampler",
    "ShuffleScenario",
    "SimResult",
    "Topology",
    "compare_shuffle",
    "compile_plan",
    "play_round",
    "run_schemes",
    "simulate",
    "spec_sampler",
]
