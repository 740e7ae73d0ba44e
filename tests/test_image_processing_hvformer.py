"""HVFormerImageProcessor: images and object crops to uint8 pixels within bounds (image modes and files, the pixel
budget, the reduced decode of large images, crops and their mask), the pixels of the vision encoder's own image
processor, and the statistics the model normalises with."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
from _processor_fixtures import (
    CROP_SIZE,
    IMAGE_PROCESSORS,
    IMAGE_SIZE,
    build,
    image_processor,
    matching_config,
    random_image,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.auto.image_processing_auto import AutoImageProcessor

from processing import image_loading
from processing.image_processing_hvformer import HVFormerImageProcessor
from processing.processing_hvformer import HVFormerProcessor
from sample_inputs.hostile_images import blank_png
from sample_inputs.requests import photo


@pytest.fixture(scope="module")
def processor(tmp_path_factory) -> HVFormerProcessor:
    return build(tmp_path_factory)


def test_too_many_crops_is_an_error(processor):
    rng = np.random.default_rng(0)
    crops = [random_image(rng) for _ in range(4)]
    with pytest.raises(ValueError, match="Sample 1: 4 object crops given, at most num_object_crops=3"):
        processor.image_processor([random_image(rng)] * 2, object_crops=[[], crops])
    with pytest.raises(ValueError, match="^4 object crops given"):
        processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=random_image(rng), object_crops=crops)


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image | np.ndarray:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-1000, 70000, (height, width)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((height, width)).astype(np.float32))
    if mode == "La":
        return Image.fromarray(rgba[..., [0, 3]], mode="LA").convert("La")
    if mode == "array-float":
        return rng.random((height, width, 3))
    if mode == "P+transparency":
        image = Image.fromarray(rgba[..., :3]).convert("P")
        image.info["transparency"] = 0
        return image
    if mode == "array-uint16":
        return rng.integers(0, 65536, (height, width), dtype=np.uint16)
    if mode.startswith("array"):
        shapes = {"array-HW": (height, width), "array-HWC": (height, width, 3), "array-HWA": (height, width, 4)}
        return rng.integers(0, 256, shapes[mode], dtype=np.uint8)
    return Image.fromarray(rgba, mode="RGBA").convert(mode)


MODES = ["1", "L", "LA", "La", "RGB", "RGBA", "P", "P+transparency", "CMYK", "I;16", "I", "F"]


MODES += ["array-HW", "array-HWC", "array-HWA", "array-uint16", "array-float"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(1, 48),
    height=st.integers(1, 48),
    seed=st.integers(0, 2**16),
    num_crops=st.integers(0, 3),
)
def test_property_image_modes_and_sizes(processor, mode, width, height, seed, num_crops):
    image = make_image(mode, width, height, seed)
    if max(width, height) > image_loading.MAX_ASPECT_RATIO * min(width, height):
        with pytest.raises(ValueError, match=rf"^The image is {width}x{height} pixels, one side more than"):
            processor.image_processor.load_image(image)
        return
    loaded = processor.image_processor.load_image(image)
    assert loaded.mode == "RGB" and loaded.size == (width, height)
    encoding = processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=image, object_crops=[image] * num_crops)
    assert encoding["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert encoding["object_pixel_values"].shape == (1, 3, 3, CROP_SIZE, CROP_SIZE)
    assert encoding["object_mask"].tolist() == [[1] * num_crops + [0] * (3 - num_crops)]
    assert torch.isfinite(encoding["pixel_values"]).all()


@pytest.mark.parametrize(
    ("image", "rgb"),
    [
        (Image.new("RGBA", (3, 2), (10, 20, 30, 0)), (255, 255, 255)),
        (Image.new("RGBA", (3, 2), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("LA", (3, 2), (40, 0)), (255, 255, 255)),
        (Image.new("L", (3, 2), 77), (77, 77, 77)),
        (Image.new("CMYK", (3, 2), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.fromarray(np.full((2, 3), 65535, dtype=np.uint16)), (255, 255, 255)),
        (Image.fromarray(np.full((2, 3), 257 * 9, dtype=np.uint16)), (9, 9, 9)),
        (Image.fromarray(np.full((2, 3), 257 * 200, dtype=np.int32)), (200, 200, 200)),
        (np.full((2, 3), 257 * 3, dtype=np.uint16), (3, 3, 3)),
        (np.full((2, 3, 1), 5, dtype=np.uint8), (5, 5, 5)),
        (np.zeros((2, 3), dtype=bool), (0, 0, 0)),
        (Image.fromarray(np.full((2, 3), 0.2, dtype=np.float32)), (51, 51, 51)),
        (np.full((2, 3), 0.2, dtype=np.float64), (51, 51, 51)),
        (np.full((2, 3, 3), [0.0, 0.5, 1.0], dtype=np.float32), (0, 128, 255)),
        (Image.new("LA", (3, 2), (90, 255)).convert("La"), (90, 90, 90)),
        (Image.new("LA", (3, 2), (90, 0)).convert("La"), (255, 255, 255)),
    ],
)
def test_image_modes_convert_to_rgb(processor, image, rgb):
    loaded = processor.image_processor.load_image(image)
    assert loaded.mode == "RGB" and loaded.size == (3, 2)
    assert np.all(np.asarray(loaded) == np.array(rgb, dtype=np.uint8))


def test_palette_transparency_composites_on_white(processor):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    assert np.asarray(processor.image_processor.load_image(image)).tolist() == [[[255, 255, 255], [200, 10, 10]]]


@pytest.mark.parametrize(
    "array", [np.zeros((4, 4), np.int64), np.zeros((3, 5, 6), np.uint8), np.zeros((4, 4, 2), np.uint8)]
)
def test_unsupported_arrays_raise(processor, array):
    with pytest.raises(ValueError, match="image array must"):
        processor.image_processor.load_image(array)


@pytest.mark.parametrize(
    "image",
    [
        np.full((2, 2), 255.0),
        np.array([[0.5, -0.1]], dtype=np.float32),
        np.array([[0.5, np.nan]]),
        Image.fromarray(np.full((2, 2), 255.0, dtype=np.float32)),
    ],
)
def test_float_images_outside_zero_one_are_refused(processor, image):
    with pytest.raises(ValueError, match=r"A float image must hold finite values in \[0, 1\]"):
        processor.image_processor.load_image(image)


def test_image_files_png_jpeg_webp_and_palette(processor, tmp_path):
    rng = np.random.default_rng(1)
    image = random_image(rng, 9, 7)
    for name, saved in [("a.png", image), ("b.jpg", image), ("c.gif", image.convert("P")), ("d.webp", image)]:
        saved.save(tmp_path / name)
        loaded = processor.image_processor.load_image(tmp_path / name)
        assert loaded.mode == "RGB" and loaded.size == (9, 7)
    assert np.array_equal(np.asarray(processor.image_processor.load_image(str(tmp_path / "a.png"))), np.asarray(image))


def test_exif_orientation_is_applied(processor, tmp_path):
    """Orientation 6 means: rotate 90° clockwise to display; a 40x20 (WxH) file shows as 20x40, left half on top."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "rotated.jpg") as opened:
        sources = [tmp_path / "rotated.jpg", opened.copy()]
    for source in sources:
        loaded = np.asarray(processor.image_processor.load_image(source)).astype(int)
        assert loaded.shape == (40, 20, 3)
        assert loaded[5, 10, 0] > 200 and loaded[5, 10, 2] < 60  # red on top
        assert loaded[35, 10, 2] > 200 and loaded[35, 10, 0] < 60  # blue at the bottom


