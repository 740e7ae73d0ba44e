"""HVFormer model configuration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import AutoConfig, BertConfig, CLIPVisionConfig, PreTrainedConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging

from .quantization_hvformer import check_quantization_config
from .vision_families import VISION_FAMILIES, supported_families

logger = logging.get_logger(__name__)

MNRE_RELATIONS: tuple[str, ...] = (
    "None",
    "/loc/loc/contain",
    "/misc/loc/held_on",
    "/misc/misc/part_of",
    "/org/loc/locate_at",
    "/org/org/alternate_names",
    "/org/org/subsidiary",
    "/per/loc/place_of_birth",
    "/per/loc/place_of_residence",
    "/per/misc/awarded",
    "/per/misc/nationality",
    "/per/misc/present_in",
    "/per/misc/race",
    "/per/misc/religion",
    "/per/org/member_of",
    "/per/per/alternate_names",
    "/per/per/alumi",
    "/per/per/charges",
    "/per/per/couple",
    "/per/per/neighbor",
    "/per/per/parent",
    "/per/per/peer",
    "/per/per/siblings",
)
"""The 23 relation labels of MNRE v2, `None` first (id 0), then in alphabetical order."""

MAX_PARAMETERS = 5_000_000_000
"""The most parameters a configuration may imply ([`HVFormerConfig.parameter_estimate`]): about twice the largest
pairing of public checkpoints of the supported families (DeBERTa-v2-xxlarge, 1.5 B, with DINOv2-giant, 1.1 B). A
config.json beyond it (an absurd `hidden_size`, a size with digits too many) is refused before the model takes any
memory."""

VISUAL_CONTEXT_MODES = ("tva", "cls")
FUSION_MODES = ("mome", "concat", "text")
PIXEL_STATISTICS = ("image_mean", "image_std")
"""The config fields with which the model normalises uint8 pixels on the device."""


def _as_sub_config(value: PreTrainedConfig | dict | None, default: type[PreTrainedConfig], field: str):
    if value is None:
        return default()
    if isinstance(value, PreTrainedConfig):
        return value
    if isinstance(value, dict):
        model_type = value.get("model_type", default.model_type)
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"`{field}` has an unknown model_type {model_type!r}.")
        return CONFIG_MAPPING[model_type](**{k: v for k, v in value.items() if k != "model_type"})
    raise ValueError(f"`{field}` must be a PreTrainedConfig or a dict, got {type(value).__name__}.")


def _feed_forward_width(config: PreTrainedConfig) -> int:
    """Inner width of an encoder layer's FFN: `intermediate_size`, else `mlp_ratio` times the width (DINOv2), else
    the usual four times."""
    intermediate_size = getattr(config, "intermediate_size", None)
    if intermediate_size:
        return intermediate_size
    return int(getattr(config, "mlp_ratio", 4) * config.hidden_size)


def _encoder_parameters(config: PreTrainedConfig, num_layers: int, table_rows: int) -> int:
    """The weights of a transformer encoder's `num_layers` layers (attention 4 d^2, FFN 2 d d_ff) and of its tables of
    `table_rows` rows of width d (token, position and type embeddings; the patch convolution of a ViT)."""
    width = config.hidden_size
    return table_rows * width + num_layers * (4 * width * width + 2 * width * _feed_forward_width(config))


def _check_multiple(field: str, side: int, patch_size: int) -> None:
    """Refuses an image side that is not a positive multiple of the ViT patch size, naming the valid sides near it."""
    if side >= patch_size and side % patch_size == 0:
        return
    below = max(side // patch_size, 1) * patch_size
    near = sorted({below, below + patch_size} - {side})
    raise ValueError(
        f"`{field}` ({side}) must be a positive multiple of the ViT patch size ({patch_size}): "
        f"{' or '.join(map(str, near))} px would do."
    )


class HVFormerConfig(PreTrainedConfig):
    r"""
    Configuration of [`HVFormerForRelationExtraction`], the hierarchical visual context fusion transformer of
    "Multimodal Relation Extraction via a Mixture of Hierarchical Visual Context Learners" (WWW 2024).

    Args:
        text_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the text encoder producing T (Eq. 2): any `AutoModel` encoder with token embeddings
            (BERT, RoBERTa, DeBERTa-v2, ...). Defaults to `BertConfig()`.
        vision_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the ViT-like vision encoder producing V^0..V^L (Eq. 3), one of the families of
            `vision_families.VISION_FAMILIES`: CLIP vision (the paper's CLIP ViT-B/32), ViT, DINOv2 (with or without
            registers) or SigLIP vision. Defaults to `CLIPVisionConfig()`.
        vision_levels (`list[int]`, *optional*):
            The ViT levels l that get a visual context learner (expert). 0 is the patch embedding V^0, l the
            output of the l-th ViT layer. `[12]` alone is the "w/o HVF" ablation; a single level is an RQ1 variant.
            Defaults to the lowest, middle and highest levels of the vision encoder: the paper's `[0, 6, 12]` for a
            12-layer ViT.
        num_cross_attention_heads (`int`, *optional*):
            Number of heads M of the textual-guided visual attention (Eq. 4). Defaults to the text encoder's number
            of attention heads (12 for BERT-base, as in the paper).
        use_text_expert (`bool`, *optional*, defaults to `True`):
            Whether the router also weighs the text-only expert f_text(T) = T (Eq. 10).
        visual_context (`str`, *optional*, defaults to `"tva"`):
            `"tva"`: textual-guided visual attention (Eq. 4). `"cls"`: the "w/o TVA" ablation, which uses each
            level's [CLS] patch embedding as the visual context of every token.
        fusion (`str`, *optional*, defaults to `"mome"`):
            `"mome"`: mixture of multimodal experts (Eq. 9-10). `"concat"`: the "w/o MoME" ablation, one FFN over
            the concatenation [T; C_l1; ...; C_lk]. `"text"`: the text-only baseline (Table 2's BERT row), no visual
            path at all: the classifier (Eq. 11) reads T at `<s>` and `<o>`, and no vision encoder is built.
        num_object_crops (`int`, *optional*, defaults to 3):
            Number t of visual-grounding object crops whose patch tokens join the main image's tokens.
        object_image_size (`int`, *optional*, defaults to 128):
            Side of the square object crops, in pixels; a multiple of the ViT patch size.
        image_size (`int`, *optional*):
            Side of the square main image, in pixels, as the processor makes it. Defaults to the vision encoder's
            `image_size`; only a family whose position embeddings are interpolated to any size (DINOv2) may read
            another size (a multiple of the patch size), e.g. 224-px images with a checkpoint trained at 518 px.
        freeze_vision_encoder (`bool`, *optional*, defaults to `False`):
            Keep the ViT's parameters fixed (the crop position embeddings stay trainable).
        image_mean (`list[float]`, *optional*, defaults to CLIP's `[0.4815, 0.4578, 0.4082]`):
            Per-channel mean of the normalisation the model applies to uint8 pixels on the device:
            `(pixels / 255 - image_mean) / image_std` (float pixels are taken as normalised already). Set from the
            processor by [`HVFormerForRelationExtraction.from_text_vision_pretrained`] and checked by
            `HVFormerProcessor.check_matches_model`. `None` (what a `config.json` saved without these fields loads
            as) means not recorded: the model then takes float pixels only.
        image_std (`list[float]`, *optional*, defaults to CLIP's `[0.2686, 0.2613, 0.2758]`):
            Per-channel standard deviation of that normalisation; `None` together with `image_mean`.
        entity_markers (`list[str]`, *optional*):
            The four entity-marker tokens (Eq. 1: subject start, subject end, object start, object end) of the
            processor the model was built with; set by [`HVFormerForRelationExtraction.from_text_vision_pretrained`].
        entity_marker_token_ids (`list[int]`, *optional*):
            Their ids in the text vocabulary; needed to find the markers when `marker_positions` is not given.
        none_label (`str` or `None`, *optional*, defaults to `"None"`):
            The label meaning "no relation", excluded from micro precision/recall/F1 (MNRE's `None`). `None` for
            labels without such a class: every label then counts in the scores.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout in the experts' FFN (Eq. 6) and before the classifier (Eq. 11).
        attention_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the cross-modal attention probabilities (Eq. 4).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the fusion layers.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of the LayerNorm of Eq. 5.
        id2label / label2id (`dict`, *optional*):
            The relation labels; default to the 23 MNRE v2 relations with `None` as id 0.

    Example:

    ```python
    >>> from transformers import BertConfig, ViTConfig
    >>> from modeling_hvformer import HVFormerConfig, HVFormerForRelationExtraction

    >>> config = HVFormerConfig(text_config=BertConfig(), vision_config=ViTConfig(), vision_levels=[0, 6, 12])
    >>> model = HVFormerForRelationExtraction(config)
    ```
    """

    model_type = "hvformer"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    def __init__(
        self,
        text_config: PreTrainedConfig | dict | None = None,
        vision_config: PreTrainedConfig | dict | None = None,
        vision_levels: list[int] | tuple[int, ...] | None = None,
        num_cross_attention_heads: int | None = None,
        use_text_expert: bool = True,
        visual_context: str = "tva",
        fusion: str = "mome",
        num_object_crops: int = 3,
        object_image_size: int = 128,
        image_size: int | None = None,
        freeze_vision_encoder: bool = False,
        image_mean: Sequence[float] | None = tuple(OPENAI_CLIP_MEAN),
        image_std: Sequence[float] | None = tuple(OPENAI_CLIP_STD),
        entity_markers: list[str] | tuple[str, ...] | None = None,
        entity_marker_token_ids: list[int] | None = None,
        none_label: str | None = "None",
        hidden_dropout_prob: float = 0.1,
        attention_dropout: float = 0.1,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.text_config = _as_sub_config(text_config, BertConfig, "text_config")
        self.vision_config = _as_sub_config(vision_config, CLIPVisionConfig, "vision_config")
        if vision_levels is None:
            depth = self.vision_config.num_hidden_layers
            vision_levels = sorted({0, depth // 2, depth})
        self.vision_levels = [int(level) for level in vision_levels]
        if num_cross_attention_heads is None:
            num_cross_attention_heads = self.text_config.num_attention_heads
        self.num_cross_attention_heads = num_cross_attention_heads
        self.use_text_expert = use_text_expert
        self.visual_context = visual_context
        self.fusion = fusion
        self.num_object_crops = num_object_crops
        self.object_image_size = object_image_size
        self.image_size = getattr(self.vision_config, "image_size", None) if image_size is None else int(image_size)
        self.freeze_vision_encoder = freeze_vision_encoder
        self.image_mean = None if image_mean is None else [float(value) for value in image_mean]
        self.image_std = None if image_std is None else [float(value) for value in image_std]
        self.entity_markers = None if entity_markers is None else list(entity_markers)
        self.entity_marker_token_ids = None if entity_marker_token_ids is None else list(entity_marker_token_ids)
        self.none_label = none_label
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        if id2label is None:
            id2label = dict(enumerate(MNRE_RELATIONS))
        id2label = {int(index): label for index, label in id2label.items()}
        if label2id is None:
            label2id = {label: index for index, label in id2label.items()}
        if kwargs.pop("output_expert_weights", None) is not None:
            logger.warning_once(
                "`output_expert_weights` in an HVFormer config (a config.json saved by an earlier version) is "
                "ignored: the model returns the router's weights of every token when "
                "`forward(output_expert_weights=True)` asks for them."
            )
        super().__init__(id2label=id2label, label2id=label2id, **kwargs)
        self._validate()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> HVFormerConfig:
        """[`~PreTrainedConfig.from_dict`], with the pixel statistics of a `config.json` saved before they were
        recorded left unknown (`None`) rather than taking CLIP's defaults: such a model was trained on what its own
        processor normalised, whatever that was. A `quantization_config` among `kwargs` (what `AutoModel` and the
        pipeline's `model_kwargs` pass on while the config loads) must name a known method."""
        check_quantization_config(kwargs.get("quantization_config"))
        return super().from_dict({**dict.fromkeys(PIXEL_STATISTICS), **config_dict}, **kwargs)

    @property
    def hidden_size(self) -> int:
        """Width d of the fused representations: the text encoder's width (visual features are projected to it)."""
        return self.text_config.hidden_size

    @property
    def num_experts(self) -> int:
        """E: one expert per chosen level, plus the text-only expert when enabled (Eq. 7, 10); none for the text-only
        baseline."""
        if self.fusion == "text":
            return 0
        return len(self.vision_levels) + int(self.use_text_expert)

    @property
    def expert_names(self) -> list[str]:
        """Names of the experts in the order of the last axis of the expert weights G (Eq. 10: text first)."""
        if self.fusion == "text":
            return []
        names = [f"level_{level}" for level in self.vision_levels]
        return (["text"] if self.use_text_expert else []) + names

    @property
    def none_label_id(self) -> int | None:
        """The id of `none_label`; `None` when the labels have no "no relation" class."""
        return None if self.none_label is None else self.label2id[self.none_label]

    def parameter_estimate(self) -> dict[str, int]:
        """The parameters the model of this configuration holds, estimated from its sizes alone (no model is built):
        the weight matrices and tables of the text encoder, of the ViT layers kept (up to the deepest level) and of
        HVFormer's own modules (experts, router, crop positions, classifier), by part. Biases and norms are left out:
        the estimate is under the count by a fraction of a percent for real encoders, a few percent for tiny ones."""
        text, vision = self.text_config, self.vision_config
        width, vision_width = self.hidden_size, vision.hidden_size
        text_rows = sum(
            getattr(text, name, None) or 0 for name in ("vocab_size", "max_position_embeddings", "type_vocab_size")
        )
        patch_size = vision.patch_size
        vision_rows = (vision.image_size // patch_size) ** 2 + 1 + vision.num_channels * patch_size**2
        num_levels, num_inputs = len(self.vision_levels), len(self.vision_levels) + 1
        if self.visual_context == "tva":  # query and output of width d, key and value from the vision width
            context = 2 * width * width + 2 * width * vision_width
        else:  # the [CLS] projection
            context = width * vision_width
        expert = context + 3 * width * width  # and the FFN over [T; Ṽ_l] (Eq. 6)
        if self.fusion == "mome":
            fusion = num_inputs * width * self.num_experts
        else:
            fusion = (num_inputs + 1) * width * width
        crops = self.num_object_crops * (self.object_image_size // patch_size) ** 2 * vision_width
        return {
            "text encoder": _encoder_parameters(text, text.num_hidden_layers, text_rows),
            "vision encoder": _encoder_parameters(vision, max(self.vision_levels), vision_rows) + crops,
            "fusion": num_levels * expert + fusion + 2 * width * self.num_labels,
        }

    def _validate(self) -> None:
        vision_type = self.vision_config.model_type
        if vision_type not in VISION_FAMILIES:
            raise ValueError(
                f"`vision_config` is a {vision_type!r} config; HVFormer reads ViT-like encoders with one token "
                f"sequence per layer: {supported_families()}."
            )
        family = VISION_FAMILIES[vision_type]
        family.check_installed()
        depth = self.vision_config.num_hidden_layers
        if not self.vision_levels:
            raise ValueError("`vision_levels` must name at least one ViT level.")
        if len(set(self.vision_levels)) != len(self.vision_levels):
            raise ValueError(f"`vision_levels` has duplicates: {self.vision_levels}.")
        for level in self.vision_levels:
            if not 0 <= level <= depth:
                raise ValueError(
                    f"`vision_levels` contains {level}, but the vision encoder has levels 0..{depth} "
                    f"(0 = patch embeddings, {depth} = last layer)."
                )
        if self.visual_context not in VISUAL_CONTEXT_MODES:
            raise ValueError(f"`visual_context` must be one of {VISUAL_CONTEXT_MODES}, got {self.visual_context!r}.")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"`fusion` must be one of {FUSION_MODES}, got {self.fusion!r}.")
        if self.num_cross_attention_heads < 1 or self.hidden_size % self.num_cross_attention_heads:
            raise ValueError(
                f"`num_cross_attention_heads` ({self.num_cross_attention_heads}) must divide the hidden size "
                f"({self.hidden_size})."
            )
        if self.num_object_crops < 0:
            raise ValueError(f"`num_object_crops` must be >= 0, got {self.num_object_crops}.")
        patch_size = self.vision_config.patch_size
        if self.num_object_crops:
            _check_multiple("object_image_size", self.object_image_size, patch_size)
        _check_multiple("image_size", self.image_size, patch_size)
        if self.image_size != self.vision_config.image_size and not family.interpolates_positions:
            raise ValueError(
                f"`image_size` ({self.image_size}) differs from the {family.name} encoder's "
                f"({self.vision_config.image_size}), whose position embeddings have that size only."
            )
        if (self.image_mean is None) != (self.image_std is None):
            raise ValueError("`image_mean` and `image_std` must be given together (or both be None).")
        if self.image_mean is not None:
            channels = self.vision_config.num_channels
            if len(self.image_mean) != channels or len(self.image_std) != channels:
                raise ValueError(
                    f"`image_mean` and `image_std` must have one value per image channel ({channels}), got "
                    f"{self.image_mean} and {self.image_std}."
                )
            if not all(value > 0 for value in self.image_std):
                raise ValueError(f"`image_std` must be positive, got {self.image_std}.")
        if self.entity_markers is not None and (len(self.entity_markers) != 4 or len(set(self.entity_markers)) != 4):
            raise ValueError(f"`entity_markers` must be four distinct tokens, got {self.entity_markers}.")
        if self.entity_marker_token_ids is not None and len(set(self.entity_marker_token_ids)) != 4:
            raise ValueError(
                f"`entity_marker_token_ids` must be four distinct ids, got {self.entity_marker_token_ids}."
            )
        if self.none_label is not None and self.none_label not in self.label2id:
            raise ValueError(f"`none_label` {self.none_label!r} is not one of the labels in `label2id`.")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ValueError(f"`id2label` must have the ids 0..num_labels-1, got {sorted(self.id2label)}.")
        inverse = {label: index for index, label in self.id2label.items()}
        if len(inverse) != len(self.id2label):
            raise ValueError(f"`id2label` maps two ids to the same label: {self.id2label}.")
        if self.label2id != inverse:
            wrong = sorted(
                f"{label!r}: {self.label2id.get(label)} instead of {index}"
                for label, index in inverse.items()
                if self.label2id.get(label) != index
            )
            extra = sorted(set(self.label2id) - set(inverse))
            raise ValueError(
                "`label2id` must be the inverse of `id2label`; "
                + "; ".join(wrong + [f"{label!r} is not in id2label" for label in extra])
                + "."
            )
        for name in ("hidden_dropout_prob", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        check_quantization_config(getattr(self, "quantization_config", None))
        self._check_size()

    def _check_size(self) -> None:
        """Refuses a configuration implying more than [`MAX_PARAMETERS`], naming the sizes that make it so."""
        parts = self.parameter_estimate()
        total = sum(parts.values())
        if total <= MAX_PARAMETERS:
            return
        text, vision = self.text_config, self.vision_config
        sizes = {
            "text encoder": f"hidden_size {text.hidden_size:,}, FFN {_feed_forward_width(text):,}, "
            f"{text.num_hidden_layers:,} layers, vocab_size {getattr(text, 'vocab_size', 0) or 0:,}",
            "vision encoder": f"hidden_size {vision.hidden_size:,}, FFN {_feed_forward_width(vision):,}, "
            f"{max(self.vision_levels):,} layers kept",
            "fusion": f"{len(self.vision_levels)} experts of width {self.hidden_size:,}, {self.num_labels:,} labels",
        }
        listed = "; ".join(f"{part} {count / 1e9:,.2f} B ({sizes[part]})" for part, count in parts.items())
        raise ValueError(
            f"The configuration implies about {total / 1e9:,.1f} billion parameters, more than the "
            f"{MAX_PARAMETERS / 1e9:,.0f} billion HVFormer allows: {listed}. Check the sizes of `text_config` and "
            "`vision_config`."
        )


HVFormerConfig.register_for_auto_class()
