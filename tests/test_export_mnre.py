"""`python -m mre_data.export_mnre`: an MNRE-shaped folder (real JPEGs, crops, `.pth` and `.json` mappings) as a
Hub dataset repository that `datasets.load_dataset` reads with `Image` features, one row per line."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from _data_fixtures import build_small_sample
from huggingface_hub import DatasetCard
from mnre_folder import write_mnre_folder

import run_mre
from modeling_hvformer import MNRE_RELATIONS
from mre_data import export_mnre as export_module
from mre_data.export_mnre import ExportDestinationError, export_mnre, main
from mre_data.mnre import MNREFormatError
from mre_data.mnre_dataset import MNRECropsError, MNREImageError
from mre_data.sample_data import SAMPLE_RELATIONS, build_sample_dataset

SIZES = {"train": 10, "val": 5, "test": 5}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_mnre_folder(tmp_path_factory.mktemp("export") / "mnre", sizes=SIZES)


def crops_of(folder: Path, split: str, line_index: int) -> list[str]:
    """The crop file names the fixture's mapping gives a line (`.pth` for train/test, `.json` for val)."""
    if split == "val":
        mapping = {int(key): value for key, value in json.loads((folder / "mre_dev_dict.json").read_text()).items()}
    else:
        mapping = torch.load(folder / f"mre_{split}_dict.pth", weights_only=True)
    return mapping.get(line_index, [])


def test_export_loads_with_image_features_one_row_per_line(folder, tmp_path, capsys):
    output = tmp_path / "hub"
    main(["--data_dir", str(folder), "--output_dir", str(output)])
    assert "train: 10 posts, 10 images" in capsys.readouterr().out
    loaded = datasets.load_dataset(str(output))
    assert set(loaded) == {"train", "validation", "test"}
    features = loaded["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["object_crops"], datasets.List) and isinstance(
        features["object_crops"].feature, datasets.Image
    )
    assert features["relation"].names == list(MNRE_RELATIONS)
    raw = loaded.cast_column("image", datasets.Image(decode=False))
    raw = raw.cast_column("object_crops", datasets.List(datasets.Image(decode=False)))
    for hub_split, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        lines = [ast.literal_eval(line) for line in (folder / f"mnre_{split}.txt").read_text().splitlines()]
        rows = raw[hub_split]
        assert len(rows) == len(lines) == SIZES[split]
        for index, (row, line) in enumerate(zip(rows, lines, strict=True)):
            assert row["id"] == f"{split}-{index}"
            assert (row["token"], row["h"], row["t"], row["img_id"]) == (
                line["token"],
                line["h"],
                line["t"],
                line["img_id"],
            )
            assert features["relation"].int2str(row["relation"]) == line["relation"]
            assert row["image"]["bytes"] == (folder / "img_org" / split / line["img_id"]).read_bytes()
            expected = crops_of(folder, split, index)
            assert [crop["path"] for crop in row["object_crops"]] == expected
            for crop, name in zip(row["object_crops"], expected, strict=True):
                assert crop["bytes"] == (folder / "img_vg" / split / "crops" / name).read_bytes()
    decoded = loaded["train"][4]  # the fixture gives line 4 four crops
    assert decoded["image"].mode == "RGB" and len(decoded["object_crops"]) == 4

    card = DatasetCard.load(output / "README.md", ignore_metadata_errors=False)
    assert card.data.license == "other" and "multimodal-relation-extraction" in card.data.tags
    assert {entry["split"] for entry in card.data.configs[0]["data_files"]} == {"train", "validation", "test"}
    assert "| train | 10 | 10 |" in card.text and "@inproceedings{zheng2021mnre" in card.text


