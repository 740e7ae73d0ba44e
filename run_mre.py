#!/usr/bin/env python
"""Train, evaluate, predict with and analyse HVFormer on MNRE (or the built-in sample), and push it to the Hub.

Runs unchanged under `python`, `torchrun` and `accelerate launch`:

    python run_mre.py                                   # built-in sample, tiny encoders, no download
    python run_mre.py --output_dir DIR                  # the same, into DIR
    accelerate launch run_mre.py configs/paper.yaml     # the paper's setting on MNRE
    python run_mre.py configs/paper.yaml --seeds 1 2 3  # a config over several seeds, mean ± std

YAML or JSON config files may come first (e.g. configs/paper.yaml configs/ablations/wo_tva.yaml); later files and
the command-line arguments after them override earlier values. Architecture options left out take the defaults of
`HVFormerConfig` and `HVFormerProcessor`.

A run writes into `output_dir`: checkpoints, `trainer_state.json`, `all_results.json`, `predictions.jsonl`,
`expert_weights_history.json`, `analysis/`; and the model repository into `output_dir/model` (what `--push_to_hub`
uploads). A finished run (its results file and model folder read whole) is not repeated, and its checkpoints are
deleted (`--keep_checkpoints` keeps them); an interrupted or damaged one runs again, resuming from its last complete
checkpoint.

One script read top to bottom, as transformers' `run_glue.py` (arguments, checkpoint detection, seed, data, model,
Trainer, train / evaluate / predict, save); the argument dataclasses with their help texts make it longer than 400
lines.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import torch
import yaml
from transformers import HfArgumentParser, IntervalStrategy, Trainer, TrainingArguments, set_seed
from transformers.hf_argparser import string_to_bool
from transformers.integrations import get_available_reporting_integrations
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from analysis import HISTORY_FILE, ExpertWeightsRecorder, analyse, run_analysis
from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction
from modeling_hvformer.configuration_hvformer import FUSION_MODES, VISUAL_CONTEXT_MODES
from mre_data.builtin_encoders import (
    BUILTIN,
    BUILTIN_DESCRIPTIONS,
    BUILTIN_VISION_DEFAULTS,
    build_builtin_text_encoder,
    build_builtin_vision_encoder,
)
from mre_data.collator import (
    TEXT_LENGTH_BUCKETS,
    ColumnBatches,
    HVFormerDataCollator,
    StaticShapes,
    static_text_lengths,
)
from mre_data.mnre import HUB_SPLITS, find_split_file, folder_dataset, folder_words, hub_words
from mre_data.mnre_dataset import (
    dataset_relations,
    image_report,
    is_post_dataset,
    load_mnre,
    load_mnre_hub,
    load_post_dataset,
    load_post_files,
    read_post_dataset,
)
from mre_data.post_files import POST_COLUMNS, post_relations, post_words, read_post_file
from mre_data.sample_data import build_sample_dataset
from processing.entity_marking import ENTITY_MARKERS, FALLBACK_ENTITY_MARKERS
from processing.image_processing_hvformer import HVFormerImageProcessor
from processing.processing_hvformer import HVFormerProcessor
from training.checkpoints import TrainingLossRecorder, checkpoint_problem, last_valid_checkpoint
from training.console import (
    EpochReport,
    ProgressBar,
    print_analysis_summary,
    print_seed_summary,
    print_summary,
    set_up_logging,
)
from training.hub import MODEL_FOLDER, SAMPLE_RUN_DIR, export_model_folder, hub_ids, push_folder_to_hub
from training.metrics import compute_metrics_fn
from training.model_card import (
    CARD_FACTS_FILE,
    CardFacts,
    encoder_description,
    render_model_card,
    training_environment,
    training_hyperparameters,
)
from training.prediction import DEFAULT_PREDICTION_SHARD_SIZE, predict_corpus
from training.run_arguments import (
    RUN_ARGUMENTS_FILE,
    record_arguments,
    shaping_arguments,
)
from training.run_files import (
    MANIFEST_FILE,
    brief,
    file_problem,
    manifest_files,
    write_manifest,
    write_text_atomic,
)
from training.run_folder import (
    PREDICTION_SHARDS_FOLDER,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    RUN_FILES,
    check_same_run,
    clear_run,
    finished_run_results,
    remove_checkpoints,
    write_predictions,
)
from training.seed_sweep import seed_output_dir, summarize_seeds

logger = logging.getLogger("run_mre")


@dataclass
class ModelArguments:
    """Which encoders or trained HVFormer to start from, and the HVFormer architecture (paper §3). Options left out
    take `HVFormerConfig`'s defaults (`HVFormerProcessor`'s for `max_seq_length`)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained HVFormer (Hub id or folder) to fine-tune or evaluate."}
    )
    text_model_name_or_path: str = field(
        default=BUILTIN,
        metadata={
            "help": "Text encoder: BERT, RoBERTa, DeBERTa-v2 or another AutoModel encoder (e.g. bert-base-uncased, "
            "roberta-base); 'builtin' = tiny random BERT, no download."
        },
    )
    vision_model_name_or_path: str = field(
        default=BUILTIN,
        metadata={
            "help": "Vision encoder: CLIP, ViT, DINOv2 or SigLIP (e.g. openai/clip-vit-base-patch32, "
            "facebook/dinov2-base); 'builtin' = tiny random ViT."
        },
    )
    entity_markers: list[str] | None = field(
        default=None,
        metadata={
            "help": "The four entity markers: subject start, subject end, object start, object end (default "
            f"{' '.join(ENTITY_MARKERS)}, or {' '.join(FALLBACK_ENTITY_MARKERS)} for a tokenizer whose own "
            "tokens include <s> or </s>, as RoBERTa's)."
        },
    )
    vision_levels: list[int] | None = field(
        default=None, metadata={"help": "ViT levels with an expert (default: lowest, middle, highest, e.g. 0 6 12)."}
    )
    num_cross_attention_heads: int | None = field(
        default=None, metadata={"help": "Heads M of the textual-guided visual attention (default: the text's)."}
    )
    use_text_expert: bool | None = field(default=None, metadata={"help": "Route to the text-only expert (Eq. 10)."})
    visual_context: str | None = field(
        default=None,
        metadata={"help": "'tva' (Eq. 4) or 'cls' (w/o TVA).", "choices": VISUAL_CONTEXT_MODES},
    )
    fusion: str | None = field(
        default=None,
        metadata={
            "help": "'mome' (Eq. 9-10), 'concat' (w/o MoME) or 'text' (the text-only baseline, no visual path).",
            "choices": FUSION_MODES,
        },
    )
    num_object_crops: int | None = field(default=None, metadata={"help": "Visual-grounding object crops per post."})
    object_image_size: int | None = field(default=None, metadata={"help": "Side of the object crops in pixels."})
    freeze_vision_encoder: bool | None = field(default=None, metadata={"help": "Keep the ViT's weights fixed."})
    hidden_dropout_prob: float | None = field(default=None, metadata={"help": "Dropout of the FFNs and classifier."})
    attention_dropout: float | None = field(default=None, metadata={"help": "Dropout of the cross-modal attention."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Maximum tokens per post, markers included."})
    object_detector: str | None = field(
        default=None,
        metadata={
            "help": "An object detector (AutoModelForObjectDetection Hub id or folder) that crops the top boxes of "
            "each post without object crops of its own, in training, evaluation, prediction and serving."
        },
    )
    save_object_detector_weights: bool = field(
        default=False,
        metadata={
            "help": "Copy a Hub detector's weights into the model folder too (a local detector is always copied)."
        },
    )


CONFIG_OPTIONS: tuple[str, ...] = (
    "vision_levels",
    "num_cross_attention_heads",
    "use_text_expert",
    "visual_context",
    "fusion",
    "freeze_vision_encoder",
    "hidden_dropout_prob",
    "attention_dropout",
)
"""The `ModelArguments` that are `HVFormerConfig` arguments of the same name (the crop settings, which both the
config and the processor hold, go to the processor, and the model takes them from it)."""
PROCESSOR_OPTIONS: dict[str, str] = {
    "entity_markers": "entity_markers",
    "max_seq_length": "max_length",
    "num_object_crops": "num_object_crops",
    "object_image_size": "object_image_size",
    "object_detector": "object_detector",
}
"""The `ModelArguments` that are `HVFormerProcessor` arguments, by their name there."""


@dataclass
class DataArguments:
    """Where the MNRE-format data lives; without `data_dir`, the built-in sample dataset is generated and used."""

    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of mnre_{train,val,test}.txt; default: the built-in sample."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hub dataset id or a folder datasets.load_dataset reads, instead of --data_dir: posts in a post "
            "file's columns (image a datasets.Image column; see README, 'Your own data') or mre_data.export_mnre's "
            "layout (a 'token' column)."
        },
    )
    column_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "With --dataset_name: the dataset's names of the post columns, as COLUMN=NAME pairs "
            "(e.g. text=body image=picture)."
        },
    )
    image_dir: str | None = field(default=None, metadata={"help": "Images: {image_dir}/{split}/{img_id}."})
    crops_dir: str | None = field(default=None, metadata={"help": "Object crops: {crops_dir}/{split}/crops/..."})
    crops_mapping: str | None = field(
        default=None, metadata={"help": "Folder or file of mre_{split}_dict.pth / .json (which crops per line)."}
    )
    use_images: bool | None = field(default=None, metadata={"help": "false: images off (text-only experiment)."})
    missing_images: str | None = field(
        default=None, metadata={"help": "'error' (default) or 'blank' (blank images instead, counted and reported)."}
    )
    missing_crops: str | None = field(
        default=None,
        metadata={
            "help": "'error' (default) or 'none' (a split without object crops goes without, counted and reported)."
        },
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Your own posts to train on: JSON Lines, CSV or Parquet, one row a post (text, subject, object, "
            "image, relation; optional subject_span, object_span, object_crops, id). See README, 'Your own data'."
        },
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Your own posts to select the model on (or evaluate), as --train_file."}
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "Your own posts to predict (and score, when they have a relation column), as --train_file."},
    )
    none_label: str | None = field(
        default=None,
        metadata={
            "help": "With post files: the relation meaning 'no relation', left out of micro P/R/F1 (MNRE's None); "
            "without it every relation counts."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate val and test (debugging)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes decoding images."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where decoded images are cached."})


