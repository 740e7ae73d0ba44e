"""Resuming safely: which checkpoints are complete, and a training loss that survives restarts."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from interruptions import Hostile
from safetensors.torch import save_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from training.checkpoints import RESUME_FILES, TrainingLossRecorder, checkpoint_problem, last_valid_checkpoint


def write_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint folder with every file resume reads, saved as Trainer saves them (small but well-formed)."""
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"weight": torch.ones(4)}, folder / "model.safetensors")
    parameter = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([parameter])
    parameter.grad = torch.ones(4)
    optimizer.step()
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0).state_dict(), folder / "scheduler.pt")
    rng_state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng_state, folder / "rng_state.pth")
    return folder


def test_complete_checkpoint_has_no_problem(tmp_path):
    assert checkpoint_problem(write_checkpoint(tmp_path / "checkpoint-3", 3)) is None
    assert {*RESUME_FILES, "rng_state.pth"} == {path.name for path in (tmp_path / "checkpoint-3").iterdir()}


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda folder: (folder / "trainer_state.json").unlink(), "trainer_state.json is missing or empty"),
        (lambda folder: (folder / "optimizer.pt").write_bytes(b""), "optimizer.pt is missing or empty"),
        (lambda folder: (folder / "trainer_state.json").write_text('{"global_step": 3'), "not valid JSON"),
        (lambda folder: (folder / "trainer_state.json").write_text("{}"), "has no global_step"),
        (
            lambda folder: (folder / "model.safetensors").write_bytes(
                (folder / "model.safetensors").read_bytes()[:-5]
            ),
            "model.safetensors cannot be read",
        ),
        (
            lambda folder: torch.save({"state": Hostile()}, folder / "optimizer.pt"),
            "optimizer.pt cannot be loaded with torch.load(weights_only=True) (UnpicklingError: Unsupported global: "
            "GLOBAL print was not an allowed global by default.)",
        ),
        (
            lambda folder: (folder / "scheduler.pt").write_bytes((folder / "scheduler.pt").read_bytes()[:100]),
            "scheduler.pt cannot be loaded with torch.load(weights_only=True) (RuntimeError: PytorchStreamReader",
        ),
        (
            lambda folder: torch.save({"python": Hostile()}, folder / "rng_state.pth"),
            "rng_state.pth cannot be loaded with torch.load(weights_only=True)",
        ),
    ],
)
def test_broken_checkpoints_are_described(tmp_path, break_it, message):
    folder = write_checkpoint(tmp_path / "checkpoint-3", 3)
    break_it(folder)
    assert message in checkpoint_problem(folder)


def test_last_valid_checkpoint_skips_broken_ones_with_a_warning(tmp_path, caplog):
    for step in (2, 9, 10, 11):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    (tmp_path / "checkpoint-11" / "scheduler.pt").unlink()
    (tmp_path / "checkpoint-10" / "model.safetensors").write_bytes(b"\x08")
    torch.save({"state": Hostile()}, tmp_path / "checkpoint-9" / "optimizer.pt")
    (tmp_path / "checkpoint-x").mkdir()
    with caplog.at_level(logging.WARNING, logger="training.checkpoints"):
        assert last_valid_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    skipped = [record.getMessage() for record in caplog.records]
    assert skipped[0].startswith(f"Skipping checkpoint {tmp_path / 'checkpoint-11'}") and "scheduler.pt" in skipped[0]
    assert skipped[1].startswith(f"Skipping checkpoint {tmp_path / 'checkpoint-10'}")
    assert skipped[2] == (
        f"Skipping checkpoint {tmp_path / 'checkpoint-9'}, which cannot be resumed from: optimizer.pt cannot be "
        "loaded with torch.load(weights_only=True) (UnpicklingError: Unsupported global: GLOBAL print was not an "
        "allowed global by default.)"
    )
    assert len(skipped) == 3 and all(len(message) < 400 for message in skipped)
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    assert last_valid_checkpoint(tmp_path) is None
    assert last_valid_checkpoint(tmp_path / "absent") is None


class LossModel(torch.nn.Module):
    """Returns a fixed loss, as a model output with a `loss` field."""

    def forward(self, loss: float):
        return type("Output", (), {"loss": torch.tensor(loss)})()


def test_training_loss_is_the_mean_over_restarts():
    """Losses 1, 2 | restart from the saved state | 3, 6: the mean is 3, whatever the number of restarts; evaluation
    forwards are not counted."""
    args, state, control, model = (
        TrainingArguments("unused", use_cpu=True),
        TrainerState(),
        TrainerControl(),
        LossModel(),
    )
    first = TrainingLossRecorder()
    first.on_epoch_begin(args, state, control, model=model)
    model(1.0), model(2.0)
    saved = json.loads(json.dumps(first.state()))
    assert saved == {"args": {"total": 3.0, "count": 2}, "attributes": {}}
    first.on_train_end(args, state, control)  # the first process dies; its hook is gone

    second = TrainingLossRecorder(**saved["args"])  # what Trainer does with `stateful_callbacks`
    second.on_epoch_begin(args, state, control, model=model)
    model(3.0), model(6.0)
    model.eval()
    model(100.0)
    second.on_train_end(args, state, control)
    assert second.mean == pytest.approx(3.0) and not model._forward_hooks
