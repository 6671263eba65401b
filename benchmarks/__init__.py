"""Benchmarks: run as scripts (``./run bench``, ``python benchmarks/bench_methods.py``)."""
