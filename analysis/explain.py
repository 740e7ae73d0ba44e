"""Explaining one HVFormer prediction: the relation, the expert weights and where the entity markers look in the image.

[`explain`] runs the model on one post and its image with the hierarchical tracking maps on and draws the
patch-token tracking maps H_C^l (paper Eq. 18, mean over heads) of the subject and object start markers (`<s>`, `<o>`
of `config.entity_markers`) over the image, one panel per level of `config.vision_levels`, beside the expert weights
G (Eq. 9) of both tokens.

CLI::

    python -m analysis.explain --model DIR --text "..." --subject "..." --object "..." --image PATH \\
        [--crops CROP ...] --output out.png
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .drawing import MARKER_ROLES, expert_label, new_figure, relative_to_even, save_figure
from .tokens import VisualTokenLayout, marker_names, marker_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["display_image", "explain", "figure_pixels", "load", "main", "map_norm", "overlay"]


OVERLAY_COLOURS = "inferno"
"""Perceptually uniform colour map of the tracking maps laid over the image."""
OVERLAY_ALPHA = 0.5
DISPLAY_SIZE = 224
"""Side, in pixels, of the image the maps are drawn over (the model's view of the image, enlarged smoothly)."""


def display_image(processor: Any, image: Any, size: int = DISPLAY_SIZE) -> np.ndarray:
    """The main image as the model sees it (resized / cropped by the processor), enlarged smoothly to `size` x `size`
    for drawing; `(size, size, 3)` uint8."""
    return _enlarged(processor.image_processor(image)["pixel_values"][0], size)


def _enlarged(pixel_values: torch.Tensor, size: int = DISPLAY_SIZE) -> np.ndarray:
    """uint8 `(3, H, W)` pixels enlarged smoothly to `size` x `size` for drawing; `(size, size, 3)` uint8."""
    from PIL import Image

    pixels = pixel_values.permute(1, 2, 0).numpy()  # (H, W, 3) uint8
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC))


def map_norm(relative_maps: Sequence[np.ndarray]) -> Any:
    """One colour scale, from 0, for tracking maps relative to an even spread over the image; at least up to 2 (twice
    the even share), so that nearly even maps look even."""
    from matplotlib.colors import Normalize

    return Normalize(vmin=0.0, vmax=max([2.0, *(float(np.max(grid)) for grid in relative_maps)]))


def overlay(pixels: np.ndarray, grid: np.ndarray, norm: Any, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """
    A patch-grid map laid over an image: upsampled bicubically to the image's size, coloured with
    `OVERLAY_COLOURS` on the scale `norm`, blended with weight `alpha` (the image keeps `1 - alpha`).

    Args:
        pixels: `(H, W, 3)` uint8 image.
        grid: `(g, g)` map over the image's patches (row-major, as the ViT's patches).
        norm: a matplotlib normalisation, e.g. from [`map_norm`].
        alpha: weight of the map's colours.

    Returns:
        `(H, W, 3)` uint8 image.
    """
    import matplotlib

    height, width = pixels.shape[:2]
    heat = torch.nn.functional.interpolate(
        torch.from_numpy(np.asarray(grid, dtype=np.float32))[None, None],
        size=(height, width),
        mode="bicubic",
        align_corners=False,
    )[0, 0].numpy()
    colours = matplotlib.colormaps[OVERLAY_COLOURS](norm(heat))[..., :3]
    blended = (1.0 - alpha) * pixels.astype(np.float64) / 255.0 + alpha * colours
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)


