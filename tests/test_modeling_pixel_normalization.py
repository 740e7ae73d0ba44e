"""The model normalises uint8 pixels on the device: `pixel_values` / `object_pixel_values` become
`(pixels / 255 - image_mean) / image_std` with the config's statistics and absent crops zeros, which gives the logits,
vision levels and gradients of those float pixels computed by hand; float pixels keep their meaning; the statistics
live in the config and survive saving; a config without them reads float pixels only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _processor_fixtures import IMAGE_PROCESSORS, build, matching_config, random_image
from tiny_models import tiny_config, tiny_inputs
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction
from processing.processing_hvformer import HVFormerProcessor

UINT8_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
"""uint8 pixels normalised on the device vs the same pixels normalised by hand, float32 (docs/performance.md)."""
POSTS = {
    "text": ["barack obama visited paris", "paris of the obama"],
    "entities": [("barack obama", "paris"), ("paris", "obama")],
    "labels": [1, 0],
}


def normalised_by_hand(pixels: torch.Tensor, config: HVFormerConfig) -> torch.Tensor:
    """`(pixels / 255 - mean) / std` in float64 with the config's per-channel statistics, as float32."""
    mean = torch.tensor(config.image_mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(config.image_std, dtype=torch.float64).view(3, 1, 1)
    return ((pixels.double() / 255 - mean) / std).float()


def encodings(processor: HVFormerProcessor, config: HVFormerConfig) -> tuple[dict, dict]:
    """The processor's uint8 encoding of two posts (the first with two crops, the second with none), the absent
    crops' slots filled with noise (the model must zero them by `object_mask`), and the same posts with float pixels
    normalised by hand, absent crops zeros."""
    rng = np.random.default_rng(0)
    images = [random_image(rng, 30, 20), random_image(rng, 16, 40)]
    crops = [[random_image(rng, 12, 12), random_image(rng, 9, 16)], []]
    uint8 = dict(processor(**POSTS, images=images, object_crops=crops))
    absent, crops = uint8["object_mask"] == 0, uint8["object_pixel_values"]
    floats = {
        **uint8,
        "pixel_values": normalised_by_hand(uint8["pixel_values"], config),
        "object_pixel_values": normalised_by_hand(crops, config) * uint8["object_mask"][:, :, None, None, None],
    }
    crops[absent] = torch.randint(0, 256, crops[absent].shape, generator=torch.Generator().manual_seed(1)).byte()
    assert absent.any() and uint8["pixel_values"].dtype == uint8["object_pixel_values"].dtype == torch.uint8
    return floats, uint8


def outputs_and_gradients(model, inputs) -> tuple[torch.Tensor, tuple, dict[str, torch.Tensor]]:
    model.zero_grad()
    outputs = model(**inputs, output_hidden_states=True)
    outputs.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs.logits.detach(), tuple(level.detach() for level in outputs.vision_hidden_states), gradients


@pytest.mark.parametrize("kind", IMAGE_PROCESSORS)
def test_uint8_pixels_give_the_logits_gradients_and_levels_of_float_pixels_normalised_by_hand(tmp_path_factory, kind):
    """CLIP and ViT image processors (PIL and, where installed, torchvision backends); crops absent in the second
    post. The ViT levels V^0..V^2 are compared too: they show that the absent crops are zeroed (their tokens are
    masked out of attention, so the logits alone would not)."""
    processor = build(tmp_path_factory, kind)
    torch.manual_seed(0)
    model = HVFormerForRelationExtraction(matching_config(processor)).eval()
    floats, uint8 = encodings(processor, model.config)
    float_logits, float_levels, float_gradients = outputs_and_gradients(model, floats)
    uint8_logits, uint8_levels, uint8_gradients = outputs_and_gradients(model, uint8)
    torch.testing.assert_close(uint8_logits, float_logits, **UINT8_TOLERANCE)
    for level, (got, expected) in enumerate(zip(uint8_levels, float_levels, strict=True)):
        torch.testing.assert_close(got, expected, **UINT8_TOLERANCE, msg=f"V^{level}")
    assert uint8_gradients.keys() == float_gradients.keys()
    for name, gradient in float_gradients.items():
        torch.testing.assert_close(uint8_gradients[name], gradient, **UINT8_TOLERANCE, msg=name)


def test_pixels_that_cannot_be_normalised_are_refused():
    inputs = tiny_inputs()
    model = HVFormerForRelationExtraction(tiny_config(image_mean=None, image_std=None)).eval()
    model(**inputs)  # normalised floats: as ever
    as_uint8 = dict(inputs, pixel_values=torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"`pixel_values` are uint8, but the model's config records no `image_mean`"):
        model(**as_uint8)
    as_int64 = dict(inputs, object_pixel_values=torch.zeros(3, 2, 3, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`object_pixel_values` must hold uint8 pixels or normalised float pixels"):
        HVFormerForRelationExtraction(tiny_config()).eval()(**as_int64)


def test_config_statistics_default_to_clips_and_round_trip(tmp_path):
    assert HVFormerConfig().image_mean == OPENAI_CLIP_MEAN and HVFormerConfig().image_std == OPENAI_CLIP_STD
    config = tiny_config(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.25])
    config.save_pretrained(tmp_path / "own")
    loaded = HVFormerConfig.from_pretrained(tmp_path / "own")
    assert loaded.image_mean == [0.5, 0.4, 0.3] and loaded.image_std == [0.2, 0.3, 0.25]
    tiny_config().save_pretrained(tmp_path / "default")  # values equal to the defaults are written too
    assert HVFormerConfig.from_pretrained(tmp_path / "default").image_mean == OPENAI_CLIP_MEAN


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_mean": None}, r"`image_mean` and `image_std` must be given together"),
        ({"image_std": [0.2, 0.2]}, r"one value per image channel \(3\), got \[0.48.*\] and \[0.2, 0.2\]"),
        ({"image_std": [0.2, 0.0, 0.2]}, r"`image_std` must be positive, got \[0.2, 0.0, 0.2\]"),
    ],
)
def test_config_rejects_bad_statistics(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def saved_folder(tmp_path_factory, kind: str = "vit"):
    """A tiny model and its processor (ViT statistics: 0.5, unlike CLIP's defaults) saved into one folder."""
    processor = build(tmp_path_factory, kind, max_length=24, num_object_crops=2)
    torch.manual_seed(0)
    model = HVFormerForRelationExtraction(matching_config(processor)).eval()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


def test_saved_model_normalises_uint8_pixels_as_before_saving(tmp_path_factory):
    """The statistics are buffers that are not saved with the weights: loading sets them from the config."""
    model, processor, folder = saved_folder(tmp_path_factory)
    reloaded = HVFormerForRelationExtraction.from_pretrained(folder).eval()
    assert reloaded.config.image_mean == [0.5, 0.5, 0.5] == processor.pixel_statistics()["image_mean"]
    _, uint8 = encodings(processor, model.config)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**uint8).logits, model(**uint8).logits, rtol=0, atol=0)


def test_a_model_saved_before_the_statistics_keeps_working(tmp_path_factory):
    """A `config.json` without `image_mean` / `image_std` loads them as unknown (not as CLIP's, which would not match
    its ViT processor): the processor check accepts it, the model reads float pixels as before, and, loaded with the
    processor's statistics, it reads the processor's uint8 pixels too."""
    model, processor, folder = saved_folder(tmp_path_factory)
    config = json.loads((folder / "config.json").read_text())
    del config["image_mean"], config["image_std"]
    (folder / "config.json").write_text(json.dumps(config))

    old = HVFormerForRelationExtraction.from_pretrained(folder).eval()
    assert old.config.image_mean is None and old.config.image_std is None
    reloaded_processor = HVFormerProcessor.from_pretrained(folder)  # checks the processor against config.json
    floats, uint8 = encodings(processor, model.config)
    with torch.no_grad():
        expected = model(**uint8).logits
        torch.testing.assert_close(old(**floats).logits, expected, **UINT8_TOLERANCE)
        filled = HVFormerForRelationExtraction.from_pretrained(folder, **reloaded_processor.pixel_statistics()).eval()
        torch.testing.assert_close(filled(**uint8).logits, expected, rtol=0, atol=0)
