"""The figures of the paper's §4.3 (Figs. 5-10), one function each: it draws arrays computed by
`analysis.statistics`, writes a PNG into `output_dir` and returns its file name."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .drawing import (
    DIVERGING_COLOURS,
    SEQUENTIAL_COLOURS,
    colour_bar,
    even_spread_norm,
    expert_label,
    expert_weight_dots,
    marker_label,
    new_figure,
    relative_to_even,
    save_figure,
    suptitle,
)
from .statistics import TsneEmbedding
from .tokens import VisualTokenLayout

SHARES_PER_LINE = 34
"""Characters of the block shares under a map per line (a map is about as wide)."""

__all__ = [
    "MarkerMaps",
    "expert_weights_by_relation_figure",
    "expert_weights_figure",
    "expert_weights_history_figure",
    "kl_divergence_figure",
    "kurtosis_figure",
    "mean_cross_attention_figure",
    "patch_patch_figure",
    "patch_token_figure",
    "tsne_figure",
]


@dataclass(frozen=True)
class MarkerMaps:
    """Weights of the subject and object markers over the visual tokens, averaged over the examples of a split.

    Args:
        values: `(levels, 2, n_V)` weights (each row sums to 1 over the visual tokens).
        levels: the ViT levels of the experts.
        layout: where the visual tokens sit.
        markers: the subject and object markers.
        num_examples: examples averaged.
    """

    values: np.ndarray
    levels: Sequence[int]
    layout: VisualTokenLayout
    markers: Sequence[str]
    num_examples: int


def _marker_grids_figure(maps: MarkerMaps, path: Path, title: str, quantity: str) -> str:
    """The maps over the main image's patch grid: rows subject/object, a column per level, one colour scale relative to
    an even spread over the image (upsampled smoothly, patch borders drawn), and under each map the shares of the
    blocks of the visual sequence ([CLS], registers, the image, each crop)."""
    values, levels, layout, markers = maps.values, maps.levels, maps.layout, maps.markers
    figure = new_figure(2.7 * len(levels) + 1.6, 6.4)
    relative = relative_to_even(layout.image_grid(values))  # (levels, 2, g, g)
    norm = even_spread_norm(relative)
    grid = layout.grid
    axes = figure.subplots(2, len(levels), squeeze=False)
    for column, level in enumerate(levels):
        for row in range(len(markers)):
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
            ends = [start for _, start in layout.blocks()[1:]] + [len(shares)]
            block_shares = textwrap.fill(  # under a map of its width: wrapped between blocks, never within one
                "  ".join(
                    f"{name} {shares[start:end].sum():.0%}".replace(" ", "\xa0")
                    for (name, start), end in zip(layout.blocks(), ends, strict=True)
                ),
                width=SHARES_PER_LINE,
            )
            ax.set_xlabel(
                f"patches {relative[column, row].min():.2f}-{relative[column, row].max():.2f} x even\n{block_shares}",
                fontsize=8,
            )
            if row == 0:
                ax.set_title(f"ViT level {level}", fontsize=10)
            if column == 0:
                ax.set_ylabel(marker_label(markers, row), fontsize=10)
    label = f"{quantity} on a patch\nrelative to an even spread over the image (1 = even)"
    colour_bar(figure, axes, norm, DIVERGING_COLOURS, label)
    suptitle(figure, title)
    return save_figure(figure, path)


def _line_figure(
    path: Path,
    title: str,
    y_label: str,
    panels: Mapping[str, np.ndarray],
    x: Sequence[int],
    markers: Sequence[str],
) -> str:
    """One panel per entry of `panels` (panel title -> `(levels, 2)` values, a line per marker), x = the experts' ViT
    levels."""
    figure = new_figure(max(6.5, 4.8 * len(panels)), 4.0)
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (panel_title, values) in zip(axes, panels.items(), strict=True):
        for row in range(len(markers)):
            ax.plot(x, values[:, row], marker="o", label=marker_label(markers, row))
        ax.set_xticks(list(x))
        ax.set_xlabel("ViT level read by the expert (l)")
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(y_label)
    suptitle(figure, title)
    return save_figure(figure, path)


def mean_cross_attention_figure(maps: MarkerMaps, output_dir: Path) -> str:
    """Fig. 5a (RQ2): the mean cross-modal attention Ā_C^l of the markers over the image."""
    return _marker_grids_figure(
        maps,
        output_dir / "fig5a_mean_cross_attention.png",
        f"Fig. 5a: where the subject and object tokens look in the image: cross-modal attention of each expert, "
        f"mean over heads and {maps.num_examples} examples (Ā_C^l, Eq. 4)",
        "attention",
    )


def kurtosis_figure(
    summed: np.ndarray, per_sample: np.ndarray, levels: Sequence[int], markers: Sequence[str], output_dir: Path
) -> str:
    """Fig. 5b: the `(levels, 2)` excess kurtosis (Eq. 19) summed over heads, of the split-averaged attention and of
    each example's, averaged."""
    return _line_figure(
        output_dir / "fig5b_kurtosis.png",
        "Fig. 5b: how peaked the cross-modal attention over [CLS] + the image is (excess kurtosis, Eq. 19; "
        "0 = as peaked as a normal sample, higher = a few patches get most of the attention)",
        "excess kurtosis, summed over heads",
        {
            "of the attention averaged over the split": summed,
            "of each example's attention, averaged": per_sample,
        },
        levels,
        markers,
    )


