"""Analysis and explanation of a trained HVFormer: the numbers and figures of the paper's §4.3 (RQ1-RQ4, Figs. 4-10).

This is a package of its own, beside `modeling_hvformer/` (the model, which travels to the Hub) and `processing/`
(turning posts into model inputs), because it is neither: it reads a trained model's outputs, and it needs
matplotlib and scikit-learn (the optional `analysis` extra, `pip install 'hvformer[analysis]'`), which the model and
the processor do not. Those two are imported only when a figure is drawn, so `run_mre.py` imports the training
callback without them.

- `callbacks`: [`ExpertWeightsRecorder`], the `TrainerCallback` recording the expert weights G (Eq. 9) of the entity
  markers during training (Fig. 9a).
- `statistics`: the pass over a split and the numbers of `analysis.json`.
- `figures`: Figs. 5-10, one function each; `drawing`: their shared drawing helpers; `level_f1`: Fig. 4.
- `report`: [`analyse`] (pass, numbers, figures of a split) and [`run_analysis`] (the same from a `Trainer`).
- `tokens`: where the entity markers and the visual tokens sit in the model's outputs.
- `cli`: `python -m analysis --model DIR [--data_dir DIR] [--split val] --output_dir DIR` (Figs. 5-10) and
  `python -m analysis --level_runs RUN [RUN ...] --output_dir DIR` (Fig. 4).
- `explain`: one post explained (tracking maps over its image, expert weights), `python -m analysis.explain ...`.
"""

from .callbacks import HISTORY_FILE, ExpertWeightsRecorder
from .drawing import even_spread_norm, expert_label, expert_weight_dots, new_figure, relative_to_even, save_figure
from .level_f1 import plot_level_f1
from .report import analyse, run_analysis
from .tokens import VisualTokenLayout, marker_names, marker_rows

__all__ = [
    "HISTORY_FILE",
    "ExpertWeightsRecorder",
    "VisualTokenLayout",
    "analyse",
    "even_spread_norm",
    "expert_label",
    "expert_weight_dots",
    "marker_names",
    "marker_rows",
    "new_figure",
    "plot_level_f1",
    "relative_to_even",
    "run_analysis",
    "save_figure",
]
