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
"""Processor for HVFormer: glue between the text encoder's tokenizer with entity markers and
[`HVFormerImageProcessor`].

This file travels to the Hugging Face Hub as remote code with its siblings `entity_search.py` (finding the entities),
`entity_marking.py` (markers, truncation, padding, labels), `image_processing_hvformer.py` (images and object crops to
uint8 pixels) with its own siblings, `sample_errors.py` (naming the sample of an error) and `saved_processor.py`
(saved files, model checks), which `save_pretrained` copies along; none of them imports anything from the hvformer
project.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig
from transformers.feature_extraction_utils import BatchFeature

# Imported from its module: transformers 5.17 exports a placeholder `AutoImageProcessor` when torchvision is missing.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.processing_utils import ProcessorMixin

from .entity_marking import (
    add_markers,
    check_markers,
    check_max_length,
    check_padding,
    default_markers,
    label_ids,
    mark_entities,
    pad_marked,
    padded_length,
    special_token_template,
)
from .entity_search import batch_texts, check_texts, entity_spans, short_repr
from .image_processing_hvformer import HVFormerImageProcessor
from .sample_errors import batch_errors
from .saved_processor import HUB_KWARGS, load_saved_parts, model_mismatches

_IMAGE_SETTINGS = ("num_object_crops", "object_image_size")
"""Settings of [`HVFormerImageProcessor`] that the processor takes with a vision encoder's image processor."""


def _init_argument_names(cls: type) -> set[str]:
    """The processor settings of `cls.__init__` (saved in `processor_config.json`), sub-processors excluded."""
    return set(inspect.signature(cls.__init__).parameters) - {"self", "image_processor", "tokenizer", "kwargs"}


