"""Analysis of a trained HVFormer: the numbers and figures of the paper's §4.3 (RQ1-RQ4, Figs. 4-10).

- [`ExpertWeightsRecorder`]: a `TrainerCallback` recording the mean expert weights G (Eq. 9) of `<s>` and `<o>`
  during training (Fig. 9a).
- [`analyse`]: one pass over a split with the tracking maps on; writes Figs. 5-10 and `analysis.json`.
  [`run_analysis`] is the same from a `Trainer` (`run_mre.py --do_analysis`).
- [`plot_level_f1`]: Fig. 4 (RQ1), F1 of single-level runs against their ViT level.
- CLI: `python -m processing.analysis --model DIR [--data_dir DIR] [--split val] --output_dir DIR` (Figs. 5-10) and
  `python -m processing.analysis --level_runs RUN [RUN ...] --output_dir DIR` (Fig. 4).

Equation and figure numbers are the paper's. The tracking maps (Eqs. 17-18), the kurtosis (Eq. 19) and the KL
divergence of heads (Eq. 20) come from `modeling_hvformer.tracking_maps`; this module only averages them.

matplotlib and scikit-learn are the optional `analysis` extra (`pip install 'hvformer[analysis]'`): they are imported
when a figure is drawn, so [`ExpertWeightsRecorder`] and this module import without them. Figures are drawn with the
Agg renderer on `matplotlib.figure.Figure` objects, outside `pyplot` (no display, no global state).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
import transformers
from tqdm.auto import tqdm
from transformers.trainer_callback import ExportableState

from modeling_hvformer.tracking_maps import attention_kurtosis, cross_modal_kurtosis, head_divergence

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ExpertWeightsRecorder",
    "VisualTokenLayout",
    "analyse",
    "even_spread_norm",
    "expert_label",
    "expert_weight_dots",
    "main",
    "marker_rows",
    "new_figure",
    "plot_level_f1",
    "relative_to_even",
    "run_analysis",
    "save_figure",
]

logger = logging.getLogger(__name__)

MARKERS: tuple[str, str] = ("<s>", "<o>")
"""The tokens whose fused representations are classified (Eq. 11) and analysed in §4.3."""

HISTORY_FILE = "expert_weights_history.json"
"""Name of the file [`ExpertWeightsRecorder.save`] writes in `run_mre.py`'s output folder."""

MARKER_NAMES: dict[str, str] = {"<s>": "subject <s>", "<o>": "object <o>"}
"""The markers in words, for the figures."""

DPI = 120
SEQUENTIAL_COLOURS = "viridis"
"""Perceptually uniform colour map of the figures' magnitudes."""
DIVERGING_COLOURS = "RdBu_r"
"""Colour map of the maps relative to an even spread (white = even, red = more, blue = less)."""


# ---------------------------------------------------------------------------------------------------------------------
# Small shared helpers


def marker_rows(values: torch.Tensor, marker_positions: torch.Tensor) -> torch.Tensor:
    """The rows of `<s>` and `<o>` of a per-token tensor.

    Args:
        values: `(B, n_T, ...)` (e.g. expert weights G, `(B, n_T, E)`) or `(B, M, n_T, n_V)` per-head maps (A_C, H_C).
        marker_positions: `(B, 2)` positions of `<s>` and `<o>`.

    Returns:
        `(B, 2, ...)` for the former, `(B, M, 2, n_V)` for the latter (so the result is a valid input of
        `cross_modal_kurtosis` and `head_divergence`, with the two markers as the text tokens).
    """
    if values.dim() == 4:
        index = marker_positions[:, None, :, None].expand(-1, values.shape[1], -1, values.shape[-1])
        return values.gather(2, index)
    index = marker_positions.view(*marker_positions.shape, *([1] * (values.dim() - 2)))
    return values.gather(1, index.expand(-1, -1, *values.shape[2:]))


def _floats(values: Any, decimals: int = 6) -> Any:
    """Nested lists of floats rounded to `decimals` (JSON-friendly numbers behind the figures)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def _unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP/DataParallel (`.module`) or `torch.compile` (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure with the Agg canvas, created outside `pyplot` (nothing is displayed or kept globally)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("The analysis figures need matplotlib: pip install 'hvformer[analysis]'.") from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> str:
    """Writes `figure` as PNG at `DPI`; returns the file name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path.name