@dataclass
class ExperimentArguments:
    """Several seeds, analysis, static shapes, and starting over."""

    seeds: list[int] | None = field(
        default=None, metadata={"help": "Run once per seed into output_dir/seed-N and report mean ± std."}
    )
    do_analysis: bool = field(default=False, metadata={"help": "Write the paper's analysis figures (§4.3)."})
    analysis_split: str = field(default="val", metadata={"help": "Split the analysis reads."})
    static_shapes: bool | None = field(
        default=None,
        metadata={
            "help": "Pad every batch to a few fixed shapes, so that a compiled step (--torch_compile, CUDA graphs) "
            f"is not compiled again for each new shape: the text to one of {TEXT_LENGTH_BUCKETS} lengths up to "
            f"--max_seq_length ({' '.join(map(str, static_text_lengths(80)))} for 80), the object crops to "
            "--num_object_crops, and a last, smaller batch with padding rows that the loss, the metrics and the "
            "predictions leave out."
        },
    )
    prediction_shard_size: int = field(
        default=DEFAULT_PREDICTION_SHARD_SIZE,
        metadata={
            "help": "--test_file posts predicted at a time: each shard is read, decoded, predicted and kept in "
            f"output_dir/{PREDICTION_SHARDS_FOLDER}/, so that a corpus larger than memory goes through and an "
            "interrupted prediction resumes from its finished shards."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train anew although output_dir holds a finished run or checkpoints (they are deleted)."},
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "Keep the checkpoints of a finished run (Trainer pickles their optimizer, scheduler and RNG "
            "state); by default they are deleted once the model folder is written, before the results file."
        },
    )


