"""Image files that attack a decoder, made in code and small (for `sample_inputs.requests` and the tests): files whose
decoding does unbounded work, whose header lies about what they hold, that decode to far more memory than they take,
and corrupt files of formats Pillow reads. Each function returns the file's bytes.

None of them is ever decoded here: PNGs are compressed a batch of identical rows at a time, other containers wrap a
small picture encoded by Pillow, whose header is rewritten; only `gif` and `progressive_jpeg` have Pillow encode a
large (uniform) picture.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA)."""
_BATCH_BYTES = 1 << 22
"""Bytes of rows compressed at a time."""


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.lru_cache(maxsize=16)
def png(
    width: int,
    height: int,
    bit_depth: int = 1,
    colour_type: int = 0,
    fill: int = 0xFF,
    before: bytes = b"",
    after: bytes = b"",
) -> bytes:
    """A PNG of `width` x `height` pixels whose every byte of pixels is `fill` (0xFF: white for a grey image), with
    the chunks `before` (e.g. PLTE, tRNS) before its pixels and `after` after them."""
    row = b"\x00" + bytes([fill]) * -(-width * bit_depth * _PNG_CHANNELS[colour_type] // 8)  # filter byte, pixels
    rows_per_batch = max(1, _BATCH_BYTES // len(row))
    compressor = zlib.compressobj(9)
    data = []
    for start in range(0, height, rows_per_batch):
        data.append(compressor.compress(row * min(rows_per_batch, height - start)))
    data.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + before
        + png_chunk(b"IDAT", b"".join(data))
        + after
        + png_chunk(b"IEND", b"")
    )


def blank_png(width: int, height: int) -> bytes:
    """A blank (white) 1-bit PNG of `width` x `height` pixels (a 9000 x 9000 one is 10 KB)."""
    return png(width, height)


def palette_png_with_transparency(width: int, height: int) -> bytes:
    """An 8-bit palette PNG, every pixel index 0, which the palette's transparency makes transparent."""
    palette = png_chunk(b"PLTE", bytes([200, 40, 40]) * 2) + png_chunk(b"tRNS", b"\x00")
    return png(width, height, 8, 3, fill=0, before=palette)


def tiff_directory(entries: int, value_bytes: int, tag: int = 0x9000) -> bytes:
    """A little-endian TIFF structure (the body of an EXIF or MPF block) whose first directory has `entries` entries,
    tags `tag`, `tag + 1`, ..., each an UNDEFINED value of `value_bytes` bytes at the same offset: the block holds one
    value that a parser reading every entry reads `entries` times."""
    values_at = 8 + 2 + 12 * entries + 4
    directory = struct.pack("<H", entries) + b"".join(
        struct.pack("<HHII", (tag + index) & 0xFFFF, 7, value_bytes, values_at) for index in range(entries)
    )
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", 0) + bytes(value_bytes)


def png_with_exif_entries(entries: int = 65_535, value_bytes: int = 1 << 20) -> bytes:
    """A 16 x 16 PNG whose EXIF chunk's directory has `entries` entries each pointing at the same `value_bytes`."""
    return png(16, 16, 8, 2, fill=0x80, before=png_chunk(b"eXIf", tiff_directory(entries, value_bytes)))


def png_with_compressed_texts(chunks: int = 70) -> bytes:
    """A 16 x 16 PNG with `chunks` zTXt chunks of 1 KB, each inflating to just under 1 MB (Pillow's limit a chunk)."""
    bomb = zlib.compress(b"a" * ((1 << 20) - 100), 9)
    texts = b"".join(png_chunk(b"zTXt", b"k%d\x00\x00" % index + bomb) for index in range(chunks))
    return png(16, 16, 8, 2, fill=0x80, before=texts)


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0/SOF2) declares `width` x `height` pixels instead of its own size."""
    start = max(jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2"))
    return jpeg[: start + 5] + struct.pack(">HH", height, width) + jpeg[start + 9 :]


def jpeg_with_exif_entries(entries: int = 2_700, value_bytes: int = 32_000) -> bytes:
    """A 16 x 16 JPEG whose EXIF block (at most 64 KB, as every JPEG segment) has `entries` directory entries all
    pointing at the same `value_bytes` bytes."""
    jpeg = _encoded(Image.new("RGB", (16, 16), (90, 120, 160)), "JPEG")
    body = b"Exif\x00\x00" + tiff_directory(entries, value_bytes, tag=0x0100)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


@functools.lru_cache(maxsize=4)
def progressive_jpeg(size: tuple[int, int], scans: int) -> bytes:
    """A progressive greyscale JPEG of `size` with `scans` scans in all: Pillow's own scans of a uniform picture,
    then empty AC scans (a scan header followed by nothing) up to `scans`."""
    jpeg = _encoded(Image.new("L", size, 128), "JPEG", progressive=True, quality=90)
    own = jpeg.count(b"\xff\xda")
    empty_scan = b"\xff\xda\x00\x08\x01\x01\x00\x01\x3f\x00"  # component 1, AC coefficients 1-63
    return jpeg[:-2] + empty_scan * max(0, scans - own) + jpeg[-2:]


@functools.lru_cache(maxsize=2)
def gif(width: int, height: int) -> bytes:
    """A uniform GIF of `width` x `height` pixels (Pillow's LZW encoding of palette index 0)."""
    return _encoded(Image.new("P", (width, height), 0), "GIF")


def gif_with_comments(comment_bytes: int = 1 << 21) -> bytes:
    """An 8 x 8 GIF with a comment of `comment_bytes` bytes (255-byte blocks) before its image."""
    small = gif(8, 8)
    colour_table = 3 << ((small[10] & 7) + 1) if small[10] & 0x80 else 0
    start = 13 + colour_table
    blocks = (b"\xff" + b"c" * 255) * (comment_bytes // 255)
    return small[:start] + b"!\xfe" + blocks + b"\x00" + small[start:]


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP whose header declares `width` x `height` pixels (a 1 x 1 picture's bitstream, rewritten)."""
    webp = bytearray(_encoded(Image.new("RGB", (1, 1), (90, 120, 160)), "WEBP", lossless=True))
    start = webp.index(b"VP8L") + 8  # chunk header, then the signature byte 0x2f
    bits = int.from_bytes(webp[start + 1 : start + 5], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    webp[start + 1 : start + 5] = bits.to_bytes(4, "little")
    return bytes(webp)


def fli_black_chunks(chunks: int = 65_535, side: int = 320) -> bytes:
    """An FLI animation of one frame made of `chunks` BLACK chunks, each of which clears the whole frame."""
    frame = struct.pack("<IHH8x", 16 + 6 * chunks, 0xF1FA, chunks) + struct.pack("<IH", 6, 13) * chunks
    header = struct.pack("<IHHHHHHI", 128 + len(frame), 0xAF11, 1, side, side, 8, 0, 5).ljust(128, b"\x00")
    return header + frame


def ico_declaring_16(side: int = 9459) -> bytes:
    """An ICO whose directory declares one 16 x 16 icon, which is a `side` x `side` PNG."""
    inner = blank_png(side, side)
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 22) + inner


def icns_declaring_128(side: int = 13_000) -> bytes:
    """An ICNS whose `ic07` element (a 128 x 128 icon) is a `side` x `side` PNG."""
    inner = blank_png(side, side)
    element = b"ic07" + struct.pack(">I", 8 + len(inner)) + inner
    return b"icns" + struct.pack(">I", 8 + len(element)) + element


def blp_declaring_1x1(side: int = 13_000) -> bytes:
    """A BLP1 texture declaring 1 x 1 pixels whose JPEG mipmap declares `side` x `side`."""
    inner = _with_size(_encoded(Image.new("RGB", (16, 16), (90, 120, 160)), "JPEG"), side, side)
    data_at = 28 + 16 * 4 * 2 + 4
    offsets = struct.pack("<16I", data_at, *[0] * 15)
    lengths = struct.pack("<16I", len(inner), *[0] * 15)
    header = b"BLP1" + struct.pack("<iIIIiI", 0, 0, 1, 1, 5, 0)
    return header + offsets + lengths + struct.pack("<I", 0) + inner


def eps() -> bytes:
    """An encapsulated PostScript file: a program, which Pillow hands to Ghostscript to draw."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n"


CORRUPT = {
    "QOI": b"qoif" + struct.pack(">IIBB", 64, 64, 3, 0) + b"\xfe\xff\x00" * 40,
    "AVIF": struct.pack(">I", 24) + b"ftypavif" + b"\x00" * 4 + b"avifmif1" + b"\x00\x00\x00\x10meta" + b"\xff" * 40,
    "BLP": b"BLP2" + struct.pack("<iBBBB", 1, 2, 8, 7, 0) + struct.pack("<II", 64, 64) + b"\xff" * 40,
    "DDS": b"DDS " + struct.pack("<I", 124) + b"\xff" * 120,
    "JPEG 2000": b"\xff\x4f\xff\x51" + b"\xff" * 40,
}
"""Corrupt files of formats Pillow reads (a header, then garbage), by format."""
