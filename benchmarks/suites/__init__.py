"""Benchmark suites: each calls families' public functions and formats tables."""
