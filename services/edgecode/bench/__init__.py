"""Benchmarks behind `edgecode bench`: side-by-side measurements, never timed unit tests."""
