"""The built-in sample dataset: a small MNRE-format dataset drawn by code, for tests, examples and smoke runs.

[`build_sample_dataset`] writes, deterministically for a seed, the layout [`load_mnre`] reads::

    output_dir/
        mnre_{train,val,test}.txt       MNRE lines, plus a `kind` field
        mre_{train,val,test}_dict.json  object crops, keyed by line index (as the reference code's `.pth` files)
        img_org/{split}/<img_id>.jpg    the pictures
        img_vg/{split}/crops/<crop>.jpg object crops (0 to 4 per example, cut from the picture)
        sample_info.json                what was generated (written last: marks a complete folder)

Relations are real MNRE labels: [`SAMPLE_RELATIONS`] plus `None`. Every example has one of three kinds:

- `"image"`: only the picture tells the relation. The sentence comes from [`NEUTRAL_TEMPLATES`] (no trigger word)
  and every such sentence appears once with each of the four relations, each with its own picture. The picture's
  background is the relation's colour ([`RELATION_COLOURS`]: red, green, blue, yellow), jittered per picture, with
  pixel noise and a few small grey shapes on top: a coarse, image-wide signal that a tiny randomly initialised ViT
  (32x32 input, patch 8) picks up in a few epochs.
- `"text"`: trigger words of the relation ([`TEXT_TEMPLATES`]) tell it; the picture is neutral (a grey background
  with small shapes of random colours).
- `"none"`: relation `None`, a neutral sentence and a neutral picture.

Entity names come from one pool of invented names, whatever the relation, so names carry no signal.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import reprlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SAMPLE_RELATIONS: tuple[str, ...] = (
    "/per/per/peer",
    "/per/org/member_of",
    "/per/loc/place_of_residence",
    "/misc/misc/part_of",
)
"""The relations of the sample dataset besides `None`."""

SAMPLE_KINDS: tuple[str, ...] = ("image", "text", "none")

DEFAULT_SIZES: dict[str, int] = {"train": 300, "val": 100, "test": 100}

KIND_FRACTIONS: dict[str, float] = {"image": 0.4, "text": 0.4, "none": 0.2}
"""Share of each kind in a split (the `image` count is rounded to a multiple of the number of relations)."""

RELATION_COLOURS: dict[str, tuple[int, int, int]] = {
    "/per/per/peer": (220, 40, 40),
    "/per/org/member_of": (40, 190, 70),
    "/per/loc/place_of_residence": (50, 70, 220),
    "/misc/misc/part_of": (235, 205, 40),
}
"""Background colour of the pictures of `image`-kind examples, per relation."""

NEUTRAL_TEMPLATES: tuple[str, ...] = (
    "{A} and {B} in one picture today .",
    "Photo : {A} with {B}",
    "{B} , {A} , this afternoon",
    "Look at {A} next to {B} !",
    "RT @news : {A} seen with {B} # photo",
    "{A} posted a picture featuring {B}",
)
"""Sentences without a trigger word (`{A}` subject, `{B}` object), for the `image` and `none` kinds."""

TEXT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "/per/per/peer": (
        "{A} and {B} are teammates again .",
        "{A} played alongside teammate {B}",
        "Colleagues {A} and {B} talked to reporters .",
    ),
    "/per/org/member_of": (
        "{A} joined {B} as a member .",
        "{A} , member of {B} , spoke today",
        "{B} welcomes new member {A}",
    ),
    "/per/loc/place_of_residence": (
        "{A} lives in {B} now .",
        "{A} , a resident of {B} , said hello",
        "Home sweet home : {A} moved to {B}",
    ),
    "/misc/misc/part_of": (
        "{A} is part of {B} .",
        "{B} includes {A} as one section",
        "{A} , a division within {B}",
    ),
}
"""Sentences with the trigger words of each relation, for the `text` kind."""

NAMES: tuple[str, ...] = (
    "Alden",
    "Brisk",
    "Corra Vane",
    "Dalby",
    "Elvan Moor",
    "Fenwick",
    "Garo",
    "Hollis Dean",
    "Istra",
    "Jorvik",
    "Kelda",
    "Lomax Reed",
    "Marrow",
    "Nolan Pike",
    "Orrin",
    "Pella",
    "Quillon",
    "Rasmus Toft",
    "Sorrel",
    "Tamsin Hale",
    "Ulric",
    "Vesna",
    "Wendel Cray",
    "Yarrow",
)
"""Invented entity names (one or two words), shared by all relations."""

_CROP_COUNT_WEIGHTS = (0.15, 0.15, 0.2, 0.35, 0.15)  # probability of 0, 1, 2, 3, 4 crops
_JPEG_QUALITY = 90
_INFO_FILE = "sample_info.json"
SAMPLE_DATASET_NAME = "hvformer built-in sample"
"""How runs, exports and model cards name the built-in sample dataset."""


def default_sample_dir(seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """`$HVFORMER_HOME/sample-seed{seed}[-{split}{size}...]` (`HVFORMER_HOME` defaults to `~/.cache/hvformer`)."""
    home = Path(os.environ.get("HVFORMER_HOME", "~/.cache/hvformer")).expanduser()
    name = f"sample-seed{seed}"
    if sizes is not None and sizes != DEFAULT_SIZES:
        name += "-" + "-".join(f"{split}{size}" for split, size in sizes.items())
    return home / name


def _fill(template: str, subject: str, obj: str) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Word list of a template with the entity names in, and the `h` and `t` entries with their spans."""
    tokens: list[str] = []
    entities: dict[str, dict[str, Any]] = {}
    for word in template.split():
        if word in ("{A}", "{B}"):
            name = subject if word == "{A}" else obj
            entities[word] = {"name": name, "pos": [len(tokens), len(tokens) + len(name.split())]}
            tokens.extend(name.split())
        else:
            tokens.append(word)
    return tokens, entities["{A}"], entities["{B}"]


