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
"""Image loading for HVFormer's processor: opens any image input, counts and sizes the images of a post from their
headers before decoding any (the pixel budget), decodes them to 8-bit RGB no larger than the resize needs, resizes
images and square object crops to uint8 pixels with the vision encoder's image processor, and normalises them.

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_UNREDUCIBLE_MODES = ("1", "P", *_SIXTEEN_BIT_MODES[:-1])
"""Modes that `Image.reduce` does not take: they are converted to RGB first."""
_ORIENTATION = 0x0112
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError)
"""What Pillow raises for a file it cannot read (`UnidentifiedImageError` is an `OSError`)."""
MAX_REASON_LENGTH = 200
"""The most characters of a decoder's own message quoted in an error."""
MAX_PATH_LENGTH = 160
"""The most characters of a path quoted in an error (its end)."""
REDUCING_GAP = 2
"""A large image is decoded at a reduced scale (JPEG `draft`), or shrunk with `reduce`, before the image processor
resizes it, but to no less than this many times the resize target (the default of Pillow's `thumbnail`): the
resampling then looks as if it had seen every pixel."""


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scales a float image with values in [0, 1] to uint8 (value * 255, rounded); other values are refused."""
    if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
        low, high = np.nanmin(array), np.nanmax(array)
        raise ValueError(
            f"A float image must hold finite values in [0, 1] (scaled by 255), got values in [{low}, {high}]; "
            "convert images in [0, 255] to uint8 first."
        )
    return np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)


def array_to_image(array: np.ndarray) -> Image.Image:
    """Turns an `(H, W)` or `(H, W, C)` array (C = 1, 3 or 4) of uint8, uint16, bool or float values into a PIL image.

    Float values must lie in [0, 1] and are scaled by 255, as for float ('F' mode) PIL images.
    """
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"An image array must have shape (H, W) or (H, W, C) with C in (1, 3, 4), got shape {array.shape}."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = _float_to_uint8(array)
    elif array.dtype != np.uint8:
        raise ValueError(
            f"An image array must hold uint8, uint16, bool or float (in [0, 1]) values, got dtype {array.dtype}."
        )
    return Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB.

    Transparent pixels (LA, La, RGBA, RGBa, PA, palette images with transparency) are composited on white. 16-bit
    modes (`I;16*`, and `I`, which 16-bit PNG/TIFF decoders produce) are mapped from [0, 65535] to [0, 255], values
    outside being clipped. Float (`F`) images must hold values in [0, 1], scaled by 255 like float arrays. Every other
    mode (L, 1, CMYK, YCbCr, ...) goes through PIL's own conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.float64)
        array = np.clip(np.rint(np.clip(array, 0, 65535) / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "La":
        image = image.convert("LA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "F":
        return array_to_image(np.asarray(image)).convert("RGB")
    return image.convert("RGB")


def _located(label: str | None, problem: str) -> str:
    """An error message: `problem` after the image's `label`, or alone and capitalised."""
    return f"{label}: {problem}" if label else problem[:1].upper() + problem[1:]