def test_large_splits_are_streamed_into_several_shards(folder, tmp_path, monkeypatch):
    """A shard closes once it holds `max_shard_bytes`, checked between row groups: with groups of 3 posts and a
    1-byte limit, the 10 train posts make 4 shards, named as the Hub names them, which load back whole."""
    monkeypatch.setattr(export_module, "ROWS_PER_GROUP", 3)
    reports = export_mnre(folder, tmp_path / "hub", max_shard_bytes=1)
    train = next(report for report in reports if report.split == "train")
    assert train.shards == [f"data/train-{index:05d}-of-00004.parquet" for index in range(4)]
    written = sorted(path.name for path in (tmp_path / "hub" / "data").iterdir() if path.name.startswith("train"))
    assert written == [Path(shard).name for shard in train.shards]
    assert train.num_bytes == sum((tmp_path / "hub" / shard).stat().st_size for shard in train.shards)
    assert datasets.load_dataset(str(tmp_path / "hub"), split="train")["id"] == [f"train-{i}" for i in range(10)]


def test_missing_files_follow_the_loader_policy(folder, tmp_path):
    broken = tmp_path / "broken"
    write_mnre_folder(broken, sizes={"train": 6})
    (broken / "img_org" / "train" / "post_train_0002.jpg").unlink()
    (broken / "img_vg" / "train" / "crops" / "post_train_0003_crop1.jpg").unlink()
    output = tmp_path / "hub"
    with pytest.raises(MNREImageError, match=r"split 'train': 1 of 6 images are missing \(first: .*post_train_0002"):
        export_mnre(broken, output)
    assert not output.exists() and [path.name for path in tmp_path.iterdir()] == ["broken"]

    (report,) = export_mnre(broken, output, missing_images="blank")
    assert (report.images_embedded, len(report.images_missing)) == (5, 1)
    assert len(report.crops_missing) == 1 and report.crops_missing[0].endswith("post_train_0003_crop1.jpg")
    rows = datasets.load_dataset(str(output), split="train")
    assert rows[2]["image"] is None and rows[1]["image"] is not None
    assert [crop is None for crop in rows[3]["object_crops"]] == [False, True, False]
    assert "| train | 6 | 5 | " in (output / "README.md").read_text()


@pytest.mark.slow
def test_training_from_the_export_matches_training_from_the_folder(folder, tmp_path):
    """`run_mre.py --dataset_name EXPORT` against `--data_dir FOLDER` on the same seed: the same metrics and a
    byte-identical `predictions.jsonl` (same ids, tokens, labels, pixels and order)."""
    export_mnre(folder, tmp_path / "hub")
    common = ["--num_train_epochs", "2", "--per_device_eval_batch_size", "64", "--disable_tqdm", "true"]
    common += ["--logging_strategy", "no", "--learning_rate", "5e-3"]
    from_folder = run_mre.main(
        ["--data_dir", str(folder), "--output_dir", str(tmp_path / "folder"), "--cache_dir", str(tmp_path / "c1")]
        + common
    )
    from_export = run_mre.main(
        ["--dataset_name", str(tmp_path / "hub"), "--output_dir", str(tmp_path / "export")]
        + ["--cache_dir", str(tmp_path / "c2")]
        + common
    )
    scores = [f"{split}_{name}" for split in ("eval", "test") for name in ("precision", "recall", "f1", "accuracy")]
    assert {name: from_export[name] for name in scores} == {name: from_folder[name] for name in scores}
    assert from_export["train_loss"] == from_folder["train_loss"]
    assert from_export["test_crops_loaded"] == from_folder["test_crops_loaded"] > 0
    predictions = (tmp_path / "folder" / "predictions.jsonl").read_bytes()
    assert (tmp_path / "export" / "predictions.jsonl").read_bytes() == predictions
    assert predictions.count(b"\n") == SIZES["test"]
    card = json.loads((tmp_path / "export" / "model_card.json").read_text())
    assert card["dataset_name"] == "hub" and card["dataset_id"] is None


def test_the_dataset_replaces_a_configs_data_dir(folder, tmp_path, caplog):
    """`configs/paper.yaml` sets `data_dir`; `--dataset_name` after it reads the dataset instead (said at info
    level)."""
    export_mnre(folder, tmp_path / "hub")
    with caplog.at_level("INFO", logger="run_mre"):
        run_mre.main(
            ["--data_dir", str(tmp_path / "absent"), "--dataset_name", str(tmp_path / "hub"), "--output_dir"]
            + [str(tmp_path / "run"), "--num_train_epochs", "1", "--disable_tqdm", "true", "--do_eval", "false"]
            + ["--do_train", "false", "--cache_dir", str(tmp_path / "cache"), "--log_level", "info"]
        )
    assert f"Reading {tmp_path / 'hub'}, not --data_dir {tmp_path / 'absent'}" in caplog.text
    assert (tmp_path / "run" / "predictions.jsonl").read_text().count("\n") == SIZES["test"]


