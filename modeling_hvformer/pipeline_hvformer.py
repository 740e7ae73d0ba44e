"""The `multimodal-relation-extraction` pipeline of HVFormer, shipped with the model as remote code.

Saving an HVFormer model registers this pipeline in `config.json` (`custom_pipelines`) and copies this file next to
the model code, so that

```python
>>> from transformers import pipeline
>>> extractor = pipeline("multimodal-relation-extraction", model="path/or/hub-id", trust_remote_code=True)
>>> extractor({"text": "Obama and Merkel at the G7", "subject": "Obama", "object": "Merkel", "image": "post.jpg"})
[{'label': '/per/per/peer', 'score': 0.93}]
```

works in any process, without this project installed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import reprlib
from typing import Any

import numpy as np
from transformers import Pipeline

PIPELINE_TASK = "multimodal-relation-extraction"
"""The task name under which the pipeline is registered in `config.custom_pipelines`."""

CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_hvformer.HVFormerRelationExtractionPipeline",
        "pt": ["AutoModel"],
        "type": "multimodal",
    }
}
"""The `custom_pipelines` entry of an HVFormer `config.json`."""

INPUT_KEYS = ("text", "subject", "object", "entity_spans", "image", "object_crops")
"""The keys of one pipeline input."""

MAX_IMAGE_PIXELS = 2 * 4032 * 3024
"""The default pixel budget of one post (`max_image_pixels`): its image and object crops together may hold this many
pixels (24,385,536), room for a 12-megapixel phone photo and its crops. Counted from the images' headers before any is
decoded."""

MAX_TEXT_LENGTH = 10_000
"""The default maximum length of a post's text, in characters (`max_text_length`)."""


