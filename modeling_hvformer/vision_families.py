"""The ViT-like vision encoders HVFormer reads V^0..V^L from (paper Eq. 3): one small description per family.

HVFormer builds its vision tower from a family's own building blocks (embeddings, optional pre-LayerNorm, layers) and
joins the patch tokens of the object crops to the main image's in one sequence, so it needs to know, per family,
where those blocks sit in the pretrained model, which tokens precede the patches ([CLS], register tokens) and whether
the position embeddings stretch to any image size. A family not described here is refused by `HVFormerConfig`.

Travels to the Hub with `configuration_hvformer.py` and `modeling_hvformer.py` as remote code, so it imports nothing
from the hvformer project.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

import transformers
from torch import nn
from transformers import (
    CLIPVisionModel,
    Dinov2Model,
    Dinov2WithRegistersModel,
    PreTrainedModel,
    SiglipVisionModel,
    ViTModel,
)
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPVisionEmbeddings
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings, Dinov2Layer, Dinov2LayerScale
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (
    Dinov2WithRegistersEmbeddings,
    Dinov2WithRegistersLayer,
    Dinov2WithRegistersLayerScale,
)
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer, SiglipVisionEmbeddings
from transformers.models.vit.modeling_vit import ViTEmbeddings, ViTLayer


@dataclass(frozen=True)
class VisionFamily:
    """How HVFormer builds and reads one family of ViT-like encoders.

    Args:
        name: The family's name in messages.
        checkpoint_types: `model_type`s of the checkpoints that load as this family (a full CLIP or SigLIP checkpoint
            gives its vision tower).
        model_class: The pretrained vision model the weights are read from.
        embeddings_class: Patch (and [CLS], register, position) embeddings; maps pixels to the image's tokens.
        layer_class: One transformer layer; must take an additive `attention_mask` (absent crops are masked out).
        layers: Path of the layer list in `model_class`.
        pre_layernorm: Path of the LayerNorm `model_class` applies before the first layer (CLIP's), if any.
        patch_projection: Path of the patch convolution in the embeddings, which also embeds the crops.
        position_embeddings: Path of the position table in the embeddings (`([CLS] +) patches` rows).
        has_cls_token: Whether the sequence starts with a [CLS] token (SigLIP's has none).
        interpolates_positions: Whether the embeddings resize the position table to any image size (DINOv2), so the
            main image may have another size than the checkpoint's `image_size`.
        unused_parameters: Embedding parameters HVFormer never uses (DINOv2's mask token), left out of the model.
        layer_scales: Modules whose `lambda1` starts at `config.layerscale_value` (DINOv2's LayerScale).
        load_kwargs: Extra `from_pretrained` arguments of `model_class`.
    """

    name: str
    checkpoint_types: tuple[str, ...]
    model_class: type[PreTrainedModel]
    embeddings_class: type[nn.Module]
    layer_class: type[nn.Module]
    layers: str
    pre_layernorm: str | None
    patch_projection: str
    position_embeddings: str
    has_cls_token: bool
    interpolates_positions: bool = False
    unused_parameters: tuple[str, ...] = ()
    layer_scales: tuple[type[nn.Module], ...] = ()
    load_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def attention_class(self) -> type[nn.Module]:
        """The self-attention module of the family's layers, whose output is `(states, weights)`: the module
        transformers records the family's attention maps from (`model_class._can_record_outputs`)."""
        return self.model_class._can_record_outputs["attentions"]

    @property
    def no_split_modules(self) -> tuple[str, ...]:
        """The modules the family's own model keeps on one device (`model_class._no_split_modules`)."""
        return tuple(self.model_class._no_split_modules)

    def num_register_tokens(self, config: Any) -> int:
        """Register tokens between [CLS] and the patches (`dinov2_with_registers`), which are neither patches nor
        crops."""
        return int(getattr(config, "num_register_tokens", 0) or 0)

    def num_prefix_tokens(self, config: Any) -> int:
        """Tokens before the main image's patches: [CLS] and the register tokens."""
        return int(self.has_cls_token) + self.num_register_tokens(config)

    def check_installed(self) -> None:
        """Refuses a family whose layers, in the installed transformers, take no attention mask (DINOv2's before
        transformers 5.18): HVFormer masks absent object crops out of the ViT's self-attention."""
        if "attention_mask" not in inspect.signature(self.layer_class.forward).parameters:
            raise ValueError(
                f"The {self.name} layers of the installed transformers {transformers.__version__} take no attention "
                "mask, which HVFormer needs to mask absent object crops out of the ViT's self-attention; install a "
                "newer transformers (>= 5.18)."
            )


def get_path(module: Any, path: str) -> Any:
    """`module.a.b` for the path `"a.b"`."""
    for name in path.split("."):
        module = getattr(module, name)
    return module


DINOV2 = VisionFamily(
    name="DINOv2",
    checkpoint_types=("dinov2",),
    model_class=Dinov2Model,
    embeddings_class=Dinov2Embeddings,
    layer_class=Dinov2Layer,
    layers="encoder.layer",
    pre_layernorm=None,
    patch_projection="patch_embeddings.projection",
    position_embeddings="position_embeddings",
    has_cls_token=True,
    interpolates_positions=True,
    unused_parameters=("mask_token",),
    layer_scales=(Dinov2LayerScale,),
)
"""DINOv2; the family with registers is the same but for its classes (its register tokens come from its config)."""


VISION_FAMILIES: dict[str, VisionFamily] = {
    "clip_vision_model": VisionFamily(
        name="CLIP",
        checkpoint_types=("clip", "clip_vision_model"),
        model_class=CLIPVisionModel,
        embeddings_class=CLIPVisionEmbeddings,
        layer_class=CLIPEncoderLayer,
        layers="encoder.layers",
        pre_layernorm="pre_layrnorm",
        patch_projection="patch_embedding",
        position_embeddings="position_embedding.weight",
        has_cls_token=True,
    ),
    "vit": VisionFamily(
        name="ViT",
        checkpoint_types=("vit",),
        model_class=ViTModel,
        embeddings_class=ViTEmbeddings,
        layer_class=ViTLayer,
        layers="layers",
        pre_layernorm=None,
        patch_projection="patch_embeddings.projection",
        position_embeddings="position_embeddings",
        has_cls_token=True,
        load_kwargs={"add_pooling_layer": False},
    ),
    "dinov2": DINOV2,
    "dinov2_with_registers": replace(
        DINOV2,
        name="DINOv2 with registers",
        checkpoint_types=("dinov2_with_registers",),
        model_class=Dinov2WithRegistersModel,
        embeddings_class=Dinov2WithRegistersEmbeddings,
        layer_class=Dinov2WithRegistersLayer,
        layer_scales=(Dinov2WithRegistersLayerScale,),
    ),
    "siglip_vision_model": VisionFamily(
        name="SigLIP",
        checkpoint_types=("siglip", "siglip_vision_model"),
        model_class=SiglipVisionModel,
        embeddings_class=SiglipVisionEmbeddings,
        layer_class=SiglipEncoderLayer,
        layers="encoder.layers",
        pre_layernorm=None,
        patch_projection="patch_embedding",
        position_embeddings="position_embedding.weight",
        has_cls_token=False,
    ),
}
"""The supported vision encoders, by the `model_type` of their vision config."""


def family_of_checkpoint(model_type: str) -> VisionFamily | None:
    """The family whose checkpoints have `model_type` (e.g. `"clip"` or `"siglip"` for a full checkpoint)."""
    return next((family for family in VISION_FAMILIES.values() if model_type in family.checkpoint_types), None)


def supported_families() -> str:
    """The supported families for messages: `CLIP ('clip_vision_model'), ViT ('vit'), ...`."""
    return ", ".join(f"{family.name} ({model_type!r})" for model_type, family in VISION_FAMILIES.items())
