"""Explaining one HVFormer prediction: the relation, the expert weights and where `<s>` and `<o>` look in the image.

[`explain`] runs the model on one post and its image with the hierarchical tracking maps on and draws the
patch-token tracking maps H_C^l (paper Eq. 18, mean over heads) of the subject token `<s>` and the object token `<o>`
over the image, one panel per level of `config.vision_levels`, beside the expert weights G (Eq. 9) of both tokens.

CLI::

    python -m processing.explain --model DIR --text "..." --subject "..." --object "..." --image PATH \\
        [--crops CROP ...] --output out.png
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .analysis import MARKERS, VisualTokenLayout, marker_rows, new_figure, save_figure

__all__ = ["explain", "main"]


def _overlay(pixels: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A patch-grid map upsampled (bilinear) to the image's `(H, W)`."""
    height, width = pixels.shape[:2]
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )
    return upsampled[0, 0].numpy()


def _draw(
    result: dict[str, Any], pixels: np.ndarray, grids: dict[int, np.ndarray], expert_names: list[str] | None
) -> Any:
    """The figure of [`explain`]: rows `<s>`/`<o>` x one column per level, and the expert weights on the right."""
    levels = list(grids) or [None]
    figure = new_figure(2.8 * len(levels) + 4.2, 5.6)
    grid_spec = figure.add_gridspec(2, len(levels) + 1, width_ratios=[1.0] * len(levels) + [1.4])
    entities = {"<s>": result["subject"], "<o>": result["object"]}
    for row, marker in enumerate(MARKERS):
        for column, level in enumerate(levels):
            ax = figure.add_subplot(grid_spec[row, column])
            ax.imshow(pixels)
            if level is None:
                ax.set_title("no cross-modal attention (visual_context='cls')", fontsize=8)
            else:
                heat = _overlay(pixels, grids[level][row])
                ax.imshow(heat, cmap="jet", alpha=0.45)  # colours span this map's min..max
                ax.set_title(f"H_C^{level}: {grids[level][row].min():.4f}..{grids[level][row].max():.4f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(f"{marker} {entities[marker]}", fontsize=9)
    bars = figure.add_subplot(grid_spec[:, -1])
    if expert_names is None:
        bars.text(0.5, 0.5, "no router\n(fusion='concat')", ha="center", va="center")
        bars.set_axis_off()
    else:
        positions = np.arange(len(expert_names))
        for offset, marker in zip((-0.2, 0.2), MARKERS, strict=True):
            values = [result["expert_weights"][marker][name] for name in expert_names]
            bars.bar(positions + offset, values, width=0.4, label=marker)
        bars.set_xticks(positions)
        bars.set_xticklabels(expert_names, rotation=30, fontsize=8)
        bars.set_ylim(0.0, 1.0)
        bars.set_title("expert weights G", fontsize=9)
        bars.legend(fontsize=8)
    figure.suptitle(f"{result['relation']}  (p = {result['probability']:.3f})")
    return figure


def explain(
    model: torch.nn.Module,
    processor: Any,
    text: str | list[str],
    entity_spans: Sequence | None = None,
    entities: Sequence[str] | None = None,
    image: Any = None,
    object_crops: Sequence | None = None,
    is_split_into_words: bool = False,
    output_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """
    Predicts the relation of one post and explains it with the expert weights and the tracking maps (paper §3.5).

    The model runs in eval mode without gradients and with `output_tracking_maps=True`. For each level l of
    `config.vision_levels`, the patch-token tracking map H_C^l (Eq. 18) of `<s>` and of `<o>`, averaged over the
    heads, is taken over the main image's patches and drawn (upsampled bilinearly) over the image as the model saw it
    (resized / cropped by the processor); the expert weights G (Eq. 9) of both tokens are drawn as bars.

    Args:
        model ([`HVFormerForRelationExtraction`]): the model (any device; put back in its mode after).
        processor ([`HVFormerProcessor`]): its processor.
        text (`str` or `list[str]`): the post; a word list with `is_split_into_words=True`.
        entity_spans (*optional*): `[subject_span, object_span]` (character offsets, or word indices for a word list).
        entities (*optional*): `[subject, object]` strings found in the text, instead of `entity_spans`.
        image: the post's image (PIL image, array or path; see `HVFormerProcessor.load_image`).
        object_crops (*optional*): the image's object crops (a list of images).
        is_split_into_words (`bool`, *optional*, defaults to `False`): whether `text` is a word list.
        output_path (`str` or `os.PathLike`, *optional*): where to save the figure as PNG.

    Returns:
        `dict`: `relation` (predicted label), `label_id`, `probability` (its softmax probability),
        `probabilities` (`{label: p}`), `subject` / `object` (as written in the text, case kept), `expert_names` and
        `expert_weights` (`{"<s>": {expert: weight}, "<o>": ...}`; both `None` without a router),
        `patch_token_maps` (`{level: {"<s>": grid, "<o>": grid, "cls": [<s>, <o>]}}`, the H_C^l head means over the
        main image's patch grid and on [CLS]; `{}` with `visual_context="cls"`), `output_path` and `figure` (the
        matplotlib `Figure`).
    """
    if image is None:
        raise ValueError("HVFormer reads the post's image: pass `image`.")
    config = model.config
    image = processor.load_image(image)
    inputs = processor(
        text=text,
        entity_spans=None if entity_spans is None else list(entity_spans),
        entities=None if entities is None else list(entities),
        images=image,
        object_crops=None if object_crops is None else list(object_crops),
        is_split_into_words=is_split_into_words,
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(**{name: value.to(device) for name, value in inputs.items()}, output_tracking_maps=True)
    finally:
        model.train(was_training)

    probabilities = outputs.logits[0].float().softmax(dim=-1).cpu()
    label_id = int(probabilities.argmax())
    subject, obj = processor.entity_texts(
        text, entity_spans=entity_spans, entities=entities, is_split_into_words=is_split_into_words
    )[0]
    result: dict[str, Any] = {
        "relation": config.id2label[label_id],
        "label_id": label_id,
        "probability": float(probabilities[label_id]),
        "probabilities": {config.id2label[i]: float(p) for i, p in enumerate(probabilities.tolist())},
        "subject": subject,
        "object": obj,
        "expert_names": None,
        "expert_weights": None,
        "patch_token_maps": {},
    }
    positions = outputs.marker_positions
    if outputs.expert_weights is not None:
        weights = marker_rows(outputs.expert_weights, positions)[0].float().cpu().tolist()  # (2, E)
        result["expert_names"] = list(config.expert_names)
        result["expert_weights"] = {
            marker: dict(zip(config.expert_names, row, strict=True))
            for marker, row in zip(MARKERS, weights, strict=True)
        }
    layout = VisualTokenLayout.from_config(config, outputs.visual_token_mask.shape[1])
    grids: dict[int, np.ndarray] = {}
    for level, maps in zip(config.vision_levels, outputs.patch_token_tracking_maps or (), strict=False):
        rows = marker_rows(maps, positions)[0].mean(dim=0).float().cpu().numpy()  # H_C^l head mean, (2, n_V)
        grids[level] = layout.image_grid(rows)
        result["patch_token_maps"][level] = {
            **{marker: grids[level][row].tolist() for row, marker in enumerate(MARKERS)},
            "cls": rows[:, 0].tolist(),
        }

    pixels = processor.resize_images(image)["pixel_values"][0].permute(1, 2, 0).numpy()  # (H, W, 3) uint8
    figure = _draw(result, pixels, grids, result["expert_names"])
    result["output_path"] = None if output_path is None else str(output_path)
    if output_path is not None:
        save_figure(figure, output_path)
    result["figure"] = figure
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`python -m processing.explain ...` (see `--help`): prints the prediction as JSON, saves the figure."""
    parser = argparse.ArgumentParser(
        prog="python -m processing.explain",
        description="Explain one HVFormer prediction: expert weights and tracking maps of <s>/<o> over the image.",
    )
    parser.add_argument("--model", required=True, help="folder of a trained model and its processor")
    parser.add_argument("--text", required=True, help="the post")
    parser.add_argument("--subject", required=True, help="the subject, as it occurs (once) in the text")
    parser.add_argument("--object", required=True, help="the object, as it occurs (once) in the text")
    parser.add_argument("--image", required=True, help="the post's image")
    parser.add_argument("--crops", nargs="*", default=None, help="object crops of the image")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)

    from modeling_hvformer import HVFormerForRelationExtraction

    from .processing_hvformer import HVFormerProcessor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = HVFormerForRelationExtraction.from_pretrained(args.model).to(device)
    # The classes are local: without trust_remote_code=False, AutoTokenizer (inside) would ask whether to run the
    # folder's copy of the remote code, because it reads config.json with AutoConfig.
    processor = HVFormerProcessor.from_pretrained(args.model, trust_remote_code=False)
    result = explain(
        model,
        processor,
        args.text,
        entities=[args.subject, args.object],
        image=args.image,
        object_crops=args.crops,
        output_path=args.output,
    )
    summary = {key: result[key] for key in ("relation", "probability", "subject", "object", "expert_weights")}
    print(json.dumps({**summary, "output_path": result["output_path"]}, indent=1))
    return result


if __name__ == "__main__":
    main()
