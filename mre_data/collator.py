"""Batching cached MNRE rows into the inputs of `HVFormerForRelationExtraction`: [`ColumnBatches`] reads a batch of
a [`load_mnre`] split straight from its Arrow buffers, [`HVFormerDataCollator`] pads and stacks it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch

TEXT_INPUTS: tuple[str, ...] = ("input_ids", "marker_positions")
"""The text columns the collator reads; `processor.pad` makes `attention_mask` and `token_type_ids` from them."""
PIXEL_INPUTS: tuple[str, ...] = ("pixel_values", "object_pixel_values")
COLLATED_COLUMNS: tuple[str, ...] = TEXT_INPUTS + PIXEL_INPUTS + ("object_mask", "labels")
"""Every column [`HVFormerDataCollator`] reads."""
IGNORE_INDEX = -100
"""The label of a padding row of [`StaticShapes`]: PyTorch's cross-entropy leaves it out of the loss (its default
`ignore_index`)."""
TEXT_LENGTH_BUCKETS = 4
"""How many text lengths [`static_text_lengths`] allows a run."""


def static_text_lengths(max_length: int, buckets: int = TEXT_LENGTH_BUCKETS, multiple: int = 8) -> tuple[int, ...]:
    """The text lengths of a static-shape run: `buckets` evenly spaced lengths up to `max_length`, each rounded up to
    a multiple of `multiple` (tensor cores) but never past `max_length`, which is always one of them (the text
    encoder may have no position beyond it). For `max_length=80`: `(24, 40, 64, 80)`."""
    if max_length < 1 or buckets < 1 or multiple < 1:
        raise ValueError(f"max_length, buckets and multiple must be >= 1, got {max_length}, {buckets}, {multiple}")
    lengths = {max_length}
    for k in range(1, buckets):
        evenly_spaced = -(-max_length * k // buckets)  # ceil(max_length * k / buckets)
        lengths.add(min(-(-evenly_spaced // multiple) * multiple, max_length))
    return tuple(sorted(lengths))


@dataclass(frozen=True)
class StaticShapes:
    """
    The few batch shapes of a static-shape run, so that a compiled step (`torch.compile`, CUDA graphs) meets a
    handful of shapes in a whole run instead of one per text length and a last, smaller batch per epoch:

    - the text is padded to the smallest of `text_lengths` that holds the batch's longest row (see
      [`static_text_lengths`]);
    - the object crops are padded with absent crops (zeros, `object_mask` 0) to `num_object_crops`;
    - a batch with fewer rows than the smallest of `batch_sizes` that holds it (the last batch of an epoch or an
      evaluation) is filled with padding rows: copies of its first row (valid inputs, so no NaN can reach the
      gradients through them) labelled [`IGNORE_INDEX`], which the loss leaves out. Whoever reads outputs drops them:
      accelerate's `gather_for_metrics`, which `Trainer` uses, keeps only the real rows of an evaluation's last batch.

    Args:
        text_lengths (`Sequence[int]`): the text lengths allowed.
        batch_sizes (`Sequence[int]`): the batch sizes allowed (e.g. the training and the evaluation batch sizes).
        num_object_crops (`int`): the object crops per row.
    """

    text_lengths: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    num_object_crops: int

    def __post_init__(self) -> None:
        for name in ("text_lengths", "batch_sizes"):
            values = tuple(sorted(set(getattr(self, name))))
            if not values or any(
                isinstance(value, bool) or not isinstance(value, int) or value < 1 for value in values
            ):
                raise ValueError(f"StaticShapes.{name} must be integers >= 1, got {getattr(self, name)!r}"[:300])
            object.__setattr__(self, name, values)
        if self.num_object_crops < 0:
            raise ValueError(f"StaticShapes.num_object_crops must be >= 0, got {self.num_object_crops}")

    def text_length(self, longest: int) -> int:
        """The text length of a batch whose longest row has `longest` tokens."""
        return _smallest_holding(self.text_lengths, longest, "a row has {} tokens, more than the longest text length")

    def batch_size(self, rows: int) -> int:
        """The batch size of a batch of `rows` rows."""
        return _smallest_holding(self.batch_sizes, rows, "a batch has {} rows, more than the largest batch size")


def _smallest_holding(allowed: tuple[int, ...], needed: int, message: str) -> int:
    for value in allowed:
        if value >= needed:
            return value
    raise ValueError(f"{message.format(needed)} of the static shapes, {allowed[-1]}")


def _fixed_shape_chunks(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A column of fixed-shape arrays (`Array3D`, `Array4D`, fixed-size lists) as one numpy array `(rows, *shape)`
    per Arrow chunk, viewing the Arrow buffers (the memory-mapped cache file) without copying them."""
    arrays = []
    for chunk in column.chunks:
        is_extension = isinstance(chunk, pa.ExtensionArray)
        shape = chunk.type.shape if is_extension else (chunk.type.list_size,)
        values = chunk.storage if is_extension else chunk
        while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
            values = values.flatten()  # the values of the rows of this chunk, in row order
        arrays.append(values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape))
    return arrays


