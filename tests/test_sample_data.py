"""The built-in sample dataset: determinism, sizes, kinds, and that its pictures carry the relation."""

from __future__ import annotations

import ast
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mre_data.mnre import MNRE_RELATIONS, read_mnre_file
from mre_data.sample_data import (
    DEFAULT_SIZES,
    NEUTRAL_TEMPLATES,
    RELATION_COLOURS,
    SAMPLE_KINDS,
    SAMPLE_RELATIONS,
    TEXT_TEMPLATES,
    build_sample_dataset,
    default_sample_dir,
)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _lines(folder: Path, split: str) -> list[dict]:
    return [ast.literal_eval(line) for line in (folder / f"mnre_{split}.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return build_sample_dataset(tmp_path_factory.mktemp("sample") / "data", seed=0)


def test_same_seed_same_files_other_seed_other_files(sample, tmp_path):
    start = time.perf_counter()
    again = build_sample_dataset(tmp_path / "again", seed=0)
    assert time.perf_counter() - start < 5
    assert _tree_digest(again) == _tree_digest(sample)
    other = build_sample_dataset(tmp_path / "other", seed=1)
    assert (other / "mnre_train.txt").read_text() != (sample / "mnre_train.txt").read_text()


def test_sizes_kinds_and_labels(sample):
    info = json.loads((sample / "sample_info.json").read_text())
    assert info["sizes"] == DEFAULT_SIZES == {"train": 300, "val": 100, "test": 100}
    for split, size in DEFAULT_SIZES.items():
        records = read_mnre_file(sample / f"mnre_{split}.txt", split=split)  # valid MNRE lines
        assert len(records) == size
        kinds = {kind: sum(record["kind"] == kind for record in records) for kind in SAMPLE_KINDS}
        assert kinds == info["kinds"][split] == {"image": 0.4 * size, "text": 0.4 * size, "none": 0.2 * size}
        assert {record["relation"] for record in records} == {"None", *SAMPLE_RELATIONS}
        assert all((record["kind"] == "none") == (record["relation"] == "None") for record in records)
        assert all(record["relation"] in MNRE_RELATIONS for record in records)
        assert any(record["t"]["pos"][1] == len(record["token"]) for record in records)  # entity at the end


def test_image_kind_sentences_repeat_with_every_relation(sample):
    relations_of = defaultdict(set)
    for line in _lines(sample, "train"):
        if line["kind"] == "image":
            relations_of[(tuple(line["token"]), tuple(line["h"]["pos"]), tuple(line["t"]["pos"]))].add(
                line["relation"]
            )
    assert len(relations_of) == 30
    assert all(relations == set(SAMPLE_RELATIONS) for relations in relations_of.values())


def test_text_kind_has_triggers_and_image_kind_has_none(sample):
    def words(template: str) -> set[str]:
        return {word.lower() for word in template.split() if not word.startswith("{")}

    triggers = {relation: set.union(*map(words, templates)) for relation, templates in TEXT_TEMPLATES.items()}
    neutral = set.union(*map(words, NEUTRAL_TEMPLATES))
    for relation, relation_words in triggers.items():
        others = set.union(neutral, *(words for other, words in triggers.items() if other != relation))
        assert relation_words - others, relation  # each relation has words no other sentence has
    for line in _lines(sample, "val"):
        tokens = {token.lower() for token in line["token"]}
        if line["kind"] == "text":
            assert tokens & (triggers[line["relation"]] - neutral)
        else:
            assert not tokens & (set.union(*triggers.values()) - neutral)


def test_pictures_carry_the_relation_only_for_image_kind(sample):
    colours = np.array([RELATION_COLOURS[relation] for relation in SAMPLE_RELATIONS], dtype=float)
    for line in _lines(sample, "test"):
        with Image.open(sample / "img_org" / "test" / line["img_id"]) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=float).reshape(-1, 3)
        median = np.median(pixels, axis=0)  # the background: shapes cover a small part
        if line["kind"] == "image":
            nearest = SAMPLE_RELATIONS[int(np.argmin(np.abs(colours - median).sum(axis=1)))]
            assert nearest == line["relation"]
        else:
            assert median.max() - median.min() < 30  # grey


def test_object_crops(sample):
    for split in DEFAULT_SIZES:
        mapping = json.loads((sample / f"mre_{split}_dict.json").read_text())
        counts = [len(mapping.get(str(index), [])) for index in range(DEFAULT_SIZES[split])]
        assert set(counts) == {0, 1, 2, 3, 4}  # none, fewer than t=3, t, more than t
        for names in mapping.values():
            assert all((sample / "img_vg" / split / "crops" / name).is_file() for name in names)


def test_existing_sample_is_reused_and_foreign_folders_are_kept(sample, tmp_path):
    stamp = (sample / "mnre_train.txt").stat().st_mtime_ns
    assert build_sample_dataset(sample, seed=0) == sample
    assert (sample / "mnre_train.txt").stat().st_mtime_ns == stamp

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_sample_dataset(foreign, sizes={"train": 10})
    rebuilt = build_sample_dataset(foreign, sizes={"train": 10}, overwrite=True)
    assert not (rebuilt / "notes.txt").exists() and len(_lines(rebuilt, "train")) == 10
    build_sample_dataset(rebuilt, sizes={"train": 12})  # a sample of other settings is replaced
    assert len(_lines(rebuilt, "train")) == 12 and not (rebuilt / "mnre_val.txt").exists()


def test_default_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HVFORMER_HOME", str(tmp_path / "home"))
    folder = build_sample_dataset(sizes={"train": 10, "val": 5})
    assert folder == default_sample_dir(0, {"train": 10, "val": 5})
    assert folder.parent == tmp_path / "home" and folder.name.endswith("-train10-val5")
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]  # no staging folder left
    (folder / "sample_info.json").unlink()  # an interrupted build is redone
    assert build_sample_dataset(sizes={"train": 10, "val": 5}) == folder and (folder / "sample_info.json").is_file()
    info = json.loads((folder / "sample_info.json").read_text())
    (folder / "sample_info.json").write_text(json.dumps({**info, "generator": "older code"}))
    build_sample_dataset(sizes={"train": 10, "val": 5})  # a sample made by other code is redone
    assert json.loads((folder / "sample_info.json").read_text()) == info
