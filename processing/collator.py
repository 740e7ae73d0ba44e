"""Batching cached MNRE rows into the inputs of `HVFormerForRelationExtraction`: [`ColumnBatches`] reads a batch of
a [`load_mnre`] split straight from its Arrow buffers, [`HVFormerDataCollator`] pads and stacks it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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

    Args:
        processor ([`HVFormerProcessor`]):
            Gives `pad`.
        pad_to_multiple_of (`int`, *optional*):
            Pad the text length to a multiple of this (e.g. 8 for tensor cores).

    Call it with a batch as columns (a mapping of column names to per-example values, what
    [`ColumnBatches.__getitems__`] returns) or with a list of rows (mappings of column names to values, e.g. rows of
    a `load_mnre` dataset as numpy arrays, tensors or plain lists).
    """

    def __init__(self, processor: Any, pad_to_multiple_of: int | None = None) -> None:
        self.processor = processor
        self.pad_to_multiple_of = pad_to_multiple_of

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

        collated: dict[str, torch.Tensor] = dict(
            self.processor.pad(
                _token_lists(columns["input_ids"]),
                _token_lists(columns["marker_positions"]),
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
        )
        for name in PIXEL_INPUTS:
            if name in columns:
                collated[name] = _uint8(columns[name], name)
        for name in ("object_mask", "labels"):
            if name in columns:
                collated[name] = _long(columns[name])
        return collated