class _Rows:
    """Rows of a fixed-shape column, gathered from the per-chunk views of [`_fixed_shape_chunks`]."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.chunks = _fixed_shape_chunks(column)
        self.starts = np.cumsum([0] + [len(chunk) for chunk in self.chunks[:-1]])

    def take(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Copies `rows` into `out` `(len(rows), *shape)`: one copy of each row's bytes, nothing else."""
        chunk_of_row = np.searchsorted(self.starts, rows, side="right") - 1
        for position, (row, chunk) in enumerate(zip(rows.tolist(), chunk_of_row.tolist(), strict=True)):
            out[position] = self.chunks[chunk][row - self.starts[chunk]]
        return out


def _uint8_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; inside a `DataLoader` worker, in shared memory from the start (as torch's own
    `default_collate` makes its batches, with the same call), so that it reaches the main process without another
    copy."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class ColumnBatches(torch.utils.data.Dataset):
    """
    A [`load_mnre`] split for a `DataLoader`, read a batch at a time: `__getitems__` (which `DataLoader` calls with a
    batch's indices) copies the batch's rows straight from the split's Arrow buffers (the memory-mapped cache file)
    into one array per column, and returns the batch as columns for [`HVFormerDataCollator`]. Nothing goes through
    `datasets`' formatting and no Python object is made per row and pixel column.

    The pixels come as uint8 tensors, in shared memory inside a `DataLoader` worker (so that the batch reaches the
    main process without another copy); `object_mask` and `labels` as numpy arrays; `input_ids` and
    `marker_positions` as lists of ints. Only the columns the collator reads are read, so a `Trainer` given these
    batches needs `remove_unused_columns=False`.

    Args:
        dataset (`datasets.Dataset`): a split of [`load_mnre`] (or a `select` of one).
    """

    def __init__(self, dataset: datasets.Dataset) -> None:
        self.dataset = dataset.select_columns([name for name in COLLATED_COLUMNS if name in dataset.column_names])
        self._columns: dict[str, Any] | None = None
        self._table_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "_columns": None, "_table_rows": None}  # views are remade, not pickled

    def _read_columns(self) -> None:
        """Views of the pixel columns, the small columns in memory, and the table row of each dataset position."""
        table = self.dataset.data.table
        indices = self.dataset._indices  # datasets' indices mapping (after `select`, `shuffle`): position -> row
        self._table_rows = None if indices is None else indices.column(0).to_numpy()
        columns: dict[str, Any] = {}
        for name in self.dataset.column_names:
            column = table.column(name)
            if name in PIXEL_INPUTS:
                columns[name] = _Rows(column)
                if columns[name].chunks[0].dtype != np.uint8:
                    raise ValueError(f"'{name}' must hold uint8 pixels (as load_mnre caches them)")
            elif name in TEXT_INPUTS and not pa.types.is_fixed_size_list(column.type):
                array = column.combine_chunks()  # variable-length lists: offsets into the values
                columns[name] = (array.offsets.to_numpy(), array.values.to_numpy())
            elif pa.types.is_fixed_size_list(column.type):
                columns[name] = np.concatenate(_fixed_shape_chunks(column))
            else:
                columns[name] = column.to_numpy()
        self._columns = columns

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of dataset positions `indices`, as columns."""
        if self._columns is None:
            self._read_columns()
        rows = np.asarray(indices, dtype=np.int64)
        if self._table_rows is not None:
            rows = self._table_rows[rows]
        batch: dict[str, Any] = {}
        for name in self.dataset.column_names:
            column = self._columns[name]
            if isinstance(column, _Rows):
                pixels = _uint8_batch((len(rows), *column.chunks[0].shape[1:]))
                column.take(rows, pixels.numpy())
                batch[name] = pixels
            elif isinstance(column, tuple):
                offsets, values = column
                batch[name] = [values[offsets[row] : offsets[row + 1]].tolist() for row in rows.tolist()]
            elif name in TEXT_INPUTS:
                batch[name] = column[rows].tolist()
            else:
                batch[name] = column[rows]
        return batch

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One row, as the values of a batch of one."""
        return {name: values[0] for name, values in self.__getitems__([index]).items()}


def _uint8(values: Any, name: str) -> torch.Tensor:
    """Pixels as one uint8 tensor: a uint8 tensor or array as it is, else per-example arrays, tensors or nested
    lists of ints in [0, 255] stacked (`datasets`' default numpy format widens uint8 columns to int64, hence a range
    check, not a dtype check)."""
    if isinstance(values, torch.Tensor) and values.dtype == torch.uint8:
        return values
    if not isinstance(values, np.ndarray):
        values = np.stack([np.asarray(value) for value in values])
    if values.dtype != np.uint8:
        if not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() > 255:
            raise ValueError(
                f"'{name}' must hold uint8 pixels (resized by load_mnre, not normalised), got {values.dtype} values"
            )
        values = values.astype(np.uint8)
    return torch.from_numpy(values)


def _long(values: Any) -> torch.Tensor:
    if not isinstance(values, np.ndarray):
        values = np.stack([np.asarray(value) for value in values])
    return torch.as_tensor(values, dtype=torch.long)


