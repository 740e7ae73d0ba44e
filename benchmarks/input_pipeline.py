"""The host side of training: how many samples/s one dataloader worker feeds, and the bytes per sample handed to the
device, at the paper's sizes (CLIP 224-px image processor, 3 object crops of 128 px, at most 80 tokens, batch 32).

The input is the cached train split (`load_mnre`) of a generated MNRE-shaped folder with real JPEGs and object crops
(`tests/mnre_folder.py`, as `end_to_end.py`), read as `run_mre.py` hands it to `Trainer`: `ColumnBatches` over the
split and `run_mre.data_collator`. Measured on one CPU thread (`torch.set_num_threads(1)`):

- host feed: a shuffled `DataLoader` with one worker process, timed from its first batch to its last (worker
  start-up left out); the median of `--repeats` epochs. Beside it, the worker's CPU time (`getrusage` of the reaped
  worker, start-up included) as samples per CPU second: what the worker feeds when it has a core to itself, the
  figure to read on a machine shared with other jobs, where the wall-clock rate is what the scheduler leaves;
- its two parts in the main process: the fetch (`ColumnBatches.__getitems__`) and the collator;
- bytes per sample: the bytes of every tensor of a collated batch, over the epoch, divided by its samples.

No model and no device are involved: the figures are those of the machine's CPU.

    python benchmarks/input_pipeline.py --output input_pipeline.json [--train-size 1024] [--repeats 3]
    python benchmarks/input_pipeline.py --tiny       # CPU smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from benchmarks.common import argument_parser, environment, report
from benchmarks.end_to_end import load_mnre_folder_module
from modeling_hvformer import MNRE_RELATIONS
from mre_data.collator import ColumnBatches
from mre_data.mnre_dataset import load_mnre
from processing.processing_hvformer import HVFormerProcessor
from run_mre import data_collator

PAPER = {"train": 1024, "batch_size": 32, "max_length": 80, "num_object_crops": 3, "object_image_size": 128}
TINY = {"train": 16, "batch_size": 4, "max_length": 80, "num_object_crops": 3, "object_image_size": 128}
WORKERS = 1
COLUMNS = ["what", "samples_per_second", "megabytes_per_sample"]


def build_split(workdir: Path, train_size: int, settings: dict[str, Any]) -> tuple[Any, HVFormerProcessor]:
    """The cached train split of a generated MNRE-shaped folder and the processor that made it (tiny WordPiece
    tokenizer of the folder's words, CLIP 224-px image processor)."""
    mnre_folder = load_mnre_folder_module()
    data_dir = mnre_folder.write_mnre_folder(workdir / "mnre", sizes={"train": train_size})
    text_dir, vision_dir = mnre_folder.save_tiny_encoders(workdir / "encoders", data_dir)
    processor = HVFormerProcessor.from_text_vision_pretrained(
        str(text_dir),
        str(vision_dir),
        max_length=settings["max_length"],
        num_object_crops=settings["num_object_crops"],
        object_image_size=settings["object_image_size"],
        relation_labels=list(MNRE_RELATIONS),
    )
    train = load_mnre(
        data_dir, processor, splits=["train"], cache_dir=workdir / "cache", num_proc=min(4, os.cpu_count() or 1)
    )["train"]
    return train, processor


def batch_bytes(batch: dict[str, torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in batch.values())


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loader_epoch(loader: torch.utils.data.DataLoader) -> tuple[float, float, int, int]:
    """One pass: samples/s from the first batch to the last, samples per CPU second of the workers (reaped when the
    pass ends), the bytes and the samples of all batches."""
    total_bytes = samples = timed_samples = 0
    start, cpu_start = None, children_cpu_seconds()
    for batch in loader:
        size = len(batch["labels"])
        total_bytes, samples = total_bytes + batch_bytes(batch), samples + size
        if start is None:
            start = time.perf_counter()
        else:
            timed_samples += size
    rate = timed_samples / (time.perf_counter() - start)
    return rate, samples / (children_cpu_seconds() - cpu_start), total_bytes, samples


def rate(function: Callable[[Any], Any], inputs: Iterable[Any], samples: int) -> float:
    """Samples/s of `function` over `inputs`."""
    start = time.perf_counter()
    for item in inputs:
        function(item)
    return samples / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=None, help="Generated train posts (default 1024).")
    parser.add_argument("--repeats", type=int, default=3, help="Epochs through the DataLoader (median reported).")
    parser.add_argument("--workdir", type=Path, default=None, help="Folder for the data (default: a temp one).")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = dict(TINY if args.tiny else PAPER, workers=WORKERS, threads=1, repeats=args.repeats, tiny=args.tiny)
    settings["train"] = args.train_size or settings["train"]
    torch.set_num_threads(1)
    device = torch.device("cpu")

    with tempfile.TemporaryDirectory() as temporary:
        train, processor = build_split(args.workdir or Path(temporary), settings["train"], settings)
        dataset, collator = ColumnBatches(train), data_collator(processor)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=settings["batch_size"], shuffle=True, num_workers=WORKERS, collate_fn=collator
        )
        epochs = [loader_epoch(loader) for _ in range(args.repeats)]
        feed = statistics.median(epoch[0] for epoch in epochs)
        feed_per_cpu_second = statistics.median(epoch[1] for epoch in epochs)
        _, _, total_bytes, samples = epochs[0]

        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        size = settings["batch_size"]
        indices = [order[start : start + size] for start in range(0, len(order), size)]
        fetched = [dataset.__getitems__(batch) for batch in indices]
        fetch = rate(dataset.__getitems__, indices, len(order))
        collate = rate(collator, fetched, len(order))
        example = collator(fetched[0])

    settings["pixel_dtype"] = str(example["pixel_values"].dtype)
    rows = [
        {"what": "host feed, one worker", "samples_per_second": feed, "per_epoch": [epoch[0] for epoch in epochs]},
        {"what": "host feed, one worker, per CPU second", "samples_per_second": feed_per_cpu_second},
        {"what": "bytes to the device per sample", "megabytes_per_sample": total_bytes / samples / 1e6},
        {"what": "fetch alone (main process)", "samples_per_second": fetch},
        {"what": "collator alone (main process)", "samples_per_second": collate},
    ]
    figures = {"benchmark": "input_pipeline", "environment": environment(device), "settings": settings, "rows": rows}
    report(figures, rows, COLUMNS, args.output)
    return figures


if __name__ == "__main__":
    main()