DEFAULT_NONE_LABEL: str | None = inspect.signature(HVFormerConfig.__init__).parameters["none_label"].default
"""The "no relation" class of an MNRE folder, its export and the built-in sample: `HVFormerConfig`'s default."""
STATIC_SHAPES_DEFAULT = "on with --torch_compile on a GPU, else off"
"""What `--static_shapes` defaults to (decided in `parse_args`, once the other options are known)."""
ANALYSIS_PACKAGES: tuple[str, ...] = ("matplotlib", "sklearn")
"""What `--do_analysis` imports (the `analysis` extra)."""

RUN_DEFAULTS = {
    "output_dir": str(SAMPLE_RUN_DIR),
    "do_train": True,
    "do_eval": True,
    "do_predict": True,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "save_total_limit": 1,
    "load_best_model_at_end": True,
    "metric_for_best_model": "f1",
    "greater_is_better": True,
    "num_train_epochs": 8,
    "learning_rate": 1e-3,
    "warmup_steps": 0.06,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "report_to": "none",
    "ddp_find_unused_parameters": False,
    "restore_callback_states_from_checkpoint": True,
    "seed": 42,
}
"""`TrainingArguments` defaults of this script (the built-in sample run); configs/paper.yaml sets the paper's."""

USAGE = "run_mre.py [CONFIG.yaml ...] [--option VALUE ...]"
DESCRIPTION = (
    "Train, evaluate, predict with and analyse HVFormer. Leading YAML/JSON config files (e.g. configs/paper.yaml "
    "configs/ablations/wo_tva.yaml) set options; later files and the options after them win. Without --data_dir, "
    "the built-in sample dataset and tiny encoders are used (no download)."
)
EPILOG = "transformers' TrainingArguments options are accepted too (--learning_rate, --bf16, ...): see --help_all."


def machine_defaults() -> dict[str, Any]:
    """Defaults that depend on the machine. With an accelerator: batches copied from pinned memory (Trainer's default)
    without blocking the host (`non_blocking`), dataloader workers kept between epochs and evaluations
    (`dataloader_persistent_workers`; off when there are no workers), and no host synchronisation per step for
    Trainer's filter of NaN / inf losses (`logging_nan_inf_filter`, which reads each step's loss on the host; the run
    reports its own mean training loss, unfiltered). Without one: train on the CPU explicitly (so that `torchrun`
    processes form one gloo process group instead of training independently), without pinned memory."""
    if torch.accelerator.is_available():
        return {
            "accelerator_config": {"non_blocking": True},
            "dataloader_persistent_workers": True,
            "logging_nan_inf_filter": False,
        }
    return {"use_cpu": True, "dataloader_pin_memory": False}


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, as torch's DataLoader counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def data_collator(processor: HVFormerProcessor, static_shapes: StaticShapes | None = None) -> HVFormerDataCollator:
    """The run's collator: text padded to a multiple of 8 (tensor cores), or to the shapes of `static_shapes`; uint8
    pixels stacked as they are."""
    if static_shapes is not None:
        return HVFormerDataCollator(processor, static_shapes=static_shapes)
    return HVFormerDataCollator(processor, pad_to_multiple_of=8)


def run_static_shapes(processor: HVFormerProcessor, training_args: TrainingArguments) -> StaticShapes:
    """The shapes of a `--static_shapes` run: [`static_text_lengths`] of the processor's maximum length, its crops,
    and the training and the evaluation batch sizes of one process."""
    return StaticShapes(
        text_lengths=static_text_lengths(processor.max_length),
        batch_sizes=(training_args.train_batch_size, training_args.eval_batch_size),
        num_object_crops=processor.num_object_crops,
    )


def check_launcher(environ: Mapping[str, str]) -> None:
    """Refuses `accelerate launch --cpu --num_processes N` (N > 1) without an MPI host file: accelerate then starts a
    single process (it only sets MASTER_ADDR), which would silently train with a world size of 1."""
    asked_for_several = "MASTER_ADDR" in environ and environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
    world_size_vars = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    if asked_for_several and not any(name in environ for name in world_size_vars):
        raise SystemExit(
            "accelerate launch --cpu starts one process whatever --num_processes says (CPU multi-process needs "
            "--mpirun_hostfile). For several CPU processes run `torchrun --nproc_per_node N run_mre.py ...`; on GPUs "
            "use `accelerate launch --num_processes N run_mre.py ...` without --cpu."
        )


def config_file_values(path: str) -> dict[str, Any]:
    """The `key: value` pairs of a YAML/JSON config file."""
    text = Path(path).read_text(encoding="utf-8")
    values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError("a config file must hold a mapping of argument names to values")
    return values


def values_to_argv(values: dict[str, Any]) -> list[str]:
    """Config values as command-line arguments (a `None` value is left out)."""
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def documented_defaults() -> dict[str, Any]:
    """What the options left at `None` default to, read from where each default is defined (`HVFormerConfig`,
    `HVFormerProcessor` or its `HVFormerImageProcessor`, `load_mnre`), for `--help` to show."""
    text_options = inspect.signature(HVFormerProcessor.__init__).parameters
    sources = (
        (HVFormerConfig.__init__, {name: name for name in CONFIG_OPTIONS}),
        (HVFormerProcessor.__init__, {key: name for key, name in PROCESSOR_OPTIONS.items() if name in text_options}),
        (
            HVFormerImageProcessor.__init__,
            {key: name for key, name in PROCESSOR_OPTIONS.items() if name not in text_options},
        ),
        (load_mnre, {name: name for name in ("use_images", "missing_images", "missing_crops")}),
    )
    defaults = {}
    for function, names in sources:
        parameters = inspect.signature(function).parameters
        for option, parameter in names.items():
            default = parameters[parameter].default
            if default is not None and default is not inspect.Parameter.empty:
                defaults[option] = default
    return {**defaults, "static_shapes": STATIC_SHAPES_DEFAULT}


