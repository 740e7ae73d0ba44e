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
"""The saved files of an HVFormer processor: reads them from a folder or Hub repository (or the parts of a new one
from a text and a vision checkpoint), and lists where a processor disagrees with a model's `config.json`.

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from transformers import AutoConfig, AutoTokenizer

# Imported from its module: transformers 5.17 exports a placeholder `AutoImageProcessor` when torchvision is missing.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
from transformers.utils import cached_file

from .image_processing_hvformer import HVFormerImageProcessor

HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")
"""`from_pretrained` arguments that go to the file downloads."""
_SAVED_KEYS = ("image_processor_type", "auto_map", "processor_class")
"""Keys of a saved image processor that are not its settings."""


def read_json_file(
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


def load_saved_parts(
    path: str | os.PathLike, hub_kwargs: dict[str, Any]
) -> tuple[dict[str, Any], Any, HVFormerImageProcessor, dict[str, Any] | None]:
    """Reads `processor_config.json`, the tokenizer (with the class named in `tokenizer_config.json`, so no model
    configuration is read on the way), the image processor and, when present, the model's `config.json`.

    The image processor is the `HVFormerImageProcessor` saved in the folder; a folder saved before there was one holds
    the vision encoder's image processor and the crop settings in `processor_config.json`, from which it is made
    ([`HVFormerImageProcessor.from_vision_image_processor`])."""
    processor_dict = read_json_file(path, "processor_config.json", hub_kwargs, required=True)
    read_json_file(path, "tokenizer.json", hub_kwargs, required=True)
    tokenizer_config = read_json_file(path, "tokenizer_config.json", hub_kwargs, required=True)
    class_name = tokenizer_config.get("tokenizer_class")
    tokenizer_class = tokenizer_class_from_name(class_name) if isinstance(class_name, str) else None
    if tokenizer_class is None:
        raise ValueError(
            f"tokenizer_config.json of {os.fspath(path)!r} names no known `tokenizer_class` (got {class_name!r})."
        )
    tokenizer = tokenizer_class.from_pretrained(path, **hub_kwargs)
    image_processor_dict = processor_dict.get("image_processor") or read_json_file(
        path, "preprocessor_config.json", hub_kwargs, required=True
    )
    if image_processor_dict.get("image_processor_type") == HVFormerImageProcessor.__name__:
        settings = {key: value for key, value in image_processor_dict.items() if key not in _SAVED_KEYS}
        image_processor = HVFormerImageProcessor(**settings)
    else:
        image_processor = HVFormerImageProcessor.from_vision_image_processor(
            AutoImageProcessor.from_pretrained(path, **hub_kwargs),
            **{
                name: processor_dict[name]
                for name in ("num_object_crops", "object_image_size")
                if name in processor_dict
            },
        )
    model_config = read_json_file(path, "config.json", hub_kwargs, required=False)
    return processor_dict, tokenizer, image_processor, model_config


def load_text_vision_parts(
    text_name_or_path: str | os.PathLike, vision_name_or_path: str | os.PathLike, kwargs: dict[str, Any]
) -> tuple[Any, Any]:
    """The tokenizer of a text checkpoint, its `model_max_length` capped by the encoder's `max_position_embeddings`,
    and the image processor of a vision checkpoint; `kwargs` go to every `from_pretrained`."""
    tokenizer = AutoTokenizer.from_pretrained(text_name_or_path, **kwargs)
    try:
        positions = getattr(AutoConfig.from_pretrained(text_name_or_path, **kwargs), "max_position_embeddings", None)
    except (OSError, ValueError):  # a tokenizer-only folder: the tokenizer's own `model_max_length` applies
        positions = None
    if positions is not None:
        tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
    return tokenizer, AutoImageProcessor.from_pretrained(vision_name_or_path, **kwargs)


def model_mismatches(processor: Any, config: dict[str, Any]) -> list[str]:
    """Where `processor` (an `HVFormerProcessor`) disagrees with a model's `config.json` content, one sentence each
    naming the files involved: vocabulary size, entity markers and their ids, labels, `max_length`, pixel statistics,
    crop settings."""
    text_config = config.get("text_config") or {}
    problems = []
    vocab_size = text_config.get("vocab_size")
    if vocab_size is not None and len(processor.tokenizer) != vocab_size:
        problems.append(
            f"the tokenizer (tokenizer.json) has {len(processor.tokenizer)} tokens but the text encoder "
            f"(config.json `text_config.vocab_size`) has {vocab_size}"
        )
    markers = config.get("entity_markers")
    if markers is not None and list(markers) != processor.entity_markers:
        problems.append(
            f"the model's entity markers (config.json) are {markers}, the processor's (processor_config.json) "
            f"{processor.entity_markers}"
        )
    marker_ids = config.get("entity_marker_token_ids")
    if marker_ids is not None and list(marker_ids) != processor.marker_token_ids():
        problems.append(
            f"the tokenizer (tokenizer.json) gives the markers the ids {processor.marker_token_ids()}, the model "
            f"(config.json `entity_marker_token_ids`) expects {list(marker_ids)}"
        )
    id2label = {int(index): label for index, label in (config.get("id2label") or {}).items()}
    labels = [id2label[index] for index in sorted(id2label)]
    if processor.relation_labels is not None and processor.relation_labels != labels:
        problems.append(
            f"the processor's `relation_labels` (processor_config.json) {processor.relation_labels} are not the "
            f"model's labels in id order (config.json `id2label`) {labels}"
        )
    positions = text_config.get("max_position_embeddings")
    if positions is not None and processor.max_length > positions:
        problems.append(
            f"the processor's `max_length` {processor.max_length} (processor_config.json) exceeds the text encoder's "
            f"{positions} positions (config.json `text_config.max_position_embeddings`)"
        )
    problems += _pixel_mismatches(processor, config)
    names = ("num_object_crops", "object_image_size") if config.get("num_object_crops") else ("num_object_crops",)
    for name in names:
        if name in config and getattr(processor, name) != config[name]:
            problems.append(
                f"the processor's `{name}` {getattr(processor, name)} (processor_config.json) differs from the "
                f"model's {config[name]} (config.json)"
            )
    return problems


def _pixel_mismatches(processor: Any, config: dict[str, Any]) -> list[str]:
    """Where the statistics with which the model normalises uint8 pixels (`image_mean`, `image_std`) differ from the
    image processor's; nothing to compare when the config records none (a model saved before it did)."""
    if config.get("image_mean") is None or config.get("image_std") is None:
        return []
    problems = []
    for name, values in processor.pixel_statistics().items():
        expected = config[name]
        if len(expected) != len(values) or not all(
            math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-9)
            for value, other in zip(values, expected, strict=True)
        ):
            problems.append(
                f"the image processor's `{name}` {values} (preprocessor_config.json) differs from the model's "
                f"{expected} (config.json)"
            )
    return problems
