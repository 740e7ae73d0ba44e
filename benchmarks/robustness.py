"""Hostile requests against the Inference Endpoints handler of a saved model: what each one gets, the peak
memory it adds to the warmed handler and its time (`docs/robustness.md`).

The handler is loaded from the model folder's own `handler.py`, as Inference Endpoints do, in this (fresh) process,
answers a valid request twice to warm up, then answers the requests one at a time, each `REPEATS` times: the table
gives the largest peak memory growth and the median time of the repeats. Before each request the process's
peak resident memory (VmHWM) is reset to its current resident memory (VmRSS) through `/proc/self/clear_refs`, so
that VmHWM after the request minus VmRSS before it is the request's peak memory growth; large allocations are
`mmap`ed (`mallopt`) and the C heap is trimmed between requests, so that memory one request freed is not reused
unseen by the next. Linux only.

    python run_mre.py && python benchmarks/robustness.py                 # the main job's model
    python benchmarks/robustness.py --model DIR --output robustness.json [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import ctypes
import gc
import importlib.util
import json
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import common
from sample_inputs.requests import requests
from training.hub import MODEL_FOLDER, SAMPLE_RUN_DIR

DEFAULT_MODEL = common.PROJECT / SAMPLE_RUN_DIR / MODEL_FOLDER
REMOTE_CODE = {
    "handler.py": "modeling_hvformer/handler.py",
    "pipeline_hvformer.py": "modeling_hvformer/pipeline_hvformer.py",
    "processing_hvformer.py": "processing/processing_hvformer.py",
    "entity_marking.py": "processing/entity_marking.py",
    "entity_search.py": "processing/entity_search.py",
    "image_processing_hvformer.py": "processing/image_processing_hvformer.py",
    "image_loading.py": "processing/image_loading.py",
    "image_files.py": "processing/image_files.py",
    "sample_errors.py": "processing/sample_errors.py",
    "object_detection.py": "processing/object_detection.py",
}
"""The model folder's copies of this repository's serving code, which must be the same files."""
REPEATS = 3
COLUMNS = ["request", "request_kb", "answer", "peak_rss_growth_mb", "median_seconds"]
_M_MMAP_THRESHOLD = -3


def load_handler(folder: Path) -> Any:
    """`EndpointHandler(folder)` from the folder's own `handler.py`, imported as Inference Endpoints import it."""
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("handler", folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(folder))


def check_remote_code(folder: Path) -> None:
    """Refuses a model folder whose serving code is not this repository's (saved by an older commit)."""
    stale = [
        name
        for name, source in REMOTE_CODE.items()
        if not (folder / name).is_file() or (folder / name).read_bytes() != (common.PROJECT / source).read_bytes()
    ]
    if stale:
        sys.exit(
            f"{folder}: {', '.join(stale)} are missing or differ from this repository's code; save the model again "
            "(python run_mre.py --overwrite_output_dir) to measure this commit."
        )


def _status_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1))


def measured(call: Callable[[], Any], libc: Any) -> tuple[Any, float, float]:
    """`call()`, its peak resident memory growth (MB) and its wall time (s)."""
    gc.collect()
    if libc is not None:
        libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    answer = call()
    seconds = time.perf_counter() - start
    return answer, (_status_kib("VmHWM") - before) / 1024, seconds


def summary(answer: Any) -> str:
    """What the client got: the error message, or the relations answered."""
    if isinstance(answer, dict) and "error" in answer:
        return "error: " + answer["error"]
    posts = answer if answer and isinstance(answer[0], list) else [answer]
    relations = "; ".join(
        ", ".join(f"{item['label']} {item['score']:.2f}" for item in relations) for relations in posts
    )
    return f"answered: {relations}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"model folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--output", type=Path, default=None, help="Write the figures to this JSON file.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not (args.model / "handler.py").is_file():
        parser.error(f"no model folder at {args.model}: train one with `python run_mre.py`, or pass --model")
    check_remote_code(args.model)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except OSError:
        libc = None
    cases = requests(json.loads((args.model / "config.json").read_text())["num_object_crops"])
    handler = load_handler(args.model)
    for _ in range(2):
        handler(cases["valid post, 64x48 PNG"])
    rows = []
    for name, request in cases.items():
        runs = [measured(lambda request=request: handler(request), libc) for _ in range(REPEATS)]
        answers = {json.dumps(answer) for answer, _, _ in runs}
        if len(answers) != 1:
            sys.exit(f"{name}: the handler's answers differ between repeats: {answers}")
        rows.append(
            {
                "request": name,
                "request_kb": len(json.dumps(request)) / 1024,
                "answer": summary(runs[0][0]),
                "peak_rss_growth_mb": max(growth for _, growth, _ in runs),
                "median_seconds": statistics.median(seconds for _, _, seconds in runs),
            }
        )
    figures = {
        "environment": common.environment(torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "model": str(args.model),
        "rows": rows,
    }
    common.report(figures, rows, COLUMNS, args.output)
    return figures


if __name__ == "__main__":
    main()
