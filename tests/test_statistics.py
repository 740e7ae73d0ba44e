"""Tests of `analysis.statistics`: the numbers of `analysis.json`, recomputed by hand from one forward pass of the
model over the whole split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from analysis_helpers import HISTORY, MAIN_TOKENS
from scipy.stats import kurtosis

from modeling_hvformer.tracking_maps import head_divergence

pytest_plugins = ["_analysis_fixtures"]


def test_cross_attention_and_tracking_maps_match_the_model(analysed, reference, data):
    results, _ = analysed
    outputs, rows = reference["outputs"], reference["rows"]
    subject, obj = outputs.marker_positions[:, 0], outputs.marker_positions[:, 1]
    for index in range(3):  # levels 0, 1, 2
        attention = outputs.cross_attentions[index]  # (B, M, n_T, n_V)
        for marker, positions in (("<s>", subject), ("<o>", obj)):
            by_hand = attention[rows, :, positions].mean(dim=(0, 1))  # heads and examples
            expected = np.asarray(results["fig5a_mean_cross_attention"][marker][index])
            np.testing.assert_allclose(expected, by_hand.numpy(), atol=2e-6)
            assert expected.sum() == pytest.approx(1.0, abs=1e-4)

            per_head = attention[rows, :, positions].mean(dim=0)[:, :MAIN_TOKENS].double().numpy()  # (M, main)
            summed = kurtosis(per_head, axis=-1, fisher=True, bias=True).sum()  # Eq. 19, summed over heads
            # The random model's attention is nearly uniform, so float32 rounding shows in the kurtosis.
            assert results["fig5b_kurtosis"][marker][index] == pytest.approx(summed, rel=1e-2)

            patch_token = outputs.patch_token_tracking_maps[index][rows, :, positions]  # (B, M, n_V)
            np.testing.assert_allclose(
                results["fig7_patch_token_maps"][marker][index], patch_token.mean(dim=(0, 1)).numpy(), atol=2e-6
            )
            kl = head_divergence(patch_token[:, :, None]).mean()
            assert results["fig7c_kl_divergence"][marker][index] == pytest.approx(float(kl), abs=2e-6)

    complete = outputs.visual_token_mask.bool().all(dim=1)
    fig6 = results["fig6_patch_patch_maps"]
    assert fig6["levels"] == [0, 1, 2]
    assert fig6["all_crops_present"]["num_examples"] == int(complete.sum()) > 0
    full = np.asarray(fig6["all_crops_present"]["mean"])  # (L + 1, n_V, n_V)
    np.testing.assert_allclose(full, outputs.patch_patch_tracking_maps[:, complete].mean(dim=1).numpy(), atol=2e-6)
    np.testing.assert_allclose(full.sum(axis=-1), 1.0, atol=1e-4)  # Eq. 17 rows sum to 1
    np.testing.assert_allclose(full[0], np.eye(25), atol=1e-6)  # H_V^0 = I
    main = np.asarray(fig6["main_image"]["mean"])
    assert main.shape == (3, MAIN_TOKENS, MAIN_TOKENS)
    np.testing.assert_allclose(
        main, outputs.patch_patch_tracking_maps[:, :, :MAIN_TOKENS, :MAIN_TOKENS].mean(1), atol=2e-6
    )


def test_expert_weights_and_relations(analysed, reference, data):
    results, _ = analysed
    outputs, rows = reference["outputs"], reference["rows"]
    fig9 = results["fig9_expert_weights"]
    assert fig9["expert_names"] == ["text", "level_0", "level_1", "level_2"]
    for column, marker in enumerate(("<s>", "<o>")):
        weights = np.asarray(fig9[marker]["per_example"])  # (N, E)
        assert weights.shape == (16, 4)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        by_hand = outputs.expert_weights[rows, outputs.marker_positions[:, column]]
        np.testing.assert_allclose(weights, by_hand.numpy(), atol=2e-6)
        np.testing.assert_allclose(fig9[marker]["mean"], weights.mean(axis=0), atol=2e-6)
    assert fig9["history"] == HISTORY

    fig10 = results["fig10_expert_weights_by_relation"]
    counts = Counter(data["val"]["relation"])
    assert {relation: entry["count"] for relation, entry in fig10["per_relation"].items()} == counts
    assert len(fig10["shown"]) == min(4, len(counts)) and "None" in fig10["shown"]
    relation = fig10["shown"][0]
    selected = [i for i, name in enumerate(data["val"]["relation"]) if name == relation]
    np.testing.assert_allclose(
        fig10["per_relation"][relation]["<o>"]["mean"],
        np.asarray(fig9["<o>"]["per_example"])[selected].mean(axis=0),
        atol=2e-6,
    )


def test_tsne_points(analysed):
    results, _ = analysed
    tsne = results["fig8_tsne"]
    assert tsne["levels"] == [0, 1, 2] and tsne["num_examples"] == 2
    points = tsne["points"]
    assert len(points["x"]) == len(points["y"]) == len(points["level"]) == len(points["source"])
    assert Counter(points["level"]) == {level: len(points["x"]) // 3 for level in (0, 1, 2)}
    assert set(points["source"]) <= {"image", "crop"} and points["source"].count("image") == 3 * 2 * 16
    assert all(np.isfinite(points["x"])) and all(np.isfinite(points["y"]))
