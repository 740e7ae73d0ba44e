"""Tiny random encoders of every supported family saved like Hub checkpoints, for end-to-end runs with no download.

Text encoders carry tokenizers trained here, offline, with the `tokenizers` library on the posts of an MNRE-shaped
folder and wrapped in their transformers class, as the Hub's are:

- BERT: WordPiece (`BertTokenizerFast`, the built-in encoder's vocabulary of the folder's words);
- RoBERTa: byte-level BPE (`RobertaTokenizer`: `Ġ` marks a word's leading space; `<s>` and `</s>` are its own tokens);
- DeBERTa-v2: unigram with the Metaspace `▁` pre-tokenizer (`DebertaV2Tokenizer`, SentencePiece-style, no token
  types).

Vision encoders (12 layers, so that the paper's levels 0, 6, 12 exist) carry their image processor, which makes
112-px images to keep the runs short: DINOv2 (patch 14, a 518-px position table as the Hub's, interpolated to the
8x8 grid; optionally with register tokens) and SigLIP (a full text and vision checkpoint as the Hub's, patch 16, no
[CLS]). None of them has dropout.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    DebertaV2Config,
    DebertaV2Model,
    DebertaV2Tokenizer,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
    SiglipConfig,
    SiglipModel,
)
from transformers.utils import is_torchvision_available

from mre_data.builtin_encoders import save_tiny_text_encoder

IMAGE_SIZE = 112
"""Side of the main images the tiny vision encoders' processors make."""
MAX_POSITIONS = 130
"""Position embeddings of the tiny text encoders (RoBERTa's first two are never used, as roberta-base's)."""
TEXT_WIDTH = 48
"""Width of the tiny text encoders, divisible by the paper's 12 cross-attention heads."""


def mnre_posts(data_dir: Path) -> list[str]:
    """The posts of an MNRE-shaped folder's text files, each its words joined by spaces."""
    return [
        " ".join(ast.literal_eval(line)["token"])
        for text_file in sorted(data_dir.glob("mnre_*.txt"))
        for line in text_file.read_text(encoding="utf-8").splitlines()
    ]


def _text_config_kwargs(vocab_size: int) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": TEXT_WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 2 * TEXT_WIDTH,
        "max_position_embeddings": MAX_POSITIONS,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def save_roberta(folder: Path, posts: list[str]) -> Path:
    """A tiny RoBERTa with a byte-level BPE tokenizer trained on `posts`."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(posts, trainer)
    trained = json.loads(bpe.to_str())["model"]
    tokenizer = RobertaTokenizer(
        vocab=trained["vocab"],
        merges=[tuple(merge) for merge in trained["merges"]],
        model_max_length=MAX_POSITIONS - 2,
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **_text_config_kwargs(len(tokenizer)))
    RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def save_deberta_v2(folder: Path, posts: list[str]) -> Path:
    """A tiny DeBERTa-v2 (relative attention, no token types) with a unigram tokenizer trained on `posts`."""
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=400,
        special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
        unk_token="[UNK]",
        show_progress=False,
    )
    unigram.train_from_iterator(posts, trainer)
    vocab = [tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]]
    tokenizer = DebertaV2Tokenizer(vocab=vocab, model_max_length=MAX_POSITIONS)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = DebertaV2Config(
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=32,
        pos_att_type=["p2c", "c2p"],
        **_text_config_kwargs(len(tokenizer)),
    )
    DebertaV2Model(config).save_pretrained(folder)
    return folder


def save_text_encoder(kind: str, folder: Path, data_dir: Path) -> Path:
    """A tiny text encoder of `kind` (one of `TEXT_KINDS`) whose tokenizer knows `data_dir`'s posts."""
    posts = mnre_posts(data_dir)
    if kind == "bert":
        words = [word for post in posts for word in post.split(" ")]
        return save_tiny_text_encoder(folder, words, hidden_size=TEXT_WIDTH, dropout=0.0)
    return {"roberta": save_roberta, "deberta_v2": save_deberta_v2}[kind](folder, posts)


def _image_processor(name: str, **kwargs):
    """The torchvision image processor `name` when torchvision imports, else its PIL twin."""
    return getattr(transformers, name if is_torchvision_available() else f"{name}Pil")(**kwargs)


def save_vision_encoder(kind: str, folder: Path) -> Path:
    """A tiny 12-layer vision encoder of `kind` (one of `VISION_KINDS`) with its image processor."""
    torch.manual_seed(0)
    common = {"hidden_size": 32, "num_hidden_layers": 12, "num_attention_heads": 4}
    if kind in ("dinov2", "dinov2_with_registers"):
        # As facebook/dinov2-*: positions for 518-px images (37x37 patches of 14 px), read at IMAGE_SIZE.
        if kind == "dinov2":
            model = Dinov2Model(Dinov2Config(image_size=518, patch_size=14, mlp_ratio=2, **common))
        else:
            config = Dinov2WithRegistersConfig(
                image_size=518, patch_size=14, mlp_ratio=2, num_register_tokens=4, **common
            )
            model = Dinov2WithRegistersModel(config)
        processor = _image_processor(
            "BitImageProcessor",
            size={"shortest_edge": IMAGE_SIZE + 16},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            do_center_crop=True,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
    else:
        # As google/siglip-base-patch16-224: a full (text and vision) checkpoint.
        vision_config = {"image_size": IMAGE_SIZE, "patch_size": 16, "intermediate_size": 64, **common}
        text_config = {
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
        }
        model = SiglipModel(SiglipConfig(text_config=text_config, vision_config=vision_config))
        processor = _image_processor("SiglipImageProcessor", size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
