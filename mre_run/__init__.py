"""The parts of `run_mre.py` that read best apart from its one linear main: its command line (option groups, config
files, defaults), where a run's posts come from, and a corpus predicted a shard at a time. The layers run upwards
without a circle: `modeling_hvformer` and `processing` (what travels with a model), `training` (a run's files and
bookkeeping), `mre_data` (datasets of posts), `analysis`, then this package and `run_mre.py`."""
