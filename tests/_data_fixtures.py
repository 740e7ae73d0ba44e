"""Builders shared by the MNRE loading, sample dataset and collator tests: a tiny processor, MNRE lines, copies of
the sample dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tiny_models import CROP_SIZE, IMAGE_SIZE
from transformers import BertTokenizer, ViTImageProcessor, ViTImageProcessorPil
from transformers.utils import is_torchvision_available

from mre_data.sample_data import NAMES, NEUTRAL_TEMPLATES, TEXT_TEMPLATES, build_sample_dataset
from processing.image_processing_hvformer import HVFormerImageProcessor
from processing.processing_hvformer import HVFormerProcessor

MNRE_DIR = Path(__file__).resolve().parents[2] / "shared/data/mnre"
"""The real MNRE text files (train/val), when this checkout sits beside `shared/`."""

NUM_CROPS = 3
SMALL_SIZES = {"train": 20, "val": 8}
"""Split sizes of the small sample copies that tests modify."""

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sample_vocabulary() -> list[str]:
    """Every lower-cased word of the sample dataset's templates and names, after the BERT special tokens."""
    words = set()
    for text in (*NEUTRAL_TEMPLATES, *(t for templates in TEXT_TEMPLATES.values() for t in templates), *NAMES):
        words.update(word.lower() for word in text.split() if word not in ("{A}", "{B}"))
    return _SPECIAL_TOKENS + sorted(words)


def make_processor(
    max_length: int = 80, num_object_crops: int = NUM_CROPS, relation_labels: list[str] | None = None
) -> HVFormerProcessor:
    """The tests' processor: a word-level vocabulary of the sample dataset, the settings of a 32x32 ViT image
    processor (the torchvision backend when available, else the PIL one) and 16x16 crops."""
    vocabulary = {word: index for index, word in enumerate(sample_vocabulary())}
    image_processor_class = ViTImageProcessor if is_torchvision_available() else ViTImageProcessorPil
    image_processor = HVFormerImageProcessor.from_vision_image_processor(
        image_processor_class(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        num_object_crops=num_object_crops,
        object_image_size=CROP_SIZE,
    )
    return HVFormerProcessor(
        image_processor=image_processor,
        tokenizer=BertTokenizer(vocab=vocabulary),
        max_length=max_length,
        relation_labels=relation_labels,
    )


def mnre_line(**overrides: Any) -> dict[str, Any]:
    """A valid MNRE line as a dict; `overrides` replace (or, with the value `...`, delete) fields."""
    line = {
        "token": ["RT", "@news", ":", "Corra", "Vane", "'s", "visit", "to", "Harbor", "Square"],
        "h": {"name": "Corra Vane", "pos": [3, 5]},
        "t": {"name": "Harbor Square", "pos": [8, 10]},
        "img_id": "post_0001.jpg",
        "relation": "/per/misc/present_in",
    }
    line.update(overrides)
    return {key: value for key, value in line.items() if value is not ...}


def write_lines(path: Path, lines: list[Any]) -> Path:
    """Writes MNRE lines: dicts as Python literals (`repr`, single quotes, as MNRE), strings as they are."""
    path.write_text("".join((line if isinstance(line, str) else repr(line)) + "\n" for line in lines))
    return path


def sample_copy(source: Path, destination: Path) -> Path:
    """A private copy of a sample dataset folder, for tests that break files."""
    shutil.copytree(source, destination)
    return destination


def build_small_sample(folder: Path) -> Path:
    """A small sample dataset (20 train / 8 val lines) in `folder`."""
    return build_sample_dataset(folder, seed=1, sizes=SMALL_SIZES)


class DecodeCounter:
    """Wraps `processor.image_processor.load_image` and counts the calls that open a file (PIL images passed
    around aren't counted)."""

    def __init__(self, processor: HVFormerProcessor) -> None:
        self.load_image = processor.image_processor.load_image
        self.paths: list[str] = []

    def __repr__(self) -> str:
        # Set on the image processor, the counter is among the attributes the cache fingerprint reads
        # (`image_processor.to_dict()`, a deep copy): it must read the same on every load, whatever its address.
        return "DecodeCounter()"

    def __call__(self, image: Any, **kwargs: Any) -> Any:
        if isinstance(image, str | os.PathLike):
            self.paths.append(os.fspath(image))
        return self.load_image(image, **kwargs)