def last_value(argv: list[str], option: str) -> str | None:
    """The value last given to `--option` in `argv` (`"true"` for a bare flag), or `None` when it is not given."""
    value = None
    for index, arg in enumerate(argv):
        if arg == f"--{option}":
            following = argv[index + 1] if index + 1 < len(argv) else ""
            value = "true" if not following or following.startswith("--") else following
        elif arg.startswith(f"--{option}="):
            value = arg.split("=", 1)[1]
    return value


POST_FILE_OPTIONS: dict[str, str] = {"train": "train_file", "val": "validation_file", "test": "test_file"}
"""The option naming the post file of each split."""


def post_files(data_args: DataArguments) -> dict[str, str]:
    """The post files given, by split (`train`, `val`, `test`)."""
    return {split: path for split, option in POST_FILE_OPTIONS.items() if (path := getattr(data_args, option))}


def default_output_dir(data_args: DataArguments) -> str:
    """The run folder when `--output_dir` is not given: the built-in sample's, or one named after the data (a post
    file's folder)."""
    files = list(post_files(data_args).values())
    source = data_args.dataset_name or data_args.data_dir or (str(Path(files[0]).resolve().parent) if files else None)
    if source is None:
        return str(SAMPLE_RUN_DIR)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source.rstrip("/")).name).strip("-.") or "data"
    return str(Path("outputs") / f"hvformer-{name.lower()}")


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, ExperimentArguments, TrainingArguments]:
    """Command-line arguments, after any leading YAML/JSON config files (later files and arguments win).

    `--help` shows this script's own options; `--help_all` adds transformers' `TrainingArguments`. Options must be
    spelt out (no abbreviations), in config files too.
    """
    argv = list(argv)
    own = (ModelArguments, DataArguments, ExperimentArguments)
    if {"-h", "--help", "--help_all"} & set(argv):
        groups = own + (TrainingArguments,) * ("--help_all" in argv)
        parser = HfArgumentParser(groups, usage=USAGE, description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False)
        parser.set_defaults(**documented_defaults())
        parser.print_help()
        raise SystemExit(0)
    groups = (*own, TrainingArguments)
    parser = HfArgumentParser(groups, usage=USAGE, allow_abbrev=False)
    parser.set_defaults(**RUN_DEFAULTS, **machine_defaults())
    known = {field.name for group in groups for field in dataclasses.fields(group)}
    config_files = []
    while argv and argv[0].endswith((".yaml", ".yml", ".json")):
        config_files.append(argv.pop(0))
    config_argv = []
    for path in config_files:
        try:
            values = config_file_values(path)
        except (OSError, ValueError, yaml.YAMLError) as error:
            parser.error(f"{path}: {brief(error)}")
        unknown_keys = sorted(set(values) - known)
        if unknown_keys:
            parser.error(f"{path}: unknown option(s) {', '.join(unknown_keys)[:200]} (see --help / --help_all)")
        config_argv += values_to_argv(values)
    argv = config_argv + argv
    model_args, data_args, experiment_args, training_args, unknown = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)[:200]}")
    if last_value(argv, "output_dir") is None:
        training_args.output_dir = default_output_dir(data_args)
    do_eval = last_value(argv, "do_eval")
    if do_eval is not None and not string_to_bool(do_eval):  # TrainingArguments turns it on with eval_strategy
        training_args.do_eval = False
    if experiment_args.do_analysis:
        missing_extra = [name for name in ANALYSIS_PACKAGES if importlib.util.find_spec(name) is None]
        if missing_extra:
            parser.error(
                f"--do_analysis needs {', '.join(missing_extra)}: pip install -e '.[analysis]' (checked before "
                "training, so that a run does not fail at its end)"
            )
        if model_args.fusion == "text":
            parser.error("--do_analysis with --fusion text: the text-only baseline has no visual path to analyse")
    cores = available_cores()
    if training_args.dataloader_num_workers > cores:  # e.g. paper.yaml's 4 on a 2-core machine: more only contend
        logger.info(
            "--dataloader_num_workers %d > %d cores here: %d", training_args.dataloader_num_workers, cores, cores
        )
        training_args.dataloader_num_workers = cores
    if training_args.dataloader_num_workers == 0:
        training_args.dataloader_persistent_workers = False  # no worker to keep (DataLoader refuses the pair)
    if experiment_args.static_shapes is None:  # STATIC_SHAPES_DEFAULT
        experiment_args.static_shapes = training_args.torch_compile and torch.accelerator.is_available()
    missing = sorted(set(training_args.report_to) - set(get_available_reporting_integrations()))
    if missing:
        parser.error(
            f"--report_to {' '.join(missing)}: not installed. Install it (`pip install {' '.join(missing)}`; "
            "TensorBoard also as `pip install -e '.[tensorboard]'`) or choose another (`--report_to none`)."
        )
    return model_args, data_args, experiment_args, training_args


def given(args: Any, names: Mapping[str, str] | tuple[str, ...]) -> dict[str, Any]:
    """The options of `names` that were given (not `None`), under their names in `names` (a mapping renames), so
    that the defaults of the functions they go to apply to the others."""
    renames = names if isinstance(names, Mapping) else {name: name for name in names}
    return {target: value for name, target in renames.items() if (value := getattr(args, name)) is not None}


