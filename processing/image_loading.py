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
"""Image loading for HVFormer's image processor: opens any image input, sizes the images of a post and estimates the
memory their decoding takes from their headers before decoding any (the pixel budget, `MAX_DECODE_BYTES`), and decodes
them to 8-bit RGB no larger than the resize needs; `image_processing_hvformer.py` resizes them to uint8 pixels.

Every image a post brings, served or trained on, goes through the same checks before Pillow decodes a pixel:

- a file (a path, encoded bytes, or a PIL image opened and not loaded yet) must be in one of the `ACCEPTED_FORMATS`
  of `image_files.py` (JPEG, PNG, WebP, GIF), Pillow is told to try only those, and the metadata it parses while
  opening the file is bounded there (`image_files.check_file`); the EXIF orientation is read by a parser of one tag;
- no side may be more than `MAX_ASPECT_RATIO` times the other;
- decoding the images of a post and resizing them (decoding one image for [`load_image`])
  may take at most `MAX_DECODE_BYTES`, as [`_decode_bytes`] estimates it from the headers: at the reduced scale a JPEG
  is decoded at, in the decoder's own storage, with the RGB result and the resize's copy of it.

Decoding holds one file at a time: each is converted to RGB and reduced band by band, then let go. The memory a post
takes is therefore at most `MAX_DECODE_BYTES` beside its encoded bytes, and its time is linear in its bytes and in the
pixels decoded (times the scans of a progressive JPEG).

Travels to the Hub with `image_processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .image_files import accepted_format, check_file, exif_orientation, format_refusal
from .sample_errors import SampleError, at_sample

MAX_ASPECT_RATIO = 20
"""The most times one side of an image may be the other. Photos, panoramas included, stay well within it. A longer
strip cannot be decoded at a reduced scale (its short side is already small), and an image processor that resizes the
shorter side (CLIP's) would enlarge a 1:1000 strip a thousandfold before cropping all but a thousandth of it."""
MAX_DECODE_BYTES = 128 * 2**20
"""The most memory (128 MiB) the images of one post may take to decode and resize, estimated from their headers
before any is decoded (see [`_decode_bytes`]). A 12-megapixel PNG takes 49 MB, 24 megapixels of PNG 98 MB, a
12-megapixel progressive JPEG 37 MB (its coefficients) and a baseline one 1 MB (it is decoded at an eighth of its
size); a WebP takes 16 bytes a pixel (libwebp's buffers and Pillow's copies), so up to about 8 megapixels."""
REDUCING_GAP = 2
"""A large image is decoded at a reduced scale (JPEG `draft`), or shrunk with `reduce`, before the image processor
resizes it, but to no less than this many times the resize target (the default of Pillow's `thumbnail`): the
resampling then looks as if it had seen every pixel."""
MAX_REASON_LENGTH = 200
"""The most characters of a decoder's own message quoted in an error."""
MAX_PATH_LENGTH = 160
"""The most characters of a path quoted in an error (its end)."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_UNREDUCIBLE_MODES = ("1", "P", *_SIXTEEN_BIT_MODES[:-1])
"""Modes that `Image.reduce` does not take: they are converted to RGB first."""
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
"""Pillow's storage of a pixel in the modes that take less than 4 bytes."""
_WEBP_BYTES_PER_PIXEL = 16
"""What decoding a WebP takes per pixel of its canvas: libwebp's frame and previous-frame canvases, Pillow's copy of
the frame as bytes, and the image."""
_JPEG_BLOCK_BYTES = 128
"""What libjpeg keeps per 8x8 block of a component for a JPEG of several scans (progressive): 64 16-bit
coefficients, at full scale, whatever scale it is decoded at."""
_DECODER_BYTES = 4 * 2**20
"""A decoder's working memory beside the image: read buffers, libjpeg's and zlib's state and rows."""
_RESIZE_BYTES_PER_PIXEL = 12
"""What the image processor takes per pixel of the image it resizes (a float32 copy of its RGB pixels)."""
_BAND_PIXELS = 1 << 18
"""Pixels of one band of the conversion to RGB (at least one row of reduction blocks)."""
_BAND_BYTES_PER_PIXEL = 24
"""What converting one band takes per pixel: the band, its RGBA and composited copies, the RGB result."""
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""How each EXIF orientation is shown upright (as `ImageOps.exif_transpose` does)."""
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _check_array(array: np.ndarray) -> None:
    """Refuses an array that is not an `(H, W)` or `(H, W, C)` image (C = 1, 3 or 4) of uint8, uint16 (either byte
    order), bool or float values."""
    if array.ndim not in (2, 3):
        raise ValueError(
            f"An image array must have 2 or 3 dimensions, (H, W) or (H, W, C) with C in (1, 3, 4), got shape "
            f"{array.shape}."
        )
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"An image array must have shape (H, W) or (H, W, C) with C in (1, 3, 4), got shape {array.shape}."
        )
    kind, itemsize = array.dtype.kind, array.dtype.itemsize
    if not (kind in "bf" or (kind == "u" and itemsize in (1, 2))):
        raise ValueError(
            "An image array must hold uint8, uint16 (either byte order), bool or float (in [0, 1]) values, got dtype "
            f"{array.dtype}."
        )


def _float_to_uint8(array: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Scales a float band of the image `whole` with values in [0, 1] to uint8 (value * 255, rounded); other values
    are refused, naming the range of `whole`."""
    if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
        low, high = np.nanmin(whole), np.nanmax(whole)
        raise ValueError(
            f"A float image must hold finite values in [0, 1] (scaled by 255), got values in [{low}, {high}]; "
            "convert images in [0, 255] to uint8 first."
        )
    return np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)


