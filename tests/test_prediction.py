"""Predictions for a whole corpus (`run_mre.py --do_predict --test_file POSTS`): a post file predicted a shard at a
time gives the bytes of a one-piece prediction; an interrupted prediction resumes from its finished shards and only
those; a changed post, image or model is never served an old shard; two processes write the same file; the progress
bar counts posts per second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _post_fixtures import own_posts, unlabelled, write_posts
from interruptions import Killed, kill_at_replace
from transformers import TrainingArguments

import run_mre
from modeling_hvformer import HVFormerForRelationExtraction
from mre_data.post_files import PostFormatError
from mre_run.prediction import model_digest, scan_posts
from processing.processing_hvformer import HVFormerProcessor
from training.run_folder import PREDICTION_SHARDS_FOLDER, PREDICTIONS_FILE

PROJECT = Path(__file__).resolve().parents[1]
POSTS = 10
QUIET = ["--per_device_eval_batch_size", "2", "--logging_strategy", "no", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A model trained one step on 6 posts (model/), and 10 other posts to predict, unlabelled (posts.jsonl) and
    labelled (labelled.jsonl)."""
    root = tmp_path_factory.mktemp("corpus")
    write_posts(root / "train.jsonl", own_posts(root, 6, seed=0, prefix="train"))
    posts = own_posts(root, POSTS, seed=3, prefix="post")
    write_posts(root / "labelled.jsonl", posts)
    write_posts(root / "posts.jsonl", unlabelled(posts))
    run = root / "run"
    run_mre.main(
        [
            *("--train_file", str(root / "train.jsonl"), "--validation_file", str(root / "train.jsonl")),
            *("--do_predict", "false", "--max_steps", "1", "--output_dir", str(run)),
            *("--cache_dir", str(root / "cache"), *QUIET),
        ]
    )
    shutil.copytree(run / "model", root / "model")
    return root


def predict(corpus: Path, output_dir: Path, shard_size: int, *extra: str, test_file: str = "posts.jsonl") -> dict:
    return run_mre.main(command(corpus, output_dir, shard_size, *extra, test_file=test_file))


def command(corpus: Path, output_dir: Path, shard_size: int, *extra: str, test_file: str = "posts.jsonl") -> list:
    return [
        *("--model_name_or_path", str(corpus / "model"), "--do_train", "false", "--do_eval", "false"),
        *("--do_predict", "true", "--test_file", str(corpus / test_file), "--output_dir", str(output_dir)),
        *("--prediction_shard_size", str(shard_size), "--cache_dir", str(output_dir) + "-cache", *QUIET, *extra),
    ]


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def one_piece(corpus, tmp_path_factory) -> bytes:
    """The predictions of the 10 posts in one shard."""
    output_dir = tmp_path_factory.mktemp("one") / "run"
    results = predict(corpus, output_dir, 1000)
    assert results["test_shards_predicted"] == 1 and results["test_examples"] == POSTS
    return (output_dir / PREDICTIONS_FILE).read_bytes()


def test_sharded_prediction_writes_the_bytes_of_a_one_piece_prediction(corpus, one_piece, tmp_path):
    results = predict(corpus, tmp_path / "run", 4)
    assert (tmp_path / "run" / PREDICTIONS_FILE).read_bytes() == one_piece
    assert ids(tmp_path / "run" / PREDICTIONS_FILE) == [str(index) for index in range(POSTS)]
    assert (results["test_shards_predicted"], results["test_shards_reused"]) == (3, 0)  # 4 + 4 + 2 posts
    assert results["test_examples"] == POSTS and results["test_images_loaded"] == POSTS
    assert not (tmp_path / "run" / PREDICTION_SHARDS_FOLDER).exists()  # the shards go once the file is whole


