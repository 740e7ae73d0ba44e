"""An MNRE-shaped folder laid out like the real download, and tiny local encoders to stand in for the paper's.

[`write_mnre_folder`] writes::

    root/
        mnre_{train,val,test}.txt        MNRE's line format (Python dict literals, MNRE v2 relation labels)
        img_org/{split}/<img_id>.jpg     photo-like JPEGs: gradients and noise, several sizes and aspect ratios
        img_vg/{split}/crops/<crop>.jpg  visual-grounding crops cut from the photos
        mre_{split}_dict.{pth,json}      which crops belong to which line (by line index, as the reference code);
                                         `.pth` for train and test, `.json` (the reference `dev` name) for val;
                                         some posts have no crops, some fewer than three

[`save_tiny_encoders`] saves a tiny BERT (WordPiece vocabulary of the folder's words, width 48 so that the paper's 12
cross-attention heads divide it) and a tiny 12-layer CLIP vision tower with a 224-px CLIP image processor (patch 32,
as CLIP ViT-B/32), so the paper's config runs unchanged but for the two encoder paths. Neither has dropout, so that
runs with the same data order give the same model whatever the number of processes.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
)
from transformers.utils import is_torchvision_available

from modeling_hvformer import MNRE_RELATIONS
from mre_data.builtin_encoders import save_tiny_text_encoder

DEFAULT_SPLIT_SIZES = {"train": 48, "val": 24, "test": 24}
IMAGE_SHAPES = [(320, 240), (240, 320), (400, 300), (256, 256), (500, 200)]
"""(width, height) of the photos: landscape, portrait, square and a wide panorama."""
FIRST_NAMES = ["Corra", "Tamsin", "Olek", "Bryn", "Idris", "Maelle", "Suvi", "Anselm"]
LAST_NAMES = ["Vane", "Holt", "Marrow", "Quill", "Dunmore", "Ashby"]
PLACES = ["Harbor Square", "Kestrel Bay", "Old Mill", "North Quay", "Elm Park"]
FILLER = ["at", "with", "and", "the", "today", "great", "night", "visit", "#weekend", "via", "photo", "!"]
MAPPING_FORMATS = {"train": ".pth", "val": ".json", "test": ".pth"}


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like RGB picture: a random two-colour gradient, a bright blob and pixel noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = (x / width * rng.uniform(0.3, 1.0) + y / height * rng.uniform(0.3, 1.0))[..., None] / 2
    pixels = start + (end - start) * ramp
    cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 80)
    pixels += 90 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
    pixels += rng.normal(0, 18, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _post(rng: random.Random) -> tuple[list[str], dict, dict]:
    """Words of a post and its subject and object entities (`pos` a `[start, end)` word range)."""
    subject = [rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)]
    obj = rng.choice(PLACES).split() if rng.random() < 0.5 else [rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)]
    pieces = [
        ["RT", f"@{rng.choice(LAST_NAMES).lower()}", ":"] if rng.random() < 0.5 else [],
        subject,
        rng.sample(FILLER, rng.randint(1, 4)),
        obj,
        rng.sample(FILLER, rng.randint(0, 3)),
    ]
    if rng.random() < 0.3:  # the object first
        pieces[1], pieces[3] = pieces[3], pieces[1]
    words, spans = [], []
    for piece in pieces:
        spans.append([len(words), len(words) + len(piece)])
        words += piece
    subject_span, object_span = (spans[1], spans[3]) if pieces[1] is subject else (spans[3], spans[1])
    return (
        words,
        {"name": " ".join(subject), "pos": subject_span},
        {"name": " ".join(obj), "pos": object_span},
    )


def write_mnre_folder(root: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Writes an MNRE-shaped folder (see the module docstring) with `sizes` posts per split; returns `root`."""
    sizes = sizes or DEFAULT_SPLIT_SIZES
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    relations = list(MNRE_RELATIONS)
    for split, size in sizes.items():
        images, crops = root / "img_org" / split, root / "img_vg" / split / "crops"
        images.mkdir(parents=True)
        crops.mkdir(parents=True)
        lines, mapping = [], {}
        for index in range(size):
            words, subject, obj = _post(rng)
            img_id = f"post_{split}_{index:04d}.jpg"
            width, height = IMAGE_SHAPES[index % len(IMAGE_SHAPES)]
            picture = photo(np_rng, width, height)
            picture.save(images / img_id, format="JPEG", quality=85)
            relation = relations[0] if index % 3 == 0 else relations[1 + index % (len(relations) - 1)]
            lines.append({"token": words, "h": subject, "t": obj, "img_id": img_id, "relation": relation})
            num_crops = index % 5  # 0 (no crops) to 4 (one more than the model takes)
            names = []
            for crop_index in range(num_crops):
                left, top = rng.randint(0, width // 2), rng.randint(0, height // 2)
                box = (left, top, left + rng.randint(24, width // 2), top + rng.randint(24, height // 2))
                name = f"{Path(img_id).stem}_crop{crop_index}.jpg"
                picture.crop(box).save(crops / name, format="JPEG", quality=85)
                names.append(name)
            if names:
                mapping[index] = names
        (root / f"mnre_{split}.txt").write_text("".join(repr(line) + "\n" for line in lines), encoding="utf-8")
        suffix = MAPPING_FORMATS.get(split, ".json")
        if suffix == ".pth":
            torch.save(mapping, root / f"mre_{split}_dict.pth")
        else:
            stem = "mre_dev_dict" if split == "val" else f"mre_{split}_dict"
            (root / f"{stem}.json").write_text(json.dumps({str(key): value for key, value in mapping.items()}))
    return root


def save_tiny_encoders(folder: Path, data_dir: Path) -> tuple[Path, Path]:
    """Saves a tiny text encoder (vocabulary of `data_dir`'s words) and a tiny CLIP vision encoder with a 224-px
    image processor under `folder`; returns their two paths."""
    words = [
        word
        for text_file in sorted(data_dir.glob("mnre_*.txt"))
        for line in text_file.read_text(encoding="utf-8").splitlines()
        for word in ast.literal_eval(line)["token"]
    ]
    text_dir = save_tiny_text_encoder(folder / "text", words, hidden_size=48, dropout=0.0)
    vision_dir = folder / "vision"
    # CLIPVisionConfig's defaults are ViT-B/32's image size, patch size and 12 layers (levels 0, 6, 12 exist).
    vision_config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4)
    CLIPVisionModel(vision_config).save_pretrained(vision_dir)
    image_processor_class = CLIPImageProcessor if is_torchvision_available() else CLIPImageProcessorPil
    image_processor_class(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        vision_dir
    )
    return text_dir, vision_dir
