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
uint8 pixels) with its own siblings, `sample_errors.py` (a call's arguments against its batch, the sample an error
names) and `saved_processor.py` (saved files, model checks), which `save_pretrained` copies along; none of them imports
anything from the hvformer project.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedConfig
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .entity_marking import (
    add_markers,
    check_markers,
    check_max_length,
    check_padding,
    check_relation_labels,
    default_markers,
    encode_marked,
    label_ids,
    pad_encoded,
    special_token_template,
)
from .entity_search import batch_texts, call_entity_spans, check_texts
from .image_processing_hvformer import HVFormerImageProcessor
from .object_detection import detect_missing_crops, detector_reference, saved_detector
from .sample_errors import batch_errors, check_inputs, check_options, per_sample, per_sample_images
from .saved_processor import HUB_KWARGS, load_saved_parts, load_text_vision_parts, model_mismatches

_IMAGE_SETTINGS = ("num_object_crops", "object_image_size")
"""Settings of [`HVFormerImageProcessor`] that the processor takes with a vision encoder's image processor."""


def _init_argument_names(cls: type) -> set[str]:
    """The processor settings of `cls.__init__` (saved in `processor_config.json`), sub-processors excluded."""
    return set(inspect.signature(cls.__init__).parameters) - {"self", "image_processor", "tokenizer", "kwargs"}


