"""PyTorch HVFormer: hierarchical visual context fusion transformer for multimodal relation extraction.

Implements §3.2-3.5 of "Multimodal Relation Extraction via a Mixture of Hierarchical Visual Context Learners"
(WWW 2024); equation numbers below refer to that paper. One module per paper concept, in one file as transformers'
model files are (the Hub loads it as remote code with its config and tracking-map siblings).
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import Dinov2WithRegistersEmbeddings
from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings
from transformers.models.vit.modeling_vit import ViTEmbeddings
from transformers.utils import ModelOutput, logging
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_hvformer import HVFormerConfig
from .quantization_hvformer import check_quantization_config
from .tracking_maps import patch_patch_tracking_maps, patch_token_tracking_maps
from .vision_families import VISION_FAMILIES, family_of_checkpoint, get_path, supported_families


@dataclass
class HVFormerRelationExtractionOutput(ModelOutput):
    r"""
    Output of [`HVFormerForRelationExtraction`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy loss (Eq. 12), when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Relation scores before the softmax of Eq. 11.
        expert_weights (`torch.FloatTensor` of shape `(batch_size, text_length, num_experts)`, *optional*):
            The router's weights G (Eq. 9) of every text token, experts in the order of `config.expert_names` (text
            expert first). Returned by the per-token path (`output_expert_weights=True`, attention or tracking maps);
            `None` otherwise and for the "w/o MoME" (`fusion="concat"`) ablation.
        marker_positions (`torch.LongTensor` of shape `(batch_size, 2)`):
            Positions of `<s>` and `<o>` whose fused representations were classified.
        visual_token_mask (`torch.LongTensor` of shape `(batch_size, num_visual_tokens)`):
            1 for the visual tokens that exist ([CLS] and register tokens where the vision encoder has them, main
            image patches, patches of present crops), 0 for those of absent crops.
        cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions=True` and `visual_context="tva"`: one tensor per level in `config.vision_levels`,
            of shape `(batch_size, num_cross_attention_heads, text_length, num_visual_tokens)`: A_C^(l,m) (Eq. 4).
        vision_attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions=True`: the ViT self-attention maps A_V^l of layers 1..max(levels), each of shape
            `(batch_size, vision_heads, num_visual_tokens, num_visual_tokens)`.
        vision_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states=True`: V^0..V^max(levels) (Eq. 3), each `(batch_size, num_visual_tokens,
            vision_hidden_size)`.
        patch_patch_tracking_maps (`torch.FloatTensor`, *optional*):
            With `output_tracking_maps=True`: H_V^0..H_V^max(levels) (Eq. 17), shape `(max_level + 1, batch_size,
            num_visual_tokens, num_visual_tokens)`.
        patch_token_tracking_maps (`tuple(torch.FloatTensor)`, *optional*):
            With `output_tracking_maps=True`: H_C^l for each level of `config.vision_levels` (Eq. 18), each
            `(batch_size, num_cross_attention_heads, text_length, num_visual_tokens)`. For the "w/o TVA" ablation
            (`visual_context="cls"`), every token reads the level's [CLS] (the [CLS] token, or the mean of the present
            patch tokens for an encoder without one), so Eq. 18 takes those weights as A_C, with one head.
        marker_expert_weights (`torch.FloatTensor` of shape `(batch_size, 2, num_experts)`, *optional*):
            G at `<s>` and `<o>`, whichever path ran (last field, so the tuple positions of the others stay put).
            `None` for the "w/o MoME" (`fusion="concat"`) ablation.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    expert_weights: torch.FloatTensor | None = None
    marker_positions: torch.LongTensor | None = None
    visual_token_mask: torch.LongTensor | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    patch_patch_tracking_maps: torch.FloatTensor | None = None
    patch_token_tracking_maps: tuple[torch.FloatTensor, ...] | None = None
    marker_expert_weights: torch.FloatTensor | None = None


@dataclass
class HVFormerVisionOutput(ModelOutput):
    r"""
    Output of [`HVFormerForRelationExtraction.get_image_features`].

    Args:
        visual_token_mask (`torch.LongTensor` of shape `(batch_size, num_visual_tokens)`):
            1 for the visual tokens that exist, 0 for those of absent crops (as in
            [`HVFormerRelationExtractionOutput`]).
        hidden_states (`tuple(torch.FloatTensor)`):
            V^0..V^max(levels) (Eq. 3), each `(batch_size, num_visual_tokens, vision_hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions=True`: the ViT self-attention maps A_V^l of layers 1..max(levels), each of shape
            `(batch_size, vision_heads, num_visual_tokens, num_visual_tokens)`.
    """

    visual_token_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def eager_cross_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax(Q K^T * scaling + mask) V, returning the output as (batch, queries, heads, head_dim) and the weights."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class HVFormerTextGuidedVisualAttention(nn.Module):
    """Textual-guided visual attention (TVA) of one level, Eq. 4-5.

    Queries come from the text representation T, keys and values from the visual representation V^l; the M heads
    are concatenated and projected by W_att (Eq. 4), then layer-normalised (Eq. 5). Keys and values are projected
    from the vision width to the text width d, so text and vision encoders of different widths can be combined.
    """

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_cross_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        vision_size = config.vision_config.hidden_size
        self.query = nn.Linear(self.hidden_size, self.hidden_size)
        self.key = nn.Linear(vision_size, self.hidden_size)
        self.value = nn.Linear(vision_size, self.hidden_size)
        self.output = nn.Linear(self.hidden_size, self.hidden_size)
        self.layer_norm = nn.LayerNorm(self.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        text_states: torch.Tensor,
        visual_states: torch.Tensor,
        visual_attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        cls_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, text_length, _ = text_states.shape
        # (batch, heads, tokens, head_dim)
        query = self.query(text_states).view(batch_size, text_length, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.key(visual_states).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.value(visual_states).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)

        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            implementation, eager_cross_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            visual_attention_mask,
            scaling=self.scaling,
            dropout=self.config.attention_dropout if self.training else 0.0,
        )
        attn_output = attn_output.reshape(batch_size, text_length, self.hidden_size)
        visual_context = self.layer_norm(self.output(attn_output))  # Ṽ_l, (batch, n_T, d)
        return visual_context, (attn_weights if output_attentions else None)


class HVFormerClsVisualContext(nn.Module):
    """Visual context of the "w/o TVA" ablation (Table 2): the level's [CLS] patch embedding, projected to the text
    width and layer-normalised, is the visual context of every token. The level's [CLS] is given as weights over the
    visual tokens ([`HVFormerVisionEncoder.cls_weights`]): the [CLS] token, or the mean of the present patch tokens
    for an encoder without one (SigLIP)."""

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        self.projection = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        text_states: torch.Tensor,
        visual_states: torch.Tensor,
        visual_attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        cls_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        cls_state = torch.einsum("bv,bvd->bd", cls_weights.to(visual_states.dtype), visual_states)  # (batch, d_V)
        context = self.layer_norm(self.projection(cls_state))  # (batch, d)
        return context.unsqueeze(1).expand_as(text_states), None


class HVFormerFusionFeedForward(nn.Module):
    """FFN_l([T; Ṽ_l]) = h([T; Ṽ_l] W_1 + b_1) W_2 + b_2 (Eq. 6, without the residual), h the text encoder's
    activation. With `num_inputs` > 2 it is the single FFN of the "w/o MoME" ablation over [T; C_1; ...; C_k]."""

    def __init__(self, config: HVFormerConfig, num_inputs: int = 2) -> None:
        super().__init__()
        self.dense_in = nn.Linear(num_inputs * config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.text_config.hidden_act]
        self.dense_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, *states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense_out(self.activation(self.dense_in(torch.cat(states, dim=-1)))))


class HVFormerVisualContextLearner(nn.Module):
    """Expert f_l of one ViT level (§3.4.1): visual context Ṽ_l (Eq. 4-5) and C_l = FFN_l([T; Ṽ_l]) + T (Eq. 6)."""

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        if config.visual_context == "tva":
            self.visual_context = HVFormerTextGuidedVisualAttention(config)
        else:
            self.visual_context = HVFormerClsVisualContext(config)
        self.feed_forward = HVFormerFusionFeedForward(config)

    def forward(
        self,
        text_states: torch.Tensor,
        visual_states: torch.Tensor,
        visual_attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        cls_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`visual_attention_mask` hides absent crops from TVA (Eq. 4); `cls_weights` `(batch, n_V)` give the level's
        [CLS] of the "w/o TVA" ablation."""
        visual_context, attentions = self.visual_context(
            text_states, visual_states, visual_attention_mask, output_attentions, cls_weights
        )
        fused = self.feed_forward(text_states, visual_context) + text_states  # C_l, (batch, n_T, d)
        return fused, visual_context, attentions


class HVFormerExpertRouter(nn.Module):
    """Expert router g (Eq. 9): G = Softmax([T; Ṽ_l1; ...; Ṽ_lk] W_g), one weight per expert and token."""

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        num_inputs = len(config.vision_levels) + 1
        self.gate = nn.Linear(num_inputs * config.hidden_size, config.num_experts, bias=False)

    def forward(self, text_states: torch.Tensor, visual_contexts: list[torch.Tensor]) -> torch.Tensor:
        logits = self.gate(torch.cat([text_states, *visual_contexts], dim=-1))
        return logits.softmax(dim=-1, dtype=torch.float32).to(text_states.dtype)  # G, (batch, n_T, E)


class HVFormerMixtureOfMultimodalExperts(nn.Module):
    """Mixture of multimodal experts (§3.4.2, Eq. 7-10): C = Σ_l G_l C_l + G_text T."""

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        self.use_text_expert = config.use_text_expert
        self.router = HVFormerExpertRouter(config)

    def forward(
        self, text_states: torch.Tensor, fused: list[torch.Tensor], visual_contexts: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        expert_weights = self.router(text_states, visual_contexts)
        experts = ([text_states] if self.use_text_expert else []) + fused
        stacked = torch.stack(experts, dim=-1)  # (batch, n_T, d, E)
        mixed = torch.matmul(stacked, expert_weights.unsqueeze(-1)).squeeze(-1)  # (batch, n_T, d)
        return mixed, expert_weights


class HVFormerConcatFusion(nn.Module):
    """The "w/o MoME" ablation (Table 2): T and all C_l concatenated and fused by one FFN, plus the residual T."""

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        self.feed_forward = HVFormerFusionFeedForward(config, num_inputs=len(config.vision_levels) + 1)

    def forward(
        self, text_states: torch.Tensor, fused: list[torch.Tensor], visual_contexts: list[torch.Tensor]
    ) -> tuple[torch.Tensor, None]:
        return self.feed_forward(text_states, *fused) + text_states, None


FUSION_CLASSES: dict[str, type[nn.Module]] = {
    "mome": HVFormerMixtureOfMultimodalExperts,
    "concat": HVFormerConcatFusion,
}
"""The fusion module of each `config.fusion` that has a visual path."""


class HVFormerRelationClassifier(nn.Module):
    """Decoder (Eq. 11): relation logits from [C at <s>; C at <o>] W_r (the softmax lives in the loss, Eq. 12)."""

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.projection = nn.Linear(2 * config.hidden_size, config.num_labels)

    def forward(self, entity_states: torch.Tensor) -> torch.Tensor:
        """Logits (batch, num_labels) from C at `<s>` and `<o>`, `entity_states` of shape (batch, 2, d)."""
        return self.projection(self.dropout(entity_states.flatten(1)))  # [C_<s>; C_<o>] W_r


def gather_marker_rows(states: torch.Tensor, marker_positions: torch.LongTensor) -> torch.Tensor:
    """The rows of `<s>` and `<o>`: (batch, n_T, ...) states and (batch, 2) positions -> (batch, 2, ...)."""
    index = marker_positions.view(*marker_positions.shape, *([1] * (states.dim() - 2)))
    return states.gather(1, index.expand(-1, -1, *states.shape[2:]))


def additive_key_mask(token_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, n_V) 1/0 mask of visual tokens -> additive attention mask (batch, 1, 1, n_V) hiding the 0 keys, for
    eager and SDPA attention alike. Built from the values on the device, never inspected on the host (no sync)."""
    return (1.0 - token_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def visual_key_mask(
    token_mask: torch.Tensor,
    object_pixel_values: torch.Tensor | None,
    object_mask: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """The additive key mask of the visual tokens, or `None` when every token is present by construction (no crops,
    or crops without an `object_mask`, which means all present). Decided from which inputs are given, never from
    their values, so no host synchronisation happens; `None` lets SDPA pick its fastest kernel."""
    if object_pixel_values is None or object_mask is None:
        return None
    return additive_key_mask(token_mask, dtype)


class HVFormerPixelNormalization(nn.Module):
    """The image processor's rescaling and normalisation, done on the device: uint8 pixels become
    `(pixels / 255 - image_mean) / image_std` in float32 (`config.image_mean`, `config.image_std`), and object crops
    marked absent (`object_mask` 0) become zeros. The processor hands out uint8 pixels only, a quarter of the bytes of
    float32 ones, so the arithmetic runs here, on the device, with no host synchronisation; float pixels, from a
    caller who normalised them, are taken as normalised and pass unchanged."""

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        self.register_buffer("mean", self.statistic(config.image_mean), persistent=False)
        self.register_buffer("std", self.statistic(config.image_std), persistent=False)

    @staticmethod
    def statistic(values: list[float] | None) -> torch.Tensor | None:
        """Per-channel values as a float32 `(channels, 1, 1)` tensor, or `None` when the config has none."""
        return None if values is None else torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)

    def forward(
        self, pixels: torch.Tensor, present: torch.Tensor | None = None, name: str = "pixel_values"
    ) -> torch.Tensor:
        """`pixels` `(..., 3, H, W)`, uint8 or normalised float; `present` `(...)`: 1 for the images to keep, 0 for
        those to zero (absent crops). Returns float pixels `(..., 3, H, W)`."""
        if pixels.is_floating_point():
            return pixels
        if pixels.dtype != torch.uint8:
            raise ValueError(f"`{name}` must hold uint8 pixels or normalised float pixels, got {pixels.dtype}.")
        if self.mean is None:
            raise ValueError(
                f"`{name}` are uint8, but the model's config records no `image_mean` / `image_std` (a config.json "
                "saved before they were): load the model with `from_pretrained(path, "
                "**processor.pixel_statistics())`, or pass float pixels normalised with those statistics."
            )
        normalised = (pixels.float() / 255 - self.mean.float()) / self.std.float()
        if present is not None:
            normalised = normalised * present.view(*present.shape, 1, 1, 1).to(normalised.dtype)
        return normalised


EAGER_VISION_ATTENTION: ContextVar[bool] = ContextVar("hvformer_eager_vision_attention", default=False)
"""Whether the ViT layers run eager attention in the current context: set by [`HVFormerVisionEncoder`] for the one
call that records attention maps."""


class HVFormerVisionAttentionConfig:
    """The vision config as the ViT's attention modules read it: `config.vision_config` in every respect, except that
    the attention implementation is eager while the current call records attention maps (only eager attention returns
    its weights). The switch lives in a context variable set for that call alone, so the shared config never changes:
    a concurrent call, in another thread or asyncio task, keeps its implementation, and `set_attn_implementation`
    reaches the layers through the config this reads."""

    def __init__(self, config: PreTrainedConfig) -> None:
        self.config = config

    @property
    def _attn_implementation(self) -> str | None:
        # `torch.compile` cannot trace a context variable: a compiled call runs the config's implementation.
        if not torch.compiler.is_compiling() and EAGER_VISION_ATTENTION.get():
            return "eager"
        return self.config._attn_implementation

    def __getattr__(self, name: str) -> Any:
        if name == "config":  # looked up before `__init__` ran, as when the model is copied
            raise AttributeError(name)
        return getattr(self.config, name)


class HVFormerVisionEncoder(nn.Module):
    """Hierarchical visual representations V^0..V^L (Eq. 3) of the main image and its object crops.

    As in the reference implementation, the patch tokens of the t object crops join the main image's tokens in one
    sequence [CLS, registers, image patches, crop 1 patches, ..., crop t patches] ([CLS] and register tokens where
    the family has them: SigLIP has neither, DINOv2 with registers both), so that ViT self-attention spans image and
    crops; the crop tokens get their own learned position embeddings. Absent crops are masked out of the ViT
    self-attention and of the experts' keys. The encoder is built from the building blocks of its family
    (`vision_families.VISION_FAMILIES`: embeddings, CLIP's pre-LayerNorm, layers), and only the layers up to the
    deepest chosen level are kept and run. The family's own model decides which of those blocks stay on one device
    (`_no_split_modules`), and its attention modules read the config through [`HVFormerVisionAttentionConfig`].
    """

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__()
        vision_config = config.vision_config
        self.family = VISION_FAMILIES[vision_config.model_type]
        self.embeddings = self.family.embeddings_class(vision_config)
        for name in self.family.unused_parameters:
            setattr(self.embeddings, name, None)
        if self.family.pre_layernorm is None:
            self.pre_layernorm = nn.Identity()
        else:
            self.pre_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.layers = nn.ModuleList([self.family.layer_class(vision_config) for _ in range(max(config.vision_levels))])
        attention_config = HVFormerVisionAttentionConfig(vision_config)
        for module in self.layers.modules():
            if isinstance(module, self.family.attention_class):
                module.config = attention_config
        self._no_split_modules = list(self.family.no_split_modules)
        self.pixel_normalization = HVFormerPixelNormalization(config)
        self.num_object_crops = config.num_object_crops
        self.image_size = config.image_size
        self.image_grid = config.image_size // vision_config.patch_size  # side of the image's patch grid
        self.num_prefix_tokens = self.family.num_prefix_tokens(vision_config)  # [CLS] and register tokens
        self.tokens_per_crop = (config.object_image_size // vision_config.patch_size) ** 2
        self.crop_position_embeddings = nn.Parameter(
            torch.zeros(config.num_object_crops, self.tokens_per_crop, vision_config.hidden_size)
        )

    @property
    def patch_projection(self) -> nn.Conv2d:
        """The ViT's patch embedding convolution, shared by the image and the crops."""
        return get_path(self.embeddings, self.family.patch_projection)

    def load_backbone(self, backbone: PreTrainedModel) -> None:
        """Copies the weights of a pretrained vision model of the encoder's family into the kept modules and sets
        every crop's position embeddings to the family's patch position embeddings (without the [CLS] row) resized
        (bicubic) to the crop's patch grid, a better start than noise."""
        family = self.family
        unused = set(family.unused_parameters)
        state = {name: value for name, value in backbone.embeddings.state_dict().items() if name not in unused}
        self.embeddings.load_state_dict(state)
        if family.pre_layernorm is not None:
            self.pre_layernorm.load_state_dict(get_path(backbone, family.pre_layernorm).state_dict())
        source_layers = get_path(backbone, family.layers)
        for layer, source in zip(self.layers, source_layers[: len(self.layers)], strict=True):
            layer.load_state_dict(source.state_dict())
        table = get_path(backbone.embeddings, family.position_embeddings).detach()
        positions = table.reshape(-1, table.shape[-1])[int(family.has_cls_token) :]  # (patches, d_V)
        grid = int(positions.shape[0] ** 0.5)
        crop_grid = int(self.crop_position_embeddings.shape[1] ** 0.5)
        image_grid = positions.reshape(1, grid, grid, -1).permute(0, 3, 1, 2).float()
        resized = nn.functional.interpolate(image_grid, size=(crop_grid, crop_grid), mode="bicubic")
        resized = resized.permute(0, 2, 3, 1).reshape(1, crop_grid * crop_grid, -1)
        with torch.no_grad():
            self.crop_position_embeddings.copy_(resized.expand_as(self.crop_position_embeddings))

    def freeze_backbone(self) -> None:
        """Fixes the ViT's own weights; the crop position embeddings, new to HVFormer, stay trainable."""
        for module in (self.embeddings, self.pre_layernorm, self.layers):
            module.requires_grad_(False)

    def cls_weights(self, token_mask: torch.Tensor) -> torch.Tensor:
        """The level's [CLS] as weights over the visual tokens, `(batch, n_V)` from the `(batch, n_V)` token mask.

        One-hot at the [CLS] token for a family that has one. For a family without [CLS] (SigLIP), the mean of the
        present patch tokens: the main image's and those of the present crops, absent crops left out (their tokens
        are masked out of the ViT's self-attention, so they would only add what the padding holds). Register tokens
        are never patches. The "w/o TVA" ablation reads these weights, and they are its A_C in Eq. 18.
        """
        if self.family.has_cls_token:
            weights = torch.zeros(token_mask.shape, dtype=torch.float32, device=token_mask.device)
            weights[:, 0] = 1.0
            return weights
        patches = token_mask.to(torch.float32, copy=True)
        patches[:, : self.num_prefix_tokens] = 0.0
        return patches / patches.sum(dim=-1, keepdim=True)

    def embed(
        self,
        pixel_values: torch.Tensor,
        object_pixel_values: torch.Tensor | None,
        object_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """V^0 and the visual token mask (batch, n_V) for the joint image + crops sequence."""
        if tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"`pixel_values` of {pixel_values.shape[-2]}x{pixel_values.shape[-1]} px, but the model reads "
                f"{self.image_size}x{self.image_size} images (`config.image_size`)."
            )
        dtype = self.patch_projection.weight.dtype
        embeddings = self.embeddings(pixel_values.to(dtype))  # (batch, prefix + image patches, d_V)
        batch_size, image_tokens, hidden_size = embeddings.shape
        token_mask = torch.ones(batch_size, image_tokens, dtype=torch.long, device=embeddings.device)
        if object_pixel_values is not None:
            num_crops = object_pixel_values.shape[1]
            if num_crops > self.num_object_crops:
                raise ValueError(
                    f"Got {num_crops} object crops per sample, but the model was configured with "
                    f"`num_object_crops={self.num_object_crops}`."
                )
            crops = object_pixel_values.flatten(0, 1).to(dtype)  # (batch * t, 3, s, s)
            crop_tokens = self.patch_projection(crops).flatten(2).transpose(1, 2)
            crop_tokens = crop_tokens.reshape(batch_size, num_crops, -1, hidden_size)
            if crop_tokens.shape[2] != self.crop_position_embeddings.shape[1]:
                raise ValueError(
                    f"Object crops of size {tuple(object_pixel_values.shape[-2:])} give {crop_tokens.shape[2]} "
                    f"patches, but the model expects {self.crop_position_embeddings.shape[1]} "
                    "(see `config.object_image_size`)."
                )
            crop_tokens = crop_tokens + self.crop_position_embeddings[:num_crops]
            if object_mask is None:
                object_mask = torch.ones(batch_size, num_crops, dtype=torch.long, device=embeddings.device)
            crop_mask = object_mask.to(token_mask.dtype).repeat_interleave(crop_tokens.shape[2], dim=1)
            embeddings = torch.cat([embeddings, crop_tokens.flatten(1, 2)], dim=1)
            token_mask = torch.cat([token_mask, crop_mask], dim=1)
        return self.pre_layernorm(embeddings), token_mask

    def forward(
        self,
        pixel_values: torch.Tensor,
        object_pixel_values: torch.Tensor | None = None,
        object_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Returns [V^0, ..., V^max_level] and the visual token mask. Pixels may be uint8 (normalised here) or
        normalised floats. With `output_attentions`, the layers run eager attention for this call, so that their
        attention modules return the maps A_V for [`HVFormerForRelationExtraction.get_image_features`] to record."""
        pixel_values = self.pixel_normalization(pixel_values)
        if object_pixel_values is not None:
            object_pixel_values = self.pixel_normalization(object_pixel_values, object_mask, "object_pixel_values")
        hidden_states, token_mask = self.embed(pixel_values, object_pixel_values, object_mask)
        attention_mask = visual_key_mask(token_mask, object_pixel_values, object_mask, hidden_states.dtype)
        levels = [hidden_states]
        eager = EAGER_VISION_ATTENTION.set(True) if output_attentions else None
        try:
            for layer in self.layers:
                hidden_states = layer(hidden_states, attention_mask)
                levels.append(hidden_states)
        finally:
            if eager is not None:
                EAGER_VISION_ATTENTION.reset(eager)
        return levels, token_mask


class HVFormerPreTrainedModel(PreTrainedModel):
    config_class = HVFormerConfig
    config: HVFormerConfig
    base_model_prefix = "hvformer"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # HVFormer's own block; the text encoder and the vision encoder add their families' own (see `post_init`).
    _no_split_modules = ["HVFormerVisualContextLearner"]
    # The ViT's self-attention maps A_V, recorded from the attention modules of whichever family the model reads.
    _can_record_outputs = {
        "attentions": [OutputRecorder(family.attention_class, index=1) for family in VISION_FAMILIES.values()]
    }

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (CLIPVisionEmbeddings, SiglipVisionEmbeddings)):
            if isinstance(module, CLIPVisionEmbeddings):
                init.normal_(module.class_embedding, mean=0.0, std=std)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, (ViTEmbeddings, Dinov2Embeddings, Dinov2WithRegistersEmbeddings)):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            if isinstance(module, Dinov2WithRegistersEmbeddings):
                init.zeros_(module.register_tokens)
        elif isinstance(module, HVFormerVisionEncoder):
            init.normal_(module.crop_position_embeddings, mean=0.0, std=std)
        elif isinstance(module, VISION_FAMILIES[self.config.vision_config.model_type].layer_scales):
            init.constant_(module.lambda1, self.config.vision_config.layerscale_value)
        elif isinstance(module, HVFormerPixelNormalization) and module.mean is not None:
            # Buffers that are not saved with the weights: set from the config whenever the model is built.
            init.copy_(module.mean, module.statistic(self.config.image_mean))
            init.copy_(module.std, module.statistic(self.config.image_std))


def _text_encoder_kwargs(text_config: PreTrainedConfig) -> dict[str, Any]:
    """The `AutoModel` arguments that build the encoder of a text config without a pooler (never used).

    Refuses what cannot give T (Eq. 2), one state per input token from the token ids alone: a config `AutoModel`
    does not know, and encoder-decoder models (BART, T5), whose `AutoModel` also needs decoder inputs.
    """
    if getattr(text_config, "is_encoder_decoder", False):
        raise ValueError(
            f"The text encoder is an encoder-decoder {text_config.model_type!r} model; HVFormer needs an encoder "
            "giving one state per input token (BERT, RoBERTa, DeBERTa-v2, ...)."
        )
    if type(text_config) not in MODEL_MAPPING:
        raise ValueError(
            f"`AutoModel` has no model for the text config {text_config.model_type!r}; HVFormer needs an encoder "
            "giving one state per input token (BERT, RoBERTa, DeBERTa-v2, ...)."
        )
    if "add_pooling_layer" in inspect.signature(MODEL_MAPPING[type(text_config)].__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


def _load_vision_backbone(name_or_path: str) -> PreTrainedModel:
    """A pretrained vision model of one of the `VISION_FAMILIES` (a CLIP or SigLIP vision tower from a full or a
    vision-only checkpoint, ViT without pooler, DINOv2 with or without registers)."""
    model_type = AutoConfig.from_pretrained(name_or_path).model_type
    family = family_of_checkpoint(model_type)
    if family is None:
        raise ValueError(
            f"{name_or_path!r} is a {model_type!r} checkpoint; HVFormer reads ViT-like encoders with one token "
            f"sequence per layer: {supported_families()}."
        )
    return family.model_class.from_pretrained(name_or_path, **family.load_kwargs)


class HVFormerForRelationExtraction(HVFormerPreTrainedModel):
    """HVFormer (Fig. 2): text encoder (Eq. 2), ViT (Eq. 3), one visual context learner per chosen level
    (Eq. 4-6), mixture of multimodal experts (Eq. 7-10) and the relation classifier (Eq. 11-12).

    Example:

    ```python
    >>> processor = HVFormerProcessor.from_text_vision_pretrained("bert-base-uncased", "openai/clip-vit-base-patch32")
    >>> model = HVFormerForRelationExtraction.from_text_vision_pretrained(
    ...     "bert-base-uncased", "openai/clip-vit-base-patch32", processor, vision_levels=[0, 6, 12]
    ... )
    >>> outputs = model(**processor(text=..., entity_spans=..., images=...))
    >>> outputs.logits.argmax(-1), outputs.marker_expert_weights
    ```
    """

    accepts_loss_kwargs = False

    def __init__(self, config: HVFormerConfig) -> None:
        super().__init__(config)
        if config.vision_config._attn_implementation is None:
            # The ViT is built from CLIP/ViT layers rather than a PreTrainedModel, so nothing else resolves the
            # attention of its config: it follows the model's (SDPA by default, eager when asked for).
            config.vision_config._attn_implementation_internal = config._attn_implementation
        self.text_encoder = AutoModel.from_config(config.text_config, **_text_encoder_kwargs(config.text_config))
        # The text-only baseline has no visual path at all: no ViT, no expert, no fusion.
        self.has_visual_path = config.fusion != "text"
        self.vision_encoder = HVFormerVisionEncoder(config) if self.has_visual_path else None
        self.experts = nn.ModuleDict(
            {f"level_{level}": HVFormerVisualContextLearner(config) for level in config.vision_levels}
            if self.has_visual_path
            else {}
        )
        self.fusion = FUSION_CLASSES[config.fusion](config) if self.has_visual_path else None
        self.classifier = HVFormerRelationClassifier(config)
        self.post_init()
        if config.freeze_vision_encoder and self.has_visual_path:
            self.vision_encoder.freeze_backbone()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_encoder.set_input_embeddings(value)

    def find_marker_positions(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """Positions (batch, 2) of the first `<s>` and `<o>` in each row, found with tensor ops.

        Raises a `ValueError` naming the samples that lack a marker (e.g. truncated away).
        """
        marker_ids = self.config.entity_marker_token_ids
        if marker_ids is None:
            raise ValueError(
                "`marker_positions` were not given and `config.entity_marker_token_ids` is not set, so the entity "
                "markers cannot be found in `input_ids`."
            )
        targets = torch.tensor([marker_ids[0], marker_ids[2]], device=input_ids.device)
        hits = input_ids.unsqueeze(1) == targets.view(1, 2, 1)  # (batch, 2, n_T)
        found = hits.any(dim=-1)
        if not bool(found.all()):
            missing = []
            names = self.config.entity_markers or ("subject start marker", None, "object start marker")
            for sample, marker in (~found).nonzero().tolist():
                missing.append(f"sample {sample} has no {names[2 * marker]!r}")
            raise ValueError(f"Entity marker missing from `input_ids`: {'; '.join(missing)}.")
        return hits.int().argmax(dim=-1)

    @capture_outputs
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        object_pixel_values: torch.Tensor | None = None,
        object_mask: torch.LongTensor | None = None,
        *,
        output_attentions: bool | None = None,
    ) -> HVFormerVisionOutput:
        r"""
        The visual representations V^0..V^max_level (Eq. 3) of the images and their object crops, the visual token
        mask and, with `output_attentions=True` (defaults to `config.output_attentions`), the ViT's self-attention
        maps A_V, which transformers' output capturing records from the family's attention modules
        (`_can_record_outputs`), with eager attention for this call. Arguments as in
        [`~HVFormerForRelationExtraction.forward`].
        """
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        levels, token_mask = self.vision_encoder(
            pixel_values, object_pixel_values, object_mask, output_attentions=output_attentions
        )
        return HVFormerVisionOutput(visual_token_mask=token_mask, hidden_states=tuple(levels))

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        object_pixel_values: torch.Tensor | None = None,
        object_mask: torch.LongTensor | None = None,
        marker_positions: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_tracking_maps: bool = False,
        output_expert_weights: bool = False,
        return_dict: bool | None = None,
    ) -> HVFormerRelationExtractionOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
                Word-piece ids with the entity markers (Eq. 1), e.g. from `HVFormerProcessor`.
            attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*):
                1 for real tokens, 0 for padding.
            pixel_values (`torch.Tensor` of shape `(batch_size, 3, image_size, image_size)`):
                The main images: uint8 pixels resized by the processor (its output, and what `HVFormerDataCollator`
                gives), which the model normalises with `config.image_mean` / `config.image_std`; or float pixels
                normalised by the caller, taken as they are.
            token_type_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                Segment ids for the text encoder.
            object_pixel_values (`torch.Tensor` of shape `(batch_size, t, 3, object_image_size,
                object_image_size)`, *optional*): the visual-grounding object crops, normalised floats or uint8 as
                `pixel_values`.
            object_mask (`torch.LongTensor` of shape `(batch_size, t)`, *optional*):
                1 for present crops, 0 for absent ones (their tokens are masked out). Defaults to all present.
            marker_positions (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*):
                Positions of `<s>` and `<o>`; found from `config.entity_marker_token_ids` when omitted.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Relation ids; gives the cross-entropy loss of Eq. 12.
            output_attentions (`bool`, *optional*):
                Return the experts' cross-modal attention maps and the ViT self-attention maps (eager attention is
                used for this call, whatever the model's attention implementation; the config is left as it is).
            output_hidden_states (`bool`, *optional*):
                Return the visual representations V^0..V^max_level.
            output_tracking_maps (`bool`, *optional*, defaults to `False`):
                Return the hierarchical tracking maps H_V (Eq. 17) and H_C (Eq. 18); implies attention maps.
            output_expert_weights (`bool`, *optional*, defaults to `False`):
                Return the router's weights G of every text token (`expert_weights`), which needs the fusion
                (Eq. 4-10) at every token. Otherwise, and when no attention or tracking maps are asked for, the
                experts, the router and the mixture run at the `<s>` and `<o>` rows only: the classifier reads nothing
                else (Eq. 11) and each row of C depends only on its own row of T and on the image, so the logits and
                the gradients are those of the per-token path (to float rounding) for a fraction of the work.
                `marker_expert_weights` is returned either way.
            return_dict (`bool`, *optional*):
                Return a [`HVFormerRelationExtractionOutput`] (the default, `config.return_dict`) or, when `False`,
                the tuple of its fields that are not `None`, in field order.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output_attentions = bool(output_attentions or output_tracking_maps)
        if not self.has_visual_path and (output_attentions or output_hidden_states or output_expert_weights):
            raise ValueError(
                "This model is the text-only baseline (`fusion='text'`): it has no visual path, so no attention maps, "
                "tracking maps, visual hidden states or expert weights."
            )
        if pixel_values is None and self.has_visual_path:
            raise ValueError("`pixel_values` are required: HVFormer reads the post's image.")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        per_token = output_expert_weights or output_attentions
        if marker_positions is None:
            marker_positions = self.find_marker_positions(input_ids)

        text_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:  # encoders without segments (DistilBERT) take no such argument
            text_inputs["token_type_ids"] = token_type_ids
        text_states = self.text_encoder(**text_inputs).last_hidden_state  # T, (batch, n_T, d)
        if not self.has_visual_path:
            logits = self.classifier(gather_marker_rows(text_states, marker_positions))  # Eq. 11 with C = T
            loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
            output = HVFormerRelationExtractionOutput(loss=loss, logits=logits, marker_positions=marker_positions)
            return output if return_dict else output.to_tuple()
        vision = self.get_image_features(
            pixel_values, object_pixel_values, object_mask, output_attentions=output_attentions, return_dict=True
        )
        visual_levels, visual_token_mask = vision.hidden_states, vision.visual_token_mask
        key_mask = visual_key_mask(visual_token_mask, object_pixel_values, object_mask, text_states.dtype)
        cls_weights = None
        if self.config.visual_context == "cls":
            cls_weights = self.vision_encoder.cls_weights(visual_token_mask)  # the level's [CLS], (batch, n_V)
        if not per_token:
            text_states = gather_marker_rows(text_states, marker_positions)  # T at <s>, <o>: (batch, 2, d)

        fused, visual_contexts, cross_attentions = [], [], []
        for level in self.config.vision_levels:
            fused_level, context, attentions = self.experts[f"level_{level}"](
                text_states, visual_levels[level], key_mask, output_attentions, cls_weights
            )
            fused.append(fused_level)
            visual_contexts.append(context)
            cross_attentions.append(attentions)
        fused_states, expert_weights = self.fusion(text_states, fused, visual_contexts)  # C, G
        marker_expert_weights = expert_weights
        if per_token:
            fused_states = gather_marker_rows(fused_states, marker_positions)
            if expert_weights is not None:
                marker_expert_weights = gather_marker_rows(expert_weights, marker_positions)
        logits = self.classifier(fused_states)  # fused_states: C at <s>, <o>, (batch, 2, d)

        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device))

        has_cross_attentions = output_attentions and self.config.visual_context == "tva"
        patch_patch_maps = patch_token_maps = None
        if output_tracking_maps:
            patch_mask = visual_token_mask.bool()
            patch_patch_maps = patch_patch_tracking_maps(vision.attentions, patch_mask=patch_mask)
            if has_cross_attentions:
                token_attentions = cross_attentions
            else:  # w/o TVA: every token reads the level's [CLS], so its weights are A_C (one head) in Eq. 18
                shape = (-1, 1, text_states.shape[1], -1)
                token_attentions = [cls_weights[:, None, None, :].expand(shape)] * len(self.config.vision_levels)
            patch_token_maps = tuple(
                patch_token_tracking_maps(attentions, patch_patch_maps[level], patch_mask=patch_mask)
                for level, attentions in zip(self.config.vision_levels, token_attentions, strict=True)
            )
        output = HVFormerRelationExtractionOutput(
            loss=loss,
            logits=logits,
            expert_weights=expert_weights if per_token else None,
            marker_positions=marker_positions,
            visual_token_mask=visual_token_mask,
            cross_attentions=tuple(cross_attentions) if has_cross_attentions else None,
            vision_attentions=vision.attentions if output_attentions else None,
            vision_hidden_states=visual_levels if output_hidden_states else None,
            patch_patch_tracking_maps=patch_patch_maps,
            patch_token_tracking_maps=patch_token_maps,
            marker_expert_weights=marker_expert_weights,
        )
        return output if return_dict else output.to_tuple()

    @classmethod
    def from_text_vision_pretrained(
        cls,
        text_name_or_path: str,
        vision_name_or_path: str,
        processor: Any,
        **config_kwargs: Any,
    ) -> HVFormerForRelationExtraction:
        """Builds HVFormer from a pretrained text encoder (any `AutoModel` encoder: BERT, RoBERTa, DeBERTa-v2, ...)
        and a pretrained vision encoder of one of the `VISION_FAMILIES` (CLIP, ViT, DINOv2, SigLIP).

        The entity markers and their ids and the pixel statistics (`image_mean`, `image_std`) are read from `processor`
        (an `HVFormerProcessor`, which added the markers to its tokenizer) into the config, and the token embeddings
        are resized to its tokenizer. The crop position embeddings start from the pretrained patch position embeddings
        resized to the crop grid. For an encoder that interpolates its position embeddings (DINOv2), `image_size`
        defaults to the processor's image size.

        Args:
            text_name_or_path: Hub id or folder of the text encoder (e.g. `bert-base-uncased`, `roberta-base`).
            vision_name_or_path: Hub id or folder of a vision checkpoint: CLIP or SigLIP (full or vision-only), ViT,
                DINOv2 (e.g. `openai/clip-vit-base-patch32`, `facebook/dinov2-base`).
            processor: The `HVFormerProcessor` of the model: gives `entity_markers`, `marker_token_ids()`,
                `pixel_statistics()`, the `tokenizer` whose size the embeddings take and `image_size()`.
            config_kwargs: Further `HVFormerConfig` arguments (`vision_levels`, `id2label`, ...).
        """
        text_kwargs = _text_encoder_kwargs(AutoConfig.from_pretrained(text_name_or_path))
        text_encoder = AutoModel.from_pretrained(text_name_or_path, **text_kwargs)
        vision_backbone = _load_vision_backbone(vision_name_or_path)
        markers, marker_ids = list(processor.entity_markers), processor.marker_token_ids()
        if VISION_FAMILIES[vision_backbone.config.model_type].interpolates_positions:
            config_kwargs.setdefault("image_size", processor.image_processor.image_size())

        config = HVFormerConfig(
            text_config=text_encoder.config.to_dict(),
            vision_config=vision_backbone.config.to_dict(),
            entity_markers=markers,
            entity_marker_token_ids=marker_ids,
            **{**processor.pixel_statistics(), **config_kwargs},
        )
        model = cls(config)
        model.text_encoder.load_state_dict(text_encoder.state_dict())
        if model.has_visual_path:
            model.vision_encoder.load_backbone(vision_backbone)
        # Mean resizing (the marker rows drawn from the distribution of the pretrained embeddings) is the intended
        # start; transformers' notice about it is kept from every user's console.
        resize_logger = logging.get_logger("transformers.modeling_utils")
        level = resize_logger.level
        resize_logger.setLevel(logging.ERROR)
        try:
            model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=True)
        finally:
            resize_logger.setLevel(level)
        return model

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> HVFormerForRelationExtraction:
        """[`~PreTrainedModel.from_pretrained`], with unreadable weights (a truncated or corrupt `model.safetensors`)
        reported as an `OSError` that names the model they belong to, and a `quantization_config` of an unknown
        method refused before anything loads."""
        check_quantization_config(kwargs.get("quantization_config"))
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"The weights of {os.fspath(pretrained_model_name_or_path)!r} (model.safetensors) cannot be read: "
                f"{error}. The file is incomplete or corrupt."
            ) from error

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Saves the model as [`~PreTrainedModel.save_pretrained`] does, and makes the folder usable by
        `pipeline("multimodal-relation-extraction", model=folder, trust_remote_code=True)` and by Inference Endpoints:
        the pipeline is registered in `config.custom_pipelines`, and `pipeline_hvformer.py` and `handler.py` are
        copied next to the model code. Save the processor into the same folder."""
        # Imported here, as the pipelines module of transformers takes seconds to import; these relative imports also
        # make both files travel with this file as remote code.
        from .handler import EndpointHandler
        from .pipeline_hvformer import CUSTOM_PIPELINES, HVFormerRelationExtractionPipeline

        self.config.custom_pipelines = CUSTOM_PIPELINES
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for shipped in (HVFormerRelationExtractionPipeline, EndpointHandler):
                shutil.copy(inspect.getfile(shipped), save_directory)


HVFormerForRelationExtraction.register_for_auto_class("AutoModel")