class HVFormerProcessor(ProcessorMixin):
    r"""
    Constructs an HVFormer processor: the text encoder's tokenizer, which inserts the entity markers around the
    subject and the object of a relation, and an [`HVFormerImageProcessor`] for the post image and its object crops.

    The markers are added to the tokenizer as special tokens when missing (the tokenizer is modified in place), so
    the text encoder's embedding matrix must be resized to `len(processor.tokenizer)`.

    Args:
        image_processor ([`HVFormerImageProcessor`]):
            Makes uint8 pixels of the images and object crops. A vision encoder's image processor is taken as
            [`HVFormerImageProcessor.from_vision_image_processor`] takes it, with the `num_object_crops` and
            `object_image_size` passed here.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer of the text encoder (WordPiece, byte-level BPE or SentencePiece).
        max_length (`int`, *optional*, defaults to 80):
            Maximum number of tokens of an encoded text, special tokens and markers included.
        relation_labels (`list[str]`, *optional*):
            Relation names in label-id order, used to map string labels to ids.
        entity_markers (`list[str]`, *optional*):
            The four marker tokens (paper Eq. 1): subject start, subject end, object start, object end. Defaults to
            `<s> </s> <o> </o>`, or `<subj> </subj> <obj> </obj>` for a tokenizer that has `<s>` or `</s>` as its own
            special tokens (RoBERTa, BART, XLM-R) (`entity_marking.default_markers`).
    """

    def __init__(
        self,
        image_processor: HVFormerImageProcessor | None = None,
        tokenizer=None,
        max_length: int = 80,
        relation_labels: list[str] | None = None,
        entity_markers: Sequence[str] | None = None,
        **kwargs,
    ):
        image_settings = {name: kwargs.pop(name) for name in _IMAGE_SETTINGS if name in kwargs}
        if image_processor is not None and type(image_processor).__name__ != HVFormerImageProcessor.__name__:
            image_processor = HVFormerImageProcessor.from_vision_image_processor(image_processor, **image_settings)
        elif image_settings:
            raise TypeError(f"{sorted(image_settings)} are settings of the image processor, not of the processor.")
        super().__init__(image_processor, tokenizer, **kwargs)
        if relation_labels is not None:
            relation_labels = list(relation_labels)
            if not all(isinstance(label, str) for label in relation_labels):
                raise ValueError("`relation_labels` must be a list of strings.")
            if len(set(relation_labels)) != len(relation_labels):
                raise ValueError(f"`relation_labels` contains duplicates: {relation_labels}.")
        self.entity_markers = check_markers(
            default_markers(self.tokenizer) if entity_markers is None else entity_markers
        )
        self.max_length = max_length
        self.relation_labels = relation_labels
        marker_ids = add_markers(self.tokenizer, self.entity_markers)
        self._template = special_token_template(self.tokenizer, self.entity_markers[0], marker_ids[0])
        check_max_length(max_length, self._template, self.tokenizer.model_max_length)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> HVFormerProcessor:
        r"""
        Loads a saved processor from a folder or a Hub repository, the tokenizer with the class named in
        `tokenizer_config.json` (no model configuration, which names remote code, is read on the way), and checks it
        against the folder's HVFormer `config.json` when there is one ([`check_matches_model`]). A folder saved before
        [`HVFormerImageProcessor`] existed (the vision encoder's image processor in `processor_config.json`) loads too.

        `cache_dir`, `force_download`, `local_files_only`, `proxies`, `revision`, `subfolder` and `token` go to the
        file downloads; arguments of [`HVFormerProcessor.__init__`] override the saved ones; others are ignored.
        """
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        processor_dict, tokenizer, image_processor, model_config = load_saved_parts(
            pretrained_model_name_or_path, hub_kwargs
        )
        init_names = _init_argument_names(cls)
        init_kwargs = {name: processor_dict[name] for name in init_names if name in processor_dict}
        init_kwargs.update({name: kwargs[name] for name in init_names if name in kwargs})
        processor = cls(image_processor=image_processor, tokenizer=tokenizer, **init_kwargs)
        if model_config is not None and model_config.get("model_type") == "hvformer":
            processor.check_matches_model(model_config)
        return processor

    @classmethod
    def from_text_vision_pretrained(
        cls, text_name_or_path: str | os.PathLike, vision_name_or_path: str | os.PathLike, **kwargs
    ) -> HVFormerProcessor:
        r"""
        Builds a processor from the tokenizer of a text checkpoint (its `model_max_length` capped by the encoder's
        `max_position_embeddings`) and the image processor of a vision checkpoint ([`HVFormerImageProcessor`] takes
        its settings). Arguments of [`__init__`], `num_object_crops` and `object_image_size` go to the processors; the
        others (`revision`, `cache_dir`, ...) to both `from_pretrained` calls.
        """
        names = _init_argument_names(cls) | set(_IMAGE_SETTINGS)
        init_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in names}
        tokenizer = AutoTokenizer.from_pretrained(text_name_or_path, **kwargs)
        try:
            positions = getattr(
                AutoConfig.from_pretrained(text_name_or_path, **kwargs), "max_position_embeddings", None
            )
        except (OSError, ValueError):  # a tokenizer-only folder: the tokenizer's own `model_max_length` applies
            positions = None
        if positions is not None:
            tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
        image_processor = AutoImageProcessor.from_pretrained(vision_name_or_path, **kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer, **init_kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        """Saves `processor_config.json`, the tokenizer's files and, for `AutoImageProcessor`,
        `preprocessor_config.json`, with the remote code files."""
        files = super().save_pretrained(save_directory, **kwargs)
        return files + self.image_processor.save_pretrained(save_directory)

    def check_matches_model(self, config: PreTrainedConfig | dict[str, Any]) -> None:
        r"""
        Checks that this processor encodes posts the way the HVFormer model of `config` (its `HVFormerConfig` or
        `config.json` content) reads them: the tokenizer's size, the entity markers and their ids, `relation_labels`
        against `id2label`, `max_length` against the text encoder's positions, the object-crop settings and the pixel
        statistics (`image_mean`, `image_std`). Raises a `ValueError` naming every mismatch and its files.
        """
        problems = model_mismatches(self, config.to_dict() if isinstance(config, PreTrainedConfig) else config)
        if problems:
            raise ValueError("The processor does not match the model: " + "; ".join(problems) + ".")

    @property
    def num_object_crops(self) -> int:
        return self.image_processor.num_object_crops

    @property
    def object_image_size(self) -> int:
        return self.image_processor.object_image_size

    def image_size(self) -> int:
        """Side of the square images the image processor makes."""
        return self.image_processor.image_size()

    def pixel_statistics(self) -> dict[str, list[float]]:
        """`image_mean` and `image_std` with which the model normalises the uint8 pixels, for `HVFormerConfig`."""
        return self.image_processor.pixel_statistics()

    def marker_token_ids(self) -> list[int]:
        """Ids of the four `entity_markers` (subject start, subject end, object start, object end), in that order."""
        return [int(token_id) for token_id in self.tokenizer.convert_tokens_to_ids(self.entity_markers)]

    @property
    def model_input_names(self) -> list[str]:
        names = [name for name in self.tokenizer.model_input_names if name != "special_tokens_mask"]
        return names + ["marker_positions", *self.image_processor.model_input_names]

    def __call__(
        self,
        text: str | list[str] | list[list[str]] | None = None,
        entity_spans: Sequence | None = None,
        entities: Sequence | None = None,
        images: Any = None,
        object_crops: Sequence | None = None,
        labels: int | str | Sequence[int | str] | None = None,
        is_split_into_words: bool = False,
        max_length: int | None = None,
        padding: bool | str = True,
        truncation: bool | str = True,
        return_tensors: str | None = "pt",
        max_text_length: int | None = None,
        max_image_pixels: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Encodes texts with entity markers, images and object crops for HVFormer.

        As `LukeTokenizer`'s entity-pair classification: `entity_spans=[subject_span, object_span]` per sample
        (character offsets into a string, word indices into a word list with `is_split_into_words`, `end`
        exclusive), or `entities=(subject, object)` strings occurring once in the text. The markers go around the
        entities (`... <s> subject </s> ... <o> object </o> ...`), nested when one entity lies inside the other;
        identical spans and spans that overlap without nesting are refused. A text longer than `max_length` loses
        whole words, never markers or special tokens (`entity_marking.fit_to_budget`) with `truncation=True`, and is
        refused otherwise. `padding` is `True`/`"longest"`, `"max_length"` or `False`/`"do_not_pad"`.

        `images` (one per sample) and `object_crops` (per sample a list of 0 to `num_object_crops`) go to
        [`HVFormerImageProcessor`], with `max_image_pixels`; `labels` are ids or names from `relation_labels`;
        `max_text_length` refuses a longer text (in characters) before it is searched or tokenized. A single text
        takes a single image and one list of crops, and gives a batch of one.

        Returns:
            [`BatchFeature`]: `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer uses them) and
            `marker_positions` (`(B, 2)`: index of `<s>` and of `<o>`); uint8 `pixel_values` `(B, 3, H, W)` and
            `object_pixel_values` `(B, t, 3, s, s)` and `object_mask` `(B, t)`; `labels` `(B,)`.

        Raises:
            `ValueError`: in a batch naming the sample (`Sample 2: ...`).
        """
        if kwargs:
            raise TypeError(f"HVFormerProcessor.__call__ got unexpected keyword arguments: {sorted(kwargs)}.")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {short_repr(return_tensors)}.")
        if not (isinstance(truncation, (bool, str)) and truncation in (True, False, "do_not_truncate")):
            raise ValueError(f"`truncation` must be True, False or 'do_not_truncate', got {short_repr(truncation)}.")
        for name, limit in (("max_text_length", max_text_length), ("max_image_pixels", max_image_pixels)):
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
                raise ValueError(f"`{name}` must be an integer >= 1 or None, got {short_repr(limit)}.")
        if isinstance(images, (list, tuple)) and not images:
            raise ValueError("`images` is an empty list: pass one image, or a list with one image per sample.")
        if text is None and images is None:
            raise ValueError("Nothing to process: pass `text`, `images`, or both.")
        if object_crops is not None and images is None:
            raise ValueError("`object_crops` needs `images`: each sample's crops belong to its main image.")
        if text is None and (entity_spans is not None or entities is not None):
            raise ValueError("`entity_spans` and `entities` need `text`.")

        texts, is_batched = batch_texts(text, is_split_into_words) if text is not None else (None, None)
        if texts is None:
            is_batched = isinstance(images, (list, tuple))
        batch_size = len(texts) if texts is not None else len(images) if is_batched else 1
        data: dict[str, Any] = {}
        with batch_errors(is_batched):
            if texts is not None:
                check_texts(texts, max_text_length)
                max_length = self.max_length if max_length is None else max_length
                check_max_length(max_length, self._template, self.tokenizer.model_max_length)
                check_padding(padding)
                spans = self._spans(texts, entity_spans, entities, is_batched, is_split_into_words)
                sequences, positions = mark_entities(
                    self.tokenizer,
                    texts,
                    spans,
                    is_split_into_words=is_split_into_words,
                    marker_ids=self.marker_token_ids(),
                    template=self._template,
                    max_length=max_length,
                    truncation=truncation is True,
                )
                data.update(
                    self.pad(sequences, positions, padding=padding, max_length=max_length, return_tensors=None)
                )
            if images is not None:
                images = self._per_sample(images, "images", batch_size, is_batched)
                if object_crops is not None:
                    object_crops = self._per_sample(object_crops, "object_crops", batch_size, is_batched)
                pixels = self.image_processor(
                    images if is_batched else images[0],
                    object_crops=object_crops if is_batched or object_crops is None else object_crops[0],
                    max_image_pixels=max_image_pixels,
                )
                data.update(pixels)
            if labels is not None:
                labels = self._per_sample(labels, "labels", batch_size, is_batched)
                data["labels"] = torch.tensor(label_ids(labels, self.relation_labels), dtype=torch.long)

        for key, value in data.items():
            if isinstance(value, torch.Tensor) and return_tensors != "pt":
                data[key] = value.numpy() if return_tensors == "np" else value.tolist()
        return BatchFeature(data, tensor_type=return_tensors)

    def pad(
        self,
        input_ids: list[list[int]],
        marker_positions: list[list[int]],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        r"""
        Pads encoded texts (as [`__call__`] returns them with `padding=False`) on the tokenizer's padding side.

        Args:
            input_ids (`list[list[int]]`):
                The token ids of each sample, markers and special tokens included, without padding.
            marker_positions (`list[list[int]]`):
                Per sample, the positions of the subject and the object start markers in its `input_ids`.
            padding (`bool` or `str`, *optional*, defaults to `True`):
                `True`/`"longest"` pads to the longest sample, `"max_length"` to `max_length`, `False`/`"do_not_pad"`
                does not pad.
            max_length (`int`, *optional*):
                The length of `padding="max_length"`; defaults to the processor's `max_length`.
            pad_to_multiple_of (`int`, *optional*):
                Rounds the padded length up to a multiple of this (e.g. 8 for tensor cores).
            return_tensors (`str`, *optional*, defaults to `"pt"`):
                `"pt"`, `"np"`, or `None` for Python lists.

        Returns:
            [`BatchFeature`]: `input_ids`, `attention_mask`, `token_type_ids` (zeros, when the tokenizer uses them)
            and `marker_positions`, moved right by the padding added on the left.
        """
        max_length = self.max_length if max_length is None else max_length
        pad_to = padded_length([len(ids) for ids in input_ids], padding, max_length, pad_to_multiple_of)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None and pad_to >= 0:
            raise ValueError("The tokenizer has no pad token, so the texts cannot be padded; pass `padding=False`.")
        ids, mask, positions = pad_marked(
            input_ids, marker_positions, pad_to, pad_id, self.tokenizer.padding_side == "left"
        )
        data: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            data["token_type_ids"] = [[0] * len(row) for row in ids]
        data["marker_positions"] = positions
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _per_sample(value: Any, name: str, batch_size: int, is_batched: bool) -> list:
        """Checks a per-sample argument against the batch and returns it as a list."""
        if not is_batched:
            if name == "images" and isinstance(value, (list, tuple)):
                raise ValueError("For a single text, `images` must be one image, not a list.")
            return [value]
        if not isinstance(value, (list, tuple)) or len(value) != batch_size:
            found = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
            raise ValueError(f"`{name}` must be a list with one entry per sample ({batch_size}), got {found}.")
        return list(value)

    def _spans(
        self, texts: list, spans: Any, entities: Any, is_batched: bool, is_split_into_words: bool
    ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """`(subject_span, object_span)` per sample, from exactly one of `spans` and `entities` (strings)."""
        if (spans is None) == (entities is None):
            raise ValueError("Pass exactly one of `entity_spans` and `entities` with `text`.")
        name = "entity_spans" if entities is None else "entities"
        pairs = self._per_sample(spans if entities is None else entities, name, len(texts), is_batched)
        return entity_spans(texts, pairs, by_string=entities is not None, is_split_into_words=is_split_into_words)

    def entity_texts(
        self,
        text: str | list[str] | list[list[str]],
        entity_spans: Sequence | None = None,
        entities: Sequence | None = None,
        is_split_into_words: bool = False,
    ) -> list[tuple[str, str]]:
        r"""
        The subject and the object of each sample as written in the text, case kept (the tokenizer may lower-case).

        Takes the `text`, `entity_spans` / `entities` and `is_split_into_words` arguments of [`__call__`], checked
        the same way; a word span is returned as its words joined by single spaces.

        Returns:
            `list[tuple[str, str]]`: `(subject, object)` per sample (one pair for a single text).
        """
        texts, is_batched = batch_texts(text, is_split_into_words)
        with batch_errors(is_batched):
            spans = self._spans(texts, entity_spans, entities, is_batched, is_split_into_words)
        join = " ".join if is_split_into_words else "".join
        return [
            (join(sample[subject[0] : subject[1]]), join(sample[obj[0] : obj[1]]))
            for sample, (subject, obj) in zip(texts, spans, strict=True)
        ]


HVFormerProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["HVFormerProcessor"]
