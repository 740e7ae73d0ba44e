# Copyright 2025 The hvformer authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The arguments of a processor call checked against its batch, and the error of one sample's bad input, worded for a
single sample; the call that took a batch names the sample.

The helpers that check a sample (its text, entities, images) know nothing of batches: they raise a [`SampleError`],
and whoever loops over the samples records the sample's index on it ([`at_sample`]). The public call that knows
whether it was given a batch then rewords it ([`batch_errors`]): `Sample 2: ...`, `Sample 2, object crop 1: ...`.

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import contextlib
import reprlib
from collections.abc import Iterator
from typing import Any


def short_repr(value: Any) -> str:
    """`repr(value)` shortened to a few dozen characters (`reprlib`), for user values quoted in error messages."""
    return reprlib.repr(value)


def check_options(return_tensors: Any, truncation: Any, max_text_length: Any, max_image_pixels: Any) -> None:
    """Refuses the options of `HVFormerProcessor.__call__` that are not among those it takes."""
    if return_tensors not in ("pt", "np", None):
        raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {short_repr(return_tensors)}.")
    if not (isinstance(truncation, (bool, str)) and truncation in (True, False, "do_not_truncate")):
        raise ValueError(f"`truncation` must be True, False or 'do_not_truncate', got {short_repr(truncation)}.")
    for name, limit in (("max_text_length", max_text_length), ("max_image_pixels", max_image_pixels)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"`{name}` must be an integer >= 1 or None, got {short_repr(limit)}.")


def check_inputs(text: Any, images: Any, object_crops: Any, entity_spans: Any, entities: Any) -> None:
    """Refuses the inputs of `HVFormerProcessor.__call__` that cannot go together."""
    if isinstance(images, (list, tuple)) and not images:
        raise ValueError("`images` is an empty list: pass one image, or a list with one image per sample.")
    if text is None and images is None:
        raise ValueError("Nothing to process: pass `text`, `images`, or both.")
    if object_crops is not None and images is None:
        raise ValueError("`object_crops` needs `images`: each sample's crops belong to its main image.")
    if text is None and (entity_spans is not None or entities is not None):
        raise ValueError("`entity_spans` and `entities` need `text`.")


def per_sample(value: Any, name: str, batch_size: int, is_batched: bool) -> list:
    """A per-sample argument as a list: one entry per sample of a batch, or the single sample's value in a list."""
    if not is_batched:
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != batch_size:
        found = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"`{name}` must be a list with one entry per sample ({batch_size}), got {found}.")
    return list(value)


def per_sample_images(images: Any, object_crops: Any, batch_size: int, is_batched: bool) -> tuple[Any, Any]:
    """`images` and `object_crops` checked against the batch: one entry per sample of a batch (lists), or one image
    (and its list of crops) for a single sample."""
    if not is_batched:
        if isinstance(images, (list, tuple)):
            raise ValueError("For a single text, `images` must be one image, not a list.")
        return images, object_crops
    images = per_sample(images, "images", batch_size, is_batched)
    if object_crops is not None:
        object_crops = per_sample(object_crops, "object_crops", batch_size, is_batched)
    return images, object_crops


class SampleError(ValueError):
    """A problem of one sample: `problem` after the name of the image it concerns (`part`, e.g. `` `image` ``), or
    alone and capitalised; `crop` is the object crop's slot when the problem is a crop's, `index` the sample's."""

    def __init__(self, problem: str, part: str | None = None, crop: int | None = None, index: int | None = None):
        super().__init__(f"{part}: {problem}" if part else problem[:1].upper() + problem[1:])
        self.problem, self.crop, self.index = problem, crop, index

    def in_batch(self) -> ValueError:
        """The error as a batched call gives it, naming the sample (and the crop) instead of the argument."""
        where = f"Sample {self.index}" + ("" if self.crop is None else f", object crop {self.crop}")
        return ValueError(f"{where}: {self.problem}")


@contextlib.contextmanager
def at_sample(index: int) -> Iterator[None]:
    """Records `index` on a [`SampleError`] raised inside, unless a loop closer to it already did."""
    try:
        yield
    except SampleError as error:
        if error.index is None:
            error.index = index
        raise


@contextlib.contextmanager
def batch_errors(is_batched: bool) -> Iterator[None]:
    """Rewords a [`SampleError`] raised inside so that it names its sample, when the call was given a batch."""
    try:
        yield
    except SampleError as error:
        if is_batched and error.index is not None:
            raise error.in_batch() from error
        raise
