"""The analysis of a split (paper §4.3, Figs. 5-10): one pass of the model, the numbers of `analysis.json` and the
figures drawn from them."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers

from . import figures
from .callbacks import HISTORY_FILE
from .statistics import (
    SplitStatistics,
    collect_statistics,
    cross_attention_numbers,
    expert_weight_numbers,
    head_kurtosis,
    kl_divergence_numbers,
    kurtosis_numbers,
    patch_patch_numbers,
    patch_token_numbers,
    relation_numbers,
    shown_relations,
    tsne_embedding,
    tsne_numbers,
)
from .tokens import marker_names

__all__ = ["analyse", "run_analysis"]

logger = logging.getLogger(__name__)


def _cross_attention_results(
    statistics: SplitStatistics, levels: list[int], markers: tuple[str, str], output_dir: Path, results: dict
) -> None:
    """Fig. 5a (mean cross-modal attention Ā_C^l of the markers) and Fig. 5b (its kurtosis, Eq. 19)."""
    per_head = statistics.mean("cross_attention", statistics.num_examples)  # (levels, M, 2, n_V)
    if per_head is None:
        reason = "visual_context='cls' (w/o TVA ablation): the experts have no cross-modal attention"
        results["skipped"].update(fig5a_mean_cross_attention=reason, fig5b_kurtosis=reason)
        return
    layout = statistics.layout
    results["fig5a_mean_cross_attention"] = cross_attention_numbers(per_head, levels, markers)
    maps = figures.MarkerMaps(per_head.mean(axis=1), levels, layout, markers, statistics.num_examples)
    results["figures"]["fig5a"] = figures.mean_cross_attention_figure(maps, output_dir)
    kurtosis = head_kurtosis(per_head, layout)  # (levels, M, 2)
    per_sample = statistics.mean("sample_kurtosis", statistics.num_examples)  # (levels, 2)
    results["fig5b_kurtosis"] = kurtosis_numbers(kurtosis, per_sample, levels, markers)
    summed = kurtosis.sum(axis=1)  # the paper's number: summed over heads, (levels, 2)
    results["figures"]["fig5b"] = figures.kurtosis_figure(summed, per_sample, levels, markers, output_dir)


def _patch_patch_results(statistics: SplitStatistics, output_dir: Path, results: dict[str, Any]) -> None:
    """Fig. 6: mean patch-patch tracking maps H_V^l (Eq. 17) for l = 0..max level (the JSON), 1..max level (the figure:
    H_V^0 is the identity)."""
    results["fig6_patch_patch_maps"] = patch_patch_numbers(statistics)
    main = statistics.mean("patch_patch_main", statistics.num_examples)  # (L + 1, main, main)
    complete = statistics.mean("patch_patch_complete", statistics.num_complete)  # (L + 1, n_V, n_V) or None
    if main.shape[0] < 2:
        results["skipped"]["fig6_patch_patch_maps"] = (
            "only ViT level 0 is read, and H_V^0 is the identity by definition (Eq. 17): nothing to draw"
        )
        return
    blocks = statistics.layout.blocks()
    if complete is None:  # the blocks before the crops only
        blocks = blocks[: len(blocks) - statistics.layout.num_crops]
        names = " and ".join(name for name, _ in blocks)
        scope = f"{statistics.num_examples} examples, {names} only (none has all its crops)"
    else:
        scope = f"the {statistics.num_complete} examples with all their crops"
    names, starts = zip(*blocks, strict=True)
    matrices = main if complete is None else complete
    results["figures"]["fig6"] = figures.patch_patch_figure(matrices, names, starts, scope, output_dir)


def _patch_token_results(
    statistics: SplitStatistics, levels: list[int], markers: tuple[str, str], output_dir: Path, results: dict
) -> None:
    """Fig. 7a/b: mean patch-token tracking maps H_C^l (Eq. 18) of the markers; Fig. 7c: KL of heads (Eq. 20). The
    "w/o TVA" ablation's maps are those of the level's [CLS], one head (its KL divergence is 0)."""
    mean = statistics.mean("patch_token", statistics.num_examples)  # (levels, 2, n_V)
    results["fig7_patch_token_maps"] = patch_token_numbers(mean, levels, markers)
    maps = figures.MarkerMaps(mean, levels, statistics.layout, markers, statistics.num_examples)
    results["figures"]["fig7"] = figures.patch_token_figure(maps, output_dir)
    kl = statistics.mean("kl_divergence", statistics.num_examples)  # (levels, 2)
    results["fig7c_kl_divergence"] = kl_divergence_numbers(kl, levels, markers)
    results["figures"]["fig7c"] = figures.kl_divergence_figure(kl, levels, markers, output_dir)


def _tsne_results(statistics: SplitStatistics, output_dir: Path, results: dict[str, Any]) -> None:
    """Fig. 8: the t-SNE of the patch representations V^l of the first examples."""
    embedding = tsne_embedding(statistics)
    if isinstance(embedding, str):
        results["skipped"]["fig8_tsne"] = embedding
        return
    results["fig8_tsne"] = tsne_numbers(embedding)
    results["figures"]["fig8"] = figures.tsne_figure(embedding, output_dir)


def _read_history(history_path: Path | None, expert_names: list[str]) -> dict[str, Any] | None:
    """The training history of [`ExpertWeightsRecorder.save`] at `history_path`, if the file exists."""
    if history_path is None or not history_path.is_file():
        return None
    history = json.loads(history_path.read_text())
    if history.get("expert_names") != expert_names:
        raise ValueError(
            f"{history_path} records the experts {history.get('expert_names')}, the model has {expert_names}."
        )
    return history


def _expert_weight_results(
    statistics: SplitStatistics,
    relations: list[str] | None,
    config: Any,
    history_path: Path | None,
    max_relations: int,
    output_dir: Path,
    results: dict[str, Any],
) -> None:
    """Fig. 9 (expert weights G of the markers: during training and over the split) and Fig. 10 (per relation)."""
    if not statistics.expert_weights:
        reason = "fusion='concat' (w/o MoME ablation): no router, so no expert weights"
        results["skipped"].update(fig9_expert_weights=reason, fig10_expert_weights_by_relation=reason)
        return
    markers, expert_names = marker_names(config), list(config.expert_names)
    weights = torch.cat(statistics.expert_weights).numpy()  # (N, 2, E)
    history = _read_history(history_path, expert_names)
    results["fig9_expert_weights"] = expert_weight_numbers(weights, expert_names, markers, history)
    if history is not None and history["history"]:
        results["figures"]["fig9a"] = figures.expert_weights_history_figure(history, markers, output_dir)
    else:
        where = "no history_path given" if history_path is None else f"{history_path} is missing or empty"
        results["skipped"]["fig9a_expert_weights_history"] = f"no training history: {where}"
    results["figures"]["fig9b"] = figures.expert_weights_figure(weights, expert_names, markers, output_dir)

    if relations is None:
        results["skipped"]["fig10_expert_weights_by_relation"] = "the dataset has no `relation` or `labels` column"
        return
    shown = shown_relations(relations, max_relations, config.none_label)
    results["fig10_expert_weights_by_relation"] = relation_numbers(weights, relations, shown, expert_names, markers)
    results["figures"]["fig10"] = figures.expert_weights_by_relation_figure(
        weights, relations, shown, expert_names, markers, output_dir
    )


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
    running sums are kept (see below). Writes PNGs (dpi 120) and `analysis.json` in `output_dir`; the numbers
    are keyed by the subject and object start markers of `config.entity_markers` (`<s>`, `<o>`):

    - `fig5a_mean_cross_attention` (RQ2): Ā_C^l = (1/M) Σ_m A_C^(l,m) of the markers averaged over the split, for
      each level of `config.vision_levels`, over all n_V visual tokens (absent crops count as 0); drawn over the
      main image's patch grid, with the shares of [CLS], registers, image and crops under each map. `per_head`: the
      head-resolved means (Appendix A.3).
    - `fig5b_kurtosis`: the excess kurtosis (Eq. 19) of each head's split-averaged distribution, summed over heads
      (the paper's number); `mean_per_example`: the same sum per example, averaged. Both over the tokens before the
      crops ([CLS], registers, main image), which every example has (the zeros of absent crops would distort the
      averaged distribution).
    - `fig6_patch_patch_maps` (RQ3): mean H_V^l (Eq. 17) for l = 0..max level; of the whole sequence over the
      examples whose crops are all present (so the matrices agree and rows sum to 1), and of the block before the
      crops over all examples. The figure draws the former (the latter when no example has all its crops) for
      l >= 1 only: H_V^0 is the identity (with a single level 0 there is no figure, and `skipped` says why).
    - `fig7_patch_token_maps`: mean over heads and examples of H_C^l (Eq. 18) at the markers;
      `fig7c_kl_divergence`: mean over examples of the heads' KL divergence from their mean (Eq. 20).
    - `fig8_tsne`: t-SNE of V^l of the first `tsne_examples` examples (all levels in one embedding), coloured by
      level (8a) and main image vs crops (8b).
    - `fig9_expert_weights` (RQ4): expert weights G at the markers of every example (9b: a dot per example and the
      mean, see [`expert_weight_dots`]) and the training history from
      `history_path` (9a, when the file exists); `fig10_expert_weights_by_relation`: the same grouped by gold
      relation, the `max_relations` most frequent drawn (`None` always among them when present).

    Figures that do not apply are left out and `analysis.json["skipped"]` says why: `visual_context="cls"` has no
    cross-modal attention (Fig. 5; its Fig. 7 tracks the level's [CLS]), `fusion="concat"` no router (Figs. 9, 10).

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
    markers = marker_names(config)
    statistics = collect_statistics(model, dataset, collator, batch_size, tsne_examples, progress_bar)
    results: dict[str, Any] = {
        "setup": {
            "num_examples": statistics.num_examples,
            "num_examples_all_crops_present": statistics.num_complete,
            "vision_levels": levels,
            "expert_names": list(config.expert_names) if config.fusion == "mome" else None,
            "visual_context": config.visual_context,
            "fusion": config.fusion,
            "markers": list(markers),
            "token_layout": statistics.layout.to_dict(),
        },
        "figures": {},
        "skipped": {},
    }
    _cross_attention_results(statistics, levels, markers, output_dir, results)
    _patch_patch_results(statistics, output_dir, results)
    _patch_token_results(statistics, levels, markers, output_dir, results)
    _tsne_results(statistics, output_dir, results)
    history_path = Path(history_path) if history_path is not None else None
    relations = _gold_relations(dataset, config)
    _expert_weight_results(statistics, relations, config, history_path, max_relations, output_dir, results)
    (output_dir / "analysis.json").write_text(json.dumps(results) + "\n")
    logger.info("Analysis of %d examples written to %s", statistics.num_examples, output_dir)
    return results


def run_analysis(
    trainer: transformers.Trainer,
    dataset: datasets.Dataset,
    output_dir: Path,
    max_examples: int | None = None,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """
    [`analyse`] after training with a `Trainer` (`run_mre.py --do_analysis`): the trainer's model, data collator
    (or `collator`: the analysis reads every row of a batch, so not one that adds padding rows) and
    `per_device_eval_batch_size`, the training history `output_dir.parent / HISTORY_FILE`.

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
        trainer.data_collator if collator is None else collator,
        output_dir,
        batch_size=trainer.args.per_device_eval_batch_size,
        max_examples=max_examples,
        history_path=output_dir.parent / HISTORY_FILE,
        progress_bar=not trainer.args.disable_tqdm,
    )
