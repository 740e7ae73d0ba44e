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
"""The error of one sample's bad input, worded for a single sample; the call that took a batch names the sample.

The helpers that check a sample (its text, entities, images) know nothing of batches: they raise a [`SampleError`],
and whoever loops over the samples records the sample's index on it ([`at_sample`]). The public call that knows
whether it was given a batch then rewords it ([`batch_errors`]): `Sample 2: ...`, `Sample 2, object crop 1: ...`.

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


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
