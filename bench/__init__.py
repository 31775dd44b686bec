"""Benchmarks: `python -m bench.NAME [--json]`. They print measured figures; tests never assert timings."""
