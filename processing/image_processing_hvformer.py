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
"""Image processor for HVFormer: a post's image and its visual-grounding object crops in, uint8 pixels out.

Travels to the Hugging Face Hub as remote code with its siblings `image_loading.py` (decoding within bounds),
`image_files.py` (the accepted formats and files) and `sample_errors.py`; none of them imports anything from the
hvformer project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_transforms import center_crop, get_resize_output_image_size
from transformers.image_utils import ChannelDimension

from .image_loading import decode_batch, load_image
from .sample_errors import batch_errors


def _size_value(size: Any, key: str) -> int | None:
    """Reads `key` from an image processor size, which is a `SizeDict` or a plain dict depending on the version."""
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


class HVFormerImageProcessor(BaseImageProcessor):
    r"""
    Constructs an HVFormer image processor: loads a post's image and its object crops within bounds, and resizes them
    to uint8 pixels the way the vision encoder's own image processor (ViT-like: a fixed size; CLIP-like: the shortest
    edge, then a center crop) resizes with Pillow. Rescaling and normalising are the model's: it reads uint8 pixels as
    `(pixels / 255 - image_mean) / image_std` on the device, with the statistics of this processor, which
    `HVFormerConfig` records.

    Every image a post brings meets the same bounds, whatever form it comes in (see `image_loading.py`): a file must be
    a JPEG, PNG, WebP or GIF (the first frame of an animation), no side may be more than `MAX_ASPECT_RATIO` times the
    other, the metadata Pillow parses while opening a file is bounded, and decoding the images of a sample may take at
    most `MAX_DECODE_BYTES`; with `max_image_pixels`, a sample's images may hold at most that many pixels together.
    A large JPEG is decoded at a reduced scale (`draft`), another large image is reduced (`reduce`), to no less than
    twice the resize target. A path, bytes, and a PIL image opened and not loaded yet (`Image.open(path)`) give the
    same pixels; a decoded PIL image or an array is taken as it is (reduced like any large image, without the
    reduced-scale decoding of a JPEG file).

    Args:
        size (`dict[str, int]`, *optional*, defaults to `{"height": 224, "width": 224}`):
            The main image's size: `{"height", "width"}`, or `{"shortest_edge"}` (the aspect ratio kept).
        resample (`int`, *optional*, defaults to `Image.Resampling.BILINEAR`):
            The Pillow resampling filter.
        do_center_crop (`bool`, *optional*, defaults to `False`):
            Whether to crop the resized main image to `crop_size` around its center.
        crop_size (`dict[str, int]`, *optional*):
            `{"height", "width"}` of the center crop.
        image_mean (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Per-channel mean with which the model normalises the pixels rescaled to [0, 1].
        image_std (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Per-channel standard deviation with which the model normalises the pixels rescaled to [0, 1].
        num_object_crops (`int`, *optional*, defaults to 3):
            Number `t` of object crop slots per sample.
        object_image_size (`int`, *optional*, defaults to 128):
            Side `s` of the square object crops, made the way the main image is (shortest edge and center crop for a
            CLIP-like `size`, a plain resize otherwise).
    """

    model_input_names = ["pixel_values", "object_pixel_values", "object_mask"]

    def __init__(
        self,
        size: dict[str, int] | None = None,
        resample: int = Image.Resampling.BILINEAR,
        do_center_crop: bool = False,
        crop_size: dict[str, int] | None = None,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        num_object_crops: int = 3,
        object_image_size: int = 128,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        size = dict(size) if size is not None else {"height": 224, "width": 224}
        if not (set(size) == {"shortest_edge"} or set(size) == {"height", "width"}):
            raise ValueError(f"`size` must have the keys 'height' and 'width', or 'shortest_edge', got {size}.")
        if do_center_crop and (crop_size is None or set(crop_size) != {"height", "width"}):
            raise ValueError(f"`crop_size` must have the keys 'height' and 'width', got {crop_size}.")
        for name, value, minimum in (
            ("num_object_crops", num_object_crops, 0),
            ("object_image_size", object_image_size, 1),
            *((f"size['{key}']", value, 1) for key, value in size.items()),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            if len(values) != 3 or not all(math.isfinite(value) for value in values):
                raise ValueError(f"`{name}` must be three finite numbers, got {list(values)}.")
        if not all(value > 0 for value in image_std):
            raise ValueError(f"`image_std` must be positive, got {list(image_std)}.")
        self.size = size
        self.resample = int(resample)
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = dict(crop_size) if crop_size is not None else None
        self.image_mean = [float(value) for value in image_mean]
        self.image_std = [float(value) for value in image_std]
        self.num_object_crops = num_object_crops
        self.object_image_size = object_image_size

    @classmethod
    def from_vision_image_processor(
        cls, image_processor: Any, num_object_crops: int = 3, object_image_size: int = 128
    ) -> HVFormerImageProcessor:
        r"""
        Takes the settings of a vision encoder's image processor (ViT, CLIP, DINOv2, SigLIP; torchvision or PIL
        backend): its size, resampling and center crop, and its rescaling and normalisation folded into the
        statistics the model normalises uint8 pixels with (`(pixels * rescale_factor - mean) / std` is
        `(pixels / 255 - image_mean) / image_std`); no normalisation gives a mean of 0 and a deviation of 1.

        Raises:
            `ValueError`: for an image processor that does not resize, or resizes otherwise than to a fixed size or
            a shortest edge.
        """
        size = image_processor.size
        shortest_edge = _size_value(size, "shortest_edge")
        height, width = _size_value(size, "height"), _size_value(size, "width")
        if not getattr(image_processor, "do_resize", True) or not (shortest_edge or (height and width)):
            raise ValueError(
                f"{type(image_processor).__name__} must resize to a fixed size or a shortest edge, got `do_resize` "
                f"{getattr(image_processor, 'do_resize', None)} and `size` {size}."
            )
        crop_size = getattr(image_processor, "crop_size", None)
        do_center_crop = bool(getattr(image_processor, "do_center_crop", False) and crop_size)
        scale = image_processor.rescale_factor * 255 if image_processor.do_rescale else 255
        mean, std = (
            (0.0, 1.0) if not image_processor.do_normalize else (image_processor.image_mean, image_processor.image_std)
        )
        return cls(
            size={"shortest_edge": shortest_edge} if shortest_edge else {"height": height, "width": width},
            resample=int(image_processor.resample),
            do_center_crop=do_center_crop,
            crop_size=(
                {"height": _size_value(crop_size, "height"), "width": _size_value(crop_size, "width")}
                if do_center_crop
                else None
            ),
            image_mean=(np.broadcast_to(np.asarray(mean, dtype=np.float64), (3,)) / scale).tolist(),
            image_std=(np.broadcast_to(np.asarray(std, dtype=np.float64), (3,)) / scale).tolist(),
            num_object_crops=num_object_crops,
            object_image_size=object_image_size,
        )

    def resize_target(self) -> int:
        """The side a main image must keep for the resize: the shortest edge, or the larger side of the fixed size."""
        return self.size.get("shortest_edge") or max(self.size["height"], self.size["width"])

    def image_size(self) -> int:
        """Side of the square images made (the size of `pixel_values`)."""
        height, width = self.resize([Image.new("RGB", (1, 1))])[0].shape[-2:]
        if height != width:
            raise ValueError(f"The image processor makes {height}x{width} images; HVFormer reads square images.")
        return int(height)

    def pixel_statistics(self) -> dict[str, list[float]]:
        """`image_mean` and `image_std`, for `HVFormerConfig`."""
        return {"image_mean": list(self.image_mean), "image_std": list(self.image_std)}

    def resize(self, images: list[Image.Image], side: int | None = None) -> list[np.ndarray]:
        """Resizes RGB images to uint8 `(3, H, W)` arrays: main images with `size` (and the center crop), or, with
        `side`, `side`-pixel squares made the way the main image is."""
        if side is not None and "shortest_edge" in self.size:
            size, crop = {"shortest_edge": side}, {"height": side, "width": side}
        elif side is not None:
            size, crop = {"height": side, "width": side}, None
        else:
            size, crop = self.size, self.crop_size if self.do_center_crop else None
        resized = []
        for image in images:
            if "shortest_edge" in size:
                height, width = get_resize_output_image_size(
                    np.empty((1, image.height, image.width)),
                    size=size["shortest_edge"],
                    default_to_square=False,
                    input_data_format=ChannelDimension.FIRST,
                )
            else:
                height, width = size["height"], size["width"]
            pixels = np.asarray(image.resize((width, height), resample=Image.Resampling(self.resample)))
            pixels = np.moveaxis(pixels, -1, 0)
            if crop is not None:
                pixels = center_crop(
                    pixels,
                    (crop["height"], crop["width"]),
                    data_format=ChannelDimension.FIRST,
                    input_data_format=ChannelDimension.FIRST,
                )
            resized.append(np.ascontiguousarray(pixels, dtype=np.uint8))
        return resized

    def load_image(
        self, image: Any, max_image_pixels: int | None = None, reduce_for: str | None = None
    ) -> Image.Image:
        """Loads one image as an RGB PIL image within the bounds every image meets (see `image_loading.load_image`):
        at full size, or with `reduce_for="image"` (`"object_crop"`) at the reduced scale a main image (an object
        crop) is decoded at, so that resizing the result gives the pixels [`preprocess`] gives for the file."""
        targets = {None: None, "image": self.resize_target(), "object_crop": self.object_image_size}
        if reduce_for not in targets:
            raise ValueError(f"`reduce_for` must be None, 'image' or 'object_crop', got {reduce_for!r}.")
        return load_image(image, max_image_pixels, targets[reduce_for])

    def preprocess(
        self,
        images: Any,
        object_crops: Sequence | None = None,
        max_image_pixels: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        r"""
        Loads and resizes one image or a list of images, and per image a list of 0 to `num_object_crops` object
        crops (one list for a single image).

        Args:
            images:
                One image or a list: the bytes or the path of a JPEG, PNG, WebP or GIF file, a PIL image, or a uint8,
                uint16, bool or float (in [0, 1]) `(H, W[, C])` array.
            object_crops (*optional*):
                Per image, a list of 0 to `num_object_crops` object crops (same types); one list for a single image.
            max_image_pixels (`int`, *optional*):
                Refuse a sample whose image and crops hold more pixels together, counted from the files' headers
                before any is decoded.
            return_tensors (`str`, *optional*, defaults to `"pt"`):
                `"pt"`, `"np"`, or `None` for Python lists.

        Returns:
            [`BatchFeature`]: uint8 `pixel_values` `(B, 3, H, W)`, uint8 `object_pixel_values` `(B, t, 3, s, s)`
            (zeros for absent crops) and long `object_mask` `(B, t)` (1 where a crop is present).

        Raises:
            `ValueError`: naming the image (`` `image` ``, `` `object_crops[1]` ``) or, for a list, the sample
            (`Sample 2: ...`, `Sample 2, object crop 1: ...`).
        """
        is_batched = isinstance(images, (list, tuple))
        images = list(images) if is_batched else [images]
        if object_crops is None:
            object_crops = [[] for _ in images]
        elif not is_batched:
            object_crops = [object_crops]
        with batch_errors(is_batched):
            decoded = decode_batch(
                images,
                list(object_crops),
                num_object_crops=self.num_object_crops,
                image_target=self.resize_target(),
                crop_target=self.object_image_size,
                max_pixels=max_image_pixels,
            )
        pixel_values = torch.from_numpy(np.stack(self.resize([main for main, *_ in decoded])))
        side = self.object_image_size
        object_pixel_values = torch.zeros((len(images), self.num_object_crops, 3, side, side), dtype=torch.uint8)
        object_mask = torch.zeros((len(images), self.num_object_crops), dtype=torch.long)
        slots = [(index, slot) for index, (_, *crops) in enumerate(decoded) for slot in range(len(crops))]
        if slots:
            flat_crops = self.resize([crop for _, *crops in decoded for crop in crops], side=side)
            for (index, slot), crop in zip(slots, flat_crops, strict=True):
                object_pixel_values[index, slot] = torch.from_numpy(crop)
                object_mask[index, slot] = 1
        data = {"pixel_values": pixel_values, "object_pixel_values": object_pixel_values, "object_mask": object_mask}
        if return_tensors != "pt":
            data = {key: value.numpy() if return_tensors == "np" else value.tolist() for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)


HVFormerImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["HVFormerImageProcessor"]