@dataclass(frozen=True)
class VisualTokenLayout:
    """Where the tokens of the ViT sequence `[CLS, main image patches, crop 1 patches, ..., crop t patches]` sit.

    Args:
        num_tokens: n_V, the length of the sequence.
        grid: side of the main image's patch grid (`image_size // patch_size`).
        crop_tokens: patches per object crop (`(object_image_size // patch_size) ** 2`).
    """

    num_tokens: int
    grid: int
    crop_tokens: int

    @classmethod
    def from_config(cls, config: Any, num_tokens: int) -> VisualTokenLayout:
        """The layout of an `HVFormerConfig` for sequences of `num_tokens` visual tokens."""
        vision = config.vision_config
        layout = cls(
            num_tokens=num_tokens,
            grid=vision.image_size // vision.patch_size,
            crop_tokens=(config.object_image_size // vision.patch_size) ** 2,
        )
        extra = num_tokens - layout.main_tokens
        if extra < 0 or (extra and extra % layout.crop_tokens):
            raise ValueError(
                f"{num_tokens} visual tokens do not fit [CLS] + {layout.grid}x{layout.grid} image patches + blocks of "
                f"{layout.crop_tokens} crop patches (config.vision_config / config.object_image_size)."
            )
        return layout

    @property
    def main_tokens(self) -> int:
        """[CLS] plus the main image's patches."""
        return 1 + self.grid**2

    @property
    def num_crops(self) -> int:
        return (self.num_tokens - self.main_tokens) // self.crop_tokens

    def block_starts(self) -> list[int]:
        """First token of each block after [CLS]: the main image's patches, then each crop's."""
        return [1] + [self.main_tokens + crop * self.crop_tokens for crop in range(self.num_crops)]

    def image_grid(self, values: np.ndarray) -> np.ndarray:
        """`(..., n_V)` values -> `(..., grid, grid)` values of the main image's patches (row-major, as ViT)."""
        return values[..., 1 : self.main_tokens].reshape(*values.shape[:-1], self.grid, self.grid)

    def to_dict(self) -> dict[str, int]:
        return {
            "num_visual_tokens": self.num_tokens,
            "main_image_tokens": self.main_tokens,
            "image_grid": self.grid,
            "num_crop_blocks": self.num_crops,
            "tokens_per_crop": self.crop_tokens,
        }


# ---------------------------------------------------------------------------------------------------------------------
# Fig. 9a: expert weights during training


class ExpertWeightsRecorder(transformers.TrainerCallback, ExportableState):
    """Records the mean expert weights G (Eq. 9) of `<s>` and of `<o>` during training (paper Fig. 9a).

    At the first `on_epoch_begin` a forward hook goes on the model (unwrapped from DDP / `torch.compile`); in training
    mode it
    adds the rows of `expert_weights` at `marker_positions` (detached, float32, on the model's device: no graph is
    kept and no device sync happens per step) to running sums. At the end of each epoch (`every="epoch"`) or at each
    logging step (`every="log"`) the means are appended to [`history`] as
    `{"epoch", "step", "count", "<s>": [E means], "<o>": [E means]}` (`count`: examples averaged, experts in the order
    of `config.expert_names`) and the sums reset. `on_train_end` records a last partial interval, if any, and removes
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

    def _record(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        marker_weights = getattr(output, "marker_expert_weights", None)  # G at <s>, <o>: (batch, 2, E)
        if not module.training or marker_weights is None:
            return
        rows = marker_weights.detach().float().sum(dim=0)  # (2, E)
        self._sums = rows if self._sums is None else self._sums + rows
        self._count += marker_weights.shape[0]

    def _close_interval(self, state: transformers.TrainerState) -> None:
        if not self._count:
            return
        means = (self._sums / self._count).cpu().tolist()
        entry = {"epoch": state.epoch, "step": state.global_step, "count": self._count}
        self.history.append({**entry, **dict(zip(MARKERS, means, strict=True))})
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
            self._hook = _unwrap_model(model).register_forward_hook(self._record)

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
        """Writes `{"expert_names": [...], "history": [...]}` as JSON (read by [`analyse`] for Fig. 9a)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"expert_names": list(expert_names), "history": self.history}, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# One pass over a split


class _SplitStatistics:
    """Running sums over a split behind Figs. 5-10.

    Memory does not grow with the split, except for the expert weights at the markers (`(N, 2, E)` numbers) and the
    visual representations of the first `tsne_examples` examples (Fig. 8). Sums are float64 on the CPU.
    """

    def __init__(self, config: Any, tsne_examples: int) -> None:
        self.config = config
        self.tsne_examples = tsne_examples
        self.layout: VisualTokenLayout | None = None
        self.num_examples = 0
        self.num_complete = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.expert_weights: list[torch.Tensor] = []  # (B, 2, E) per batch
        self.tsne_states: list[torch.Tensor] = []  # (max_level + 1, b, n_V, d_V) per batch
        self.tsne_masks: list[torch.Tensor] = []  # (b, n_V) per batch

    def _add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().to("cpu", torch.float64)
        if name in self.sums:
            self.sums[name] += value
        else:
            self.sums[name] = value.clone()

    def update(self, outputs: Any) -> None:
        mask = outputs.visual_token_mask.bool()  # (B, n_V)
        positions = outputs.marker_positions  # (B, 2)
        batch_size, num_tokens = mask.shape
        if self.layout is None:
            self.layout = VisualTokenLayout.from_config(self.config, num_tokens)
        elif num_tokens != self.layout.num_tokens:
            raise ValueError(f"The visual sequence length changed from {self.layout.num_tokens} to {num_tokens}.")
        main = self.layout.main_tokens
        self.num_examples += batch_size

        # Fig. 6: H_V^0..H_V^max (Eq. 17), (L + 1, B, n_V, n_V).
        patch_patch = outputs.patch_patch_tracking_maps
        complete = mask.all(dim=1)
        self.num_complete += int(complete.sum())
        self._add("patch_patch_main", patch_patch[:, :, :main, :main].sum(dim=1))
        self._add("patch_patch_complete", patch_patch[:, complete].sum(dim=1))

        if outputs.cross_attentions is not None:  # Fig. 5: A_C^l (Eq. 4) at the markers, (levels, B, M, 2, n_V)
            attention = torch.stack([marker_rows(a, positions).float() for a in outputs.cross_attentions])
            self._add("cross_attention", attention.sum(dim=1))
            main_image = torch.zeros_like(mask)
            main_image[:, :main] = True
            kurtosis = torch.stack([cross_modal_kurtosis(a, patch_mask=main_image) for a in attention])  # Eq. 19
            self._add("sample_kurtosis", kurtosis.sum(dim=1))
        if outputs.patch_token_tracking_maps is not None:  # Fig. 7: H_C^l (Eq. 18) at the markers
            patch_token = torch.stack([marker_rows(h, positions).float() for h in outputs.patch_token_tracking_maps])
            self._add("patch_token", patch_token.mean(dim=2).sum(dim=1))  # (levels, 2, n_V)
            self._add("kl_divergence", torch.stack([head_divergence(h) for h in patch_token]).sum(dim=1))  # Eq. 20
        if outputs.marker_expert_weights is not None:  # Figs. 9-10: G (Eq. 9) at the markers
            self.expert_weights.append(outputs.marker_expert_weights.float().cpu())

        take = min(self.tsne_examples - sum(len(m) for m in self.tsne_masks), batch_size)
        if take > 0:  # Fig. 8: V^0..V^max (Eq. 3) of the first examples
            self.tsne_states.append(torch.stack([v[:take].float() for v in outputs.vision_hidden_states]).cpu())
            self.tsne_masks.append(mask[:take].cpu())

    def mean(self, name: str, count: int) -> np.ndarray | None:
        if name not in self.sums or not count:
            return None
        return (self.sums[name] / count).numpy()


def _forward_arguments(model: torch.nn.Module) -> set[str]:
    """Names the model's `forward` accepts, without `labels` (the analysis needs no loss)."""
    return set(inspect.signature(model.forward).parameters) - {"labels"}


