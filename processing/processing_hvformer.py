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
"""Processor for HVFormer: a BERT-like tokenizer with entity markers plus a ViT-like image processor.

This file travels to the Hugging Face Hub as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import inspect
import json
import operator
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig
from transformers.feature_extraction_utils import BatchFeature

# Imported from its module: transformers 5.17 exports a placeholder `AutoImageProcessor` when torchvision is missing.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER
from transformers.utils import cached_file

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


def _size_value(size: Any, key: str) -> int | None:
    """Reads `key` from an image processor size, which is a `SizeDict` or a plain dict depending on the version."""
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _find_occurrences(text: str, needle: str) -> list[int]:
    """Start offsets of `needle` in `text`, overlapping ones included, that are not glued to a longer word.

    An occurrence whose first (last) character is a word character must not be preceded (followed) by one, so
    `"Paris"` is found in `"to Paris."` but not in `"Parisian"`.
    """
    starts = []
    start = text.find(needle)
    while start != -1:
        end = start + len(needle)
        glued_left = start > 0 and _word_char(needle[0]) and _word_char(text[start - 1])
        glued_right = end < len(text) and _word_char(needle[-1]) and _word_char(text[end])
        if not (glued_left or glued_right):
            starts.append(start)
        start = text.find(needle, start + 1)
    return starts


def _find_word_occurrences(words: Sequence[str], needle: Sequence[str]) -> list[int]:
    """Start indices of the word sequence `needle` in `words`."""
    size = len(needle)
    return [i for i in range(len(words) - size + 1) if list(words[i : i + size]) == list(needle)]


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB.

    Transparent pixels (LA, La, RGBA, RGBa, PA, palette images with transparency) are composited on white. 16-bit
    modes (`I;16*`, and `I`, which 16-bit PNG/TIFF decoders produce) are mapped from [0, 65535] to [0, 255], values
    outside being clipped. Float (`F`) images must hold values in [0, 1], scaled by 255 like float arrays. Every other
    mode (L, 1, CMYK, YCbCr, ...) goes through PIL's own conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.float64)
        array = np.clip(np.rint(np.clip(array, 0, 65535) / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "La":
        image = image.convert("LA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "F":
        return _array_to_image(np.asarray(image)).convert("RGB")
    return image.convert("RGB")


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scales a float image with values in [0, 1] to uint8 (value * 255, rounded); other values are refused."""
    if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
        low, high = np.nanmin(array), np.nanmax(array)
        raise ValueError(
            f"A float image must hold finite values in [0, 1] (scaled by 255), got values in [{low}, {high}]; "
            "convert images in [0, 255] to uint8 first."
        )
    return np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)


