"""Tests of `analysis.drawing` and `analysis.figures`: what the expert-weight dots draw and the colour scale of maps
relative to an even spread."""

from __future__ import annotations

import numpy as np

from analysis import even_spread_norm, expert_weight_dots, new_figure, relative_to_even


def test_expert_weight_dots_show_every_example_and_the_mean():
    """Fig. 9b once drew box plots without outliers: an expert taking all the weight of a fifth of the examples and
    none of the others (mean 0.2) got a box and whiskers at 0, as if never used, while Fig. 10 showed it used."""
    weights = np.zeros((10, 2, 3))
    weights[:, :, 1] = 1.0  # "level_0" takes everything...
    weights[:2, :, 1], weights[:2, :, 2] = 0.0, 1.0  # ...except in two examples, which "level_1" takes
    figure = new_figure(6, 4)
    ax = figure.subplots()
    expert_weight_dots(ax, weights, ["text", "level_0", "level_1"], ("<s>", "<o>"))
    by_gid = {artist.get_gid(): artist for artist in ax.get_children() if artist.get_gid()}
    assert len(by_gid) == 2 * 2 * 3  # examples and mean, per marker and expert
    for row, marker in enumerate(("<s>", "<o>")):
        for expert, name in enumerate(["text", "level_0", "level_1"]):
            drawn = np.sort(by_gid[f"{marker} {name} examples"].get_offsets()[:, 1])
            np.testing.assert_array_equal(drawn, np.sort(weights[:, row, expert]))
            (mean_segment,) = by_gid[f"{marker} {name} mean"].get_segments()
            np.testing.assert_allclose(mean_segment[:, 1], weights[:, row, expert].mean())
    assert by_gid["<s> level_1 examples"].get_offsets()[:, 1].max() == 1.0  # the two examples at 1 are drawn
    assert [label.get_text() for label in ax.get_xticklabels()] == ["text only", "ViT level 0", "ViT level 1"]


def test_relative_to_even_and_its_colour_scale():
    grid = np.array([[0.1, 0.3], [0.2, 0.2]])  # mean 0.2
    np.testing.assert_allclose(relative_to_even(grid), [[0.5, 1.5], [1.0, 1.0]])
    np.testing.assert_array_equal(relative_to_even(np.zeros((2, 2))), np.zeros((2, 2)))
    norm = even_spread_norm(relative_to_even(grid))
    assert (norm.vmin, norm.vcenter, norm.vmax) == (0.5, 1.0, 1.5)
    nearly_even = even_spread_norm(np.array([0.99, 1.01]))  # noise is not magnified
    assert (nearly_even.vmin, nearly_even.vmax) == (0.75, 1.25)
