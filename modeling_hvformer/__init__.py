"""HVFormer configuration, model and hierarchical tracking maps (the files that travel to the Hub as remote code)."""

from transformers import AutoConfig, AutoModel

from .configuration_hvformer import MNRE_RELATIONS, HVFormerConfig
from .modeling_hvformer import (
    HVFormerForRelationExtraction,
    HVFormerPreTrainedModel,
    HVFormerRelationExtractionOutput,
)

AutoConfig.register("hvformer", HVFormerConfig, exist_ok=True)
AutoModel.register(HVFormerConfig, HVFormerForRelationExtraction, exist_ok=True)

__all__ = [
    "MNRE_RELATIONS",
    "HVFormerConfig",
    "HVFormerForRelationExtraction",
    "HVFormerPreTrainedModel",
    "HVFormerRelationExtractionOutput",
]