def test_labelled_posts_are_scored_over_every_shard(corpus, tmp_path):
    sharded = predict(corpus, tmp_path / "sharded", 4, test_file="labelled.jsonl")
    whole = predict(corpus, tmp_path / "whole", 1000, test_file="labelled.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "sharded" / PREDICTIONS_FILE).read_text().splitlines()]
    correct = sum(row["gold"] == row["predicted"] for row in rows)
    assert sharded["test_accuracy"] == pytest.approx(correct / POSTS)
    for name in ("accuracy", "precision", "recall", "f1", "loss"):
        assert sharded[f"test_{name}"] == pytest.approx(whole[f"test_{name}"], abs=1e-6)


def test_an_interrupted_prediction_resumes_from_its_finished_shards(corpus, one_piece, tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    armed = kill_at_replace(monkeypatch, output_dir / PREDICTION_SHARDS_FOLDER / "shard-00002.json")
    with pytest.raises(Killed):  # shard 2's predictions are written, its record is not: it is not finished
        predict(corpus, output_dir, 2)
    shards = output_dir / PREDICTION_SHARDS_FOLDER
    assert sorted(path.name for path in shards.glob("shard-*")) == [
        *("shard-00000.json", "shard-00000.jsonl", "shard-00001.json", "shard-00001.jsonl", "shard-00002.jsonl")
    ]
    finished = {path.name: path.stat().st_mtime_ns for path in shards.glob("shard-0000[01].*")}
    seen: dict[str, int] = {}
    replace = os.replace

    def watch(source, destination):  # the mtimes of the finished shards just before the shards are joined
        if Path(destination).name == PREDICTIONS_FILE:
            seen.update({path.name: path.stat().st_mtime_ns for path in shards.glob("shard-0000[01].*")})
        replace(source, destination)

    armed[0] = False
    monkeypatch.setattr(os, "replace", watch)
    results = predict(corpus, output_dir, 2)
    assert (results["test_shards_reused"], results["test_shards_predicted"]) == (2, 3)
    assert seen == finished  # reused as they were, not written again
    assert (output_dir / PREDICTIONS_FILE).read_bytes() == one_piece
    assert results["test_examples"] == POSTS


def interrupted(corpus: Path, output_dir: Path, monkeypatch, test_file: str = "posts.jsonl") -> None:
    """A prediction in shards of 4 killed before its last shard (of 3) was finished."""
    armed = kill_at_replace(monkeypatch, output_dir / PREDICTION_SHARDS_FOLDER / "shard-00002.json")
    with pytest.raises(Killed):
        predict(corpus, output_dir, 4, test_file=test_file)
    armed[0] = False


def test_a_changed_post_or_image_is_not_served_an_old_shard(corpus, tmp_path, monkeypatch, caplog):
    own = tmp_path / "own"
    shutil.copytree(corpus, own, ignore=shutil.ignore_patterns("run", "cache"))
    interrupted(own, tmp_path / "run", monkeypatch)
    posts = [json.loads(line) for line in (own / "posts.jsonl").read_text().splitlines()]
    posts[5]["text"] += " !!"  # a post of shard 1
    write_posts(own / "posts.jsonl", posts)
    image = own / posts[1]["image"]  # an image of shard 0, rewritten (another size and time)
    image.write_bytes(image.read_bytes() + b"\0")
    results = predict(own, tmp_path / "run", 4)
    assert (results["test_shards_reused"], results["test_shards_predicted"]) == (0, 3)
    assert "shard-00000 was predicted from other posts (the file or its images changed)" in caplog.text
    assert "shard-00001 was predicted from other posts" in caplog.text
    predict(own, tmp_path / "fresh", 4)
    assert (tmp_path / "run" / PREDICTIONS_FILE).read_bytes() == (tmp_path / "fresh" / PREDICTIONS_FILE).read_bytes()


def test_a_changed_model_is_not_served_an_old_shard(corpus, tmp_path, monkeypatch, caplog):
    own = tmp_path / "own"
    shutil.copytree(corpus, own, ignore=shutil.ignore_patterns("run", "cache"))
    interrupted(own, tmp_path / "run", monkeypatch)
    model = HVFormerForRelationExtraction.from_pretrained(own / "model")
    with torch.no_grad():
        list(model.parameters())[-1].add_(1.0)
    model.save_pretrained(own / "model")  # the same folder, other weights
    results = predict(own, tmp_path / "run", 4)
    assert (results["test_shards_reused"], results["test_shards_predicted"]) == (0, 3)
    assert "shard-00000 was predicted by another model: predicting it again" in caplog.text
    predict(own, tmp_path / "fresh", 4)
    assert (tmp_path / "run" / PREDICTIONS_FILE).read_bytes() == (tmp_path / "fresh" / PREDICTIONS_FILE).read_bytes()


def test_a_finished_prediction_is_returned_only_for_the_same_posts_and_model(corpus, one_piece, tmp_path):
    """A finished run is returned again for the same arguments only while the files they name hold what they held:
    an edited post file, a picture changed in place or a model saved again in the same folder is refused, naming
    what changed."""
    own = tmp_path / "own"
    shutil.copytree(corpus, own, ignore=shutil.ignore_patterns("run", "cache"))
    first = predict(own, tmp_path / "run", 4)
    assert predict(own, tmp_path / "run", 4) == first  # the finished run, returned
    first_image = own / json.loads((own / "posts.jsonl").read_text().splitlines()[0])["image"]
    first_times = (first_image.stat().st_atime_ns, first_image.stat().st_mtime_ns)
    posts = own / "posts.jsonl"
    original = posts.read_bytes()
    posts.write_bytes(original.replace(b'"text": "', b'"text": "Breaking: ', 1))
    with pytest.raises(SystemExit, match=r"holds a run of other arguments:\n  --test_file \(contents\) \""):
        predict(own, tmp_path / "run", 4)
    posts.write_bytes(original)
    image = own / json.loads(original.splitlines()[0])["image"]
    picture = image.read_bytes()
    image.write_bytes(picture + b"\0")  # the same post file, a picture changed in place
    with pytest.raises(SystemExit, match=r"other arguments:\n  --test_file \(images\) \""):
        predict(own, tmp_path / "run", 4)
    image.write_bytes(picture)
    os.utime(image, ns=(first_times[0], first_times[1]))
    assert predict(own, tmp_path / "run", 4) == first  # as it was: the finished run again
    model = HVFormerForRelationExtraction.from_pretrained(own / "model")
    with torch.no_grad():
        list(model.parameters())[-1].add_(1.0)
    model.save_pretrained(own / "model")
    with pytest.raises(SystemExit, match=r"other arguments:\n  --model_name_or_path \(contents\) \""):
        predict(own, tmp_path / "run", 4)
    assert (tmp_path / "run" / PREDICTIONS_FILE).read_bytes() == one_piece  # nothing in the folder changed


def test_the_model_digest_follows_the_weights_and_the_precision(corpus):
    processor = HVFormerProcessor.from_pretrained(corpus / "model")
    model = HVFormerForRelationExtraction.from_pretrained(corpus / "model")
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    digest = model_digest(model, processor, args)
    assert model_digest(model, processor, args) == digest
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert model_digest(model, processor, args) != digest
    args.bf16_full_eval = True
    assert len({digest, model_digest(model, processor, args)}) == 2


def test_a_bad_row_anywhere_is_an_error_before_anything_is_predicted(corpus, tmp_path):
    posts = [json.loads(line) for line in (corpus / "posts.jsonl").read_text().splitlines()]
    posts[8]["id"], posts[2]["id"] = "same", "same"
    bad = write_posts(corpus / "bad.jsonl", posts)
    with pytest.raises(PostFormatError, match=r"bad.jsonl:9: column 'id': 'same' is the id of .*bad.jsonl:3 too"):
        scan_posts(bad, 0, ["no_relation"], use_images=True)
    with pytest.raises(SystemExit, match=r"bad.jsonl:9: column 'id'"):
        predict(corpus, tmp_path / "run", 4, test_file="bad.jsonl")
    assert not (tmp_path / "run" / PREDICTION_SHARDS_FOLDER).exists()


def test_the_progress_bar_counts_posts_per_second(corpus, tmp_path, capsys):
    predict(corpus, tmp_path / "run", 4, "--disable_tqdm", "false")
    err = capsys.readouterr().err
    assert f"{POSTS}/{POSTS}" in err and " posts/s" in err and "Predicting" in err


@pytest.mark.slow
def test_two_processes_write_the_file_of_one_process(corpus, one_piece, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo) in shards of 4: the bytes of the one-process, one-piece prediction."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29643"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    arguments = command(corpus, tmp_path / "two", 4)
    completed = subprocess.run(
        [*torchrun, str(PROJECT / "run_mre.py"), *arguments], cwd=PROJECT, env=env, capture_output=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "two" / PREDICTIONS_FILE).read_bytes() == one_piece
    results = json.loads((tmp_path / "two" / "all_results.json").read_text())
    assert results["test_shards_predicted"] == 3 and results["test_examples"] == POSTS
