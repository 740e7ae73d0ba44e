"""The command line of `run_mre.py`: its option groups (model, data, experiment, beside transformers'
`TrainingArguments`), their defaults, leading YAML/JSON config files, and the checks made before a run starts."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool
from transformers.integrations import get_available_reporting_integrations

from modeling_hvformer import HVFormerConfig
from modeling_hvformer.configuration_hvformer import FUSION_MODES, VISUAL_CONTEXT_MODES
from mre_data.builtin_encoders import (
    BUILTIN,
)
from mre_data.collator import (
    TEXT_LENGTH_BUCKETS,
    static_text_lengths,
)
from mre_data.mnre_dataset import (
    load_mnre,
)
from processing.entity_marking import ENTITY_MARKERS, FALLBACK_ENTITY_MARKERS
from processing.image_processing_hvformer import HVFormerImageProcessor
from processing.processing_hvformer import HVFormerProcessor
from training.hub import SAMPLE_RUN_DIR
from training.run_files import (
    brief,
)
from training.run_folder import (
    PREDICTION_SHARDS_FOLDER,
)

from .prediction import DEFAULT_PREDICTION_SHARD_SIZE
from .sources import post_files

logger = logging.getLogger(__name__)


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