def _draw(
    result: dict[str, Any], pixels: np.ndarray, relative: dict[int, np.ndarray], markers: tuple[str, str]
) -> Figure:
    """The figure of [`explain`]: the image; the maps of the subject (top) and object (bottom) markers over it, a
    column per level, one colour bar; the expert weights on the right."""
    levels = list(relative)
    expert_names = result["expert_names"]
    entities = (result["subject"], result["object"])
    figure = new_figure(2.6 * (len(levels) + 1) + 4.4, 6.0)
    grid_spec = figure.add_gridspec(2, len(levels) + 2, width_ratios=[1.0] * (len(levels) + 1) + [1.6])
    names = [f"{role} “{entity}”" for role, entity in zip(MARKER_ROLES, entities, strict=True)]
    image_ax = figure.add_subplot(grid_spec[:, 0])
    image_ax.imshow(pixels)
    image_ax.set_title("the image (as the model sees it)", fontsize=9)
    image_ax.set_axis_off()
    map_axes = []
    norm = map_norm(list(relative.values()))
    for row in range(len(markers)):
        for column, level in enumerate(levels, start=1):
            ax = figure.add_subplot(grid_spec[row, column])
            ax.imshow(overlay(pixels, relative[level][row], norm))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"ViT level {level}", fontsize=10)
            if column == 1:
                ax.set_ylabel(names[row], fontsize=9)
            map_axes.append(ax)
    from matplotlib.cm import ScalarMappable

    figure.colorbar(
        ScalarMappable(norm=norm, cmap=OVERLAY_COLOURS),
        ax=map_axes,
        location="bottom",
        shrink=0.8,
        label="tracked weight on the image region (H_C^l, Eq. 18), relative to an even spread (1 = even)",
    )
    bars = figure.add_subplot(grid_spec[:, -1])
    if expert_names is None:
        bars.text(0.5, 0.5, "no router\n(fusion='concat')", ha="center", va="center")
        bars.set_axis_off()
    else:
        positions = np.arange(len(expert_names))
        for offset, marker, name in zip((-0.2, 0.2), markers, names, strict=True):
            values = [result["expert_weights"][marker][expert] for expert in expert_names]
            bars.bar(positions + offset, values, width=0.4, label=name)
        bars.set_xticks(positions, [expert_label(name) for name in expert_names], rotation=30, fontsize=8)
        bars.set_ylim(0.0, 1.0)
        bars.set_ylabel("expert weight G (Eq. 9)")
        bars.set_title("how much each expert is used", fontsize=9)
        bars.legend(fontsize=8)
    figure.suptitle(
        f"Predicted relation: {result['relation']} (probability {result['probability']:.2f})\n"
        f"between the {names[0]} and the {names[1]}",
        fontsize=11,
    )
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
    max_text_length: int | None = None,
    max_image_pixels: int | None = None,
) -> dict[str, Any]:
    """
    Predicts the relation of one post and explains it with the expert weights and the tracking maps (paper §3.5).

    The model runs in eval mode without gradients and with `output_tracking_maps=True`. For each level l of
    `config.vision_levels`, the patch-token tracking map H_C^l (Eq. 18) of `<s>` and of `<o>`, averaged over the
    heads, is taken over the main image's patches, divided by its mean there (1 = an even spread over the image) and
    laid semi-transparently ([`overlay`], upsampled bicubically, one colour scale for all maps) over the image as
    the model saw it (resized / cropped by the processor, enlarged by [`display_image`]); the expert weights G
    (Eq. 9) of both tokens are drawn as bars.

    Args:
        model ([`HVFormerForRelationExtraction`]): the model (any device; put back in its mode after).
        processor ([`HVFormerProcessor`]): its processor.
        text (`str` or `list[str]`): the post; a word list with `is_split_into_words=True`.
        entity_spans (*optional*): `[subject_span, object_span]` (character offsets, or word indices for a word list).
        entities (*optional*): `[subject, object]` strings found in the text, instead of `entity_spans`.
        image: the post's image (a path, the file's bytes, a PIL image or an array; see
            `HVFormerImageProcessor.load_image`): a path, bytes or `Image.open(path)` is decoded as the pipeline
            and the training cache decode it.
        object_crops (*optional*): the image's object crops (a list of images).
        is_split_into_words (`bool`, *optional*, defaults to `False`): whether `text` is a word list.
        output_path (`str` or `os.PathLike`, *optional*): where to save the figure as PNG.
        max_text_length (`int`, *optional*): refuse a longer text (characters), as the pipeline does.
        max_image_pixels (`int`, *optional*): refuse an image and crops holding more pixels together, counted before
            they are decoded, as the pipeline does.

    Returns:
        `dict`: `relation` (predicted label), `label_id`, `probability` (its softmax probability),
        `probabilities` (`{label: p}`), `subject` / `object` (as written in the text, case kept), `expert_names` and
        `expert_weights` (`{"<s>": {expert: weight}, "<o>": ...}`; both `None` without a router),
        `patch_token_maps` (`{level: {"<s>": grid, "<o>": grid, "cls": [<s>, <o>]}}`, the H_C^l head means over the
        main image's patch grid and on the [CLS] token, `"cls"` `None` for an encoder without one (SigLIP); with
        `visual_context="cls"` the maps of the level's [CLS], the same for both markers), `image` (the image drawn on,
        `(DISPLAY_SIZE, DISPLAY_SIZE, 3)` uint8), `overlays` (`{level: {"<s>": image, "<o>": image}}`, the maps
        relative to an even spread over `image`, on the figure's colour scale), `output_path` and `figure` (the
        matplotlib `Figure`).
    """
    if image is None:
        raise ValueError("HVFormer reads the post's image: pass `image`.")
    config = model.config
    markers = marker_names(config)
    inputs = processor(
        text=text,
        entity_spans=None if entity_spans is None else list(entity_spans),
        entities=None if entities is None else list(entities),
        is_split_into_words=is_split_into_words,
        max_text_length=max_text_length,
    )
    # Decoded once, as the pipeline and the training cache decode it (a large JPEG at a reduced scale), for the model
    # and for the picture drawn.
    pixels = processor.image_processor(
        image, object_crops=None if object_crops is None else list(object_crops), max_image_pixels=max_image_pixels
    )
    inputs.update(pixels)
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
    if outputs.marker_expert_weights is not None:
        weights = outputs.marker_expert_weights[0].float().cpu().tolist()  # G at <s>, <o>: (2, E)
        result["expert_names"] = list(config.expert_names)
        result["expert_weights"] = {
            marker: dict(zip(config.expert_names, row, strict=True))
            for marker, row in zip(markers, weights, strict=True)
        }
    layout = VisualTokenLayout.from_vision_encoder(model.vision_encoder, outputs.visual_token_mask.shape[1])
    grids: dict[int, np.ndarray] = {}
    for level, maps in zip(config.vision_levels, outputs.patch_token_tracking_maps, strict=True):
        rows = marker_rows(maps, positions)[0].mean(dim=0).float().cpu().numpy()  # H_C^l head mean, (2, n_V)
        grids[level] = layout.image_grid(rows)
        result["patch_token_maps"][level] = {
            **{marker: grids[level][row].tolist() for row, marker in enumerate(markers)},
            "cls": rows[:, 0].tolist() if layout.cls_tokens else None,
        }

    drawn = _enlarged(pixels["pixel_values"][0])
    relative = {level: relative_to_even(grid) for level, grid in grids.items()}
    norm = map_norm(list(relative.values()))
    result["image"] = drawn
    result["overlays"] = {
        level: {marker: overlay(drawn, grid[row], norm) for row, marker in enumerate(markers)}
        for level, grid in relative.items()
    }
    figure = _draw(result, drawn, relative, markers)
    result["output_path"] = None if output_path is None else str(output_path)
    if output_path is not None:
        save_figure(figure, output_path)
    result["figure"] = figure
    return result


