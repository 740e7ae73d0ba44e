"""The generated model card: valid Hub metadata (huggingface_hub's own parsing), one metric convention, Try it."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from tiny_models import tiny_config

import run_mre
from training import hub

METRICS = {"test_precision": 0.61234, "test_recall": 0.5, "test_f1": 0.55046, "test_accuracy": 0.875}


def render(tmp_path: Path, base_models: list[str], dataset_name: str) -> ModelCard:
    text = hub.render_model_card(
        hub.MODEL_CARD_TEMPLATE, "someone/hvformer-mnre", tiny_config(), base_models, dataset_name, METRICS
    )
    assert "$" not in text
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    return ModelCard.load(tmp_path / "README.md", ignore_metadata_errors=False)


def test_card_with_hub_ids_has_base_models_dataset_and_model_index(tmp_path):
    local = tmp_path / "encoder"
    local.mkdir()
    card = render(tmp_path, ["bert-base-uncased", "openai/clip-vit-base-patch32", str(local)], "someone/mnre")
    data = card.data
    setup = configparser.ConfigParser()
    setup.read(Path(run_mre.__file__).with_name("setup.cfg"))
    assert data.license == setup["metadata"]["license"].lower() == "apache-2.0"
    assert data.library_name == "transformers" and data.pipeline_tag == "visual-question-answering"
    assert data.base_model == ["bert-base-uncased", "openai/clip-vit-base-patch32"]
    assert data.datasets == ["someone/mnre"]
    assert "custom_code" in data.tags
    assert data.model_name == "someone/hvformer-mnre"
    results = {result.metric_type: result for result in data.eval_results}
    assert {name: result.metric_value for name, result in results.items()} == {
        "precision": 0.6123,
        "recall": 0.5,
        "f1": 0.5505,
        "accuracy": 0.875,
    }
    assert {(result.dataset_type, result.dataset_split) for result in data.eval_results} == {("someone/mnre", "test")}
    assert "| F1 | 0.5505 |" in card.text and "| Precision | 0.6123 |" in card.text
    assert "fractions in [0, 1]" in card.text


def test_card_of_the_built_in_sample_omits_what_has_no_hub_id(tmp_path):
    card = render(tmp_path, [], "hvformer built-in sample")
    assert card.data.base_model is None and card.data.datasets is None and card.data.eval_results is None
    assert "## Results (hvformer built-in sample, test split)" in card.text
    assert "| Accuracy | 0.8750 |" in card.text
    for section in ("### Pipeline", "### Inference Endpoints", "### Demo", "handler.py", "app.py"):
        assert section in card.text
    assert 'pipeline("multimodal-relation-extraction", model="someone/hvformer-mnre", trust_remote_code=True)' in (
        card.text
    )


@pytest.mark.parametrize("name", ["./encoders/text", "/abs/path", "builtin-encoders/text/", "a b"])
def test_local_paths_never_become_base_models(tmp_path, name):
    assert render(tmp_path, [name], "someone/mnre").data.base_model is None
