"""The pass of a trained HVFormer over a split, and the numbers of `analysis.json` computed from it (§4.3).

[`collect_statistics`] runs the model once and keeps running sums ([`SplitStatistics`]); the functions below turn
them into the arrays the figures draw and into the sections of `analysis.json`. The tracking maps (Eqs. 17-18), the
kurtosis (Eq. 19) and the KL divergence of heads (Eq. 20) come from `modeling_hvformer.tracking_maps`; this module
only averages them.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_hvformer.tracking_maps import attention_kurtosis, cross_modal_kurtosis, head_divergence

from .tokens import VisualTokenLayout, marker_rows

__all__ = [
    "SplitStatistics",
    "TsneEmbedding",
    "collect_statistics",
    "cross_attention_numbers",
    "expert_weight_numbers",
    "head_kurtosis",
    "kl_divergence_numbers",
    "kurtosis_numbers",
    "patch_patch_numbers",
    "patch_token_numbers",
    "relation_numbers",
    "rounded",
    "shown_relations",
    "tsne_embedding",
    "tsne_numbers",
]


class SplitStatistics:
    """Running sums over a split behind Figs. 5-10.

    Memory does not grow with the split, except for the expert weights at the markers (`(N, 2, E)` numbers) and the
    visual representations of the first `tsne_examples` examples (Fig. 8). Sums are float64 on the CPU.

    Args:
        vision_encoder: the model's `HVFormerVisionEncoder` (for the visual token layout it builds).
        tsne_examples: examples whose visual representations are kept for Fig. 8.
    """

    def __init__(self, vision_encoder: Any, tsne_examples: int) -> None:
        self.vision_encoder = vision_encoder
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
        """Adds a batch of model outputs (with tracking maps and hidden states)."""
        mask = outputs.visual_token_mask.bool()  # (B, n_V)
        positions = outputs.marker_positions  # (B, 2)
        batch_size, num_tokens = mask.shape
        if self.layout is None:
            self.layout = VisualTokenLayout.from_vision_encoder(self.vision_encoder, num_tokens)
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
        """The sum `name` divided by `count`; `None` when nothing was summed (the model has no such output)."""
        if name not in self.sums or not count:
            return None
        return (self.sums[name] / count).numpy()


def collect_statistics(
    model: torch.nn.Module,
    dataset: datasets.Dataset,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    batch_size: int,
    tsne_examples: int,
    progress_bar: bool,
) -> SplitStatistics:
    """Runs the model (eval mode, no grad, tracking maps and hidden states on) over `dataset`; the model is put back in
    its mode after. Only the columns `forward` accepts (without `labels`: no loss is needed) are batched."""
    accepted = set(inspect.signature(model.forward).parameters) - {"labels"}
    columns = [name for name in dataset.column_names if name in accepted]
    loader = torch.utils.data.DataLoader(
        dataset.select_columns(columns), batch_size=batch_size, shuffle=False, collate_fn=collator
    )
    device = next(model.parameters()).device
    statistics = SplitStatistics(model.vision_encoder, tsne_examples)
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


def rounded(values: Any, decimals: int = 6) -> Any:
    """Nested lists of floats rounded to `decimals` (JSON-friendly numbers behind the figures)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def _per_marker(values: np.ndarray, markers: Sequence[str], axis: int) -> dict[str, Any]:
    """`{marker: rounded values}` of an array with the two markers along `axis`."""
    return {marker: rounded(np.take(values, row, axis=axis)) for row, marker in enumerate(markers)}


def _quartiles(values: np.ndarray) -> dict[str, Any]:
    """Mean, median and quartiles over the first axis of `(N, E)` values."""
    q1, median, q3 = np.percentile(values, [25, 50, 75], axis=0)
    return {"mean": rounded(values.mean(axis=0)), "median": rounded(median), "q1": rounded(q1), "q3": rounded(q3)}


def cross_attention_numbers(per_head: np.ndarray, levels: list[int], markers: Sequence[str]) -> dict[str, Any]:
    """`fig5a_mean_cross_attention`: Ā_C^l = (1/M) Σ_m A_C^(l,m) from the `(levels, M, 2, n_V)` split means."""
    return {
        "levels": levels,
        "description": "mean over heads and examples of A_C^l at <s>/<o>, over all n_V visual tokens "
        "([CLS] and registers where the encoder has them, main image patches row-major, crop patches; absent "
        "crops count as 0)",
        **_per_marker(per_head.mean(axis=1), markers, axis=1),
        "per_head": _per_marker(per_head, markers, axis=2),
    }


