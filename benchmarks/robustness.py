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
import base64
import ctypes
import gc
import importlib.util
import io
import json
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from benchmarks import common
from benchmarks import hostile_images as hostile
from benchmarks.hostile_images import blank_png
from training.hub import MODEL_FOLDER, SAMPLE_RUN_DIR

DEFAULT_MODEL = common.PROJECT / SAMPLE_RUN_DIR / MODEL_FOLDER
REMOTE_CODE = {
    "handler.py": "modeling_hvformer/handler.py",
    "pipeline_hvformer.py": "modeling_hvformer/pipeline_hvformer.py",
    "processing_hvformer.py": "processing/processing_hvformer.py",
    "entity_marking.py": "processing/entity_marking.py",
    "entity_search.py": "processing/entity_search.py",
    "image_loading.py": "processing/image_loading.py",
    "image_files.py": "processing/image_files.py",
    "object_detection.py": "processing/object_detection.py",
}
"""The model folder's copies of this repository's serving code, which must be the same files."""
BOMB_SIDE = 9000
"""Side of the issue's bomb: a 9000 x 9000 blank 1-bit PNG, 14 KB as base64."""
LARGE_SIDE = 4938
"""Side of the largest square image within the default pixel budget (4938 x 4938 = 24,383,844 pixels)."""
STRIP = (1, 2 * 4032 * 3024)
"""A strip of as many pixels as the default pixel budget."""
PHOTO_SIZE = (4032, 3024)
"""A 12-megapixel phone photo."""
TEXT = "Quillon met Alden in Paris"
REPEATS = 3
COLUMNS = ["request", "request_kb", "answer", "peak_rss_growth_mb", "median_seconds"]
_M_MMAP_THRESHOLD = -3


