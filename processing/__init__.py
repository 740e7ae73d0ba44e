"""Turning posts into model inputs: the processor (tokenizer with entity markers + image processor) and its
siblings, the unit that travels to the Hub with a model: `processing_hvformer.py` and `image_processing_hvformer.py`
with `entity_search.py`, `entity_marking.py`, `image_loading.py`, `image_files.py`, `sample_errors.py` and
`saved_processor.py`. Datasets of posts live in `mre_data/`."""

from .image_processing_hvformer import HVFormerImageProcessor
from .processing_hvformer import HVFormerProcessor

__all__ = ["HVFormerImageProcessor", "HVFormerProcessor"]