def head_kurtosis(per_head: np.ndarray, layout: VisualTokenLayout) -> np.ndarray:
    """Eq. 19 per head of the split-averaged `(levels, M, 2, n_V)` distributions -> `(levels, M, 2)`.

    Over the tokens before the crops ([CLS], registers, main image), which every example has (absent crops would add
    zeros); kurtosis ignores the scale, so the block needs no renormalisation.
    """
    return attention_kurtosis(torch.from_numpy(per_head[..., : layout.main_tokens])).numpy()


def kurtosis_numbers(
    kurtosis: np.ndarray, per_sample: np.ndarray, levels: list[int], markers: Sequence[str]
) -> dict[str, Any]:
    """`fig5b_kurtosis`: [`head_kurtosis`] summed over heads (the paper's number), per head, and the per-example sums
    `(levels, 2)` averaged."""
    return {
        "levels": levels,
        "description": "excess kurtosis (Eq. 19) of the attention over the [CLS], register and main image tokens, "
        "summed over "
        "heads: of each head's split-averaged distribution (<s>/<o>), and the mean over examples of the "
        "per-example value",
        **_per_marker(kurtosis.sum(axis=1), markers, axis=1),
        "per_head": _per_marker(kurtosis, markers, axis=2),
        "mean_per_example": _per_marker(per_sample, markers, axis=1),
    }


def patch_patch_numbers(statistics: SplitStatistics) -> dict[str, Any]:
    """`fig6_patch_patch_maps`: mean H_V^l (Eq. 17) for l = 0..max level, of the whole sequence over the examples whose
    crops are all present and of the block before the crops ([CLS], registers, main image) over all examples."""
    main = statistics.mean("patch_patch_main", statistics.num_examples)  # (L + 1, main, main)
    complete = statistics.mean("patch_patch_complete", statistics.num_complete)  # (L + 1, n_V, n_V) or None
    return {
        "levels": list(range(main.shape[0])),
        "description": "mean H_V^l; 'all_crops_present': the whole sequence over the examples whose crops are all "
        "present (rows sum to 1); 'main_image': the [CLS], register and main image block over all examples",
        "all_crops_present": {"num_examples": statistics.num_complete, "mean": rounded(complete)},
        "main_image": {"num_examples": statistics.num_examples, "mean": rounded(main)},
    }


def patch_token_numbers(mean: np.ndarray, levels: list[int], markers: Sequence[str]) -> dict[str, Any]:
    """`fig7_patch_token_maps`: the `(levels, 2, n_V)` means over heads and examples of H_C^l (Eq. 18)."""
    return {
        "levels": levels,
        "description": "mean over heads and examples of H_C^l at <s>/<o>, over all n_V visual tokens",
        **_per_marker(mean, markers, axis=1),
    }


def kl_divergence_numbers(kl: np.ndarray, levels: list[int], markers: Sequence[str]) -> dict[str, Any]:
    """`fig7c_kl_divergence`: the `(levels, 2)` means over examples of the heads' KL divergence (Eq. 20)."""
    return {
        "levels": levels,
        "description": "mean over examples of D_KL(H_C^l || mean over heads) (Eq. 20) at <s>/<o>",
        **_per_marker(kl, markers, axis=1),
    }


@dataclass(frozen=True)
class TsneEmbedding:
    """Fig. 8: one t-SNE of the patch representations V^l of the first examples, all levels together.

    Args:
        coordinates: `(P, 2)` t-SNE coordinates, P points (present patches x levels, level-major).
        level: `(P,)` ViT level of each point.
        is_image: `(P,)` whether the point is a main-image patch (else an object crop's).
        example: `(P,)` index of the point's example.
        levels: the levels, 0..max.
        num_examples: examples embedded.
        perplexity: the t-SNE perplexity used.
        image_crop_distances: per level, the cosine distance between the mean main-image patch and the mean crop
            patch (the paper's "discrepancy" of 8b); `None` without crops.
    """

    coordinates: np.ndarray
    level: np.ndarray
    is_image: np.ndarray
    example: np.ndarray
    levels: list[int]
    num_examples: int
    perplexity: float
    image_crop_distances: list[float | None]


