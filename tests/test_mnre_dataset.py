"""Loading MNRE splits into the `datasets` cache: images and crops decoded once, the missing-image policy, crops
mappings applied, layout errors."""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from _data_fixtures import NUM_CROPS, DecodeCounter, build_small_sample, make_processor, mnre_line, write_lines
from PIL import Image
from tiny_models import CROP_SIZE, IMAGE_SIZE

from mre_data.mnre import MNRE_RELATIONS, MNREFormatError, load_crops_mapping
from mre_data.mnre_dataset import MNRECropsError, MNREImageError, image_report, load_mnre, load_mnre_hub
from mre_data.sample_data import build_sample_dataset

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
    # Rows and batches hand the pixels out as the uint8 they are (not widened to int64), the ids as int64.
    batch = train[[5, 7]]
    assert row["pixel_values"].dtype == row["object_pixel_values"].dtype == batch["pixel_values"].dtype == np.uint8
    assert row["input_ids"].dtype == row["object_mask"].dtype == batch["marker_positions"].dtype == np.int64
    np.testing.assert_array_equal(batch["pixel_values"][0], row["pixel_values"])
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
    monkeypatch.setattr(processor.image_processor, "load_image", counter)
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
    monkeypatch.setattr(other_text.image_processor, "load_image", other_counter)
    load_mnre(small_sample, other_text, cache_dir=tmp_path / "cache")
    assert other_counter.paths == []


def test_changed_image_is_decoded_again(small_sample, tmp_path, monkeypatch):
    processor = make_processor()
    before = load_mnre(small_sample, processor, splits=["train"], cache_dir=tmp_path / "cache")["train"]
    image_path = Path(before[0]["image_path"])
    Image.new("RGB", (40, 40), (255, 255, 255)).save(image_path, format="JPEG")
    os.utime(image_path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    counter = DecodeCounter(processor)
    monkeypatch.setattr(processor.image_processor, "load_image", counter)
    after = load_mnre(small_sample, processor, splits=["train"], cache_dir=tmp_path / "cache")["train"]
    assert str(image_path) in counter.paths
    assert (after[0]["pixel_values"] == 255).all() and not (before[0]["pixel_values"] == 255).all()


def test_num_proc_gives_the_same_arrays(small_sample, tmp_path):
    processor = make_processor()
    single = load_mnre(small_sample, processor, splits=["val"], cache_dir=tmp_path / "one")["val"]
    multi = load_mnre(small_sample, processor, splits=["val"], cache_dir=tmp_path / "two", num_proc=2)["val"]
    for column in ("pixel_values", "object_pixel_values", "object_mask"):
        assert np.array_equal(_array(single, column), _array(multi, column))


FORKED_WORKERS_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from _data_fixtures import make_processor
    from mre_data.mnre_dataset import load_mnre
    from processing.image_processing_hvformer import HVFormerImageProcessor

    class ParallelOps(HVFormerImageProcessor):
        \"""Runs a parallel torch op on the pixels of every batch it makes, in the workers.\"""

        def __call__(self, *args, **kwargs):
            output = super().__call__(*args, **kwargs)
            output["pixel_values"].float().mul(2).sum()
            return output

    processor = make_processor()
    processor.image_processor = ParallelOps(
        size={"height": 224, "width": 224},
        num_object_crops=processor.num_object_crops,
        object_image_size=processor.object_image_size,
    )
    torch.set_num_threads(2)
    torch.ones(1 << 22).mul_(2).sum()  # a parallel op, as building the model: the parent's OpenMP threads exist
    dataset = load_mnre(sys.argv[1], processor, splits=["train"], num_proc=2, cache_dir=sys.argv[2])["train"]
    print("encoded", len(dataset))
    """
)
FORKED_WORKERS_TIMEOUT_S = 60
"""A healthy run takes 10-20 s on 2 busy CPU cores, imports included; a hung one is killed at this limit."""


