# Copyright 2025 The hvformer authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Object crops made by an object detector, for posts that bring none of their own.

Any `AutoModelForObjectDetection` checkpoint (DETR, YOLOS, RT-DETR, ...; a Hub id or a local folder) with its image
processor: the `num_object_crops` highest-scoring distinct boxes of an image, as its `post_process_object_detection`
gives them, are cut out of the image. The same code makes the crops of the training cache and those of a served post
(`HVFormerProcessor.__call__` given no crops), from the image decoded the same way, so that a served model sees the
inputs it was trained on.

Where the detector lives, as `processor_config.json` records it (`object_detector`):

- `DETECTOR_FOLDER` (`"object_detector"`): the whole detector (config, image processor, weights) is in that sub-folder
  of the processor's folder or Hub repository. A detector trained with from a local folder is saved this way, since a
  local path does not travel to another machine;
- a Hub repository id: the weights come from that repository, the config and the image processor from the
  sub-folder (the files the model was trained with), or from the repository when the sub-folder is absent.

Bounded work: the detector reads the image as decoded for the vision encoder (see `image_loading`), resized by its own
image processor; that input counts against the post's pixel budget (`max_pixels`) together with the image.

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import reprlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForObjectDetection

# Imported from its module: transformers 5.17 exports a placeholder `AutoImageProcessor` when torchvision is missing.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.utils import cached_file

from .image_loading import MAX_ASPECT_RATIO

DETECTOR_FOLDER = "object_detector"
"""The sub-folder of a saved processor that holds its object detector's files."""
DETECTOR_BATCH_SIZE = 8
"""Images the detector reads in one forward pass (images of the same input size only, so that no padding changes a
box: a post gets the same crops alone as in a batch)."""
MIN_BOX_SIDE = 1.0
"""The smallest side (pixels) of a box that is cropped; a thinner box, or one longer than `MAX_ASPECT_RATIO` times
its width (which the processor refuses as an image), is skipped."""

_LOADED: dict[tuple[str, str | None], ObjectDetector] = {}
"""Detectors loaded by [`processor_detector`], by where they were loaded from: processors of one model share one."""


