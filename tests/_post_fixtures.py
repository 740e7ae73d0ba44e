"""Post files written by tests: a 3-relation schema of a user's own (`no_relation`, `person_link`, `other_link`), rows
as JSON Lines, CSV or Parquet, and real small JPEGs beside them."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet
from mnre_folder import photo

OWN_RELATIONS = ("no_relation", "person_link", "other_link")
"""The schema's relations, in the order a run gives them with `--none_label no_relation` (none first, then sorted:
`other_link` < `person_link`)."""
TEMPLATES = {
    "person_link": ["{A} met {B} at the harbor today", "great night with {A} and my friend {B}"],
    "other_link": ["{A} visited {B} this weekend", "photo of {A} in front of {B}"],
    "no_relation": ["{A} posted while {B} was in the news", "{A} !! also {B}"],
}
PEOPLE = ["Corra Vane", "Tamsin Holt", "Olek Marrow", "Bryn Quill"]
PLACES = ["Harbor Square", "Kestrel Bay", "Old Mill", "North Quay"]


def own_posts(folder: Path, count: int, seed: int = 0, prefix: str = "img") -> list[dict[str, Any]]:
    """`count` labelled posts cycling through the relations, each with its own JPEG written into `folder/images/`
    (named by a relative path)."""
    rng, pixels = random.Random(seed), np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    posts = []
    for index in range(count):
        relation = OWN_RELATIONS[index % 3]
        subject = rng.choice(PEOPLE)
        obj = rng.choice([name for name in PEOPLE if name != subject] if relation == "person_link" else PLACES)
        text = rng.choice(TEMPLATES[relation]).format(A=subject, B=obj)
        image = f"images/{prefix}_{index}.jpg"
        photo(pixels, 48, 36).save(folder / image, quality=90)
        posts.append({"text": text, "subject": subject, "object": obj, "image": image, "relation": relation})
    return posts


def write_posts(path: Path, posts: list[dict[str, Any]]) -> Path:
    """Writes posts as JSON Lines, CSV (lists as JSON cells) or Parquet, after the suffix of `path`."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(post) + "\n" for post in posts), encoding="utf-8")
    elif path.suffix == ".csv":
        columns = list(dict.fromkeys(column for post in posts for column in post))
        with open(path, "w", encoding="utf-8", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            for post in posts:
                writer.writerow(
                    {key: json.dumps(value) if isinstance(value, list) else value for key, value in post.items()}
                )
    else:
        pyarrow.parquet.write_table(pa.Table.from_pylist(posts), path)
    return path


def unlabelled(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The posts without their `relation`."""
    return [{key: value for key, value in post.items() if key != "relation"} for post in posts]
