"""run_mre.py end to end on the built-in sample: training, the model folder, predictions, the card, the push."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated

import run_mre
from processing.metrics import mre_scores
from processing.mnre import read_mnre_file
from processing.sample_data import SAMPLE_RELATIONS, build_sample_dataset

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
    result = run_isolated(script, str(output_dir), str(image), cwd=workdir)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["labels"] == ["None", *SAMPLE_RELATIONS]
    assert sum(loaded["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_model_card_carries_the_measured_results(full_run):
    output_dir, metrics = full_run
    card = (output_dir / "README.md").read_text()
    _, front_matter, body = card.split("---\n", 2)
    meta = yaml.safe_load(front_matter)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "visual-question-answering"
    assert "custom_code" in meta["tags"] and meta["license"] == "apache-2.0"
    # The built-in sample has no Hub dataset id, so no `datasets` and no model-index; the table holds the results.
    assert "datasets" not in meta and "model-index" not in meta and "base_model" not in meta
    assert f"| F1 | {metrics['test_f1']:.4f} |" in body
    assert f"| Precision | {metrics['test_precision']:.4f} |" in body
    assert "trust_remote_code=True" in body and "$" not in card


class FakeHfApi:
    """Stands in for `huggingface_hub.HfApi`: records what would be uploaded instead of sending it."""

    uploads: list[dict] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        return type("RepoUrl", (), {"repo_id": f"someone/{repo_id}" if "/" not in repo_id else repo_id})()

    def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns):
        folder = Path(folder_path)
        files = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
        ignored = {name for name in files if any(Path(name).match(pattern) for pattern in ignore_patterns)}
        FakeHfApi.uploads.append(
            {"repo_id": repo_id, "files": files - ignored, "card": (folder / "README.md").read_text()}
        )


def test_push_to_hub_uploads_model_processor_code_and_card(full_run, tmp_path, monkeypatch):
    monkeypatch.setattr(run_mre, "HfApi", FakeHfApi)
    FakeHfApi.uploads.clear()
    output_dir = tmp_path / "pushed"
    run_mre.main(
        ["--model_name_or_path", str(full_run[0]), "--output_dir", str(output_dir), "--do_train", "false"]
        + FAST
        + ["--push_to_hub", "true", "--hub_model_id", "hvformer-sample"]
    )
    (upload,) = FakeHfApi.uploads
    assert upload["repo_id"] == "someone/hvformer-sample"
    expected = {
        "config.json",
        "model.safetensors",
        "configuration_hvformer.py",
        "modeling_hvformer.py",
        "tracking_maps.py",
        "processor_config.json",
        "processing_hvformer.py",
        "tokenizer.json",
        "README.md",
        "all_results.json",
        "predictions.jsonl",
    }
    assert expected <= upload["files"], expected - upload["files"]
    assert not any(name.startswith("checkpoint-") for name in upload["files"])
    assert "# hvformer-sample" in upload["card"] and "| F1 | " in upload["card"]


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


def test_seed_summary_is_mean_and_sample_std(tmp_path):
    per_seed = {
        1: {"test_precision": 0.80, "test_recall": 0.70, "test_f1": 0.75, "test_accuracy": 0.9},
        2: {"test_precision": 0.84, "test_recall": 0.74, "test_f1": 0.79, "test_accuracy": 0.9},
        3: {"test_precision": 0.88, "test_recall": 0.78, "test_f1": 0.83, "test_accuracy": 0.9},
    }
    summary = run_mre.summarize_seeds(per_seed, tmp_path)
    assert summary["f1"]["mean"] == pytest.approx(79.0)
    assert summary["f1"]["std"] == pytest.approx(4.0)  # sqrt(((-4)^2 + 0 + 4^2) / 2)
    assert summary["precision"]["mean"] == pytest.approx(84.0)
    assert json.loads((tmp_path / "seeds_summary.json").read_text())["seeds"] == [1, 2, 3]


def test_resume_from_checkpoint_continues_training(tmp_path):
    output_dir = tmp_path / "resumed"
    common = ["--output_dir", str(output_dir), "--max_train_samples", "32", "--max_eval_samples", "16", *FAST]
    common += ["--do_predict", "false", "--save_total_limit", "3"]
    run_mre.main([*common, "--num_train_epochs", "1"])
    first = json.loads((output_dir / "trainer_state.json").read_text())
    assert first["global_step"] == 2
    run_mre.main([*common, "--num_train_epochs", "2"])
    second = json.loads((output_dir / "trainer_state.json").read_text())
    assert second["global_step"] == 4
    assert [entry["epoch"] for entry in second["log_history"] if "eval_f1" in entry] == [1.0, 2.0]


def test_text_only_without_object_crops_runs(tmp_path):
    """The MiniLM text-only experiment's shape: images off, no crop slots, one level (patch embeddings)."""
    output_dir = tmp_path / "no-crops"
    common = ["--output_dir", str(output_dir), "--max_train_samples", "16", "--max_eval_samples", "16", *FAST]
    run_mre.main([*common, "--num_train_epochs", "1", "--use_images", "false", "--num_object_crops", "0"])
    config = json.loads((output_dir / "config.json").read_text())
    assert config["num_object_crops"] == 0 and config["vision_levels"] == [0, 1, 2]
    assert json.loads((output_dir / "all_results.json").read_text())["val_images_disabled"] == 16