def _collect(
    model: torch.nn.Module,
    dataset: datasets.Dataset,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    batch_size: int,
    tsne_examples: int,
    progress_bar: bool,
) -> _SplitStatistics:
    """Runs the model (eval mode, no grad, tracking maps and hidden states on) over `dataset`."""
    accepted = _forward_arguments(model)
    columns = [name for name in dataset.column_names if name in accepted]
    loader = torch.utils.data.DataLoader(
        dataset.select_columns(columns), batch_size=batch_size, shuffle=False, collate_fn=collator
    )
    device = next(model.parameters()).device
    statistics = _SplitStatistics(model.config, tsne_examples)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="HVFormer analysis", disable=not progress_bar):
                inputs = {name: value.to(device) for name, value in batch.items() if name in accepted}
                outputs = model(**inputs, output_tracking_maps=True, output_hidden_states=True)
                statistics.update(outputs)
    finally:
        model.train(was_training)
    return statistics


# ---------------------------------------------------------------------------------------------------------------------
# Figures 5-10


def expert_label(name: str) -> str:
    """An expert of `config.expert_names` in words: `"text"` -> `"text only"`, `"level_6"` -> `"ViT level 6"`."""
    return "text only" if name == "text" else f"ViT level {name.removeprefix('level_')}"


def relative_to_even(grid: np.ndarray) -> np.ndarray:
    """Weights over an image's patch grid (`(..., g, g)`) divided by their mean over the grid: 1 where a patch gets an
    even share of the weight the image receives, 2 where it gets twice that. An all-zero grid stays zero."""
    grid = np.asarray(grid, dtype=np.float64)
    mean = grid.mean(axis=(-2, -1), keepdims=True)
    return np.divide(grid, mean, out=np.zeros_like(grid), where=mean > 0)


def even_spread_norm(relative: np.ndarray) -> Any:
    """One colour scale for maps of [`relative_to_even`] values, centred on 1 (an even spread) and symmetric around it,
    at least 0.75..1.25 so that nearly even maps look even instead of magnifying noise."""
    from matplotlib.colors import TwoSlopeNorm

    spread = max(0.25, float(np.abs(np.asarray(relative) - 1.0).max()))
    return TwoSlopeNorm(vcenter=1.0, vmin=max(0.0, 1.0 - spread), vmax=1.0 + spread)


def _suptitle(figure: Figure, title: str) -> None:
    """The figure's title, wrapped to the figure's width (matplotlib's own `wrap` ignores the layout engine)."""
    width = int(figure.get_figwidth() * 10.5)
    figure.suptitle(textwrap.fill(title, width=width), fontsize=11)


def _colour_bar(figure: Figure, axes: Any, norm: Any, cmap: str, label: str, **kwargs: Any) -> None:
    """One labelled colour bar for all `axes` of a figure drawn with `norm` and `cmap`."""
    from matplotlib.cm import ScalarMappable

    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=label, **kwargs)