def _to_uint8(array: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """A band of the array `whole` as uint8: booleans as 0 / 255, uint16 scaled to 8 bits (rounded), floats in [0, 1]
    scaled by 255."""
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind == "u":  # round(value / 257) in integers, any byte order
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return _float_to_uint8(array, whole)


def array_to_image(array: np.ndarray) -> Image.Image:
    """Turns an `(H, W)` or `(H, W, C)` array (C = 1, 3 or 4) of uint8, uint16 (either byte order), bool or float
    values into a PIL image, converting a band of rows at a time (no full-size temporary beyond the uint8 copy).

    Float values must lie in [0, 1] and are scaled by 255, as for float ('F' mode) PIL images.
    """
    _check_array(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(array))
    pixels = np.empty(array.shape, dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, array[0].size))
    for top in range(0, array.shape[0], rows):
        pixels[top : top + rows] = _to_uint8(array[top : top + rows], array)
    return Image.fromarray(pixels)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB.

    Transparent pixels (LA, La, RGBA, RGBa, PA, palette images with transparency) are composited on white. 16-bit
    modes (`I;16*`, and `I`, 32-bit integers) are mapped from [0, 65535] to [0, 255], values outside being clipped.
    Float (`F`) images must hold values in [0, 1], scaled by 255 like float arrays. Every other mode (L, 1, CMYK,
    YCbCr, ...) goes through PIL's own conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.clip(np.asarray(image), 0, 65535)
        return Image.fromarray(_to_uint8(array.astype(np.uint16), array)).convert("RGB")
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


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """`to_rgb(image)`, shrunk by `factor` with `Image.reduce` (a box filter) when it is 2 or more, made band by band
    so that no full-size copy of the image exists: an RGB image that needs no reduction is returned as it is.

    Each band starts on a multiple of `factor` rows, so the result is the one the whole image would give: the
    unreducible modes converted to RGB, reduced, converted to RGB (compositing transparent pixels after reducing)."""
    if factor < 2 and image.mode == "RGB":
        return image
    factor = max(factor, 1)
    width, height = image.size
    result = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = max(1, _BAND_PIXELS // (width * factor)) * factor
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(top + rows, height)))
        if factor >= 2:
            band = (to_rgb(band) if band.mode in _UNREDUCIBLE_MODES else band).reduce(factor)
        result.paste(to_rgb(band), (0, top // factor))
    return result


class ImagePart(NamedTuple):
    """Which image of a sample an error concerns: its argument's name (`` `image` ``, `` `object_crops[1]` ``) and,
    for an object crop, its slot."""

    name: str
    crop: int | None = None


def _located(part: ImagePart | None, problem: str) -> SampleError:
    """The error for `problem` of the image `part` of a sample (`None`: of the sample)."""
    return SampleError(problem, part.name, part.crop) if part else SampleError(problem)


def _reason(error: BaseException) -> str:
    """A decoder's message without Python object reprs, at most `MAX_REASON_LENGTH` characters."""
    if isinstance(error, UnidentifiedImageError):
        return "Pillow cannot identify the file"
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
    """One image of a post, opened (its size known, a JPEG drafted) but not decoded yet."""

    image: Image.Image | np.ndarray | None
    """The PIL image or array; `None` once decoded, so that the post keeps no decoded file."""
    label: ImagePart | None
    """How errors name the image (`None`: "the image")."""
    target: int | None
    """The side the resize needs: the image is decoded at least `REDUCING_GAP` times larger (`None`: full size)."""
    size: tuple[int, int]
    """`(width, height)`, from the header for a file."""
    path: str | None = None
    owned: bool = False
    """Opened here, from a path or bytes: it is drafted and decoded here."""
    file_format: str | None = None
    file_bytes: int = 0
    scans: int = 1
    """Start-of-scan markers of a JPEG."""
    may_rotate: bool = True
    """Whether the EXIF orientation may turn the result (a copy of it)."""

    @property
    def description(self) -> str:
        """The image's size and format, as errors give them."""
        return f"{self.size[0]}x{self.size[1]}" + (f" {self.file_format}" if self.file_format else "")


def _unloaded_file(image: Image.Image) -> bytes | None:
    """The bytes of the file a PIL image was opened from, while it is not decoded yet (`Image.open(...)` before
    `load()`), read from its start as `Image.open` reads it; `None` for an image in memory."""
    fp = getattr(image, "fp", None)
    # Pillow has no public way to ask whether an image is decoded: `_im` holds its pixels once it is.
    if not isinstance(image, ImageFile.ImageFile) or fp is None or getattr(image, "_im", None) is not None:
        return None
    position = fp.tell()
    try:
        fp.seek(0)
        return fp.read()
    finally:
        fp.seek(position)


def _open_file(
    source: bytes | None, path: str | None, label: ImagePart | None, target: int | None, files: contextlib.ExitStack
) -> _OpenedImage:
    """Opens the encoded image `source`, or the file at `path` (kept open in `files`), after checking its format and
    the metadata Pillow reads while opening it (see `image_files.check_file`)."""
    what = _what(path)
    try:
        fp = io.BytesIO(source) if path is None else files.enter_context(open(path, "rb"))
        file_bytes = fp.seek(0, os.SEEK_END)
        fp.seek(0)
        prefix = fp.read(16)
    except OSError as error:
        raise _located(label, f"cannot read {what}: {_reason(error)}.") from error
    file_format = accepted_format(prefix)
    if file_format is None:
        raise _located(label, f"cannot read {what}: {format_refusal(prefix)}.")
    checked = check_file(fp, file_format)
    if checked.problem:
        raise _located(label, f"refusing to decode {what}: {checked.problem}.")
    fp.seek(0)
    try:
        image = Image.open(fp, formats=[file_format])
    except Image.DecompressionBombError as error:
        raise _located(label, f"refusing to decode {what}: {error}") from error
    except Exception as error:  # a decoder's failure on an untrusted file, whatever its type, is the file's problem
        raise _located(label, f"cannot read {what}: {_reason(error)}.") from error
    if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
        raise _located(
            label,
            f"refusing to decode {what}: {image.width}x{image.height} pixels, more than Pillow's "
            f"Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS:,} (a decompression bomb).",
        )
    opened = _OpenedImage(image, label, target, image.size, path, True, file_format, file_bytes, checked.scans)
    if not checked.late_exif or "exif" in image.info:
        opened.may_rotate = exif_orientation(image.info.get("exif")) in _TRANSPOSES
    return opened


def _open(image: Any, label: ImagePart | None, target: int | None, files: contextlib.ExitStack) -> _OpenedImage:
    """Opens a file path, encoded bytes or a PIL image that is not decoded yet (its file) lazily, after the checks
    of [`_open_file`] (the file stays open in `files`), and takes decoded PIL images and arrays as they are. Refuses
    other types, empty images, images longer than `MAX_ASPECT_RATIO` times their width (or wider), and files over
    Pillow's `Image.MAX_IMAGE_PIXELS` (decompression bombs)."""
    if isinstance(image, Image.Image) and (encoded := _unloaded_file(image)) is not None:
        filename = getattr(image, "filename", None)
        opened = _open_file(encoded, None, label, target, files)
        opened.path = filename if isinstance(filename, str) and filename else None
    elif isinstance(image, Image.Image):
        orientation = exif_orientation(image.info.get("exif"))
        opened = _OpenedImage(image, label, target, image.size, may_rotate=orientation in _TRANSPOSES)
    elif isinstance(image, np.ndarray):
        try:
            _check_array(image)
        except ValueError as error:
            raise _located(label, str(error)) from error
        opened = _OpenedImage(image, label, target, (image.shape[1], image.shape[0]), may_rotate=False)
    elif isinstance(image, (str, os.PathLike, bytes, bytearray)):
        path = None if isinstance(image, (bytes, bytearray)) else os.fspath(image)
        opened = _open_file(bytes(image) if path is None else None, path, label, target, files)
    else:
        raise _located(
            label,
            "an image must be a PIL image, a numpy array, encoded image bytes or a file path, got "
            f"{type(image).__name__}.",
        )
    width, height = opened.size
    if not width or not height:
        raise _located(label, f"the image has no pixels (size {width}x{height}).")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise _located(
            label,
            f"{_what(opened.path)} is {width}x{height} pixels, one side more than "
            f"MAX_ASPECT_RATIO={MAX_ASPECT_RATIO} times the other.",
        )
    if opened.owned and target:
        opened.image.draft(opened.image.mode, (REDUCING_GAP * target,) * 2)
    return opened


def _reduction_factor(size: tuple[int, int], target: int | None) -> int:
    """How much an image of `size` (as decoded) is reduced for a resize to `target`: to no less than `REDUCING_GAP`
    times it (0 or 1: not reduced)."""
    return min(size) // (REDUCING_GAP * target) if target else 0


def _decode_bytes(opened: _OpenedImage, resized: bool) -> int:
    """An upper bound on the memory decoding `opened` into its RGB result takes, from its header, and with `resized`
    resizing the result with the image processor.

    The decoder's memory: the pixels at the decoded scale in Pillow's storage for the mode (a JPEG's draft scale) and
    the decoder's working memory, plus, for a JPEG of several scans (progressive), libjpeg's coefficients at full
    scale, and for a WebP libwebp's buffers and the file read whole (`_WEBP_BYTES_PER_PIXEL`); for an array, its uint8
    copy and PIL image; nothing for a decoded PIL image. Then the RGB result (unless the image is RGB and not
    reduced), its rotated copy (when the EXIF orientation may ask for one), one band of the conversion, and what the
    image processor takes to resize the result (`resized`)."""
    image = opened.image
    if isinstance(image, np.ndarray):
        channels = image.shape[2] if image.ndim == 3 else 1
        width, height, mode = image.shape[1], image.shape[0], "RGB" if channels == 3 else "L"
        source = width * height * (channels + 4)
    else:
        (width, height), mode = image.size, image.mode
        source = width * height * _BYTES_PER_PIXEL.get(mode, 4) + _DECODER_BYTES if opened.owned else 0
    if opened.file_format == "WEBP":
        source = width * height * _WEBP_BYTES_PER_PIXEL + 2 * opened.file_bytes + _DECODER_BYTES
    elif opened.file_format == "JPEG" and opened.scans > 1 and getattr(image, "layer", None):
        full_width, full_height = opened.size
        layers = [(horizontal, vertical) for _, horizontal, vertical, _ in image.layer]
        most_h, most_v = max(max(h for h, _ in layers), 1), max(max(v for _, v in layers), 1)
        columns, rows = -(-full_width // (8 * most_h)), -(-full_height // (8 * most_v))
        source += _JPEG_BLOCK_BYTES * sum(columns * h * rows * v for h, v in layers)
    factor = max(_reduction_factor((width, height), opened.target), 1)
    result = -(-width // factor) * -(-height // factor)
    converted = mode != "RGB" or factor >= 2
    band = _BAND_BYTES_PER_PIXEL * min(width * height, max(_BAND_PIXELS, width * factor)) if converted else 0
    resize = _RESIZE_BYTES_PER_PIXEL * result if resized else 0
    return source + 4 * result * (converted + opened.may_rotate) + band + resize


def _check_budget(opened: list[_OpenedImage], max_pixels: int) -> None:
    """Refuses the images of one post when they hold more than `max_pixels` pixels together (their header sizes)."""
    total = sum(item.size[0] * item.size[1] for item in opened)
    if total <= max_pixels:
        return
    sizes = ", ".join(
        f"{item.label.name if item.label else ''} {item.size[0]}x{item.size[1]}".strip() for item in opened
    )
    held = f"holds {total:,} pixels" if len(opened) == 1 else f"hold {total:,} pixels together"
    raise _located(
        None,
        f"the image{'s' if len(opened) > 1 else ''} {held} ({sizes}), more than max_image_pixels={max_pixels:,}.",
    )


def _check_decode_bytes(opened: list[_OpenedImage], resized: bool = True) -> None:
    """Refuses the images of one post when decoding them (and, with `resized`, resizing them with the image
    processor) would take more than `MAX_DECODE_BYTES` together."""
    costs = [_decode_bytes(item, resized) for item in opened]
    total = sum(costs)
    if total <= MAX_DECODE_BYTES:
        return
    parts = ", ".join(
        f"{item.label.name if item.label else ''} {item.description} {cost / 2**20:.1f} MiB".strip()
        for item, cost in zip(opened, costs, strict=True)
    )
    many = len(opened) > 1
    raise _located(
        None,
        f"the image{'s' if many else ''} would take {total / 2**20:.1f} MiB{' together' if many else ''} to "
        f"decode ({parts}), more than MAX_DECODE_BYTES={MAX_DECODE_BYTES // 2**20} MiB.",
    )


def _decode(opened: _OpenedImage) -> Image.Image:
    """Decodes an opened image to RGB, EXIF orientation applied, shrunk towards `REDUCING_GAP` times its target: a
    JPEG is decoded at a reduced scale (drafted when opened), another large image is reduced (`reduce`, a box filter)
    band by band as it is converted. The opened image is let go: only the result stays. An RGB image that needs no
    reduction or rotation is returned as it is."""
    image, opened.image = opened.image, None
    if isinstance(image, np.ndarray):
        try:
            image = array_to_image(image)
        except ValueError as error:
            raise _located(opened.label, str(error)) from error
    elif opened.owned:
        try:
            image.load()
        except Exception as error:  # a decoder's failure on an untrusted file, whatever its type
            raise _located(opened.label, f"cannot read {_what(opened.path)}: {_reason(error)}.") from error
    orientation = exif_orientation(image.info.get("exif"))
    try:
        result = _reduced_rgb(image, _reduction_factor(image.size, opened.target))
    except ValueError as error:
        raise _located(opened.label, str(error)) from error
    del image
    return result.transpose(_TRANSPOSES[orientation]) if orientation in _TRANSPOSES else result


def load_image(image: Any, max_pixels: int | None = None, target: int | None = None) -> Image.Image:
    r"""
    Loads one image as an RGB PIL image, at full size or, with `target`, as [`decode_batch`] decodes it.

    Args:
        image (`PIL.Image.Image`, `np.ndarray`, `bytes`, `str` or `os.PathLike`):
            An encoded image (the bytes of a JPEG, PNG, WebP or GIF file, see `ACCEPTED_FORMATS`), the path of such a
            file, a PIL image, or an `(H, W)` or `(H, W, C)` array (C = 1, 3 or 4) of uint8, uint16 (scaled to 8
            bits), bool or float values. A PIL image opened and not loaded yet (`Image.open(path)`) is decoded from
            its file exactly as the path would be (its bytes are read; the image itself is left unloaded and open,
            for its owner to close); a decoded one (loaded, converted, made in memory) is taken as it is, reduced
            like any large image but without the reduced-scale decoding of a JPEG file, so its pixels may differ
            slightly from the file's. Float arrays and float ('F' mode) PIL images must
            hold values in [0, 1], which are scaled by 255.
        max_pixels (`int`, *optional*):
            Refuse an image with more pixels than this, read from a file's header before decoding it.
        target (`int`, *optional*):
            The side the image will be resized to: a large image is then decoded at a reduced scale, to no less than
            `REDUCING_GAP` times it, exactly as [`decode_batch`] decodes it (so that images cached for training have
            the pixels a served request gets).

    Returns:
        `PIL.Image.Image`: The image in RGB, EXIF orientation applied. Grayscale, palette, CMYK and 16-bit images
        are converted; transparent pixels (LA, La, PA, RGBA, RGBa, palette) are composited on white. An RGB image
        without EXIF rotation is returned as it is, not copied.

    Raises:
        `ValueError`: for another type, a file in another format, an unreadable or corrupt file, a decompression bomb
        (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`), more than `max_pixels` pixels, a side more than
        `MAX_ASPECT_RATIO` times the other, metadata over its bounds, more than `MAX_DECODE_BYTES` to decode, an
        empty image, an unsupported array or float values outside [0, 1]; the message names the path.
    """
    with contextlib.ExitStack() as files:
        opened = _open(image, None, target, files)
        if max_pixels is not None:
            _check_budget([opened], max_pixels)
        _check_decode_bytes([opened], resized=False)
        return _decode(opened)


def decode_batch(
    images: list,
    object_crops: list,
    *,
    num_object_crops: int,
    image_target: int | None,
    crop_target: int,
    max_pixels: int | None = None,
) -> list[list[Image.Image]]:
    """Loads one main image and 0 to `num_object_crops` object crops per sample, decoded as the resize needs them:
    `[image, crop, ...]` per sample, RGB PIL images.

    The crops are counted before any image is opened; then every image is opened (see [`_open`] for what is refused
    there) and the images of each sample are refused when they hold more than `max_pixels` pixels together or would
    take more than `MAX_DECODE_BYTES` to decode, before any is decoded (see [`_decode`] for the decoding): a main
    image at no less than `REDUCING_GAP` times `image_target`, a crop times `crop_target`. Errors are
    [`SampleError`]s naming the image (`` `image` ``, `` `object_crops[1]` ``), with the sample's index.
    """
    if len(object_crops) != len(images):
        raise ValueError(f"Got {len(object_crops)} lists of object crops for {len(images)} images.")
    for index, (image, crops) in enumerate(zip(images, object_crops, strict=True)):
        if image is None:
            raise SampleError("the image is None; every sample needs its image.", index=index)
        if crops is not None and not isinstance(crops, (list, tuple)):
            raise SampleError(f"the object crops must be a list, got {type(crops).__name__}.", index=index)
        if crops is not None and len(crops) > num_object_crops:
            raise SampleError(
                f"{len(crops)} object crops given, at most num_object_crops={num_object_crops} allowed.", index=index
            )

    with contextlib.ExitStack() as files:
        samples = []
        for index, (image, crops) in enumerate(zip(images, object_crops, strict=True)):
            with at_sample(index):
                opened = [_open(image, ImagePart("`image`"), image_target, files)]
                for slot, crop in enumerate(crops or []):
                    part = ImagePart(f"`object_crops[{slot}]`", slot)
                    if crop is None:
                        raise _located(part, "the crop is None; leave absent crops out instead.")
                    opened.append(_open(crop, part, crop_target, files))
                if max_pixels is not None:
                    _check_budget(opened, max_pixels)
                _check_decode_bytes(opened)
            samples.append(opened)
        decoded = []
        for index, opened in enumerate(samples):
            with at_sample(index):
                decoded.append([_decode(item) for item in opened])
    return decoded
