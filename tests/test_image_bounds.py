"""The bounds on every image a post brings (processing/image_loading.py, processing/image_files.py): the accepted
formats, the metadata Pillow parses while opening a file, the aspect ratio, the memory decoding takes, the EXIF
orientation read with a bounded parser, conversions made after reducing, and the same pixels for every form of an
image (path, bytes, an image opened and not loaded yet)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from _processor_fixtures import build, random_image
from PIL import (
    AvifImagePlugin,
    BlpImagePlugin,
    DdsImagePlugin,
    EpsImagePlugin,
    FliImagePlugin,
    IcnsImagePlugin,
    IcoImagePlugin,
    Image,
    ImageFile,
    Jpeg2KImagePlugin,
    QoiImagePlugin,
    TiffImagePlugin,
)

from processing import image_files, image_loading
from sample_inputs import hostile_images as hostile

ACCEPTED = "the accepted formats are JPEG, PNG, WEBP and GIF"


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """The tests' processor: a CLIP image processor resizing the shorter side to 32 pixels, 16-pixel crops."""
    return build(tmp_path_factory)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def tiff() -> bytes:
    return encoded(random_image(np.random.default_rng(0), 16, 16), "TIFF")


REFUSED_FORMATS = [
    ("BLP", BlpImagePlugin.BlpImageFile, hostile.blp_declaring_1x1),
    ("ICO", IcoImagePlugin.IcoImageFile, lambda: hostile.ico_declaring_16(side=2000)),
    ("ICNS", IcnsImagePlugin.IcnsImageFile, lambda: hostile.icns_declaring_128(side=2000)),
    ("EPS", EpsImagePlugin.EpsImageFile, hostile.eps),
    ("FLI", FliImagePlugin.FliImageFile, lambda: hostile.fli_black_chunks(chunks=1000)),
    ("QOI", QoiImagePlugin.QoiImageFile, lambda: hostile.CORRUPT["QOI"]),
    ("AVIF", AvifImagePlugin.AvifImageFile, lambda: hostile.CORRUPT["AVIF"]),
    ("BLP", BlpImagePlugin.BlpImageFile, lambda: hostile.CORRUPT["BLP"]),
    ("DDS", DdsImagePlugin.DdsImageFile, lambda: hostile.CORRUPT["DDS"]),
    ("JPEG2000", Jpeg2KImagePlugin.Jpeg2KImageFile, lambda: hostile.CORRUPT["JPEG 2000"]),
    ("TIFF", TiffImagePlugin.TiffImageFile, tiff),
]


@pytest.mark.parametrize(("name", "plugin", "make"), REFUSED_FORMATS)
def test_files_of_other_formats_are_refused_naming_the_format_before_any_decoder_runs(
    processor, monkeypatch, decodes, tmp_path, name, plugin, make
):
    """An ICO or an ICNS decodes a picture its header does not declare while it opens, a BLP when it loads, an EPS is
    handed to Ghostscript, corrupt QOI, AVIF, BLP, DDS and JPEG 2000 files raise IndexError, RuntimeError,
    BLPFormatError, ...: no decoder but those of the accepted formats may ever see a file."""
    opened = []
    monkeypatch.setattr(plugin, "_open", lambda image: opened.append(image))
    data = make()
    (tmp_path / "post.jpg").write_bytes(data)
    with pytest.raises(ValueError, match=rf"^Cannot read the image: its format is {name}; {ACCEPTED}\.$"):
        processor.image_processor.load_image(data)
    with pytest.raises(ValueError, match=rf"^Cannot read the image '.*post.jpg': its format is {name}; {ACCEPTED}\.$"):
        processor.image_processor.load_image(tmp_path / "post.jpg")
    with pytest.raises(ValueError, match=rf"^`image`: cannot read the image: its format is {name}; {ACCEPTED}\.$"):
        processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=data)
    with pytest.raises(ValueError, match=rf"^Sample 1, object crop 0: cannot read the image: its format is {name};"):
        processor(images=[random_image(np.random.default_rng(0))] * 2, object_crops=[[], [data]])
    assert opened == [] and decodes == []


def test_bytes_of_no_image_format_are_refused_naming_the_formats(processor):
    with pytest.raises(ValueError, match=r"^Cannot read the image: not a JPEG, PNG, WEBP or GIF file\.$"):
        processor.image_processor.load_image(b"plain text, not an image")


