"""What a run prints: Trainer's progress bar, one line per epoch, and a closing summary; library logging at the run's
log level, without the progress bars of every weight file saved or loaded."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import datasets
import transformers
from tqdm.auto import tqdm
from transformers import IntervalStrategy, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from .seed_sweep import SUMMARY_FILE

SCORE_NAMES: tuple[tuple[str, str], ...] = (("precision", "P"), ("recall", "R"), ("f1", "F1"), ("accuracy", "Acc"))
CROPS_UNAVAILABLE_SUFFIX = "_crops_unavailable"
"""The metrics `{split}_crops_unavailable`: the examples of a split loaded without object crops (`image_report`)."""
DETECTOR_CROPS_SUFFIX = "_detector_crops"
"""The metrics `{split}_detector_crops`: the crops the object detector made for the posts without their own."""


MISLEADING_MESSAGES: tuple[str, ...] = ("mtime may not be reliable on this filesystem",)
"""transformers warnings that describe no problem of the run: checkpoints saved less than a second apart (short
epochs) make Trainer doubt the filesystem's clock, and it then orders them by step, which is what it should do."""


class _DropMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(message in record.getMessage() for message in MISLEADING_MESSAGES)


def set_up_logging(training_args: TrainingArguments) -> None:
    """Logging as in transformers' example scripts: the process's `--log_level` (warnings by default, errors on
    other processes) for this project, transformers and datasets; no per-file progress bars for weights, none of
    datasets' with `--disable_tqdm`, and none of the [`MISLEADING_MESSAGES`]."""
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", handlers=[logging.StreamHandler(sys.stderr)])
    for name in ("run_mre", "mre_run", "mre_data", "processing", "training"):
        logging.getLogger(name).setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.get_logger("transformers.trainer_utils").addFilter(_DropMessages())
    datasets.utils.logging.set_verbosity(level)
    if training_args.disable_tqdm:
        datasets.disable_progress_bars()


def format_scores(metrics: dict[str, float], prefix: str) -> str:
    """`P 61.02  R 55.10  F1 57.91  Acc 80.12` from `{prefix}_precision`, ... (fractions shown as percentages)."""
    return "  ".join(
        f"{label} {100 * metrics[f'{prefix}_{key}']:.2f}" for key, label in SCORE_NAMES if f"{prefix}_{key}" in metrics
    )


class ProgressBar(ProgressCallback):
    """Trainer's progress bars without the dictionary it prints at every log: [`EpochReport`] prints one line."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        return None


class EpochReport(TrainerCallback):
    """Prints, on the main process, one line per evaluation during training: the epoch, the last logged training
    loss (with `logging_strategy="steps"`, Trainer is asked to log it at every epoch's end) and the validation
    scores."""

    def __init__(self) -> None:
        self.training = False
        self.loss: float | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.training = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.training = False

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        # Trainer then logs its training loss before the epoch's evaluation, so the epoch line has one even when
        # `logging_steps` is longer than an epoch.
        if args.logging_strategy == IntervalStrategy.STEPS:
            control.should_log = True

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if self.training and "eval_f1" in logs and state.is_world_process_zero:
            loss = f"train loss {self.loss:.4f}  " if self.loss is not None else ""
            tqdm.write(f"epoch {state.epoch:g}: {loss}validation {format_scores(logs, 'eval')}", file=sys.stdout)


def print_summary(metrics: dict[str, float], output_dir: Path, model_dir: Path) -> None:
    """The closing lines: validation and test scores, the splits that went without object crops (`--missing_crops
    none`), the crops the object detector made, where the results and the model are, how to load and push."""
    for prefix, name in (("eval", "validation"), ("test", "test")):
        if f"{prefix}_f1" in metrics:
            print(f"{name:>10}: {format_scores(metrics, prefix)}")
    for suffix, what in (
        (CROPS_UNAVAILABLE_SUFFIX, "Without object crops (none given, none made), examples"),
        (DETECTOR_CROPS_SUFFIX, "Object crops made by --object_detector"),
    ):
        counts = [
            f"{key.removesuffix(suffix)} {value}" for key, value in metrics.items() if key.endswith(suffix) and value
        ]
        if counts:
            print(f"{what}: {', '.join(counts)}")
    print(f"Results and predictions: {output_dir}/")
    print(f"Model folder: {model_dir}/")
    print(
        f'  load: AutoModel.from_pretrained("{model_dir}", trust_remote_code=True) and AutoProcessor likewise\n'
        "  push: rerun the same command with --push_to_hub --hub_model_id USER/NAME (uploads the model folder, "
        "no retraining)"
    )


def print_seed_summary(summary: dict[str, Any], output_dir: Path, model_folder: str) -> None:
    """The closing lines of a seed sweep: mean ± std of each score on the split it was measured on (in percent), and
    where the summary file and each seed's run and model are."""
    prefix = "test" if summary["split"] == "test" else "eval"
    scores = "  ".join(
        f"{label} {100 * summary[f'{prefix}_{key}']['mean']:.2f} ± {100 * summary[f'{prefix}_{key}']['std']:.2f}"
        for key, label in SCORE_NAMES
    )
    print(f"{summary['split']} over seeds {summary['seeds']} (mean ± std, %): {scores}")
    print(f"Summary (fractions, as all_results.json): {output_dir / SUMMARY_FILE}")
    print(f"Each seed's run and model: {output_dir}/seed-N/ and {output_dir}/seed-N/{model_folder}/")


def print_analysis_summary(results: dict[str, Any], folder: Path) -> None:
    """Where the analysis went, how many figures it drew, and each figure it skipped with the reason."""
    if not results:
        return
    print(f"Analysis: {len(results.get('figures', {}))} figures and analysis.json in {folder}/")
    for name, reason in results.get("skipped", {}).items():
        print(f"  skipped {name}: {reason}")