def load(
    model: str | os.PathLike, device: str | None = None, quantization_config: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, Any]:
    """
    A trained model (in eval mode) and its processor, from a folder or a Hub id, with this project's classes.

    Args:
        model (`str` or `os.PathLike`): what `run_mre.py` saved (`save_pretrained` of the model and the processor).
        device (`str`, *optional*): torch device; defaults to cuda when available, else cpu.
        quantization_config (`dict`, *optional*): loads the model quantized, e.g. `{"quant_method": "hvformer_int8"}`
            (int8 on the CPU, `modeling_hvformer/quantization_hvformer.py`).
    """
    from modeling_hvformer import HVFormerForRelationExtraction
    from processing.processing_hvformer import HVFormerProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # The classes are local: without trust_remote_code=False, AutoTokenizer (inside) would ask whether to run the
    # folder's copy of the remote code, because it reads config.json with AutoConfig.
    processor = HVFormerProcessor.from_pretrained(model, trust_remote_code=False)
    # Checked against config.json as it loaded, the processor gives the pixel statistics with which the model reads
    # the collator's uint8 pixels, also to a model saved before its config recorded them.
    loaded = HVFormerForRelationExtraction.from_pretrained(
        model, quantization_config=quantization_config, **processor.pixel_statistics()
    )
    loaded = loaded.to(device).eval()
    return loaded, processor


def figure_pixels(figure: Figure) -> np.ndarray:
    """A matplotlib figure (Agg canvas, e.g. [`explain`]'s) rendered as an `(H, W, 3)` uint8 image."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`python -m analysis.explain ...` (see `--help`): prints the prediction as JSON, saves the figure."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.explain",
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
    for option, paths in (("--image", [args.image]), ("--crops", args.crops or [])):
        for image_path in paths:
            if not Path(image_path).is_file():
                parser.error(f"{option}: no such file: {image_path}")

    model, processor = load(args.model, args.device)
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
