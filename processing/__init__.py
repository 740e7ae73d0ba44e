"""Turning posts into model inputs: the processor (tokenizer with entity markers + image processor), MNRE reading and
caching, collation, and the built-in sample with its encoders. Only the processor is imported here; the other modules
are imported by name.

The processor is a remote-code unit: `processing_hvformer.py` with its siblings `entity_search.py`,
`entity_marking.py`, `image_loading.py`, `image_files.py` and `saved_processor.py` travel to the Hub together."""

from .processing_hvformer import HVFormerProcessor

__all__ = ["HVFormerProcessor"]
