"""Object detectors built from a config, random weights and no download, for the tests and the benchmarks of
`--object_detector`: a tiny DETR, and a DETR with facebook/detr-resnet-50's architecture (the same work as the real
one, not its boxes). Each function saves the detector and its image processor in a folder and returns the folder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
from transformers.models.detr import DetrImageProcessorPil


def save_tiny_detr(folder: Path, seed: int) -> Path:
    """A random DETR of 12 queries with a 4-stage ResNet of width 8 and its image processor (shortest side 64),
    weights spread wide enough (init_std 0.3) that the queries find different boxes."""
    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8] * 4, depths=[1] * 4, layer_type="basic", out_features=["stage4"]
    )
    config = DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        num_queries=12,
        num_labels=3,
        init_std=0.3,
        init_xavier_std=15.0,
    )
    torch.manual_seed(seed)
    DetrForObjectDetection(config).save_pretrained(folder)
    DetrImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


def detr_resnet50(folder: Path) -> Path:
    """facebook/detr-resnet-50's architecture (ResNet-50, 6 + 6 layers, 100 queries) and image processor settings
    (shortest side 800, longest 1333)."""
    backbone = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], out_features=["stage4"])
    DetrForObjectDetection(DetrConfig(use_timm_backbone=False, backbone_config=backbone)).save_pretrained(folder)
    DetrImageProcessorPil().save_pretrained(folder)
    return folder
