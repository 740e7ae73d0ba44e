"""Endpoint requests made in code, for the robustness benchmark (`benchmarks/robustness.py`, `docs/robustness.md`)
and the tests: hostile ones (oversized, malformed or slow-to-parse fields, the hostile image files of
[`hostile_images`]) beside valid ones, and the smooth photos they carry."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from . import hostile_images as hostile
from .hostile_images import blank_png

BOMB_SIDE = 9000
"""Side of the issue's bomb: a 9000 x 9000 blank 1-bit PNG, 14 KB as base64."""
LARGE_SIDE = 4938
"""Side of the largest square image within the default pixel budget (4938 x 4938 = 24,383,844 pixels)."""
STRIP = (1, 2 * 4032 * 3024)
"""A strip of as many pixels as the default pixel budget."""
PHOTO_SIZE = (4032, 3024)
"""A 12-megapixel phone photo."""
TEXT = "Quillon met Alden in Paris"


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
