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
"""What Pillow may be handed: the formats an image file may be in, and the checks of a file's metadata before
Pillow opens it, so that opening any accepted file does bounded work.

Pillow parses some metadata while it opens a file, before anyone can look at the image's size: a JPEG's segments
up to its first scan (and the first directory of its EXIF and MPF blocks, all values read), a PNG's chunks (each
compressed text or ICC profile inflated, up to 1 MB), a GIF's blocks before its first image (comments joined in
quadratic time). [`check_file`] walks the same structures as Pillow, a step at a time, and refuses a file on which
Pillow would take more than `MAX_HEADER_STEPS` steps, a JPEG of more than `MAX_JPEG_SCANS` scans (each scan is a
pass over all its coefficients when it is decoded), a JPEG directory whose values overlap, a PNG of more than
`MAX_PNG_COMPRESSED_CHUNKS` compressed chunks, a GIF of more than `MAX_GIF_COMMENT_BYTES` of comments. The EXIF
orientation is read by [`exif_orientation`], which reads one tag.

Travels to the Hub with `image_loading.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import dataclasses
import os
from typing import IO, Any

import numpy as np
from PIL import Image, JpegImagePlugin

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
"""The file formats an image may come in (Pillow's names): those photos come in. Pillow is told to try only these, so
no other decoder ever sees a post's file (ICO, ICNS and BLP decode pictures their headers do not declare, EPS hands
PostScript to Ghostscript, others have decoders that fail in many ways). A JPEG holding several pictures (MPO) gives
its first; an animated GIF, WebP or PNG its first frame."""
MAX_JPEG_SCANS = 100
"""The most scans a JPEG may have. Each scan of a progressive JPEG is a pass over all its coefficients, however small
the image is decoded; photos have about 10 (libjpeg's default progression)."""
MAX_PNG_COMPRESSED_CHUNKS = 16
"""The most compressed metadata chunks (iCCP, zTXt, iTXt) a PNG may have: Pillow inflates each, up to 1 MB, while
opening the file, and keeps the texts."""
MAX_GIF_COMMENT_BYTES = 64 * 1024
"""The most bytes of comments a GIF may have before its first image: Pillow joins their blocks in quadratic time."""
MAX_HEADER_STEPS = 1_000
"""The most steps Pillow may take parsing a file's metadata while opening it, each a Python loop iteration that may
keep a little memory: a JPEG's segments before its first scan and the stray bytes between them, a PNG's chunks other
than pixel data (IDAT, fdAT) and frame controls (fcTL), a GIF's extensions and stray bytes before its first image.
Photos have a few dozen (a large ICC profile or XMP packet a few hundred)."""
_READ_CHUNK = 1 << 20
"""Bytes read at a time when scanning a file."""
_TIFF_UNIT_SIZES = np.array([0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8, 8, 8], dtype=np.uint64)
"""Bytes per value of each TIFF field type (1 BYTE ... 13 IFD, 16-18 the BigTIFF types); 0 for unknown types,
which Pillow skips."""
_TIFF_ENTRY = {"<": np.dtype("<u2, <u2, <u4, <u4"), ">": np.dtype(">u2, >u2, >u4, >u4")}
"""A TIFF directory entry: tag, field type, count, value or offset."""
_ORIENTATION = 0x0112


def exif_orientation(exif: Any) -> int:
    """The orientation (tag 0x0112, one SHORT) in the first directory of a raw EXIF block (with or without its
    `Exif\\0\\0` header); 1 when there is none. One vectorised pass over the directory's entries, whatever their
    number and whatever they point at: Pillow's `getexif` reads every value, which a small file can make take
    minutes."""
    if not isinstance(exif, (bytes, bytearray)):
        return 1
    block = bytes(exif[6:]) if exif.startswith(b"Exif\x00\x00") else bytes(exif)
    entries = _directory_entries(block)
    if entries is None:
        return 1
    found = np.flatnonzero((entries["f0"] == _ORIENTATION) & (entries["f1"] == 3) & (entries["f2"] == 1))
    if not found.size:
        return 1
    endian = "little" if block[:2] == b"II" else "big"
    entry = int(found[-1])  # Pillow keeps the last of repeated tags
    value = int.from_bytes(block[4:8], endian) + 2 + 12 * entry + 8  # a SHORT fills the value field from its start
    return int.from_bytes(block[value : value + 2], endian)


def _directory_entries(block: bytes) -> np.ndarray | None:
    """The entries (tag `f0`, field type `f1`, count `f2`, value or offset `f3`) of the first directory of a TIFF
    structure (an EXIF or MPF block), as many as the block holds; `None` when it is not one."""
    endian = {b"II*\x00": "<", b"MM\x00*": ">"}.get(block[:4])
    if endian is None:
        return None
    offset = int.from_bytes(block[4:8], "little" if endian == "<" else "big")
    if offset + 2 > len(block):
        return None
    declared = int.from_bytes(block[offset : offset + 2], "little" if endian == "<" else "big")
    count = min(declared, (len(block) - offset - 2) // 12)
    return np.frombuffer(block, dtype=_TIFF_ENTRY[endian], count=count, offset=offset + 2)


def _directory_problem(block: bytes, name: str) -> str | None:
    """Why Pillow must not read the first directory of an EXIF or MPF block, or `None`.

    Pillow reads every value of that directory while opening a JPEG (for its resolution, its pictures). The values
    of a directory written by a camera lie side by side in the block; overlapping ones let a 64 KB block make Pillow
    copy gigabytes. So the values may take at most the block's size plus 64 KiB together."""
    entries = _directory_entries(block)
    if entries is None:
        return None
    types = np.minimum(entries["f1"], len(_TIFF_UNIT_SIZES) - 1)
    sizes = entries["f2"].astype(np.uint64) * _TIFF_UNIT_SIZES[types]
    pointed = int(sizes[sizes > 4].sum())  # values of 4 bytes or less lie in the entry itself
    if pointed <= len(block) + 65536:
        return None
    return (
        f"its {name} block of {len(block):,} bytes has {len(entries):,} entries pointing at {pointed:,} bytes of "
        "values (overlapping), which Pillow would all read"
    )


def _jpeg_problem(fp: IO[bytes]) -> tuple[str | None, int]:
    """Why a JPEG must not be opened, or `None`, and its number of scans.

    Walks its segments up to its first scan step by step as Pillow's `JpegImageFile._open` does (counting the steps,
    checking the directories of its EXIF and MPF blocks), then counts its start-of-scan markers in the whole file: a
    marker never occurs inside compressed data, so the count is never below the scans libjpeg reads."""
    fp.seek(3)  # Pillow reads the start-of-image marker and the first byte of the next marker, then starts there
    current, steps = 0xFF, 0
    while True:
        steps += 1
        if steps > MAX_HEADER_STEPS:
            return f"a JPEG of more than MAX_HEADER_STEPS={MAX_HEADER_STEPS:,} segments and stray bytes", 0
        if current != 0xFF:  # a stray byte, which Pillow skips
            following = fp.read(1)
        else:
            following = fp.read(1)
            marker = 0xFF00 | following[0] if following else None
            if marker in JpegImagePlugin.MARKER:
                if JpegImagePlugin.MARKER[marker][2] is not None:  # a segment: its length, then its body
                    body = int.from_bytes(fp.read(2), "big") - 2
                    signature = fp.read(6)[:6] if marker in (0xFFE1, 0xFFE2) and body >= 6 else b""
                    directory = {b"Exif\x00\x00": ("EXIF", 6), b"MPF\x00": ("MPF", 4)}
                    name = next((value for key, value in directory.items() if signature.startswith(key)), None)
                    if name is not None:
                        problem = _directory_problem(signature[name[1] :] + fp.read(body - 6), name[0])
                        if problem:
                            return problem, 0
                    else:
                        fp.seek(max(0, body - len(signature)), os.SEEK_CUR)
                if marker == 0xFFDA:
                    break
                following = fp.read(1)
            elif marker == 0xFFFF:  # a fill byte before a marker
                following = b"\xff"
            elif marker == 0xFF00:
                following = fp.read(1)
            else:  # Pillow refuses the file
                break
        if not following:
            break
        current = following[0]
    fp.seek(0)
    scans, tail = 0, b""
    while chunk := fp.read(_READ_CHUNK):
        scans += (tail + chunk).count(b"\xff\xda")
        tail = chunk[-1:]
    if scans > MAX_JPEG_SCANS:
        return f"a JPEG of {scans:,} scans, more than MAX_JPEG_SCANS={MAX_JPEG_SCANS}", scans
    return None, scans


def _png_problem(fp: IO[bytes]) -> tuple[str | None, bool]:
    """Why a PNG must not be opened, or `None`, and whether it has an EXIF chunk: walks its chunks as Pillow reads
    them, counting the compressed metadata chunks and the chunks other than pixel data and frame controls."""
    fp.seek(8)
    compressed, steps, exif = 0, 0, False
    while len(header := fp.read(8)) == 8 and header[4:] != b"IEND":
        kind = header[4:]
        compressed += kind in (b"iCCP", b"zTXt", b"iTXt")
        steps += kind not in (b"IDAT", b"fdAT", b"fcTL")
        exif = exif or kind == b"eXIf"
        fp.seek(int.from_bytes(header[:4], "big") + 4, os.SEEK_CUR)
    if compressed > MAX_PNG_COMPRESSED_CHUNKS:
        return (
            f"a PNG of {compressed:,} compressed metadata chunks (iCCP, zTXt, iTXt), more than "
            f"MAX_PNG_COMPRESSED_CHUNKS={MAX_PNG_COMPRESSED_CHUNKS}"
        ), exif
    if steps > MAX_HEADER_STEPS:
        return f"a PNG of {steps:,} metadata chunks, more than MAX_HEADER_STEPS={MAX_HEADER_STEPS:,}", exif
    return None, exif


def _gif_problem(fp: IO[bytes]) -> str | None:
    """Why a GIF must not be opened, or `None`: walks its blocks up to its first image as Pillow reads them, counting
    the extensions and stray bytes and adding up the comments."""
    fp.seek(0)
    header = fp.read(13)
    if len(header) == 13 and header[10] & 0x80:  # a global colour table
        fp.seek(3 << ((header[10] & 7) + 1), os.SEEK_CUR)
    comments = steps = 0
    while (byte := fp.read(1)) not in (b"", b";", b","):
        steps += 1
        if steps > MAX_HEADER_STEPS:
            return f"a GIF of more than MAX_HEADER_STEPS={MAX_HEADER_STEPS:,} blocks before its first image"
        if byte != b"!":
            continue  # Pillow skips a stray byte
        label = fp.read(1)
        while (size := fp.read(1)) not in (b"", b"\x00"):
            comments += size[0] if label == b"\xfe" else 0
            fp.seek(size[0], os.SEEK_CUR)
    if comments > MAX_GIF_COMMENT_BYTES:
        return f"a GIF of {comments:,} bytes of comments, more than MAX_GIF_COMMENT_BYTES={MAX_GIF_COMMENT_BYTES:,}"
    return None


def _accepts(file_format: str, prefix: bytes) -> bool:
    """Whether Pillow's plugin for `file_format` recognises a file starting with `prefix` (its first 16 bytes)."""
    if file_format not in Image.OPEN:
        Image.init()
    accept = Image.OPEN[file_format][1] if file_format in Image.OPEN else None
    try:
        return bool(accept and accept(prefix))
    except Exception:  # a plugin's check of a prefix it does not expect
        return False


def format_refusal(prefix: bytes) -> str:
    """Why a file in none of `ACCEPTED_FORMATS` is refused, naming its format when a Pillow plugin recognises it (only
    the plugins' checks of the first bytes run: no decoder)."""
    Image.init()
    listed = ", ".join(ACCEPTED_FORMATS[:-1])
    found = next((name for name in Image.ID if name not in ACCEPTED_FORMATS and _accepts(name, prefix)), None)
    if found is None:
        return f"not a {listed} or {ACCEPTED_FORMATS[-1]} file"
    return f"its format is {found}; the accepted formats are {listed} and {ACCEPTED_FORMATS[-1]}"


def accepted_format(prefix: bytes) -> str | None:
    """The one of `ACCEPTED_FORMATS` whose Pillow plugin recognises a file starting with `prefix` (its first 16
    bytes), or `None`."""
    return next((name for name in ACCEPTED_FORMATS if _accepts(name, prefix)), None)


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """What [`check_file`] found in a file before Pillow opens it."""

    problem: str | None
    """Why Pillow must not open the file, or `None`."""
    scans: int = 1
    """The start-of-scan markers of a JPEG."""
    late_exif: bool = False
    """Whether the file has an EXIF block that Pillow may read only while decoding the pixels (a PNG's EXIF chunk,
    which may follow them)."""


def check_file(fp: IO[bytes], file_format: str) -> FileCheck:
    """Checks the metadata Pillow parses while opening a file of one of `ACCEPTED_FORMATS` (see the module's
    documentation), reading `fp` a little at a time."""
    if file_format == "JPEG":
        problem, scans = _jpeg_problem(fp)
        return FileCheck(problem, scans=scans)
    if file_format == "PNG":
        problem, exif = _png_problem(fp)
        return FileCheck(problem, late_exif=exif)
    if file_format == "GIF":
        return FileCheck(_gif_problem(fp))
    return FileCheck(None)
