"""Tests of the analysis of §4.3 (Figs. 4-10, `processing.analysis`) and of `processing.explain`, on the built-in
sample dataset with a tiny random model (ViT 32x32 / patch 8, two 16x16 crops: n_V = 1 + 16 + 2 x 4 = 25)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from _data_fixtures import sample_vocabulary
from PIL import Image
from scipy.stats import kurtosis
from tiny_models import tiny_config, tiny_text_config
from transformers import (
    BertTokenizerFast,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    ViTImageProcessor,
    ViTImageProcessorPil,
)
from transformers.utils import is_torchvision_available

from modeling_hvformer import HVFormerForRelationExtraction
from modeling_hvformer.tracking_maps import head_divergence
from processing import analysis, explain
from processing.collator import HVFormerDataCollator
from processing.mnre_dataset import load_mnre
from processing.processing_hvformer import HVFormerProcessor
from processing.sample_data import SAMPLE_RELATIONS, build_sample_dataset

RELATIONS = ["None", *SAMPLE_RELATIONS]
NUM_CROPS = 2
MAIN_TOKENS = 1 + (32 // 8) ** 2
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


def assert_png_drawn(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    """The PNG opens, is not tiny and is not blank (varied pixels, many colours)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width and image.height >= min_height, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10.0, f"{path.name} looks blank"
    colours = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    assert len(np.unique(colours)) > 20, f"{path.name} has too few colours"


@pytest.fixture(scope="module")
def processor() -> HVFormerProcessor:
    image_processor_class = ViTImageProcessor if is_torchvision_available() else ViTImageProcessorPil
    return HVFormerProcessor(
        image_processor=image_processor_class(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizerFast(vocab={word: index for index, word in enumerate(sample_vocabulary())}),
        max_length=tiny_text_config().max_position_embeddings,
        num_object_crops=NUM_CROPS,
        object_image_size=16,
        relation_labels=RELATIONS,
    )


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    return build_sample_dataset(tmp_path_factory.mktemp("sample") / "data", sizes={"train": 8, "val": 16, "test": 8})


@pytest.fixture(scope="module")
def data(sample_dir, processor, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return load_mnre(sample_dir, processor, splits=["train", "val"], relation_labels=RELATIONS, cache_dir=cache)


def make_model(processor: HVFormerProcessor, **overrides) -> HVFormerForRelationExtraction:
    torch.manual_seed(0)
    text_config = tiny_text_config()
    text_config.vocab_size = len(processor.tokenizer)
    config = tiny_config(
        "vit",
        text_config=text_config,
        entity_marker_token_ids=processor.marker_token_ids(),
        id2label=dict(enumerate(RELATIONS)),
        **overrides,
    )
    return HVFormerForRelationExtraction(config).eval()


@pytest.fixture(scope="module")
def model(processor) -> HVFormerForRelationExtraction:
    return make_model(processor)


HISTORY = {
    "expert_names": ["text", "level_0", "level_1", "level_2"],
    "history": [
        {"epoch": 1.0, "step": 2, "count": 8, "<s>": [0.4, 0.2, 0.2, 0.2], "<o>": [0.3, 0.3, 0.2, 0.2]},
        {"epoch": 2.0, "step": 4, "count": 8, "<s>": [0.1, 0.3, 0.3, 0.3], "<o>": [0.1, 0.2, 0.5, 0.2]},
    ],
}


@pytest.fixture(scope="module")
def analysed(model, processor, data, tmp_path_factory) -> tuple[dict, Path]:
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / analysis.HISTORY_FILE).write_text(json.dumps(HISTORY))
    output_dir = run_dir / "analysis"
    results = analysis.analyse(
        model,
        data["val"],
        HVFormerDataCollator(processor),
        output_dir,
        batch_size=5,  # 16 examples: a last, smaller batch
        history_path=run_dir / analysis.HISTORY_FILE,
        progress_bar=False,
    )
    return results, output_dir


@pytest.fixture(scope="module")
def reference(model, processor, data) -> dict:
    """The model's outputs on the whole val split in one batch, for recomputing the analysis by hand."""
    batch = HVFormerDataCollator(processor)([data["val"][i] for i in range(len(data["val"]))])
    batch.pop("labels")
    with torch.no_grad():
        outputs = model(**batch, output_tracking_maps=True)
    return {"outputs": outputs, "rows": torch.arange(len(data["val"]))}


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
        "main_image_tokens": MAIN_TOKENS,
        "image_grid": 4,
        "num_crop_blocks": NUM_CROPS,
        "tokens_per_crop": 4,
    }


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


