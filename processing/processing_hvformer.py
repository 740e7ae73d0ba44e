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
"""Processor for HVFormer: glue between the text encoder's tokenizer with entity markers and a ViT-like image
processor.

This file travels to the Hugging Face Hub as remote code with its siblings `entity_search.py` (finding the entities),
`entity_marking.py` (markers, truncation, padding), `image_loading.py` (decoding, resizing, normalising) with
`image_files.py` (the accepted formats and files) and `saved_processor.py` (saved files, model checks), which
`save_pretrained` copies along; none of them imports anything from the hvformer project. The file is over 400 lines
only for the documentation of the public API (about 200 docstring lines); the logic lives in the siblings.
"""

from __future__ import annotations

import inspect
import operator
import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig
from transformers.feature_extraction_utils import BatchFeature

# Imported from its module: transformers 5.17 exports a placeholder `AutoImageProcessor` when torchvision is missing.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from .entity_marking import (
    add_markers,
    check_padding,
    default_markers,
    mark_entities,
    pad_marked,
    padded_length,
    special_token_template,
)
from .entity_search import batch_texts, check_texts, entity_spans, sample_error, sample_prefix, short_repr
from .image_loading import load_image, normalize_pixels, pixel_statistics, resize_batch, resize_target
from .object_detection import detect_missing_crops, saved_detector
from .saved_processor import HUB_KWARGS, load_saved_parts, model_mismatches


def _init_argument_names(cls: type) -> set[str]:
    """The processor settings of `cls.__init__` (saved in `processor_config.json`), sub-processors excluded."""
    return set(inspect.signature(cls.__init__).parameters) - {"self", "image_processor", "tokenizer", "kwargs"}