def test_postscript_opened_by_the_caller_never_reaches_ghostscript(processor, monkeypatch):
    """A PIL image opened and not loaded is decoded from its file, so it meets the same formats: an EPS opened by the
    caller is refused, never loaded (loading it runs Ghostscript on the PostScript)."""
    ghostscript = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: ghostscript.append(args))
    with Image.open(io.BytesIO(hostile.eps())) as image:
        with pytest.raises(ValueError, match=rf"^Cannot read the image: its format is EPS; {ACCEPTED}\.$"):
            processor.image_processor.load_image(image)
    assert ghostscript == []


def com_segments(count: int) -> bytes:
    """A 16 x 16 JPEG with `count` empty comment segments after its start."""
    jpeg = encoded(Image.new("RGB", (16, 16), (90, 120, 160)), "JPEG")
    return jpeg[:2] + b"\xff\xfe\x00\x02" * count + jpeg[2:]


def text_chunks(count: int) -> bytes:
    """A 16 x 16 PNG with `count` empty tEXt chunks before its pixels."""
    return hostile.png(16, 16, 8, 2, before=hostile.png_chunk(b"tEXt", b"k\x00") * count)


def comments(blocks: int) -> bytes:
    return hostile.gif_with_comments(255 * blocks)


METADATA = [
    (
        lambda: hostile.progressive_jpeg((512, 512), image_files.MAX_JPEG_SCANS + 1),
        lambda: hostile.progressive_jpeg((512, 512), image_files.MAX_JPEG_SCANS),
        "a JPEG of 101 scans, more than MAX_JPEG_SCANS=100",
    ),
    (
        lambda: hostile.jpeg_with_exif_entries(2700, 32_000),
        lambda: hostile.jpeg_with_exif_entries(2, 32_000),
        "its EXIF block of 64,414 bytes has 2,700 entries pointing at 86,400,000 bytes of values (overlapping), which "
        "Pillow would all read",
    ),
    (
        lambda: hostile.png_with_compressed_texts(image_files.MAX_PNG_COMPRESSED_CHUNKS + 1),
        lambda: hostile.png_with_compressed_texts(image_files.MAX_PNG_COMPRESSED_CHUNKS),
        "a PNG of 17 compressed metadata chunks (iCCP, zTXt, iTXt), more than MAX_PNG_COMPRESSED_CHUNKS=16",
    ),
    (
        lambda: comments(258),  # 65,790 bytes
        lambda: comments(257),  # 65,535 bytes
        "a GIF of 65,790 bytes of comments, more than MAX_GIF_COMMENT_BYTES=65,536",
    ),
    (
        lambda: com_segments(image_files.MAX_HEADER_STEPS),
        lambda: com_segments(image_files.MAX_HEADER_STEPS - 20),
        "a JPEG of more than MAX_HEADER_STEPS=1,000 segments and stray bytes",
    ),
    (
        lambda: text_chunks(image_files.MAX_HEADER_STEPS),  # and IHDR
        lambda: text_chunks(image_files.MAX_HEADER_STEPS - 1),
        "a PNG of 1,001 metadata chunks, more than MAX_HEADER_STEPS=1,000",
    ),
]


@pytest.mark.parametrize(("refused", "accepted", "problem"), METADATA)
def test_the_metadata_pillow_parses_while_opening_a_file_is_bounded(processor, decodes, refused, accepted, problem):
    """What Pillow reads before anyone sees the image's size: each scan of a progressive JPEG is a pass over all its
    coefficients (20,000 empty scans took 58 s), an EXIF directory is read value by value (overlapping values: 64 KB
    made Pillow hold 83 MB), each compressed PNG chunk is inflated to 1 MB (70 of them: +66 MB), GIF comments are
    joined in quadratic time (2 MB: 4 s), every JPEG segment and PNG chunk is parsed in Python."""
    with pytest.raises(ValueError, match=r"^Refusing to decode the image: ") as refusal:
        processor.image_processor.load_image(refused())
    assert str(refusal.value) == f"Refusing to decode the image: {problem}."
    assert decodes == []
    assert processor.image_processor.load_image(accepted(), reduce_for="image").mode == "RGB"