@pytest.mark.slow
def test_forked_workers_do_not_hang_after_a_parallel_op_in_the_parent(small_sample, tmp_path):
    """`Dataset.map(num_proc=2)` forks image-decoding workers from a process whose OpenMP threads exist (a parallel
    torch op ran, as building the model does). Without the single-threaded setting in the workers, their first
    parallel op waits forever for threads that fork did not copy. Runs in a fresh process group, killed whole
    (workers included) when it overruns."""
    tests, project = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(project)])}
    command = [sys.executable, "-c", FORKED_WORKERS_SCRIPT, str(small_sample), str(tmp_path / "cache")]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=FORKED_WORKERS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(
            f"load_mnre(num_proc=2) hung after a parallel op in the parent; killed at {FORKED_WORKERS_TIMEOUT_S} s"
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.splitlines()[-1] == "encoded 20"


def test_images_switched_off(small_sample, tmp_path, monkeypatch, caplog):
    processor = make_processor()
    counter = DecodeCounter(processor)
    monkeypatch.setattr(processor.image_processor, "load_image", counter)
    with caplog.at_level(logging.INFO, logger="mre_data.mnre_dataset"):
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
    with caplog.at_level(logging.WARNING, logger="mre_data.mnre_dataset"):
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


def test_cached_pixels_are_those_a_served_post_gets(tmp_path):
    """Large pictures are decoded at a reduced scale when served (a JPEG `draft`, another image `reduce`d): the
    training cache decodes them the same way, so a post's cached pixels equal what the image processor gives for its
    files, for a large JPEG and a large PNG, main image and crop alike."""
    data_dir = tmp_path / "mnre"
    (data_dir / "img_org" / "train").mkdir(parents=True)
    (data_dir / "img_vg" / "train" / "crops").mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(128, 60, (30, 40, 3)), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels).resize((1600, 1200), Image.Resampling.BICUBIC)
    picture.save(data_dir / "img_org" / "train" / "big.jpg", quality=90)
    picture.save(data_dir / "img_org" / "train" / "big.png")
    picture.crop((100, 100, 900, 700)).save(data_dir / "img_vg" / "train" / "crops" / "crop.jpg", quality=90)
    write_lines(data_dir / "mnre_train.txt", [mnre_line(img_id="big.jpg"), mnre_line(img_id="big.png")])
    (data_dir / "mre_train_dict.json").write_text(json.dumps({"0": ["crop.jpg"], "1": ["crop.jpg"]}))
    processor = make_processor()
    dataset = load_mnre(data_dir, processor, splits=["train"], cache_dir=tmp_path / "cache")["train"]
    crop = str(data_dir / "img_vg" / "train" / "crops" / "crop.jpg")
    for row, name in enumerate(("big.jpg", "big.png")):
        served = processor.image_processor(str(data_dir / "img_org" / "train" / name), object_crops=[crop])
        assert np.array_equal(_array(dataset, "pixel_values")[row], served["pixel_values"][0].numpy()), name
        assert np.array_equal(_array(dataset, "object_pixel_values")[row], served["object_pixel_values"][0].numpy())
    big = processor.image_processor.load_image(str(data_dir / "img_org" / "train" / "big.jpg"))
    full = processor.image_processor(big)
    assert not np.array_equal(full["pixel_values"][0].numpy(), _array(dataset, "pixel_values")[0])


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


def test_mapping_that_matches_nothing(small_sample, tmp_path):
    (small_sample / "mre_train_dict.json").write_text(json.dumps({"unknown.jpg": ["a.jpg"]}))
    with pytest.raises(MNREFormatError, match="none of its 1 keys"):
        load_mnre(small_sample, make_processor(), splits=["train"], cache_dir=tmp_path / "cache")


def test_crops_switched_off(small_sample, tmp_path, monkeypatch):
    processor = make_processor()
    counter = DecodeCounter(processor)
    monkeypatch.setattr(processor.image_processor, "load_image", counter)
    dataset = load_mnre(
        small_sample, processor, splits=["train"], use_object_crops=False, cache_dir=tmp_path / "cache"
    )["train"]
    assert not _array(dataset, "object_mask").any() and image_report(dataset)["crops_loaded"] == 0
    assert len(counter.paths) == len(dataset) and not any("img_vg" in path for path in counter.paths)


def test_a_folder_without_crops_is_refused_unless_told_to_go_without(small_sample, tmp_path, caplog):
    """The processor takes 3 crops a post and there is no `img_vg/`: an error naming the folder expected and the
    option; with `missing_crops="none"` the split loads without crops, counted and logged. A processor that takes no
    crops requires nothing."""
    (small_sample / "img_vg").rename(tmp_path / "elsewhere")
    with pytest.raises(MNRECropsError) as error:
        load_mnre(small_sample, make_processor(), splits=["train"], cache_dir=tmp_path / "cache")
    assert str(error.value) == (
        f"no object crops folder {small_sample / 'img_vg'} (with {{split}}/crops/ in it, and mre_{{split}}_dict.pth "
        "beside the text files): pass crops_dir, or pass missing_crops='none' to go without object crops (counted as "
        "'crops_unavailable' in image_report())"
    )
    with caplog.at_level(logging.WARNING, logger="mre_data.mnre_dataset"):
        dataset = load_mnre(
            small_sample, make_processor(), splits=["train"], missing_crops="none", cache_dir=tmp_path / "cache"
        )["train"]
    assert not _array(dataset, "object_mask").any()
    report = image_report(dataset)
    assert (report["crops_unavailable"], report["images_loaded"], report["crops_loaded"]) == (20, 20, 0)
    assert f"no object crops folder {small_sample / 'img_vg'}" in caplog.text and "missing_crops='none'" in caplog.text

    without = load_mnre(small_sample, make_processor(num_object_crops=0), cache_dir=tmp_path / "cache")
    assert image_report(without)["train"]["crops_unavailable"] == 0


