"""The run's bookkeeping beside `run_mre.py`: the MNRE metric (`metrics.py` and its local `evaluate` module
`mre_metric/`), resuming safely (`checkpoints.py`), the model folder, its card and the upload (`hub.py`), files written
whole or not at all and damaged ones told apart (`run_files.py`), what a run prints (`console.py`) and seed sweeps
(`seed_sweep.py`). Modules are imported by name."""
