"""The arguments that shape a run's result (data, model, training), recorded in its folder so that a rerun with other
ones is refused instead of returning, or resuming, a run that answers another question."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .run_files import file_problem, file_sha256, write_text_atomic

logger = logging.getLogger(__name__)

RUN_ARGUMENTS_FILE = "run_arguments.json"
"""The recorded arguments of the run in a folder, written before it trains."""
NOT_SHAPING: frozenset[str] = frozenset({"preprocessing_num_workers", "cache_dir", "static_shapes"})
"""Fields of the script's own argument groups that change how a run goes, never its result (`static_shapes` pads
with what the model and the loss leave out: it changes only float rounding and the shapes of dropout's draws, as
`torch_compile` changes rounding)."""
SHAPING_TRAINING_ARGUMENTS: tuple[str, ...] = (
    "do_train",
    "do_eval",
    "do_predict",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "optim",
    "optim_args",
    "label_smoothing_factor",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "seed",
    "data_seed",
    "bf16",
    "fp16",
    "eval_strategy",
    "eval_steps",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "group_by_length",
)
"""The `TrainingArguments` that change what a run trains, selects or reports (`world_size` for the global batch)."""


PATH_ARGUMENTS: frozenset[str] = frozenset(
    {
        "data_dir",
        "dataset_name",
        "image_dir",
        "crops_dir",
        "crops_mapping",
        "train_file",
        "validation_file",
        "test_file",
        "model_name_or_path",
        "text_model_name_or_path",
        "vision_model_name_or_path",
    }
)
"""Arguments that may name a local file or folder: recorded as absolute paths when they do, so that the same folder
named from elsewhere is the same argument."""


CONTENTS_SUFFIX = " (contents)"
"""Suffix of the recorded fingerprint of a path argument's contents (`test_file (contents)`)."""
MAX_FINGERPRINT_FILES = 1_000_000
"""Most files whose size and modification time a folder's fingerprint reads (MNRE with its crops: about 40,000)."""


def _folder_digest(folder: Path, skip: set[Path]) -> str | None:
    """SHA-256 of the relative path, size and modification time of each file under `folder` (none read; symbolic
    links not followed; hidden folders, `__pycache__` and the folders of `skip` left out), or `None` past
    [`MAX_FINGERPRINT_FILES`] files."""
    entries = []
    for root, folders, files in os.walk(folder):
        folders[:] = [
            name
            for name in folders
            if not name.startswith((".", "__pycache__")) and Path(root, name).resolve() not in skip
        ]
        for name in files:
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                continue
            stat = path.stat()
            entries.append(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}")
            if len(entries) > MAX_FINGERPRINT_FILES:
                return None
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def input_fingerprints(values: dict[str, Any], skip_folders: list[str | os.PathLike]) -> dict[str, str]:
    """What the local paths among the [`PATH_ARGUMENTS`] of `values` hold, so that a finished run is returned again
    only for the same data and models, never for files changed since: the SHA-256 of a file's bytes; for a folder
    (an MNRE folder with its images and crops, a model or dataset folder), of its files' names, sizes and
    modification times. The `skip_folders` (the run's own, its cache) are left out of any folder that holds them.
    A post file is fingerprinted by its bytes; the images it names by path are not read."""
    skip = {Path(folder).resolve() for folder in skip_folders}
    fingerprints = {}
    for name in sorted(PATH_ARGUMENTS & values.keys()):
        value = values[name]
        if not isinstance(value, str) or not os.path.exists(value):
            continue
        path = Path(value)
        fingerprint = file_sha256(path) if path.is_file() else _folder_digest(path, skip)
        if fingerprint is None:
            logger.warning(
                "--%s %s holds over %d files: its contents are not fingerprinted; a changed file in it is not told "
                "apart from the finished run's.",
                name,
                value,
                MAX_FINGERPRINT_FILES,
            )
            continue
        fingerprints[name + CONTENTS_SUFFIX] = fingerprint
    return fingerprints


def _plain(value: Any) -> Any:
    """`value` as JSON holds it (enums by their value)."""
    value = getattr(value, "value", value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def shaping_arguments(own: list[Any], training_args: Any) -> dict[str, Any]:
    """The arguments of a run that shape its result: every field of the script's own argument dataclasses (`own`)
    except [`NOT_SHAPING`], the [`SHAPING_TRAINING_ARGUMENTS`] of `training_args`, and the
    [`input_fingerprints`] of the local files and folders they name."""
    values = {
        field.name: _plain(getattr(group, field.name))
        for group in own
        for field in dataclasses.fields(group)
        if field.name not in NOT_SHAPING
    }
    for name in PATH_ARGUMENTS & values.keys():
        if isinstance(values[name], str) and os.path.exists(values[name]):
            values[name] = str(Path(values[name]).resolve())
    values.update({name: _plain(getattr(training_args, name, None)) for name in SHAPING_TRAINING_ARGUMENTS})
    skip = [training_args.output_dir] + [group.cache_dir for group in own if getattr(group, "cache_dir", None)]
    values.update(input_fingerprints(values, skip))
    return values


def recorded_arguments(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The arguments recorded in `output_dir`, or `None` when it records none (or none readable)."""
    path = Path(output_dir) / RUN_ARGUMENTS_FILE
    if file_problem(path) is not None:
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def record_arguments(output_dir: str | os.PathLike, arguments: dict[str, Any]) -> Path:
    """Writes `arguments` into `output_dir` (atomically); returns the file's path."""
    return write_text_atomic(
        Path(output_dir) / RUN_ARGUMENTS_FILE, json.dumps(arguments, indent=1, sort_keys=True) + "\n"
    )


def differences(recorded: dict[str, Any], current: dict[str, Any], limit: int = 8) -> list[str]:
    """`--name old -> new` for each argument that differs, at most `limit` of them (and a count of the rest)."""
    names = sorted(name for name in {*recorded, *current} if recorded.get(name) != current.get(name))
    lines = [f"--{name} {_short(recorded.get(name))} -> {_short(current.get(name))}" for name in names[:limit]]
    if len(names) > limit:
        lines.append(f"and {len(names) - limit} more")
    return lines


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."
