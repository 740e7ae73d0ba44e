"""Object crops made by a detector (`processing/object_detection.py`, `run_mre.py --object_detector`): a tiny random
DETR built from a config crops the top boxes of each post without crops, the same alone as in a batch and within the
pixel budget; a run with it counts its crops, saves it with the model, and the pipeline loaded from the model folder
crops a served post without crops as in training (the run's own probabilities); a changed detector is not served
from the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from _data_fixtures import make_processor
from _post_fixtures import own_posts, write_posts
from mnre_folder import write_mnre_folder
from PIL import Image
from tiny_models import tiny_model_for
from transformers import TrainingArguments

import run_mre
from modeling_hvformer.modeling_hvformer import HVFormerForRelationExtraction
from modeling_hvformer.pipeline_hvformer import HVFormerRelationExtractionPipeline
from mre_data.export_mnre import export_mnre
from mre_data.mnre import read_mnre_file
from mre_data.mnre_dataset import MNRECropsError, image_report, load_mnre, load_post_files
from mre_run.prediction import model_digest
from processing.object_detection import DETECTOR_FOLDER, ObjectDetector, top_boxes
from processing.processing_hvformer import HVFormerProcessor
from sample_inputs.detectors import save_tiny_detr
from training.console import print_summary
from training.hub import model_repository_files

FAST = ["--per_device_eval_batch_size", "100", "--logging_strategy", "no", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def detr(tmp_path_factory) -> Path:
    return save_tiny_detr(tmp_path_factory.mktemp("detr"), seed=0)


def noise(seed: int, width: int = 200, height: int = 120) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_top_boxes_clamps_skips_degenerate_boxes_and_orders_ties_by_box():
    scores = [0.5, 0.9, 0.5, 0.7, float("nan"), 0.8, 0.95, 0.6]
    boxes = [
        [10.2, 5.0, 30.0, 25.7],  # kept: widened to (10, 5, 30, 26)
        [-4.0, -3.0, 12.5, 9.0],  # clamped to (0, 0, 13, 9)
        [2.0, 2.0, 8.0, 8.0],  # same score as the first: the smaller box comes first
        [40.0, 10.0, 40.5, 30.0],  # thinner than a pixel
        [0.0, 0.0, 10.0, 10.0],  # no score
        [0.0, 0.0, 42.0, 2.0],  # 21 times wider than high
        [-12.5, 0.0, 13.0, 9.0],  # the second box clamped again: a duplicate of it
        [50.0, 50.0, 60.0, 60.0],  # outside the image
    ]
    assert top_boxes(scores, boxes, (48, 36), 3) == [(0, 0, 13, 9), (2, 2, 8, 8), (10, 5, 30, 26)]
    assert top_boxes(scores, boxes, (48, 36), 9) == [(0, 0, 13, 9), (2, 2, 8, 8), (10, 5, 30, 26)]


def test_detection_gives_k_crops_the_same_alone_as_in_a_batch_within_the_budget(detr):
    detector = ObjectDetector.from_pretrained(detr)
    images = [noise(0), noise(1), noise(2, 90, 160)]
    alone = [detector.boxes([image], 3)[0] for image in images]
    assert detector.boxes(images, 3) == alone == detector.boxes(list(images), 3)
    for image, boxes in zip(images, alone, strict=True):
        assert len(boxes) == len(set(boxes)) == 3
        assert all(
            0 <= left < right <= image.width and 0 <= top < bottom <= image.height
            for left, top, right, bottom in boxes
        )
    crops = detector.crops(images[:1], 2)[0]
    assert [crop.size for crop in crops] == [(right - left, bottom - top) for left, top, right, bottom in alone[0][:2]]
    assert np.array_equal(
        np.asarray(crops[0]), np.asarray(images[0])[alone[0][0][1] : alone[0][0][3], alone[0][0][0] : alone[0][0][2]]
    )
    # 200x120 pixels read by the detector at 96x58 (shortest side 64, longest 96): 24,000 + 5,568 pixels.
    assert detector.boxes(images[:1], 3, max_pixels=29_568) == alone[:1]
    with pytest.raises(ValueError) as refused:
        detector.boxes(images[:1], 3, max_pixels=29_567, labels=["Sample 0"])
    assert str(refused.value) == (
        "Sample 0: the image (200x120) and the object detector's input (96x58) hold 29,568 pixels together, more "
        "than max_image_pixels=29,567."
    )


def test_the_processor_crops_a_sample_without_crops_and_keeps_given_ones(detr, tmp_path):
    processor = make_processor(num_object_crops=2)
    image, crop = noise(0), noise(5, 20, 20)
    plain = processor.image_processor([image, image], object_crops=[[], [crop]])
    processor.object_detector = str(detr)
    detected = ObjectDetector.from_pretrained(detr).crops([image], 2)[0]
    expected = processor.image_processor([image, image], object_crops=[detected, [crop]])
    encoded = processor(
        text=["a b", "a b"], entities=[("a", "b")] * 2, images=[image, image], object_crops=[[], [crop]]
    )
    assert encoded["object_mask"].tolist() == [[1, 1], [1, 0]] != plain["object_mask"].tolist()
    assert torch.equal(encoded["object_pixel_values"][1, 0], plain["object_pixel_values"][1, 0])
    assert torch.equal(encoded["object_pixel_values"], expected["object_pixel_values"])
    single = processor(text="a b", entities=("a", "b"), images=image)
    assert torch.equal(single["object_pixel_values"][0], expected["object_pixel_values"][0])


@pytest.fixture(scope="module")
def detector_run(detr, tmp_path_factory) -> tuple[Path, dict[str, list[dict]], Path]:
    root = tmp_path_factory.mktemp("posts")
    posts = {}
    for seed, (split, count) in enumerate((("train", 6), ("val", 3), ("test", 3))):
        posts[split] = own_posts(root, count, seed=seed, prefix=split)
        write_posts(root / f"{split}.jsonl", posts[split])
    output_dir = tmp_path_factory.mktemp("run") / "detected"
    run_mre.main(
        [
            *("--train_file", str(root / "train.jsonl"), "--validation_file", str(root / "val.jsonl")),
            *("--test_file", str(root / "test.jsonl"), "--none_label", "no_relation", "--num_train_epochs", "1"),
            *("--object_detector", str(detr), "--output_dir", str(output_dir)),
            *("--cache_dir", str(output_dir) + "-cache", *FAST),
        ]
    )
    return root, posts, output_dir


def test_a_run_counts_the_detectors_crops_and_saves_the_detector(detector_run, capsys):
    _, _, output_dir = detector_run
    results = json.loads((output_dir / "all_results.json").read_text())
    # 48x36 photos: every post gets the 3 crops it has slots for; none brought its own.
    assert {split: results[f"{split}_detector_crops"] for split in ("train", "val", "test")} == {
        "train": 18,
        "val": 9,
        "test": 9,
    }
    assert {split: results[f"{split}_crops_unavailable"] for split in ("train", "val", "test")} == dict.fromkeys(
        ("train", "val", "test"), 0
    )
    model_dir = output_dir / run_mre.MODEL_FOLDER
    saved = json.loads((model_dir / "processor_config.json").read_text())
    assert saved["object_detector"] == DETECTOR_FOLDER  # a local detector travels with the model, weights included
    assert sorted(path.name for path in (model_dir / DETECTOR_FOLDER).iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    pushed = model_repository_files(model_dir)
    assert [name for name in pushed if "/" in name] == [
        f"{DETECTOR_FOLDER}/config.json",
        f"{DETECTOR_FOLDER}/model.safetensors",
        f"{DETECTOR_FOLDER}/preprocessor_config.json",
    ]
    print_summary(results, output_dir, model_dir)
    assert "Object crops made by --object_detector: test 9, train 18, val 9" in capsys.readouterr().out


def test_the_pipeline_crops_a_post_without_crops_as_in_training(detector_run):
    root, posts, output_dir = detector_run
    model_dir = output_dir / run_mre.MODEL_FOLDER
    model = HVFormerForRelationExtraction.from_pretrained(model_dir).eval()
    processor = HVFormerProcessor.from_pretrained(model_dir)
    extractor = HVFormerRelationExtractionPipeline(model=model, processor=processor, device=-1)
    predicted = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predicted) == len(posts["test"]) == 3
    for post, row in zip(posts["test"], predicted, strict=True):
        request = {key: post[key] for key in ("text", "subject", "object")} | {"image": str(root / post["image"])}
        answer = extractor(request, top_k=model.config.num_labels)
        assert {item["label"]: item["score"] for item in answer} == pytest.approx(row["probabilities"], abs=1e-5)
    without = HVFormerProcessor.from_pretrained(model_dir, object_detector=None)
    request = {key: posts["test"][0][key] for key in ("text", "subject", "object")}
    encoded = without(
        text=request["text"],
        entities=(request["subject"], request["object"]),
        images=str(root / posts["test"][0]["image"]),
    )
    assert encoded["object_mask"].tolist() == [[0, 0, 0]]


def test_a_changed_detector_is_not_served_from_the_cache(tmp_path):
    posts = own_posts(tmp_path, 3, seed=4)
    write_posts(tmp_path / "test.jsonl", posts)
    detr = save_tiny_detr(tmp_path / "detr", seed=0)
    processor = make_processor(num_object_crops=2, relation_labels=["no_relation", "other_link", "person_link"])
    processor.object_detector = str(detr)
    first = load_post_files({"test": tmp_path / "test.jsonl"}, processor, cache_dir=tmp_path / "cache")["test"]
    assert image_report(first)["detector_crops"] == 6
    save_tiny_detr(detr, seed=1)  # other weights at the same path
    second = load_post_files({"test": tmp_path / "test.jsonl"}, processor, cache_dir=tmp_path / "cache")["test"]
    assert first.cache_files[-1]["filename"] != second.cache_files[-1]["filename"]
    assert not np.array_equal(first["object_pixel_values"], second["object_pixel_values"])
    expected = ObjectDetector.from_pretrained(detr).crops(
        [processor.image_processor.load_image(str(tmp_path / posts[0]["image"]), reduce_for="image")], 2
    )[0]
    assert np.array_equal(
        second["object_pixel_values"][0],
        processor.image_processor([noise(0)], object_crops=[expected])["object_pixel_values"][0].numpy(),
    )


def test_a_folder_without_crops_is_exported_and_loaded_with_the_detectors_crops(detr, tmp_path):
    """An MNRE folder without `img_vg/` is refused without a detector; with one, the export embeds the detector's
    crops of each full-size picture (PNG) and counts them, and `load_mnre` gives each post the crops of its decoded
    image, counted as `detector_crops`, none `crops_unavailable`."""
    data = write_mnre_folder(tmp_path / "own", sizes={"train": 4, "val": 2, "test": 2})
    shutil.rmtree(data / "img_vg")
    with pytest.raises(MNRECropsError):
        export_mnre(data, tmp_path / "plain")
    reports = export_mnre(data, tmp_path / "hub", object_detector=str(detr), num_object_crops=2)
    assert [(report.split, report.crops_detected, report.crops_embedded) for report in reports] == [
        ("train", 8, 8),
        ("validation", 4, 4),
        ("test", 4, 4),
    ]
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "| train | 4 | 4 | 8 (8 made by an object detector) | 0 | 0 |" in card
    rows = datasets.load_dataset(str(tmp_path / "hub"), split="test")
    records = read_mnre_file(data / "mnre_test.txt", split="test")
    detector = ObjectDetector.from_pretrained(detr)
    with Image.open(data / "img_org" / "test" / records[0]["img_id"]) as picture:
        expected = detector.crops([picture.convert("RGB")], 2)[0]
    assert [np.asarray(crop).tolist() for crop in rows[0]["object_crops"]] == [
        np.asarray(crop).tolist() for crop in expected
    ]

    processor = make_processor(num_object_crops=2)
    processor.object_detector = str(detr)
    loaded = load_mnre(data, processor, cache_dir=tmp_path / "cache")
    report = image_report(loaded)
    assert (report["train"]["detector_crops"], report["test"]["detector_crops"]) == (8, 4)
    assert report["train"]["crops_unavailable"] == 0


def test_the_prediction_model_digest_follows_the_detectors_weights(tmp_path):
    """Shards of an interrupted prediction are reused only for the same model: new detector weights at the same
    place are another model."""
    detr = save_tiny_detr(tmp_path / "detr", seed=0)
    processor = make_processor(num_object_crops=2, relation_labels=["None", "person_link"])
    processor.object_detector = str(detr)
    model = tiny_model_for(processor)
    args = TrainingArguments(output_dir=str(tmp_path / "unused"), use_cpu=True, report_to="none")
    digest = model_digest(model, processor, args)
    assert model_digest(model, processor, args) == digest
    save_tiny_detr(detr, seed=1)
    assert model_digest(model, processor, args) != digest
