"""Reading MNRE files, loading images and crops into the `datasets` cache, and the missing-image policy."""

from __future__ import annotations

import ast
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_fixtures import (
    CROP_SIZE,
    IMAGE_SIZE,
    MNRE_DIR,
    NUM_CROPS,
    DecodeCounter,
    build_small_sample,
    make_processor,
    mnre_line,
    write_lines,
)
from PIL import Image

from processing.mnre import (
    MNRE_RELATIONS,
    MNREFormatError,
    MNREImageError,
    image_report,
    load_crops_mapping,
    load_mnre,
    read_mnre_file,
)
from processing.sample_data import build_sample_dataset

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


def test_entity_names_that_differ_from_their_span_are_logged(tmp_path, caplog):
    path = write_lines(tmp_path / "mnre_train.txt", [mnre_line(h={"name": "Corra", "pos": [3, 5]})])
    with caplog.at_level(logging.WARNING, logger="processing.mnre"):
        assert read_mnre_file(path)[0]["h"]["pos"] == [3, 5]
    assert f"{path}:1 ('h')" in caplog.text


def test_custom_relation_labels(tmp_path):
    path = write_lines(tmp_path / "mnre_train.txt", [mnre_line(relation="likes")])
    assert read_mnre_file(path, relation_labels=["None", "likes"])[0]["relation"] == "likes"


# ------------------------------------------------------------------------------------------------------------------
# Loading the sample dataset; the cache
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    return build_sample_dataset(tmp_path_factory.mktemp("sample") / "data", seed=0)


@pytest.fixture
def small_sample(tmp_path) -> Path:
    return build_small_sample(tmp_path / "small")


def _lines(path: Path) -> list[dict]:
    return [ast.literal_eval(line) for line in path.read_text().splitlines()]


def _array(dataset, column: str) -> np.ndarray:
    """A whole array column, stacked."""
    return np.asarray(dataset.select_columns([column]).with_format("numpy")[:][column])


