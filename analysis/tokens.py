"""Where the entity markers and the visual tokens sit in HVFormer's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modeling_hvformer.modeling_hvformer import gather_marker_rows

__all__ = ["VisualTokenLayout", "marker_names", "marker_rows"]


def marker_names(config: Any) -> tuple[str, str]:
    """The subject and object start markers of an `HVFormerConfig` (`entity_markers[0]` and `[2]`): the tokens whose
    fused representations are classified (Eq. 11) and analysed in §4.3."""
    return config.entity_markers[0], config.entity_markers[2]


def marker_rows(values: torch.Tensor, marker_positions: torch.Tensor) -> torch.Tensor:
    """The rows of the subject and object markers of a per-token tensor.

    Args:
        values: `(B, n_T, ...)` (e.g. expert weights G, `(B, n_T, E)`) or `(B, M, n_T, n_V)` per-head maps (A_C, H_C).
        marker_positions: `(B, 2)` positions of the subject and object markers.

    Returns:
        `(B, 2, ...)` for the former, `(B, M, 2, n_V)` for the latter (so the result is a valid input of
        `cross_modal_kurtosis` and `head_divergence`, with the two markers as the text tokens).
    """
    if values.dim() == 4:  # per head: gather along the text axis, 2
        return gather_marker_rows(values.transpose(1, 2), marker_positions).transpose(1, 2)
    return gather_marker_rows(values, marker_positions)


@dataclass(frozen=True)
class VisualTokenLayout:
    """Where the tokens of the ViT sequence `[CLS, registers, main image patches, crop 1 patches, ..., crop t
    patches]` sit; [CLS] and the register tokens only where the vision encoder has them (SigLIP has neither, DINOv2
    with registers both). Register tokens are neither image nor crop patches.

    Args:
        num_tokens: n_V, the length of the sequence.
        grid: side of the main image's patch grid (`image_size // patch_size`).
        crop_tokens: patches per object crop (`(object_image_size // patch_size) ** 2`).
        cls_tokens: 1 when the sequence starts with a [CLS] token, else 0.
        register_tokens: register tokens after [CLS].
    """

    num_tokens: int
    grid: int
    crop_tokens: int
    cls_tokens: int = 1
    register_tokens: int = 0

    @classmethod
    def from_vision_encoder(cls, vision_encoder: Any, num_tokens: int) -> VisualTokenLayout:
        """The layout that an `HVFormerVisionEncoder` builds (its `image_grid`, `tokens_per_crop`, [CLS] and register
        tokens), for sequences of `num_tokens` visual tokens."""
        cls_tokens = int(vision_encoder.family.has_cls_token)
        layout = cls(
            num_tokens=num_tokens,
            grid=vision_encoder.image_grid,
            crop_tokens=vision_encoder.tokens_per_crop,
            cls_tokens=cls_tokens,
            register_tokens=vision_encoder.num_prefix_tokens - cls_tokens,
        )
        extra = num_tokens - layout.main_tokens
        if extra < 0 or (extra and extra % layout.crop_tokens):
            prefix = "[CLS] + " * cls_tokens + f"{layout.register_tokens} registers + " * bool(layout.register_tokens)
            raise ValueError(
                f"{num_tokens} visual tokens do not fit {prefix}{layout.grid}x{layout.grid} image patches + blocks of "
                f"{layout.crop_tokens} crop patches, the layout of the model's vision encoder."
            )
        return layout

    @property
    def prefix_tokens(self) -> int:
        """[CLS] and register tokens, before the main image's patches."""
        return self.cls_tokens + self.register_tokens

    @property
    def main_tokens(self) -> int:
        """[CLS], register tokens and the main image's patches."""
        return self.prefix_tokens + self.grid**2

    @property
    def num_crops(self) -> int:
        return max(self.num_tokens - self.main_tokens, 0) // self.crop_tokens

    def blocks(self) -> list[tuple[str, int]]:
        """`(name, first token)` of each block of the sequence: `[CLS]`, `registers`, `image`, `crop 1`, ..."""
        blocks = [("[CLS]", 0)] * self.cls_tokens + [("registers", self.cls_tokens)] * bool(self.register_tokens)
        blocks.append(("image", self.prefix_tokens))
        return blocks + [
            (f"crop {crop + 1}", self.main_tokens + crop * self.crop_tokens) for crop in range(self.num_crops)
        ]

    def image_grid(self, values: np.ndarray) -> np.ndarray:
        """`(..., n_V)` values -> `(..., grid, grid)` values of the main image's patches (row-major, as ViT)."""
        return values[..., self.prefix_tokens : self.main_tokens].reshape(*values.shape[:-1], self.grid, self.grid)

    def to_dict(self) -> dict[str, int]:
        return {
            "num_visual_tokens": self.num_tokens,
            "cls_tokens": self.cls_tokens,
            "register_tokens": self.register_tokens,
            "main_image_tokens": self.main_tokens,
            "image_grid": self.grid,
            "num_crop_blocks": self.num_crops,
            "tokens_per_crop": self.crop_tokens,
        }
