"""edgecode: straggler-resilient coded learning and sparse matrix computation on edge clusters."""

__version__ = "0.1.0"