def test_load_sample_dataset(sample_dir, tmp_path):
    processor = make_processor()
    dataset_dict = load_mnre(sample_dir, processor, cache_dir=tmp_path / "cache")
    assert set(dataset_dict) == {"train", "val", "test"}
    train = dataset_dict["train"]
    assert len(train) == 300
    row = train[5]
    line = _lines(sample_dir / "mnre_train.txt")[5]
    assert row["id"] == "train-5" and row["token"] == line["token"] and row["kind"] == line["kind"]
    assert train.features["labels"].names == list(MNRE_RELATIONS)
    assert MNRE_RELATIONS[int(row["labels"])] == line["relation"] == row["relation"]
    assert row["pixel_values"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert row["object_pixel_values"].shape == (NUM_CROPS, 3, CROP_SIZE, CROP_SIZE)
    assert train.features["pixel_values"].dtype == "uint8"
    ids = row["input_ids"].tolist()
    start, end = row["marker_positions"].tolist()
    assert ids[start] == processor.marker_token_ids()[0] and ids[end] == processor.marker_token_ids()[2]

    mapping = json.loads((sample_dir / "mre_train_dict.json").read_text())
    listed = [min(len(mapping.get(str(index), [])), NUM_CROPS) for index in range(len(train))]
    masks = _array(train, "object_mask")
    assert masks.sum(axis=1).tolist() == listed
    assert masks[:, 0].sum() < len(train) and (masks.sum(axis=1) == 1).any()  # some without crops, some with fewer

    report = image_report(dataset_dict)
    assert report["train"]["images_loaded"] == 300 and report["train"]["images_blank"] == 0
    assert report["train"]["crops_loaded"] == sum(listed)
    assert report["val"]["examples"] == 100


def test_second_load_decodes_nothing(small_sample, tmp_path, monkeypatch):
    processor = make_processor()
    counter = DecodeCounter(processor)
    monkeypatch.setattr(processor, "load_image", counter)
    first = load_mnre(small_sample, processor, cache_dir=tmp_path / "cache")
    expected = sum(len(dataset) + sum(len(paths) for paths in dataset["crop_paths"]) for dataset in first.values())
    assert len(counter.paths) == expected and any("img_vg" in path for path in counter.paths)

    counter.paths.clear()
    second = load_mnre(small_sample, processor, cache_dir=tmp_path / "cache")
    assert counter.paths == []
    assert np.array_equal(_array(first["train"], "pixel_values"), _array(second["train"], "pixel_values"))
    assert second["train"].cache_files and all(
        str(tmp_path / "cache") in f["filename"] for f in second["train"].cache_files
    )

    other_text = make_processor(max_length=24)  # a new tokenizer setting re-tokenizes, without decoding images
    other_counter = DecodeCounter(other_text)
    monkeypatch.setattr(other_text, "load_image", other_counter)
    load_mnre(small_sample, other_text, cache_dir=tmp_path / "cache")
    assert other_counter.paths == []


def test_changed_image_is_decoded_again(small_sample, tmp_path, monkeypatch):
    processor = make_processor()
    before = load_mnre(small_sample, processor, splits=["train"], cache_dir=tmp_path / "cache")["train"]
    image_path = Path(before[0]["image_path"])
    Image.new("RGB", (40, 40), (255, 255, 255)).save(image_path, format="JPEG")
    os.utime(image_path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    counter = DecodeCounter(processor)
    monkeypatch.setattr(processor, "load_image", counter)
    after = load_mnre(small_sample, processor, splits=["train"], cache_dir=tmp_path / "cache")["train"]
    assert str(image_path) in counter.paths
    assert (after[0]["pixel_values"] == 255).all() and not (before[0]["pixel_values"] == 255).all()


def test_num_proc_gives_the_same_arrays(small_sample, tmp_path):
    processor = make_processor()
    single = load_mnre(small_sample, processor, splits=["val"], cache_dir=tmp_path / "one")["val"]
    multi = load_mnre(small_sample, processor, splits=["val"], cache_dir=tmp_path / "two", num_proc=2)["val"]
    for column in ("pixel_values", "object_pixel_values", "object_mask"):
        assert np.array_equal(_array(single, column), _array(multi, column))


def test_images_switched_off(small_sample, tmp_path, monkeypatch, caplog):
    processor = make_processor()
    counter = DecodeCounter(processor)
    monkeypatch.setattr(processor, "load_image", counter)
    with caplog.at_level(logging.INFO, logger="processing.mnre"):
        dataset = load_mnre(small_sample, processor, use_images=False, image_dir=tmp_path / "nowhere")["train"]
    assert counter.paths == []
    assert image_report(dataset)["images_disabled"] == image_report(dataset)["images_blank"] == len(dataset)
    assert not _array(dataset, "pixel_values").any() and not _array(dataset, "object_mask").any()
    assert "images switched off" in caplog.text


# ------------------------------------------------------------------------------------------------------------------
# Missing and unreadable images and crops
# ------------------------------------------------------------------------------------------------------------------


def test_missing_images_raise_with_count_and_paths(small_sample, tmp_path):
    images = sorted((small_sample / "img_org" / "train").iterdir())
    for path in images[:3]:
        path.unlink()
    with pytest.raises(MNREImageError, match=r"3 of 20 images are missing") as error:
        load_mnre(small_sample, make_processor(), cache_dir=tmp_path / "cache")
    assert str(images[0]) in str(error.value) and "missing_images='blank'" in str(error.value)


def test_missing_images_blank_are_reported(small_sample, tmp_path, caplog):
    lines = _lines(small_sample / "mnre_train.txt")
    (small_sample / "img_org" / "train" / lines[4]["img_id"]).unlink()
    with caplog.at_level(logging.WARNING, logger="processing.mnre"):
        dataset_dict = load_mnre(small_sample, make_processor(), missing_images="blank", cache_dir=tmp_path / "cache")
    report = image_report(dataset_dict)
    assert report["train"]["images_missing"] == report["train"]["images_blank"] == 1
    assert report["val"]["images_blank"] == 0
    assert dataset_dict["train"][4]["image_status"] == "missing"
    assert not dataset_dict["train"][4]["pixel_values"].any()
    assert "blank images for 1 missing" in caplog.text


def test_corrupt_image(small_sample, tmp_path):
    lines = _lines(small_sample / "mnre_val.txt")
    corrupt = small_sample / "img_org" / "val" / lines[2]["img_id"]
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(MNREImageError, match=r"1 of 8 images cannot be decoded") as error:
        load_mnre(small_sample, make_processor(), splits=["val"], cache_dir=tmp_path / "cache")
    assert str(corrupt) in str(error.value)
    dataset = load_mnre(
        small_sample, make_processor(), splits=["val"], missing_images="blank", cache_dir=tmp_path / "cache"
    )["val"]
    assert image_report(dataset)["images_unreadable"] == 1 and dataset[2]["image_status"] == "unreadable"


def test_missing_crop(small_sample, tmp_path):
    mapping = json.loads((small_sample / "mre_train_dict.json").read_text())
    index, names = next((int(key), names) for key, names in mapping.items() if len(names) >= 2)
    (small_sample / "img_vg" / "train" / "crops" / names[1]).unlink()
    with pytest.raises(MNREImageError, match="object crops are missing") as error:
        load_mnre(small_sample, make_processor(), splits=["train"], cache_dir=tmp_path / "cache")
    assert names[1] in str(error.value)
    dataset = load_mnre(
        small_sample, make_processor(), splits=["train"], missing_images="blank", cache_dir=tmp_path / "cache"
    )["train"]
    assert image_report(dataset)["crops_missing"] == 1
    assert dataset[index]["crop_status"][1] == "missing"
    assert dataset[index]["object_mask"].sum() == min(len(names), NUM_CROPS) - 1


# ------------------------------------------------------------------------------------------------------------------
# Crop mappings
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["line_index", "img_id"])
def test_crops_mapping_from_pth(small_sample, tmp_path, keys):
    reference = load_mnre(small_sample, make_processor(), splits=["train"], cache_dir=tmp_path / "cache")["train"]
    lines = _lines(small_sample / "mnre_train.txt")
    mapping = json.loads((small_sample / "mre_train_dict.json").read_text())
    by_key = {int(k) if keys == "line_index" else lines[int(k)]["img_id"]: names for k, names in mapping.items()}
    (small_sample / "mre_train_dict.json").unlink()
    pth = tmp_path / "mre_train_dict.pth"
    torch.save(by_key, pth)
    assert load_crops_mapping(pth) == by_key
    dataset = load_mnre(
        small_sample, make_processor(), splits=["train"], crops_mapping={"train": pth}, cache_dir=tmp_path / "cache"
    )["train"]
    assert np.array_equal(_array(dataset, "object_mask"), _array(reference, "object_mask"))
    assert np.array_equal(_array(dataset, "object_pixel_values"), _array(reference, "object_pixel_values"))


def test_crops_mapping_found_under_the_reference_name(small_sample, tmp_path):
    reference = load_mnre(small_sample, make_processor(), splits=["val"], cache_dir=tmp_path / "cache")["val"]
    (small_sample / "mre_val_dict.json").rename(small_sample / "mre_dev_dict.json")
    dataset = load_mnre(small_sample, make_processor(), splits=["val"], cache_dir=tmp_path / "cache")["val"]
    assert np.array_equal(_array(dataset, "object_mask"), _array(reference, "object_mask"))


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


def test_mapping_that_matches_nothing(small_sample, tmp_path):
    (small_sample / "mre_train_dict.json").write_text(json.dumps({"unknown.jpg": ["a.jpg"]}))
    with pytest.raises(MNREFormatError, match="none of its 1 keys"):
        load_mnre(small_sample, make_processor(), splits=["train"], cache_dir=tmp_path / "cache")


def test_crops_switched_off(small_sample, tmp_path, monkeypatch):
    processor = make_processor()
    counter = DecodeCounter(processor)
    monkeypatch.setattr(processor, "load_image", counter)
    dataset = load_mnre(
        small_sample, processor, splits=["train"], use_object_crops=False, cache_dir=tmp_path / "cache"
    )["train"]
    assert not _array(dataset, "object_mask").any() and image_report(dataset)["crops_loaded"] == 0
    assert len(counter.paths) == len(dataset) and not any("img_vg" in path for path in counter.paths)


def test_without_crops_folder_masks_are_zero(small_sample, tmp_path):
    (small_sample / "img_vg").rename(tmp_path / "elsewhere")
    dataset = load_mnre(small_sample, make_processor(), splits=["train"], cache_dir=tmp_path / "cache")["train"]
    assert not _array(dataset, "object_mask").any() and image_report(dataset)["images_loaded"] == len(dataset)
    (small_sample / "mre_train_dict.json").unlink()
    with pytest.raises(FileNotFoundError, match="no crops mapping"):
        load_mnre(
            small_sample,
            make_processor(),
            splits=["train"],
            crops_dir=tmp_path / "elsewhere",
            cache_dir=tmp_path / "cache",
        )


# ------------------------------------------------------------------------------------------------------------------
# Errors about the layout and the text
# ------------------------------------------------------------------------------------------------------------------


def test_missing_split_and_image_folder(small_sample, tmp_path):
    with pytest.raises(FileNotFoundError, match="split 'test'"):
        load_mnre(small_sample, make_processor(), splits=["test"], cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="image folder"):
        load_mnre(small_sample, make_processor(), image_dir=tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="no MNRE text file"):
        load_mnre(tmp_path, make_processor(), use_images=False, cache_dir=tmp_path / "cache")


def test_line_the_processor_rejects_names_file_line(tmp_path):
    lines = [mnre_line(), mnre_line(h={"name": "x", "pos": [3, 6]}, t={"name": "y", "pos": [4, 8]})]
    path = write_lines(tmp_path / "mnre_train.txt", lines)
    with pytest.raises(MNREFormatError, match=rf"{path}:2: fields 'h'/'t'"):
        load_mnre(tmp_path, make_processor(), use_images=False, cache_dir=tmp_path / "cache")
