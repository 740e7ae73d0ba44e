"""Predictions for a whole corpus of posts: a post file read and predicted a shard at a time, each finished shard kept
on disk so that an interrupted prediction resumes where it stopped, and the shards joined into the run's predictions
file in input order.

A shard is `shard_size` consecutive posts. Each is read from the file, validated, cached and batched as the whole
file's split would be ([`load_post_records`]: the same processor, cache and collator, so the probabilities are the
ones a one-piece prediction gives), predicted by `Trainer.predict` over every process of the run (each post once),
and written by the main process as `shard-NNNNN.jsonl` beside a `shard-NNNNN.json` record of what it was predicted
from: its posts (count, first and last id) and a digest of their inputs (the parsed rows, their image files' sizes
and modification times, the loading options) and of the model (config, weights, tokenizer, processor, precision).
A rerun reuses a shard only when its record matches the posts it now reads and the model now loaded, and its
predictions file is the one recorded (size and hash); any other shard is predicted again.

[`load_post_records`]: mre_data.mnre_dataset.load_post_records
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from mre_data.collator import ColumnBatches
from mre_data.mnre_dataset import NO_CROPS_WARNING, file_signature, image_report, load_post_records
from mre_data.post_files import PostFormatError, iter_post_rows, parse_post
from processing.object_detection import processor_detector
from training.console import ProgressBar
from training.run_files import atomic_writer, file_sha256, write_text_atomic
from training.run_folder import PREDICTION_SHARDS_FOLDER, write_predictions

logger = logging.getLogger(__name__)

DEFAULT_PREDICTION_SHARD_SIZE = 4096
"""Posts per shard: what is decoded and cached at once (about 0.3 MB of uint8 pixels a post with a 224-px image and
three 128-px crops: 1.2 GB a shard, on disk and memory-mapped) and what an interruption loses at most. A multiple of
the usual evaluation batch sizes, so that the batches, and hence the float rounding, are those of a one-piece
prediction."""
PRECISION_ARGUMENTS: tuple[str, ...] = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval")
"""The `TrainingArguments` that change a prediction's numbers (the dtype it runs in)."""


@dataclass(frozen=True)
class CorpusScan:
    """What one pass over a post file finds before anything is predicted: how many posts (at most the limit), whether
    they are labelled (a `relation` column), and whether no post has object crops (the split then goes without)."""

    posts: int
    labelled: bool
    crops_unavailable: bool


def _parsed_rows(path: Path, labelled: bool, num_object_crops: int, limit: int | None) -> Iterator[dict[str, Any]]:
    """The validated records of the file's rows ([`parse_post`]), numbered from the file's start; two rows with the
    same id are an error naming both."""
    first_row: dict[str, str] = {}
    for index, (where, row) in enumerate(islice(iter_post_rows(path), limit)):
        record = parse_post(row, where, index, path.parent, labelled, num_object_crops)
        if record["id"] in first_row:
            raise PostFormatError(
                f"{where}: column 'id': {record['id']!r:.80} is the id of {first_row[record['id']]} too"
            )
        first_row[record["id"]] = where
        yield record


def scan_posts(
    path: Path, num_object_crops: int, relation_labels: list[str], use_images: bool, limit: int | None = None
) -> CorpusScan:
    """Reads and validates every row of a post file once, as [`read_post_file`] does, keeping only counts (and the
    ids, to find a repeated one): a bad row is an error naming the file, the line and the column before any post is
    predicted, and a relation that is not one of `relation_labels` names the line too."""
    labelled = False
    for _, row in islice(iter_post_rows(path), limit):
        labelled = labelled or "relation" in row
    posts, with_crops = 0, False
    for record in _parsed_rows(path, labelled, num_object_crops, limit):
        if labelled and record["relation"] not in relation_labels:
            raise PostFormatError(
                f"{record['location']}: column 'relation': {record['relation']!r:.100} is not a relation of the "
                f"model ({', '.join(relation_labels)[:200]})"
            )
        posts += 1
        with_crops = with_crops or bool(record["crop_paths"])
    if not posts:
        raise PostFormatError(f"{path}: no posts")
    return CorpusScan(posts, labelled, use_images and bool(num_object_crops) and not with_crops)


