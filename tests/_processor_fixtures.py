"""Builders shared by the processor, image processor, pipeline and model tests: a tiny WordPiece tokenizer, the
image processors of CLIP and ViT at 32 pixels, an `HVFormerProcessor` over them, and a model config it matches."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import transformers
from PIL import Image
from tiny_models import CROP_SIZE, IMAGE_SIZE, tiny_config, tiny_text_config
from transformers import BertTokenizer
from transformers.utils import is_torchvision_available

from processing.processing_hvformer import HVFormerProcessor

RELATIONS = ["None", "/per/loc/place_of_residence", "/org/org/subsidiary"]


VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(string.ascii_lowercase + string.digits + string.punctuation)
    + ["##" + char for char in string.ascii_lowercase + string.digits]
    + ["barack", "obama", "visited", "paris", "the", "in", "of"]
)
IMAGE_PROCESSORS = ["clip", "vit"] + (["clip-torchvision", "vit-torchvision"] if is_torchvision_available() else [])


def tiny_tokenizer(tmp_path_factory, **kwargs) -> BertTokenizer:
    """An uncased WordPiece tokenizer on a 116-entry vocabulary: one-character words are one piece each."""
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(vocab=str(vocab_file), **kwargs)


def image_processor(kind: str = "clip"):
    """A 32-pixel CLIP or ViT image processor, with the PIL backend unless `kind` ends with `-torchvision`."""
    backend = "" if kind.endswith("-torchvision") else "Pil"
    if kind.startswith("clip"):
        return getattr(transformers, f"CLIPImageProcessor{backend}")(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
    return getattr(transformers, f"ViTImageProcessor{backend}")(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def build(tmp_path_factory, kind: str = "clip", **kwargs) -> HVFormerProcessor:
    kwargs = {"object_image_size": CROP_SIZE, "relation_labels": RELATIONS, **kwargs}
    return HVFormerProcessor(image_processor(kind), tiny_tokenizer(tmp_path_factory), **kwargs)


def save_image_processor(processor, folder: Path) -> str:
    processor.save_pretrained(folder)
    return str(folder)


def random_image(rng: np.random.Generator, width: int = 20, height: int = 12) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def matching_config(processor: HVFormerProcessor, **overrides):
    """A tiny HVFormer config that `processor` matches: vocabulary, marker ids, labels, crops, positions and pixel
    statistics."""
    text_config = tiny_text_config()
    text_config.vocab_size = len(processor.tokenizer)
    text_config.max_position_embeddings = 128
    kwargs = {
        "text_config": text_config,
        "entity_marker_token_ids": processor.marker_token_ids(),
        "id2label": dict(enumerate(processor.relation_labels)),
        "num_object_crops": processor.num_object_crops,
        "object_image_size": processor.object_image_size,
        **processor.pixel_statistics(),
    }
    return tiny_config(**{**kwargs, **overrides})