def _draw_picture(rng: np.random.Generator, relation: str | None) -> Image.Image:
    """A picture whose background is the relation's colour (jittered), or grey when `relation` is `None`."""
    width, height = int(rng.integers(48, 81)), int(rng.integers(40, 73))
    if relation is None:
        background = np.full(3, rng.integers(100, 161)) + rng.integers(-8, 9, size=3)
    else:
        background = np.array(RELATION_COLOURS[relation]) + rng.integers(-20, 21, size=3)
    pixels = background + rng.normal(0.0, 10.0, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 5))):
        shape_width = int(rng.integers(width // 10, width // 4 + 1))
        shape_height = int(rng.integers(height // 10, height // 4 + 1))
        left, top = int(rng.integers(0, width - shape_width)), int(rng.integers(0, height - shape_height))
        if relation is None:
            fill = tuple(int(value) for value in rng.integers(0, 256, size=3))
        else:
            fill = (int(rng.integers(60, 200)),) * 3
        box = (left, top, left + shape_width, top + shape_height)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def _cut_crops(rng: np.random.Generator, image: Image.Image) -> list[Image.Image]:
    """0 to 4 sub-images of the picture, as a visual-grounding tool would return."""
    crops = []
    for _ in range(int(rng.choice(len(_CROP_COUNT_WEIGHTS), p=_CROP_COUNT_WEIGHTS))):
        crop_width = int(rng.integers(image.width * 3 // 10, image.width * 6 // 10 + 1))
        crop_height = int(rng.integers(image.height * 3 // 10, image.height * 6 // 10 + 1))
        left = int(rng.integers(0, image.width - crop_width + 1))
        top = int(rng.integers(0, image.height - crop_height + 1))
        crops.append(image.crop((left, top, left + crop_width, top + crop_height)))
    return crops


def _split_examples(rng: random.Random, size: int) -> list[dict[str, Any]]:
    """The examples of one split, shuffled: template, entity names, relation and kind of each."""
    num_relations = len(SAMPLE_RELATIONS)
    num_image = round(size * KIND_FRACTIONS["image"] / num_relations) * num_relations
    num_none = round(size * KIND_FRACTIONS["none"])
    num_text = size - num_image - num_none
    num_sentences = num_image // num_relations
    if num_text < 0 or num_sentences > len(NEUTRAL_TEMPLATES) * len(NAMES) * (len(NAMES) - 1):
        raise ValueError(f"split size {size} is outside what the sample dataset can generate")

    def pair() -> tuple[str, str]:
        subject, obj = rng.sample(NAMES, 2)
        return subject, obj

    examples = []
    sentences: set[tuple[str, tuple[str, str]]] = set()
    while len(sentences) < num_sentences:  # distinct sentences, each with every relation
        sentence = (rng.choice(NEUTRAL_TEMPLATES), pair())
        if sentence not in sentences:
            sentences.add(sentence)
            for relation in SAMPLE_RELATIONS:
                examples.append({"template": sentence[0], "names": sentence[1], "relation": relation, "kind": "image"})
    for _ in range(num_text):
        relation = rng.choice(SAMPLE_RELATIONS)
        examples.append(
            {"template": rng.choice(TEXT_TEMPLATES[relation]), "names": pair(), "relation": relation, "kind": "text"}
        )
    for _ in range(num_none):
        examples.append(
            {"template": rng.choice(NEUTRAL_TEMPLATES), "names": pair(), "relation": "None", "kind": "none"}
        )
    rng.shuffle(examples)
    return examples


def _write_split(output_dir: Path, split: str, size: int, seed: int) -> dict[str, int]:
    split_seed = int.from_bytes(hashlib.sha256(f"{seed}-{split}".encode()).digest()[:8], "little")
    rng = random.Random(split_seed)
    pixel_rng = np.random.default_rng(split_seed)
    image_dir = output_dir / "img_org" / split
    crops_dir = output_dir / "img_vg" / split / "crops"
    image_dir.mkdir(parents=True)
    crops_dir.mkdir(parents=True)

    lines, crops_mapping = [], {}
    examples = _split_examples(rng, size)
    for line_index, example in enumerate(examples):
        tokens, head, tail = _fill(example["template"], *example["names"])
        img_id = f"sample_{split}_{line_index:04d}.jpg"
        picture = _draw_picture(pixel_rng, example["relation"] if example["kind"] == "image" else None)
        picture.save(image_dir / img_id, format="JPEG", quality=_JPEG_QUALITY)
        crop_names = []
        for crop_index, crop in enumerate(_cut_crops(pixel_rng, picture)):
            crop_names.append(f"{Path(img_id).stem}_crop{crop_index}.jpg")
            crop.save(crops_dir / crop_names[-1], format="JPEG", quality=_JPEG_QUALITY)
        if crop_names:
            crops_mapping[str(line_index)] = crop_names
        line = {
            "token": tokens,
            "h": head,
            "t": tail,
            "img_id": img_id,
            "relation": example["relation"],
            "kind": example["kind"],
        }
        lines.append(repr(line))  # a Python dict literal, like MNRE's lines
    (output_dir / f"mnre_{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (output_dir / f"mre_{split}_dict.json").write_text(json.dumps(crops_mapping) + "\n", encoding="utf-8")
    return {kind: sum(example["kind"] == kind for example in examples) for kind in SAMPLE_KINDS}


def _info(seed: int, sizes: dict[str, int]) -> dict[str, Any]:
    """What a complete folder's `sample_info.json` must say; `generator` follows any change of this file."""
    return {
        "generator": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
        "seed": seed,
        "sizes": dict(sizes),
        "relations": ["None", *SAMPLE_RELATIONS],
    }


def _is_complete(folder: Path, expected: dict[str, Any]) -> bool:
    try:
        info = json.loads((folder / _INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return {key: info.get(key) for key in expected} == expected


def declared_relations(folder: str | os.PathLike) -> list[str] | None:
    """The relation labels, in id order, that the `sample_info.json` of a sample dataset folder declares (`None`
    first, then [`SAMPLE_RELATIONS`]); `None` for a folder without that file.

    Raises:
        `ValueError`: the file is there but holds no list of distinct relation names (the message names the file).
    """
    path = Path(folder) / _INFO_FILE
    if not path.is_file():
        return None
    try:
        relations = json.loads(path.read_text(encoding="utf-8")).get("relations")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path}: not a JSON object ({type(error).__name__}: {error})") from None
    valid = isinstance(relations, list) and all(isinstance(name, str) and name for name in relations)
    if not (valid and relations and len(set(relations)) == len(relations)):
        shown = reprlib.repr(relations)
        raise ValueError(f"{path}: 'relations' must be a list of distinct relation names, got {shown}")
    return relations


def build_sample_dataset(
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    overwrite: bool = False,
) -> Path:
    """
    Writes the sample dataset (see the module docstring) unless a complete copy for the same settings is there.

    Args:
        output_dir (`str` or `os.PathLike`, *optional*):
            Where to write; defaults to [`default_sample_dir`]`(seed, sizes)`.
        seed (`int`, *optional*, defaults to 0):
            Everything generated (sentences, pictures, crops, their JPEG bytes) is a function of the seed; each
            split has its own random stream, so changing one split's size leaves the others unchanged.
        sizes (`dict[str, int]`, *optional*, defaults to `{"train": 300, "val": 100, "test": 100}`):
            Examples per split.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing, non-empty `output_dir` that holds something else than a sample dataset. Without it
            such a folder raises `FileExistsError`. A sample dataset of other settings, or one written by another
            version of this file, is always replaced.

    Returns:
        `Path`: the folder, for `load_mnre(path, processor)`.
    """
    sizes = dict(sizes) if sizes is not None else dict(DEFAULT_SIZES)
    owned = output_dir is None
    output_dir = Path(output_dir) if output_dir is not None else default_sample_dir(seed, sizes)
    expected = _info(seed, sizes)
    if _is_complete(output_dir, expected):
        return output_dir
    foreign = output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / _INFO_FILE).is_file()
    if foreign and not (owned or overwrite):
        raise FileExistsError(f"{output_dir} is not empty and holds no sample dataset; pass overwrite=True")

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private
    try:
        kinds = {split: _write_split(staging, split, size, seed) for split, size in sizes.items()}
        (staging / _INFO_FILE).write_text(json.dumps({**expected, "kinds": kinds}, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            if _is_complete(output_dir, expected):  # another process finished first
                return output_dir
            shutil.rmtree(output_dir)
        try:
            os.replace(staging, output_dir)
        except OSError:
            if not _is_complete(output_dir, expected):  # not a concurrent build of the same sample
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output_dir
