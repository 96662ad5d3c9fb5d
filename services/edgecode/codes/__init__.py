"""The coding core: gradient codes, hierarchical, partial-recovery, stochastic and matrix codes.

Pure numpy/scipy. Every code states the straggler patterns it tolerates and decodes exactly from
every one of them; the tests enumerate those patterns.
"""

from edgecode.codes.approximate import LeastSquaresDecoder, LeastSquaresRule
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
from edgecode.codes.matrix import (
    MatVecCode,
    ProductCode,
    dense_mds_code,
    polynomial_code,
    product_counting_bound,
    sparse_mm_code,
    sparse_mv_code,
    split_columns,
    weight_lower_bound,
)
from edgecode.codes.partial import (
    CyclicPartial,
    PartialRecoveryScheme,
    SubsetDesign,
    cyclic_partial,
    partial_load_lower_bound,
    partial_load_optimum,
    subset_design,
)
from edgecode.codes.partial_rule import PartialDecoder, PartialRecoveryRule
from edgecode.codes.partial_schemes import (
    InvalidPartialParameters,
    partial_designs,
    partial_scheme,
    worker_encoding,
)
from edgecode.codes.stochastic import StochasticCode, stochastic

__all__ = [
    "CyclicPartial",
    "GradientCode",
    "HierarchicalCode",
    "InvalidPartialParameters",
    "LeastSquaresDecoder",
    "LeastSquaresRule",
    "MatVecCode",
    "MessageBuffer",
    "PartialDecoder",
    "PartialRecoveryRule",
    "PartialRecoveryScheme",
    "ProductCode",
    "StochasticCode",
    "SubsetDesign",
    "cyclic_partial",
    "cyclic_repetition",
    "dense_mds_code",
    "fractional_repetition",
    "hierarchical",
    "hierarchical_from_counts",
    "hierarchical_load_bound",
    "partial_designs",
    "partial_load_lower_bound",
    "partial_load_optimum",
    "partial_scheme",
    "placement_code",
    "polynomial_code",
    "product_counting_bound",
    "sparse_mm_code",
    "sparse_mv_code",
    "split_columns",
    "stochastic",
    "subset_design",
    "weight_lower_bound",
    "worker_encoding",
]
