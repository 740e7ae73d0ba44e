"""Tiny random HVFormer configurations and inputs, in the manner of transformers' own model tests (the tiny object
detector is `sample_inputs.detectors.save_tiny_detr`)."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    CLIPVisionConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    SiglipVisionConfig,
    ViTConfig,
)

from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction

VOCAB_SIZE = 100
MARKER_IDS = [96, 97, 98, 99]
IMAGE_SIZE = 32
CROP_SIZE = 16
LABELS = {0: "None", 1: "/per/per/peer", 2: "/per/org/member_of"}


def tiny_text_config(hidden_size: int = 32) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )


VISION_KINDS = ("clip", "vit", "dinov2", "dinov2_with_registers", "siglip")
"""The vision families, by the names the tiny configs take."""
PREFIX_TOKENS = {"clip": 1, "vit": 1, "dinov2": 1, "dinov2_with_registers": 3, "siglip": 0}
"""Tokens before the image patches of each tiny family: [CLS] (none for SigLIP) and 2 register tokens."""


def tiny_vision_config(kind: str = "clip", hidden_size: int = 48, num_layers: int = 2):
    """A tiny vision config of a family of `VISION_KINDS`: 32-px images, patch 8, 4 heads."""
    common = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }
    if kind == "dinov2":
        return Dinov2Config(mlp_ratio=2, layerscale_value=0.5, **common)
    if kind == "dinov2_with_registers":
        return Dinov2WithRegistersConfig(mlp_ratio=2, layerscale_value=0.5, num_register_tokens=2, **common)
    config_class = {"clip": CLIPVisionConfig, "vit": ViTConfig, "siglip": SiglipVisionConfig}[kind]
    return config_class(intermediate_size=37, **common)


def tiny_config(vision: str = "clip", **overrides) -> HVFormerConfig:
    kwargs = {
        "text_config": tiny_text_config(),
        "vision_config": tiny_vision_config(vision),
        "vision_levels": [0, 1, 2],
        "num_cross_attention_heads": 4,
        "num_object_crops": 2,
        "object_image_size": CROP_SIZE,
        "entity_markers": ["<s>", "</s>", "<o>", "</o>"],
        "entity_marker_token_ids": MARKER_IDS,
        "id2label": LABELS,
    }
    kwargs.update(overrides)
    return HVFormerConfig(**kwargs)


def tiny_inputs(batch_size: int = 3, text_length: int = 10, num_crops: int = 2, seed: int = 0) -> dict:
    """A batch with `<s> x </s> <o> y </o>` at positions 2, 4, 5, 7 and crops partly absent."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 90, (batch_size, text_length), generator=generator)
    input_ids[:, [2, 4, 5, 7]] = torch.tensor(MARKER_IDS)
    object_mask = torch.ones(batch_size, num_crops, dtype=torch.long)
    if batch_size > 1:
        object_mask[1, -1] = 0
    if batch_size > 2:
        object_mask[2] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "object_pixel_values": torch.randn(batch_size, num_crops, 3, CROP_SIZE, CROP_SIZE, generator=generator),
        "object_mask": object_mask,
        "labels": torch.arange(batch_size) % len(LABELS),
    }


def tiny_model_for(processor, seed: int = 0, **overrides) -> HVFormerForRelationExtraction:
    """A tiny random HVFormer (ViT backbone) that matches `processor`: its vocabulary, entity-marker ids, relation
    labels, object crops and pixel statistics, in eval mode."""
    torch.manual_seed(seed)
    text_config = tiny_text_config()
    text_config.vocab_size = len(processor.tokenizer)
    kwargs = {
        "text_config": text_config,
        "entity_marker_token_ids": processor.marker_token_ids(),
        "num_object_crops": processor.num_object_crops,
        "object_image_size": processor.object_image_size,
        "id2label": dict(enumerate(processor.relation_labels)),
        **processor.pixel_statistics(),
    }
    return HVFormerForRelationExtraction(tiny_config("vit", **{**kwargs, **overrides})).eval()
