"""CPU cost per post of the object crops `--object_detector` makes: a DETR with the architecture of
facebook/detr-resnet-50 (ResNet-50, 6 + 6 layers, 100 queries; random weights, built from its config, so the same work
without a download) and the tests' tiny DETR, on a 640x480 photo decoded as the processor decodes a post's image.

    python benchmarks/detector_cost.py [--threads 2] [--posts 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image

from processing.object_detection import ObjectDetector
from sample_inputs.detectors import detr_resnet50, save_tiny_detr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--posts", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    with tempfile.TemporaryDirectory() as folder:
        for name, build in (("tiny DETR", lambda path: save_tiny_detr(path, 0)), ("DETR-ResNet-50", detr_resnet50)):
            detector = ObjectDetector.from_pretrained(build(Path(folder) / name))
            detector.crops([photo], 3)  # warm-up
            for batch in (1, 8):
                start = time.perf_counter()
                for _ in range(0, args.posts, batch):
                    detector.crops([photo] * batch, 3)
                seconds = (time.perf_counter() - start) / args.posts
                print(f"{name}, batch {batch}: {seconds * 1000:.1f} ms a post ({args.threads} threads)")


if __name__ == "__main__":
    main()
