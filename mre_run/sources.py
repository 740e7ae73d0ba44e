"""Where a run's posts come from: the user's post files, a dataset of posts or in export_mnre's layout, an MNRE
folder, or the built-in sample; with their relations, the words of a built-in encoder's vocabulary, how to load
their splits, and the usage errors of data options that do not go together."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import datasets
from transformers import TrainingArguments

from modeling_hvformer import HVFormerConfig
from mre_data.mnre import HUB_SPLITS, find_split_file, folder_dataset, folder_words, hub_words
from mre_data.mnre_dataset import (
    dataset_relations,
    file_signature,
    is_post_dataset,
    load_mnre,
    load_mnre_hub,
    load_post_dataset,
    load_post_files,
    read_post_dataset,
)
from mre_data.post_files import (
    POST_COLUMNS,
    PostFormatError,
    iter_post_rows,
    post_relations,
    post_words,
    read_post_file,
    resolve_post_path,
)
from mre_data.sample_data import build_sample_dataset
from training.hub import hub_ids
from training.run_files import (
    brief,
)

logger = logging.getLogger(__name__)


DEFAULT_NONE_LABEL: str | None = inspect.signature(HVFormerConfig.__init__).parameters["none_label"].default
"""The "no relation" class of an MNRE folder, its export and the built-in sample: `HVFormerConfig`'s default."""
POST_FILE_OPTIONS: dict[str, str] = {"train": "train_file", "val": "validation_file", "test": "test_file"}
"""The option naming the post file of each split."""


def post_files(data_args: Any) -> dict[str, str]:
    """The post files given, by split (`train`, `val`, `test`)."""
    return {split: path for split, option in POST_FILE_OPTIONS.items() if (path := getattr(data_args, option))}


IMAGES_SUFFIX = " (images)"
"""Suffix of the recorded fingerprint of the images a post file names (`test_file (images)`)."""


def post_image_fingerprints(data_args: Any) -> dict[str, str]:
    """What the images of the post files hold, recorded with a run's arguments beside the files' own bytes: per file,
    the SHA-256 of each image and crop path with its size and modification time (no image is read), so that a
    finished run is not returned for a picture changed in place since. A file or row that cannot be read is left to
    the loader, which names it."""
    fingerprints = {}
    for split, path in post_files(data_args).items():
        folder, digest = Path(path).parent, hashlib.sha256()
        try:
            for where, row in iter_post_rows(path):
                crops = row.get("object_crops")
                crops = crops if isinstance(crops, list) else []
                for column, value in [("image", row.get("image")), *(("object_crops", crop) for crop in crops)]:
                    with contextlib.suppress(PostFormatError):
                        file = resolve_post_path(value, folder, column, where)
                        digest.update(f"{file}\0{file_signature(file)}\n".encode())
        except (PostFormatError, OSError, ValueError):
            continue
        fingerprints[POST_FILE_OPTIONS[split] + IMAGES_SUFFIX] = digest.hexdigest()
    return fingerprints


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


def post_file_source(data_args: Any) -> DataSource:
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


def post_dataset_source(dataset: datasets.DatasetDict, data_args: Any, dataset_id: str | None) -> DataSource:
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


def data_source(data_args: Any, training_args: TrainingArguments) -> DataSource:
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


def check_data_folder(data_args: Any, splits: list[str]) -> None:
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
