"""HVFormerForRelationExtraction's fast paths against the plain one: fusion at the marker rows only (Eq. 4-11, the
default path), no host synchronisation in the forward pass, and a forward pass that `torch.compile` traces as one
graph; the last two with the uint8 pixels too."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import tiny_config, tiny_inputs

from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction
from modeling_hvformer.modeling_hvformer import additive_key_mask, visual_key_mask

MARKER_POSITIONS = torch.tensor([[2, 5]] * 3)  # where `tiny_inputs` puts <s> and <o>
FP32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
"""Marker-row fusion vs the per-token path, logits and gradients, float32 (docs/performance.md)."""

VARIANTS = [
    {},
    {"fusion": "concat"},
    {"visual_context": "cls"},
    {"visual_context": "cls", "fusion": "concat"},
    {"use_text_expert": False},
    {"vision_levels": [2]},
    {"vision_levels": [0]},
]


def with_pixels(inputs: dict, pixels: str) -> dict:
    """`inputs` with normalised float pixels (`"float"`, as `tiny_inputs` makes them) or uint8 ones (`"uint8"`, as
    the collator hands them over, normalised by the model)."""
    if pixels == "float":
        return inputs
    generator = torch.Generator().manual_seed(0)
    uint8 = {
        name: torch.randint(0, 256, inputs[name].shape, generator=generator).byte()
        for name in ("pixel_values", "object_pixel_values")
    }
    return {**inputs, **uint8}


def build(seed: int = 0, **overrides) -> HVFormerForRelationExtraction:
    torch.manual_seed(seed)
    return HVFormerForRelationExtraction(tiny_config(**overrides)).eval()


def loss_and_gradients(model, inputs, **kwargs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    outputs = model(**inputs, **kwargs)
    outputs.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs.logits.detach(), outputs.marker_expert_weights, gradients


@pytest.mark.parametrize("overrides", VARIANTS)
def test_marker_row_fusion_matches_the_per_token_path(overrides):
    model = build(**overrides)
    inputs = tiny_inputs()
    full_logits, full_weights, full_gradients = loss_and_gradients(model, inputs, output_expert_weights=True)
    rows_logits, rows_weights, rows_gradients = loss_and_gradients(model, inputs, output_expert_weights=False)
    torch.testing.assert_close(rows_logits, full_logits, **FP32_TOLERANCE)
    assert rows_gradients.keys() == full_gradients.keys()
    for name, gradient in full_gradients.items():
        torch.testing.assert_close(rows_gradients[name], gradient, **FP32_TOLERANCE, msg=name)
    if model.config.fusion == "concat":
        assert full_weights is None and rows_weights is None
    else:
        torch.testing.assert_close(rows_weights, full_weights, **FP32_TOLERANCE)


def test_marker_row_fusion_reads_the_rows_it_is_given():
    """A `<s>` that is not the first token of its kind still decides the logits: the rows are gathered at
    `marker_positions`, not at fixed places, and the per-token path agrees at other positions too."""
    model = build()
    inputs = dict(tiny_inputs(), marker_positions=torch.tensor([[2, 5], [1, 8], [4, 2]]))
    full = model(**inputs, output_expert_weights=True)
    rows = model(**inputs, output_expert_weights=False)
    torch.testing.assert_close(rows.logits, full.logits, **FP32_TOLERANCE)
    weights_at_markers = full.expert_weights[torch.arange(3)[:, None], inputs["marker_positions"]]
    torch.testing.assert_close(full.marker_expert_weights, weights_at_markers, rtol=0, atol=0)
    torch.testing.assert_close(rows.marker_expert_weights, weights_at_markers, **FP32_TOLERANCE)


def test_marker_rows_are_the_default_path_and_weights_or_maps_ask_for_the_per_token_one():
    model = build()
    inputs = tiny_inputs()
    outputs = model(**inputs)
    assert outputs.expert_weights is None and outputs.marker_expert_weights.shape == (3, 2, 4)
    assert model(**inputs, output_expert_weights=True).expert_weights.shape == (3, 10, 4)
    with_maps = model(**inputs, output_attentions=True)
    assert with_maps.expert_weights.shape == (3, 10, 4)
    assert with_maps.cross_attentions[0].shape == (3, 4, 10, 25)
    torch.testing.assert_close(with_maps.logits, outputs.logits, **FP32_TOLERANCE)
    assert model(**inputs, output_tracking_maps=True).patch_token_tracking_maps[0].shape == (3, 4, 10, 25)


def test_a_saved_output_expert_weights_key_is_ignored(tmp_path, caplog):
    """Configs saved by earlier versions hold `"output_expert_weights": true`, which chose the per-token path for
    every call: they still load, the key is dropped (not saved again) and the marker rows stay the default path."""
    tiny_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "output_expert_weights": True}))
    with caplog.at_level("WARNING"):
        config = HVFormerConfig.from_pretrained(tmp_path)
    assert "`output_expert_weights` in an HVFormer config" in caplog.text
    assert not hasattr(config, "output_expert_weights")
    assert "output_expert_weights" not in config.to_dict()
    torch.manual_seed(0)
    assert HVFormerForRelationExtraction(config).eval()(**tiny_inputs()).expert_weights is None


def test_key_mask_is_decided_from_the_inputs_given_not_from_their_values():
    token_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    expected = torch.tensor([[0.0, 0.0, torch.finfo(torch.float32).min], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(additive_key_mask(token_mask, torch.float32)[:, 0, 0], expected)
    crops = torch.zeros(2, 1, 3, 8, 8)
    assert visual_key_mask(token_mask, None, None, torch.float32) is None
    assert visual_key_mask(token_mask, crops, None, torch.float32) is None
    torch.testing.assert_close(visual_key_mask(token_mask, crops, torch.ones(2, 1), torch.float32)[:, 0, 0], expected)


def test_all_present_object_mask_gives_the_logits_of_no_object_mask():
    """The mask of an all-present `object_mask` is built (zeros) rather than dropped after a host check."""
    model = build()
    inputs = tiny_inputs()
    present = dict(inputs, object_mask=torch.ones(3, 2, dtype=torch.long))
    omitted = dict(inputs, object_mask=None)
    torch.testing.assert_close(model(**present).logits, model(**omitted).logits, **FP32_TOLERANCE)


@pytest.mark.parametrize("pixels", ["float", "uint8"])
@pytest.mark.parametrize("output_expert_weights", [True, False])
def test_training_forward_and_backward_never_read_a_tensor_value_on_the_host(output_expert_weights, pixels):
    """On the meta device every `bool(tensor)` or `.item()` raises: the training step with `marker_positions` given
    (as the collator does) has no host synchronisation in HVFormer's code. The text `attention_mask` is left out
    because transformers' own mask creation checks `attention_mask.all()` outside `torch.compile`."""
    model = build().train().to("meta")
    inputs = with_pixels(tiny_inputs(), pixels)
    inputs = {name: value.to("meta") for name, value in inputs.items() if name != "attention_mask"}
    outputs = model(
        **inputs, marker_positions=MARKER_POSITIONS.to("meta"), output_expert_weights=output_expert_weights
    )
    outputs.loss.backward()
    assert outputs.logits.shape == (3, 3) and model.classifier.projection.weight.grad.is_meta


def test_missing_marker_is_still_reported_when_positions_are_searched():
    model = build()
    inputs = tiny_inputs()
    inputs["input_ids"][0, 2] = 3  # sample 0 loses its <s>
    with pytest.raises(ValueError, match=r"sample 0 has no '<s>'"):
        model(**inputs, output_expert_weights=False)


@pytest.mark.parametrize("pixels", ["float", "uint8"])
@pytest.mark.parametrize("output_expert_weights", [True, False])
def test_training_step_compiles_as_one_graph(output_expert_weights, pixels):
    """`fullgraph=True` fails on any graph break; the eager backend traces without code generation (fast on CPU)."""
    model = build().train()
    inputs = dict(with_pixels(tiny_inputs(), pixels), marker_positions=MARKER_POSITIONS)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.manual_seed(1)
    outputs = compiled(**inputs, output_expert_weights=output_expert_weights)
    outputs.loss.backward()
    torch.manual_seed(1)
    reference = model(**inputs, output_expert_weights=output_expert_weights)
    torch.testing.assert_close(outputs.logits, reference.logits, **FP32_TOLERANCE)