def build_model_and_processor(
    model_args: ModelArguments,
    relation_labels: list[str],
    words: Callable[[], list[str]],
    work_dir: Path,
    none_label: str | None = DEFAULT_NONE_LABEL,
) -> tuple[HVFormerForRelationExtraction, HVFormerProcessor]:
    """A trained HVFormer (`model_name_or_path`), or a new one from a text and a vision encoder (the built-in tiny
    ones, made in `work_dir`, the text one with a vocabulary of the dataset's `words()`, by default) for
    `relation_labels`, `none_label` its "no relation" class (`None`: every class counts); the processor is checked
    against the model either way."""
    if model_args.model_name_or_path:
        for option in ("entity_markers", "object_detector"):
            if getattr(model_args, option) is not None:
                raise ValueError(
                    f"--{option} with --model_name_or_path: the trained model {model_args.model_name_or_path!r} "
                    f"reads the {option.replace('_', ' ')} its processor was saved with."
                )
        # The processor is checked against the folder's config.json as it loads, so its pixel statistics are the
        # model's; a model saved before the config recorded them gets them from the processor it was trained with.
        processor = HVFormerProcessor.from_pretrained(model_args.model_name_or_path)
        model = HVFormerForRelationExtraction.from_pretrained(
            model_args.model_name_or_path, **processor.pixel_statistics()
        )
        processor.check_matches_model(model.config)
        return model, processor

    text_path, vision_path = model_args.text_model_name_or_path, model_args.vision_model_name_or_path
    processor_defaults: dict[str, Any] = {}
    if text_path == BUILTIN:
        text_path = str(build_builtin_text_encoder(work_dir / "builtin-encoders" / "text", words))
    if vision_path == BUILTIN:
        vision_path = str(build_builtin_vision_encoder(work_dir / "builtin-encoders" / "vision"))
        processor_defaults = dict(BUILTIN_VISION_DEFAULTS)
    processor = HVFormerProcessor.from_text_vision_pretrained(
        text_path,
        vision_path,
        relation_labels=relation_labels,
        **{**processor_defaults, **given(model_args, PROCESSOR_OPTIONS)},
    )
    processor.save_object_detector_weights = model_args.save_object_detector_weights
    crops = {"num_object_crops": processor.num_object_crops, "object_image_size": processor.object_image_size}
    config_kwargs = {name: value for name, value in given(model_args, CONFIG_OPTIONS).items() if name not in crops}
    model = HVFormerForRelationExtraction.from_text_vision_pretrained(
        text_path,
        vision_path,
        processor=processor,
        id2label=dict(enumerate(relation_labels)),
        none_label=none_label,
        **crops,
        **config_kwargs,
    )
    processor.check_matches_model(model.config)
    return model, processor


