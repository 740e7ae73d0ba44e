"""Tests of `analysis.explain`: one post explained (prediction, expert weights, tracking maps over the image), by
function and by command line."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
from analysis_helpers import RELATIONS, assert_png_drawn
from PIL import Image
from tiny_models import tiny_model_for, tiny_vision_config

from analysis import relative_to_even
from analysis.explain import DISPLAY_SIZE, OVERLAY_COLOURS, explain, main, map_norm, overlay

pytest_plugins = ["_analysis_fixtures"]


def test_explain(model, processor, sample_dir, tmp_path):
    image = Image.open(next((sample_dir / "img_org" / "val").iterdir())).convert("RGB")
    text = "Photo : Alden with Corra Vane"
    output = tmp_path / "explain.png"
    result = explain(
        model, processor, text, entities=["Alden", "Corra Vane"], image=image, object_crops=[image], output_path=output
    )
    inputs = processor(text=text, entities=["Alden", "Corra Vane"], images=image, object_crops=[image])
    with torch.no_grad():
        probabilities = model(**inputs).logits.softmax(dim=-1)[0]
    assert 0.0 <= result["probability"] <= 1.0
    assert result["probability"] == pytest.approx(float(probabilities.max()), abs=1e-6)
    assert result["relation"] == RELATIONS[int(probabilities.argmax())] == RELATIONS[result["label_id"]]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert (result["subject"], result["object"]) == ("Alden", "Corra Vane")  # as the user wrote them
    for marker in ("<s>", "<o>"):
        assert sum(result["expert_weights"][marker].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(result["patch_token_maps"]) == {0, 1, 2}
    assert np.asarray(result["patch_token_maps"][2]["<o>"]).shape == (4, 4)
    assert result["output_path"] == str(output)
    assert_png_drawn(output)
    assert result["image"].shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3)
    relative = {  # (2, 4, 4) per level: <s>, <o>
        level: relative_to_even(np.asarray([maps["<s>"], maps["<o>"]]))
        for level, maps in result["patch_token_maps"].items()
    }
    norm = map_norm(list(relative.values()))  # one colour scale for the six maps
    assert set(result["overlays"]) == {0, 1, 2}
    for level, overlays in result["overlays"].items():
        for row, marker in enumerate(("<s>", "<o>")):
            np.testing.assert_array_equal(overlays[marker], overlay(result["image"], relative[level][row], norm))

    words = ["Photo", ":", "Alden", "with", "Corra", "Vane"]
    by_span = explain(
        model,
        processor,
        words,
        entity_spans=[(2, 3), (4, 6)],
        image=image,
        object_crops=[image],
        is_split_into_words=True,
    )
    assert by_span["probabilities"] == pytest.approx(result["probabilities"], abs=1e-6)
    assert by_span["output_path"] is None


def test_explain_decodes_the_image_as_the_pipeline_and_the_training_cache_do(model, processor, tmp_path):
    """The pipeline and the training cache decode a large JPEG at a reduced scale; the explanation (and the demo,
    which draws it) decoded it at full size: for a 24-megapixel JPEG +101 MB and 2.55 s against the handler's +3 MB
    and 0.07 s, and other probabilities. It now decodes the image once, as they do, for the model and the drawing."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    path = tmp_path / "large.jpg"
    noise.resize((800, 600), Image.Resampling.BICUBIC).save(path, quality=90)
    text, entities = "Photo : Alden with Corra Vane", ["Alden", "Corra Vane"]
    result = explain(model, processor, text, entities=entities, image=str(path))
    served = processor(text=text, entities=entities, images=str(path))
    with torch.no_grad():
        probabilities = model(**served).logits.softmax(dim=-1)[0]
    assert [result["probabilities"][label] for label in RELATIONS] == pytest.approx(probabilities.tolist(), abs=1e-6)
    pixels = processor.image_processor(str(path))["pixel_values"][0].permute(1, 2, 0).numpy()
    drawn = np.asarray(Image.fromarray(pixels).resize((DISPLAY_SIZE,) * 2, Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(result["image"], drawn)


def test_explain_without_router_or_attention_tracks_the_levels_cls(processor, sample_dir, tmp_path):
    """Without a router there are no expert weights; without TVA (Eq. 4) every token reads the level's [CLS], so
    both markers' maps are the [CLS] row of H_V^l (Eq. 17) over the image's patches."""
    model = tiny_model_for(processor, fusion="concat", visual_context="cls")
    image = Image.open(next((sample_dir / "img_org" / "val").iterdir()))
    result = explain(
        model,
        processor,
        "Alden and Brisk",
        entities=["Alden", "Brisk"],
        image=image,
        output_path=tmp_path / "explain.png",
    )
    assert result["expert_weights"] is None
    inputs = processor(text="Alden and Brisk", entities=["Alden", "Brisk"], images=image)
    with torch.no_grad():
        patch_patch = model(**inputs, output_tracking_maps=True).patch_patch_tracking_maps  # (L + 1, 1, n_V, n_V)
    assert set(result["patch_token_maps"]) == {0, 1, 2}
    for level, maps in result["patch_token_maps"].items():
        cls_row = patch_patch[level, 0, 0]  # the ViT's [CLS] token, first of the sequence
        np.testing.assert_allclose(maps["<s>"], cls_row[1:17].reshape(4, 4).numpy(), atol=1e-6)
        np.testing.assert_allclose(maps["<o>"], maps["<s>"])
        assert maps["cls"] == pytest.approx([float(cls_row[0])] * 2, abs=1e-6)
    assert_png_drawn(tmp_path / "explain.png")


def test_explain_with_an_encoder_without_cls(processor, sample_dir):
    """SigLIP's visual sequence starts with the image's patches: the maps are its first 16 tokens, and there is no
    [CLS] share."""
    model = tiny_model_for(processor, vision_config=tiny_vision_config("siglip", hidden_size=64))
    image = Image.open(next((sample_dir / "img_org" / "val").iterdir())).convert("RGB")
    result = explain(model, processor, "Alden and Brisk", entities=["Alden", "Brisk"], image=image)
    inputs = processor(text="Alden and Brisk", entities=["Alden", "Brisk"], images=image)
    with torch.no_grad():
        outputs = model(**inputs, output_tracking_maps=True)
    for level, maps in zip((0, 1, 2), outputs.patch_token_tracking_maps, strict=True):
        subject_row = maps[0, :, int(outputs.marker_positions[0, 0])].mean(dim=0)  # H_C^l head mean at <s>
        np.testing.assert_allclose(result["patch_token_maps"][level]["<s>"], subject_row[:16].reshape(4, 4), atol=1e-6)
        assert result["patch_token_maps"][level]["cls"] is None


def test_explain_command_line_names_a_missing_crop_once(model, processor, sample_dir, tmp_path, capsys):
    image = next((sample_dir / "img_org" / "val").iterdir())
    missing = tmp_path / "missing_crop.jpg"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model", str(tmp_path), "--text", "Alden with Brisk", "--subject", "Alden", "--object", "Brisk",
                "--image", str(image), "--crops", str(missing), "--output", str(tmp_path / "explain.png"),
            ]
        )  # fmt: skip
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.endswith(f"error: --crops: no such file: {missing}\n")
    assert "Traceback" not in error


