"""A user's own posts: JSON Lines, CSV and Parquet files read into the cached splits, every bad row an error naming the
file, the line and the column; run_mre.py training on a 3-relation schema of its own (with and without a none label)
and predicting an unlabelled file, with one and two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _data_fixtures import make_processor
from _post_fixtures import OWN_RELATIONS, own_posts, unlabelled, write_posts

import run_mre
from modeling_hvformer import HVFormerConfig
from mre_data.mnre_dataset import MNREImageError, image_report, load_post_files
from mre_data.post_files import PostFormatError, post_relations, read_post_file
from training.metrics import mre_scores

PROJECT = Path(__file__).resolve().parents[1]
SORTED_RELATIONS = ["no_relation", "other_link", "person_link"]
FAST = ["--per_device_eval_batch_size", "100", "--logging_strategy", "no", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Train (18 posts, JSON Lines), validation (6, CSV), test (6, Parquet) and the test posts unlabelled (JSON Lines),
    all with their JPEGs in images/."""
    root = tmp_path_factory.mktemp("posts")
    write_posts(root / "train.jsonl", own_posts(root, 18, seed=0, prefix="train"))
    write_posts(root / "val.csv", own_posts(root, 6, seed=1, prefix="val"))
    test = own_posts(root, 6, seed=2, prefix="test")
    write_posts(root / "test.parquet", test)
    write_posts(root / "posts.jsonl", unlabelled(test))
    return root


def processor():
    return make_processor(num_object_crops=2, relation_labels=SORTED_RELATIONS)


# ------------------------------------------------------------------------------------------------------------------
# Reading the files
# ------------------------------------------------------------------------------------------------------------------


def test_jsonl_csv_and_parquet_give_the_same_split(folder, tmp_path):
    posts = own_posts(tmp_path, 4, seed=5)
    posts[1]["id"] = "post-b"
    posts[2]["text"] = f"{posts[2]['subject']} and {posts[2]['subject']} again , with {posts[2]['object']}"
    posts[2]["subject_span"] = [len(posts[2]["subject"]) + 5, 2 * len(posts[2]["subject"]) + 5]  # the second one
    for post in posts:  # Parquet takes its schema from the first row: a null is an absent value
        post.setdefault("subject_span", None)
        post.setdefault("id", None)
    splits = {}
    for suffix in (".jsonl", ".csv", ".parquet"):
        path = write_posts(tmp_path / f"posts{suffix}", posts)
        splits[suffix] = load_post_files({"train": path}, processor(), cache_dir=tmp_path / "cache")["train"]
    jsonl = splits[".jsonl"]
    assert list(jsonl["id"]) == ["0", "post-b", "2", "3"]
    assert list(jsonl["relation"]) == ["no_relation", "person_link", "other_link", "no_relation"]
    assert np.asarray(jsonl["labels"]).tolist() == [0, 2, 1, 0]  # ids of the sorted schema
    subject = posts[2]["subject"]
    assert jsonl[2]["h"]["pos"] == [len(subject) + 5, 2 * len(subject) + 5]
    assert list(jsonl["location"])[:2] == [f"{tmp_path}/posts.jsonl:1", f"{tmp_path}/posts.jsonl:2"]
    assert splits[".csv"]["location"][0] == f"{tmp_path}/posts.csv:2"  # the header is line 1
    assert splits[".parquet"]["location"][0] == f"{tmp_path}/posts.parquet[row 0]"
    for other in (splits[".csv"], splits[".parquet"]):
        for column in ("id", "text", "h", "t", "relation"):
            assert list(other[column]) == list(jsonl[column]), column
        for column in ("input_ids", "marker_positions", "pixel_values", "labels"):
            for mine, theirs in zip(other[column], jsonl[column], strict=True):
                np.testing.assert_array_equal(mine, theirs)
    report = image_report(jsonl)
    assert (report["images_loaded"], report["crops_unavailable"]) == (4, 4)


def test_object_crops_are_read_relative_to_the_file(tmp_path):
    posts = own_posts(tmp_path, 3)
    posts[0]["object_crops"] = [posts[1]["image"], posts[2]["image"], posts[0]["image"]]  # 3 crops, 2 used
    path = write_posts(tmp_path / "posts.jsonl", posts)
    split = load_post_files({"train": path}, processor(), cache_dir=tmp_path / "cache")["train"]
    assert split[0]["crop_paths"] == [str(tmp_path / posts[1]["image"]), str(tmp_path / posts[2]["image"])]
    assert np.asarray(split["object_mask"]).tolist() == [[1, 1], [0, 0], [0, 0]]
    assert image_report(split)["crops_loaded"] == 2 and image_report(split)["crops_unavailable"] == 0