def marker_expert_weights_fn(config: Any) -> Callable[[Any, torch.Tensor], Any]:
    """`preprocess_logits_for_metrics` for a model with `config`: keeps the logits and, with a router, the expert
    weights G at `<s>` and `<o>` (batch, 2, E). Without a router (`fusion="concat"`) only the logits are kept."""

    def preprocess(outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> Any:
        if isinstance(outputs, torch.Tensor):
            return outputs
        if config.fusion != "mome":
            return outputs[0]
        return outputs[0], outputs[-1]  # logits, marker_expert_weights (the last field of the output)

    return preprocess


def card_encoder(name_or_path: str, modality: str) -> str:
    """How the model card names the run's `modality` ("text" or "vision") encoder."""
    if name_or_path == BUILTIN:
        return BUILTIN_DESCRIPTIONS[modality]
    return encoder_description(name_or_path)


def base_model_names(model_args: ModelArguments) -> list[str]:
    """The Hub ids this run's model starts from, for the model card."""
    if model_args.model_name_or_path:
        names = [model_args.model_name_or_path]
    else:
        names = [model_args.text_model_name_or_path, model_args.vision_model_name_or_path]
    return hub_ids([name for name in names if name != BUILTIN])


def resume_checkpoint(training_args: TrainingArguments, output_dir: Path) -> str | None:
    """`--resume_from_checkpoint` when given (refused when incomplete), else the last complete checkpoint."""
    if training_args.resume_from_checkpoint is not None:
        problem = checkpoint_problem(training_args.resume_from_checkpoint)
        if problem is not None:
            raise ValueError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: {problem}")
        return training_args.resume_from_checkpoint
    checkpoint = last_valid_checkpoint(output_dir)
    if checkpoint is not None:
        logger.warning("Resuming from %s", checkpoint)
    return checkpoint


def push(output_dir: Path, training_args: TrainingArguments) -> None:
    """Uploads the run's model folder to `--hub_model_id` (default: the run folder's name), its card rendered for the
    repository's id from the run's card facts."""
    model_dir = output_dir / MODEL_FOLDER
    facts_file = output_dir / CARD_FACTS_FILE
    card = None
    problem = file_problem(facts_file)
    if problem is None:
        facts, config = (
            CardFacts.load(facts_file),
            HVFormerForRelationExtraction.config_class.from_pretrained(model_dir),
        )
        card = partial(render_model_card, facts, config)
    else:
        logger.warning("%s %s: the model folder's README.md is pushed as it is.", facts_file, problem)
    repo_id = push_folder_to_hub(
        model_dir,
        training_args.hub_model_id or output_dir.name,
        token=training_args.hub_token,
        private=training_args.hub_private_repo,
        card=card,
    )
    write_manifest(output_dir, manifest_files(output_dir))  # the card now names the repository
    logger.warning("Pushed %s to https://huggingface.co/%s", model_dir, repo_id)


def find_callback(trainer: Trainer, callback_class: type) -> Any:
    """The trainer's callback of `callback_class` (resuming replaces stateful callbacks by restored copies)."""
    callbacks = trainer.callback_handler.callbacks
    return next((callback for callback in callbacks if isinstance(callback, callback_class)), None)


@dataclass
class DataSource:
    """Where a run's posts come from: its relations, the words of its built-in text encoder's vocabulary, and how to
    load its splits (`load_splits(processor, splits=..., ...)`), with the names the model card gives it."""

    relation_labels: list[str]
    words: Callable[[], list[str]]
    load_splits: Callable[..., dict[str, Any]]
    dataset_name: str
    dataset_id: str | None
    none_label: str | None = DEFAULT_NONE_LABEL


def post_file_source(data_args: DataArguments) -> DataSource:
    """The user's own post files (`--train_file`, `--validation_file`, `--test_file`). The relations are the training
    file's: `--none_label` first when given, then the others sorted; without a training file (predicting with a
    trained model), the model's (`relation_labels` is then empty and the model's labels apply)."""
    files = post_files(data_args)
    relation_labels: list[str] = []
    train_records: list[dict[str, Any]] = []
    if "train" in files:
        train_records = read_post_file(files["train"], num_object_crops=0, labelled=True)
        relation_labels = post_relations(train_records, data_args.none_label, files["train"])
    return DataSource(
        relation_labels=relation_labels,
        words=lambda: post_words(train_records or read_post_file(next(iter(files.values())), num_object_crops=0)),
        load_splits=partial(load_post_files, files),
        dataset_name=Path(next(iter(files.values()))).resolve().parent.name,
        dataset_id=None,
        none_label=data_args.none_label,
    )


def rename_columns(dataset: datasets.DatasetDict, pairs: list[str] | None) -> datasets.DatasetDict:
    """`dataset` with the columns `--column_names` maps (`COLUMN=NAME`: the post column `COLUMN` is named `NAME`
    there) given their post names."""
    renames: dict[str, str] = {}
    for pair in pairs or []:
        column, _, name = pair.partition("=")
        if column not in POST_COLUMNS or not name:
            raise ValueError(
                f"--column_names {pair!r:.80}: expected COLUMN=NAME with COLUMN one of {', '.join(POST_COLUMNS)}"
            )
        for split, rows in dataset.items():
            if name not in rows.column_names:
                raise ValueError(
                    f"--column_names {pair!r:.80}: split '{split}' has no column {name!r:.80} (it has "
                    f"{', '.join(rows.column_names)[:200]})"
                )
        renames[name] = column
    return dataset.rename_columns(renames) if renames else dataset


def post_dataset_source(dataset: datasets.DatasetDict, data_args: DataArguments, dataset_id: str | None) -> DataSource:
    """A dataset of posts (`--dataset_name` with a post file's columns). The relations are the training split's: its
    `relation` ClassLabel's names in their order, or, for strings, as post files give them (`--none_label` first,
    then sorted); without a training split (predicting with a trained model), the model's."""
    name = str(data_args.dataset_name)
    train = dataset.get(HUB_SPLITS["train"])
    relation_labels: list[str] = []
    train_records: list[dict[str, Any]] = []
    if train is not None:
        source = f"{name}[{HUB_SPLITS['train']}]"
        train_records = read_post_dataset(train, source, num_object_crops=0)
        relation_labels = dataset_relations(train) or post_relations(train_records, data_args.none_label, source)
        if data_args.none_label is not None and data_args.none_label not in relation_labels:
            raise ValueError(
                f"{source}: --none_label {data_args.none_label!r} is not one of its relations "
                f"({', '.join(relation_labels)[:200]})"
            )
    first = f"{name}[{next(iter(dataset))}]"
    return DataSource(
        relation_labels=relation_labels,
        words=lambda: post_words(train_records or read_post_dataset(next(iter(dataset.values())), first, 0)),
        load_splits=partial(load_post_dataset, dataset, name),
        dataset_name=dataset_id or Path(name).resolve().name,
        dataset_id=dataset_id,
        none_label=data_args.none_label,
    )


def data_source(data_args: DataArguments, training_args: TrainingArguments) -> DataSource:
    """The user's post files, a dataset in export_mnre's layout, an MNRE folder, or the built-in sample (made on first
    use)."""
    if post_files(data_args):
        try:
            return post_file_source(data_args)
        except (ValueError, OSError) as error:
            raise SystemExit(f"run_mre.py: error: {brief(error)}") from error
    if data_args.dataset_name is not None:
        if data_args.data_dir is not None:  # e.g. paper.yaml's data/mnre: the dataset replaces the folder
            logger.info("Reading %s, not --data_dir %s", data_args.dataset_name, data_args.data_dir)
        with training_args.main_process_first(desc="loading the dataset"):
            hub_dataset = datasets.load_dataset(data_args.dataset_name)
        dataset_id = next(iter(hub_ids([data_args.dataset_name])), None)  # a local folder is named, not linked
        try:
            hub_dataset = rename_columns(hub_dataset, data_args.column_names)
            if is_post_dataset(hub_dataset):
                return post_dataset_source(hub_dataset, data_args, dataset_id)
        except (ValueError, OSError) as error:
            raise SystemExit(f"run_mre.py: error: {brief(error)}") from error
        if data_args.none_label is not None:
            raise SystemExit(
                f"run_mre.py: error: --none_label goes with posts; {data_args.dataset_name} is in export_mnre's "
                f"layout, whose none label is {DEFAULT_NONE_LABEL!r}."
            )
        return DataSource(
            relation_labels=next(iter(hub_dataset.values())).features["relation"].names,
            words=partial(hub_words, hub_dataset),
            load_splits=partial(load_mnre_hub, hub_dataset, data_args.dataset_name),
            dataset_name=dataset_id or Path(data_args.dataset_name).resolve().name,
            dataset_id=dataset_id,
        )
    if data_args.data_dir is None:
        with training_args.main_process_first(desc="generating the built-in sample dataset"):
            data_dir = build_sample_dataset()
    else:
        data_dir = Path(data_args.data_dir)
    dataset_name, relation_labels = folder_dataset(data_dir)  # as mre_data.export_mnre labels the folder
    return DataSource(
        relation_labels=relation_labels,
        words=partial(folder_words, data_dir),
        load_splits=partial(
            load_mnre,
            data_dir,
            image_dir=data_args.image_dir,
            crops_dir=data_args.crops_dir,
            crops_mapping=data_args.crops_mapping,
        ),
        dataset_name=dataset_name,
        dataset_id=None,
    )


def requested_splits(training_args: TrainingArguments) -> list[str]:
    """The splits a run reads: train to train, val to select the model (training) or evaluate, test to predict."""
    splits = ["train"] * training_args.do_train + ["val"] * (training_args.do_train or training_args.do_eval)
    return splits + ["test"] * training_args.do_predict


def check_data_folder(data_args: DataArguments, splits: list[str]) -> None:
    """A usage error, before any model is fetched, when `--data_dir` lacks a text file a requested split needs, or
    when post files are given without one a requested split needs."""
    files = post_files(data_args)
    if files:
        for option in ("data_dir", "dataset_name"):
            if getattr(data_args, option) is not None:
                logger.info("Reading the post files, not --%s %s", option, getattr(data_args, option))
        missing = [f"--{POST_FILE_OPTIONS[split]}" for split in splits if split not in files]
        if missing:
            raise SystemExit(
                f"run_mre.py: error: {', '.join(missing)} needed: post files were given, and the run "
                f"{' and '.join(f'reads {split}' for split in splits)} (--do_train needs --validation_file to select "
                "the model; --do_train false --do_eval false predicts --test_file with --model_name_or_path)."
            )
        return
    if data_args.column_names and data_args.dataset_name is None:
        raise SystemExit("run_mre.py: error: --column_names goes with --dataset_name (a dataset's column names).")
    if data_args.none_label is not None and data_args.dataset_name is None:
        raise SystemExit(
            "run_mre.py: error: --none_label goes with posts (--train_file ... or --dataset_name); an MNRE folder "
            f"has {DEFAULT_NONE_LABEL!r}."
        )
    if data_args.dataset_name is not None or data_args.data_dir is None:
        return
    data_dir = Path(data_args.data_dir)
    missing = [f"mnre_{split}.txt" for split in splits if find_split_file(data_dir, split) is None]
    if not data_dir.is_dir():
        raise SystemExit(f"run_mre.py: error: --data_dir {data_dir}: no such folder (it needs {', '.join(missing)}).")
    if missing:
        raise SystemExit(
            f"run_mre.py: error: --data_dir {data_dir} has no {', '.join(missing)} (also looked for ours_*.txt and "
            "in txt/, mnre_txt/); MNRE's text files come from the MNRE repository (see README)."
        )


def analyse_finished_run(
    output_dir: Path, source: DataSource, data_args: DataArguments, split: str, batch_size: int
) -> None:
    """`--do_analysis` on a finished run: its saved model analysed on `split` into `output_dir/analysis`."""
    from analysis.explain import load

    model, processor = load(output_dir / MODEL_FOLDER)
    relation_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    data = source.load_splits(
        processor,
        splits=[split],
        relation_labels=relation_labels,
        cache_dir=data_args.cache_dir,
        **given(data_args, ("use_images", "missing_images", "missing_crops")),
    )
    results = analyse(
        model,
        data[split],
        data_collator(processor),
        output_dir / "analysis",
        batch_size=batch_size,
        history_path=output_dir / HISTORY_FILE,
    )
    print_analysis_summary(results, output_dir / "analysis")


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    experiment_args: ExperimentArguments,
    training_args: TrainingArguments,
    push_to_hub: bool = False,
) -> dict[str, float]:
    """One training / evaluation / prediction run into `training_args.output_dir`; returns its metrics."""
    output_dir = Path(training_args.output_dir)
    model_dir = output_dir / MODEL_FOLDER
    if output_dir.exists() and not output_dir.is_dir():
        raise SystemExit(f"run_mre.py: error: --output_dir {output_dir} is a file, not a folder.")
    splits = requested_splits(training_args)
    check_data_folder(data_args, splits)
    arguments = shaping_arguments([model_args, data_args], training_args)

    # A finished run of the same arguments is not repeated: its results are returned, checkpoints a kill left
    # deleted, its model pushed or analysed. A folder holding a run of other arguments is refused.
    finished = finished_run_results(output_dir)
    if not experiment_args.overwrite_output_dir:
        check_same_run(output_dir, arguments, finished is not None)
        if finished is not None:
            logger.warning("%s holds a finished run of these arguments: not training again.", output_dir)
            if training_args.process_index == 0:
                if not experiment_args.keep_checkpoints:  # those of a run killed before it deleted them
                    remove_checkpoints(output_dir)
                if push_to_hub:
                    push(output_dir, training_args)
                if experiment_args.do_analysis:
                    analyse_finished_run(
                        output_dir,
                        data_source(data_args, training_args),
                        data_args,
                        experiment_args.analysis_split,
                        training_args.per_device_eval_batch_size,
                    )
            return finished
    if training_args.process_index == 0:
        if experiment_args.overwrite_output_dir:
            clear_run(output_dir)
        else:  # a damaged run's manifest: beside the new files it would mark a killed rerun finished
            (output_dir / MANIFEST_FILE).unlink(missing_ok=True)
        record_arguments(output_dir, arguments)
    set_seed(training_args.seed)
    source = data_source(data_args, training_args)  # a finished run returned above reads no data

    # Model and processor (a bad option or encoder is a usage error, not a traceback).
    if not source.relation_labels and not model_args.model_name_or_path:
        raise SystemExit(
            "run_mre.py: error: predicting post files without --train_file needs a trained model "
            "(--model_name_or_path), whose relations the predictions take."
        )
    with training_args.main_process_first(desc="building the model"):
        try:
            model, processor = build_model_and_processor(
                model_args, source.relation_labels, source.words, output_dir, source.none_label
            )
        except (ValueError, OSError) as error:
            raise SystemExit(f"run_mre.py: error: {error}") from error
    relation_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    # Preprocessing: tokenised posts and decoded images, cached; only the splits the run reads. A post file to
    # predict is read a shard at a time when it is predicted (unless the analysis reads the whole split).
    corpus = post_files(data_args).get("test") if training_args.do_predict else None
    if corpus is not None and experiment_args.do_analysis and experiment_args.analysis_split == "test":
        corpus = None
    with training_args.main_process_first(desc="reading and caching the data"):
        data = source.load_splits(
            processor,
            splits=[split for split in splits if not (corpus is not None and split == "test")],
            relation_labels=relation_labels,
            num_proc=data_args.preprocessing_num_workers,
            cache_dir=data_args.cache_dir,
            **given(data_args, ("use_images", "missing_images", "missing_crops")),
        )
    limits = {"train": data_args.max_train_samples, "val": data_args.max_eval_samples}
    limits["test"] = data_args.max_eval_samples
    for split, limit in limits.items():
        if limit is not None and split in data:
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    metrics: dict[str, Any] = {
        f"{split}_{name}": value for split, counts in image_report(data).items() for name, value in counts.items()
    }

    # Trainer: each batch read with one Arrow query (only the model's columns: nothing for Trainer to remove).
    batches = {split: ColumnBatches(dataset) for split, dataset in data.items()}
    training_args.remove_unused_columns = False
    if "val" not in data:  # predicting only: nothing to evaluate during training, nor to select a model on
        training_args.eval_strategy, training_args.load_best_model_at_end = IntervalStrategy.NO, False
    callbacks = [TrainingLossRecorder(), EpochReport()]
    if model.config.fusion == "mome":
        callbacks.append(ExpertWeightsRecorder())
    static_shapes = run_static_shapes(processor, training_args) if experiment_args.static_shapes else None
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=batches.get("train"),
        eval_dataset=batches.get("val"),
        data_collator=data_collator(processor, static_shapes),
        processing_class=processor,
        compute_metrics=compute_metrics_fn(model.config.none_label_id, model.config.id2label),
        preprocess_logits_for_metrics=marker_expert_weights_fn(model.config),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressBar)

    # Training (resumed from the last complete checkpoint), evaluation, prediction. With static shapes a compiled
    # step is compiled once per shape, each with static sizes (what CUDA graphs and Inductor's kernels want), instead
    # of once more with dynamic ones at the second shape it meets.
    compiling_static_shapes = static_shapes is not None and training_args.torch_compile
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False) if compiling_static_shapes else nullcontext():
        if training_args.do_train:
            train_result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args, output_dir))
            metrics.update(train_result.metrics)
            metrics["train_loss"] = find_callback(trainer, TrainingLossRecorder).mean
            trainer.save_state()
            recorder = find_callback(trainer, ExpertWeightsRecorder)
            if recorder is not None and trainer.is_world_process_zero():
                recorder.save(output_dir / HISTORY_FILE, model.config.expert_names)
        if "val" in data:
            metrics.update(trainer.evaluate(eval_dataset=batches["val"], metric_key_prefix="eval"))
        if corpus is not None:
            try:
                metrics.update(
                    predict_corpus(
                        trainer,
                        processor,
                        Path(corpus),
                        output_dir,
                        output_dir / PREDICTIONS_FILE,
                        shard_size=experiment_args.prediction_shard_size,
                        limit=data_args.max_eval_samples,
                        load_options={
                            "num_proc": data_args.preprocessing_num_workers,
                            **given(data_args, ("use_images", "missing_images")),
                        },
                    )
                )
            except (ValueError, OSError) as error:
                raise SystemExit(f"run_mre.py: error: {brief(error)}") from error
        elif training_args.do_predict:
            prediction = trainer.predict(batches["test"], metric_key_prefix="test")
            metrics.update(prediction.metrics)
            if trainer.is_world_process_zero():
                write_predictions(output_dir / PREDICTIONS_FILE, data["test"], prediction.predictions, model.config)

    # The model folder with its card, the checkpoints deleted, the results file, then the manifest of every file the
    # run wrote, which marks the run finished.
    if trainer.is_world_process_zero():
        facts = CardFacts(
            dataset_name=source.dataset_name,
            dataset_id=source.dataset_id,
            base_models=base_model_names(model_args),
            metrics=metrics,
            hyperparameters=training_hyperparameters(training_args, processor.max_length),
            environment=training_environment(training_args.world_size),
            text_encoder=card_encoder(model_args.text_model_name_or_path, "text"),
            vision_encoder=card_encoder(model_args.vision_model_name_or_path, "vision"),
            demonstration_only=data_args.data_dir is None and data_args.dataset_name is None,
        )
        facts.save(output_dir / CARD_FACTS_FILE)
        card = render_model_card(facts, model.config, training_args.hub_model_id)
        export_model_folder(trainer.model, processor, model_dir, card)
        if not experiment_args.keep_checkpoints:  # a finished run is not resumed; its model folder is what remains
            remove_checkpoints(output_dir)
        write_text_atomic(output_dir / RESULTS_FILE, json.dumps(metrics, indent=4, sort_keys=True) + "\n")
        written = [name for name in (*RUN_FILES, RUN_ARGUMENTS_FILE) if (output_dir / name).is_file()]
        write_manifest(output_dir, [*written, MODEL_FOLDER])
        if push_to_hub:
            push(output_dir, training_args)
    if experiment_args.do_analysis and trainer.is_world_process_zero():
        split = data[experiment_args.analysis_split]
        results = run_analysis(trainer, split, output_dir / "analysis", collator=data_collator(processor))
        print_analysis_summary(results, output_dir / "analysis")
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    check_launcher(os.environ)
    model_args, data_args, experiment_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    set_up_logging(training_args)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # once, at the end, with the card

    if not experiment_args.seeds:
        metrics = run(model_args, data_args, experiment_args, training_args, push_to_hub)
        if training_args.process_index == 0:
            output_dir = Path(training_args.output_dir)
            print_summary(metrics, output_dir, output_dir / MODEL_FOLDER)
        return metrics

    per_seed = {}
    for seed in experiment_args.seeds:
        seed_args = dataclasses.replace(
            training_args, output_dir=str(seed_output_dir(training_args.output_dir, seed)), seed=seed
        )
        if training_args.process_index == 0:
            print(f"seed {seed}: {seed_args.output_dir}/")
        per_seed[seed] = run(model_args, data_args, experiment_args, seed_args, push_to_hub=False)
    summary = summarize_seeds(per_seed, training_args.output_dir)
    if training_args.process_index == 0:
        print_seed_summary(summary, Path(training_args.output_dir), MODEL_FOLDER)
    return summary


if __name__ == "__main__":
    main()
