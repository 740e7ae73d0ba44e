"""Reading MNRE files: line validation with file:line and field in every error, labels, crop mappings."""

from __future__ import annotations

import ast
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from _data_fixtures import (
    MNRE_DIR,
    mnre_line,
    write_lines,
)

from processing.mnre import MNRE_RELATIONS, MNREFormatError, load_crops_mapping, read_mnre_file

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
    with caplog.at_level(logging.WARNING, logger="processing.mnre"):
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
    with caplog.at_level(logging.WARNING, logger="processing.mnre"):
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
