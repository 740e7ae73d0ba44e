"""Reading MNRE files: line validation with file:line and field in every error, labels, crop mappings."""

from __future__ import annotations

import ast
import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
from _data_fixtures import (
    MNRE_DIR,
    build_small_sample,
    mnre_line,
    write_lines,
)

from mre_data.mnre import (
    MNRE_RELATIONS,
    MNREFormatError,
    folder_dataset,
    folder_words,
    load_crops_mapping,
    read_hub_split,
    read_mnre_file,
)
from mre_data.sample_data import SAMPLE_DATASET_NAME, SAMPLE_RELATIONS

# ------------------------------------------------------------------------------------------------------------------
# Labels and the real data
# ------------------------------------------------------------------------------------------------------------------


def test_relations_are_fixed_with_none_first():
    assert len(MNRE_RELATIONS) == len(set(MNRE_RELATIONS)) == 23
    assert MNRE_RELATIONS[0] == "None"
    assert list(MNRE_RELATIONS[1:]) == sorted(MNRE_RELATIONS[1:])


def test_default_model_config_uses_the_mnre_label_ids():
    from modeling_hvformer import HVFormerConfig

    config = HVFormerConfig()
    assert [config.id2label[i] for i in range(config.num_labels)] == list(MNRE_RELATIONS)
    assert config.none_label_id == 0


@pytest.mark.skipif(not MNRE_DIR.is_dir(), reason="MNRE text files not available")
def test_real_mnre_files_parse():
    train = read_mnre_file(MNRE_DIR / "mnre_train.txt", split="train")
    val = read_mnre_file(MNRE_DIR / "mnre_val.txt", split="val")
    assert (len(train), len(val)) == (12247, 1624)
    relations = Counter(record["relation"] for record in train + val)
    assert set(relations) == set(MNRE_RELATIONS)
    assert Counter(record["relation"] for record in train)["None"] == 7744
    assert train[0]["id"] == "train-0" and val[-1]["id"] == "val-1623" and val[-1]["line_index"] == 1623
    first = ast.literal_eval((MNRE_DIR / "mnre_train.txt").read_text().splitlines()[0])
    assert {key: train[0][key] for key in first} == first


# ------------------------------------------------------------------------------------------------------------------
# Validation of lines
# ------------------------------------------------------------------------------------------------------------------