@pytest.mark.parametrize(
    ("overrides", "skipped"),
    [
        ({"fusion": "concat"}, {"fig9_expert_weights", "fig10_expert_weights_by_relation"}),
        (
            {"visual_context": "cls"},
            {"fig5a_mean_cross_attention", "fig5b_kurtosis", "fig7_patch_token_maps", "fig7c_kl_divergence"},
        ),
    ],
)
def test_ablations_skip_figures(overrides, skipped, processor, data, tmp_path):
    model = make_model(processor, **overrides)
    results = analysis.analyse(
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
    written = {path.name for path in tmp_path.glob("*.png")}
    assert written == set(results["figures"].values())
    assert "fig6_patch_patch_maps.png" in written
    for name in written:
        assert_png_drawn(tmp_path / name)


def test_expert_weights_recorder_in_trainer(processor, data, tmp_path):
    model = make_model(processor)
    recorder = analysis.ExpertWeightsRecorder()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        data_collator=HVFormerDataCollator(processor),
        callbacks=[recorder],
    )
    trainer.train()
    assert [entry["epoch"] for entry in recorder.history] == [1.0, 2.0]
    assert [entry["step"] for entry in recorder.history] == [2, 4]
    for entry in recorder.history:
        assert entry["count"] == 8
        for marker in ("<s>", "<o>"):
            assert len(entry[marker]) == 4 and sum(entry[marker]) == pytest.approx(1.0, abs=1e-5)
    assert not model._forward_hooks  # removed at the end of training

    recorder.save(tmp_path / "run" / analysis.HISTORY_FILE, model.config.expert_names)
    saved = json.loads((tmp_path / "run" / analysis.HISTORY_FILE).read_text())
    assert saved == {"expert_names": model.config.expert_names, "history": recorder.history}

    results = analysis.run_analysis(trainer, data["val"], tmp_path / "run" / "analysis", max_examples=4)
    assert results["setup"]["num_examples"] == 4
    assert results["fig9_expert_weights"]["history"] == saved
    assert_png_drawn(tmp_path / "run" / "analysis" / results["figures"]["fig9a"])


def test_expert_weights_recorder_keeps_no_graph_and_logs(processor, data):
    model = make_model(processor).train()
    recorder = analysis.ExpertWeightsRecorder(every="log")
    args, state, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerState(), TrainerControl()
    recorder.on_epoch_begin(args, state, control, model=torch.nn.parallel.DataParallel(model))
    batch = HVFormerDataCollator(processor)([data["train"][i] for i in range(3)])
    outputs = model(**batch)
    outputs.loss.backward()
    assert recorder._count == 3 and recorder._sums.grad_fn is None and not recorder._sums.requires_grad
    expected = outputs.expert_weights.detach()[torch.arange(3)[:, None], outputs.marker_positions].mean(dim=0)
    model.eval()(**batch)  # evaluation forwards are not counted
    state.epoch, state.global_step = 0.5, 1
    recorder.on_epoch_end(args, state, control)  # every="log": nothing recorded at epoch ends
    assert recorder.history == []
    recorder.on_log(args, state, control, logs={})
    assert len(recorder.history) == 1 and recorder.history[0]["count"] == 3
    np.testing.assert_allclose([recorder.history[0]["<s>"], recorder.history[0]["<o>"]], expected, atol=1e-6)
    recorder.on_train_end(args, state, control)
    assert len(recorder.history) == 1 and not model._forward_hooks


