"""Predictions for a corpus: posts per second of `run_mre.py --do_predict --test_file POSTS` with a trained model, on
a generated post file (a 640x480 JPEG a post, and in the crops variant three 320x240 JPEG object crops), everything
included: reading and validating the rows, decoding and resizing the images, caching, the model, writing the shards
and `predictions.jsonl`.

The model has the built-in tiny encoders (a random 2-layer BERT and a 32-px ViT, no download), or, with `--model`, any
trained HVFormer folder. Each variant runs `run_mre.py` in a new process; `posts_per_second` is the prediction's own
rate (`test_samples_per_second` of `all_results.json`: posts over the time from the first row read to the file
written), `wall_seconds` the process's, start-up and model loading included.

Variants ([`VARIANTS`]): `no crops` (posts without object crops: the model sees none), `crops` (each post with its
crops) and `detector` (posts without crops, predicted by the model saved with an object detector, as
`run_mre.py --object_detector` saves it: the detector cuts each post's crops while the test split is cached, so its
rate includes the detector). The detector is a DETR with facebook/detr-resnet-50's architecture (random weights: the
same work, not the same boxes; no download), the tests' tiny DETR under `--tiny`. DETR-ResNet-50 takes seconds a post
on a CPU, so the detector variant predicts its own, smaller number of posts (`--detector_posts`). With `--model`, a
trained folder used as it was saved, the detector variant is left out.

    python benchmarks/prediction.py --output prediction.json [--posts 1024] [--detector_posts 32] [--model DIR]
    python benchmarks/prediction.py --tiny           # CPU smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json
import tempfile
from dataclasses import dataclass
from typing import Any

import run_mre
from benchmarks.common import argument_parser, environment, prepare, report, run_script
from sample_inputs.detectors import detr_resnet50, save_tiny_detr
from sample_inputs.requests import photo
from training.hub import export_model_folder

POSTS, TINY_POSTS = 1024, 16
"""Posts of the generated file (`--posts` overrides)."""
DETECTOR_POSTS = 32
"""Posts of the detector variant's file (`--detector_posts` overrides; `TINY_POSTS` under `--tiny`)."""
EVAL_BATCH_SIZE = 64
"""`--per_device_eval_batch_size` of the runs (run_mre.py's default)."""
IMAGE_SIZE, CROP_SIZE, CROPS = (640, 480), (320, 240), 3
RELATIONS = ["no_relation", "person_link"]
COLUMNS = ["variant", "posts", "posts_per_second", "seconds", "wall_seconds"]


def write_posts(folder: Path, count: int, with_crops: bool) -> Path:
    """`folder/posts.jsonl`: `count` unlabelled posts, each with its own image file (and crop files), so that no
    decoding is shared between posts."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    image, crop = photo(IMAGE_SIZE, "JPEG"), photo(CROP_SIZE, "JPEG")
    lines = []
    for index in range(count):
        post = {
            "text": f"Corra Vane met Tamsin Holt at Harbor Square, post {index}",
            "subject": "Corra Vane",
            "object": "Tamsin Holt",
            "image": f"images/{index}.jpg",
        }
        (folder / post["image"]).write_bytes(image)
        if with_crops:
            post["object_crops"] = [f"images/{index}-crop{slot}.jpg" for slot in range(CROPS)]
            for path in post["object_crops"]:
                (folder / path).write_bytes(crop)
        lines.append(json.dumps(post) + "\n")
    path = folder / "posts.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Variant:
    """What a variant predicts: posts with their own crops or without, by the model saved with a detector or
    without."""

    with_crops: bool
    detector: bool


VARIANTS: dict[str, Variant] = {
    "no crops": Variant(with_crops=False, detector=False),
    "crops": Variant(with_crops=True, detector=False),
    "detector": Variant(with_crops=False, detector=True),
}


def save_tiny_model(folder: Path, object_detector: Path | None = None) -> Path:
    """An HVFormer with the built-in tiny encoders (untrained: the rate does not depend on the weights) saved as a
    run saves its model folder, with `object_detector` (a detector folder, copied into the model's) when given."""
    words = "Corra Vane met Tamsin Holt at Harbor Square, post".split()
    model_args = run_mre.ModelArguments(object_detector=None if object_detector is None else str(object_detector))
    model, processor = run_mre.build_model_and_processor(
        model_args, RELATIONS, lambda: words, folder / "work", none_label=RELATIONS[0]
    )
    return export_model_folder(model, processor, folder / "model", card="A benchmark's untrained model.\n")


def predict(model: Path, posts: Path, output_dir: Path, tiny: bool) -> tuple[float, dict]:
    """Runs the prediction in a new process (one CPU thread when `tiny`); returns its wall time and
    `all_results.json`."""
    arguments = [
        *("--model_name_or_path", str(model), "--do_train", "false", "--do_eval", "false"),
        *("--do_predict", "true", "--test_file", str(posts), "--cache_dir", str(output_dir) + "-cache"),
        *("--disable_tqdm", "true", "--per_device_eval_batch_size", str(EVAL_BATCH_SIZE)),
    ]
    return run_script(arguments, output_dir, tiny)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=None, help=f"Posts of the generated file (default {POSTS}).")
    parser.add_argument(
        "--detector_posts",
        type=int,
        default=None,
        help=f"Posts of the detector variant's file (default {DETECTOR_POSTS}; {TINY_POSTS} under --tiny).",
    )
    parser.add_argument("--model", type=Path, default=None, help="A trained HVFormer folder (default: tiny, built).")
    parser.add_argument("--workdir", type=Path, default=None, help="Folder for posts and runs (default: a temp one).")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    count = args.posts or (TINY_POSTS if args.tiny else POSTS)
    detector_count = args.detector_posts or (TINY_POSTS if args.tiny else DETECTOR_POSTS)
    detector_name = "tiny DETR" if args.tiny else "DETR-ResNet-50 architecture, random weights"
    device = prepare(args)

    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        if args.model is not None:
            models = {False: args.model}
        else:
            build_detector = (lambda path: save_tiny_detr(path, seed=0)) if args.tiny else detr_resnet50
            detector = build_detector(workdir / "detector")
            models = {False: save_tiny_model(workdir), True: save_tiny_model(workdir / "with-detector", detector)}
        for index, (name, variant) in enumerate(VARIANTS.items()):
            if variant.detector not in models:
                continue
            posts = write_posts(
                workdir / f"posts-{index}", detector_count if variant.detector else count, variant.with_crops
            )
            wall, results = predict(models[variant.detector], posts, workdir / f"run-{index}", args.tiny)
            rows.append(
                {
                    "variant": name,
                    "posts": results["test_examples"],
                    "posts_per_second": results["test_samples_per_second"],
                    "seconds": results["test_runtime"],
                    "wall_seconds": wall,
                    "crops_loaded": results["test_crops_loaded"],
                    "detector_crops": results["test_detector_crops"],
                }
            )
    figures = {
        "benchmark": "prediction",
        "environment": environment(device),
        "settings": {
            "posts": count,
            "detector_posts": detector_count if args.model is None else None,
            "detector": detector_name if args.model is None else None,
            "eval_batch_size": EVAL_BATCH_SIZE,
            "model": str(args.model or "tiny"),
            "tiny": args.tiny,
        },
        "rows": rows,
    }
    report(figures, rows, COLUMNS, args.output)
    if args.model is None:
        print(f"detector variant: {detector_count} posts (--detector_posts), detector: {detector_name}")
    else:
        print("detector variant left out: --model is used as it was saved")
    return figures


if __name__ == "__main__":
    main()
