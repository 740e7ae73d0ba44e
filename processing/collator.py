"""Batching cached MNRE rows into the inputs of `HVFormerForRelationExtraction`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def _uint8_stack(values: Sequence[Any], name: str) -> torch.Tensor:
    """Stacks per-example pixel arrays (numpy arrays, tensors or nested lists of ints in [0, 255]) as uint8.

    `datasets`' numpy format hands uint8 columns out as int64, hence the range check rather than a dtype check.
    """
    stacked = np.stack([np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value) for value in values])
    if stacked.dtype != np.uint8:
        if not np.issubdtype(stacked.dtype, np.integer) or stacked.min() < 0 or stacked.max() > 255:
            raise ValueError(
                f"'{name}' must hold uint8 pixels (resized by load_mnre, not normalised), got {stacked.dtype} values"
            )
        stacked = stacked.astype(np.uint8)
    return torch.from_numpy(stacked)


def _long_stack(values: Sequence[Any]) -> torch.Tensor:
    return torch.as_tensor(np.stack([np.asarray(value) for value in values]), dtype=torch.long)


class HVFormerDataCollator:
    """
    Turns rows of [`load_mnre`]'s datasets into a batch for [`HVFormerForRelationExtraction`].

    - `input_ids` (unpadded, as the processor encodes them with `padding=False`) and `marker_positions` are padded
      to the longest row (or to a multiple of `pad_to_multiple_of`) with `processor.pad`, which also gives
      `attention_mask` and `token_type_ids` and moves the markers with left padding.
    - `pixel_values` (uint8 `(3, H, W)` per row) and `object_pixel_values` (uint8 `(t, 3, s, s)`) are stacked and
      normalised with `processor.normalize_pixels` and `processor.normalize_crops` into float32 `(B, 3, H, W)` and
      `(B, t, 3, s, s)`, absent crops (`object_mask` 0) zero, as in the processor's own `__call__`.
    - `object_mask` `(B, t)`, `marker_positions` `(B, 2)` and, when rows have them, `labels` `(B,)` become long
      tensors.
    - Every other field (`id`, `kind`, `token`, `image_status`, ...) is dropped: keep ids aside (e.g. from the
      dataset's `id` column in row order) to trace predictions.

    Rows may hold numpy arrays (the format [`load_mnre`] sets), tensors or plain lists.

    Args:
        processor ([`HVFormerProcessor`]):
            Gives `pad`, `normalize_pixels` and `normalize_crops`.
        pad_to_multiple_of (`int`, *optional*):
            Pad the text length to a multiple of this (e.g. 8 for tensor cores).
    """

    def __init__(self, processor: Any, pad_to_multiple_of: int | None = None) -> None:
        self.processor = processor
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty list of rows")
        missing = [name for name in ("input_ids", "attention_mask", "marker_positions") if name not in features[0]]
        if missing:
            raise KeyError(f"rows lack {missing}: collate rows of a dataset made by load_mnre")

        batch: dict[str, torch.Tensor] = dict(
            self.processor.pad(
                [np.asarray(row["input_ids"]).tolist() for row in features],
                [np.asarray(row["marker_positions"]).tolist() for row in features],
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
        )
        if "pixel_values" in features[0]:
            pixels = _uint8_stack([row["pixel_values"] for row in features], "pixel_values")
            batch["pixel_values"] = self.processor.normalize_pixels(pixels)
        if "object_pixel_values" in features[0]:
            crops = _uint8_stack([row["object_pixel_values"] for row in features], "object_pixel_values")
            batch["object_mask"] = _long_stack([row["object_mask"] for row in features])
            batch["object_pixel_values"] = self.processor.normalize_crops(crops, batch["object_mask"])
        if "labels" in features[0]:
            batch["labels"] = _long_stack([row["labels"] for row in features])
        return batch