def tsne_embedding(statistics: SplitStatistics) -> TsneEmbedding | str:
    """The t-SNE of Fig. 8 ([CLS], register tokens and absent crops left out), or why there is none."""
    if not statistics.tsne_masks:
        return "tsne_examples=0"
    states = torch.cat(statistics.tsne_states, dim=1).numpy()  # (L + 1, k, n_V, d_V)
    mask = torch.cat(statistics.tsne_masks).numpy()  # (k, n_V)
    main, prefix = statistics.layout.main_tokens, statistics.layout.prefix_tokens
    example, token = np.nonzero(mask[:, prefix:])
    token = token + prefix
    levels = list(range(states.shape[0]))
    features = np.concatenate([states[level, example, token] for level in levels])
    if len(features) < 4:
        return f"only {len(features)} patch representations"
    try:
        from sklearn.manifold import TSNE
    except ImportError as error:
        raise ImportError("Fig. 8 needs matplotlib and scikit-learn: pip install 'hvformer[analysis]'.") from error
    perplexity = float(min(30.0, max(1.0, (len(features) - 1) / 3)))
    coordinates = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=0
    ).fit_transform(features.astype(np.float32))

    distances: list[float | None] = []
    for level in levels:
        image_mean = states[level, example[token < main], token[token < main]].mean(axis=0)
        crop_rows = states[level, example[token >= main], token[token >= main]]
        if not len(crop_rows):
            distances.append(None)
            continue
        crop_mean = crop_rows.mean(axis=0)
        cosine = image_mean @ crop_mean / max(np.linalg.norm(image_mean) * np.linalg.norm(crop_mean), 1e-12)
        distances.append(round(float(1.0 - cosine), 6))
    return TsneEmbedding(
        coordinates=coordinates,
        level=np.repeat(levels, len(token)),
        is_image=np.tile(token < main, len(levels)),
        example=np.tile(example, len(levels)),
        levels=levels,
        num_examples=int(mask.shape[0]),
        perplexity=perplexity,
        image_crop_distances=distances,
    )


def tsne_numbers(embedding: TsneEmbedding) -> dict[str, Any]:
    """`fig8_tsne`: the points of the t-SNE and the image-crop distances."""
    return {
        "levels": embedding.levels,
        "num_examples": embedding.num_examples,
        "perplexity": embedding.perplexity,
        "points": {
            "x": rounded(embedding.coordinates[:, 0], 4),
            "y": rounded(embedding.coordinates[:, 1], 4),
            "level": embedding.level.tolist(),
            "source": ["image" if flag else "crop" for flag in embedding.is_image],
            "example": embedding.example.tolist(),
        },
        "image_crop_cosine_distance": embedding.image_crop_distances,
    }


def expert_weight_numbers(
    weights: np.ndarray, expert_names: list[str], markers: Sequence[str], history: dict[str, Any] | None
) -> dict[str, Any]:
    """`fig9_expert_weights`: the `(N, 2, E)` expert weights G (Eq. 9) at the markers, their statistics and the
    training history of [`ExpertWeightsRecorder`]."""
    return {
        "expert_names": expert_names,
        "description": "expert weights G (Eq. 9) at <s>/<o>: per example of the split, and their statistics; "
        "'history': the training means recorded by ExpertWeightsRecorder (Fig. 9a)",
        **{
            marker: {**_quartiles(weights[:, row]), "per_example": rounded(weights[:, row])}
            for row, marker in enumerate(markers)
        },
        "history": history,
    }


def shown_relations(relations: Sequence[str], max_relations: int, none_label: str) -> list[str]:
    """The `max_relations` most frequent gold relations, with `none_label` always among them when present."""
    counts = Counter(relations)
    shown = [relation for relation, _ in counts.most_common(max_relations)]
    if none_label in counts and none_label not in shown:
        shown[-1] = none_label
    return shown


def relation_numbers(
    weights: np.ndarray,
    relations: Sequence[str],
    shown: list[str],
    expert_names: list[str],
    markers: Sequence[str],
) -> dict[str, Any]:
    """`fig10_expert_weights_by_relation`: the statistics of the `(N, 2, E)` expert weights per gold relation."""
    relation_array = np.array(relations, dtype=object)
    return {
        "expert_names": expert_names,
        "description": "expert weights at <s>/<o> grouped by gold relation; 'shown': the relations drawn",
        "shown": shown,
        "per_relation": {
            relation: {
                "count": count,
                **{marker: _quartiles(weights[relation_array == relation, row]) for row, marker in enumerate(markers)},
            }
            for relation, count in Counter(relations).most_common()
        },
    }