def exif_block(orientation: int, entries: int, value_bytes: int, endian: str = "<") -> bytes:
    """A TIFF structure whose first directory has `entries - 1` entries pointing at the same `value_bytes` bytes, then
    the orientation."""
    values_at = 8 + 2 + 12 * entries + 4
    directory = b"".join(
        struct.pack(f"{endian}HHII", (0x9000 + index) & 0xFFFF, 7, value_bytes, values_at)
        for index in range(entries - 1)
    )
    directory += struct.pack(f"{endian}HHIHH", 0x0112, 3, 1, orientation, 0)
    header = b"II*\x00" if endian == "<" else b"MM\x00*"
    return (
        header + struct.pack(f"{endian}IH", 8, entries) + directory + struct.pack(f"{endian}I", 0) + bytes(value_bytes)
    )


def exif_png(orientation: int, entries: int, value_bytes: int) -> bytes:
    """A 40 x 20 PNG, left half red and right half blue, with the EXIF block of [`exif_block`]."""
    exif = exif_block(orientation, entries, value_bytes)
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    png = encoded(image, "PNG")
    return png[:33] + hostile.png_chunk(b"eXIf", exif) + png[33:]  # after the signature and IHDR


def test_the_exif_orientation_is_read_without_parsing_the_whole_directory(processor, monkeypatch):
    """Pillow's `getexif` reads every value of the directory: 65,535 entries pointing at 1 MB took 28 s. The
    orientation is read by a parser of that one tag, and still applied (6: turn 90° clockwise to show)."""
    monkeypatch.setattr(Image.Image, "getexif", lambda image: pytest.fail("getexif reads every value"))
    loaded = np.asarray(processor.image_processor.load_image(exif_png(6, 65_535, 1 << 20))).astype(int)
    assert loaded.shape == (40, 20, 3)
    assert loaded[5, 10, 0] > 200 and loaded[5, 10, 2] < 60  # red on top
    assert loaded[35, 10, 2] > 200 and loaded[35, 10, 0] < 60  # blue at the bottom
    assert image_files.exif_orientation(b"Exif\x00\x00" + exif_block(8, 3, 16)) == 8
    assert image_files.exif_orientation(exif_block(3, 2, 0, endian=">")) == 3
    assert image_files.exif_orientation(b"not a directory") == 1 and image_files.exif_orientation(None) == 1


def strip(width: int, height: int) -> bytes:
    return hostile.palette_png_with_transparency(width, height)


def test_images_far_longer_than_wide_are_refused_in_every_form(processor, tmp_path, decodes):
    """A strip cannot be decoded at a reduced scale, and CLIP's resize of the shorter side would enlarge it: a 47 KB
    1 x 24.4M palette PNG took +1.6 GB. Up to `MAX_ASPECT_RATIO` times longer than wide is a photo's shape."""
    (tmp_path / "strip.png").write_bytes(strip(1, 21))
    refusals = [
        (strip(1, 21), "The image is 1x21"),
        (strip(21, 1), "The image is 21x1"),
        (str(tmp_path / "strip.png"), f"The image {str(tmp_path / 'strip.png')!r} is 1x21"),
        (np.zeros((1, 21), np.uint8), "The image is 21x1"),
        (Image.new("RGB", (21, 1)), "The image is 21x1"),
        (hostile.palette_png_with_transparency(1, 2 * 4032 * 3024), "The image is 1x24385536"),
    ]
    for image, start in refusals:
        with pytest.raises(ValueError) as refusal:
            processor.image_processor.load_image(image, reduce_for="image")
        assert str(refusal.value) == f"{start} pixels, one side more than MAX_ASPECT_RATIO=20 times the other."
    assert decodes == []
    for image in (strip(1, 20), strip(20, 1), np.zeros((1, 20), np.uint8), Image.new("RGB", (20, 1))):
        assert processor.image_processor.load_image(image).size in ((1, 20), (20, 1))


