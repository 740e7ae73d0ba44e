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
"""Image loading for HVFormer's processor: decodes any image input to 8-bit RGB, resizes images and square object
crops to uint8 pixels with the vision encoder's image processor, and normalises them.

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


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


def _open_rgb(path: str) -> Image.Image:
    """Decodes an image file to RGB with its EXIF orientation applied, refusing decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                rgb = to_rgb(ImageOps.exif_transpose(opened))
                return opened.copy() if rgb is opened else rgb
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"Refusing to load the image {path!r}: decompression bomb ({error}).") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ValueError(f"Cannot read the image {path!r}: {error}") from error


def load_image(image: Any) -> Image.Image:
    r"""
    Loads one image as an RGB PIL image.

    Args:
        image (`PIL.Image.Image`, `np.ndarray`, `str` or `os.PathLike`):
            A PIL image, an `(H, W)` or `(H, W, C)` array (C = 1, 3 or 4) of uint8, uint16 (scaled to 8 bits),
            bool or float values, or the path of an image file. Float arrays and float ('F' mode) PIL images
            must hold values in [0, 1], which are scaled by 255.

    Returns:
        `PIL.Image.Image`: The image in RGB, EXIF orientation applied. Grayscale, palette, CMYK and 16-bit images
        are converted; transparent pixels (LA, La, PA, RGBA, RGBa, palette) are composited on white.

    Raises:
        `ValueError`: for an unreadable or corrupt file, a decompression bomb (more pixels than
        `PIL.Image.MAX_IMAGE_PIXELS`), an empty image, an unsupported array or float values outside [0, 1]; the
        message names the path.
        `TypeError`: for other input types.
    """
    if isinstance(image, (str, os.PathLike)):
        rgb = _open_rgb(os.fspath(image))
    elif isinstance(image, Image.Image):
        rgb = to_rgb(ImageOps.exif_transpose(image))
    elif isinstance(image, np.ndarray):
        rgb = to_rgb(array_to_image(image))
    else:
        raise TypeError(f"An image must be a PIL image, a numpy array or a file path, got {type(image).__name__}.")
    if rgb.width == 0 or rgb.height == 0:
        raise ValueError(f"The image has no pixels (size {rgb.size}).")
    return rgb


def load_sample_image(image: Any, where: str) -> Image.Image:
    """[`load_image`] with the sample (and crop) `where` named in the `ValueError`."""
    try:
        return load_image(image)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


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
    image_processor: Any, images: list, object_crops: list, num_object_crops: int, object_image_size: int
) -> dict[str, torch.Tensor]:
    """Loads and resizes one main image and 0 to `num_object_crops` object crops per sample to uint8 pixels.

    Returns `pixel_values` (uint8 `(B, 3, H, W)`), `object_pixel_values` (uint8 `(B, t, 3, s, s)`, zeros for absent
    crops) and `object_mask` (long `(B, t)`, 1 where a crop is present).
    """
    if len(object_crops) != len(images):
        raise ValueError(f"Got {len(object_crops)} lists of object crops for {len(images)} images.")
    flat_crops, slots = [], []
    for index, crops in enumerate(object_crops):
        crops = [] if crops is None else crops
        if not isinstance(crops, (list, tuple)):
            raise ValueError(f"Sample {index}: the object crops must be a list, got {type(crops).__name__}.")
        if len(crops) > num_object_crops:
            raise ValueError(
                f"Sample {index}: {len(crops)} object crops given, at most num_object_crops={num_object_crops} "
                "allowed."
            )
        for slot, crop in enumerate(crops):
            if crop is None:
                raise ValueError(f"Sample {index}: object crop {slot} is None; leave absent crops out instead.")
            flat_crops.append(load_sample_image(crop, f"Sample {index}, object crop {slot}"))
            slots.append((index, slot))

    loaded = []
    for index, image in enumerate(images):
        if image is None:
            raise ValueError(f"Sample {index}: the image is None; every sample needs its image.")
        loaded.append(load_sample_image(image, f"Sample {index}"))
    pixel_values = resize_to_uint8(image_processor, loaded)

    side = object_image_size
    object_pixel_values = torch.zeros((len(images), num_object_crops, 3, side, side), dtype=torch.uint8)
    object_mask = torch.zeros((len(images), num_object_crops), dtype=torch.long)
    if flat_crops:
        crop_pixels = resize_to_uint8(image_processor, flat_crops, **crop_kwargs(image_processor, side))
        for (index, slot), crop in zip(slots, crop_pixels, strict=True):
            object_pixel_values[index, slot] = crop
            object_mask[index, slot] = 1
    return {"pixel_values": pixel_values, "object_pixel_values": object_pixel_values, "object_mask": object_mask}