def photo(size: tuple[int, int], image_format: str) -> bytes:
    """A smooth picture (gradients and a disc) of `size`, encoded as `image_format` (JPEG quality 90, or PNG)."""
    width, height = size
    horizontal = Image.linear_gradient("L").resize(size)
    vertical = Image.linear_gradient("L").rotate(90).resize(size)
    picture = Image.merge("RGB", (horizontal, vertical, Image.new("L", size, 128)))
    picture.paste((230, 40, 40), (width // 3, height // 3, width // 2, height // 2))
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def requests(num_object_crops: int) -> dict[str, dict[str, Any]]:
    """The requests, by name: the hostile ones (oversized, malformed or slow-to-parse fields), valid ones, and the
    hostile image files of [`hostile_images`], for a model taking `num_object_crops` crops."""
    small = Image.new("RGB", (64, 48), (90, 120, 160))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    image = encoded(buffer.getvalue())
    post = {"text": TEXT, "subject": "Alden", "object": "Paris", "image": image}
    bomb = encoded(blank_png(BOMB_SIDE, BOMB_SIDE))
    jpeg = photo(PHOTO_SIZE, "JPEG")
    crop = encoded(photo((640, 480), "JPEG"))
    return {
        "valid post, 64x48 PNG": {"inputs": post},
        f"valid: 4032x3024 JPEG photo + {num_object_crops} crops": {
            "inputs": {**post, "image": encoded(jpeg), "object_crops": [crop] * num_object_crops}
        },
        "valid: 4032x3024 PNG": {"inputs": {**post, "image": encoded(photo(PHOTO_SIZE, "PNG"))}},
        "valid: Chinese post": {
            "inputs": {"text": "奥巴马和默克尔在七国集团峰会", "subject": "奥巴马", "object": "默克尔", "image": image}
        },
        "valid: Thai post": {
            "inputs": {"text": "บารัคโอบามาเยือนปารีส", "subject": "โอบามา", "object": "ปารีส", "image": image}
        },
        "1. 9000x9000 1-bit PNG as `image` (14 KB)": {"inputs": {**post, "image": bomb}},
        f"1. {num_object_crops} such PNGs as `object_crops`": {
            "inputs": {**post, "object_crops": [bomb] * num_object_crops}
        },
        "1. 30 such PNGs as `object_crops` (0.4 MB)": {"inputs": {**post, "object_crops": [bomb] * 30}},
        "1. truncated JPEG": {"inputs": {**post, "image": encoded(jpeg[: len(jpeg) // 2])}},
        "2. text 'a' x 200,000, subject 'a' x 100,000": {
            "inputs": {**post, "text": "a" * 200_000, "subject": "a" * 100_000, "object": "a"}
        },
        "2. text 'a' x 10,000, subject 'a' x 5,000": {
            "inputs": {**post, "text": "a" * 10_000, "subject": "a" * 5_000, "object": "a"}
        },
        "3. data URL without a comma": {"inputs": {**post, "image": "data:image/png;base64"}},
        "4. lone surrogate in the text": {"inputs": {**post, "text": "Quillon \ud800 with Alden in Paris"}},
        "5. booleans in `entity_spans`": {
            "inputs": {"text": TEXT, "entity_spans": [[False, True], [21, 26]], "image": image}
        },
        "7. batch [ok, ok, bad]": {"inputs": [post, post, {**post, "object": "Rome"}]},
        "8. bytes that are not an image": {"inputs": {**post, "image": encoded(b"plain text, not an image")}},
        "valid inputs + unknown request key": {"inputs": post, "options": {"wait_for_model": True}},
        **{name: {"inputs": {**post, "image": encoded(make())}} for name, make in hostile_images().items()},
    }


def hostile_images() -> dict[str, Callable[[], bytes]]:
    """The hostile image files as `image`, by name (each made when called): decoders doing unbounded work for small
    files, formats whose header lies or that run another program, images decoding to far more memory than they take
    (and valid ones at the bounds), corrupt files of formats Pillow reads."""
    large = (LARGE_SIDE, LARGE_SIDE)
    return {
        "progressive JPEG 6000x4000 + 20,000 empty scans": lambda: hostile.progressive_jpeg((6000, 4000), 20_000),
        "valid: progressive JPEG 6000x4000 of 100 scans": lambda: hostile.progressive_jpeg((6000, 4000), 100),
        "FLI animation of 65,535 BLACK chunks": hostile.fli_black_chunks,
        "16x16 PNG, EXIF directory of 65,535 entries pointing at 1 MB": hostile.png_with_exif_entries,
        "16x16 JPEG, EXIF directory of 2,700 entries pointing at 32 KB": hostile.jpeg_with_exif_entries,
        "16x16 PNG, 70 zTXt chunks inflating to 1 MB each": hostile.png_with_compressed_texts,
        "8x8 GIF with 2 MB of comments": hostile.gif_with_comments,
        "BLP declaring 1x1, a 13000x13000 JPEG inside": hostile.blp_declaring_1x1,
        "ICO declaring 16x16, a 9459x9459 PNG inside": hostile.ico_declaring_16,
        "ICNS declaring 128x128, a 13000x13000 PNG inside": hostile.icns_declaring_128,
        "EPS (PostScript, for Ghostscript)": hostile.eps,
        "1 x 24,385,536 palette PNG with transparency": lambda: hostile.palette_png_with_transparency(*STRIP),
        "1 x 24,385,536 16-bit PNG": lambda: hostile.png(*STRIP, bit_depth=16, fill=0x80),
        "4938x4938 WebP (a 1x1 bitstream)": lambda: hostile.webp_declaring(*large),
        "valid: 4938x4938 16-bit PNG": lambda: hostile.png(*large, bit_depth=16, fill=0x80),
        "valid: 4938x4938 RGBA PNG": lambda: hostile.png(*large, bit_depth=8, colour_type=6, fill=0x80),
        "valid: 4938x4938 GIF": lambda: hostile.gif(*large),
        **{f"corrupt {kind}": (lambda data=data: data) for kind, data in hostile.CORRUPT.items()},
    }


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
        if (folder / name).read_bytes() != (common.PROJECT / source).read_bytes()
    ]
    if stale:
        sys.exit(
            f"{folder}: {', '.join(stale)} differ from this repository's code; save the model again "
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
