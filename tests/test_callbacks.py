"""Tests of `analysis.callbacks`: `ExpertWeightsRecorder` in a `Trainer` run and called by hand, and its import
without the `analysis` extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from analysis_helpers import assert_png_drawn
from interruptions import Killed, kill_at_replace
from tiny_models import tiny_model_for
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

from analysis import HISTORY_FILE, ExpertWeightsRecorder, run_analysis
from mre_data.collator import IGNORE_INDEX, HVFormerDataCollator, StaticShapes, static_text_lengths

pytest_plugins = ["_analysis_fixtures"]


def test_expert_weights_recorder_in_trainer(processor, data, tmp_path):
    model = tiny_model_for(processor)
    recorder = ExpertWeightsRecorder()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        data_collator=HVFormerDataCollator(processor),
        callbacks=[recorder],
    )
    trainer.train()
    assert [entry["epoch"] for entry in recorder.history] == [1.0, 2.0]
    assert [entry["step"] for entry in recorder.history] == [2, 4]
    for entry in recorder.history:
        assert entry["count"] == 8
        for marker in ("<s>", "<o>"):
            assert len(entry[marker]) == 4 and sum(entry[marker]) == pytest.approx(1.0, abs=1e-5)
    assert not model._forward_hooks  # removed at the end of training

    recorder.save(tmp_path / "run" / HISTORY_FILE, model.config.expert_names)
    saved = json.loads((tmp_path / "run" / HISTORY_FILE).read_text())
    assert saved == {"expert_names": model.config.expert_names, "history": recorder.history}

    results = run_analysis(trainer, data["val"], tmp_path / "run" / "analysis", max_examples=4)
    assert results["setup"]["num_examples"] == 4
    assert results["fig9_expert_weights"]["history"] == saved
    assert_png_drawn(tmp_path / "run" / "analysis" / results["figures"]["fig9a"])


def test_expert_weights_recorder_keeps_no_graph_and_logs(processor, data):
    model = tiny_model_for(processor).train()
    recorder = ExpertWeightsRecorder(every="log")
    args, state, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerState(), TrainerControl()
    recorder.on_epoch_begin(args, state, control, model=torch.nn.parallel.DataParallel(model))
    batch = HVFormerDataCollator(processor)([data["train"][i] for i in range(3)])
    outputs = model(**batch)
    outputs.loss.backward()
    assert recorder._count == 3 and recorder._sums.grad_fn is None and not recorder._sums.requires_grad
    expected = outputs.marker_expert_weights.detach().mean(dim=0)
    model.eval()(**batch)  # evaluation forwards are not counted
    state.epoch, state.global_step = 0.5, 1
    recorder.on_epoch_end(args, state, control)  # every="log": nothing recorded at epoch ends
    assert recorder.history == []
    recorder.on_log(args, state, control, logs={})
    assert len(recorder.history) == 1 and recorder.history[0]["count"] == 3
    np.testing.assert_allclose([recorder.history[0]["<s>"], recorder.history[0]["<o>"]], expected, atol=1e-6)
    recorder.on_train_end(args, state, control)
    assert len(recorder.history) == 1 and not model._forward_hooks


@pytest.mark.slow
def test_recorder_imports_without_the_analysis_extra(tmp_path):
    """`run_mre.py` imports this package: without matplotlib and scikit-learn (the `analysis` extra) the recorder
    works and only drawing fails, naming the extra."""
    script = textwrap.dedent(
        """
        import sys

        sys.modules.update(matplotlib=None, sklearn=None)  # importing them raises ImportError
        from analysis import ExpertWeightsRecorder, new_figure

        ExpertWeightsRecorder().save(sys.argv[1], ["text", "level_6"])
        try:
            new_figure(1, 1)
        except ImportError as error:
            assert "hvformer[analysis]" in str(error), error
        else:
            raise AssertionError("drew without matplotlib")
        """
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "history.json")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "history.json").read_text()) == {"expert_names": ["text", "level_6"], "history": []}


def test_history_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / HISTORY_FILE
    recorder = ExpertWeightsRecorder()
    recorder.history.append({"epoch": 1.0, "step": 4, "count": 64, "<s>": [0.5, 0.5], "<o>": [0.25, 0.75]})
    recorder.save(path, ["text", "level_6"])
    before = path.read_text()
    recorder.history.append({"epoch": 2.0, "step": 8, "count": 64, "<s>": [0.5, 0.5], "<o>": [0.5, 0.5]})
    kill_at_replace(monkeypatch, path)
    with pytest.raises(Killed):
        recorder.save(path, ["text", "level_6"])
    assert path.read_text() == before and json.loads(before)["history"][0]["<o>"] == [0.25, 0.75]


def test_expert_weights_recorder_leaves_the_padding_rows_of_static_shapes_out(processor, data):
    """Three rows padded to a batch of 8 (five copies of the first, labelled IGNORE_INDEX): the count and the means
    are those of the three rows alone."""
    model = tiny_model_for(processor)
    model.training = True  # what the recorder reads; the layers stay in eval mode, so no dropout tells the runs apart
    rows = [data["train"][i] for i in range(3)]
    shapes = StaticShapes(
        static_text_lengths(processor.max_length), batch_sizes=(8,), num_object_crops=processor.num_object_crops
    )
    padded = HVFormerDataCollator(processor, static_shapes=shapes)(rows)
    assert padded["labels"].tolist()[3:] == [IGNORE_INDEX] * 5
    means = []
    for batch in (HVFormerDataCollator(processor)(rows), padded):
        recorder = ExpertWeightsRecorder(every="log")
        args, state, control = (
            TrainingArguments(output_dir="unused", report_to="none"),
            TrainerState(),
            TrainerControl(),
        )
        recorder.on_epoch_begin(args, state, control, model=model)
        model(**batch)
        recorder.on_log(args, state, control, logs={})
        recorder.on_train_end(args, state, control)
        assert recorder.history[0]["count"] == 3
        means.append([recorder.history[0]["<s>"], recorder.history[0]["<o>"]])
    np.testing.assert_allclose(means[1], means[0], atol=1e-6)
