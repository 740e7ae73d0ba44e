"""A dataset of posts (`run_mre.py --dataset_name`): a post file's columns with the images embedded, read as the
equivalent post files are (the same predictions), its columns renamed with `--column_names`, a relation ClassLabel's
order kept, and a row whose image is a path without bytes refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
from _data_fixtures import make_processor
from _post_fixtures import OWN_RELATIONS, own_posts, write_posts

import run_mre
from mre_data.mnre import MNREFormatError
from mre_data.mnre_dataset import load_post_dataset, load_post_files
from mre_data.post_files import PostFormatError
from mre_run import sources

FAST = ["--per_device_eval_batch_size", "100", "--logging_strategy", "no", "--disable_tqdm", "true"]
SPLITS = {"train": ("train", 6), "validation": ("val", 3), "test": ("test", 3)}
"""The dataset's splits: their post files' split name and size."""


def embedded(folder: Path, posts: list[dict[str, Any]], rename: dict[str, str] | None = None) -> datasets.Dataset:
    """`posts` as a dataset split, each image's bytes embedded (no path), columns renamed by `rename`."""
    rows = [{**post, "image": {"bytes": (folder / post["image"]).read_bytes(), "path": None}} for post in posts]
    columns = {column: [row[column] for row in rows] for column in rows[0]}
    dataset = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    return dataset.rename_columns(rename or {})


def write_dataset(root: Path, splits: dict[str, datasets.Dataset]) -> Path:
    """A folder of `{split}.parquet` files, as `datasets.load_dataset(root)` reads it."""
    root.mkdir(parents=True, exist_ok=True)
    for split, dataset in splits.items():
        dataset.to_parquet(str(root / f"{split}.parquet"))
    return root


@pytest.fixture(scope="module")
def posts(tmp_path_factory) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """Post files (`train.jsonl`, `val.jsonl`, `test.jsonl`) and their JPEGs, with the posts of each split."""
    root = tmp_path_factory.mktemp("posts")
    by_split = {}
    for seed, (split, (name, count)) in enumerate(SPLITS.items()):
        by_split[split] = own_posts(root, count, seed=seed, prefix=name)
        write_posts(root / f"{name}.jsonl", by_split[split])
    return root, by_split


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(data: list[str], output_dir: Path) -> None:
    run_mre.main(
        [
            *data,
            *("--none_label", "no_relation", "--output_dir", str(output_dir), "--num_train_epochs", "1"),
            *("--cache_dir", str(output_dir) + "-cache", *FAST),
        ]
    )


def test_training_from_the_dataset_predicts_as_from_the_post_files(posts, tmp_path):
    root, by_split = posts
    folder = write_dataset(tmp_path / "dataset", {split: embedded(root, rows) for split, rows in by_split.items()})
    files = [f"--{sources.POST_FILE_OPTIONS[split]}={root / split}.jsonl" for split, _ in SPLITS.values()]
    run(files, tmp_path / "files")
    run(["--dataset_name", str(folder)], tmp_path / "dataset-run")
    from_files = rows(tmp_path / "files" / "predictions.jsonl")
    from_dataset = rows(tmp_path / "dataset-run" / "predictions.jsonl")
    assert [row["gold"] for row in from_dataset] == [OWN_RELATIONS[index % 3] for index in range(3)]
    assert from_dataset == from_files


def test_renamed_columns_are_mapped_and_a_classlabel_keeps_its_order(posts, tmp_path):
    root, by_split = posts
    order = ["person_link", "other_link", "no_relation"]
    relation = datasets.ClassLabel(names=order)
    rename = {"text": "body", "image": "picture"}
    splits = {
        split: embedded(root, rows, rename).cast_column("relation", relation) for split, rows in by_split.items()
    }
    folder = write_dataset(tmp_path / "renamed", splits)
    argv = ["--dataset_name", str(folder), "--column_names", "text=body", "image=picture"]
    _, data_args, _, training_args = run_mre.parse_args([*argv, "--output_dir", str(tmp_path / "out")])
    source = sources.data_source(data_args, training_args)
    assert source.relation_labels == order
    processor = make_processor(num_object_crops=0, relation_labels=order)
    data = source.load_splits(processor, splits=["train"], cache_dir=tmp_path / "cache")["train"]
    files = load_post_files({"train": root / "train.jsonl"}, processor, cache_dir=tmp_path / "cache-files")["train"]
    assert list(data["labels"]) == [order.index(post["relation"]) for post in by_split["train"]] == [2, 0, 1, 2, 0, 1]
    for column in ("input_ids", "pixel_values"):
        assert all(np.array_equal(mine, theirs) for mine, theirs in zip(data[column], files[column], strict=True))

    _, data_args, _, training_args = run_mre.parse_args(
        ["--dataset_name", str(folder), "--column_names", "text=content", "--output_dir", str(tmp_path / "out")]
    )
    with pytest.raises(SystemExit, match=r"--column_names 'text=content': split 'train' has no column 'content'"):
        sources.data_source(data_args, training_args)


def test_an_image_path_without_bytes_and_a_bad_row_are_refused(posts):
    root, by_split = posts
    processor = make_processor(num_object_crops=0, relation_labels=sorted(OWN_RELATIONS))
    train = embedded(root, by_split["train"])
    images = train.cast_column("image", datasets.Image(decode=False))["image"][:]
    images[4] = {"bytes": None, "path": "/etc/hostname"}  # a file of the machine that loads the dataset
    pathed = train.remove_columns("image").add_column("image", images).cast_column("image", datasets.Image())
    with pytest.raises(MNREFormatError, match=r"^posts\[train\]\[4\]: field 'image' holds a path \('/etc/hostname'\)"):
        load_post_dataset(datasets.DatasetDict({"train": pathed}), "posts", processor)

    bad = by_split["train"][:2] + [{**by_split["train"][2], "subject": "Nobody Here"}]
    with pytest.raises(PostFormatError, match=r"^posts\[train\]\[2\]: column 'subject': 'Nobody Here' is absent"):
        load_post_dataset(datasets.DatasetDict({"train": embedded(root, bad)}), "posts", processor)
