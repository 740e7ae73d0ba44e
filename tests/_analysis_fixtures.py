"""Fixtures of the analysis tests, loaded with `pytest_plugins = ["_analysis_fixtures"]`: the tiny processor and
model of `analysis_helpers.py`, the sample dataset, one analysis of its val split and one forward pass over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _data_fixtures import make_processor
from analysis_helpers import HISTORY, NUM_CROPS, RELATIONS
from tiny_models import tiny_model_for, tiny_text_config

from analysis import HISTORY_FILE, analyse
from modeling_hvformer import HVFormerForRelationExtraction
from mre_data.collator import HVFormerDataCollator
from mre_data.mnre_dataset import load_mnre
from mre_data.sample_data import build_sample_dataset
from processing.processing_hvformer import HVFormerProcessor


@pytest.fixture(scope="module")
def processor() -> HVFormerProcessor:
    return make_processor(tiny_text_config().max_position_embeddings, NUM_CROPS, RELATIONS)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    return build_sample_dataset(tmp_path_factory.mktemp("sample") / "data", sizes={"train": 8, "val": 16, "test": 8})


@pytest.fixture(scope="module")
def data(sample_dir, processor, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return load_mnre(sample_dir, processor, splits=["train", "val"], relation_labels=RELATIONS, cache_dir=cache)


@pytest.fixture(scope="module")
def model(processor) -> HVFormerForRelationExtraction:
    return tiny_model_for(processor)


@pytest.fixture(scope="module")
def analysed(model, processor, data, tmp_path_factory) -> tuple[dict, Path]:
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / HISTORY_FILE).write_text(json.dumps(HISTORY))
    output_dir = run_dir / "analysis"
    results = analyse(
        model,
        data["val"],
        HVFormerDataCollator(processor),
        output_dir,
        batch_size=5,  # 16 examples: a last, smaller batch
        history_path=run_dir / HISTORY_FILE,
        progress_bar=False,
    )
    return results, output_dir


@pytest.fixture(scope="module")
def reference(model, processor, data) -> dict:
    """The model's outputs on the whole val split in one batch, for recomputing the analysis by hand."""
    batch = HVFormerDataCollator(processor)([data["val"][i] for i in range(len(data["val"]))])
    batch.pop("labels")
    with torch.no_grad():
        outputs = model(**batch, output_tracking_maps=True)
    return {"outputs": outputs, "rows": torch.arange(len(data["val"]))}


@pytest.fixture(scope="module")
def model_dir(model, processor, tmp_path_factory) -> Path:
    """The tiny model and its processor saved in a folder, as `run_mre.py` saves them."""
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