def test_overlay_keeps_the_image_visible():
    pixels = np.full((8, 8, 3), 200, dtype=np.uint8)
    norm = map_norm([np.ones((2, 2))])
    assert (norm.vmin, norm.vmax) == (0.0, 2.0)
    blended = overlay(pixels, np.ones((2, 2)), norm, alpha=0.5)
    colour = np.asarray(matplotlib.colormaps[OVERLAY_COLOURS](0.5)[:3])  # 1 = even: the middle colour
    expected = np.rint((0.5 * 200 / 255 + 0.5 * colour) * 255).astype(np.uint8)  # half image, half colour
    np.testing.assert_array_equal(blended, np.broadcast_to(expected, (8, 8, 3)))
    assert not np.array_equal(expected, np.rint(colour * 255))  # the image still shows through


def test_command_line_explains_a_post(model_dir, sample_dir, tmp_path, capsys):
    image = next((sample_dir / "img_org" / "val").iterdir())
    capsys.readouterr()
    result = main(
        [
            "--model", str(model_dir), "--text", "Photo : Alden with Corra Vane", "--subject", "Alden", "--object",
            "Corra Vane", "--image", str(image), "--output", str(tmp_path / "explain.png"), "--device", "cpu",
        ]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["relation"] == result["relation"] and printed["probability"] == pytest.approx(result["probability"])
    assert_png_drawn(tmp_path / "explain.png")
