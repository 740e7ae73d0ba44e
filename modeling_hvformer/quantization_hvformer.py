"""Int8 inference on the CPU for HVFormer, as a transformers `quantization_config` (it travels with the model as
remote code).

```python
>>> from transformers import AutoModel, pipeline
>>> int8 = {"quant_method": "hvformer_int8"}
>>> model = AutoModel.from_pretrained("path/or/hub-id", trust_remote_code=True, quantization_config=int8)
>>> extractor = pipeline(
...     "multimodal-relation-extraction", model="path/or/hub-id", trust_remote_code=True,
...     model_kwargs={"quantization_config": int8},
... )
```

The Linear layers of the text encoder (Eq. 2), of the ViT (Eq. 3) and of the experts (TVA and fusion FFN, Eq. 4-6)
become int8 matrix products with int8 weights (one scale per output channel) and activations quantized per call
(torch's dynamic quantization, fbgemm / x86 kernels). Everything else stays float32: the embeddings and the patch
convolution, every layer norm (Eq. 5) and softmax, the router W_g with its softmax (Eq. 9) and the classifier W_r
(Eq. 11), whose outputs are the expert weights and the final scores. Those two are 4 and 23 outputs wide and run on
the two marker rows: under 0.01% of the multiply-adds, so int8 would save nothing there and only add rounding to the
numbers users read. Loading quantizes the float32 weights; an int8 model is not saved (`save_pretrained` refuses it).
"""

from __future__ import annotations

import reprlib
import warnings
from typing import Any

import torch
from torch import nn
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils.quantization_config import QuantizationConfigMixin

QUANT_METHOD = "hvformer_int8"
"""The `quant_method` of HVFormer's int8 `quantization_config`."""

QUANTIZED_MODULES = ("text_encoder", "vision_encoder", "experts")
"""The sub-modules of `HVFormerForRelationExtraction` whose `nn.Linear` layers run in int8."""


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replaces, in place, every `nn.Linear` of `model`'s `QUANTIZED_MODULES` by torch's dynamically quantized int8
    Linear (per-channel int8 weights, activations quantized at each call); returns `model`. CPU only."""
    # torch.ao.quantization is deprecated in favour of torchao (pytorch/ao#2259), whose int8 CPU path needs
    # torch.compile (eager it is 26x slower than float32 on an AVX2 CPU, docs/performance.md). Its quantize_dynamic
    # warns on every call and creates qint8 weight tensors, which warns too: both warnings are for us, not a user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        for name in QUANTIZED_MODULES:
            if getattr(model, name) is not None:  # the text-only baseline has no vision encoder
                quantize_dynamic(
                    getattr(model, name), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
                )
    return model


def check_quantization_config(quantization_config: Any) -> None:
    """Refuses a `quantization_config` dict (a `config.json`'s, or one passed to `from_pretrained` or to the pipeline's
    `model_kwargs`) whose `quant_method` transformers does not know, naming the method and the known ones: for a
    `config.json`, transformers would only log a warning and load the model unquantized. Quantization config objects
    and `None` pass; so does bitsandbytes' older form (`load_in_8bit` / `load_in_4bit` without a `quant_method`)."""
    if not isinstance(quantization_config, dict):
        return
    if quantization_config.get("load_in_8bit") or quantization_config.get("load_in_4bit"):
        return
    method = quantization_config.get("quant_method")
    if isinstance(method, str) and method in AUTO_QUANTIZATION_CONFIG_MAPPING:
        return
    problem = "names no quant_method" if method is None else f"has an unknown quant_method {reprlib.repr(method)}"
    others = ", ".join(sorted(set(AUTO_QUANTIZATION_CONFIG_MAPPING) - {QUANT_METHOD}))
    raise ValueError(
        f"`quantization_config` {problem}: HVFormer's is {QUANT_METHOD!r} (int8 on the CPU); transformers also knows "
        f"{others}."
    )


class HVFormerInt8Config(QuantizationConfigMixin):
    """The `quantization_config` of int8 inference on the CPU (`{"quant_method": "hvformer_int8"}`); no options."""

    def __init__(self, **kwargs: Any) -> None:
        options = sorted(set(kwargs) - {"quant_method"})
        if options:
            raise ValueError(f"`{QUANT_METHOD}` takes no options, got {reprlib.repr(options)}.")
        self.quant_method = QUANT_METHOD


class HVFormerInt8Quantizer(HfQuantizer):
    """Quantizes an HVFormer model with [`quantize_int8`] once its float32 weights are loaded."""

    requires_calibration = False

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        device_map = kwargs.get("device_map")
        devices = set(device_map.values()) if isinstance(device_map, dict) else {device_map}
        if any(device not in (None, "cpu", torch.device("cpu")) for device in devices):
            raise ValueError(f"`{QUANT_METHOD}` runs on the CPU only, got device_map={device_map!r}.")
        if torch.backends.quantized.engine == "none":
            raise ValueError(f"`{QUANT_METHOD}`: this torch build has no quantized CPU engine (fbgemm, x86, qnnpack).")

    def update_dtype(self, dtype: torch.dtype | None) -> torch.dtype:
        if dtype not in (None, torch.float32):
            raise ValueError(f"`{QUANT_METHOD}` loads float32 weights, got dtype={dtype}.")
        return torch.float32

    def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        return quantize_int8(model)

    def is_serializable(self, *args: Any, **kwargs: Any) -> bool:
        return False

    @property
    def is_trainable(self) -> bool:
        return False


# This module may be imported twice in one process (the installed package and a model folder's remote-code copy):
# the first registration stands, as transformers refuses a second one under the same name.
if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
    register_quantization_config(QUANT_METHOD)(HVFormerInt8Config)
if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
    register_quantizer(QUANT_METHOD)(HVFormerInt8Quantizer)

__all__ = [
    "QUANT_METHOD",
    "QUANTIZED_MODULES",
    "HVFormerInt8Config",
    "HVFormerInt8Quantizer",
    "check_quantization_config",
    "quantize_int8",
]