def _marker_grids_figure(
    path: Path, title: str, quantity: str, levels: Sequence[int], values: np.ndarray, layout: VisualTokenLayout
) -> str:
    """Maps of `(levels, 2, n_V)` weights (each row sums to 1 over the visual tokens) over the main image's patch grid:
    rows `<s>`/`<o>`, a column per level, one colour scale relative to an even spread over the image (upsampled
    smoothly, patch borders drawn), and under each map the shares of [CLS], the image and the crops."""
    figure = new_figure(2.7 * len(levels) + 1.6, 6.0)
    relative = relative_to_even(layout.image_grid(values))  # (levels, 2, g, g)
    norm = even_spread_norm(relative)
    grid = layout.grid
    axes = figure.subplots(2, len(levels), squeeze=False)
    for column, level in enumerate(levels):
        for row, marker in enumerate(MARKERS):
            ax = axes[row, column]
            ax.imshow(
                relative[column, row],
                cmap=DIVERGING_COLOURS,
                norm=norm,
                interpolation="bicubic",
                extent=(0, grid, grid, 0),
            )
            for border in range(1, grid):
                ax.axhline(border, color="white", linewidth=0.4, alpha=0.6)
                ax.axvline(border, color="white", linewidth=0.4, alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            shares = values[column, row]
            ax.set_xlabel(
                f"patches {relative[column, row].min():.2f}-{relative[column, row].max():.2f} x even\n"
                f"[CLS] {shares[0]:.0%} · image {shares[1 : layout.main_tokens].sum():.0%} · "
                f"crops {shares[layout.main_tokens :].sum():.0%}",
                fontsize=8,
            )
            if row == 0:
                ax.set_title(f"ViT level {level}", fontsize=10)
            if column == 0:
                ax.set_ylabel(MARKER_NAMES[marker], fontsize=10)
    label = f"{quantity} on a patch\nrelative to an even spread over the image (1 = even)"
    _colour_bar(figure, axes, norm, DIVERGING_COLOURS, label)
    _suptitle(figure, title)
    return save_figure(figure, path)


def _line_figure(
    path: Path,
    title: str,
    y_label: str,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    x: Sequence[int],
) -> str:
    """One panel per entry of `panels` (panel title -> {marker -> y}), x = the experts' ViT levels."""
    figure = new_figure(max(6.5, 4.8 * len(panels)), 4.0)
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (panel_title, lines) in zip(axes, panels.items(), strict=True):
        for marker, y in lines.items():
            ax.plot(x, y, marker="o", label=MARKER_NAMES[marker])
        ax.set_xticks(list(x))
        ax.set_xlabel("ViT level read by the expert (l)")
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(y_label)
    _suptitle(figure, title)
    return save_figure(figure, path)


def _cross_attention_results(
    statistics: _SplitStatistics, levels: list[int], output_dir: Path, results: dict[str, Any]
) -> None:
    """Fig. 5a (mean cross-modal attention Ā_C^l of `<s>`/`<o>`) and Fig. 5b (its kurtosis, Eq. 19)."""
    per_head = statistics.mean("cross_attention", statistics.num_examples)  # (levels, M, 2, n_V)
    if per_head is None:
        reason = "visual_context='cls' (w/o TVA ablation): the experts have no cross-modal attention"
        results["skipped"].update(fig5a_mean_cross_attention=reason, fig5b_kurtosis=reason)
        return
    layout = statistics.layout
    mean = per_head.mean(axis=1)  # Ā_C^l = (1/M) Σ_m A_C^(l,m), (levels, 2, n_V)
    results["fig5a_mean_cross_attention"] = {
        "levels": levels,
        "description": "mean over heads and examples of A_C^l at <s>/<o>, over all n_V visual tokens "
        "([CLS], main image patches row-major, crop patches; absent crops count as 0)",
        **{marker: _floats(mean[:, row]) for row, marker in enumerate(MARKERS)},
        "per_head": {marker: _floats(per_head[:, :, row]) for row, marker in enumerate(MARKERS)},
    }
    results["figures"]["fig5a"] = _marker_grids_figure(
        output_dir / "fig5a_mean_cross_attention.png",
        f"Fig. 5a: where the subject and object tokens look in the image: cross-modal attention of each expert, "
        f"mean over heads and {statistics.num_examples} examples (Ā_C^l, Eq. 4)",
        "attention",
        levels,
        mean,
        layout,
    )
    # Eq. 19 per head of the split-averaged distributions, summed over heads as in §4.3. Over the [CLS] + main image
    # tokens, which every example has (absent crops would add zeros); kurtosis ignores the scale, so the block needs
    # no renormalisation.
    head_kurtosis = attention_kurtosis(torch.from_numpy(per_head[..., : layout.main_tokens])).numpy()  # (levels, M, 2)
    summed = head_kurtosis.sum(axis=1)  # (levels, 2)
    per_sample = statistics.mean("sample_kurtosis", statistics.num_examples)  # (levels, 2)
    results["fig5b_kurtosis"] = {
        "levels": levels,
        "description": "excess kurtosis (Eq. 19) of the attention over the [CLS] + main image tokens, summed over "
        "heads: of each head's split-averaged distribution (<s>/<o>), and the mean over examples of the "
        "per-example value",
        **{marker: _floats(summed[:, row]) for row, marker in enumerate(MARKERS)},
        "per_head": {marker: _floats(head_kurtosis[:, :, row]) for row, marker in enumerate(MARKERS)},
        "mean_per_example": {marker: _floats(per_sample[:, row]) for row, marker in enumerate(MARKERS)},
    }
    results["figures"]["fig5b"] = _line_figure(
        output_dir / "fig5b_kurtosis.png",
        "Fig. 5b: how peaked the cross-modal attention over [CLS] + the image is (excess kurtosis, Eq. 19; "
        "0 = as peaked as a normal sample, higher = a few patches get most of the attention)",
        "excess kurtosis, summed over heads",
        {
            "of the attention averaged over the split": {m: summed[:, row] for row, m in enumerate(MARKERS)},
            "of each example's attention, averaged": {m: per_sample[:, row] for row, m in enumerate(MARKERS)},
        },
        levels,
    )


def _patch_patch_results(statistics: _SplitStatistics, output_dir: Path, results: dict[str, Any]) -> None:
    """Fig. 6: mean patch-patch tracking maps H_V^l (Eq. 17) for l = 0..max level (the JSON), 1..max level (the figure:
    H_V^0 is the identity)."""
    layout = statistics.layout
    main = statistics.mean("patch_patch_main", statistics.num_examples)  # (L + 1, main, main)
    complete = statistics.mean("patch_patch_complete", statistics.num_complete)  # (L + 1, n_V, n_V) or None
    levels = list(range(main.shape[0]))
    results["fig6_patch_patch_maps"] = {
        "levels": levels,
        "description": "mean H_V^l; 'all_crops_present': the whole sequence over the examples whose crops are all "
        "present (rows sum to 1); 'main_image': the [CLS] + main image block over all examples",
        "all_crops_present": {"num_examples": statistics.num_complete, "mean": _floats(complete)},
        "main_image": {"num_examples": statistics.num_examples, "mean": _floats(main)},
    }
    drawn = levels[1:]  # H_V^0 is the identity by definition (Eq. 17): nothing to see
    if not drawn:
        results["skipped"]["fig6_patch_patch_maps"] = (
            "only ViT level 0 is read, and H_V^0 is the identity by definition (Eq. 17): nothing to draw"
        )
        return
    if complete is not None:
        matrices, scope = complete, f"the {statistics.num_complete} examples with all their crops"
        blocks = ["CLS", "image", *(f"crop {crop}" for crop in range(1, layout.num_crops + 1))]
        starts = [0, *layout.block_starts()]
    else:
        matrices, scope = main, f"{statistics.num_examples} examples, [CLS] and image only (none has all its crops)"
        blocks, starts = ["CLS", "image"], [0, 1]
    ends = [*starts[1:], matrices.shape[-1]]
    centres = [(start + end - 1) / 2 for start, end in zip(starts, ends, strict=True)]
    figure = new_figure(3.4 * min(len(drawn), 4) + 1.4, 3.4 * math.ceil(len(drawn) / 4) + 1.0)
    from matplotlib.colors import LogNorm

    positive = matrices[drawn][matrices[drawn] > 0]
    norm = LogNorm(vmin=max(1e-4, float(positive.min()) if positive.size else 1e-4), vmax=1.0, clip=True)
    axes = figure.subplots(math.ceil(len(drawn) / 4), min(len(drawn), 4), squeeze=False)
    for level, ax in zip(drawn, axes.ravel(), strict=False):
        ax.imshow(matrices[level], cmap=SEQUENTIAL_COLOURS, norm=norm, interpolation="nearest")
        for start in starts[1:]:  # between [CLS], the main image's and each crop's tokens
            ax.axhline(start - 0.5, color="white", linewidth=0.6)
            ax.axvline(start - 0.5, color="white", linewidth=0.6)
        ax.set_xticks(centres, blocks, fontsize=7, rotation=45)
        ax.set_yticks(centres, blocks, fontsize=7)
        ax.set_title(f"after ViT layer {level}", fontsize=10)
        ax.set_xlabel("input token (original patch)", fontsize=8)
        ax.set_ylabel("token after the layer", fontsize=8)
    for ax in axes.ravel()[len(drawn) :]:
        ax.set_axis_off()
    _colour_bar(
        figure, axes, norm, SEQUENTIAL_COLOURS, "share of the input token in the token\n(log scale; rows sum to 1)"
    )
    _suptitle(
        figure,
        f"Fig. 6: how the ViT mixes its input tokens: patch-patch tracking maps H_V^l (Eq. 17), mean over {scope}. "
        "Level 0 is the identity by definition and is not drawn.",
    )
    results["figures"]["fig6"] = save_figure(figure, output_dir / "fig6_patch_patch_maps.png")


def _patch_token_results(
    statistics: _SplitStatistics, levels: list[int], output_dir: Path, results: dict[str, Any]
) -> None:
    """Fig. 7a/b: mean patch-token tracking maps H_C^l (Eq. 18) of `<s>`/`<o>`; Fig. 7c: KL of heads (Eq. 20)."""
    mean = statistics.mean("patch_token", statistics.num_examples)  # (levels, 2, n_V)
    if mean is None:
        reason = "visual_context='cls' (w/o TVA ablation): no cross-modal attention, so no H_C"
        results["skipped"].update(fig7_patch_token_maps=reason, fig7c_kl_divergence=reason)
        return
    results["fig7_patch_token_maps"] = {
        "levels": levels,
        "description": "mean over heads and examples of H_C^l at <s>/<o>, over all n_V visual tokens",
        **{marker: _floats(mean[:, row]) for row, marker in enumerate(MARKERS)},
    }
    results["figures"]["fig7"] = _marker_grids_figure(
        output_dir / "fig7_patch_token_maps.png",
        "Fig. 7: which original image patches the subject and object tokens draw on, through the ViT and the "
        f"cross-modal attention: tracking maps, mean over heads and {statistics.num_examples} examples "
        "(H_C^l, Eq. 18)",
        "tracked weight",
        levels,
        mean,
        statistics.layout,
    )
    kl = statistics.mean("kl_divergence", statistics.num_examples)  # (levels, 2)
    results["fig7c_kl_divergence"] = {
        "levels": levels,
        "description": "mean over examples of D_KL(H_C^l || mean over heads) (Eq. 20) at <s>/<o>",
        **{marker: _floats(kl[:, row]) for row, marker in enumerate(MARKERS)},
    }
    results["figures"]["fig7c"] = _line_figure(
        output_dir / "fig7c_kl_divergence.png",
        "Fig. 7c: how much the attention heads disagree (KL divergence of each head's tracking map H_C^l from the "
        "heads' mean, Eq. 20; 0 = all heads look at the same patches)",
        "KL divergence, summed over heads (nats)",
        {"mean over examples": {marker: kl[:, row] for row, marker in enumerate(MARKERS)}},
        levels,
    )


def _tsne_results(statistics: _SplitStatistics, output_dir: Path, results: dict[str, Any]) -> None:
    """Fig. 8: one t-SNE of the patch representations V^l (all levels, [CLS] and absent crops left out) of the first
    examples, coloured (a) by level and (b) main image vs object crops; plus, per level, the cosine distance between
    the mean main-image patch and the mean crop patch (the paper's "discrepancy" of 8b)."""
    if not statistics.tsne_masks:
        results["skipped"]["fig8_tsne"] = "tsne_examples=0"
        return
    states = torch.cat(statistics.tsne_states, dim=1).numpy()  # (L + 1, k, n_V, d_V)
    mask = torch.cat(statistics.tsne_masks).numpy()  # (k, n_V)
    main = statistics.layout.main_tokens
    example, token = np.nonzero(mask[:, 1:])
    token = token + 1
    levels = list(range(states.shape[0]))
    features = np.concatenate([states[level, example, token] for level in levels])
    point_level = np.repeat(levels, len(token))
    is_image = np.tile(token < main, len(levels))
    if len(features) < 4:
        results["skipped"]["fig8_tsne"] = f"only {len(features)} patch representations"
        return
    try:
        import matplotlib
        from sklearn.manifold import TSNE
    except ImportError as error:
        raise ImportError("Fig. 8 needs matplotlib and scikit-learn: pip install 'hvformer[analysis]'.") from error
    perplexity = float(min(30.0, max(1.0, (len(features) - 1) / 3)))
    coordinates = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=0
    ).fit_transform(features.astype(np.float32))

    distances = []
    for level in levels:
        image_mean = states[level, example[token < main], token[token < main]].mean(axis=0)
        crop_rows = states[level, example[token >= main], token[token >= main]]
        if not len(crop_rows):
            distances.append(None)
            continue
        crop_mean = crop_rows.mean(axis=0)
        cosine = image_mean @ crop_mean / max(np.linalg.norm(image_mean) * np.linalg.norm(crop_mean), 1e-12)
        distances.append(round(float(1.0 - cosine), 6))
    results["fig8_tsne"] = {
        "levels": levels,
        "num_examples": int(mask.shape[0]),
        "perplexity": perplexity,
        "points": {
            "x": _floats(coordinates[:, 0], 4),
            "y": _floats(coordinates[:, 1], 4),
            "level": point_level.tolist(),
            "source": ["image" if flag else "crop" for flag in is_image],
            "example": np.tile(example, len(levels)).tolist(),
        },
        "image_crop_cosine_distance": distances,
    }

    figure = new_figure(11.0, 5.0)
    by_level, by_source = figure.subplots(1, 2)
    from matplotlib.colors import BoundaryNorm

    level_norm = BoundaryNorm(np.arange(len(levels) + 1) - 0.5, matplotlib.colormaps[SEQUENTIAL_COLOURS].N)
    by_level.scatter(
        coordinates[:, 0], coordinates[:, 1], s=6, c=point_level, cmap=SEQUENTIAL_COLOURS, norm=level_norm
    )
    _colour_bar(figure, by_level, level_norm, SEQUENTIAL_COLOURS, "ViT level l", ticks=levels)
    by_level.set_title("(a) coloured by ViT level", fontsize=10)
    for flag, colour, label in ((True, "tab:blue", "main image"), (False, "tab:red", "object crops")):
        selected = is_image == flag
        if selected.any():
            by_source.scatter(coordinates[selected, 0], coordinates[selected, 1], s=6, c=colour, label=label)
    by_source.legend(fontsize=8, markerscale=2)
    by_source.set_title("(b) main image vs object crops", fontsize=10)
    for ax in (by_level, by_source):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE dimension 1")
        ax.set_ylabel("t-SNE dimension 2")
    _suptitle(
        figure,
        f"Fig. 8: patch representations of every ViT level (V^l, Eq. 3) of {mask.shape[0]} examples, "
        "in one t-SNE map (nearby points = similar representations)",
    )
    results["figures"]["fig8"] = save_figure(figure, output_dir / "fig8_tsne.png")


