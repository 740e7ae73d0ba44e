"""Tests of `analysis.report`: `analyse` writes the figures and `analysis.json` of a split, and says which figures
an ablation leaves out and why."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from analysis_helpers import MAIN_TOKENS, NUM_CROPS, assert_png_drawn
from tiny_models import PREFIX_TOKENS, tiny_model_for, tiny_vision_config

from analysis import VisualTokenLayout, analyse
from analysis.report import _patch_patch_results
from analysis.statistics import SplitStatistics
from mre_data.collator import HVFormerDataCollator

pytest_plugins = ["_analysis_fixtures"]

ALL_FIGURES = {"fig5a", "fig5b", "fig6", "fig7", "fig7c", "fig8", "fig9a", "fig9b", "fig10"}
JSON_KEYS = {
    "fig5a_mean_cross_attention",
    "fig5b_kurtosis",
    "fig6_patch_patch_maps",
    "fig7_patch_token_maps",
    "fig7c_kl_divergence",
    "fig8_tsne",
    "fig9_expert_weights",
    "fig10_expert_weights_by_relation",
}


def test_analysis_writes_figures_and_json(analysed):
    results, output_dir = analysed
    assert set(results["figures"]) == ALL_FIGURES
    assert results["skipped"] == {}
    for name in results["figures"].values():
        assert_png_drawn(output_dir / name)
    on_disk = json.loads((output_dir / "analysis.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert JSON_KEYS <= set(on_disk)
    assert on_disk["setup"]["num_examples"] == 16
    assert on_disk["setup"]["token_layout"] == {
        "num_visual_tokens": 25,
        "cls_tokens": 1,
        "register_tokens": 0,
        "main_image_tokens": MAIN_TOKENS,
        "image_grid": 4,
        "num_crop_blocks": NUM_CROPS,
        "tokens_per_crop": 4,
    }


@pytest.mark.parametrize(
    ("overrides", "skipped"),
    [
        ({"fusion": "concat"}, {"fig9_expert_weights", "fig10_expert_weights_by_relation"}),
        ({"visual_context": "cls"}, {"fig5a_mean_cross_attention", "fig5b_kurtosis"}),
    ],
)
def test_ablations_skip_figures(overrides, skipped, processor, data, tmp_path):
    """ "w/o MoME" has no router (Figs. 9, 10), "w/o TVA" no cross-modal attention (Fig. 5); its Fig. 7 tracks the
    level's [CLS], one head, so the heads cannot diverge (Eq. 20 gives 0)."""
    model = tiny_model_for(processor, **overrides)
    results = analyse(
        model,
        data["val"],
        HVFormerDataCollator(processor),
        tmp_path,
        max_examples=4,
        tsne_examples=0,
        progress_bar=False,
    )
    assert results["setup"]["num_examples"] == 4
    assert set(results["skipped"]) >= skipped | {"fig8_tsne"}
    assert not skipped & set(results)
    assert JSON_KEYS - skipped - {"fig8_tsne"} <= set(results)
    if overrides.get("visual_context") == "cls":
        assert results["fig7c_kl_divergence"]["<s>"] == results["fig7c_kl_divergence"]["<o>"] == [0.0] * 3
    written = {path.name for path in tmp_path.glob("*.png")}
    assert written == set(results["figures"].values())
    assert "fig6_patch_patch_maps.png" in written
    for name in written:
        assert_png_drawn(tmp_path / name)


def test_fig6_with_level_0_only_says_why_nothing_is_drawn(tmp_path):
    """H_V^0 is the identity (Eq. 17): a model reading only level 0 gets the numbers but no picture of them."""
    statistics = SplitStatistics(vision_encoder=None, tsne_examples=0)
    statistics.layout = VisualTokenLayout(num_tokens=MAIN_TOKENS, grid=4, crop_tokens=4)
    statistics.num_examples = 2
    statistics.sums["patch_patch_main"] = 2 * torch.eye(MAIN_TOKENS, dtype=torch.float64)[None]  # two examples
    results = {"figures": {}, "skipped": {}}
    _patch_patch_results(statistics, tmp_path, results)
    assert results["fig6_patch_patch_maps"]["levels"] == [0]
    np.testing.assert_array_equal(results["fig6_patch_patch_maps"]["main_image"]["mean"], [np.eye(MAIN_TOKENS)])
    assert results["skipped"] == {
        "fig6_patch_patch_maps": "only ViT level 0 is read, and H_V^0 is the identity by definition (Eq. 17): "
        "nothing to draw"
    }
    assert results["figures"] == {} and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("vision", "blocks"),
    [("siglip", ["image", "crop 1", "crop 2"]), ("dinov2_with_registers", ["[CLS]", "registers", "image", "crop 1"])],
)
def test_analysis_of_encoders_without_cls_or_with_registers(vision, blocks, processor, data, tmp_path):
    """SigLIP's sequence starts with the image's patches, DINOv2 with registers' with [CLS] and 2 register tokens:
    the layout, Fig. 6's blocks and the t-SNE (patches only) follow."""
    model = tiny_model_for(processor, vision_config=tiny_vision_config(vision, hidden_size=64))
    results = analyse(
        model, data["val"], HVFormerDataCollator(processor), tmp_path, max_examples=4, tsne_examples=1,
        progress_bar=False,
    )  # fmt: skip
    prefix, cls_tokens = PREFIX_TOKENS[vision], int(vision != "siglip")
    assert results["setup"]["token_layout"] == {
        "num_visual_tokens": prefix + 16 + 8,
        "cls_tokens": cls_tokens,
        "register_tokens": prefix - cls_tokens,
        "main_image_tokens": prefix + 16,
        "image_grid": 4,
        "num_crop_blocks": NUM_CROPS,
        "tokens_per_crop": 4,
    }
    layout = VisualTokenLayout(prefix + 24, 4, 4, cls_tokens=cls_tokens, register_tokens=prefix - cls_tokens)
    assert [name for name, _ in layout.blocks()][: len(blocks)] == blocks
    assert [start for _, start in layout.blocks()][-3:] == [prefix, prefix + 16, prefix + 20]
    values = np.arange(prefix + 24, dtype=float)
    np.testing.assert_array_equal(layout.image_grid(values), np.arange(prefix, prefix + 16).reshape(4, 4))
    assert len(results["fig6_patch_patch_maps"]["main_image"]["mean"][0]) == prefix + 16
    sources = results["fig8_tsne"]["points"]["source"]  # 1 example x 3 levels: image patches only, no prefix
    assert sources.count("image") == 16 * 3
    for name in results["figures"].values():
        assert_png_drawn(tmp_path / name)