def test_explain(model, processor, sample_dir, tmp_path):
    image = Image.open(next((sample_dir / "img_org" / "val").iterdir())).convert("RGB")
    text = "Photo : Alden with Corra Vane"
    output = tmp_path / "explain.png"
    result = explain.explain(
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
    assert result["image"].shape == (explain.DISPLAY_SIZE, explain.DISPLAY_SIZE, 3)
    relative = {  # (2, 4, 4) per level: <s>, <o>
        level: analysis.relative_to_even(np.asarray([maps["<s>"], maps["<o>"]]))
        for level, maps in result["patch_token_maps"].items()
    }
    norm = explain.map_norm(list(relative.values()))  # one colour scale for the six maps
    assert set(result["overlays"]) == {0, 1, 2}
    for level, overlays in result["overlays"].items():
        for row, marker in enumerate(("<s>", "<o>")):
            np.testing.assert_array_equal(
                overlays[marker], explain.overlay(result["image"], relative[level][row], norm)
            )

    words = ["Photo", ":", "Alden", "with", "Corra", "Vane"]
    by_span = explain.explain(
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


def test_explain_without_router_or_attention(processor, sample_dir, tmp_path):
    model = make_model(processor, fusion="concat", visual_context="cls")
    image = Image.open(next((sample_dir / "img_org" / "val").iterdir()))
    result = explain.explain(
        model,
        processor,
        "Alden and Brisk",
        entities=["Alden", "Brisk"],
        image=image,
        output_path=tmp_path / "explain.png",
    )
    assert result["expert_weights"] is None and result["patch_token_maps"] == {}
    assert_png_drawn(tmp_path / "explain.png")


def test_command_lines(model, processor, sample_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    results = analysis.main(
        [
            "--model", str(model_dir), "--data_dir", str(sample_dir), "--split", "val", "--output_dir",
            str(tmp_path / "analysis"), "--max_examples", "3", "--tsne_examples", "0", "--cache_dir",
            str(tmp_path / "cache"), "--device", "cpu",
        ]
    )  # fmt: skip
    assert results["setup"]["num_examples"] == 3
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text())["setup"]["num_examples"] == 3
    assert "fig9a_expert_weights_history" in results["skipped"]  # no history in the model folder

    image = next((sample_dir / "img_org" / "val").iterdir())
    capsys.readouterr()
    result = explain.main(
        [
            "--model", str(model_dir), "--text", "Photo : Alden with Corra Vane", "--subject", "Alden", "--object",
            "Corra Vane", "--image", str(image), "--output", str(tmp_path / "explain.png"), "--device", "cpu",
        ]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["relation"] == result["relation"] and printed["probability"] == pytest.approx(result["probability"])
    assert_png_drawn(tmp_path / "explain.png")


def write_run(folder: Path, levels: list[int], **metrics: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "hvformer", "vision_levels": levels}))
    (folder / "all_results.json").write_text(json.dumps({"epoch": 20.0, **metrics}))
    return folder


def test_plot_level_f1(tmp_path):
    run_6 = write_run(tmp_path / "level6", [6], eval_f1=0.71, test_f1=0.69)
    run_0 = write_run(tmp_path / "level0", [0], eval_f1=0.6)
    data = analysis.plot_level_f1([run_6, run_0 / "all_results.json"], tmp_path / "fig4.png")
    assert data["levels"] == [0, 6]
    assert data["eval_f1"] == [0.6, 0.71] and data["test_f1"] == [None, 0.69]
    assert json.loads((tmp_path / "fig4.json").read_text()) == data
    assert_png_drawn(tmp_path / "fig4.png")

    explicit = analysis.plot_level_f1({12: run_6, 3: run_0}, tmp_path / "explicit.png")
    assert explicit["levels"] == [3, 12] and explicit["eval_f1"] == [0.6, 0.71]

    from_cli = analysis.main(["--level_runs", str(run_0), str(run_6), "--output_dir", str(tmp_path / "cli")])
    assert from_cli["eval_f1"] == data["eval_f1"]
    assert_png_drawn(tmp_path / "cli" / "fig4_level_f1.png")

    write_run(tmp_path / "all", [0, 6, 12], eval_f1=0.7)
    with pytest.raises(ValueError, match="single level"):
        analysis.plot_level_f1([tmp_path / "all"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="same level"):
        analysis.plot_level_f1([run_0, run_0], tmp_path / "bad.png")


def test_recorder_imports_without_the_analysis_extra(tmp_path):
    """`run_mre.py` imports this module: without matplotlib and scikit-learn (the `analysis` extra) the recorder
    works and only drawing fails, naming the extra."""
    script = textwrap.dedent(
        """
        import sys

        sys.modules.update(matplotlib=None, sklearn=None)  # importing them raises ImportError
        from processing.analysis import ExpertWeightsRecorder, new_figure

        ExpertWeightsRecorder().save(sys.argv[1], ["text", "level_6"])
        try:
            new_figure(1, 1)
        except ImportError as error:
            assert "hvformer[analysis]" in str(error), error
        else:
            raise AssertionError("drew without matplotlib")
        """
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "history.json")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "history.json").read_text()) == {"expert_names": ["text", "level_6"], "history": []}