def _quartiles(values: np.ndarray) -> dict[str, Any]:
    """Mean, median and quartiles over the first axis of `(N, E)` values."""
    q1, median, q3 = np.percentile(values, [25, 50, 75], axis=0)
    return {"mean": _floats(values.mean(axis=0)), "median": _floats(median), "q1": _floats(q1), "q3": _floats(q3)}


def expert_weight_dots(ax: Axes, weights: np.ndarray, expert_names: Sequence[str]) -> None:
    """
    Expert weights G of `(N, 2, E)` examples x (`<s>`, `<o>`) x experts: per expert, every example as a dot (spread
    sideways at random, seed 0), `<s>` left and `<o>` right, and the mean as a black bar with its value.

    Every example is drawn because the weights are often bimodal (an expert takes almost all the weight of some
    examples and almost none of the others): a box plot without outliers then shows a box at 0 for an expert that
    takes a fifth of the weight. The artists carry the `gid`s `"<marker> <expert> examples"` and
    `"<marker> <expert> mean"`.
    """
    generator = np.random.default_rng(0)
    for row, (marker, colour) in enumerate(zip(MARKERS, ("tab:blue", "tab:orange"), strict=True)):
        for expert, name in enumerate(expert_names):
            centre = expert + (row - 0.5) * 0.4
            values = weights[:, row, expert]
            ax.scatter(
                centre + generator.uniform(-0.13, 0.13, len(values)),
                values,
                s=9,
                color=colour,
                alpha=0.45,
                linewidths=0,
                gid=f"{marker} {name} examples",
                label=MARKER_NAMES[marker] if expert == 0 else None,
            )
            mean = float(values.mean())
            ax.hlines(
                mean,
                centre - 0.17,
                centre + 0.17,
                color="black",
                linewidth=2,
                gid=f"{marker} {name} mean",
                label="mean" if row == expert == 0 else None,
            )
            ax.annotate(
                f"{mean:.2f}", (centre, mean), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7
            )
    ax.set_xticks(np.arange(len(expert_names)), [expert_label(name) for name in expert_names], fontsize=8)
    ax.set_ylim(-0.04, 1.08)
    ax.set_ylabel("expert weight G (Eq. 9)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", markerscale=1.5)


