"""The command line of the analysis: `python -m analysis --model DIR ...` (Figs. 5-10 of a trained model) or
`python -m analysis --level_runs RUN [RUN ...] ...` (Fig. 4 from single-level runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .callbacks import HISTORY_FILE
from .level_f1 import plot_level_f1
from .report import analyse

__all__ = ["main"]

OPTIONAL_ANALYSE_ARGUMENTS = ("batch_size", "max_examples", "tsne_examples", "max_relations")
"""Options passed on to [`analyse`] only when given, so that its defaults apply otherwise."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="HVFormer analysis (paper §4.3): Figs. 5-10 of a trained model, or Fig. 4 from single-level runs.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="folder of a trained model and its processor (Figs. 5-10)")
    source.add_argument("--level_runs", nargs="+", help="folders (or all_results.json) of single-level runs (Fig. 4)")
    parser.add_argument("--output_dir", required=True, help="where the figures and the JSON go")
    parser.add_argument("--data_dir", help="MNRE-format folder (default: the built-in sample dataset)")
    parser.add_argument("--split", default="val", help="split to analyse (default: val)")
    parser.add_argument("--max_examples", type=int, help="analyse only the first examples")
    parser.add_argument("--batch_size", type=int, help="examples per forward pass (default: analyse's)")
    parser.add_argument("--tsne_examples", type=int, help="examples in the t-SNE of Fig. 8 (0: none)")
    parser.add_argument("--max_relations", type=int, help="relations drawn in Fig. 10")
    parser.add_argument(
        "--history", help=f"training history for Fig. 9a (default: MODEL/{HISTORY_FILE}, else MODEL/../{HISTORY_FILE})"
    )
    parser.add_argument("--cache_dir", help="cache folder of load_mnre")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`python -m analysis ...` (see `--help`); returns what [`analyse`] or [`plot_level_f1`] returns."""
    args = _parse_args(argv)
    output_dir = Path(args.output_dir)
    if args.level_runs:
        return plot_level_f1(args.level_runs, output_dir / "fig4_level_f1.png")

    from mre_data.collator import HVFormerDataCollator
    from mre_data.mnre_dataset import load_mnre
    from mre_data.sample_data import build_sample_dataset

    from .explain import load

    model, processor = load(args.model, args.device)
    relation_labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    data_dir = args.data_dir if args.data_dir is not None else build_sample_dataset()
    dataset = load_mnre(
        data_dir, processor, splits=[args.split], relation_labels=relation_labels, cache_dir=args.cache_dir
    )[args.split]
    given = {name: getattr(args, name) for name in OPTIONAL_ANALYSE_ARGUMENTS if getattr(args, name) is not None}
    results = analyse(
        model,
        dataset,
        HVFormerDataCollator(processor),
        output_dir,
        history_path=args.history if args.history is not None else default_history(Path(args.model)),
        **given,
    )
    print(f"{len(results['figures'])} figures and analysis.json in {output_dir}/")
    for name, reason in results["skipped"].items():
        print(f"  skipped {name}: {reason}")
    return results


def default_history(model_dir: Path) -> Path:
    """The training history of a model folder: beside its files, or in the run folder that holds it (where
    `run_mre.py` writes it, one level up from `model/`)."""
    candidates = [model_dir / HISTORY_FILE, model_dir.parent / HISTORY_FILE]
    return next((path for path in candidates if path.is_file()), candidates[-1])
