"""Processing for HVFormer: the processor (tokenizer with entity markers + image processor), MNRE reading, collation,
the metric and the built-in sample. Only the processor is imported here; the other modules are imported by name."""

from .processing_hvformer import HVFormerProcessor

__all__ = ["HVFormerProcessor"]