def decode_cost(
    pixels: int, bytes_per_pixel: int, width: int, height: int, target: int, file_bytes: int = 0, resized: bool = True
) -> int:
    """The memory `_decode_bytes` allows a file of `width` x `height` pixels for a resize to `target`: the decoder's
    pixels and working memory (and a WebP read whole, twice), the RGB result of the reduction (4 bytes a pixel), one
    band of it (24 bytes a pixel) and, when it is `resized`, the image processor's float32 copy of the result (12
    bytes a pixel)."""
    factor = min(width, height) // (2 * target)
    result = -(-width // factor) * -(-height // factor)
    band = 24 * min(pixels, max(1 << 18, width * factor))
    return pixels * bytes_per_pixel + 2 * file_bytes + 4 * 2**20 + 4 * result + band + 12 * result * resized


def test_decoding_may_take_at_most_max_decode_bytes(processor, monkeypatch, decodes):
    """A 58-byte WebP declaring 4938 x 4938 pixels within the pixel budget decoded to +372 MB (libwebp's buffers and
    Pillow's copies take 16 bytes a pixel): the memory decoding takes is estimated from the header and bounded."""
    webp = hostile.webp_declaring(4938, 4938)
    cost = decode_cost(4938 * 4938, 16, 4938, 4938, 32, len(webp), resized=False) / 2**20
    with pytest.raises(ValueError) as refusal:
        processor.image_processor.load_image(webp, max_image_pixels=2 * 4032 * 3024, reduce_for="image")
    assert str(refusal.value) == (
        f"The image would take {cost:.1f} MiB to decode (4938x4938 WEBP {cost:.1f} MiB), more than "
        "MAX_DECODE_BYTES=128 MiB."
    )
    cost = decode_cost(4938 * 4938, 16, 4938, 4938, 32, len(webp)) / 2**20
    with pytest.raises(ValueError, match=rf"^The image would take {cost:.1f} MiB to decode \(`image` 4938x4938 WEBP"):
        processor(images=webp, max_image_pixels=2 * 4032 * 3024)
    assert decodes == []

    png = encoded(random_image(np.random.default_rng(0), 600, 600), "PNG")
    image_cost, crop_cost = decode_cost(360_000, 4, 600, 600, 32), decode_cost(360_000, 4, 600, 600, 16)
    monkeypatch.setattr(image_loading, "MAX_DECODE_BYTES", image_cost + crop_cost - 1)
    assert processor(images=png)["pixel_values"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError) as refusal:
        processor(images=png, object_crops=[png])
    assert str(refusal.value) == (
        f"The images would take {(image_cost + crop_cost) / 2**20:.1f} MiB together to decode (`image` 600x600 PNG "
        f"{image_cost / 2**20:.1f} MiB, `object_crops[0]` 600x600 PNG {crop_cost / 2**20:.1f} MiB), more than "
        f"MAX_DECODE_BYTES={(image_cost + crop_cost - 1) // 2**20} MiB."
    )
    monkeypatch.setattr(image_loading, "MAX_DECODE_BYTES", image_cost + crop_cost)
    assert processor(images=png, object_crops=[png])["object_mask"].tolist() == [[1, 0, 0]]


def mode_png(mode: str) -> bytes:
    """A 1200 x 1000 PNG of random pixels in `mode` (16-bit grey, palette with transparency, RGBA, grey + alpha)."""
    rng = np.random.default_rng(1)
    if mode == "I;16":
        return encoded(Image.fromarray(rng.integers(0, 65536, (1000, 1200), dtype=np.uint16)), "PNG")
    image = Image.fromarray(rng.integers(0, 256, (1000, 1200, 4), dtype=np.uint8), mode="RGBA")
    if mode == "P":
        return encoded(image.convert("RGB").convert("P"), "PNG", transparency=3)
    return encoded(image.convert(mode), "PNG")


@pytest.mark.parametrize("mode", ["I;16", "P", "RGBA", "LA"])
def test_images_are_converted_after_reducing_a_band_at_a_time(processor, monkeypatch, mode):
    """Palette, 16-bit and transparent images were converted at full size (a 4938 x 4938 16-bit PNG: +605 MB): they
    are reduced and converted a band of rows at a time, and the pixels are those of the whole image converted."""
    data = mode_png(mode)
    with Image.open(io.BytesIO(data)) as full:
        assert full.mode == mode
        factor = 1000 // (2 * 32)
        reference = image_loading.to_rgb(
            (image_loading.to_rgb(full) if mode in ("I;16", "P") else full).reduce(factor)
        )
    converted = []
    to_rgb = image_loading.to_rgb
    monkeypatch.setattr(image_loading, "to_rgb", lambda image: converted.append(image.size) or to_rgb(image))
    loaded = processor.image_processor.load_image(data, reduce_for="image")
    assert loaded.size == reference.size == (80, 67)
    assert np.array_equal(np.asarray(loaded), np.asarray(reference))
    band = max(1, (1 << 18) // (1200 * factor)) * factor
    assert max(width * height for width, height in converted) <= 1200 * band < 1200 * 1000 // 3


def test_a_decoders_failure_of_any_type_is_a_value_error_naming_the_field(processor, monkeypatch):
    """A corrupt file made Pillow raise IndexError, RuntimeError, OverflowError...: the handler answered
    "IndexError while predicting"."""

    def failing_load(image):
        raise IndexError("index out of range")

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    png = encoded(random_image(np.random.default_rng(0), 20, 10), "PNG")
    with pytest.raises(ValueError, match=r"^Cannot read the image: index out of range\.$"):
        processor.image_processor.load_image(png)
    with pytest.raises(ValueError, match=r"^`object_crops\[0\]`: cannot read the image: index out of range\.$"):
        processor(images=random_image(np.random.default_rng(0)), object_crops=[png])


def test_uint16_arrays_of_either_byte_order_and_the_dimensions_of_an_array(processor):
    rng = np.random.default_rng(2)
    native = rng.integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    expected = np.rint(native / 257).astype(np.uint8)
    for array in (native, native.astype(">u2"), native.astype("<u2")):
        assert np.array_equal(np.asarray(processor.image_processor.load_image(array)), expected), array.dtype
    with pytest.raises(ValueError) as refusal:
        processor.image_processor.load_image(np.zeros(5, np.uint8))
    assert str(refusal.value) == (
        "An image array must have 2 or 3 dimensions, (H, W) or (H, W, C) with C in (1, 3, 4), got shape (5,)."
    )
    with pytest.raises(ValueError, match=r"^`image`: An image array must have 2 or 3 dimensions"):
        processor(images=np.zeros((2, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"got dtype >i2\.$"):
        processor.image_processor.load_image(np.zeros((2, 2), ">i2"))


def test_the_pixel_budget_takes_exactly_max_image_pixels(processor):
    image, crop = np.zeros((10, 10), np.uint8), Image.new("RGB", (5, 4))
    assert processor.image_processor.load_image(image, max_image_pixels=100).size == (10, 10)
    with pytest.raises(ValueError, match=r"^The image holds 100 pixels \(10x10\), more than max_image_pixels=99\.$"):
        processor.image_processor.load_image(image, max_image_pixels=99)
    assert processor(images=image, object_crops=[crop], max_image_pixels=120)["object_mask"].sum() == 1
    with pytest.raises(ValueError, match=r"^The images hold 120 pixels together \(`image` 10x10, `object_crops"):
        processor(images=image, object_crops=[crop], max_image_pixels=119)


def test_a_path_its_bytes_and_the_image_opened_from_it_give_the_same_pixels(processor, tmp_path):
    """A path or bytes got the reduced-scale JPEG decoding, `Image.open(path)` a full decoding (0.5649 against
    0.5726 for one photo): a PIL image not loaded yet is decoded from its file exactly as the path, and is left as
    the caller opened it. A decoded PIL image is used as it is (the documented rule)."""
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((800, 600), Image.BICUBIC)
    path = tmp_path / "photo.jpg"
    picture.save(path, quality=90)
    crop_path = tmp_path / "crop.jpg"
    picture.crop((0, 0, 400, 300)).save(crop_path, quality=90)
    reference = processor.image_processor(str(path), object_crops=[str(crop_path)])
    forms = [
        (path, crop_path),
        (path.read_bytes(), crop_path.read_bytes()),
        (Image.open(path), Image.open(crop_path)),
        (Image.open(io.BytesIO(path.read_bytes())), Image.open(io.BytesIO(crop_path.read_bytes()))),
    ]
    for image, crop in forms:
        pixels = processor.image_processor(image, object_crops=[crop])
        for name in ("pixel_values", "object_pixel_values"):
            assert np.array_equal(pixels[name].numpy(), reference[name].numpy()), (type(image).__name__, name)
    opened = forms[2][0]
    assert opened.size == (800, 600) and opened.tile  # neither drafted nor loaded
    decoded = Image.open(path).convert("RGB")
    full = processor.image_processor(decoded)["pixel_values"]
    reduced = decoded.reduce(600 // (2 * 32))  # reduced like any large image, but not decoded at a reduced scale
    assert np.array_equal(full.numpy(), np.stack(processor.image_processor.resize([reduced])))
    assert not np.array_equal(full.numpy(), reference["pixel_values"].numpy())