def patch_patch_figure(
    matrices: np.ndarray, blocks: Sequence[str], starts: Sequence[int], scope: str, output_dir: Path
) -> str:
    """Fig. 6 (RQ3): mean patch-patch tracking maps H_V^l (Eq. 17) for l >= 1 (H_V^0 is the identity).

    Args:
        matrices: `(L + 1, n, n)` mean H_V^0..H_V^L.
        blocks: names of the token blocks ([CLS], registers, the image, each crop), starting at `starts`.
        scope: the examples averaged, in words.
    """
    drawn = list(range(1, matrices.shape[0]))
    ends = [*starts[1:], matrices.shape[-1]]
    centres = [(start + end - 1) / 2 for start, end in zip(starts, ends, strict=True)]
    figure = new_figure(3.4 * min(len(drawn), 4) + 1.4, 3.4 * math.ceil(len(drawn) / 4) + 1.0)
    from matplotlib.colors import LogNorm

    positive = matrices[drawn][matrices[drawn] > 0]
    norm = LogNorm(vmin=max(1e-4, float(positive.min()) if positive.size else 1e-4), vmax=1.0, clip=True)
    axes = figure.subplots(math.ceil(len(drawn) / 4), min(len(drawn), 4), squeeze=False)
    for level, ax in zip(drawn, axes.ravel(), strict=False):
        ax.imshow(matrices[level], cmap=SEQUENTIAL_COLOURS, norm=norm, interpolation="nearest")
        for start in starts[1:]:  # between the blocks: [CLS], registers, the main image's and each crop's tokens
            ax.axhline(start - 0.5, color="white", linewidth=0.6)
            ax.axvline(start - 0.5, color="white", linewidth=0.6)
        ax.set_xticks(centres, blocks, fontsize=7, rotation=45)
        ax.set_yticks(centres, blocks, fontsize=7)
        ax.set_title(f"after ViT layer {level}", fontsize=10)
        ax.set_xlabel("input token (original patch)", fontsize=8)
        ax.set_ylabel("token after the layer", fontsize=8)
    for ax in axes.ravel()[len(drawn) :]:
        ax.set_axis_off()
    colour_bar(
        figure, axes, norm, SEQUENTIAL_COLOURS, "share of the input token in the token\n(log scale; rows sum to 1)"
    )
    suptitle(
        figure,
        f"Fig. 6: how the ViT mixes its input tokens: patch-patch tracking maps H_V^l (Eq. 17), mean over {scope}. "
        "Level 0 is the identity by definition and is not drawn.",
    )
    return save_figure(figure, output_dir / "fig6_patch_patch_maps.png")


def patch_token_figure(maps: MarkerMaps, output_dir: Path) -> str:
    """Fig. 7a/b: the mean patch-token tracking maps H_C^l (Eq. 18) of the markers."""
    return _marker_grids_figure(
        maps,
        output_dir / "fig7_patch_token_maps.png",
        "Fig. 7: which original image patches the subject and object tokens draw on, through the ViT and the "
        f"cross-modal attention: tracking maps, mean over heads and {maps.num_examples} examples "
        "(H_C^l, Eq. 18)",
        "tracked weight",
    )