def _array_to_image(array: np.ndarray) -> Image.Image:
    """Turns an `(H, W)` or `(H, W, C)` array (C = 1, 3 or 4) of uint8, uint16, bool or float values into a PIL image.

    Float values must lie in [0, 1] and are scaled by 255, as for float ('F' mode) PIL images.
    """
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"An image array must have shape (H, W) or (H, W, C) with C in (1, 3, 4), got shape {array.shape}."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = _float_to_uint8(array)
    elif array.dtype != np.uint8:
        raise ValueError(
            f"An image array must hold uint8, uint16, bool or float (in [0, 1]) values, got dtype {array.dtype}."
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _read_json_file(
    pretrained_model_name_or_path: str | os.PathLike, filename: str, hub_kwargs: dict[str, Any], required: bool
) -> dict[str, Any] | None:
    """Reads a JSON file of a local folder or Hub repository; the errors name the file.

    Returns `None` for an absent optional file; raises `FileNotFoundError` for an absent required one and `ValueError`
    for a file that is not valid JSON.
    """
    resolved = cached_file(
        pretrained_model_name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if resolved is None:
        if required:
            raise FileNotFoundError(
                f"{os.fspath(pretrained_model_name_or_path)!r} has no {filename}, which HVFormerProcessor needs; save "
                "the processor with `processor.save_pretrained` to write it."
            )
        return None
    try:
        with open(resolved, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = os.fspath(pretrained_model_name_or_path)
        raise ValueError(f"{filename} of {where!r} is not valid JSON: {error}") from error


def _fit_to_budget(segments: list[list[int]], budget: int, nested: bool) -> list[list[int]]:
    """Truncates the five word-piece segments of a sample so that they hold at most `budget` pieces together.

    `segments` are `[before, first entity, between, second entity, after]` for disjoint entities and
    `[before, outer head, inner entity, outer tail, after]` when one entity lies inside the other. See
    [`HVFormerProcessor.__call__`] for the policy. `budget` excludes the four markers and the special tokens and is
    at least 2.
    """
    before, first, middle, second, after = segments
    core = len(first) + len(middle) + len(second)
    if len(before) + core + len(after) <= budget:
        return segments
    if core <= budget:
        room = budget - core
        left = min(len(before), room // 2)
        right = min(len(after), room - left)
        left = min(len(before), room - right)
        return [before[len(before) - left :], first, middle, second, after[:right]]
    if nested:
        head, inner, tail = first, middle, second
        room = budget - len(inner)
        if room < 0:
            return [[], [], inner[:budget], [], []]
        keep_head = min(len(head), room)
        return [[], head[:keep_head], inner, tail[: room - keep_head], []]
    room = budget - len(first) - len(second)
    if room >= 0:
        keep_head = (room + 1) // 2
        keep_tail = room - keep_head
        return [[], first, middle[:keep_head] + middle[len(middle) - keep_tail :], second, []]
    keep_first = min(len(first), max(budget // 2, budget - len(second)))
    keep_second = min(len(second), budget - keep_first)
    return [[], first[:keep_first], [], second[:keep_second], []]


class HVFormerProcessor(ProcessorMixin):
    r"""
    Constructs an HVFormer processor: a BERT-like tokenizer that inserts the entity markers `<s> </s> <o> </o>`
    around the subject and the object of a relation, and the image processor of the vision encoder (CLIP or ViT,
    torchvision or PIL backend) for the post image and its visual-grounding object crops.

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
    """

    MARKERS = ("<s>", "</s>", "<o>", "</o>")

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        max_length: int = 80,
        num_object_crops: int = 3,
        object_image_size: int = 128,
        relation_labels: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(image_processor, tokenizer, **kwargs)
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
        self.max_length = max_length
        self.num_object_crops = num_object_crops
        self.object_image_size = object_image_size
        self.relation_labels = relation_labels
        self._add_markers()
        self._prefix_ids, self._suffix_ids = self._special_token_template()
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
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        path = pretrained_model_name_or_path
        processor_dict = _read_json_file(path, "processor_config.json", hub_kwargs, required=True)
        _read_json_file(path, "tokenizer.json", hub_kwargs, required=True)
        tokenizer_config = _read_json_file(path, "tokenizer_config.json", hub_kwargs, required=True)
        class_name = tokenizer_config.get("tokenizer_class")
        tokenizer_class = tokenizer_class_from_name(class_name) if isinstance(class_name, str) else None
        if tokenizer_class is None:
            raise ValueError(
                f"tokenizer_config.json of {os.fspath(path)!r} names no known `tokenizer_class` (got {class_name!r})."
            )
        tokenizer = tokenizer_class.from_pretrained(path, **hub_kwargs)
        image_processor = AutoImageProcessor.from_pretrained(path, **hub_kwargs)
        init_names = set(inspect.signature(cls.__init__).parameters) - {
            "self",
            "image_processor",
            "tokenizer",
            "kwargs",
        }
        init_kwargs = {name: processor_dict[name] for name in init_names if name in processor_dict}
        init_kwargs.update({name: kwargs[name] for name in init_names if name in kwargs})
        processor = cls(image_processor=image_processor, tokenizer=tokenizer, **init_kwargs)
        model_config = _read_json_file(path, "config.json", hub_kwargs, required=False)
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
        `max_position_embeddings`, and the object-crop settings.

        Args:
            config (`PreTrainedConfig` or `dict`):
                The model's `HVFormerConfig`, or the content of its `config.json`.

        Raises:
            `ValueError`: naming every mismatch and the files (`tokenizer.json`, `processor_config.json`,
            `config.json`) it comes from.
        """
        if isinstance(config, PreTrainedConfig):
            config = config.to_dict()
        text_config = config.get("text_config") or {}
        problems = []
        vocab_size = text_config.get("vocab_size")
        if vocab_size is not None and len(self.tokenizer) != vocab_size:
            problems.append(
                f"the tokenizer (tokenizer.json) has {len(self.tokenizer)} tokens but the text encoder "
                f"(config.json `text_config.vocab_size`) has {vocab_size}"
            )
        markers = config.get("entity_markers")
        if markers is not None and tuple(markers) != self.MARKERS:
            problems.append(f"the model's entity markers (config.json) are {markers}, the processor's {self.MARKERS}")
        marker_ids = config.get("entity_marker_token_ids")
        if marker_ids is not None and list(marker_ids) != self.marker_token_ids():
            problems.append(
                f"the tokenizer (tokenizer.json) gives the markers the ids {self.marker_token_ids()}, the model "
                f"(config.json `entity_marker_token_ids`) expects {list(marker_ids)}"
            )
        id2label = {int(index): label for index, label in (config.get("id2label") or {}).items()}
        labels = [id2label[index] for index in sorted(id2label)]
        if self.relation_labels is not None and self.relation_labels != labels:
            problems.append(
                f"the processor's `relation_labels` (processor_config.json) {self.relation_labels} are not the "
                f"model's labels in id order (config.json `id2label`) {labels}"
            )
        positions = text_config.get("max_position_embeddings")
        if positions is not None and self.max_length > positions:
            problems.append(
                f"the processor's `max_length` {self.max_length} (processor_config.json) exceeds the text encoder's "
                f"{positions} positions (config.json `text_config.max_position_embeddings`)"
            )
        names = ("num_object_crops", "object_image_size") if config.get("num_object_crops") else ("num_object_crops",)
        for name in names:
            if name in config and getattr(self, name) != config[name]:
                problems.append(
                    f"the processor's `{name}` {getattr(self, name)} (processor_config.json) differs from the model's "
                    f"{config[name]} (config.json)"
                )
        if problems:
            raise ValueError("The processor does not match the model: " + "; ".join(problems) + ".")

    @classmethod
    def from_text_vision_pretrained(
        cls, text_name_or_path: str | os.PathLike, vision_name_or_path: str | os.PathLike, **kwargs
    ) -> HVFormerProcessor:
        r"""
        Builds a processor from the tokenizer of a text checkpoint and the image processor of a vision checkpoint,
        and adds the entity markers to the tokenizer. The tokenizer's `model_max_length` is capped by the text
        encoder's `max_position_embeddings` (when the text checkpoint has a configuration), so a `max_length` the
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
        init_names = set(inspect.signature(cls.__init__).parameters) - {"self", "image_processor", "tokenizer"}
        init_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in init_names}
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

    def _add_markers(self) -> None:
        """Registers the markers as special tokens of the tokenizer and checks that each one encodes to one id."""
        roles = {
            getattr(self.tokenizer, f"{role}_token", None): role
            for role in ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
        }
        for marker in self.MARKERS:
            if marker in roles:
                raise ValueError(
                    f"The entity marker {marker!r} is already the tokenizer's {roles[marker]}_token; HVFormer needs "
                    "markers distinct from the tokenizer's own special tokens."
                )
        missing = [marker for marker in self.MARKERS if marker not in self.tokenizer.all_special_tokens]
        if missing:
            self.tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        for marker, marker_id in zip(self.MARKERS, self.marker_token_ids(), strict=True):
            encoded = self.tokenizer.encode(marker, add_special_tokens=False)
            if encoded != [marker_id] or marker_id == self.tokenizer.unk_token_id:
                raise ValueError(f"The entity marker {marker!r} does not encode to a single token: {encoded}.")

    def _special_token_template(self) -> tuple[list[int], list[int]]:
        """The special token ids the tokenizer puts before and after a single sequence (`[CLS]` and `[SEP]`)."""
        subject_id = self.marker_token_ids()[0]
        with_special = self.tokenizer.encode(self.MARKERS[0], add_special_tokens=True)
        if with_special.count(subject_id) != 1:
            raise ValueError(f"Cannot locate the special tokens the tokenizer adds around a text: {with_special}.")
        position = with_special.index(subject_id)
        return with_special[:position], with_special[position + 1 :]

    def _check_max_length(self, max_length: Any) -> None:
        """Checks that `max_length` holds the special tokens, the four markers and one word piece per entity, and
        that the text encoder can read it (`tokenizer.model_max_length`, unless that is unset)."""
        minimum = len(self._prefix_ids) + len(self._suffix_ids) + len(self.MARKERS) + 2
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

    def marker_token_ids(self) -> list[int]:
        """Ids of `<s>`, `</s>`, `<o>` and `</o>`, in that order."""
        return [int(token_id) for token_id in self.tokenizer.convert_tokens_to_ids(list(self.MARKERS))]

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
        **kwargs,
    ) -> BatchFeature:
        r"""
        Encodes texts with entity markers, images and object crops for HVFormer.

        The call follows `LukeTokenizer`'s entity-pair classification: `entity_spans=[subject_span, object_span]`.
        Markers are inserted as `... <s> subject </s> ... <o> object </o> ...` (the object may come first in the
        text); an entity at the very end of the text is marked like any other. When one entity lies inside the other
        (62 MNRE train/val lines do), the markers nest: `<o> <s> Darien Lake </s> Performing Arts Center </o>`.
        Identical spans and spans that overlap without nesting are rejected.

        Truncation policy (applied to word pieces, never to markers or special tokens) when a sample needs more
        than `max_length` tokens:

        1. If the span from the first opening marker to the last closing marker fits, keep it whole and fill the
           remaining room with the context closest to it: half of the room before it and half after it, a side
           with too little context giving its share to the other side (an odd token goes after).
        2. Otherwise drop all context outside that span, then the word pieces in the middle of the text between
           the two entities, keeping the pieces next to each entity (one more after the first entity when odd).
        3. If the two entities alone still don't fit, share the room equally between them (an odd piece goes to
           the second; an entity shorter than its share leaves the rest to the other) and trim each from its end.

        For nested entities, step 2 drops the outer entity's own pieces from its end (those after the inner entity
        first, then those before it), and step 3 trims the inner entity from its end.

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
                One image per sample (a PIL image, a uint8, uint16, bool or float `(H, W[, C])` array or a file
                path); a single image for a single text. See [`HVFormerProcessor.load_image`].
            object_crops (*optional*):
                Per sample, a list of 0 to `num_object_crops` object crops (same types as `images`); for a single
                text, one such list. Missing crops are zero images with `object_mask` 0. Requires `images`.
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

        Returns:
            [`BatchFeature`]: `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer uses them) and
            `marker_positions` (`(B, 2)`: index of `<s>` and of `<o>`) for texts; `pixel_values` (`(B, 3, H, W)`),
            `object_pixel_values` (`(B, t, 3, s, s)`, zeros for absent crops) and `object_mask` (`(B, t)`) for
            images; `labels` (`(B,)`). A single text gives a batch of one.
        """
        if kwargs:
            raise TypeError(f"HVFormerProcessor.__call__ got unexpected keyword arguments: {sorted(kwargs)}.")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
        if truncation not in (True, False, "do_not_truncate"):
            raise ValueError(f"`truncation` must be True, False or 'do_not_truncate', got {truncation!r}.")
        if isinstance(images, (list, tuple)) and not images:
            raise ValueError("`images` is an empty list: pass one image, or a list with one image per sample.")
        if text is None and images is None:
            raise ValueError("Nothing to process: pass `text`, `images`, or both.")
        if object_crops is not None and images is None:
            raise ValueError("`object_crops` needs `images`: each sample's crops belong to its main image.")

        data: dict[str, Any] = {}
        if text is not None:
            texts, is_batched = self._batch_texts(text, is_split_into_words)
            batch_size = len(texts)
            data.update(
                self._encode_texts(
                    texts, entity_spans, entities, is_batched, is_split_into_words, max_length, padding, truncation
                )
            )
        else:
            if entity_spans is not None or entities is not None:
                raise ValueError("`entity_spans` and `entities` need `text`.")
            is_batched = isinstance(images, (list, tuple))
            batch_size = len(images) if is_batched else 1

        if images is not None:
            images_list = self._per_sample(images, "images", batch_size, is_batched)
            crops_list = None
            if object_crops is not None:
                crops_list = self._per_sample(object_crops, "object_crops", batch_size, is_batched)
            pixels = self.resize_images(images_list, crops_list)
            data["pixel_values"] = self.normalize_pixels(pixels["pixel_values"])
            present = pixels["object_mask"][:, :, None, None, None].to(torch.float32)
            data["object_pixel_values"] = self.normalize_pixels(pixels["object_pixel_values"]) * present
            data["object_mask"] = pixels["object_mask"]
        if labels is not None:
            data["labels"] = self._label_ids(self._per_sample(labels, "labels", batch_size, is_batched))

        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                if return_tensors == "np":
                    data[key] = value.numpy()
                elif return_tensors is None:
                    data[key] = value.tolist()
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _batch_texts(text: Any, is_split_into_words: bool) -> tuple[list, bool]:
        """Returns the texts as a list and whether the input was a batch."""
        if is_split_into_words:
            if isinstance(text, (list, tuple)) and all(isinstance(word, str) for word in text):
                return [list(text)], False
            if isinstance(text, (list, tuple)) and all(
                isinstance(words, (list, tuple)) and all(isinstance(word, str) for word in words) for words in text
            ):
                return [list(words) for words in text], True
            raise ValueError(
                "With `is_split_into_words=True`, `text` must be a list of words (strings) or a list of such lists."
            )
        if isinstance(text, str):
            return [text], False
        if isinstance(text, (list, tuple)) and not text:
            raise ValueError("`text` is an empty list: pass one text, or a list of texts.")
        if isinstance(text, (list, tuple)) and all(isinstance(sample, str) for sample in text):
            return list(text), True
        raise ValueError(
            "`text` must be a string or a list of strings; pass word lists with `is_split_into_words=True`."
        )

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

    def _label_ids(self, labels: list) -> torch.Tensor:
        """Maps labels (ids or relation names) to a long tensor."""
        ids = []
        for index, label in enumerate(labels):
            if isinstance(label, str):
                if self.relation_labels is None:
                    raise ValueError(
                        f"Sample {index}: label {label!r} is a string but the processor has no `relation_labels`."
                    )
                if label not in self.relation_labels:
                    raise ValueError(
                        f"Sample {index}: unknown relation label {label!r}; known labels: {self.relation_labels}."
                    )
                ids.append(self.relation_labels.index(label))
                continue
            try:
                label_id = operator.index(label)
            except TypeError:
                raise ValueError(
                    f"Sample {index}: a label must be an integer or a relation name, got {label!r}."
                ) from None
            if self.relation_labels is not None and not 0 <= label_id < len(self.relation_labels):
                raise ValueError(f"Sample {index}: label id {label_id} is outside [0, {len(self.relation_labels)}).")
            ids.append(label_id)
        return torch.tensor(ids, dtype=torch.long)

    def _entity_spans(
        self, texts: list, entity_spans: Any, entities: Any, is_batched: bool, is_split_into_words: bool
    ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Validates the spans (or finds the entity strings) and returns `(subject_span, object_span)` per sample."""
        if (entity_spans is None) == (entities is None):
            raise ValueError("Pass exactly one of `entity_spans` and `entities` with `text`.")
        pairs = self._per_sample(
            entity_spans if entities is None else entities,
            "entity_spans" if entities is None else "entities",
            len(texts),
            is_batched,
        )
        unit = "word" if is_split_into_words else "character"
        result = []
        for index, (sample, pair) in enumerate(zip(texts, pairs, strict=True)):
            if len(sample) == 0:
                raise ValueError(f"Sample {index}: the text is empty.")
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"Sample {index}: expected a (subject, object) pair, got {pair!r}.")
            spans = []
            for role, item in zip(("subject", "object"), pair, strict=True):
                if entities is not None:
                    spans.append(self._locate_entity(sample, item, role, index, is_split_into_words))
                    continue
                if not isinstance(item, (list, tuple)) or len(item) != 2:
                    raise ValueError(f"Sample {index}: the {role} span must be a (start, end) pair, got {item!r}.")
                try:
                    start, end = (operator.index(bound) for bound in item)
                except TypeError:
                    raise ValueError(f"Sample {index}: the {role} span must hold integers, got {item!r}.") from None
                if start >= end:
                    raise ValueError(f"Sample {index}: the {role} span {item!r} is empty (start must be < end).")
                if start < 0 or end > len(sample):
                    raise ValueError(
                        f"Sample {index}: the {role} span {item!r} is out of range for a text of {len(sample)} "
                        f"{unit}s."
                    )
                spans.append((start, end))
            (subject_start, subject_end), (object_start, object_end) = spans
            if spans[0] == spans[1]:
                raise ValueError(f"Sample {index}: the subject and object spans are identical: {spans[0]}.")
            crossing = subject_start < object_start < subject_end < object_end
            if crossing or object_start < subject_start < object_end < subject_end:
                raise ValueError(
                    f"Sample {index}: the subject span {spans[0]} overlaps the object span {spans[1]} without one "
                    "containing the other."
                )
            result.append((spans[0], spans[1]))
        return result

    @staticmethod
    def _locate_entity(sample: Any, entity: Any, role: str, index: int, is_split_into_words: bool) -> tuple[int, int]:
        """Finds the single occurrence of an entity string in a text and returns its span."""
        if not isinstance(entity, str) or not entity.strip():
            raise ValueError(f"Sample {index}: the {role} entity must be a non-empty string, got {entity!r}.")
        if is_split_into_words:
            needle = entity.split()
            starts = _find_word_occurrences(sample, needle)
            size = len(needle)
        else:
            starts = _find_occurrences(sample, entity)
            size = len(entity)
        if not starts:
            raise ValueError(f"Sample {index}: the {role} entity {entity!r} is absent from the text.")
        if len(starts) > 1:
            raise ValueError(
                f"Sample {index}: the {role} entity {entity!r} occurs {len(starts)} times in the text (at "
                f"{starts}); pass `entity_spans` instead."
            )
        return starts[0], starts[0] + size

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
        texts, is_batched = self._batch_texts(text, is_split_into_words)
        spans = self._entity_spans(texts, entity_spans, entities, is_batched, is_split_into_words)
        join = " ".join if is_split_into_words else "".join
        return [
            (join(sample[subject[0] : subject[1]]), join(sample[obj[0] : obj[1]]))
            for sample, (subject, obj) in zip(texts, spans, strict=True)
        ]

    def _encode_texts(
        self,
        texts: list,
        entity_spans: Any,
        entities: Any,
        is_batched: bool,
        is_split_into_words: bool,
        max_length: int | None,
        padding: bool | str,
        truncation: bool | str,
    ) -> dict[str, Any]:
        """Tokenizes, marks, truncates (or refuses too long samples) and pads the texts."""
        max_length = self.max_length if max_length is None else max_length
        self._check_max_length(max_length)
        if padding in (True, "longest"):
            pad_to = None
        elif padding == "max_length":
            pad_to = max_length
        elif padding in (False, "do_not_pad"):
            pad_to = -1
        else:
            raise ValueError(
                f"`padding` must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}."
            )

        spans = self._entity_spans(texts, entity_spans, entities, is_batched, is_split_into_words)
        layouts = [self._layout(subject_span, object_span) for subject_span, object_span in spans]
        segments = [
            [sample[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
            for sample, (bounds, _, _) in zip(texts, layouts, strict=True)
        ]
        pieces = self._tokenize_segments(segments, is_split_into_words)

        marker_ids = dict(zip(self.MARKERS, self.marker_token_ids(), strict=True))
        budget = max_length - len(self._prefix_ids) - len(self._suffix_ids) - len(self.MARKERS)
        sequences, positions = [], []
        for index, (sample_pieces, (_, markers, nested)) in enumerate(zip(pieces, layouts, strict=True)):
            entity_slots = (2,) if nested else (1, 3)
            for slot in entity_slots:
                if not sample_pieces[slot]:
                    role = "subject" if markers[slot - 1] == "<s>" else "object"
                    raise ValueError(
                        f"Sample {index}: the {role} entity {segments[index][slot]!r} gives no word pieces with this "
                        "tokenizer."
                    )
            needed = sum(len(piece) for piece in sample_pieces)
            if needed > budget and truncation in (False, "do_not_truncate"):
                raise ValueError(
                    f"Sample {index}: the text needs {max_length - budget + needed} tokens with the special tokens "
                    f"and markers, more than max_length={max_length}; pass `truncation=True` to shorten it."
                )
            fitted = _fit_to_budget(sample_pieces, budget, nested)
            sequence = self._prefix_ids + fitted[0]
            marker_at = {}
            for marker, segment in zip(markers, fitted[1:], strict=True):
                marker_at[marker] = len(sequence)
                sequence = sequence + [marker_ids[marker]] + segment
            sequences.append(sequence + self._suffix_ids)
            positions.append([marker_at["<s>"], marker_at["<o>"]])

        return self._pad(sequences, positions, pad_to)

    @staticmethod
    def _layout(subject: tuple[int, int], obj: tuple[int, int]) -> tuple[list[int | None], tuple[str, ...], bool]:
        """Cuts a text around its two entities.

        Returns the six boundaries of the five segments, the marker that precedes each of the segments 1 to 4, and
        whether one entity lies inside the other.
        """
        (subject_start, subject_end), (object_start, object_end) = subject, obj
        if subject_start <= object_start and object_end <= subject_end:
            bounds = [subject_start, object_start, object_end, subject_end]
            return [0, *bounds, None], ("<s>", "<o>", "</o>", "</s>"), True
        if object_start <= subject_start and subject_end <= object_end:
            bounds = [object_start, subject_start, subject_end, object_end]
            return [0, *bounds, None], ("<o>", "<s>", "</s>", "</o>"), True
        if subject_start < object_start:
            return (
                [0, subject_start, subject_end, object_start, object_end, None],
                ("<s>", "</s>", "<o>", "</o>"),
                False,
            )
        return [0, object_start, object_end, subject_start, subject_end, None], ("<o>", "</o>", "<s>", "</s>"), False

    def _tokenize_segments(self, segments: list[list], is_split_into_words: bool) -> list[list[list[int]]]:
        """Tokenizes the five segments of every sample with one batched tokenizer call.

        Text that looks like a special token (a literal `<s>` or `[SEP]` in a post) is split like ordinary text, so
        only the markers inserted here are marker tokens.
        """
        flat = [segment for sample in segments for segment in sample if len(segment) > 0]
        encoded = iter([])
        if flat:
            encoded = iter(
                self.tokenizer(
                    flat,
                    is_split_into_words=is_split_into_words,
                    add_special_tokens=False,
                    split_special_tokens=True,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                )["input_ids"]
            )
        return [[list(next(encoded)) if len(segment) > 0 else [] for segment in sample] for sample in segments]

    def _pad(self, sequences: list[list[int]], positions: list[list[int]], pad_to: int | None) -> dict[str, Any]:
        """Pads the encoded sequences (`pad_to`: None = longest, -1 = no padding) on the tokenizer's padding side."""
        if pad_to is None:
            pad_to = max(len(sequence) for sequence in sequences)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None and pad_to >= 0:
            raise ValueError("The tokenizer has no pad token, so the texts cannot be padded; pass `padding=False`.")
        left = self.tokenizer.padding_side == "left"
        input_ids, attention_mask, marker_positions = [], [], []
        for sequence, (subject_position, object_position) in zip(sequences, positions, strict=True):
            missing = max(pad_to - len(sequence), 0)
            shift = missing if left else 0
            padding_ids, padding_mask = [pad_id] * missing, [0] * missing
            mask = [1] * len(sequence)
            input_ids.append(padding_ids + sequence if left else sequence + padding_ids)
            attention_mask.append(padding_mask + mask if left else mask + padding_mask)
            marker_positions.append([subject_position + shift, object_position + shift])
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            data["token_type_ids"] = [[0] * len(ids) for ids in input_ids]
        data["marker_positions"] = marker_positions
        return data

    def load_image(self, image: Any) -> Image.Image:
        r"""
        Loads one image as an RGB PIL image.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `str` or `os.PathLike`):
                A PIL image, an `(H, W)` or `(H, W, C)` array (C = 1, 3 or 4) of uint8, uint16 (scaled to 8 bits),
                bool or float values, or the path of an image file. Float arrays and float ('F' mode) PIL images
                must hold values in [0, 1], which are scaled by 255.

        Returns:
            `PIL.Image.Image`: The image in RGB, EXIF orientation applied. Grayscale, palette, CMYK and 16-bit images
            are converted; transparent pixels (LA, La, PA, RGBA, RGBa, palette) are composited on white.

        Raises:
            `ValueError`: for an unreadable or corrupt file, a decompression bomb (more pixels than
            `PIL.Image.MAX_IMAGE_PIXELS`), an empty image, an unsupported array or float values outside [0, 1]; the
            message names the path.
            `TypeError`: for other input types.
        """
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(path) as opened:
                        opened.load()
                        rgb = _to_rgb(ImageOps.exif_transpose(opened))
                        if rgb is opened:
                            rgb = opened.copy()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise ValueError(f"Refusing to load the image {path!r}: decompression bomb ({error}).") from error
            except (OSError, SyntaxError, ValueError, EOFError) as error:
                raise ValueError(f"Cannot read the image {path!r}: {error}") from error
        elif isinstance(image, Image.Image):
            rgb = _to_rgb(ImageOps.exif_transpose(image))
        elif isinstance(image, np.ndarray):
            rgb = _to_rgb(_array_to_image(image))
        else:
            raise TypeError(f"An image must be a PIL image, a numpy array or a file path, got {type(image).__name__}.")
        if rgb.width == 0 or rgb.height == 0:
            raise ValueError(f"The image has no pixels (size {rgb.size}).")
        return rgb

    def _load_sample_image(self, image: Any, where: str) -> Image.Image:
        """[`load_image`] with the sample (and crop) named in the `ValueError`."""
        try:
            return self.load_image(image)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error

    def _crop_kwargs(self) -> dict[str, Any]:
        """Image processor overrides that make `object_image_size` square crops the way the main image is made."""
        side = self.object_image_size
        if _size_value(self.image_processor.size, "shortest_edge"):
            return {
                "size": {"shortest_edge": side},
                "crop_size": {"height": side, "width": side},
                "do_center_crop": True,
            }
        return {"size": {"height": side, "width": side}, "do_center_crop": False}

    def _resize(self, images: list[Image.Image], **overrides) -> torch.Tensor:
        """Runs the image processor without rescaling/normalising and returns uint8 `(N, 3, H, W)` pixels."""
        pixels = self.image_processor(images, do_rescale=False, do_normalize=False, return_tensors="pt", **overrides)[
            "pixel_values"
        ]
        if pixels.is_floating_point():
            pixels = pixels.round().clamp(0, 255)
        return pixels.to(torch.uint8)

    def resize_images(self, images: Any, object_crops: Sequence | None = None) -> dict[str, torch.Tensor]:
        r"""
        Loads and resizes the main images and the object crops without normalising them.

        The main images go through the image processor as configured; the crops through the same processor with its
        size set to `object_image_size` (square), so both are normalised alike by [`normalize_pixels`].

        Args:
            images:
                One image or a list of images (see [`load_image`]).
            object_crops (*optional*):
                Per image, a list of 0 to `num_object_crops` crops (one list for a single image).

        Returns:
            `dict`: `pixel_values` (uint8 `(B, 3, H, W)`), `object_pixel_values` (uint8 `(B, t, 3, s, s)`, zeros for
            absent crops) and `object_mask` (long `(B, t)`, 1 where a crop is present).
        """
        is_batched = isinstance(images, (list, tuple))
        images = list(images) if is_batched else [images]
        if object_crops is None:
            object_crops = [[] for _ in images]
        elif not is_batched:
            object_crops = [object_crops]
        if len(object_crops) != len(images):
            raise ValueError(f"Got {len(object_crops)} lists of object crops for {len(images)} images.")

        flat_crops, slots = [], []
        for index, crops in enumerate(object_crops):
            crops = [] if crops is None else crops
            if not isinstance(crops, (list, tuple)):
                raise ValueError(f"Sample {index}: the object crops must be a list, got {type(crops).__name__}.")
            if len(crops) > self.num_object_crops:
                raise ValueError(
                    f"Sample {index}: {len(crops)} object crops given, at most num_object_crops="
                    f"{self.num_object_crops} allowed."
                )
            for slot, crop in enumerate(crops):
                if crop is None:
                    raise ValueError(f"Sample {index}: object crop {slot} is None; leave absent crops out instead.")
                flat_crops.append(self._load_sample_image(crop, f"Sample {index}, object crop {slot}"))
                slots.append((index, slot))

        loaded = []
        for index, image in enumerate(images):
            if image is None:
                raise ValueError(f"Sample {index}: the image is None; every sample needs its image.")
            loaded.append(self._load_sample_image(image, f"Sample {index}"))
        pixel_values = self._resize(loaded)

        side = self.object_image_size
        object_pixel_values = torch.zeros((len(images), self.num_object_crops, 3, side, side), dtype=torch.uint8)
        object_mask = torch.zeros((len(images), self.num_object_crops), dtype=torch.long)
        if flat_crops:
            crop_pixels = self._resize(flat_crops, **self._crop_kwargs())
            for (index, slot), crop in zip(slots, crop_pixels, strict=True):
                object_pixel_values[index, slot] = crop
                object_mask[index, slot] = 1
        return {"pixel_values": pixel_values, "object_pixel_values": object_pixel_values, "object_mask": object_mask}

    def normalize_pixels(self, pixel_values_uint8: torch.Tensor) -> torch.Tensor:
        r"""
        Rescales and normalises uint8 pixels with the image processor's settings (`rescale_factor`, `image_mean`,
        `image_std`, `do_rescale`, `do_normalize`).

        Args:
            pixel_values_uint8 (`torch.Tensor`):
                uint8 pixels of shape `(..., 3, H, W)`, as returned by [`resize_images`].

        Returns:
            `torch.Tensor`: float32 pixels of the same shape. An absent crop (uint8 zeros) becomes `-mean / std`
            here; [`__call__`] then sets absent crops to zero with `object_mask`.
        """
        if pixel_values_uint8.dtype != torch.uint8:
            raise ValueError(f"`normalize_pixels` expects uint8 pixels, got {pixel_values_uint8.dtype}.")
        if pixel_values_uint8.dim() < 3 or pixel_values_uint8.shape[-3] != 3:
            raise ValueError(
                f"`normalize_pixels` expects shape (..., 3, H, W), got {tuple(pixel_values_uint8.shape)}."
            )
        pixels = pixel_values_uint8.to(torch.float32)
        processor = self.image_processor
        if processor.do_rescale:
            pixels = pixels * processor.rescale_factor
        if processor.do_normalize:
            mean = torch.as_tensor(processor.image_mean, dtype=torch.float32).reshape(-1, 1, 1)
            std = torch.as_tensor(processor.image_std, dtype=torch.float32).reshape(-1, 1, 1)
            pixels = (pixels - mean) / std
        return pixels


HVFormerProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["HVFormerProcessor"]
