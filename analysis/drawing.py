"""Shared drawing helpers of the analysis figures: the Agg canvas, colour scales, titles and the expert-weight dots.

matplotlib is the optional `analysis` extra (`pip install 'hvformer[analysis]'`): it is imported when a figure is
drawn, so the rest of the package imports without it. Figures are drawn with the Agg renderer on
`matplotlib.figure.Figure` objects, outside `pyplot` (no display, no global state).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DIVERGING_COLOURS",
    "DPI",
    "SEQUENTIAL_COLOURS",
    "colour_bar",
    "even_spread_norm",
    "expert_label",
    "expert_weight_dots",
    "marker_label",
    "new_figure",
    "relative_to_even",
    "save_figure",
    "suptitle",
]

DPI = 120
SEQUENTIAL_COLOURS = "viridis"
"""Perceptually uniform colour map of the figures' magnitudes."""
DIVERGING_COLOURS = "RdBu_r"
"""Colour map of the maps relative to an even spread (white = even, red = more, blue = less)."""
MARKER_ROLES = ("subject", "object")


def marker_label(markers: Sequence[str], row: int) -> str:
    """The marker of `row` (0: subject, 1: object) in words, e.g. `"subject <s>"`."""
    return f"{MARKER_ROLES[row]} {markers[row]}"


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


def suptitle(figure: Figure, title: str) -> None:
    """The figure's title, wrapped to the figure's width (matplotlib's own `wrap` ignores the layout engine)."""
    width = int(figure.get_figwidth() * 10.5)
    figure.suptitle(textwrap.fill(title, width=width), fontsize=11)


def colour_bar(figure: Figure, axes: Any, norm: Any, cmap: str, label: str, **kwargs: Any) -> None:
    """One labelled colour bar for all `axes` of a figure drawn with `norm` and `cmap`."""
    from matplotlib.cm import ScalarMappable

    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=label, **kwargs)


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


def expert_weight_dots(ax: Axes, weights: np.ndarray, expert_names: Sequence[str], markers: Sequence[str]) -> None:
    """
    Expert weights G of `(N, 2, E)` examples x (subject, object marker) x experts: per expert, every example as a dot
    (spread sideways at random, seed 0), the subject left and the object right, and the mean as a black bar with its
    value.

    Every example is drawn because the weights are often bimodal (an expert takes almost all the weight of some
    examples and almost none of the others): a box plot without outliers then shows a box at 0 for an expert that
    takes a fifth of the weight. The artists carry the `gid`s `"<marker> <expert> examples"` and
    `"<marker> <expert> mean"`.
    """
    generator = np.random.default_rng(0)
    for row, (marker, colour) in enumerate(zip(markers, ("tab:blue", "tab:orange"), strict=True)):
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
                label=marker_label(markers, row) if expert == 0 else None,
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