def kl_divergence_figure(kl: np.ndarray, levels: Sequence[int], markers: Sequence[str], output_dir: Path) -> str:
    """Fig. 7c: the `(levels, 2)` mean KL divergence of the heads from their mean (Eq. 20)."""
    return _line_figure(
        output_dir / "fig7c_kl_divergence.png",
        "Fig. 7c: how much the attention heads disagree (KL divergence of each head's tracking map H_C^l from the "
        "heads' mean, Eq. 20; 0 = all heads look at the same patches)",
        "KL divergence, summed over heads (nats)",
        {"mean over examples": kl},
        levels,
        markers,
    )


def tsne_figure(embedding: TsneEmbedding, output_dir: Path) -> str:
    """Fig. 8: the t-SNE of the patch representations, coloured (a) by level and (b) main image vs object crops."""
    import matplotlib
    from matplotlib.colors import BoundaryNorm

    coordinates, levels, is_image = embedding.coordinates, embedding.levels, embedding.is_image
    figure = new_figure(11.0, 5.0)
    by_level, by_source = figure.subplots(1, 2)
    level_norm = BoundaryNorm(np.arange(len(levels) + 1) - 0.5, matplotlib.colormaps[SEQUENTIAL_COLOURS].N)
    by_level.scatter(
        coordinates[:, 0], coordinates[:, 1], s=6, c=embedding.level, cmap=SEQUENTIAL_COLOURS, norm=level_norm
    )
    colour_bar(figure, by_level, level_norm, SEQUENTIAL_COLOURS, "ViT level l", ticks=levels)
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
    suptitle(
        figure,
        f"Fig. 8: patch representations of every ViT level (V^l, Eq. 3) of {embedding.num_examples} examples, "
        "in one t-SNE map (nearby points = similar representations)",
    )
    return save_figure(figure, output_dir / "fig8_tsne.png")


def expert_weights_history_figure(history: dict[str, Any], markers: Sequence[str], output_dir: Path) -> str:
    """Fig. 9a: mean expert weights of the markers over training (a file of [`ExpertWeightsRecorder.save`]), a line
    per expert."""
    entries = history["history"]
    x = [entry["epoch"] if entry.get("epoch") is not None else entry["step"] for entry in entries]
    figure = new_figure(10.0, 4.0)
    axes = figure.subplots(1, 2, sharey=True)
    for row, (ax, marker) in enumerate(zip(axes, markers, strict=True)):
        weights = np.array([entry[marker] for entry in entries])  # (intervals, E)
        for expert, name in enumerate(history["expert_names"]):
            ax.plot(x, weights[:, expert], marker="o", markersize=3, label=expert_label(name))
        ax.set_xlabel("epoch" if entries[0].get("epoch") is not None else "training step")
        ax.set_title(marker_label(markers, row), fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean expert weight G (Eq. 9)")
    suptitle(figure, "Fig. 9a: how the router's expert weights change during training (mean over training examples)")
    return save_figure(figure, output_dir / "fig9a_expert_weights_history.png")


def expert_weights_figure(
    weights: np.ndarray, expert_names: Sequence[str], markers: Sequence[str], output_dir: Path
) -> str:
    """Fig. 9b (RQ4): the `(N, 2, E)` expert weights G (Eq. 9) of the markers, a dot per example."""
    figure = new_figure(max(6.0, 1.4 * len(expert_names) + 2.0), 4.2)
    expert_weight_dots(figure.subplots(), weights, expert_names, markers)
    suptitle(figure, f"Fig. 9b: expert weights of the subject and object tokens, {len(weights)} examples (dots)")
    return save_figure(figure, output_dir / "fig9b_expert_weights.png")


def expert_weights_by_relation_figure(
    weights: np.ndarray,
    relations: Sequence[str],
    shown: Sequence[str],
    expert_names: Sequence[str],
    markers: Sequence[str],
    output_dir: Path,
) -> str:
    """Fig. 10: the `(N, 2, E)` expert weights of the examples of each `shown` gold relation (`relations`: one per
    example), a panel per relation."""
    relation_array = np.array(relations, dtype=object)
    columns = min(len(shown), 2)
    rows = math.ceil(len(shown) / columns)
    figure = new_figure(max(5.5, 1.2 * len(expert_names) + 1.5) * columns, 3.8 * rows + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for ax, relation in zip(axes, shown, strict=False):
        selected = relation_array == relation
        expert_weight_dots(ax, weights[selected], expert_names, markers)
        ax.set_title(f"gold relation {relation} ({int(selected.sum())} examples)", fontsize=9)
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    suptitle(figure, "Fig. 10: expert weights of the subject and object tokens, per gold relation (dots: examples)")
    return save_figure(figure, output_dir / "fig10_expert_weights_by_relation.png")
