"""Tiny random encoders saved as pretrained folders, for runs that need no download: the built-in sample's default
encoders (`--text_model_name_or_path builtin`, `--vision_model_name_or_path builtin`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, ViTConfig, ViTImageProcessorPil, ViTModel

from training.run_files import atomic_folder, folder_problem

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
"""The encoder name that selects these encoders."""
BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "text": "the built-in tiny random BERT (no pretraining)",
    "vision": "the built-in tiny random ViT (no pretraining)",
}
"""How a model card names the built-in encoders."""
BUILTIN_VISION_DEFAULTS: dict[str, int] = {"object_image_size": 16}
"""What the built-in 32-px ViT (patch 8) needs instead of the config's default: crops of 2x2 patches."""
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEXT_ENCODER_FILES: tuple[str, ...] = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
VISION_ENCODER_FILES: tuple[str, ...] = ("config.json", "model.safetensors", "preprocessor_config.json")
"""The files of a saved built-in encoder (each JSON file and the weights are checked before it is reused)."""


def wordpiece_vocabulary(words: Iterable[str]) -> dict[str, int]:
    """A lower-cased WordPiece vocabulary holding `words` whole and every character of them (alone and as `##c`), so
    any word made of those characters encodes without `[UNK]`."""
    whole = {word.lower() for word in words}
    characters = {character for word in whole for character in word}
    pieces = sorted(whole | characters) + sorted(f"##{character}" for character in characters)
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *pieces])}


def save_tiny_text_encoder(
    folder: str | os.PathLike, words: Iterable[str], hidden_size: int = 64, dropout: float = 0.1
) -> Path:
    """Saves a random 2-layer BERT (4 heads, 128 positions) with the [`wordpiece_vocabulary`] of `words`."""
    folder = Path(folder)
    vocab = wordpiece_vocabulary(words)
    BertTokenizerFast(vocab=vocab).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def _reusable(folder: Path, required: tuple[str, ...]) -> bool:
    """Whether `folder` holds a complete built-in encoder; one that is there but damaged (a truncated
    `model.safetensors`, a JSON file cut short) is reported with a warning naming the file, to be built again."""
    if not folder.exists():
        return False
    problem = folder_problem(folder, required)
    if problem is not None:
        logger.warning("%s: building the built-in encoder again", problem)
    return problem is None


def build_builtin_text_encoder(folder: str | os.PathLike, words: Callable[[], Iterable[str]]) -> Path:
    """The built-in text encoder: a tiny random BERT whose vocabulary covers `words()` (the words of the run's
    dataset, read only when the encoder is built); reused when `folder` already holds it whole, else written whole and
    renamed into place."""
    folder = Path(folder)
    if _reusable(folder, TEXT_ENCODER_FILES):
        return folder
    with atomic_folder(folder) as partial:
        save_tiny_text_encoder(partial, words())
    return folder


def build_builtin_vision_encoder(folder: str | os.PathLike) -> Path:
    """The built-in vision encoder: a tiny random 2-layer ViT on 32x32 images (patch 8) with its PIL image processor
    (the same pixels on every machine); reused when `folder` already holds it whole, else written whole and renamed
    into place."""
    folder = Path(folder)
    if _reusable(folder, VISION_ENCODER_FILES):
        return folder
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    with atomic_folder(folder) as partial:
        ViTModel(config, add_pooling_layer=False).save_pretrained(partial)
        ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(partial)
    return folder
