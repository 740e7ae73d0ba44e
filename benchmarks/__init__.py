"""Benchmarks: training step, `run_mre.py` end to end, inference. See docs/performance.md."""
