"""Hugging Face Inference Endpoints handler for HVFormer (copied into every saved model folder as `handler.py`).

Request (JSON):

```json
{"inputs": {"text": "Obama and Merkel at the G7", "subject": "Obama", "object": "Merkel", "image": "<base64>"},
 "parameters": {"top_k": 3, "return_expert_weights": true}}
```

`inputs` holds the keys of the `multimodal-relation-extraction` pipeline (or is a list of such dicts), with images
(`image`, `object_crops`) as base64 strings. The response is the pipeline's JSON-serialisable output, or
`{"error": "..."}` naming the problem (and the input of a list, `inputs[2]: ...`) in at most `MAX_ERROR_LENGTH`
characters; never a traceback. The pipeline's limits apply with their defaults: the images of one input may hold
`MAX_IMAGE_PIXELS` pixels together (counted from their headers before any is decoded), a text `MAX_TEXT_LENGTH`
characters (both in `pipeline_hvformer.py`).

The environment variable `HVFORMER_QUANTIZE=int8` (an endpoint's or Space's settings) serves the model in int8 on the
CPU: `quantization_hvformer.py` quantizes it while it loads.

This file imports nothing from the model folder: it builds the pipeline that the folder's `config.json` registers.
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

import torch
from transformers import pipeline

TASK = "multimodal-relation-extraction"
PARAMETERS = ("top_k", "return_expert_weights")
"""The `parameters` a request may set."""
MAX_ERROR_LENGTH = 400
"""The most characters of an error answer."""


def shorten_error(message: str) -> str:
    """`message` cut to `MAX_ERROR_LENGTH` characters."""
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 3] + "..."


QUANTIZE_ENV = "HVFORMER_QUANTIZE"
QUANTIZATION_CONFIGS = {"int8": {"quant_method": "hvformer_int8"}}
"""The values of `$HVFORMER_QUANTIZE` and the `quantization_config` (of `quantization_hvformer.py`) each loads the
model with; unset, the model runs as saved."""


def quantization_config_from_env() -> dict[str, str] | None:
    """The `quantization_config` that `$HVFORMER_QUANTIZE` asks for, `None` when it is unset or empty; a `ValueError`
    for any other value."""
    quantize = os.environ.get(QUANTIZE_ENV, "")
    if quantize and quantize not in QUANTIZATION_CONFIGS:
        raise ValueError(
            f"{QUANTIZE_ENV}={quantize[:40]!r}: set it to one of {list(QUANTIZATION_CONFIGS)} or unset it."
        )
    return QUANTIZATION_CONFIGS.get(quantize)


class EndpointHandler:
    r"""
    Answers Inference Endpoints requests with the model's `multimodal-relation-extraction` pipeline, on the first GPU
    when there is one; with `HVFORMER_QUANTIZE=int8`, in int8 on the CPU (GPU or not).

    Args:
        path (`str`, *optional*, defaults to `""`):
            The model folder (weights, configuration, processor and remote code).
    """

    def __init__(self, path: str = "") -> None:
        quantization_config = quantization_config_from_env()
        self.pipeline = pipeline(
            TASK,
            model=path or ".",
            trust_remote_code=True,
            device=0 if torch.cuda.is_available() and quantization_config is None else -1,
            model_kwargs={} if quantization_config is None else {"quantization_config": quantization_config},
            allow_image_paths=False,
        )

    def __call__(self, data: Any) -> list[Any] | dict[str, Any]:
        """Runs one request; returns the relations (see the pipeline) or `{"error": message}`."""
        try:
            inputs, parameters = self._parse(data)
            if not isinstance(inputs, list):
                return self.pipeline(inputs, **parameters)
            answers = []
            for index, post in enumerate(inputs):
                try:
                    answers.append(self.pipeline(post, **parameters))
                except ValueError as error:
                    raise ValueError(f"inputs[{index}]: {error}") from error
            return answers
        except (ValueError, TypeError, KeyError) as error:
            return {"error": shorten_error(str(error))}
        except Exception as error:  # a service boundary: the client gets a message, never a traceback
            return {"error": shorten_error(f"{type(error).__name__} while predicting: {error}")}

    @staticmethod
    def _parse(data: Any) -> tuple[Any, dict[str, Any]]:
        """Checks the request's shape and returns the pipeline inputs and parameters."""
        if not isinstance(data, dict):
            raise ValueError(f"The request must be a JSON object with `inputs`, got {type(data).__name__}.")
        unknown = sorted(set(data) - {"inputs", "parameters"}, key=str)
        if unknown:
            raise ValueError(
                f"Unknown request keys {reprlib.repr(unknown)}; a request has `inputs` and optional `parameters`."
            )
        if "inputs" not in data:
            raise ValueError("The request has no `inputs`.")
        inputs = data["inputs"]
        samples = inputs if isinstance(inputs, list) else [inputs]
        if not samples or not all(isinstance(sample, dict) for sample in samples):
            raise ValueError("`inputs` must be an object with `text`, `subject`, `object`, `image` or a list of them.")
        for index, sample in enumerate(samples):
            where = f"inputs[{index}]" if isinstance(inputs, list) else "inputs"
            for field in ("image", "object_crops"):
                images = sample.get(field)
                images = images if isinstance(images, list) or images is None else [images]
                if images is not None and not all(isinstance(image, str) for image in images):
                    raise ValueError(f"`{where}.{field}` must hold base64-encoded images (strings).")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f"`parameters` must be a JSON object, got {type(parameters).__name__}.")
        unknown = sorted(set(parameters) - set(PARAMETERS), key=str)
        if unknown:
            raise ValueError(f"Unknown parameters {reprlib.repr(unknown)}; the parameters are {list(PARAMETERS)}.")
        return inputs, parameters