def test_a_split_without_its_crops_mapping_is_refused_unless_told_to_go_without(small_sample, tmp_path):
    """A post its mapping lists no crops for is fine; a split with no mapping at all is not, unless
    `missing_crops="none"` (then only that split goes without)."""
    (small_sample / "mre_val_dict.json").unlink()
    with pytest.raises(MNRECropsError) as error:
        load_mnre(small_sample, make_processor(), cache_dir=tmp_path / "cache")
    assert str(error.value).startswith(
        f"split 'val': no crops mapping mre_val_dict.{{pth,pt,json}} in {small_sample}, {small_sample}: pass "
        "crops_mapping, or pass missing_crops='none' to go without object crops"
    )
    dataset_dict = load_mnre(small_sample, make_processor(), missing_crops="none", cache_dir=tmp_path / "cache")
    report = image_report(dataset_dict)
    assert (report["train"]["crops_unavailable"], report["val"]["crops_unavailable"]) == (0, 8)
    assert report["train"]["crops_loaded"] > 0 and report["val"]["crops_loaded"] == 0
    with pytest.raises(ValueError, match="missing_crops must be 'error' or 'none', got 'blank'"):
        load_mnre(small_sample, make_processor(), missing_crops="blank", cache_dir=tmp_path / "cache")

    (small_sample / "img_vg").rename(tmp_path / "elsewhere")
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
# Paths that lead outside their folder; images that are paths
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["dot-dot", "absolute", "symlink"])
def test_crop_names_leading_outside_the_crops_folder_are_refused(small_sample, tmp_path, how):
    """A crop name is joined to `img_vg/{split}/crops/`: `..`, an absolute name or a link there to a file elsewhere
    would have that file decoded (or embedded by an export); the error names the mapping, the key and the name."""
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (20, 20), (9, 9, 9)).save(secret)
    crops = small_sample / "img_vg" / "train" / "crops"
    name = {"dot-dot": "../../../../secret.jpg", "absolute": str(secret), "symlink": "link.jpg"}[how]
    if how == "symlink":
        (crops / "link.jpg").symlink_to(secret)
    mapping = small_sample / "mre_train_dict.json"
    mapping.write_text(json.dumps({"0": ["ok.jpg", name]}))
    with pytest.raises(MNREFormatError) as error:
        load_mnre(small_sample, make_processor(), splits=["train"], cache_dir=tmp_path / "cache")
    assert str(error.value) == (
        f"{mapping}: key '0': crop {name!r} leads to {secret}, outside the crops folder {crops}"
    )


def test_an_image_linked_to_a_file_elsewhere_is_refused(small_sample, tmp_path):
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (20, 20), (9, 9, 9)).save(secret)
    image = small_sample / "img_org" / "val" / _lines(small_sample / "mnre_val.txt")[3]["img_id"]
    image.unlink()
    image.symlink_to(secret)
    with pytest.raises(MNREFormatError) as error:
        load_mnre(small_sample, make_processor(), splits=["val"], cache_dir=tmp_path / "cache")
    assert str(error.value) == (
        f"{small_sample / 'mnre_val.txt'}:4: field 'img_id': {image} leads to {secret}, outside the image folder "
        f"{small_sample / 'img_org' / 'val'}"
    )


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("field", ["image", "object_crops[1]"])
def test_a_hub_image_that_is_a_path_is_never_read(tmp_path, field):
    """A row's image (or crop) with no bytes but a path would have the loader read that file of this machine: the
    error names the split, the row and the field."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png((250, 0, 0)))
    embedded, path_only = {"bytes": _png((0, 0, 250)), "path": None}, {"bytes": None, "path": str(secret)}
    lines = [mnre_line(), mnre_line(relation="None"), mnre_line()]
    split = datasets.Dataset.from_dict(
        {
            **{key: [line[key] for line in lines] for key in ("token", "h", "t", "img_id")},
            "relation": [MNRE_RELATIONS.index(line["relation"]) for line in lines],
            "image": [embedded, path_only if field == "image" else embedded, embedded],
            "object_crops": [[embedded], [embedded, path_only if field != "image" else embedded], []],
        },
        features=datasets.Features(
            {
                "token": datasets.List(datasets.Value("string")),
                "h": {"name": datasets.Value("string"), "pos": datasets.List(datasets.Value("int32"))},
                "t": {"name": datasets.Value("string"), "pos": datasets.List(datasets.Value("int32"))},
                "img_id": datasets.Value("string"),
                "relation": datasets.ClassLabel(names=list(MNRE_RELATIONS)),
                "image": datasets.Image(),
                "object_crops": datasets.List(datasets.Image()),
            }
        ),
    )
    hub = datasets.DatasetDict({"train": split})
    with pytest.raises(MNREFormatError) as error:
        load_mnre_hub(hub, "user/mnre", make_processor(), cache_dir=tmp_path / "cache")
    assert str(error.value) == (
        f"user/mnre[train][1]: field '{field}' holds a path ({str(secret)!r}) but no bytes: a dataset's images are "
        "read from the bytes it embeds, never from a path (python -m mre_data.export_mnre embeds them)"
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