def test_unreadable_files_raise_value_errors_naming_the_path(processor, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a JPEG")
    with pytest.raises(ValueError, match="Cannot read the image .*corrupt.jpg"):
        processor.image_processor.load_image(corrupt)
    random_image(np.random.default_rng(2), 64, 64).save(tmp_path / "full.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    with pytest.raises(ValueError, match="Cannot read the image .*truncated.jpg"):
        processor.image_processor.load_image(truncated)
    with pytest.raises(ValueError, match="Cannot read the image .*missing.png"):
        processor.image_processor.load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="Sample 1: cannot read the image .*missing.png'"):
        processor(images=[tmp_path / "full.jpg", tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="Sample 0, object crop 1: cannot read the image .*corrupt.jpg'"):
        processor(images=[tmp_path / "full.jpg"], object_crops=[[tmp_path / "full.jpg", corrupt]])
    with pytest.raises(ValueError, match="PIL image, a numpy array, encoded image bytes or a file path, got Tensor"):
        processor.image_processor.load_image(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("pixels", [150, 400])  # between 1x and 2x the limit: a warning; above 2x: an error
def test_decompression_bombs_are_refused_without_touching_global_warnings(processor, tmp_path, monkeypatch, pixels):
    Image.new("RGB", (pixels // 10, 10)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    filters = list(warnings.filters)
    with pytest.raises(ValueError, match="Refusing to decode the image .*bomb.png'.*decompression bomb"):
        processor.image_processor.load_image(tmp_path / "bomb.png")
    assert warnings.filters == filters


@pytest.mark.parametrize("kind", IMAGE_PROCESSORS)
def test_pixels_are_uint8_and_those_of_the_encoders_image_processor(tmp_path_factory, kind):
    """The processor hands out the uint8 pixels of its image processor, which resizes as the vision encoder's own
    image processor does without rescaling (a fixed size for ViT, the shortest edge and a center crop for CLIP)."""
    processor = build(tmp_path_factory, kind)
    rng = np.random.default_rng(3)
    images = [random_image(rng, 50, 30), random_image(rng, 20, 45)]
    crops = [[random_image(rng, 13, 9)], [random_image(rng, 30, 31), random_image(rng, 8, 8)]]
    encoding = processor(text=["a b", "a b"], entity_spans=[[(0, 1), (2, 3)]] * 2, images=images, object_crops=crops)
    uint8 = processor.image_processor(images, object_crops=crops)
    for key in ("pixel_values", "object_pixel_values", "object_mask"):
        assert torch.equal(uint8[key], encoding[key]), key
    assert encoding["pixel_values"].dtype == encoding["object_pixel_values"].dtype == torch.uint8
    assert encoding["object_mask"].tolist() == [[1, 0, 0], [1, 1, 0]]
    assert not encoding["object_pixel_values"][0, 1:].any()

    encoder = image_processor(kind)
    unscaled = {"do_rescale": False, "do_normalize": False, "return_tensors": "pt"}
    tolerance = 1 if kind.endswith("-torchvision") else 0  # torchvision's resampling rounds otherwise than Pillow's
    direct = encoder(images, **unscaled)["pixel_values"].round().to(torch.uint8)
    torch.testing.assert_close(encoding["pixel_values"], direct, atol=tolerance, rtol=0)
    if kind.startswith("clip"):
        crop_kwargs = {"size": {"shortest_edge": CROP_SIZE}, "crop_size": {"height": CROP_SIZE, "width": CROP_SIZE}}
    else:
        crop_kwargs = {"size": {"height": CROP_SIZE, "width": CROP_SIZE}}
    direct_crop = encoder(crops[1][0], **unscaled, **crop_kwargs)["pixel_values"][0].round().to(torch.uint8)
    torch.testing.assert_close(encoding["object_pixel_values"][1, 0], direct_crop, atol=tolerance, rtol=0)


def test_absent_crops_are_zero_and_masked(processor):
    rng = np.random.default_rng(4)
    encoding = processor(
        text=["a b"] * 3,
        entity_spans=[[(0, 1), (2, 3)]] * 3,
        images=[random_image(rng) for _ in range(3)],
        object_crops=[[random_image(rng)], None, []],
    )
    assert encoding["object_mask"].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert encoding["object_pixel_values"][0, 1:].eq(0).all() and encoding["object_pixel_values"][1:].eq(0).all()
    assert encoding["object_pixel_values"][0, 0].ne(0).any()
    without_crops = processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=random_image(rng))
    assert without_crops["object_mask"].tolist() == [[0, 0, 0]]
    assert without_crops["object_pixel_values"].shape == (1, 3, 3, CROP_SIZE, CROP_SIZE)
    with pytest.raises(ValueError, match="Sample 0, object crop 1: the crop is None; leave absent crops out"):
        processor.image_processor([random_image(rng)], object_crops=[[random_image(rng), None]])


def test_the_pixel_budget_is_checked_from_the_headers_before_any_image_is_decoded(processor, tmp_path, decodes):
    """The issue's bomb: a 9000x9000 1-bit PNG of 10 KB, which decodes to 81 MB (243 MB in RGB)."""
    bomb = blank_png(9000, 9000)
    (tmp_path / "bomb.png").write_bytes(bomb)
    small = random_image(np.random.default_rng(0), 20, 10)
    post = {"text": "a b", "entity_spans": [(0, 1), (2, 3)], "max_image_pixels": 1_000_000}
    for crop in (bomb, tmp_path / "bomb.png", str(tmp_path / "bomb.png")):
        with pytest.raises(
            ValueError,
            match=r"^The images hold 81,000,200 pixels together \(`image` 20x10, `object_crops\[0\]` 9000x9000\), "
            r"more than max_image_pixels=1,000,000\.$",
        ):
            processor(**post, images=small, object_crops=[crop])
    with pytest.raises(ValueError, match=r"^Sample 1: the image holds 81,000,000 pixels \(`image` 9000x9000\), more"):
        processor(images=[small, bomb], max_image_pixels=1_000_000)
    with pytest.raises(ValueError, match=r"^The image holds 81,000,000 pixels \(9000x9000\), more than max_image_pix"):
        processor.image_processor.load_image(bomb, max_image_pixels=1_000_000)
    assert decodes == []
    for in_memory in (np.zeros((1000, 1001, 3), np.uint8), Image.new("L", (1001, 1000))):
        with pytest.raises(ValueError, match=r"^The image holds 1,001,000 pixels \(`image` 1001x1000\), more than"):
            processor(**post, images=in_memory)
    assert processor(**post, images=small, object_crops=[np.zeros((999, 1000), np.uint8)])["object_mask"].sum() == 1


def test_too_many_crops_are_refused_before_any_image_is_opened(processor, monkeypatch):
    opened = []
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(args))
    crops = [blank_png(9000, 9000)] * 30
    with pytest.raises(ValueError, match=r"^30 object crops given, at most num_object_crops=3 allowed\.$"):
        processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=crops[0], object_crops=crops)
    assert opened == []


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_large_images_are_decoded_no_larger_than_twice_the_resize_target(processor, monkeypatch, image_format):
    """A JPEG is decoded at a reduced scale, another image reduced, to no less than twice the 32-pixel target; the
    pixels stay close to resizing the image decoded at full size."""
    encoded = photo((2000, 1500), image_format)
    resized = []
    resize = processor.image_processor.resize

    def recording_resize(images, side=None):
        resized.extend(image.size for image in images)
        return resize(images, side)

    monkeypatch.setattr(processor.image_processor, "resize", recording_resize)
    pixels = processor.image_processor(encoded)["pixel_values"].float()
    assert len(resized) == 1 and 2 * IMAGE_SIZE <= min(resized[0]) < 4 * IMAGE_SIZE, resized
    full = Image.open(io.BytesIO(encoded)).convert("RGB")
    reference = torch.from_numpy(resize([full])[0]).float()
    difference = (reference - pixels[0]).abs()
    assert difference.mean() < 2.0 and difference.max() < 32, (difference.mean(), difference.max())


def test_an_rgb_image_is_neither_copied_nor_changed(processor):
    image = random_image(np.random.default_rng(0), 40, 30)
    before = np.asarray(image).copy()
    assert processor.image_processor.load_image(image) is image
    processor(images=image, object_crops=[image])
    assert np.array_equal(np.asarray(image), before)


def test_load_image_reduces_as_the_image_processor_decodes(processor, tmp_path):
    """`reduce_for` decodes a large file at the scale `preprocess` decodes it at: resizing that image gives the
    pixels `preprocess` gives for the file; an unknown role is refused."""
    path = tmp_path / "large.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize((800, 600)).save(
        path
    )
    reduced = processor.image_processor.load_image(str(path), reduce_for="image")
    assert reduced.size[0] < 800 and min(reduced.size) >= 2 * processor.image_processor.resize_target()
    assert torch.equal(
        processor.image_processor(reduced)["pixel_values"], processor.image_processor(str(path))["pixel_values"]
    )
    assert processor.image_processor.load_image(str(path)).size == (800, 600)
    with pytest.raises(ValueError, match="`reduce_for` must be None, 'image' or 'object_crop', got 'crop'"):
        processor.image_processor.load_image(str(path), reduce_for="crop")


# The statistics the model normalises with


@pytest.mark.parametrize(
    ("settings", "mean", "std"),
    [
        ({}, [0.5] * 3, [0.5] * 3),  # ViT: rescale by 1/255, normalise with 0.5
        ({"rescale_factor": 1 / 127.5}, [0.25] * 3, [0.25] * 3),  # pixels / 127.5 is (pixels / 255) * 2
        ({"do_normalize": False}, [0.0] * 3, [1.0] * 3),
        ({"do_rescale": False, "image_mean": [51.0] * 3, "image_std": [255.0] * 3}, [0.2] * 3, [1.0] * 3),
        ({"do_rescale": False, "do_normalize": False}, [0.0] * 3, [1 / 255] * 3),
    ],
)
def test_statistics_fold_the_encoders_rescaling_into_pixels_over_255(settings, mean, std):
    """`(pixels * rescale_factor - m) / s` of the encoder's image processor is `(pixels / 255 - mean) / std` with
    `mean = m / (rescale_factor * 255)` and `std = s / (rescale_factor * 255)` (no rescaling: `rescale_factor` 1)."""
    encoder = image_processor("vit")
    for name, value in settings.items():
        setattr(encoder, name, value)
    statistics = HVFormerImageProcessor.from_vision_image_processor(encoder).pixel_statistics()
    assert statistics.keys() == {"image_mean", "image_std"}
    np.testing.assert_allclose(statistics["image_mean"], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(statistics["image_std"], std, rtol=1e-12, atol=1e-12)
    pixels = np.arange(256, dtype=np.float64)
    factor = encoder.rescale_factor if encoder.do_rescale else 1.0
    m, s = (np.asarray(encoder.image_mean)[0], np.asarray(encoder.image_std)[0]) if encoder.do_normalize else (0, 1)
    np.testing.assert_allclose(
        (pixels / 255 - statistics["image_mean"][0]) / statistics["image_std"][0], (pixels * factor - m) / s, atol=1e-9
    )


def test_check_matches_model_compares_the_pixel_statistics(tmp_path_factory):
    processor = build(tmp_path_factory, "vit")
    processor.check_matches_model(matching_config(processor))
    message = (
        r"The processor does not match the model: the image processor's `image_mean` \[0.5, 0.5, 0.5\] "
        r"\(preprocessor_config.json\) differs from the model's \[0.48145466, 0.4578275, 0.40821073\] "
        r"\(config.json\); the image processor's `image_std` \[0.5, 0.5, 0.5\] \(preprocessor_config.json\) differs "
        r"from the model's \[0.26862954, 0.26130258, 0.27577711\] \(config.json\)\.$"
    )
    clip_statistics = {"image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD}
    with pytest.raises(ValueError, match=message):
        processor.check_matches_model(matching_config(processor, **clip_statistics))
    config = json.loads(matching_config(processor).to_json_string())
    del config["image_mean"], config["image_std"]  # a model that reads float pixels only: nothing to compare
    processor.check_matches_model(config)


# Saving and loading


def test_saved_image_processor_loads_with_auto_image_processor(tmp_path):
    """`save_pretrained` writes `preprocessor_config.json` naming the class for `AutoImageProcessor` and copies the
    remote code; loading gives the same settings and the same pixels."""
    made = HVFormerImageProcessor.from_vision_image_processor(
        image_processor("clip"), num_object_crops=2, object_image_size=CROP_SIZE
    )
    made.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "HVFormerImageProcessor"
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_hvformer.HVFormerImageProcessor"}
    for module in ("image_processing_hvformer", "image_loading", "image_files", "sample_errors"):
        assert (tmp_path / f"{module}.py").is_file(), module
    loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "HVFormerImageProcessor"
    assert loaded.size == {"shortest_edge": IMAGE_SIZE} and loaded.crop_size == {"height": 32, "width": 32}
    assert (loaded.num_object_crops, loaded.object_image_size) == (2, CROP_SIZE)
    assert loaded.pixel_statistics() == made.pixel_statistics()
    rng = np.random.default_rng(8)
    images, crops = [random_image(rng, 40, 25)], [[random_image(rng, 10, 14)]]
    for key, value in made(images, object_crops=crops).items():
        assert torch.equal(loaded(images, object_crops=crops)[key], value), key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": {"width": 3}}, r"`size` must have the keys 'height' and 'width', or 'shortest_edge', got"),
        ({"num_object_crops": -1}, r"`num_object_crops` must be an integer >= 0, got -1\."),
        ({"image_std": [0.5, 0.0, 0.5]}, r"`image_std` must be positive, got \[0.5, 0.0, 0.5\]\."),
        (
            {"image_mean": [0.5, float("nan"), 0.5]},
            r"`image_mean` must be three finite numbers, got \[0.5, nan, 0.5\]",
        ),
        ({"do_center_crop": True}, r"`crop_size` must have the keys 'height' and 'width', got None\."),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HVFormerImageProcessor(**kwargs)