def decode_image(value: Any, field: str, allow_paths: bool) -> Any:
    """Returns the bytes of a base64-encoded image (optionally a `data:image/...;base64,` URL), the path unchanged for
    an existing file (when `allow_paths`), and any other value unchanged: the processor opens, counts, sizes and
    decodes every image."""
    if isinstance(value, (str, os.PathLike)) and allow_paths and os.path.isfile(value):
        return value
    if isinstance(value, os.PathLike):
        raise ValueError(f"`{field}`: no such image file {reprlib.repr(os.fspath(value))}.")
    if not isinstance(value, str):
        return value
    payload = value
    if value.startswith("data:"):
        header, comma, payload = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ValueError(f"`{field}` is a data URL without base64 data: write `data:image/...;base64,<data>`.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        what = "neither an existing image file nor" if allow_paths else "not"
        raise ValueError(f"`{field}` is {what} a base64-encoded image.") from None


def _check_limit(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be an integer >= 1 or None (no limit), got {reprlib.repr(value)}.")


@dataclasses.dataclass(frozen=True)
class _ListItem:
    """One input of a list given to the pipeline, with its index for the error messages."""

    index: int
    post: Any


class HVFormerRelationExtractionPipeline(Pipeline):
    r"""
    Multimodal relation extraction with HVFormer: the relation between a subject and an object named in a post, read
    from the post's text and image (and optional visual-grounding object crops).

    Each input is a dict with the keys:

    - `text` (`str`): the post.
    - `subject` and `object` (`str`): the two entities, each found exactly once in the text (case-sensitive), or
      `entity_spans`: `[[subject_start, subject_end], [object_start, object_end]]`, character offsets, end exclusive.
    - `image`: the bytes or the path of a JPEG, PNG, WebP or GIF file, a base64-encoded one (also as a
      `data:image/...;base64,` URL), a PIL image or a numpy array. A file, its bytes and `Image.open(path)` give the
      pixels the model was trained on (a large JPEG decoded at a reduced scale); a decoded PIL image (loaded,
      converted) or an array is taken as it is, without that reduced-scale decoding.
    - `object_crops` (optional): a list of up to `num_object_crops` crops of the same kinds.

    A list of such dicts gives a list of results (`batch_size=` batches them through the model); an error then names
    the input (`item 2: ...`).

    Call parameters:

    - `top_k` (`int`, defaults to 1): how many relations to return, most probable first.
    - `return_expert_weights` (`bool`, defaults to `False`): also return the router's expert weights G (Eq. 9) at the
      subject and object markers.

    Construction parameters:

    - `allow_image_paths` (`bool`, defaults to `True`): accept file paths as images (the Inference Endpoints handler
      turns this off).
    - `max_image_pixels` (`int` or `None`, defaults to `MAX_IMAGE_PIXELS`, 2 x 4032 x 3024): the most pixels the image
      and the object crops of one input may hold together, read from the images' headers before any is decoded;
      `None` for no budget.
    - `max_text_length` (`int` or `None`, defaults to `MAX_TEXT_LENGTH`, 10,000): the most characters of a text.

    Every refused input raises a `ValueError` naming the field. Images are decoded no larger than the model needs (a
    JPEG at a reduced scale), within the processor's bounds on every image (`image_loading.py`: the accepted formats,
    the aspect ratio, the metadata, at most `MAX_DECODE_BYTES` to decode a post's images).

    Returns per input a list `[{"label": str, "score": float}, ...]` of `top_k` relations (labels from
    `model.config.id2label`); with `return_expert_weights=True`, a dict `{"relations": that list, "subject": str,
    "object": str, "expert_weights": {"subject": {expert: weight}, "object": {expert: weight}}}` whose entity names
    are the text as written (case kept) and whose experts are `model.config.expert_names`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(
        self,
        *args: Any,
        allow_image_paths: bool = True,
        max_image_pixels: int | None = MAX_IMAGE_PIXELS,
        max_text_length: int | None = MAX_TEXT_LENGTH,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("The multimodal-relation-extraction pipeline needs the model's HVFormerProcessor.")
        self.processor.check_matches_model(self.model.config)
        _check_limit("max_image_pixels", max_image_pixels)
        _check_limit("max_text_length", max_text_length)
        self.allow_image_paths = allow_image_paths
        self.max_image_pixels = max_image_pixels
        self.max_text_length = max_text_length
        self.model.eval()

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Answers one input (a dict) or a list of them; see the class documentation."""
        if isinstance(inputs, list):
            if not inputs:
                raise ValueError("The list of inputs is empty.")
            inputs = [_ListItem(index, post) for index, post in enumerate(inputs)]
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self, top_k: int | None = None, return_expert_weights: bool | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        postprocess_params: dict[str, Any] = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"`top_k` must be an integer >= 1, got {reprlib.repr(top_k)}.")
            postprocess_params["top_k"] = top_k
        if return_expert_weights is not None:
            if not isinstance(return_expert_weights, bool):
                raise ValueError(
                    f"`return_expert_weights` must be True or False, got {reprlib.repr(return_expert_weights)}."
                )
            if return_expert_weights and self.model.config.fusion != "mome":
                raise ValueError("This model has no expert router (`fusion='concat'`), so it has no expert weights.")
            postprocess_params["return_expert_weights"] = return_expert_weights
        return {}, {}, postprocess_params

    def preprocess(self, inputs: Any) -> dict[str, Any]:
        if not isinstance(inputs, _ListItem):
            return self._preprocess_post(inputs)
        try:
            return self._preprocess_post(inputs.post)
        except ValueError as error:
            raise ValueError(f"item {inputs.index}: {error}") from error

    def _preprocess_post(self, inputs: Any) -> dict[str, Any]:
        """Checks one input and encodes it with the processor (the entity search, the pixel budget and the image
        decoding are the processor's)."""
        if not isinstance(inputs, dict):
            raise ValueError(
                f"Each input must be a dict with the keys {list(INPUT_KEYS)}, got {type(inputs).__name__}."
            )
        unknown = sorted(set(inputs) - set(INPUT_KEYS), key=str)
        if unknown:
            raise ValueError(f"Unknown input keys {reprlib.repr(unknown)}; the keys are {list(INPUT_KEYS)}.")
        text = inputs.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"`text` must be a non-empty string, got {reprlib.repr(text)}.")
        names = [key for key in ("subject", "object") if key in inputs]
        if "entity_spans" in inputs:
            if names:
                raise ValueError(f"Give either `entity_spans` or `subject` and `object`, not both (got {names} too).")
            entities = {"entity_spans": inputs["entity_spans"]}
        elif len(names) == 2:
            entities = {"entities": (inputs["subject"], inputs["object"])}
        else:
            missing = [key for key in ("subject", "object") if key not in inputs]
            raise ValueError(
                f"Missing {missing}: give `subject` and `object` (strings in the text), or `entity_spans`."
            )
        if inputs.get("image") is None:
            raise ValueError("Missing `image`: HVFormer reads the post's image.")
        image = decode_image(inputs["image"], "image", self.allow_image_paths)
        crops = inputs.get("object_crops")
        if crops is not None:
            if not isinstance(crops, (list, tuple)):
                raise ValueError(f"`object_crops` must be a list of images, got {type(crops).__name__}.")
            crops = [decode_image(crop, f"object_crops[{i}]", self.allow_image_paths) for i, crop in enumerate(crops)]
        model_inputs = self.processor(
            text=text,
            images=image,
            object_crops=crops,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
            max_text_length=self.max_text_length,
            max_image_pixels=self.max_image_pixels,
            **entities,
        )
        subject, obj = self.processor.entity_texts(text, **entities)[0]
        # Padded to `max_length`, so batches need no padding and `marker_positions` stay valid.
        return {**model_inputs, "entities": [[subject, obj]]}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        entities = model_inputs.pop("entities")
        outputs = self.model(**model_inputs)  # the default path: fusion at <s> and <o> only
        result = {"logits": outputs.logits, "entities": entities}
        if outputs.marker_expert_weights is not None:
            result["marker_expert_weights"] = outputs.marker_expert_weights
        return result

    def postprocess(
        self, model_outputs: dict[str, Any], top_k: int = 1, return_expert_weights: bool = False
    ) -> list[dict[str, Any]] | dict[str, Any]:
        config = self.model.config
        probabilities = model_outputs["logits"][0].float().softmax(dim=-1)
        scores, ids = probabilities.topk(min(top_k, probabilities.numel()))
        relations = [
            {"label": config.id2label[int(index)], "score": float(score)}
            for score, index in zip(scores.tolist(), ids.tolist(), strict=True)
        ]
        if not return_expert_weights:
            return relations
        subject, obj = model_outputs["entities"][0]
        weights = np.asarray(model_outputs["marker_expert_weights"][0].float())
        return {
            "relations": relations,
            "subject": subject,
            "object": obj,
            "expert_weights": {
                role: dict(zip(config.expert_names, map(float, row), strict=True))
                for role, row in zip(("subject", "object"), weights, strict=True)
            },
        }


__all__ = [
    "CUSTOM_PIPELINES",
    "MAX_IMAGE_PIXELS",
    "MAX_TEXT_LENGTH",
    "PIPELINE_TASK",
    "HVFormerRelationExtractionPipeline",
    "decode_image",
]