def _reason(error: BaseException) -> str:
    """A decoder's message without Python object reprs, at most `MAX_REASON_LENGTH` characters."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image in a format Pillow reads"
    if isinstance(error, OSError) and error.strerror:  # the path is named beside it
        return error.strerror
    reason = _OBJECT_REPR.sub("the data", str(error)) or type(error).__name__
    return reason if len(reason) <= MAX_REASON_LENGTH else reason[: MAX_REASON_LENGTH - 3] + "..."


def _what(path: str | None) -> str:
    """The image as errors name it: with its path (the end of a long one) when it has one."""
    if path is None:
        return "the image"
    return f"the image {path!r}" if len(path) <= MAX_PATH_LENGTH else f"the image '...{path[3 - MAX_PATH_LENGTH :]}'"


@dataclasses.dataclass
class _OpenedImage:
    """One image of a post, opened (its size known) but not decoded yet."""

    image: Image.Image | np.ndarray
    label: str | None
    """How errors name the image (`None`: "the image")."""
    target: int | None
    """The side the resize needs: the image is decoded at least `REDUCING_GAP` times larger (`None`: full size)."""
    path: str | None = None
    owned: bool = False
    """Opened here, from a path or bytes: it may be drafted and changed in place."""

    @property
    def size(self) -> tuple[int, int]:
        """`(width, height)`, from the header for a file."""
        if isinstance(self.image, np.ndarray):
            return (self.image.shape[1], self.image.shape[0]) if self.image.ndim >= 2 else (0, 0)
        return self.image.size


def _open(image: Any, label: str | None, target: int | None, files: contextlib.ExitStack) -> _OpenedImage:
    """Opens a file path or encoded bytes lazily (Pillow reads the header only; the file stays open in `files`), and
    takes PIL images and arrays as they are. Refuses other types, empty images, and files over Pillow's
    `Image.MAX_IMAGE_PIXELS` (decompression bombs)."""
    if isinstance(image, (Image.Image, np.ndarray)):
        opened = _OpenedImage(image, label, target)
    elif isinstance(image, (str, os.PathLike, bytes, bytearray)):
        path = None if isinstance(image, (bytes, bytearray)) else os.fspath(image)
        what = _what(path)
        try:
            source = io.BytesIO(image) if path is None else files.enter_context(open(path, "rb"))
            opened = _OpenedImage(Image.open(source), label, target, path=path, owned=True)
        except Image.DecompressionBombError as error:
            raise ValueError(_located(label, f"refusing to decode {what}: {error}")) from error
        except _READ_ERRORS as error:
            raise ValueError(_located(label, f"cannot read {what}: {_reason(error)}.")) from error
        if Image.MAX_IMAGE_PIXELS and _pixels(opened) > Image.MAX_IMAGE_PIXELS:
            raise ValueError(
                _located(
                    label,
                    f"refusing to decode {what}: {opened.size[0]}x{opened.size[1]} pixels, more than Pillow's "
                    f"Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS:,} (a decompression bomb).",
                )
            )
    else:
        raise ValueError(
            _located(
                label,
                "an image must be a PIL image, a numpy array, encoded image bytes or a file path, got "
                f"{type(image).__name__}.",
            )
        )
    if 0 in opened.size:
        raise ValueError(_located(label, f"the image has no pixels (size {opened.size[0]}x{opened.size[1]})."))
    return opened


def _pixels(opened: _OpenedImage) -> int:
    width, height = opened.size
    return width * height


def _check_budget(opened: list[_OpenedImage], max_pixels: int, where: str | None) -> None:
    """Refuses the images of one post when they hold more than `max_pixels` pixels together."""
    total = sum(_pixels(item) for item in opened)
    if total <= max_pixels:
        return
    sizes = ", ".join(f"{item.label or ''} {item.size[0]}x{item.size[1]}".strip() for item in opened)
    held = f"holds {total:,} pixels" if len(opened) == 1 else f"hold {total:,} pixels together"
    raise ValueError(
        _located(
            where,
            f"the image{'s' if len(opened) > 1 else ''} {held} ({sizes}), more than max_image_pixels={max_pixels:,}.",
        )
    )


def _decode(opened: _OpenedImage) -> Image.Image:
    """Decodes an opened image to RGB, EXIF orientation applied, shrunk towards `REDUCING_GAP` times its target: a
    JPEG is decoded at a reduced scale (`draft`), another large image is reduced (`reduce`, a box filter) before it
    is converted. An image is copied only where a conversion, reduction or rotation needs it."""
    image, owned = opened.image, opened.owned
    try:
        if isinstance(image, np.ndarray):
            image, owned = array_to_image(image), True
    except ValueError as error:
        raise ValueError(_located(opened.label, str(error))) from error
    try:
        if owned and opened.target:
            image.draft(image.mode, (REDUCING_GAP * opened.target,) * 2)
        image.load()
        orientation = image.getexif().get(_ORIENTATION, 1)
    except _READ_ERRORS as error:
        raise ValueError(_located(opened.label, f"cannot read {_what(opened.path)}: {_reason(error)}.")) from error
    try:
        factor = min(image.size) // (REDUCING_GAP * opened.target) if opened.target else 0
        if factor >= 2:
            image, owned = (to_rgb(image) if image.mode in _UNREDUCIBLE_MODES else image).reduce(factor), True
        if orientation in range(2, 9):
            if owned:
                ImageOps.exif_transpose(image, in_place=True)
            else:
                image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except ValueError as error:
        raise ValueError(_located(opened.label, str(error))) from error


def load_image(image: Any, max_pixels: int | None = None, target: int | None = None) -> Image.Image:
    r"""
    Loads one image as an RGB PIL image, at full size or, with `target`, as [`resize_batch`] decodes it.

    Args:
        image (`PIL.Image.Image`, `np.ndarray`, `bytes`, `str` or `os.PathLike`):
            A PIL image, an `(H, W)` or `(H, W, C)` array (C = 1, 3 or 4) of uint8, uint16 (scaled to 8 bits),
            bool or float values, an encoded image (the bytes of a PNG, JPEG, ... file), or the path of an image
            file. Float arrays and float ('F' mode) PIL images must hold values in [0, 1], which are scaled by 255.
        max_pixels (`int`, *optional*):
            Refuse an image with more pixels than this, read from a file's header before decoding it.
        target (`int`, *optional*):
            The side the image will be resized to: a large image is then decoded at a reduced scale, to no less than
            `REDUCING_GAP` times it, exactly as [`resize_batch`] decodes it (so that images cached for training have
            the pixels a served request gets).

    Returns:
        `PIL.Image.Image`: The image in RGB, EXIF orientation applied. Grayscale, palette, CMYK and 16-bit images
        are converted; transparent pixels (LA, La, PA, RGBA, RGBa, palette) are composited on white. An RGB image
        without EXIF rotation is returned as it is, not copied.

    Raises:
        `ValueError`: for another type, an unreadable or corrupt file, a decompression bomb (more pixels than
        `PIL.Image.MAX_IMAGE_PIXELS`), more than `max_pixels` pixels, an empty image, an unsupported array or float
        values outside [0, 1]; the message names the path.
    """
    with contextlib.ExitStack() as files:
        opened = _open(image, None, target, files)
        if max_pixels is not None:
            _check_budget([opened], max_pixels, None)
        return _decode(opened)


def _size_value(size: Any, key: str) -> int | None:
    """Reads `key` from an image processor size, which is a `SizeDict` or a plain dict depending on the version."""
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def crop_kwargs(image_processor: Any, side: int) -> dict[str, Any]:
    """Image processor overrides that make `side`-pixel square crops the way the main image is made."""
    if _size_value(image_processor.size, "shortest_edge"):
        return {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}, "do_center_crop": True}
    return {"size": {"height": side, "width": side}, "do_center_crop": False}


def resize_to_uint8(image_processor: Any, images: list[Image.Image], **overrides: Any) -> torch.Tensor:
    """Runs the image processor without rescaling/normalising and returns uint8 `(N, 3, H, W)` pixels."""
    pixels = image_processor(images, do_rescale=False, do_normalize=False, return_tensors="pt", **overrides)[
        "pixel_values"
    ]
    if pixels.is_floating_point():
        pixels = pixels.round().clamp(0, 255)
    return pixels.to(torch.uint8)


def normalize_pixels(image_processor: Any, pixel_values_uint8: torch.Tensor) -> torch.Tensor:
    """Rescales and normalises uint8 `(..., 3, H, W)` pixels into float32 with the image processor's settings
    (`rescale_factor`, `image_mean`, `image_std`, `do_rescale`, `do_normalize`)."""
    if pixel_values_uint8.dtype != torch.uint8:
        raise ValueError(f"`normalize_pixels` expects uint8 pixels, got {pixel_values_uint8.dtype}.")
    if pixel_values_uint8.dim() < 3 or pixel_values_uint8.shape[-3] != 3:
        raise ValueError(f"`normalize_pixels` expects shape (..., 3, H, W), got {tuple(pixel_values_uint8.shape)}.")
    pixels = pixel_values_uint8.to(torch.float32)
    if image_processor.do_rescale:
        pixels = pixels * image_processor.rescale_factor
    if image_processor.do_normalize:
        mean = torch.as_tensor(image_processor.image_mean, dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.as_tensor(image_processor.image_std, dtype=torch.float32).reshape(-1, 1, 1)
        pixels = (pixels - mean) / std
    return pixels


def resize_target(image_processor: Any) -> int | None:
    """The side an image must keep for the image processor's resize: the shortest edge it resizes to, or the larger
    side of the fixed size it resizes to; `None` (decode at full size) for an image processor that does not resize or
    resizes otherwise."""
    if not getattr(image_processor, "do_resize", True):
        return None
    size = image_processor.size
    shortest_edge = _size_value(size, "shortest_edge")
    if shortest_edge:
        return shortest_edge
    height, width = _size_value(size, "height"), _size_value(size, "width")
    return max(height, width) if height and width else None


def pixel_statistics(image_processor: Any) -> dict[str, list[float]]:
    """The per-channel `image_mean` and `image_std` of [`normalize_pixels`] (0 and 1 when the image processor does not
    normalise), with which a model normalises uint8 pixels as `(pixels / 255 - image_mean) / image_std`: the same
    result when the image processor rescales by 1/255, as CLIP's and ViT's do."""
    if not image_processor.do_normalize:
        return {"image_mean": [0.0] * 3, "image_std": [1.0] * 3}
    return {
        name: np.broadcast_to(np.asarray(getattr(image_processor, name), dtype=np.float64), (3,)).tolist()
        for name in ("image_mean", "image_std")
    }


def resize_batch(
    image_processor: Any,
    images: list,
    object_crops: list,
    num_object_crops: int,
    object_image_size: int,
    is_batched: bool,
    max_pixels: int | None = None,
) -> dict[str, torch.Tensor]:
    """Loads and resizes one main image and 0 to `num_object_crops` object crops per sample to uint8 pixels.

    The crops are counted before any image is opened; then every image is opened and, with `max_pixels`, the images
    of each sample are refused when they hold more pixels together, before any is decoded (see [`_decode`] for the
    decoding). Errors name the sample (`Sample 2`, `Sample 2, object crop 1`) when `is_batched`, else the image
    (`` `image` ``, `` `object_crops[1]` ``).

    Returns `pixel_values` (uint8 `(B, 3, H, W)`), `object_pixel_values` (uint8 `(B, t, 3, s, s)`, zeros for absent
    crops) and `object_mask` (long `(B, t)`, 1 where a crop is present).
    """
    if len(object_crops) != len(images):
        raise ValueError(f"Got {len(object_crops)} lists of object crops for {len(images)} images.")
    wheres = [f"Sample {index}" if is_batched else None for index in range(len(images))]
    for where, image, crops in zip(wheres, images, object_crops, strict=True):
        if image is None:
            raise ValueError(_located(where, "the image is None; every sample needs its image."))
        if crops is not None and not isinstance(crops, (list, tuple)):
            raise ValueError(_located(where, f"the object crops must be a list, got {type(crops).__name__}."))
        if crops is not None and len(crops) > num_object_crops:
            raise ValueError(
                _located(
                    where, f"{len(crops)} object crops given, at most num_object_crops={num_object_crops} allowed."
                )
            )

    target = resize_target(image_processor)
    with contextlib.ExitStack() as files:
        samples = []
        for where, image, crops in zip(wheres, images, object_crops, strict=True):
            opened = [_open(image, where or "`image`", target, files)]
            for slot, crop in enumerate(crops or []):
                label = f"{where}, object crop {slot}" if is_batched else f"`object_crops[{slot}]`"
                if crop is None:
                    raise ValueError(_located(label, "the crop is None; leave absent crops out instead."))
                opened.append(_open(crop, label, object_image_size, files))
            if max_pixels is not None:
                _check_budget(opened, max_pixels, where)
            samples.append(opened)
        decoded = [[_decode(item) for item in opened] for opened in samples]

    pixel_values = resize_to_uint8(image_processor, [main for main, *_ in decoded])
    side = object_image_size
    object_pixel_values = torch.zeros((len(images), num_object_crops, 3, side, side), dtype=torch.uint8)
    object_mask = torch.zeros((len(images), num_object_crops), dtype=torch.long)
    slots = [(index, slot) for index, (_, *crops) in enumerate(decoded) for slot in range(len(crops))]
    if slots:
        flat_crops = [crop for _, *crops in decoded for crop in crops]
        crop_pixels = resize_to_uint8(image_processor, flat_crops, **crop_kwargs(image_processor, side))
        for (index, slot), crop in zip(slots, crop_pixels, strict=True):
            object_pixel_values[index, slot] = crop
            object_mask[index, slot] = 1
    return {"pixel_values": pixel_values, "object_pixel_values": object_pixel_values, "object_mask": object_mask}