BAD_LINES = {
    "missing key": (mnre_line(relation=...), "'relation'"),
    "missing entity key": (mnre_line(t={"name": "Harbor Square"}), "'t.pos'"),
    "span past the end": (mnre_line(h={"name": "x", "pos": [8, 11]}), "'h.pos'"),
    "empty span": (mnre_line(t={"name": "x", "pos": [4, 4]}), "'t.pos'"),
    "negative span": (mnre_line(h={"name": "x", "pos": [-1, 2]}), "'h.pos'"),
    "float span": (mnre_line(h={"name": "x", "pos": [3.0, 5]}), "'h.pos'"),
    "bool span": (mnre_line(h={"name": "x", "pos": [False, 2]}), "'h.pos'"),
    "name not str": (mnre_line(h={"name": 3, "pos": [3, 5]}), "'h.name'"),
    "unknown relation": (mnre_line(relation="/per/per/friend"), "'relation'"),
    "empty token list": (mnre_line(token=[]), "'token'"),
    "token not str": (mnre_line(token=["a", 1]), "'token'"),
    "img_id with a folder": (mnre_line(img_id="../secret.jpg"), "'img_id'"),
    "kind not str": (mnre_line(kind=1), "'kind'"),
    "not a literal": ("{'token': ['a'], 'h': open('x')}", "not a Python dict literal"),
    "not python": ("this is not python", "not a Python dict literal"),
    "a list literal": ("[1, 2, 3]", "expected a dict literal"),
    "blank line inside": ("", "blank line"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_names_file_line_and_field(tmp_path, case):
    bad_line, field = BAD_LINES[case]
    path = write_lines(tmp_path / "mnre_train.txt", [mnre_line(), bad_line, mnre_line()])
    with pytest.raises(MNREFormatError) as error:
        read_mnre_file(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert field in str(error.value)


def test_trailing_blank_lines_and_extra_keys_are_allowed(tmp_path):
    path = tmp_path / "mnre_val.txt"
    path.write_text(repr(mnre_line(kind="text", extra=1)) + "\n" + repr(mnre_line()) + "\n\n  \n")
    records = read_mnre_file(path)
    assert [record["id"] for record in records] == ["mnre_val-0", "mnre_val-1"]
    assert records[0]["kind"] == "text" and "kind" not in records[1] and "extra" not in records[0]


def test_utf8_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    """Files saved by Windows editors start with a BOM; the first line must still parse (and keep its index)."""
    path = tmp_path / "mnre_val.txt"
    path.write_bytes(b"\xef\xbb\xbf" + (repr(mnre_line()) + "\n" + repr(mnre_line(relation="None")) + "\n").encode())
    records = read_mnre_file(path)
    assert [record["relation"] for record in records] == ["/per/misc/present_in", "None"]
    assert records[0]["token"][0] == "RT"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_byte_that_is_not_utf8_names_file_line_and_column(tmp_path, newline):
    """A Latin-1 byte (0xf6) in the third line, after a two-byte UTF-8 letter of the same line: the column counts
    characters."""
    bad = repr(mnre_line(token=["Zoë", "and", "Corra", "Vane", "visit", "to", "Harbor", "Square", "!", "x"]))
    column = bad.index("Harbor") + len("Harb") + 1
    lines = [repr(mnre_line()).encode(), repr(mnre_line()).encode(), bad.encode().replace(b"Harbor", b"Harb\xf6r")]
    path = tmp_path / "mnre_train.txt"
    path.write_bytes(newline.encode().join([*lines, b""]))
    with pytest.raises(MNREFormatError) as error:
        read_mnre_file(path)
    assert str(error.value) == f"{path}:3: line: not UTF-8 text (byte 0xf6 at column {column}: invalid start byte)"


def test_repeated_lines_are_kept_and_reported(tmp_path, caplog):
    lines = [mnre_line(), mnre_line(relation="None"), mnre_line(), mnre_line(img_id="b.jpg"), mnre_line()]
    lines += [mnre_line(relation="None"), mnre_line(img_id="b.jpg"), mnre_line()]
    path = write_lines(tmp_path / "mnre_train.txt", lines)
    with caplog.at_level(logging.WARNING, logger="mre_data.mnre"):
        records = read_mnre_file(path)
    assert [record["id"] for record in records] == [f"mnre_train-{index}" for index in range(8)]
    assert caplog.messages == [
        f"{path}: 5 lines repeat an earlier line word for word (kept: line indices are ids), first: lines 3 (= 1), "
        "5 (= 1), 6 (= 2)"
    ]
    caplog.clear()
    read_mnre_file(write_lines(tmp_path / "mnre_val.txt", lines[:2]))
    assert caplog.messages == []


def test_entity_names_that_differ_from_their_span_are_logged(tmp_path, caplog):
    path = write_lines(tmp_path / "mnre_train.txt", [mnre_line(h={"name": "Corra", "pos": [3, 5]})])
    with caplog.at_level(logging.WARNING, logger="mre_data.mnre"):
        assert read_mnre_file(path)[0]["h"]["pos"] == [3, 5]
    assert f"{path}:1 ('h')" in caplog.text


def test_custom_relation_labels(tmp_path):
    path = write_lines(tmp_path / "mnre_train.txt", [mnre_line(relation="likes")])
    assert read_mnre_file(path, relation_labels=["None", "likes"])[0]["relation"] == "likes"


# ------------------------------------------------------------------------------------------------------------------
# Crop mappings
# ------------------------------------------------------------------------------------------------------------------


def test_pth_mapping_with_objects_is_refused(tmp_path):
    path = tmp_path / "mre_train_dict.pth"
    torch.save({0: [Path("crop.jpg")]}, path)
    with pytest.raises(MNREFormatError, match="weights_only"):
        load_crops_mapping(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [([["a.jpg"]], "expected a dict"), ({"0": "a.jpg"}, "list of crop file names"), ("{", "not valid JSON")],
)
def test_bad_json_mapping(tmp_path, content, message):
    path = tmp_path / "mre_train_dict.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(MNREFormatError, match=message):
        load_crops_mapping(path)


# ------------------------------------------------------------------------------------------------------------------
# A folder's relations; rows of a Hub dataset
# ------------------------------------------------------------------------------------------------------------------


def test_a_folders_relations_come_from_one_rule(tmp_path):
    """MNRE's 23 in MNRE's order when every relation is MNRE's, the built-in sample's own declared list, else `None`
    first and the folder's others sorted; relations outside MNRE's are read without a label list."""
    mnre = tmp_path / "mnre"
    mnre.mkdir()
    write_lines(mnre / "mnre_train.txt", [mnre_line(), mnre_line(relation="None")])
    assert folder_dataset(mnre) == ("MNRE", list(MNRE_RELATIONS))

    own = tmp_path / "posts"
    own.mkdir()
    write_lines(own / "mnre_train.txt", [mnre_line(relation="likes"), mnre_line(relation="None")])
    write_lines(own / "mnre_test.txt", [mnre_line(relation="/per/per/peer"), mnre_line(relation="hates")])
    assert folder_dataset(own) == ("posts", ["None", "/per/per/peer", "hates", "likes"])
    assert folder_words(own)[:3] == ["RT", "@news", ":"]

    sample = build_small_sample(tmp_path / "sample")
    assert folder_dataset(sample) == (SAMPLE_DATASET_NAME, ["None", *SAMPLE_RELATIONS])
    info = json.loads((sample / "sample_info.json").read_text())
    (sample / "sample_info.json").write_text(json.dumps({**info, "relations": ["None", "None"]}))
    with pytest.raises(ValueError) as error:
        folder_dataset(sample)
    assert str(error.value) == (
        f"{sample / 'sample_info.json'}: 'relations' must be a list of distinct relation names, got ['None', 'None']"
    )


def _hub_split(relations: list, ids: list[str] | None = None, **columns: list) -> datasets.Dataset:
    """A split in export_mnre's layout (no images needed: `read_hub_split` reads none) with these relation ids."""
    rows = {
        "token": [mnre_line()["token"]] * len(relations),
        "h": [mnre_line()["h"]] * len(relations),
        "t": [mnre_line()["t"]] * len(relations),
        "relation": relations,
        "image": [None] * len(relations),
        **({"id": ids} if ids is not None else {}),
        **columns,
    }
    return datasets.Dataset.from_dict(rows).cast_column("relation", datasets.ClassLabel(names=list(MNRE_RELATIONS)))


@pytest.mark.parametrize("relation", [99, -1, None])
def test_hub_relation_that_is_no_class_id_names_split_row_and_field(relation):
    split = _hub_split([0, 11, relation])
    with pytest.raises(MNREFormatError) as error:
        read_hub_split(split, "train", "user/mnre[train]")
    assert str(error.value) == (
        f"user/mnre[train][2]: field 'relation' = {relation!r} is not a class id of its ClassLabel (0 to 22)"
    )


def test_hub_rows_repeating_an_earlier_row_or_its_id_are_kept_and_reported(caplog):
    """As a folder's repeated lines: kept, and a warning with the count and the first rows (0-based, as `[row]` in
    errors), for rows repeating another word for word and for rows with another's id."""
    split = _hub_split([0, 11, 0, 11, 0], ids=["a", "a", "c", "d", "a"], img_id=["x", "y", "x", "y", "z"])
    with caplog.at_level(logging.WARNING, logger="mre_data.mnre"):
        records = read_hub_split(split, "train", "user/mnre[train]")
    assert [record["id"] for record in records] == ["a", "a", "c", "d", "a"]
    assert caplog.messages == [
        "user/mnre[train]: 2 rows repeat an earlier row word for word (kept: ids tell them apart), first: rows "
        "2 (= 0), 3 (= 1)",
        "user/mnre[train]: 2 rows have the id of an earlier row (kept), first: rows 1 (= 0), 4 (= 0)",
    ]
