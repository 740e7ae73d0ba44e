"""`run_mre.py --static_shapes` under `torch.compile`: the graphs compiled over a whole run, and the same scores and
predictions as a plain run.

The runs compile with the `eager` backend: dynamo captures and guards the graphs exactly as with Inductor (what is
counted here), without spending a minute generating kernels on the CPU.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

import run_mre
from mre_data import builtin_encoders

SMALL_RUN = [
    *("--num_train_epochs", "2", "--max_train_samples", "20", "--max_eval_samples", "24"),
    *("--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16"),
    *("--hidden_dropout_prob", "0", "--attention_dropout", "0", "--logging_strategy", "no", "--disable_tqdm", "true"),
]
"""Two epochs of 16 + 4 rows, evaluations of 16 + 8: a last, smaller batch in every loop."""
COMPILED = ["--torch_compile", "true", "--torch_compile_backend", "eager"]
SCORES = ("precision", "recall", "f1", "accuracy")
PROBABILITY_TOLERANCE = 1e-5
"""Largest difference of a probability of `predictions.jsonl` between the runs (float rounding only)."""


@pytest.fixture
def without_dropout(monkeypatch):
    """The built-in text encoder without dropout, so that training does not depend on the shapes dropout draws its
    masks in (the ViT has none; `SMALL_RUN` turns HVFormer's own off)."""
    monkeypatch.setattr(
        builtin_encoders, "save_tiny_text_encoder", partial(builtin_encoders.save_tiny_text_encoder, dropout=0.0)
    )


def run(output_dir: Path, *extra: str) -> tuple[dict, dict[str, dict], dict[str, int]]:
    """A run's metrics, its predictions by id, and the frames torch.compile compiled in it."""
    torch._dynamo.reset()
    counters.clear()
    metrics = run_mre.main(["--output_dir", str(output_dir), *SMALL_RUN, *extra])
    lines = (output_dir / run_mre.PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
    predictions = {row["id"]: row for row in map(json.loads, lines)}
    compiled = {"frames": counters["frames"]["total"], "graphs": counters["stats"]["unique_graphs"]}
    torch._dynamo.reset()
    return metrics, predictions, compiled


def assert_same_predictions(predictions: dict[str, dict], expected: dict[str, dict]) -> None:
    assert predictions.keys() == expected.keys()
    for example_id, row in predictions.items():
        assert row["predicted"] == expected[example_id]["predicted"], example_id
        for label, probability in row["probabilities"].items():
            assert abs(probability - expected[example_id]["probabilities"][label]) <= PROBABILITY_TOLERANCE


@pytest.mark.slow
def test_compiled_static_shape_run_compiles_one_graph_and_scores_as_a_plain_run(tmp_path, without_dropout):
    """Two epochs with a smaller last batch, compiled with static shapes: one frame, one graph, for the whole run (the
    training forward; Trainer evaluates the model it trained uncompiled). The scores and predictions are the plain
    run's; the expert-weight history counts the real rows only. Evaluating the saved model compiled, with static
    shapes, compiles one graph for both splits and gives the same scores and predictions again."""
    static, static_predictions, static_compiled = run(tmp_path / "static", *COMPILED, "--static_shapes", "true")
    plain, plain_predictions, _ = run(tmp_path / "plain", "--static_shapes", "false")

    assert static_compiled == {"frames": 1, "graphs": 1}
    assert len(static_predictions) == 24
    for split in ("eval", "test"):
        assert {name: static[f"{split}_{name}"] for name in SCORES} == {
            name: plain[f"{split}_{name}"] for name in SCORES
        }
    assert_same_predictions(static_predictions, plain_predictions)
    history = json.loads((tmp_path / "static" / run_mre.HISTORY_FILE).read_text(encoding="utf-8"))["history"]
    assert [entry["count"] for entry in history] == [20, 20]  # not the 32 rows of the padded batches

    model = str(tmp_path / "static" / run_mre.MODEL_FOLDER)
    evaluated, evaluated_predictions, evaluated_compiled = run(
        tmp_path / "evaluated",
        *COMPILED,
        "--static_shapes",
        "true",
        "--model_name_or_path",
        model,
        "--do_train",
        "false",
    )
    assert evaluated_compiled == {"frames": 1, "graphs": 1}  # 16 rows of 24 tokens, the padded last batches too
    for split in ("eval", "test"):
        assert {name: evaluated[f"{split}_{name}"] for name in SCORES} == {
            name: static[f"{split}_{name}"] for name in SCORES
        }
    assert_same_predictions(evaluated_predictions, static_predictions)


def test_static_shapes_are_on_by_default_only_for_compiled_runs_on_an_accelerator(monkeypatch):
    """Off on this CPU, compiled or not; on with --torch_compile where an accelerator is; an explicit value wins."""

    def static_shapes(*arguments: str) -> bool:
        return run_mre.parse_args(list(arguments))[2].static_shapes

    assert static_shapes() is False and static_shapes("--torch_compile", "true") is False
    assert static_shapes("--static_shapes", "true") is True
    monkeypatch.setattr(run_mre.torch.accelerator, "is_available", lambda: True)
    assert static_shapes("--torch_compile", "true") is True and static_shapes() is False
    assert static_shapes("--torch_compile", "true", "--static_shapes", "false") is False