def _digest(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def shard_inputs_digest(records: list[dict[str, Any]], options: Mapping[str, Any]) -> str:
    """What a shard's predictions depend on besides the model: its records and the size and modification time of
    each image and crop they name, with the loading `options`."""
    paths = sorted({path for record in records for path in (record["image_path"], *record["crop_paths"])})
    return _digest(records, {path: file_signature(path) for path in paths}, options)


def model_digest(model: torch.nn.Module, processor: Any, training_args: TrainingArguments) -> str:
    """What a prediction depends on besides the posts: the model's config and weights, the tokenizer and processor
    settings, the object detector's (config, image processor, weights), and the precision it runs in."""
    digest = hashlib.sha256()
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {name: getattr(training_args, name) for name in PRECISION_ARGUMENTS}
    detector = processor_detector(processor)
    detector_state = json.dumps(detector.fingerprint() if detector is not None else None, sort_keys=True, default=str)
    texts = (
        model.config.to_json_string(),
        vocabulary,
        processor.to_json_string(),
        json.dumps(settings),
        detector_state,
    )
    for text in texts:
        digest.update(text.encode() + b"\0")
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def shard_paths(folder: Path, index: int) -> tuple[Path, Path]:
    """The predictions file of shard `index` and the record of what it was predicted from."""
    return folder / f"shard-{index:05d}.jsonl", folder / f"shard-{index:05d}.json"


def finished_shard(folder: Path, index: int, inputs: str, model: str) -> dict[str, Any] | None:
    """The record of shard `index` when its predictions are whole and were made from these `inputs` and this `model`;
    `None` when it is absent, or (with a warning saying why) stale or damaged."""
    predictions, record_file = shard_paths(folder, index)
    if not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        problem = None
        if record.get("model") != model:
            problem = "was predicted by another model"
        elif record.get("inputs") != inputs:
            problem = "was predicted from other posts (the file or its images changed)"
        elif not predictions.is_file() or predictions.stat().st_size != record.get("bytes"):
            problem = f"has no predictions file of {record.get('bytes')} bytes"
        elif file_sha256(predictions) != record.get("sha256"):
            problem = "has a predictions file that is not the one it recorded"
    except (OSError, ValueError, AttributeError) as error:
        problem = f"has an unreadable record ({type(error).__name__})"
    if problem is not None:
        logger.warning("%s %s: predicting it again", record_file.with_suffix("").name, problem)
        return None
    return record


class CorpusProgressBar(TrainerCallback):
    """One progress bar over a corpus's posts, in posts per second, on the main process only; the posts of shards
    reused from an earlier attempt count as done from the start (and not in the rate)."""

    def __init__(self, total: int, done: int, args: TrainingArguments, is_main_process: bool) -> None:
        self.bar = tqdm(
            total=total,
            initial=done,
            unit=" posts",
            desc="Predicting",
            disable=args.disable_tqdm or not is_main_process,
        )
        self.step_posts = args.eval_batch_size * args.world_size
        self.left_in_shard = 0

    def start_shard(self, posts: int) -> None:
        self.left_in_shard = posts

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        step = min(self.step_posts, self.left_in_shard)
        self.left_in_shard -= step
        self.bar.update(step)

    def end_shard(self) -> None:
        self.bar.update(self.left_in_shard)
        self.left_in_shard = 0

    def skip(self, posts: int) -> None:
        """A shard finished by an earlier attempt, met after the bar started."""
        self.bar.update(posts)

    def close(self) -> None:
        self.bar.close()


def _shards(path: Path, labelled: bool, num_object_crops: int, shard_size: int, limit: int | None):
    rows = _parsed_rows(path, labelled, num_object_crops, limit)
    while shard := list(islice(rows, shard_size)):
        yield shard


def _broadcast(trainer: Trainer, value: Any) -> Any:
    """The main process's `value`, on every process."""
    if trainer.accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def predict_corpus(
    trainer: Trainer,
    processor: Any,
    path: Path,
    output_dir: Path,
    predictions_file: Path,
    *,
    shard_size: int = DEFAULT_PREDICTION_SHARD_SIZE,
    limit: int | None = None,
    load_options: Mapping[str, Any] | None = None,
    metric_key_prefix: str = "test",
) -> dict[str, Any]:
    """
    Predicts every post of the post file `path` (the first `limit`) a shard at a time into `predictions_file`, one
    line per post in input order (as `write_predictions` writes them), resuming from the shards an interrupted attempt
    finished in `output_dir / PREDICTION_SHARDS_FOLDER` (removed once the predictions file is whole). Every process of
    the run calls it; the main process writes.

    Args:
        trainer: the run's `Trainer` (its model, collator, precision and processes).
        processor: the model's processor.
        shard_size: posts per shard (see [`DEFAULT_PREDICTION_SHARD_SIZE`]).
        load_options: `use_images`, `missing_images`, `num_proc` for [`load_post_records`].

    Returns:
        `dict`: on the main process, the split's image counts (as `image_report`'s), the scores and the loss when the
        posts are labelled, the runtime and posts per second of this attempt, and the shards predicted and reused
        (`{prefix}_shards_predicted`, `{prefix}_shards_reused`), each key prefixed with `metric_key_prefix`; empty on
        the other processes.
    """
    if shard_size < 1:
        raise ValueError(f"--prediction_shard_size must be at least 1, got {shard_size}")
    options = dict(load_options or {})
    model, args = trainer.model, trainer.args
    config = model.config
    relation_labels = [config.id2label[i] for i in range(config.num_labels)]
    use_images = options.get("use_images", True)
    scan = scan_posts(path, processor.num_object_crops, relation_labels, use_images, limit)
    crops_unavailable = scan.crops_unavailable and processor_detector(processor) is None  # else the detector crops
    if crops_unavailable:
        logger.warning(NO_CROPS_WARNING, path)
    folder = output_dir / PREDICTION_SHARDS_FOLDER
    is_main = trainer.is_world_process_zero()
    model_id = model_digest(model, processor, args) if is_main else ""
    digest_options = {**options, "crops_unavailable": crops_unavailable}
    digest_options.pop("num_proc", None)

    progress = ProgressBar if trainer.pop_callback(ProgressBar) is not None else None
    bar = CorpusProgressBar(scan.posts, 0, args, is_main)
    trainer.add_callback(bar)
    records_of: list[dict[str, Any]] = []
    predicted = posts_predicted = 0
    start = time.perf_counter()
    try:
        for index, records in enumerate(_shards(path, scan.labelled, processor.num_object_crops, shard_size, limit)):
            record = None
            if is_main:
                inputs = shard_inputs_digest(records, digest_options)
                record = finished_shard(folder, index, inputs, model_id)
            record = _broadcast(trainer, record)
            if record is not None:
                bar.skip(len(records))
                records_of.append(record)
                continue
            with args.main_process_first(desc=f"caching shard {index}"):
                dataset = load_post_records(
                    records,
                    str(path),
                    processor,
                    relation_labels=relation_labels,
                    crops_unavailable=crops_unavailable,
                    cache_dir=folder / "cache",
                    **options,
                )
            bar.start_shard(len(dataset))
            prediction = trainer.predict(ColumnBatches(dataset), metric_key_prefix=metric_key_prefix)
            bar.end_shard()
            predicted += 1
            posts_predicted += len(records)
            if is_main:
                jsonl, record_file = shard_paths(folder, index)
                write_predictions(jsonl, dataset, prediction.predictions, config)
                record = {
                    "posts": len(records),
                    "first_id": records[0]["id"],
                    "last_id": records[-1]["id"],
                    "inputs": inputs,
                    "model": model_id,
                    "bytes": jsonl.stat().st_size,
                    "sha256": file_sha256(jsonl),
                    "loss": prediction.metrics.get(f"{metric_key_prefix}_loss"),
                    "report": image_report(dataset),
                }
                write_text_atomic(record_file, json.dumps(record, indent=1) + "\n")
                records_of.append(record)
            del dataset
            trainer.accelerator.wait_for_everyone()
            if is_main:
                shutil.rmtree(folder / "cache", ignore_errors=True)
    finally:
        bar.close()
        trainer.remove_callback(bar)
        if progress is not None:
            trainer.add_callback(progress)
    runtime = time.perf_counter() - start
    if not is_main:
        return {}
    metrics = _join_shards(folder, records_of, predictions_file, trainer, scan)
    metrics.update(
        runtime=round(runtime, 4),
        samples_per_second=round(posts_predicted / runtime, 3) if runtime > 0 else 0.0,
        shards_predicted=predicted,
        shards_reused=len(records_of) - predicted,
    )
    shutil.rmtree(folder, ignore_errors=True)
    return {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}


def _join_shards(
    folder: Path, records: list[dict[str, Any]], predictions_file: Path, trainer: Trainer, scan: CorpusScan
) -> dict[str, Any]:
    """Writes the shards' predictions, in order, into `predictions_file` (atomically), and returns the split's image
    counts with, for labelled posts, the scores over every post and the mean loss."""
    config = trainer.model.config
    label2id = {label: index for index, label in config.id2label.items()}
    predicted, gold = [], []
    with atomic_writer(predictions_file) as output:
        for index in range(len(records)):
            with open(shard_paths(folder, index)[0], encoding="utf-8") as shard:
                for line in shard:
                    output.write(line)
                    if scan.labelled:
                        row = json.loads(line)
                        predicted.append(label2id[row["predicted"]])
                        gold.append(label2id[row["gold"]])
    metrics: dict[str, Any] = {}
    for record in records:
        for name, value in record["report"].items():
            metrics[name] = metrics.get(name, 0) + value
    if scan.labelled:
        metrics["loss"] = sum(record["loss"] * record["posts"] for record in records) / scan.posts
        metrics.update(trainer.compute_metrics((np.asarray(predicted), np.asarray(gold))))
    return metrics
