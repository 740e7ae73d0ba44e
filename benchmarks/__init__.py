"""Benchmarks of issue 11: training step, `run_mre.py` end to end, inference. See docs/performance.md."""