def _token_lists(values: Any) -> list[list[int]]:
    return [np.asarray(value).tolist() for value in values]


class HVFormerDataCollator:
    """
    Turns rows of [`load_mnre`]'s datasets, or a batch of [`ColumnBatches`], into a batch for
    [`HVFormerForRelationExtraction`]. It only pads and stacks: the pixels stay uint8, a quarter of the bytes of
    float32, and the model normalises them on the device (`config.image_mean`, `config.image_std`).

    - `input_ids` (unpadded, as the processor encodes them with `padding=False`) and `marker_positions` are padded
      to the longest row (or to a multiple of `pad_to_multiple_of`) with `processor.pad`, which also gives
      `attention_mask` and `token_type_ids` and moves the markers with left padding.
    - `pixel_values` (uint8 `(B, 3, H, W)`) and `object_pixel_values` (uint8 `(B, t, 3, s, s)`, zeros for absent
      crops) are stacked as they are.
    - `object_mask` `(B, t)`, `marker_positions` `(B, 2)` and, when rows have them, `labels` `(B,)` become long
      tensors.
    - Every other field (`id`, `kind`, `token`, `image_status`, ...) is dropped: keep ids aside (e.g. from the
      dataset's `id` column in row order) to trace predictions.
    - With `static_shapes`, the text, the crops and the rows are padded to the few shapes of [`StaticShapes`].

    Args:
        processor ([`HVFormerProcessor`]):
            Gives `pad`.
        pad_to_multiple_of (`int`, *optional*):
            Pad the text length to a multiple of this (e.g. 8 for tensor cores).
        static_shapes ([`StaticShapes`], *optional*):
            Pad every batch to one of these shapes (instead of `pad_to_multiple_of`); the rows must have `labels`,
            which mark the padding rows.

    Call it with a batch as columns (a mapping of column names to per-example values, what
    [`ColumnBatches.__getitems__`] returns) or with a list of rows (mappings of column names to values, e.g. rows of
    a `load_mnre` dataset as numpy arrays, tensors or plain lists).
    """

    def __init__(
        self, processor: Any, pad_to_multiple_of: int | None = None, static_shapes: StaticShapes | None = None
    ) -> None:
        if pad_to_multiple_of is not None and static_shapes is not None:
            raise ValueError("pass `pad_to_multiple_of` or `static_shapes`, not both: static shapes fix the length")
        self.processor = processor
        self.pad_to_multiple_of = pad_to_multiple_of
        self.static_shapes = static_shapes

    def __call__(self, batch: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not batch:
            raise ValueError("cannot collate an empty batch")
        if isinstance(batch, Mapping):
            columns = batch
        else:
            columns = {name: [row[name] for row in batch] for name in batch[0]}
        missing = [name for name in TEXT_INPUTS if name not in columns]
        if missing:
            raise KeyError(f"rows lack {missing}: collate rows of a dataset made by load_mnre")

        input_ids = _token_lists(columns["input_ids"])
        padding: dict[str, Any] = {"pad_to_multiple_of": self.pad_to_multiple_of}
        if self.static_shapes is not None:
            length = self.static_shapes.text_length(max(len(ids) for ids in input_ids))
            padding = {"padding": "max_length", "max_length": length}
        collated: dict[str, torch.Tensor] = dict(
            self.processor.pad(input_ids, _token_lists(columns["marker_positions"]), **padding)
        )
        for name in PIXEL_INPUTS:
            if name in columns:
                collated[name] = _uint8(columns[name], name)
        for name in ("object_mask", "labels"):
            if name in columns:
                collated[name] = _long(columns[name])
        if self.static_shapes is not None:
            collated = _pad_to_static_shapes(collated, self.static_shapes)
        return collated


def _pad_to_static_shapes(batch: dict[str, torch.Tensor], shapes: StaticShapes) -> dict[str, torch.Tensor]:
    """`batch` with its crops padded to `shapes.num_object_crops` and its rows to one of `shapes.batch_sizes`."""
    if "object_pixel_values" in batch:
        pixels = batch["object_pixel_values"]
        mask = batch.get("object_mask", torch.ones(pixels.shape[:2], dtype=torch.long))  # none given: all present
        missing = shapes.num_object_crops - pixels.shape[1]
        if missing < 0:
            raise ValueError(
                f"rows have {pixels.shape[1]} object crops, more than the {shapes.num_object_crops} of the static "
                "shapes (the processor's num_object_crops)"
            )
        if missing:
            batch["object_pixel_values"] = torch.cat(
                [pixels, pixels.new_zeros(len(pixels), missing, *pixels.shape[2:])], 1
            )
            batch["object_mask"] = torch.cat([mask, mask.new_zeros(len(mask), missing)], 1)
    rows = len(batch["input_ids"])
    missing = shapes.batch_size(rows) - rows
    if missing:
        if "labels" not in batch:
            raise ValueError("static shapes pad a batch with rows labelled IGNORE_INDEX: the rows need `labels`")
        batch = {
            name: torch.cat([value, value[:1].expand(missing, *value.shape[1:])]) for name, value in batch.items()
        }
        batch["labels"][rows:] = IGNORE_INDEX
    return batch