class HVFormerProcessor(ProcessorMixin):
    r"""
    Constructs an HVFormer processor, which wraps the text encoder's tokenizer, with the entity markers added as
    special tokens (resize the text encoder's embeddings to `len(processor.tokenizer)`), and an
    [`HVFormerImageProcessor`] into a single processor.

    Args:
        image_processor ([`HVFormerImageProcessor`]): the image processor; a vision encoder's own is converted
            ([`HVFormerImageProcessor.from_vision_image_processor`] with `num_object_crops`, `object_image_size`).
        tokenizer ([`PreTrainedTokenizerBase`]): the tokenizer of the text encoder.
        max_length (`int`, *optional*, defaults to 80): the most tokens of a text, specials and markers included.
        relation_labels (`list[str]`, *optional*): relation names in label-id order, to map names to ids.
        entity_markers (`list[str]`, *optional*): subject start, subject end, object start, object end (paper Eq. 1);
            `<s> </s> <o> </o>`, or `<subj> </subj> <obj> </obj>` for a tokenizer that has `<s>` or `</s>` itself.
        object_detector (`str`, *optional*): an `AutoModelForObjectDetection` Hub id or folder that crops the image of
            a sample brought without object crops; saved with the processor (see `object_detection.py`).
    """

    def __init__(
        self,
        image_processor: HVFormerImageProcessor | None = None,
        tokenizer=None,
        max_length: int = 80,
        relation_labels: list[str] | None = None,
        entity_markers: Sequence[str] | None = None,
        object_detector: str | os.PathLike | None = None,
        **kwargs,
    ):
        image_settings = {name: kwargs.pop(name) for name in _IMAGE_SETTINGS if name in kwargs}
        if image_processor is not None and type(image_processor).__name__ != HVFormerImageProcessor.__name__:
            image_processor = HVFormerImageProcessor.from_vision_image_processor(image_processor, **image_settings)
        elif image_settings:
            raise TypeError(f"{sorted(image_settings)} are settings of the image processor, not of the processor.")
        super().__init__(image_processor, tokenizer, **kwargs)
        self.object_detector = detector_reference(object_detector)
        self.entity_markers = check_markers(
            default_markers(self.tokenizer) if entity_markers is None else entity_markers
        )
        self.max_length = max_length
        self.relation_labels = check_relation_labels(relation_labels)
        marker_ids = add_markers(self.tokenizer, self.entity_markers)
        self._template = special_token_template(self.tokenizer, self.entity_markers[0], marker_ids[0])
        check_max_length(max_length, self._template, self.tokenizer.model_max_length)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> HVFormerProcessor:
        r"""
        Loads a saved processor (also one saved with a vision encoder's image processor) and checks it against the
        folder's HVFormer `config.json` when there is one ([`check_matches_model`]). Download arguments (`revision`,
        `token`, ...) go to the files; arguments of [`__init__`] override the saved ones.
        """
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        processor_dict, tokenizer, image_processor, model_config = load_saved_parts(
            pretrained_model_name_or_path, hub_kwargs
        )
        init_names = _init_argument_names(cls)
        init_kwargs = {name: processor_dict[name] for name in init_names if name in processor_dict}
        init_kwargs.update({name: kwargs[name] for name in init_names if name in kwargs})
        processor = cls(image_processor=image_processor, tokenizer=tokenizer, **init_kwargs)
        processor.object_detector_root = (os.fspath(pretrained_model_name_or_path), hub_kwargs)
        if model_config is not None and model_config.get("model_type") == "hvformer":
            processor.check_matches_model(model_config)
        return processor

    @classmethod
    def from_text_vision_pretrained(
        cls, text_name_or_path: str | os.PathLike, vision_name_or_path: str | os.PathLike, **kwargs
    ) -> HVFormerProcessor:
        r"""
        Builds a processor from the tokenizer of a text checkpoint (`model_max_length` capped by its positions) and
        the image processor of a vision checkpoint. Arguments of [`__init__`], `num_object_crops` and
        `object_image_size` go to the processors, the others (`revision`, ...) to both `from_pretrained` calls.
        """
        names = _init_argument_names(cls) | set(_IMAGE_SETTINGS)
        init_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in names}
        tokenizer, image_processor = load_text_vision_parts(text_name_or_path, vision_name_or_path, kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer, **init_kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        """Saves `processor_config.json`, the tokenizer and `preprocessor_config.json`, with the remote code, and the
        object detector's files (see `object_detection.saved_detector`)."""
        with saved_detector(self, save_directory):
            files = super().save_pretrained(save_directory, **kwargs)
        return files + self.image_processor.save_pretrained(save_directory)

    def check_matches_model(self, config: PreTrainedConfig | dict[str, Any]) -> None:
        """Raises a `ValueError` naming every way this processor disagrees with the HVFormer model of `config`:
        tokenizer size, markers and their ids, labels, `max_length`, crop settings, pixel statistics."""
        problems = model_mismatches(self, config.to_dict() if isinstance(config, PreTrainedConfig) else config)
        if problems:
            raise ValueError("The processor does not match the model: " + "; ".join(problems) + ".")

    @property
    def num_object_crops(self) -> int:
        return self.image_processor.num_object_crops

    @property
    def object_image_size(self) -> int:
        return self.image_processor.object_image_size

    def pixel_statistics(self) -> dict[str, list[float]]:
        """`image_mean` and `image_std` with which the model normalises the uint8 pixels, for `HVFormerConfig`."""
        return self.image_processor.pixel_statistics()

    def marker_token_ids(self) -> list[int]:
        """Ids of the four `entity_markers`, in their order."""
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

        Args:
            text (`str`, `list[str]`, or word lists with `is_split_into_words=True`): one text or a batch.
            entity_spans, entities: per sample `[subject_span, object_span]` (`(start, end)` character offsets, word
                indices for word lists, `end` exclusive), or `(subject, object)` strings found once in the text.
            images, object_crops, max_image_pixels: one image per sample and per sample 0 to `num_object_crops`
                crops, for [`HVFormerImageProcessor`].
            labels: per sample a label id or a name from `relation_labels`.
            max_length, padding, truncation: as the tokenizer's; truncation drops whole words, never markers.
            max_text_length (`int`, *optional*): refuse a longer text (in characters) before it is searched.
            return_tensors (`str`, *optional*, defaults to `"pt"`): `"pt"`, `"np"`, or `None` for lists.

        Returns a [`BatchFeature`] (a batch of one for a single text): `input_ids`, `attention_mask`, `token_type_ids`
        (when the tokenizer uses them), `marker_positions` `(B, 2)`, uint8 `pixel_values`, `object_pixel_values`,
        `object_mask`, and `labels`. An error in a batch names its sample (`Sample 2: ...`).
        """
        if kwargs:
            raise TypeError(f"HVFormerProcessor.__call__ got unexpected keyword arguments: {sorted(kwargs)}.")
        check_options(return_tensors, truncation, max_text_length, max_image_pixels)
        check_inputs(text, images, object_crops, entity_spans, entities)
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
                encoded = encode_marked(
                    self.tokenizer,
                    texts,
                    call_entity_spans(texts, entity_spans, entities, is_batched, is_split_into_words),
                    is_split_into_words=is_split_into_words,
                    marker_ids=self.marker_token_ids(),
                    template=self._template,
                    max_length=max_length,
                    padding=padding,
                    truncation=truncation is True,
                )
                data.update(encoded)
            if images is not None:
                images, object_crops = per_sample_images(images, object_crops, batch_size, is_batched)
                if self.object_detector is not None:
                    object_crops = detect_missing_crops(self, images, object_crops, is_batched, max_image_pixels)
                data.update(self.image_processor(images, object_crops=object_crops, max_image_pixels=max_image_pixels))
            if labels is not None:
                labels = per_sample(labels, "labels", batch_size, is_batched)
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
        """Pads encoded texts (as [`__call__`] gives them with `padding=False`) on the tokenizer's padding side, the
        `marker_positions` following; `padding="max_length"` pads to `max_length` (the processor's by default)."""
        max_length = self.max_length if max_length is None else max_length
        data = pad_encoded(self.tokenizer, input_ids, marker_positions, padding, max_length, pad_to_multiple_of)
        return BatchFeature(data, tensor_type=return_tensors)

    def entity_texts(
        self,
        text: str | list[str] | list[list[str]],
        entity_spans: Sequence | None = None,
        entities: Sequence | None = None,
        is_split_into_words: bool = False,
    ) -> list[tuple[str, str]]:
        """`(subject, object)` of each sample as written in the text, case kept (a word span joined by spaces), for
        the `text`, `entity_spans` / `entities` and `is_split_into_words` of [`__call__`]."""
        texts, is_batched = batch_texts(text, is_split_into_words)
        with batch_errors(is_batched):
            spans = call_entity_spans(texts, entity_spans, entities, is_batched, is_split_into_words)
        join = " ".join if is_split_into_words else "".join
        return [
            (join(sample[subject[0] : subject[1]]), join(sample[obj[0] : obj[1]]))
            for sample, (subject, obj) in zip(texts, spans, strict=True)
        ]


HVFormerProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["HVFormerProcessor"]