def test_expert_weight_dots_show_every_example_and_the_mean():
    """Fig. 9b once drew box plots without outliers: an expert taking all the weight of a fifth of the examples and
    none of the others (mean 0.2) got a box and whiskers at 0, as if never used, while Fig. 10 showed it used."""
    weights = np.zeros((10, 2, 3))
    weights[:, :, 1] = 1.0  # "level_0" takes everything...
    weights[:2, :, 1], weights[:2, :, 2] = 0.0, 1.0  # ...except in two examples, which "level_1" takes
    figure = analysis.new_figure(6, 4)
    ax = figure.subplots()
    analysis.expert_weight_dots(ax, weights, ["text", "level_0", "level_1"])
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
    np.testing.assert_allclose(analysis.relative_to_even(grid), [[0.5, 1.5], [1.0, 1.0]])
    np.testing.assert_array_equal(analysis.relative_to_even(np.zeros((2, 2))), np.zeros((2, 2)))
    norm = analysis.even_spread_norm(analysis.relative_to_even(grid))
    assert (norm.vmin, norm.vcenter, norm.vmax) == (0.5, 1.0, 1.5)
    nearly_even = analysis.even_spread_norm(np.array([0.99, 1.01]))  # noise is not magnified
    assert (nearly_even.vmin, nearly_even.vmax) == (0.75, 1.25)


def test_explain_command_line_names_a_missing_crop_once(model, processor, sample_dir, tmp_path, capsys):
    image = next((sample_dir / "img_org" / "val").iterdir())
    missing = tmp_path / "missing_crop.jpg"
    with pytest.raises(SystemExit) as exit_info:
        explain.main(
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
    norm = explain.map_norm([np.ones((2, 2))])
    assert (norm.vmin, norm.vmax) == (0.0, 2.0)
    blended = explain.overlay(pixels, np.ones((2, 2)), norm, alpha=0.5)
    colour = np.asarray(matplotlib.colormaps[explain.OVERLAY_COLOURS](0.5)[:3])  # 1 = even: the middle colour
    expected = np.rint((0.5 * 200 / 255 + 0.5 * colour) * 255).astype(np.uint8)  # half image, half colour
    np.testing.assert_array_equal(blended, np.broadcast_to(expected, (8, 8, 3)))
    assert not np.array_equal(expected, np.rint(colour * 255))  # the image still shows through


def test_fig6_with_level_0_only_says_why_nothing_is_drawn(tmp_path):
    """H_V^0 is the identity (Eq. 17): a model reading only level 0 gets the numbers but no picture of them."""
    statistics = analysis._SplitStatistics(config=None, tsne_examples=0)
    statistics.layout = analysis.VisualTokenLayout(num_tokens=MAIN_TOKENS, grid=4, crop_tokens=4)
    statistics.num_examples = 2
    statistics.sums["patch_patch_main"] = 2 * torch.eye(MAIN_TOKENS, dtype=torch.float64)[None]  # two examples
    results = {"figures": {}, "skipped": {}}
    analysis._patch_patch_results(statistics, tmp_path, results)
    assert results["fig6_patch_patch_maps"]["levels"] == [0]
    np.testing.assert_array_equal(results["fig6_patch_patch_maps"]["main_image"]["mean"], [np.eye(MAIN_TOKENS)])
    assert results["skipped"] == {
        "fig6_patch_patch_maps": "only ViT level 0 is read, and H_V^0 is the identity by definition (Eq. 17): "
        "nothing to draw"
    }
    assert results["figures"] == {} and not list(tmp_path.glob("*.png"))