class ObjectDetector:
    """An object detector and its image processor, cutting the top-scoring boxes out of images.

    Args:
        model: An `AutoModelForObjectDetection` model (put in eval mode here).
        image_processor: Its image processor, which has `post_process_object_detection`.
        batch_size (`int`, *optional*, defaults to `DETECTOR_BATCH_SIZE`): images per forward pass.
    """

    def __init__(self, model: Any, image_processor: Any, batch_size: int = DETECTOR_BATCH_SIZE):
        if not hasattr(image_processor, "post_process_object_detection"):
            raise ValueError(
                f"The object detector's image processor {type(image_processor).__name__} has no "
                "`post_process_object_detection`: pass an AutoModelForObjectDetection checkpoint."
            )
        self.model = model.eval()
        self.image_processor = image_processor
        self.batch_size = batch_size
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        files_from: tuple[str, dict[str, Any]] | None = None,
        **hub_kwargs: Any,
    ) -> ObjectDetector:
        """Loads a detector: the weights from `name_or_path` (a Hub id or a folder; `hub_kwargs` go to the download,
        `subfolder` included), the config and the image processor from `files_from` (a Hub id or folder and its
        download arguments) or from `name_or_path` too."""
        files_path, files_kwargs = files_from or (name_or_path, hub_kwargs)
        try:
            config = AutoConfig.from_pretrained(files_path, **files_kwargs)
            image_processor = AutoImageProcessor.from_pretrained(files_path, **files_kwargs)
            model = AutoModelForObjectDetection.from_pretrained(name_or_path, config=config, **hub_kwargs)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"Cannot load the object detector {os.fspath(name_or_path)!r}: {str(error)[:300]}"
            ) from error
        return cls(model, image_processor)

    def fingerprint(self) -> dict[str, Any]:
        """What the crops depend on: the model's class and config, the image processor's settings and a digest of the
        weights (computed once); a cache of crops keyed with it never serves another detector's crops."""
        if self._fingerprint is None:
            config = self.model.config.to_dict()
            config.pop("_name_or_path", None)
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode() + b"\0" + str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = {
                "model": type(self.model).__name__,
                "config": config,
                "image_processor": self.image_processor.to_dict(),
                "weights": digest.hexdigest(),
            }
        return self._fingerprint

    def boxes(
        self,
        images: Sequence[Image.Image],
        num_boxes: int,
        max_pixels: int | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[list[tuple[int, int, int, int]]]:
        """The `num_boxes` highest-scoring distinct boxes of each image, `(left, top, right, bottom)` in whole pixels
        inside it, best first (equal scores: by box).

        Each image is resized by the detector's image processor alone (no padding), and the images of one input size
        are read together. An image whose pixels and the detector's input hold more than `max_pixels` together is
        refused before the detector runs, naming it by its `labels` entry."""
        batches: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
        for index, image in enumerate(images):
            pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
            held = image.width * image.height + pixels.shape[-2] * pixels.shape[-1]
            if max_pixels is not None and held > max_pixels:
                where = f"{labels[index]}: " if labels else ""
                raise ValueError(
                    f"{where}the image ({image.width}x{image.height}) and the object detector's input "
                    f"({pixels.shape[-1]}x{pixels.shape[-2]}) hold {held:,} pixels together, more than "
                    f"max_image_pixels={max_pixels:,}."
                )
            batches.setdefault(tuple(pixels.shape[1:]), []).append((index, pixels))
        found: list[list[tuple[int, int, int, int]]] = [[] for _ in images]
        parameter = next(self.model.parameters())
        for members in batches.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                batch = torch.cat([pixels for _, pixels in chunk]).to(parameter.device, parameter.dtype)
                with torch.inference_mode():
                    outputs = self.model(pixel_values=batch)
                sizes = [(images[index].height, images[index].width) for index, _ in chunk]
                detections = self.image_processor.post_process_object_detection(
                    outputs, threshold=0.0, target_sizes=sizes
                )
                for (index, _), detection in zip(chunk, detections, strict=True):
                    found[index] = top_boxes(
                        detection["scores"].tolist(), detection["boxes"].tolist(), images[index].size, num_boxes
                    )
        return found

    def crops(
        self,
        images: Sequence[Image.Image],
        num_boxes: int,
        max_pixels: int | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[list[Image.Image]]:
        """The images cut at their [`boxes`]."""
        boxes = self.boxes(images, num_boxes, max_pixels, labels)
        return [[image.crop(box) for box in image_boxes] for image, image_boxes in zip(images, boxes, strict=True)]

    def save_pretrained(self, directory: str | os.PathLike, with_weights: bool) -> None:
        """Writes the config and the image processor's files into `directory`, and the weights `with_weights`."""
        if with_weights:
            self.model.save_pretrained(directory)
        else:
            self.model.config.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)


def top_boxes(
    scores: Sequence[float], boxes: Sequence[Sequence[float]], size: tuple[int, int], num_boxes: int
) -> list[tuple[int, int, int, int]]:
    """The `num_boxes` best distinct boxes of one image of `size` `(width, height)`, from its detections (`boxes` as
    `(x0, y0, x1, y1)` pixels): each clamped to the image and widened to whole pixels, the degenerate ones skipped (a
    non-finite score or corner, a side under `MIN_BOX_SIDE` inside the image, a side more than `MAX_ASPECT_RATIO`
    times the other); sorted by score, best first, then by box."""
    width, height = size
    candidates = []
    for score, box in zip(scores, boxes, strict=True):
        if not (math.isfinite(score) and all(math.isfinite(value) for value in box)):
            continue
        x0, x1 = (min(max(value, 0.0), float(width)) for value in (box[0], box[2]))
        y0, y1 = (min(max(value, 0.0), float(height)) for value in (box[1], box[3]))
        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            continue
        pixel_box = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
        sides = (pixel_box[2] - pixel_box[0], pixel_box[3] - pixel_box[1])
        if max(sides) > MAX_ASPECT_RATIO * min(sides):
            continue
        candidates.append((-score, pixel_box))
    candidates.sort()
    chosen: list[tuple[int, int, int, int]] = []
    for _, pixel_box in candidates:
        if len(chosen) == num_boxes:
            break
        if pixel_box not in chosen:
            chosen.append(pixel_box)
    return chosen


def _has_detector_folder(root: str, hub_kwargs: dict[str, Any]) -> bool:
    """Whether the folder or Hub repository `root` holds a `DETECTOR_FOLDER` with a config."""
    kwargs = {key: value for key, value in hub_kwargs.items() if key != "subfolder"}
    prefix = hub_kwargs.get("subfolder")
    subfolder = f"{prefix}/{DETECTOR_FOLDER}" if prefix else DETECTOR_FOLDER
    found = cached_file(
        root, "config.json", subfolder=subfolder, _raise_exceptions_for_missing_entries=False, **kwargs
    )
    return found is not None


def _folder_state(path: str) -> str:
    """Sizes and times of the files of a local folder (empty for a Hub id): a detector rewritten in place is loaded
    again."""
    if not os.path.isdir(path):
        return ""
    entries = []
    for folder, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            stat = os.stat(os.path.join(folder, name))
            entries.append(f"{os.path.relpath(os.path.join(folder, name), path)}:{stat.st_size}:{stat.st_mtime_ns}")
    return "\n".join(entries)


def processor_detector(processor: Any) -> ObjectDetector | None:
    """The detector a processor records (`object_detector`; `None` for none), loaded once per location: from the
    processor's own folder or repository (`object_detector_root`, set by `from_pretrained`) as the module docstring
    describes, or from the Hub id or folder it names."""
    reference = getattr(processor, "object_detector", None)
    if reference is None:
        return None
    root, hub_kwargs = getattr(processor, "object_detector_root", None) or (None, {})
    files = None
    if root is not None and _has_detector_folder(root, hub_kwargs):
        prefix = hub_kwargs.get("subfolder")
        files = (root, f"{prefix}/{DETECTOR_FOLDER}" if prefix else DETECTOR_FOLDER)
    elif reference == DETECTOR_FOLDER:
        where = f"{root!r} has no {DETECTOR_FOLDER}/ folder" if root else "the processor was not loaded from a folder"
        raise ValueError(
            f"The processor's object detector is its {DETECTOR_FOLDER}/ sub-folder, but {where}; load the processor "
            "with `from_pretrained` from the folder saved with it."
        )
    key = (os.fspath(reference), repr(files), _folder_state(files[0] if files else os.fspath(reference)))
    if key not in _LOADED:
        # The weights of a Hub repository `reference` are its own, not those of the processor's revision or sub-folder.
        weights_kwargs = {name: value for name, value in hub_kwargs.items() if name not in ("revision", "subfolder")}
        if files is None:
            _LOADED[key] = ObjectDetector.from_pretrained(reference, **weights_kwargs)
        elif reference == DETECTOR_FOLDER:
            _LOADED[key] = ObjectDetector.from_pretrained(files[0], **{**hub_kwargs, "subfolder": files[1]})
        else:
            files_from = (files[0], {**hub_kwargs, "subfolder": files[1]})
            _LOADED[key] = ObjectDetector.from_pretrained(reference, files_from, **weights_kwargs)
    return _LOADED[key]


def detector_reference(object_detector: Any) -> str | None:
    """The processor's `object_detector` argument checked: a Hub id or a folder (as a string), or `None`."""
    if object_detector is not None and not isinstance(object_detector, (str, os.PathLike)):
        raise ValueError(f"`object_detector` must be a Hub id or a folder, got {reprlib.repr(object_detector)}.")
    return None if object_detector is None else os.fspath(object_detector)


def detect_missing_crops(
    processor: Any, images: Any, object_crops: Any, is_batched: bool, max_pixels: int | None
) -> Any:
    """The object crops of each sample (a list per sample of a batch, or the single sample's list): its own when it
    brings any, else (with a detector) the crops the processor's detector cuts out of its image, decoded as the
    image processor decodes it (as the training cache is made). A sample whose image is `None` is left to the
    image processor's own error."""
    detector = processor_detector(processor)
    if detector is None or not processor.num_object_crops:
        return object_crops
    if not is_batched:
        images, object_crops = [images], [object_crops]
    elif object_crops is None:
        object_crops = [None] * len(images)
    wanted = [index for index, crops in enumerate(object_crops) if not crops and images[index] is not None]
    labels = [f"Sample {index}" if is_batched else "`image`" for index in wanted]
    decoded = []
    for index, label in zip(wanted, labels, strict=True):
        try:
            decoded.append(processor.image_processor.load_image(images[index], max_pixels, reduce_for="image"))
        except ValueError as error:
            raise ValueError(f"{label}: {error}" if is_batched else str(error)) from error
    found = detector.crops(decoded, processor.num_object_crops, max_pixels, labels)
    crops = list(object_crops)
    for index, sample_crops in zip(wanted, found, strict=True):
        crops[index] = sample_crops
    return crops if is_batched else crops[0]


@contextlib.contextmanager
def saved_detector(processor: Any, save_directory: str | os.PathLike) -> Iterator[None]:
    """Writes the processor's detector into `save_directory/DETECTOR_FOLDER` (atomically: a finished folder replaces
    any older one) and, while the block saves the processor, records where the saved detector lives.

    The config and the image processor are always written. The weights too when they would not travel otherwise: a
    detector read from a local folder (or from the processor's own sub-folder), or any detector when the processor's
    `save_object_detector_weights` is true; the processor then records `DETECTOR_FOLDER`, else the Hub id."""
    detector = processor_detector(processor)
    if detector is None:
        yield
        return
    reference = os.fspath(processor.object_detector)
    with_weights = (
        reference == DETECTOR_FOLDER
        or os.path.isdir(reference)
        or bool(getattr(processor, "save_object_detector_weights", False))
    )
    os.makedirs(save_directory, exist_ok=True)
    target = os.path.join(save_directory, DETECTOR_FOLDER)
    partial = tempfile.mkdtemp(prefix=f".{DETECTOR_FOLDER}-", dir=save_directory)
    try:
        detector.save_pretrained(partial, with_weights)
        if os.path.isdir(target):
            old = tempfile.mkdtemp(prefix=f".{DETECTOR_FOLDER}-old-", dir=save_directory)
            os.replace(target, os.path.join(old, DETECTOR_FOLDER))
            os.replace(partial, target)
            shutil.rmtree(old)
        else:
            os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    processor.object_detector = DETECTOR_FOLDER if with_weights else reference
    try:
        yield
    finally:
        processor.object_detector = reference
