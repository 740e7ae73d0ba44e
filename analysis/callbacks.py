"""The Trainer callback that records the expert weights of the entity markers during training (Fig. 9a)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch
import transformers
from transformers.trainer_callback import ExportableState

from mre_data.collator import IGNORE_INDEX
from training.run_files import write_text_atomic
from training.run_folder import HISTORY_FILE

from .tokens import marker_names

__all__ = ["HISTORY_FILE", "ExpertWeightsRecorder"]


def _unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP/DataParallel (`.module`) or `torch.compile` (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


class ExpertWeightsRecorder(transformers.TrainerCallback, ExportableState):
    """Records the mean expert weights G (Eq. 9) of the subject and object markers during training (paper Fig. 9a).

    At the first `on_epoch_begin` a forward hook goes on the model (unwrapped from DDP / `torch.compile`); in training
    mode it adds the model's `marker_expert_weights` (G at the markers; detached, float32, on the model's device: no
    graph is kept and no device sync happens per step) to running sums, leaving out the padding rows of static
    shapes (labelled `IGNORE_INDEX`). At the end of each epoch (`every="epoch"`) or
    at each logging step (`every="log"`) the means are appended to [`history`] as
    `{"epoch", "step", "count", "<s>": [E means], "<o>": [E means]}` (`count`: examples averaged, the markers named
    by `config.entity_markers`, experts in the order of `config.expert_names`) and the sums reset. `on_train_end`
    records a last partial interval, if any, and removes
    the hook. Evaluation forwards (eval mode) are not counted. The history is part of each checkpoint
    (`stateful_callbacks` in `trainer_state.json`), so a run resumed with `restore_callback_states_from_checkpoint`
    keeps the epochs recorded before the restart (Trainer then replaces this callback by a restored copy, which is
    why the hook is placed at the start of an epoch rather than of training).

    Distributed training: each process records the examples of its own shard only, with no communication; save the
    history of the main process (what `run_mre.py` does), which averages over its `1 / world_size` of the data.

    Args:
        every (`str`, *optional*, defaults to `"epoch"`):
            `"epoch"` or `"log"`: when to close an interval.
    """

    def __init__(self, every: str = "epoch") -> None:
        if every not in ("epoch", "log"):
            raise ValueError(f"`every` must be 'epoch' or 'log', got {every!r}.")
        self.every = every
        self.history: list[dict[str, Any]] = []
        self._sums: torch.Tensor | None = None  # (2, E)
        self._count = 0
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self._markers: tuple[str, str] | None = None

    @torch.compiler.disable  # bookkeeping beside a compiled model: run as it is, never traced or recompiled
    def _record(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        marker_weights = getattr(output, "marker_expert_weights", None)  # G at <s>, <o>: (batch, 2, E)
        if not module.training or marker_weights is None:
            return
        rows = marker_weights.detach().float()
        labels = kwargs.get("labels")
        if labels is None:
            count = rows.shape[0]
        else:  # static shapes' padding rows (labelled IGNORE_INDEX) are no examples; counted on the device
            real = (labels != IGNORE_INDEX).to(rows)
            rows, count = rows * real[:, None, None], real.sum()
        rows = rows.sum(dim=0)  # (2, E)
        self._sums = rows if self._sums is None else self._sums + rows
        self._count = self._count + count

    def _close_interval(self, state: transformers.TrainerState) -> None:
        if not self._count:
            return
        means = (self._sums / self._count).cpu().tolist()
        entry = {"epoch": state.epoch, "step": state.global_step, "count": int(self._count)}
        self.history.append({**entry, **dict(zip(self._markers, means, strict=True))})
        self._sums, self._count = None, 0

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def state(self) -> dict[str, Any]:
        return {"args": {"every": self.every}, "attributes": {"history": self.history}}

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("ExpertWeightsRecorder needs the model in the callback arguments (a Trainer passes it).")
        if self._hook is None:
            model = _unwrap_model(model)
            self._markers = marker_names(model.config)
            self._hook = model.register_forward_hook(self._record, with_kwargs=True)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.every == "epoch":
            self._close_interval(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.every == "log":
            self._close_interval(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._close_interval(state)
        self._remove_hook()

    def save(self, path: str | os.PathLike, expert_names: Sequence[str]) -> None:
        """Writes `{"expert_names": [...], "history": [...]}` as JSON (read by [`analysis.analyse`] for Fig. 9a),
        atomically."""
        write_text_atomic(
            path, json.dumps({"expert_names": list(expert_names), "history": self.history}, indent=1) + "\n"
        )
