"""Local `evaluate` module for the MNRE metric: load it with `training.metrics.load_mre_metric()`."""
