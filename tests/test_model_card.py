"""The generated model card: valid Hub metadata (huggingface_hub's own parsing), one metric convention, the measured
results in `model-index` for any dataset, the hyperparameters and environment, a citation, and snippets that run."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from tiny_models import tiny_config
from transformers import TrainingArguments

import run_mre
from training import model_card

METRICS = {
    "eval_precision": 0.5,
    "eval_recall": 0.25,
    "eval_f1": 0.33333,
    "eval_accuracy": 0.75,
    "test_precision": 0.61234,
    "test_recall": 0.5,
    "test_f1": 0.55046,
    "test_accuracy": 0.875,
    "train_loss": 1.25,
}
HYPERPARAMETERS = {"learning_rate": 1e-05, "total_train_batch_size": 32, "precision": "bf16", "seed": 42}


def facts(base_models: list[str], dataset_name: str, dataset_id: str | None = None) -> model_card.CardFacts:
    environment = {"hardware": "1 x NVIDIA H200", "torch": "2.11.0", "transformers": "5.17.0"}
    return model_card.CardFacts(dataset_name, dataset_id, base_models, METRICS, HYPERPARAMETERS, environment)


def render(tmp_path: Path, card_facts: model_card.CardFacts, model_id: str | None = "someone/hvformer-mnre"):
    text = model_card.render_model_card(card_facts, tiny_config(), model_id)
    assert "$" not in text
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    return ModelCard.load(tmp_path / "README.md", ignore_metadata_errors=False)


def test_card_with_hub_ids_has_base_models_dataset_and_model_index(tmp_path):
    local = tmp_path / "encoder"
    local.mkdir()
    base_models = ["bert-base-uncased", "openai/clip-vit-base-patch32", str(local)]
    card = render(tmp_path, facts(base_models, "someone/mnre", "someone/mnre"))
    data = card.data
    setup = configparser.ConfigParser()
    setup.read(Path(run_mre.__file__).with_name("setup.cfg"))
    assert data.license == setup["metadata"]["license"].lower() == "apache-2.0"
    assert data.library_name == "transformers" and data.pipeline_tag == "visual-question-answering"
    assert data.base_model == ["bert-base-uncased", "openai/clip-vit-base-patch32"]
    assert data.datasets == ["someone/mnre"]
    assert "custom_code" in data.tags
    assert data.model_name == "someone/hvformer-mnre"
    test = {result.metric_type: result.metric_value for result in data.eval_results if result.dataset_split == "test"}
    assert test == {"precision": 0.6123, "recall": 0.5, "f1": 0.5505, "accuracy": 0.875}
    validation = [result for result in data.eval_results if result.dataset_split == "validation"]
    assert {result.metric_type: result.metric_value for result in validation}["f1"] == 0.3333
    assert {(result.dataset_type, result.dataset_name) for result in data.eval_results} == {
        ("someone/mnre", "someone/mnre")
    }
    assert "| F1 | 0.3333 | 0.5505 |" in card.text and "| Precision | 0.5000 | 0.6123 |" in card.text
    assert "| Metric | Validation | Test |" in card.text
    assert "fractions in [0, 1]" in card.text
    assert card.text.startswith("\n# someone/hvformer-mnre\n")


def test_card_without_hub_ids_still_publishes_its_results(tmp_path):
    """The built-in sample and a local MNRE folder have no Hub ids: no `datasets` or `base_model`, but a model-index
    whose dataset is named and typed after the dataset's name."""
    card = render(tmp_path, facts([], "MNRE"))
    assert card.data.base_model is None and card.data.datasets is None
    assert {(result.dataset_type, result.dataset_name) for result in card.data.eval_results} == {("mnre", "MNRE")}
    sample = render(tmp_path, facts([], "hvformer built-in sample"))
    assert {result.dataset_type for result in sample.data.eval_results} == {"hvformer-built-in-sample"}
    assert "## Results (hvformer built-in sample)" in sample.text
    assert "| Accuracy | 0.7500 | 0.8750 |" in sample.text
    for section in ("### Pipeline", "### Inference Endpoints", "### Demo", "handler.py", "app.py"):
        assert section in sample.text
    assert 'pipeline("multimodal-relation-extraction", model="someone/hvformer-mnre", trust_remote_code=True)' in (
        sample.text
    )


def test_card_states_use_limits_training_and_citation(tmp_path):
    card = render(tmp_path, facts([], "MNRE"))
    assert "## Intended use and limitations" in card.text and "English social-media post" in card.text
    assert "| `learning_rate` | 1e-05 |" in card.text and "| `precision` | bf16 |" in card.text
    assert "| hardware | 1 x NVIDIA H200 |" in card.text and "| transformers | 5.17.0 |" in card.text
    assert "@inproceedings{liu2024hvformer" in card.text and "10.1145/3589334.3645603" in card.text


def test_card_before_a_hub_id_loads_a_placeholder_not_the_run_folder(tmp_path):
    card = render(tmp_path, facts([], "MNRE"), model_id=None)
    assert card.text.startswith("\n# HVFormer (MNRE)\n")
    assert f'AutoModel.from_pretrained("{model_card.LOCAL_MODEL_ID}"' in card.text
    assert card.data.model_name == "HVFormer (MNRE)"


@pytest.mark.parametrize("name", ["./encoders/text", "/abs/path", "builtin-encoders/text/", "a b"])
def test_local_paths_never_become_base_models(tmp_path, name):
    assert render(tmp_path, facts([name], "someone/mnre", "someone/mnre")).data.base_model is None


def test_card_facts_round_trip(tmp_path):
    original = facts(["bert-base-uncased"], "MNRE")
    original.save(tmp_path / model_card.CARD_FACTS_FILE)
    assert model_card.CardFacts.load(tmp_path / model_card.CARD_FACTS_FILE) == original


def test_training_hyperparameters_count_accumulation_and_processes(tmp_path, monkeypatch):
    """The total train batch size is what one optimizer step sees: per device x accumulation steps x processes."""
    training_args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=8,
        learning_rate=1e-5,
        num_train_epochs=20,
        warmup_steps=12,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        weight_decay=0.01,
        seed=7,
        report_to="none",
    )
    assert model_card.training_hyperparameters(training_args, max_seq_length=80) == {
        "learning_rate": 1e-05,
        "per_device_train_batch_size": 4,
        "total_train_batch_size": 32,
        "num_train_epochs": 20,
        "warmup_steps": 12,
        "lr_scheduler_type": "linear",
        "optim": "adamw_torch",
        "weight_decay": 0.01,
        "precision": "fp32",
        "seed": 7,
        "max_seq_length": 80,
    }
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    assert model_card.training_hyperparameters(training_args, max_seq_length=80)["total_train_batch_size"] == 64