class HVFormerProcessor(ProcessorMixin):
    r"""
    Constructs an HVFormer processor: the text encoder's tokenizer (WordPiece, byte-level BPE or SentencePiece)
    that inserts the entity markers around the subject and the object of a relation, and the image processor of the
    vision encoder (CLIP, ViT, DINOv2, SigLIP; torchvision or PIL backend) for the post image and its
    visual-grounding object crops.

    The markers are added to the tokenizer as special tokens when missing, so the tokenizer passed in is modified
    in place and the text encoder's embedding matrix must be resized to `len(processor.tokenizer)`.

    Args:
        image_processor ([`BaseImageProcessor`]):
            The image processor of the vision encoder.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer of the text encoder.
        max_length (`int`, *optional*, defaults to 80):
            Maximum number of tokens of an encoded text, special tokens and markers included.
        num_object_crops (`int`, *optional*, defaults to 3):
            Number `t` of object crop slots per sample.
        object_image_size (`int`, *optional*, defaults to 128):
            Side `s` of the square object crops.
        relation_labels (`list[str]`, *optional*):
            Relation names in label-id order, used to map string labels to ids.
        entity_markers (`list[str]`, *optional*):
            The four marker tokens (paper Eq. 1): subject start, subject end, object start, object end. Defaults to
            `entity_marking.ENTITY_MARKERS` (`<s> </s> <o> </o>`), or to `FALLBACK_ENTITY_MARKERS`
            (`<subj> </subj> <obj> </obj>`) for a tokenizer that has `<s>` or `</s>` as its own special tokens
            (RoBERTa, BART, XLM-R); the markers chosen are saved in `processor_config.json`.
        object_detector (`str`, *optional*):
            An object detector (an `AutoModelForObjectDetection` Hub id or folder) that crops the image of a sample
            brought without object crops; saved with the processor (see `object_detection.py`).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        max_length: int = 80,
        num_object_crops: int = 3,
        object_image_size: int = 128,
        relation_labels: list[str] | None = None,
        entity_markers: Sequence[str] | None = None,
        object_detector: str | None = None,
        **kwargs,
    ):
        super().__init__(image_processor, tokenizer, **kwargs)
        if object_detector is not None and not isinstance(object_detector, (str, os.PathLike)):
            raise ValueError(f"`object_detector` must be a Hub id or a folder, got {short_repr(object_detector)}.")
        self.object_detector = None if object_detector is None else os.fspath(object_detector)
        for name, value, minimum in (
            ("num_object_crops", num_object_crops, 0),
            ("object_image_size", object_image_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        if relation_labels is not None:
            relation_labels = list(relation_labels)
            if not all(isinstance(label, str) for label in relation_labels):
                raise ValueError("`relation_labels` must be a list of strings.")
            if len(set(relation_labels)) != len(relation_labels):
                raise ValueError(f"`relation_labels` contains duplicates: {relation_labels}.")
        entity_markers = default_markers(self.tokenizer) if entity_markers is None else list(entity_markers)
        if (
            len(entity_markers) != 4
            or len(set(entity_markers)) != 4
            or not all(isinstance(marker, str) for marker in entity_markers)
        ):
            raise ValueError(f"`entity_markers` must be four distinct strings, got {entity_markers}.")
        self.max_length = max_length
        self.num_object_crops = num_object_crops
        self.object_image_size = object_image_size
        self.relation_labels = relation_labels
        self.entity_markers = entity_markers
        marker_ids = add_markers(self.tokenizer, entity_markers)
        self._template = special_token_template(self.tokenizer, entity_markers[0], marker_ids[0])
        self._check_max_length(max_length)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> HVFormerProcessor:
        r"""
        Loads a processor saved with [`~ProcessorMixin.save_pretrained`] from a folder or a Hub repository.

        The tokenizer is loaded with the class named in `tokenizer_config.json`, so no model configuration is read
        on the way (a model folder's `config.json` names remote code, which would ask for `trust_remote_code`). When
        the folder also holds an HVFormer `config.json`, the processor is checked against it with
        [`check_matches_model`].

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`):
                A folder or a Hub repository id.
            kwargs:
                `cache_dir`, `force_download`, `local_files_only`, `proxies`, `revision`, `subfolder` and `token` go to
                the file downloads; arguments of [`HVFormerProcessor.__init__`] override the saved ones. Others (the
                `trust_remote_code` of `AutoProcessor`, the `dtype` a pipeline passes on) do not concern this class
                and are ignored, as in [`~ProcessorMixin.from_pretrained`].

        Raises:
            `FileNotFoundError`: when `processor_config.json`, `tokenizer.json` or `tokenizer_config.json` is absent.
            `ValueError`: when one of them is not valid JSON, or the processor does not match the folder's model.
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

    def check_matches_model(self, config: PreTrainedConfig | dict[str, Any]) -> None:
        r"""
        Checks that this processor encodes posts the way the HVFormer model of `config` reads them.

        Call it wherever a processor and a model meet (training script, pipeline, endpoint handler): a processor and
        a model saved apart, or files copied from different runs, otherwise give wrong predictions without an error.
        Compared: the tokenizer's size with the text encoder's `vocab_size`, the entity markers and their ids,
        `relation_labels` with the order of `id2label`, `max_length` with the text encoder's
        `max_position_embeddings`, the object-crop settings and, when the config records them, the pixel statistics
        with which the model normalises uint8 pixels (`image_mean`, `image_std`, and a rescaling by 1/255).

        Args:
            config (`PreTrainedConfig` or `dict`):
                The model's `HVFormerConfig`, or the content of its `config.json`.

        Raises:
            `ValueError`: naming every mismatch and the files (`tokenizer.json`, `processor_config.json`,
            `config.json`) it comes from.
        """
        if isinstance(config, PreTrainedConfig):
            config = config.to_dict()
        problems = model_mismatches(self, config)
        if problems:
            raise ValueError("The processor does not match the model: " + "; ".join(problems) + ".")

    @classmethod
    def from_text_vision_pretrained(
        cls, text_name_or_path: str | os.PathLike, vision_name_or_path: str | os.PathLike, **kwargs
    ) -> HVFormerProcessor:
        r"""
        Builds a processor from the tokenizer of a text checkpoint and the image processor of a vision checkpoint;
        the processor adds the entity markers to the tokenizer. The tokenizer's `model_max_length` is capped by the
        text encoder's `max_position_embeddings` (when the text checkpoint has a configuration), so a `max_length` the
        encoder cannot read is refused here and by every later call.

        Args:
            text_name_or_path (`str` or `os.PathLike`):
                Hub id or local folder of the text encoder (loaded with `AutoTokenizer`).
            vision_name_or_path (`str` or `os.PathLike`):
                Hub id or local folder of the vision encoder (loaded with `AutoImageProcessor`).
            kwargs:
                Arguments of [`HVFormerProcessor.__init__`] (`max_length`, `num_object_crops`, ...) go to the
                processor; the others (`revision`, `cache_dir`, `local_files_only`, ...) go to both `from_pretrained`
                calls.
        """
        init_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in _init_argument_names(cls)}
        tokenizer = AutoTokenizer.from_pretrained(text_name_or_path, **kwargs)
        try:
            text_config = AutoConfig.from_pretrained(text_name_or_path, **kwargs)
            positions = getattr(text_config, "max_position_embeddings", None)
        except (OSError, ValueError):  # a tokenizer-only folder: the tokenizer's own `model_max_length` applies
            positions = None
        if positions is not None:
            tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
        image_processor = AutoImageProcessor.from_pretrained(vision_name_or_path, **kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer, **init_kwargs)

    def _check_max_length(self, max_length: Any) -> None:
        """Checks that `max_length` holds the special tokens, the four markers and one word piece per entity, and
        that the text encoder can read it (`tokenizer.model_max_length`, unless that is unset)."""
        prefix, suffix = self._template
        minimum = len(prefix) + len(suffix) + len(self.entity_markers) + 2
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < minimum:
            raise ValueError(
                f"`max_length` must be an integer >= {minimum} (special tokens, four markers and one word piece per "
                f"entity), got {max_length!r}."
            )
        limit = self.tokenizer.model_max_length
        if limit < VERY_LARGE_INTEGER and max_length > limit:
            raise ValueError(
                f"`max_length` {max_length} exceeds the text encoder's {limit} positions "
                "(`tokenizer.model_max_length`)."
            )

    def image_size(self) -> int:
        """Side of the square images the image processor makes (the size of `pixel_values`), found by resizing a
        one-pixel image."""
        height, width = self.resize_images(Image.new("RGB", (1, 1)))["pixel_values"].shape[-2:]
        if height != width:
            raise ValueError(f"The image processor makes {height}x{width} images; HVFormer reads square images.")
        return int(height)

    def marker_token_ids(self) -> list[int]:
        """Ids of the four `entity_markers` (subject start, subject end, object start, object end), in that order."""
        return [int(token_id) for token_id in self.tokenizer.convert_tokens_to_ids(self.entity_markers)]

    @property
    def model_input_names(self) -> list[str]:
        names = [name for name in self.tokenizer.model_input_names if name != "special_tokens_mask"]
        return names + ["marker_positions", "pixel_values", "object_pixel_values", "object_mask"]

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

        The call follows `LukeTokenizer`'s entity-pair classification: `entity_spans=[subject_span, object_span]`.
        The `entity_markers` are inserted as `... <s> subject </s> ... <o> object </o> ...` (the object may come first
        in the text); an entity at the very end of the text is marked like any other. When one entity lies inside
        the other (62 MNRE train/val lines do), the markers nest:
        `<o> <s> Darien Lake </s> Performing Arts Center </o>`.
        Identical spans and spans that overlap without nesting are rejected.

        A sample longer than `max_length` loses whole words (never a fragment of one), never markers or special
        tokens, by the policy of `fit_to_budget` (`entity_marking.py`): the context farthest from the entities goes
        first, then the middle of the text between them, then the ends of the entities themselves.

        A `max_length` that cannot hold the special tokens, the four markers and one piece per entity raises a
        `ValueError`, so every returned encoding holds all four markers.

        Args:
            text (`str`, `list[str]` or `list[list[str]]`):
                One text or a batch. With `is_split_into_words=True`, a text is a list of words (MNRE's `token`).
            entity_spans (`Sequence`, *optional*):
                `[subject_span, object_span]` per sample, each `(start, end)` with `end` exclusive: character offsets
                into a string, word indices into a word list.
            entities (`Sequence`, *optional*):
                `(subject, object)` strings per sample, instead of `entity_spans`. Each must occur exactly once in
                the text: as a substring not glued to a longer word for strings, as a run of words (the string split
                on whitespace) for word lists.
            images (*optional*):
                One image per sample (the bytes or the path of a JPEG, PNG, WebP or GIF file, a PIL image, a uint8,
                uint16, bool or float `(H, W[, C])` array); a single image for a single text. See [`resize_images`].
            object_crops (*optional*):
                Per sample, a list of 0 to `num_object_crops` object crops (same types as `images`); for a single
                text, one such list. Missing crops are zero images with `object_mask` 0. Requires `images`. With an
                `object_detector`, a sample without crops gets the detector's crops of its image.
            labels (*optional*):
                Per sample, a label id or a relation name from `relation_labels`.
            is_split_into_words (`bool`, *optional*, defaults to `False`):
                Whether the texts are word lists.
            max_length (`int`, *optional*):
                Overrides the processor's `max_length` for this call.
            padding (`bool` or `str`, *optional*, defaults to `True`):
                `True`/`"longest"` pads to the longest sample, `"max_length"` to `max_length`, `False`/`"do_not_pad"`
                does not pad (then only `return_tensors=None` can hold samples of different lengths).
            truncation (`bool` or `str`, *optional*, defaults to `True`):
                `True` shortens the samples longer than `max_length` with the policy above; `False` or
                `"do_not_truncate"` raises a `ValueError` naming the first such sample instead.
            return_tensors (`str`, *optional*, defaults to `"pt"`):
                `"pt"`, `"np"`, or `None` for Python lists.
            max_text_length (`int`, *optional*):
                Refuse a text of more characters (a word list counts the characters of its words), before it is
                searched or tokenized.
            max_image_pixels (`int`, *optional*):
                Refuse a sample whose image and object crops hold more pixels together, counted from the files'
                headers before any is decoded (see [`resize_images`]).

        Errors are `ValueError`s; in a batch they name the sample (`Sample 2: ...`).

        Returns:
            [`BatchFeature`]: `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer uses them) and
            `marker_positions` (`(B, 2)`: index of `<s>` and of `<o>`) for texts; `pixel_values` (`(B, 3, H, W)`),
            `object_pixel_values` (`(B, t, 3, s, s)`, zeros for absent crops) and `object_mask` (`(B, t)`) for
            images; `labels` (`(B,)`). A single text gives a batch of one.
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

        data: dict[str, Any] = {}
        if text is not None:
            texts, is_batched = batch_texts(text, is_split_into_words)
            check_texts(texts, is_batched, max_text_length)
            max_length = self.max_length if max_length is None else max_length
            self._check_max_length(max_length)
            check_padding(padding)
            spans = self._spans(texts, entity_spans, entities, is_batched, is_split_into_words)
            sequences, positions = mark_entities(
                self.tokenizer,
                texts,
                spans,
                is_split_into_words,
                self.marker_token_ids(),
                self._template,
                max_length,
                truncation is True,
                is_batched,
            )
            data.update(self.pad(sequences, positions, padding=padding, max_length=max_length, return_tensors=None))
            batch_size = len(texts)
        else:
            if entity_spans is not None or entities is not None:
                raise ValueError("`entity_spans` and `entities` need `text`.")
            is_batched = isinstance(images, (list, tuple))
            batch_size = len(images) if is_batched else 1

        if images is not None:
            crops = (
                [None] * batch_size
                if object_crops is None
                else self._per_sample(object_crops, "object_crops", batch_size, is_batched)
            )
            images = self._per_sample(images, "images", batch_size, is_batched)
            crops = detect_missing_crops(self, images, crops, is_batched, max_image_pixels)
            pixels = resize_batch(
                self.image_processor,
                images,
                crops,
                self.num_object_crops,
                self.object_image_size,
                is_batched,
                max_image_pixels,
            )
            data["pixel_values"] = self.normalize_pixels(pixels["pixel_values"])
            data["object_pixel_values"] = self.normalize_crops(pixels["object_pixel_values"], pixels["object_mask"])
            data["object_mask"] = pixels["object_mask"]
        if labels is not None:
            data["labels"] = self._label_ids(self._per_sample(labels, "labels", batch_size, is_batched), is_batched)

        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                if return_tensors == "np":
                    data[key] = value.numpy()
                elif return_tensors is None:
                    data[key] = value.tolist()
        return BatchFeature(data, tensor_type=return_tensors)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> Any:
        """[`~ProcessorMixin.save_pretrained`], with the object detector's files (see `saved_detector`)."""
        with saved_detector(self, save_directory):
            return super().save_pretrained(save_directory, **kwargs)

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

    def _label_ids(self, labels: list, is_batched: bool) -> torch.Tensor:
        """Maps labels (ids or relation names; not booleans) to a long tensor."""
        ids = []
        for index, label in enumerate(labels):
            where = sample_prefix(index, is_batched)
            if isinstance(label, str):
                if self.relation_labels is None:
                    raise sample_error(
                        where, f"label {short_repr(label)} is a string but the processor has no `relation_labels`."
                    )
                if label not in self.relation_labels:
                    raise sample_error(
                        where, f"unknown relation label {short_repr(label)}; known labels: {self.relation_labels}."
                    )
                ids.append(self.relation_labels.index(label))
                continue
            try:
                if isinstance(label, bool):
                    raise TypeError("a boolean is not a label id")
                label_id = operator.index(label)
            except TypeError:
                raise sample_error(
                    where, f"a label must be an integer or a relation name, got {short_repr(label)}."
                ) from None
            if self.relation_labels is not None and not 0 <= label_id < len(self.relation_labels):
                raise sample_error(where, f"label id {label_id} is outside [0, {len(self.relation_labels)}).")
            ids.append(label_id)
        return torch.tensor(ids, dtype=torch.long)

    def _spans(
        self, texts: list, spans: Any, entities: Any, is_batched: bool, is_split_into_words: bool
    ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """`(subject_span, object_span)` per sample, from exactly one of `spans` and `entities` (strings)."""
        if (spans is None) == (entities is None):
            raise ValueError("Pass exactly one of `entity_spans` and `entities` with `text`.")
        name = "entity_spans" if entities is None else "entities"
        pairs = self._per_sample(spans if entities is None else entities, name, len(texts), is_batched)
        return entity_spans(texts, pairs, entities is not None, is_split_into_words, is_batched)

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
        spans = self._spans(texts, entity_spans, entities, is_batched, is_split_into_words)
        join = " ".join if is_split_into_words else "".join
        return [
            (join(sample[subject[0] : subject[1]]), join(sample[obj[0] : obj[1]]))
            for sample, (subject, obj) in zip(texts, spans, strict=True)
        ]

    def load_image(
        self, image: Any, max_image_pixels: int | None = None, reduce_for: str | None = None
    ) -> Image.Image:
        """Loads one image (image file bytes or file path, PIL image, array) as an RGB PIL image, refusing one of
        more than `max_image_pixels` pixels, or that [`resize_images`] refuses, before decoding it; see
        `image_loading.load_image`. At full size, or with `reduce_for="image"` (`"object_crop"`) at the reduced scale
        `resize_images` decodes a main image (an object crop) at, so that resizing the result gives the pixels
        `resize_images` gives for the file."""
        targets = {None: None, "image": resize_target(self.image_processor), "object_crop": self.object_image_size}
        if reduce_for not in targets:
            raise ValueError(f"`reduce_for` must be None, 'image' or 'object_crop', got {reduce_for!r}.")
        return load_image(image, max_image_pixels, targets[reduce_for])

    def resize_images(
        self, images: Any, object_crops: Sequence | None = None, max_image_pixels: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Loads and resizes one image or a list of images, and per image a list of 0 to `num_object_crops` object
        crops (one list for a single image), without normalising them: uint8 `pixel_values`, `object_pixel_values`
        (crops resized to `object_image_size` squares the way the main image is made, zeros for absent ones) and
        `object_mask`.

        Every image a post brings meets the same bounds, whatever form it comes in (see `image_loading`): a file
        must be a JPEG, PNG, WebP or GIF (`ACCEPTED_FORMATS`; the first frame of an animation), no side may be more
        than `MAX_ASPECT_RATIO` times the other, the metadata Pillow parses while opening a file is bounded, and
        decoding the images of a sample may take at most `MAX_DECODE_BYTES`.

        The crops are counted, then every image is opened and sized from its header, and the images of a sample
        holding more than `max_image_pixels` pixels together, or taking more than `MAX_DECODE_BYTES` to decode, are
        refused before any is decoded. A large JPEG is decoded at a reduced scale (`draft`), another large image is
        reduced (`reduce`), to no less than twice the resize target. A path, bytes, and a PIL image opened and not
        loaded yet (`Image.open(path)`) give the same pixels, those of the training cache; a decoded PIL image
        (loaded, converted, made in memory) or an array is taken as it is: reduced like any large image, but without
        the reduced-scale decoding of a JPEG file. See `image_loading.resize_batch`."""
        is_batched = isinstance(images, (list, tuple))
        images = list(images) if is_batched else [images]
        if object_crops is None:
            object_crops = [[] for _ in images]
        elif not is_batched:
            object_crops = [object_crops]
        return resize_batch(
            self.image_processor,
            images,
            list(object_crops),
            self.num_object_crops,
            self.object_image_size,
            is_batched,
            max_image_pixels,
        )

    def normalize_pixels(self, pixel_values_uint8: torch.Tensor) -> torch.Tensor:
        """Rescales and normalises uint8 `(..., 3, H, W)` pixels into float32 with the image processor's settings;
        an absent crop (uint8 zeros) becomes `-mean / std` here, zero with [`normalize_crops`]."""
        return normalize_pixels(self.image_processor, pixel_values_uint8)

    def pixel_statistics(self) -> dict[str, list[float]]:
        """`image_mean` and `image_std` for `HVFormerConfig`: what the model needs to normalise uint8 pixels on the
        device as [`normalize_pixels`] does on the host (see `image_loading.pixel_statistics`)."""
        return pixel_statistics(self.image_processor)

    def normalize_crops(self, object_pixel_values_uint8: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        """[`normalize_pixels`] for uint8 object crops `(B, t, 3, s, s)`, with the absent ones (`object_mask` `(B, t)`
        0) set to zero."""
        present = object_mask[:, :, None, None, None].to(torch.float32)
        return self.normalize_pixels(object_pixel_values_uint8) * present


HVFormerProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["HVFormerProcessor"]