def test_relations_are_the_training_datas_in_a_stable_order():
    records = [{"relation": name} for name in ("person_link", "other_link", "no_relation", "other_link")]
    assert post_relations(records, "no_relation", "train.jsonl") == ["no_relation", "other_link", "person_link"]
    assert post_relations(records, None, "train.jsonl") == ["no_relation", "other_link", "person_link"]
    assert post_relations(records[:2], None, "train.jsonl") == ["other_link", "person_link"]
    with pytest.raises(PostFormatError, match=r"train.jsonl: --none_label 'None' is not a relation of the training"):
        post_relations(records, "None", "train.jsonl")


BAD_ROWS = {
    "missing column": ({"relation": ...}, r"posts.jsonl:2: column 'relation' is missing"),
    "empty entity": ({"subject": " "}, r"posts.jsonl:2: column 'subject' must be a non-empty string, got ' '"),
    "entity absent": ({"object": "Nowhere Town"}, r"posts.jsonl:2: column 'object': 'Nowhere Town' is absent"),
    "span out of range": ({"subject_span": [0, 999]}, r"posts.jsonl:2: column 'subject_span' = \[0, 999\] is out of"),
    "span elsewhere": ({"object_span": [0, 3]}, r"posts.jsonl:2: column 'object_span' = \[0, 3\] covers"),
    "image outside": ({"image": "../elsewhere.jpg"}, r"posts.jsonl:2: column 'image': '../elsewhere.jpg' leads to"),
    "crops not a list": ({"object_crops": "a.jpg"}, r"posts.jsonl:2: column 'object_crops' must be a list"),
    "same id": ({"id": "0"}, r"posts.jsonl:2: column 'id': '0' is the id of .*posts.jsonl:1 too"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_bad_row_is_an_error_naming_the_file_line_and_column(tmp_path, case):
    overrides, message = BAD_ROWS[case]
    posts = own_posts(tmp_path, 3)
    if case == "same id":
        posts[0]["id"] = "0"
    posts[1] = {key: value for key, value in {**posts[1], **overrides}.items() if value is not ...}
    path = write_posts(tmp_path / "posts.jsonl", posts)
    with pytest.raises(PostFormatError, match=message):
        read_post_file(path, num_object_crops=2)


def test_an_entity_found_twice_asks_for_its_span(tmp_path):
    posts = own_posts(tmp_path, 1)
    posts[0]["text"] = f"{posts[0]['object']} , {posts[0]['subject']} at {posts[0]['object']}"
    path = write_posts(tmp_path / "posts.csv", posts)
    with pytest.raises(PostFormatError, match=r"posts.csv:2: column 'object': .* occurs 2 times .*give column"):
        read_post_file(path, num_object_crops=0)


def test_missing_and_unreadable_images_name_the_line(tmp_path):
    posts = own_posts(tmp_path, 3)
    (tmp_path / posts[2]["image"]).unlink()
    path = write_posts(tmp_path / "posts.jsonl", posts)
    with pytest.raises(MNREImageError, match=r"posts.jsonl:3: column 'image': image .*img_2.jpg is missing"):
        load_post_files({"train": path}, processor(), cache_dir=tmp_path / "cache")
    (tmp_path / posts[2]["image"]).write_bytes(b"not a picture")
    with pytest.raises(MNREImageError, match=r"cannot be decoded .* First error: .*posts.jsonl:3: column 'image'"):
        load_post_files({"train": path}, processor(), cache_dir=tmp_path / "cache")


def test_a_relation_unseen_in_training_is_an_error_naming_it(tmp_path):
    posts = own_posts(tmp_path, 3)
    posts[2]["relation"] = "rival_of"
    path = write_posts(tmp_path / "val.csv", posts)
    with pytest.raises(PostFormatError, match=r"val.csv:4: column 'relation': 'rival_of' is not a relation of the"):
        load_post_files({"val": path}, processor(), cache_dir=tmp_path / "cache")


def test_a_file_of_another_format_is_refused(tmp_path):
    path = tmp_path / "posts.txt"
    path.write_text("{}\n")
    with pytest.raises(PostFormatError, match=r"posts.txt: a post file must be JSON Lines .*, got '.txt'"):
        read_post_file(path, num_object_crops=0)


# ------------------------------------------------------------------------------------------------------------------
# run_mre.py on post files
# ------------------------------------------------------------------------------------------------------------------


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("run") / "own"
    run_mre.main(
        [
            *("--train_file", str(folder / "train.jsonl"), "--validation_file", str(folder / "val.csv")),
            *("--test_file", str(folder / "test.parquet"), "--none_label", "no_relation"),
            *("--output_dir", str(output_dir), "--num_train_epochs", "2", "--cache_dir", str(output_dir) + "-cache"),
            *FAST,
        ]
    )
    return output_dir


def test_training_on_own_relations_with_a_none_label(trained):
    config = HVFormerConfig.from_pretrained(trained / "model")
    assert config.id2label == dict(enumerate(SORTED_RELATIONS)) and config.none_label == "no_relation"
    results = json.loads((trained / "all_results.json").read_text())
    predictions = rows(trained / "predictions.jsonl")
    assert [row["id"] for row in predictions] == [str(index) for index in range(6)]
    assert [row["gold"] for row in predictions] == [OWN_RELATIONS[index % 3] for index in range(6)]
    ids = {name: index for index, name in enumerate(SORTED_RELATIONS)}
    scores = mre_scores(
        [ids[row["predicted"]] for row in predictions], [ids[row["gold"]] for row in predictions], none_label_id=0
    )
    assert results["test_f1"] == pytest.approx(scores["f1"]) and results["test_examples"] == 6
    card = (trained / "model" / "README.md").read_text()
    assert "`no_relation`, `other_link`, `person_link`; `no_relation` means no relation among them" in card


def test_training_without_a_none_label_counts_every_relation(folder, tmp_path):
    output_dir = tmp_path / "every"
    results = run_mre.main(
        [
            *("--train_file", str(folder / "train.jsonl"), "--validation_file", str(folder / "val.csv")),
            *("--test_file", str(folder / "test.parquet"), "--output_dir", str(output_dir)),
            *("--num_train_epochs", "1", "--cache_dir", str(tmp_path / "cache"), *FAST),
        ]
    )
    config = HVFormerConfig.from_pretrained(output_dir / "model")
    assert config.none_label is None and list(config.id2label.values()) == SORTED_RELATIONS
    assert results["test_f1"] == pytest.approx(results["test_accuracy"])
    assert results["test_precision"] == pytest.approx(results["test_accuracy"])
    assert "all relations (this schema has no" in (output_dir / "model" / "README.md").read_text()


def predict_command(trained: Path, folder: Path, output_dir: Path) -> list[str]:
    return [
        *("--model_name_or_path", str(trained / "model"), "--do_train", "false", "--do_eval", "false"),
        *("--do_predict", "true", "--test_file", str(folder / "posts.jsonl"), "--output_dir", str(output_dir)),
        *("--cache_dir", str(output_dir) + "-cache", *FAST),
    ]


def test_predicting_an_unlabelled_file_with_a_trained_model(trained, folder, tmp_path):
    results = run_mre.main(predict_command(trained, folder, tmp_path / "predict"))
    predicted = rows(tmp_path / "predict" / "predictions.jsonl")
    labelled = rows(trained / "predictions.jsonl")
    assert [row["id"] for row in predicted] == [str(index) for index in range(6)]
    assert all("gold" not in row for row in predicted) and "test_f1" not in results
    for mine, theirs in zip(predicted, labelled, strict=True):
        assert mine["predicted"] == theirs["predicted"]
        assert set(mine["expert_weights"]) == {"<s>", "<o>"}
        for label, probability in theirs["probabilities"].items():
            assert mine["probabilities"][label] == pytest.approx(probability, abs=1e-5)


def test_predicting_without_a_trained_model_or_a_test_file_is_a_usage_error(folder, tmp_path):
    output = ["--output_dir", str(tmp_path / "run"), *FAST]
    with pytest.raises(SystemExit, match=r"needs a trained model \(--model_name_or_path\)"):
        run_mre.main(
            ["--do_train", "false", "--do_eval", "false", "--test_file", str(folder / "posts.jsonl"), *output]
        )
    with pytest.raises(SystemExit, match=r"--validation_file needed"):
        run_mre.main(
            ["--train_file", str(folder / "train.jsonl"), "--test_file", str(folder / "posts.jsonl"), *output]
        )


@pytest.mark.slow
def test_two_processes_predict_each_post_once_as_one_process(trained, folder, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo) on the unlabelled file: the same rows, in input order, as one process."""
    single, double = tmp_path / "one", tmp_path / "two"
    run_mre.main(predict_command(trained, folder, single))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29641"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [*torchrun, str(PROJECT / "run_mre.py"), *predict_command(trained, folder, double)]
    completed = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    one, two = rows(single / "predictions.jsonl"), rows(double / "predictions.jsonl")
    assert [row["id"] for row in two] == [row["id"] for row in one] == [str(index) for index in range(6)]
    for mine, theirs in zip(two, one, strict=True):
        assert mine["predicted"] == theirs["predicted"]
        for label, probability in theirs["probabilities"].items():
            assert mine["probabilities"][label] == pytest.approx(probability, abs=1e-5)


def test_an_image_linked_from_outside_the_folder_is_refused_and_an_absolute_path_is_taken(tmp_path):
    posts = own_posts(tmp_path / "data", 2)
    outside = tmp_path / "elsewhere.jpg"
    (tmp_path / "data" / posts[1]["image"]).rename(outside)
    (tmp_path / "data" / "images" / "link.jpg").symlink_to(outside)
    posts[1]["image"] = "images/link.jpg"
    path = write_posts(tmp_path / "data" / "posts.jsonl", posts)
    with pytest.raises(
        PostFormatError, match=r"posts.jsonl:2: column 'image': 'images/link.jpg' leads to .*elsewhere"
    ):
        read_post_file(path, num_object_crops=0)
    posts[1]["image"] = str(outside)  # the user named it in their own file
    records = read_post_file(write_posts(path, posts), num_object_crops=0)
    assert records[1]["image_path"] == str(outside)
