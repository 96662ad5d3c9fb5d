"""The coding core: gradient codes, hierarchical, partial-recovery, stochastic and matrix codes.

Pure numpy/scipy. Every code states the straggler patterns it tolerates and decodes exactly from
every one of them; the tests enumerate those patterns.
"""

from edgecode.codes.combine import MessageBuffer
from edgecode.codes.flat import (
    GradientCode,
    cyclic_repetition,
    fractional_repetition,
    placement_code,
)
from edgecode.codes.hierarchical import (
    HierarchicalCode,
    hierarchical,
    hierarchical_from_counts,
    hierarchical_load_bound,
)

__all__ = [
    "GradientCode",
    "HierarchicalCode",
    "MessageBuffer",
    "cyclic_repetition",
    "fractional_repetition",
    "hierarchical",
    "hierarchical_from_counts",
    "hierarchical_load_bound",
    "placement_code",
]
