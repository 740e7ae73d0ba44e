"""Restarting a run safely: the last checkpoint that is complete, and a training loss that does not depend on how
often the run was restarted.

`Trainer` writes `checkpoint-N/` file by file, so a process killed while saving leaves a folder without
`trainer_state.json` or with a truncated `model.safetensors` or `optimizer.pt`, which
`transformers.trainer_utils.get_last_checkpoint` would still pick. [`last_valid_checkpoint`] skips such folders with a
warning naming them, and so a checkpoint with a pickle that Trainer could not load: transformers 5.17 to 5.24 load
`optimizer.pt`, `scheduler.pt`, `scaler.pt` and `rng_state*.pth` with `torch.load(weights_only=True)` (numpy's types
allowed for the RNG state), which refuses a hostile pickle but stops the resume with a traceback.
[`TrainingLossRecorder`] keeps the running sum of the training loss in the checkpoints (`trainer_state.json`,
`stateful_callbacks`), so the reported `train_loss` is the mean over every optimisation step of the run, resumed or
not.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import safe_globals

from .run_files import MAX_REASON_CHARS, brief, file_problem

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
RESUME_FILES: tuple[str, ...] = ("trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt")
"""What `Trainer.train(resume_from_checkpoint=...)` reads from a checkpoint of this project."""
WEIGHTS_ONLY_REFUSAL = re.compile(r"WeightsUnpickler error: (.*?\.)(?:\s|$)")
"""The sentence of torch's `weights_only` error that says which global was refused (the rest is advice)."""
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth")
"""The files of a checkpoint that Trainer unpickles on resume (`optimizer.pt`, `scheduler.pt`, `scaler.pt`,
`rng_state*.pth`); `training_args.bin` is written but never read back."""


def pickle_problem(path: Path) -> str | None:
    """Why Trainer could not load the pickle `path` (`torch.load(weights_only=True)`, numpy's types allowed as for its
    RNG state), or `None`. Memory-mapped, so that a large optimizer state's tensor data is not read."""
    try:
        with safe_globals():
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for hostile or broken files
        refusal = WEIGHTS_ONLY_REFUSAL.search(str(error))
        reason = brief(error) if refusal is None else f"{type(error).__name__}: {refusal.group(1)}"[:MAX_REASON_CHARS]
        return f"cannot be loaded with torch.load(weights_only=True) ({reason})"
    return None


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot be resumed from (a missing or empty file, unreadable trainer state or weights, a pickle
    Trainer could not load), or `None` when it is complete."""
    folder = Path(folder)
    for name in RESUME_FILES:
        problem = file_problem(folder / name)
        if problem is not None:
            return f"{name} {problem}"
    state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    if "global_step" not in state:
        return "trainer_state.json has no global_step"
    for path in sorted(folder.iterdir()):
        if path.suffix in PICKLE_SUFFIXES and (problem := pickle_problem(path)) is not None:
            return f"{path.name} {problem}"
    return None


def last_valid_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The complete `checkpoint-N` folder of `output_dir` with the highest N; incomplete or corrupt ones are skipped
    with a warning naming them. `None` when there is none (the run starts over)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = {
        int(match.group(1)): path
        for path in output_dir.iterdir()
        if path.is_dir() and (match := CHECKPOINT_PATTERN.match(path.name))
    }
    for step in sorted(steps, reverse=True):
        problem = checkpoint_problem(steps[step])
        if problem is None:
            return str(steps[step])
        logger.warning("Skipping checkpoint %s, which cannot be resumed from: %s", steps[step], problem)
    return None


class TrainingLossRecorder(TrainerCallback, ExportableState):
    """Sums the training loss of every forward pass in training mode (a forward hook on the model, the loss kept on
    its device, so no host synchronisation per step) and stores the sum and count in each checkpoint; `mean` is then
    the mean training loss over the whole run, whether it was resumed or not. Under DDP the means of the processes
    are averaged at the end of training.

    Trainer's own `train_loss` divides the loss summed since the last (re)start by all the steps of the run, so it
    changes with the number of restarts; `run_mre.py` reports this one instead.
    """

    def __init__(self, total: float = 0.0, count: int = 0) -> None:
        self.total = total
        self.count = count
        self.mean: float | None = None
        self._pending: torch.Tensor | None = None
        self._pending_count = 0
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    @torch.compiler.disable  # bookkeeping beside a compiled model: run as it is, never traced or recompiled
    def _record(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        loss = getattr(output, "loss", None)
        if not module.training or loss is None:
            return
        loss = loss.detach().float()
        self._pending = loss if self._pending is None else self._pending + loss
        self._pending_count += 1

    def _flush(self) -> None:
        if self._pending is not None:
            self.total += float(self._pending)
            self.count += self._pending_count
        self._pending, self._pending_count = None, 0

    def state(self) -> dict[str, Any]:
        self._flush()
        return {"args": {"total": self.total, "count": self.count}, "attributes": {}}

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ) -> None:
        # Not at `on_train_begin`: on resume, Trainer replaces this callback by a restored copy after that event.
        if model is not None and self._hook is None:
            self._hook = model.register_forward_hook(self._record)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self._flush()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        mean = torch.tensor(self.total / max(self.count, 1), dtype=torch.float32, device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(mean)
            mean /= torch.distributed.get_world_size()
        self.mean = float(mean)