def _history_figure(history: dict[str, Any], path: Path) -> str:
    """Fig. 9a: mean expert weights of `<s>`/`<o>` over training, a line per expert."""
    entries = history["history"]
    x = [entry["epoch"] if entry.get("epoch") is not None else entry["step"] for entry in entries]
    figure = new_figure(10.0, 4.0)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, marker in zip(axes, MARKERS, strict=True):
        weights = np.array([entry[marker] for entry in entries])  # (intervals, E)
        for expert, name in enumerate(history["expert_names"]):
            ax.plot(x, weights[:, expert], marker="o", markersize=3, label=expert_label(name))
        ax.set_xlabel("epoch" if entries[0].get("epoch") is not None else "training step")
        ax.set_title(MARKER_NAMES[marker], fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean expert weight G (Eq. 9)")
    _suptitle(figure, "Fig. 9a: how the router's expert weights change during training (mean over training examples)")
    return save_figure(figure, path)


def _expert_weight_results(
    statistics: _SplitStatistics,
    relations: list[str] | None,
    expert_names: list[str],
    history_path: Path | None,
    max_relations: int,
    none_label: str,
    output_dir: Path,
    results: dict[str, Any],
) -> None:
    """Fig. 9 (expert weights G of `<s>`/`<o>`: during training and over the split) and Fig. 10 (per relation)."""
    if not statistics.expert_weights:
        reason = "fusion='concat' (w/o MoME ablation): no router, so no expert weights"
        results["skipped"].update(fig9_expert_weights=reason, fig10_expert_weights_by_relation=reason)
        return
    weights = torch.cat(statistics.expert_weights).numpy()  # (N, 2, E)
    history = None
    if history_path is not None and history_path.is_file():
        history = json.loads(history_path.read_text())
        if history.get("expert_names") != expert_names:
            raise ValueError(
                f"{history_path} records the experts {history.get('expert_names')}, the model has {expert_names}."
            )
    results["fig9_expert_weights"] = {
        "expert_names": expert_names,
        "description": "expert weights G (Eq. 9) at <s>/<o>: per example of the split, and their statistics; "
        "'history': the training means recorded by ExpertWeightsRecorder (Fig. 9a)",
        **{
            marker: {**_quartiles(weights[:, row]), "per_example": _floats(weights[:, row])}
            for row, marker in enumerate(MARKERS)
        },
        "history": history,
    }
    if history is not None and history["history"]:
        results["figures"]["fig9a"] = _history_figure(history, output_dir / "fig9a_expert_weights_history.png")
    else:
        where = "no history_path given" if history_path is None else f"{history_path} is missing or empty"
        results["skipped"]["fig9a_expert_weights_history"] = f"no training history: {where}"
    figure = new_figure(max(6.0, 1.4 * len(expert_names) + 2.0), 4.2)
    expert_weight_dots(figure.subplots(), weights, expert_names)
    _suptitle(figure, f"Fig. 9b: expert weights of the subject and object tokens, {len(weights)} examples (dots)")
    results["figures"]["fig9b"] = save_figure(figure, output_dir / "fig9b_expert_weights.png")

    if relations is None:
        results["skipped"]["fig10_expert_weights_by_relation"] = "the dataset has no `relation` or `labels` column"
        return
    counts = Counter(relations)
    shown = [relation for relation, _ in counts.most_common(max_relations)]
    if none_label in counts and none_label not in shown:
        shown[-1] = none_label
    relation_array = np.array(relations, dtype=object)
    results["fig10_expert_weights_by_relation"] = {
        "expert_names": expert_names,
        "description": "expert weights at <s>/<o> grouped by gold relation; 'shown': the relations drawn",
        "shown": shown,
        "per_relation": {
            relation: {
                "count": count,
                **{marker: _quartiles(weights[relation_array == relation, row]) for row, marker in enumerate(MARKERS)},
            }
            for relation, count in counts.most_common()
        },
    }
    columns = min(len(shown), 2)
    rows = math.ceil(len(shown) / columns)
    figure = new_figure(max(5.5, 1.2 * len(expert_names) + 1.5) * columns, 3.8 * rows + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for ax, relation in zip(axes, shown, strict=False):
        expert_weight_dots(ax, weights[relation_array == relation], expert_names)
        ax.set_title(f"gold relation {relation} ({counts[relation]} examples)", fontsize=9)
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    _suptitle(figure, "Fig. 10: expert weights of the subject and object tokens, per gold relation (dots: examples)")
    results["figures"]["fig10"] = save_figure(figure, output_dir / "fig10_expert_weights_by_relation.png")


def _gold_relations(dataset: datasets.Dataset, config: Any) -> list[str] | None:
    """The gold relation name of each example, from the `relation` column or the `labels` ids."""
    if "relation" in dataset.column_names:
        return [str(relation) for relation in dataset["relation"]]
    if "labels" in dataset.column_names:
        return [config.id2label[int(label)] for label in dataset["labels"]]
    return None


def analyse(
    model: torch.nn.Module,
    dataset: datasets.Dataset,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    output_dir: str | os.PathLike,
    batch_size: int = 8,
    max_examples: int | None = None,
    history_path: str | os.PathLike | None = None,
    tsne_examples: int = 2,
    max_relations: int = 4,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """
    Runs a trained HVFormer over a split and writes the analysis of the paper's §4.3 (Figs. 5-10).

    One pass in eval mode without gradients, with `output_tracking_maps=True, output_hidden_states=True`; only
    running sums are kept (see below). Writes PNGs (dpi 120) and `analysis.json` in `output_dir`:

    - `fig5a_mean_cross_attention` (RQ2): Ā_C^l = (1/M) Σ_m A_C^(l,m) of `<s>` and `<o>` averaged over the split,
      for each level of `config.vision_levels`, over all n_V visual tokens (absent crops count as 0); drawn over the
      main image's patch grid, [CLS] in the titles. `per_head`: the head-resolved means (Appendix A.3).
    - `fig5b_kurtosis`: the excess kurtosis (Eq. 19) of each head's split-averaged distribution, summed over heads
      (the paper's number); `mean_per_example`: the same sum per example, averaged. Both over the [CLS] + main image
      tokens, which every example has (the zeros of absent crops would distort the averaged distribution).
    - `fig6_patch_patch_maps` (RQ3): mean H_V^l (Eq. 17) for l = 0..max level; of the whole sequence over the
      examples whose crops are all present (so the matrices agree and rows sum to 1), and of the [CLS] + main image
      block over all examples. The figure draws the former (the latter when no example has all its crops) for
      l >= 1 only: H_V^0 is the identity (with a single level 0 there is no figure, and `skipped` says why).
    - `fig7_patch_token_maps`: mean over heads and examples of H_C^l (Eq. 18) at `<s>`/`<o>`;
      `fig7c_kl_divergence`: mean over examples of the heads' KL divergence from their mean (Eq. 20).
    - `fig8_tsne`: t-SNE of V^l of the first `tsne_examples` examples (all levels in one embedding), coloured by
      level (8a) and main image vs crops (8b).
    - `fig9_expert_weights` (RQ4): expert weights G at `<s>`/`<o>` of every example (9b: a dot per example and the
      mean, see [`expert_weight_dots`]) and the training history
      from `history_path` (9a, when the file exists); `fig10_expert_weights_by_relation`: the same grouped by gold
      relation, the `max_relations` most frequent drawn (`None` always among them when present).

    Figures that do not apply are left out and `analysis.json["skipped"]` says why: `visual_context="cls"` has no
    cross-modal attention (Figs. 5, 7), `fusion="concat"` no router (Figs. 9, 10).

    Args:
        model ([`HVFormerForRelationExtraction`]): the trained model (on any device; put back in its mode after).
        dataset (`datasets.Dataset`): a split from [`load_mnre`]; the columns `forward` accepts are batched, the
            `relation` (or `labels`) column gives the gold relations of Fig. 10.
        collator: turns rows into a batch, e.g. [`HVFormerDataCollator`].
        output_dir (`str` or `os.PathLike`): where the PNGs and `analysis.json` go (created).
        batch_size (`int`, *optional*, defaults to 8): examples per forward pass.
        max_examples (`int`, *optional*): analyse only the first examples.
        history_path (`str` or `os.PathLike`, *optional*): a JSON file of [`ExpertWeightsRecorder.save`] (Fig. 9a).
        tsne_examples (`int`, *optional*, defaults to 2): examples whose patch representations go into the t-SNE
            (0 skips Fig. 8). Each adds (max level + 1) x (present patches) points; t-SNE time grows quickly with
            the number of points (a CLIP ViT-B/32 with 3 crops gives about 1,260 per example).
        max_relations (`int`, *optional*, defaults to 4): relations drawn in Fig. 10.
        progress_bar (`bool`, *optional*, defaults to `True`): show a tqdm progress bar.

    Returns:
        `dict`: the content of `analysis.json`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("The dataset to analyse is empty.")
    config = model.config
    levels = list(config.vision_levels)
    statistics = _collect(model, dataset, collator, batch_size, tsne_examples, progress_bar)
    results: dict[str, Any] = {
        "setup": {
            "num_examples": statistics.num_examples,
            "num_examples_all_crops_present": statistics.num_complete,
            "vision_levels": levels,
            "expert_names": list(config.expert_names) if config.fusion == "mome" else None,
            "visual_context": config.visual_context,
            "fusion": config.fusion,
            "markers": list(MARKERS),
            "token_layout": statistics.layout.to_dict(),
        },
        "figures": {},
        "skipped": {},
    }
    _cross_attention_results(statistics, levels, output_dir, results)
    _patch_patch_results(statistics, output_dir, results)
    _patch_token_results(statistics, levels, output_dir, results)
    _tsne_results(statistics, output_dir, results)
    _expert_weight_results(
        statistics,
        _gold_relations(dataset, config),
        list(config.expert_names),
        Path(history_path) if history_path is not None else None,
        max_relations,
        config.none_label,
        output_dir,
        results,
    )
    (output_dir / "analysis.json").write_text(json.dumps(results) + "\n")
    logger.info("Analysis of %d examples written to %s", statistics.num_examples, output_dir)
    return results


def run_analysis(
    trainer: transformers.Trainer,
    dataset: datasets.Dataset,
    output_dir: Path,
    max_examples: int | None = None,
) -> dict[str, Any]:
    """
    [`analyse`] after training with a `Trainer` (`run_mre.py --do_analysis`): the trainer's model, data collator
    and `per_device_eval_batch_size`, the training history `output_dir.parent / "expert_weights_history.json"`.

    Runs on the main process only; the other processes of a distributed run return `{}` at once (no collective
    call is made, so they need not wait). The model must be whole on the main process: not sharded by FSDP or
    DeepSpeed ZeRO-3 (analyse a saved model with the CLI instead).
    """
    if not trainer.is_world_process_zero():
        return {}
    output_dir = Path(output_dir)
    return analyse(
        trainer.model,
        dataset,
        trainer.data_collator,
        output_dir,
        batch_size=trainer.args.per_device_eval_batch_size,
        max_examples=max_examples,
        history_path=output_dir.parent / HISTORY_FILE,
        progress_bar=not trainer.args.disable_tqdm,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Fig. 4 (RQ1)


def _results_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / "all_results.json" if path.is_dir() else path


def _single_level(results_file: Path) -> int:
    """The ViT level of a single-level run, from the `config.json` beside its `all_results.json`."""
    config_file = results_file.parent / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: pass {{level: path}} to give the levels explicitly.")
    levels = json.loads(config_file.read_text()).get("vision_levels")
    if not isinstance(levels, list) or len(levels) != 1:
        raise ValueError(f"{config_file} has vision_levels={levels}; Fig. 4 compares runs with a single level each.")
    return int(levels[0])


def plot_level_f1(
    metrics_files: Mapping[int, str | os.PathLike] | Sequence[str | os.PathLike], output_path: str | os.PathLike
) -> dict[str, Any]:
    """
    Fig. 4 (RQ1): F1 of model variants with a single expert f_l, against the ViT level l.

    Args:
        metrics_files: `{level: path}`, or paths whose level is read from the `vision_levels` (one level) of the
            `config.json` beside each file. A path is a run's `all_results.json` (from `run_mre.py`) or its folder.
            The files hold `eval_f1` and/or `test_f1` as fractions.
        output_path: the PNG to write; the numbers go to the same path with a `.json` suffix.

    Returns:
        `dict`: `levels` (sorted), `eval_f1` and `test_f1` (fractions, `None` where a run lacks one), `files`.
    """
    if isinstance(metrics_files, Mapping):
        runs = [(int(level), _results_file(path)) for level, path in metrics_files.items()]
    else:
        runs = [(_single_level(_results_file(path)), _results_file(path)) for path in metrics_files]
    if not runs:
        raise ValueError("No runs given.")
    levels = [level for level, _ in runs]
    if len(set(levels)) != len(levels):
        raise ValueError(f"Several runs have the same level: {sorted(levels)}.")
    runs.sort()
    metrics = [json.loads(path.read_text()) for _, path in runs]
    data: dict[str, Any] = {"levels": [level for level, _ in runs], "files": [str(path) for _, path in runs]}
    for key in ("eval_f1", "test_f1"):
        data[key] = [None if run.get(key) is None else float(run[key]) for run in metrics]
    if all(value is None for key in ("eval_f1", "test_f1") for value in data[key]):
        raise ValueError(f"None of {data['files']} has eval_f1 or test_f1.")

    figure = new_figure(6.0, 3.8)
    ax = figure.subplots()
    for key, label in (("eval_f1", "validation"), ("test_f1", "test")):
        points = [(level, 100 * f1) for level, f1 in zip(data["levels"], data[key], strict=True) if f1 is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xticks(data["levels"])
    ax.set_xlabel("ViT level l of the single expert f_l")
    ax.set_ylabel("F1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    _suptitle(figure, "Fig. 4: F1 of single-level variants")
    output_path = Path(output_path)
    save_figure(figure, output_path)
    output_path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return data


# ---------------------------------------------------------------------------------------------------------------------
# CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m processing.analysis",
        description="HVFormer analysis (paper §4.3): Figs. 5-10 of a trained model, or Fig. 4 from single-level runs.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="folder of a trained model and its processor (Figs. 5-10)")
    source.add_argument("--level_runs", nargs="+", help="folders (or all_results.json) of single-level runs (Fig. 4)")
    parser.add_argument("--output_dir", required=True, help="where the figures and the JSON go")
    parser.add_argument("--data_dir", help="MNRE-format folder (default: the built-in sample dataset)")
    parser.add_argument("--split", default="val", help="split to analyse (default: val)")
    parser.add_argument("--max_examples", type=int, help="analyse only the first examples")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--tsne_examples", type=int, default=2, help="examples in the t-SNE of Fig. 8 (0: none)")
    parser.add_argument("--max_relations", type=int, default=4, help="relations drawn in Fig. 10")
    parser.add_argument("--history", help=f"training history for Fig. 9a (default: MODEL/{HISTORY_FILE})")
    parser.add_argument("--cache_dir", help="cache folder of load_mnre")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`python -m processing.analysis ...` (see `--help`); returns what [`analyse`] or [`plot_level_f1`] returns."""
    args = _parse_args(argv)
    output_dir = Path(args.output_dir)
    if args.level_runs:
        return plot_level_f1(args.level_runs, output_dir / "fig4_level_f1.png")

    from modeling_hvformer import HVFormerForRelationExtraction

    from .collator import HVFormerDataCollator
    from .mnre_dataset import load_mnre
    from .processing_hvformer import HVFormerProcessor
    from .sample_data import build_sample_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = HVFormerForRelationExtraction.from_pretrained(args.model).to(device)
    # The classes are local: without trust_remote_code=False, AutoTokenizer (inside) would ask whether to run the
    # folder's copy of the remote code, because it reads config.json with AutoConfig.
    processor = HVFormerProcessor.from_pretrained(args.model, trust_remote_code=False)
    relation_labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    data_dir = args.data_dir if args.data_dir is not None else build_sample_dataset()
    dataset = load_mnre(
        data_dir, processor, splits=[args.split], relation_labels=relation_labels, cache_dir=args.cache_dir
    )[args.split]
    return analyse(
        model,
        dataset,
        HVFormerDataCollator(processor),
        output_dir,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        history_path=args.history if args.history is not None else Path(args.model) / HISTORY_FILE,
        tsne_examples=args.tsne_examples,
        max_relations=args.max_relations,
    )


if __name__ == "__main__":
    main()
