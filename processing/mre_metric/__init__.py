"""Local `evaluate` module for the MNRE metric: load it with `processing.metrics.load_mre_metric()`."""