# ------------------------------------------------------------------------------------------------------------------
# The output folder: only a previous export is ever replaced
# ------------------------------------------------------------------------------------------------------------------


def test_a_folder_that_is_not_an_export_is_never_replaced(folder, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--data_dir", str(folder), "--output_dir", str(mine), *extra])
        assert exit_info.value.code == 2
        assert (
            f"error: output folder {mine} is not empty and is not a previous export (it has no hvformer_export.json): "
            "choose an empty or new folder (the export never replaces a folder it did not write)"
        ) in capsys.readouterr().err
        assert [path.name for path in mine.iterdir()] == ["notes.txt"]
        assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("where", ["the data folder", "inside the data folder", "holding the data folder"])
def test_an_output_folder_overlapping_the_data_is_refused(tmp_path, where):
    data = write_mnre_folder(tmp_path / "parent" / "own", sizes={"train": 2})
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    output = {"the data folder": data, "inside the data folder": data / "hub", "holding the data folder": data.parent}
    with pytest.raises(ExportDestinationError) as error:
        export_mnre(data, output[where])
    assert str(error.value) == (
        f"output folder {output[where]} and the data {data} overlap (the same, or one inside the other): the export "
        "replaces its output folder whole; choose an output folder outside the data"
    )
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before


def test_a_previous_export_is_replaced_only_with_overwrite(folder, tmp_path):
    output = tmp_path / "hub"
    export_mnre(folder, output)
    manifest = json.loads((output / "hvformer_export.json").read_text())
    assert manifest["files"][0] == "README.md" and len(manifest["files"]) == 4  # the card and one shard per split
    with pytest.raises(ExportDestinationError, match="holds a previous export: pass overwrite=True"):
        export_mnre(folder, output)
    (output / "README.md").write_text("an older card")
    export_mnre(folder, output, overwrite=True)
    assert (output / "README.md").read_text().startswith("---\n")
    (output / "data" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportDestinationError, match=r"it holds 1 entries the export did not write: data/mine.txt"):
        export_mnre(folder, output, overwrite=True)
    assert (output / "data" / "mine.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------------------------------
# Crops that lead outside their folder; a folder without crops
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["absolute", "symlink"])
def test_a_crop_outside_the_crops_folder_is_not_embedded(tmp_path, how):
    data = write_mnre_folder(tmp_path / "own", sizes={"train": 2})
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the Hub")
    crops = data / "img_vg" / "train" / "crops"
    name = str(secret) if how == "absolute" else "link.jpg"
    if how == "symlink":
        (crops / name).symlink_to(secret)
    torch.save({0: [name]}, data / "mre_train_dict.pth")
    with pytest.raises(MNREFormatError, match=rf"key 0: crop '.*' leads to {secret}, outside the crops folder"):
        export_mnre(data, tmp_path / "hub", missing_images="blank")
    assert not (tmp_path / "hub").exists()


def test_a_folder_without_crops_is_exported_only_when_told_and_then_trains_only_when_told(tmp_path, capsys):
    """Without `img_vg/`: refused; with `--missing_crops none`, each row's `object_crops` is null, so that loading the
    export refuses it as loading the folder does, and a run told `--missing_crops none` reports the examples that went
    without crops in all_results.json and its summary."""
    data = write_mnre_folder(tmp_path / "own", sizes=SIZES)
    shutil.rmtree(data / "img_vg")
    with pytest.raises(MNRECropsError, match=f"no object crops folder {data / 'img_vg'}"):
        export_mnre(data, tmp_path / "hub")
    main(["--data_dir", str(data), "--output_dir", str(tmp_path / "hub"), "--missing_crops", "none"])
    assert "train: 10 posts, 10 images and no crops embedded" in capsys.readouterr().out
    rows = datasets.load_dataset(str(tmp_path / "hub"), split="train")
    assert rows["object_crops"] == [None] * 10
    assert "| train | 10 | 10 | none (no crops) | 0 | 0 |" in (tmp_path / "hub" / "README.md").read_text()

    common = ["--output_dir", str(tmp_path / "run"), "--cache_dir", str(tmp_path / "cache"), "--num_train_epochs"]
    common += ["1", "--disable_tqdm", "true", "--logging_strategy", "no"]
    with pytest.raises(MNRECropsError, match=r"hub\[train\]: 'object_crops' is null in every row: export the MNRE"):
        run_mre.main(["--dataset_name", str(tmp_path / "hub"), *common])
    capsys.readouterr()
    metrics = run_mre.main(["--dataset_name", str(tmp_path / "hub"), "--missing_crops", "none", *common])
    assert (metrics["train_crops_unavailable"], metrics["test_crops_loaded"]) == (10, 0)
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert (results["train_crops_unavailable"], results["val_crops_unavailable"]) == (10, 5)
    assert "Without object crops (none given, none made), examples: train 10, val 5, test 5" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------------
# The relations and the card of data other than MNRE: the built-in sample
# ------------------------------------------------------------------------------------------------------------------


def test_the_samples_export_has_the_samples_relations_and_title(tmp_path):
    sample = build_small_sample(tmp_path / "sample")
    export_mnre(sample, tmp_path / "hub")
    features = datasets.load_dataset(str(tmp_path / "hub"), split="train").features
    assert features["relation"].names == ["None", *SAMPLE_RELATIONS]
    card = (tmp_path / "hub" / "README.md").read_text()
    assert DatasetCard.load(tmp_path / "hub" / "README.md").data.pretty_name == "hvformer built-in sample"
    assert "\n# hvformer built-in sample\n" in card and "# MNRE" not in card and "zheng2021mnre" not in card
    assert 'load_dataset("path/to/dataset")' in card and str(tmp_path) not in card
    assert "0 `None`, 1 `/per/per/peer`, 2 `/per/org/member_of`" in card

    labels = ["None", *reversed(SAMPLE_RELATIONS)]
    main(["--data_dir", str(sample), "--output_dir", str(tmp_path / "own"), "--relation_labels", *labels])
    assert datasets.load_dataset(str(tmp_path / "own"), split="train").features["relation"].names == labels
    with pytest.raises(MNREFormatError, match=r"mnre_train.txt:\d+: field 'relation' = '/per/per/peer' is not one"):
        export_mnre(sample, tmp_path / "fewer", relation_labels=labels[:-1])


@pytest.mark.slow
def test_training_from_the_samples_export_matches_the_main_job(tmp_path):
    """The main job (the built-in sample, no `--data_dir`) and `--dataset_name` of the sample's export, on the same
    seed and a short schedule: the same relations, metrics and a byte-identical `predictions.jsonl`."""
    export_mnre(build_sample_dataset(), tmp_path / "hub")
    common = ["--num_train_epochs", "2", "--max_train_samples", "64", "--per_device_eval_batch_size", "100"]
    common += ["--disable_tqdm", "true", "--logging_strategy", "no"]
    main_job = run_mre.main(["--output_dir", str(tmp_path / "main"), "--cache_dir", str(tmp_path / "c1"), *common])
    from_export = run_mre.main(
        ["--dataset_name", str(tmp_path / "hub"), "--output_dir", str(tmp_path / "export")]
        + ["--cache_dir", str(tmp_path / "c2"), *common]
    )
    scores = [f"{split}_{name}" for split in ("eval", "test") for name in ("precision", "recall", "f1", "accuracy")]
    assert {name: from_export[name] for name in scores} == {name: main_job[name] for name in scores}
    predictions = (tmp_path / "main" / "predictions.jsonl").read_bytes()
    assert (tmp_path / "export" / "predictions.jsonl").read_bytes() == predictions
    assert predictions.count(b"\n") == 100
