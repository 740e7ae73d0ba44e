"""The multimodal-relation-extraction pipeline and the Inference Endpoints handler, in isolated processes."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _processor_fixtures import build, matching_config, random_image
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated
from PIL import Image

import run_mre
from modeling_hvformer import HVFormerForRelationExtraction
from modeling_hvformer.handler import MAX_ERROR_LENGTH
from modeling_hvformer.pipeline_hvformer import (
    MAX_IMAGE_PIXELS,
    MAX_TEXT_LENGTH,
    HVFormerRelationExtractionPipeline,
    decode_image,
)
from mre_data.mnre import read_mnre_file
from mre_data.mnre_dataset import load_mnre
from mre_data.sample_data import build_sample_dataset
from processing.image_files import ACCEPTED_FORMATS
from processing.image_loading import MAX_ASPECT_RATIO, MAX_DECODE_BYTES
from processing.processing_hvformer import HVFormerProcessor
from sample_inputs import hostile_images as hostile
from sample_inputs.hostile_images import blank_png
from sample_inputs.requests import hostile_images, photo, requests

TEXT = "Barack Obama visited Paris"
ROOT = Path(__file__).resolve().parents[1]


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model and its processor saved into one folder, as `run_mre.py` saves them."""
    processor = build(tmp_path_factory, max_length=24, num_object_crops=2)
    torch.manual_seed(0)
    model = HVFormerForRelationExtraction(matching_config(processor)).eval()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    rng = np.random.default_rng(0)
    images = [random_image(rng, 30, 20), random_image(rng, 12, 12), random_image(rng, 16, 9)]
    for index, image in enumerate(images):
        image.save(folder.parent / f"image{index}.png")
    return model, processor, folder, images


def expected_probabilities(model, processor, **inputs) -> torch.Tensor:
    """Softmax of the model's logits on the processor's encoding padded to `max_length`, as the pipeline pads."""
    encoding = processor(**inputs, padding="max_length")
    with torch.no_grad():
        return model(**encoding).logits.softmax(-1)[0]


def test_saving_registers_the_pipeline_and_ships_its_files(saved):
    _, _, folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "multimodal-relation-extraction": {
            "impl": "pipeline_hvformer.HVFormerRelationExtractionPipeline",
            "pt": ["AutoModel"],
            "type": "multimodal",
        }
    }
    assert {"pipeline_hvformer.py", "handler.py", "processing_hvformer.py", "tokenizer.json"} <= {
        path.name for path in folder.iterdir()
    }


ISOLATED_PIPELINE = (
    BLOCK_PROJECT_IMPORTS
    + """
import base64, json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from transformers import pipeline

folder = Path(sys.argv[1])
extractor = pipeline("multimodal-relation-extraction", model=str(folder), trust_remote_code=True, device=-1)
assert type(extractor).__module__.startswith("transformers_modules"), type(extractor).__module__
image_path = str(folder.parent / "image0.png")
post = {"text": "Barack Obama visited Paris", "subject": "Barack Obama", "object": "Paris", "image": image_path}
crops = [str(folder.parent / "image1.png"), base64.b64encode((folder.parent / "image2.png").read_bytes()).decode()]
results = {
    "single": extractor(post),
    "top_k": extractor(post, top_k=3, return_expert_weights=True),
    "batch": extractor(
        [
            post,
            {**post, "image": np.asarray(Image.open(image_path)), "object_crops": crops},
            {"text": "Obama visited Paris", "entity_spans": [[0, 5], [14, 19]], "image": Image.open(image_path)},
        ],
        batch_size=2,
    ),
}
Path(sys.argv[2]).write_text(json.dumps(results))
"""
)


@pytest.mark.slow
def test_pipeline_in_an_isolated_process(saved, tmp_path):
    model, processor, folder, images = saved
    run_isolated(ISOLATED_PIPELINE, str(folder), str(tmp_path / "out.json"), cwd=tmp_path)
    results = json.loads((tmp_path / "out.json").read_text())

    post = {"text": TEXT, "entities": ("Barack Obama", "Paris"), "images": images[0]}
    probabilities = expected_probabilities(model, processor, **post)
    ranked = probabilities.argsort(descending=True).tolist()
    expected = [{"label": model.config.id2label[i], "score": pytest.approx(float(probabilities[i]))} for i in ranked]
    assert results["single"] == expected[:1]
    assert results["top_k"]["relations"] == expected
    assert (results["top_k"]["subject"], results["top_k"]["object"]) == ("Barack Obama", "Paris")
    encoding = processor(**post, padding="max_length")
    with torch.no_grad():
        weights = model(**encoding, output_expert_weights=True).expert_weights[0, encoding["marker_positions"][0]]
    for role, row in zip(("subject", "object"), weights.tolist(), strict=True):
        assert results["top_k"]["expert_weights"][role] == {
            name: pytest.approx(value) for name, value in zip(model.config.expert_names, row, strict=True)
        }
        assert sum(results["top_k"]["expert_weights"][role].values()) == pytest.approx(1.0)

    assert results["batch"][0] == expected[:1]
    with_crops = expected_probabilities(model, processor, **post, object_crops=images[1:])
    spans = expected_probabilities(
        model, processor, text="Obama visited Paris", entity_spans=[(0, 5), (14, 19)], images=images[0]
    )
    for result, reference in zip(results["batch"][1:], (with_crops, spans), strict=True):
        best = int(reference.argmax())
        assert result == [{"label": model.config.id2label[best], "score": pytest.approx(float(reference[best]))}]
    assert float(with_crops.max()) != pytest.approx(float(probabilities.max()))


@pytest.fixture(scope="module")
def extractor(saved):
    model, processor, _, _ = saved
    return HVFormerRelationExtractionPipeline(model=model, processor=processor, device=-1)


@pytest.mark.parametrize(
    ("post", "message"),
    [
        ("Obama visited Paris", "Each input must be a dict with the keys"),
        ({"text": TEXT, "subject": "Obama", "object": "Paris", "image": None}, "Missing `image`"),
        ({"text": TEXT, "subject": "Obama", "image": "x"}, r"Missing \['object'\]: give `subject` and `object`"),
        (
            {"text": TEXT, "subject": "Obama", "object": "Rome", "image": "IMAGE"},
            r"^The object entity 'Rome' is absent from the text\.$",
        ),
        (
            {"text": TEXT, "subject": "obama", "object": "Paris", "image": "IMAGE"},
            r"^The subject entity 'obama' is absent from the text\.$",
        ),
        (
            {
                "text": TEXT,
                "subject": "Obama",
                "object": "Paris",
                "entity_spans": [[0, 6], [21, 26]],
                "image": "IMAGE",
            },
            r"either `entity_spans` or `subject` and `object`, not both",
        ),
        ({"text": TEXT, "subject": "Obama", "object": "Paris", "img": "x"}, r"Unknown input keys \['img'\]"),
        ({"text": "", "subject": "a", "object": "b", "image": "IMAGE"}, "`text` must be a non-empty string"),
        (
            {"text": TEXT, "subject": "Obama", "object": "Paris", "image": "not an image!"},
            "`image` is neither an existing image file nor a base64-encoded image",
        ),
        (
            {"text": TEXT, "subject": "Obama", "object": "Paris", "image": base64.b64encode(b"text").decode()},
            r"^`image`: cannot read the image: not a JPEG, PNG, WEBP or GIF file\.$",
        ),
        (
            {"text": TEXT, "subject": "Obama", "object": "Paris", "image": "IMAGE", "object_crops": "IMAGE"},
            "`object_crops` must be a list of images",
        ),
    ],
)
def test_pipeline_errors_name_the_field(extractor, saved, post, message):
    if isinstance(post, dict) and post.get("image") == "IMAGE":
        post = {**post, "image": saved[3][0]}
    if isinstance(post, dict) and post.get("object_crops") == "IMAGE":
        post = {**post, "object_crops": saved[3][1]}
    with pytest.raises(ValueError, match=message):
        extractor(post)


@pytest.mark.parametrize("side", [4, 6])
def test_decompression_bombs_are_refused(extractor, monkeypatch, side):
    """An image over PIL's pixel limit (a warning up to twice the limit, an error above) is refused, not decoded."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="PNG")
    post = {"text": TEXT, "subject": "Obama", "object": "Paris", "image": base64.b64encode(buffer.getvalue()).decode()}
    with pytest.raises(ValueError, match="^`image`: refusing to decode the image: .*decompression bomb"):
        extractor(post)


def test_pipeline_parameters_are_checked(extractor, saved):
    post = {"text": TEXT, "subject": "Obama", "object": "Paris", "image": saved[3][0]}
    with pytest.raises(ValueError, match="`top_k` must be an integer >= 1, got 0"):
        extractor(post, top_k=0)
    with pytest.raises(ValueError, match="`return_expert_weights` must be True or False, got 'yes'"):
        extractor(post, return_expert_weights="yes")
    assert len(extractor(post, top_k=10)) == 3
    data_url = "data:image/png;base64," + png_base64(saved[3][0])
    assert extractor({**post, "image": data_url}) == extractor(post)


def test_pipeline_refuses_a_processor_that_does_not_match(saved, tmp_path_factory):
    model, _, _, _ = saved
    other = build(tmp_path_factory, max_length=24, num_object_crops=2, relation_labels=["None", "b", "c"])
    with pytest.raises(ValueError, match=r"The processor does not match the model: the processor's `relation_labels`"):
        HVFormerRelationExtractionPipeline(model=model, processor=other, device=-1)


ISOLATED_HANDLER = (
    BLOCK_PROJECT_IMPORTS
    + """
import importlib.util, json, sys
from pathlib import Path

folder, requests_file, output_file = sys.argv[1:4]
sys.path.insert(0, folder)  # as Inference Endpoints do
spec = importlib.util.spec_from_file_location("handler", Path(folder) / "handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(folder)
answers = [handler(request) for request in json.loads(Path(requests_file).read_text())]
Path(output_file).write_text(json.dumps(answers))
"""
)


@pytest.mark.slow
def test_endpoint_handler_in_an_isolated_process(saved, tmp_path):
    model, processor, folder, images = saved
    encoded = png_base64(images[0])
    post = {"text": TEXT, "subject": "Barack Obama", "object": "Paris", "image": encoded}
    requests = [
        {"inputs": post, "parameters": {"top_k": 2}},
        {"inputs": [post, {**post, "object_crops": [png_base64(images[1])]}]},
        {"inputs": {**post, "image": str(folder.parent / "image0.png")}},
        {"inputs": {**post, "subject": "Angela Merkel"}},
        {"inputs": {**post, "image": 7}},
        {"inputs": post, "parameters": {"device": 0}},
        {"input": post},
        ["not", "an", "object"],
        {"inputs": post, "options": {"wait_for_model": True}},
        {"inputs": [post, post, {**post, "subject": "Angela Merkel"}]},
        {"inputs": post, **{f"key{index}": index for index in range(1000)}},
        {"inputs": {**post, "image": "data:image/png;base64"}},
    ]
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    run_isolated(
        ISOLATED_HANDLER, str(folder), str(tmp_path / "requests.json"), str(tmp_path / "out.json"), cwd=tmp_path
    )
    answers = json.loads((tmp_path / "out.json").read_text())

    probabilities = expected_probabilities(
        model, processor, text=TEXT, entities=("Barack Obama", "Paris"), images=images[0]
    )
    top = probabilities.argsort(descending=True)[:2].tolist()
    assert answers[0] == [
        {"label": model.config.id2label[i], "score": pytest.approx(float(probabilities[i]))} for i in top
    ]
    assert len(answers[1]) == 2 and answers[1][0] == answers[0][:1]
    assert answers[2] == {"error": "`image` is not a base64-encoded image."}
    assert answers[3] == {"error": "The subject entity 'Angela Merkel' is absent from the text."}
    assert answers[4] == {"error": "`inputs.image` must hold base64-encoded images (strings)."}
    assert answers[5] == {
        "error": "Unknown parameters ['device']; the parameters are ['top_k', 'return_expert_weights']."
    }
    assert answers[6] == {"error": "Unknown request keys ['input']; a request has `inputs` and optional `parameters`."}
    assert answers[7] == {"error": "The request must be a JSON object with `inputs`, got list."}
    assert answers[8] == {
        "error": "Unknown request keys ['options']; a request has `inputs` and optional `parameters`."
    }
    assert answers[9] == {"error": "inputs[2]: The subject entity 'Angela Merkel' is absent from the text."}
    assert answers[10] == {
        "error": "Unknown request keys ['key0', 'key1', 'key10', 'key100', 'key101', 'key102', ...]; a request has "
        "`inputs` and optional `parameters`."
    }
    assert answers[11] == {"error": "`image` is a data URL without base64 data: write `data:image/...;base64,<data>`."}


def test_data_urls_are_decoded_or_refused_clearly():
    encoded = png_base64(Image.new("RGB", (3, 2)))
    for url in ("data:image/png;base64", "data:image/png," + encoded):
        with pytest.raises(
            ValueError, match=r"^`object_crops\[1\]` is a data URL without base64 data: write `data:image/"
        ):
            decode_image(url, "object_crops[1]", allow_paths=False)
    assert decode_image("data:image/png;base64," + encoded, "image", allow_paths=False) == base64.b64decode(encoded)


def test_single_posts_and_lists_of_posts_name_what_is_refused(extractor, saved):
    post = {"text": TEXT, "subject": "Obama", "object": "Paris", "image": saved[3][0]}
    bad = {**post, "object": "Rome"}
    absent = r"The object entity 'Rome' is absent from the text\.$"
    with pytest.raises(ValueError, match=rf"^{absent}"):
        extractor(bad)
    for batch_size in (1, 2):
        with pytest.raises(ValueError, match=rf"^item 2: {absent}"):
            extractor([post, post, bad], batch_size=batch_size)
    with pytest.raises(ValueError, match=r"^item 0: Each input must be a dict"):
        extractor(["Obama visited Paris"])
    with pytest.raises(ValueError, match=r"^The list of inputs is empty\.$"):
        extractor([])


def test_booleans_surrogates_and_unspaced_scripts(extractor, saved):
    model, processor, _, images = saved
    with pytest.raises(ValueError, match=r"^The subject span must hold integers, got \[False, True\]\.$"):
        extractor({"text": TEXT, "entity_spans": [[False, True], [21, 26]], "image": images[0]})
    with pytest.raises(ValueError, match=r"^`top_k` must be an integer >= 1, got True\.$"):
        extractor({"text": TEXT, "entity_spans": [[0, 6], [21, 26]], "image": images[0]}, top_k=True)
    with pytest.raises(ValueError, match=r"^The text holds a lone surrogate \(U\+D800\) at character 8: a text"):
        extractor({"text": "Quillon \ud800 with Alden", "subject": "Quillon", "object": "Alden", "image": images[0]})
    text = "奥巴马和默克尔在七国集团峰会"
    answer = extractor({"text": text, "subject": "奥巴马", "object": "默克尔", "image": images[0]}, top_k=3)
    reference = expected_probabilities(model, processor, text=text, entity_spans=[(0, 3), (4, 7)], images=images[0])
    assert [item["score"] for item in answer] == pytest.approx(reference.sort(descending=True).values.tolist())


def test_the_pixel_budget_applies_to_every_kind_of_image(saved, tmp_path):
    model, processor, _, _ = saved
    extractor = HVFormerRelationExtractionPipeline(model=model, processor=processor, device=-1, max_image_pixels=1000)
    big, small = random_image(np.random.default_rng(1), 40, 30), random_image(np.random.default_rng(2), 20, 20)
    big.save(tmp_path / "big.png")
    encoded = png_base64(big)
    kinds = [big, np.asarray(big), tmp_path / "big.png", str(tmp_path / "big.png")]
    kinds += [(tmp_path / "big.png").read_bytes(), encoded, "data:image/png;base64," + encoded]
    post = {"text": TEXT, "subject": "Obama", "object": "Paris"}
    for image in kinds:
        with pytest.raises(
            ValueError, match=r"^The image holds 1,200 pixels \(`image` 40x30\), more than max_image_pixels=1,000\.$"
        ):
            extractor({**post, "image": image})
    with pytest.raises(
        ValueError,
        match=r"^The images hold 1,200 pixels together \(`image` 20x20, `object_crops\[0\]` 20x20, "
        r"`object_crops\[1\]` 20x20\), more than max_image_pixels=1,000\.$",
    ):
        extractor({**post, "image": small, "object_crops": [small, png_base64(small)]})
    assert (
        extractor({**post, "image": small, "object_crops": [png_base64(small)]})[0]["label"] in model.config.label2id
    )
    for setting in (0, True, 2.5):
        with pytest.raises(ValueError, match=r"^`max_image_pixels` must be an integer >= 1 or None \(no limit\)"):
            HVFormerRelationExtractionPipeline(model=model, processor=processor, device=-1, max_image_pixels=setting)


def test_the_default_limits_take_a_phone_photo_and_refuse_the_issues_requests(extractor):
    assert (MAX_IMAGE_PIXELS, MAX_TEXT_LENGTH) == (2 * 4032 * 3024, 10_000)
    post = {"text": TEXT, "subject": "Obama", "object": "Paris", "image": base64.b64encode(blank_png(64, 48)).decode()}
    crops = [base64.b64encode(photo((640, 480), "JPEG")).decode()] * 2
    answer = extractor({**post, "image": photo((4032, 3024), "JPEG"), "object_crops": crops})
    assert len(answer) == 1 and 0.0 < answer[0]["score"] <= 1.0
    bomb = base64.b64encode(blank_png(9000, 9000)).decode()
    refusals = [
        (
            {**post, "image": bomb},
            r"^The image holds 81,000,000 pixels \(`image` 9000x9000\), more than max_image_pixels=24,385,536\.$",
        ),
        (
            {**post, "object_crops": [bomb, bomb]},
            r"^The images hold 162,003,072 pixels together \(`image` 64x48, `object_crops\[0\]` 9000x9000, "
            r"`object_crops\[1\]` 9000x9000\), more than max_image_pixels=24,385,536\.$",
        ),
        ({**post, "object_crops": [bomb] * 30}, r"^30 object crops given, at most num_object_crops=2 allowed\.$"),
        (
            {**post, "text": "a" * 200_000, "subject": "a" * 100_000, "object": "a"},
            r"^The text has 200,000 characters, more than max_text_length=10,000\.$",
        ),
    ]
    for request, message in refusals:
        with pytest.raises(ValueError, match=message):
            extractor(request)


def assert_same_relations(answer, expected, name: str) -> None:
    """The same relations, in the same order, with the same scores (to float rounding), for one post or a list."""
    posts, expected_posts = (answer, expected) if isinstance(expected[0], list) else ([answer], [expected])
    assert len(posts) == len(expected_posts), name
    for relations, expected_relations in zip(posts, expected_posts, strict=True):
        assert [item["label"] for item in relations] == [item["label"] for item in expected_relations], name
        assert [item["score"] for item in relations] == pytest.approx([item["score"] for item in expected_relations])


def test_refused_requests_decode_no_image(extractor, decodes):
    """Images are counted and sized from their headers before any is decoded (decoding first, 30 bomb crops took
    +2.4 GB and 8 s to be refused for their number, three to be answered)."""
    post = {"text": TEXT, "subject": "Obama", "object": "Paris", "image": blank_png(64, 48)}
    bomb = base64.b64encode(blank_png(9000, 9000)).decode()
    for crops in ([bomb] * 30, [bomb] * 2, [png_base64(Image.new("RGB", (8, 8)))] * 3):
        with pytest.raises(ValueError, match=r"^(30|3) object crops given|^The images hold 162,003,072 pixels"):
            extractor({**post, "object_crops": crops})
    with pytest.raises(ValueError, match=r"^The image holds 81,000,000 pixels"):
        extractor({**post, "image": bomb})
    assert decodes == []


ENLARGED = 6
"""How much the pictures and crops of the first test posts of `run_with_large_pictures` are enlarged: from 48-80
pixels to 288-480, so that the pipeline decodes them at a reduced scale (a JPEG twice the 32-pixel input drafted)."""


@pytest.fixture(scope="module")
def run_with_large_pictures(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The main job trained on a small copy of the built-in sample whose first three test posts have pictures and
    crops `ENLARGED` times larger, with grain; returns the data folder, the run folder and the run's cache."""
    data_dir = build_sample_dataset(
        tmp_path_factory.mktemp("sample") / "mnre", seed=1, sizes={"train": 20, "val": 8, "test": 8}
    )
    crops = json.loads((data_dir / "mre_test_dict.json").read_text())
    rng = np.random.default_rng(0)
    for record in read_mnre_file(data_dir / "mnre_test.txt", split="test")[:3]:
        paths = [data_dir / "img_org" / "test" / record["img_id"]]
        paths += [data_dir / "img_vg" / "test" / "crops" / name for name in crops.get(str(record["line_index"]), [])]
        for path in paths:
            with Image.open(path) as picture:
                enlarged = np.asarray(picture.resize((picture.width * ENLARGED, picture.height * ENLARGED)))
            grain = rng.normal(0.0, 40.0, enlarged.shape)  # detail that decoding at a reduced scale averages away
            Image.fromarray(np.clip(enlarged + grain, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=90)
    output_dir, cache_dir = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("cache")
    run_mre.main(
        ["--data_dir", str(data_dir), "--output_dir", str(output_dir), "--num_train_epochs", "2"]
        + ["--learning_rate", "5e-3", "--cache_dir", str(cache_dir), "--per_device_eval_batch_size", "100"]
        + ["--logging_strategy", "no", "--disable_tqdm", "true"]
    )
    return data_dir, output_dir, cache_dir


def test_every_form_of_a_posts_images_reproduces_the_runs_predictions(run_with_large_pictures):
    """A path or bytes got the reduced-scale JPEG decoding, a PIL image `Image.open(path)` a full one: the same photo
    had other scores (0.5649 against 0.5726). The pipeline fed a run's test posts as paths, as PIL images opened from
    them and as bytes answers the probabilities of the run's `predictions.jsonl`, computed on the training cache's
    pixels, for large pictures as for small ones: the processor gives each form exactly the cached pixels."""
    data_dir, output_dir, cache_dir = run_with_large_pictures
    model_dir = output_dir / run_mre.MODEL_FOLDER
    model = HVFormerForRelationExtraction.from_pretrained(model_dir).eval()
    processor = HVFormerProcessor.from_pretrained(model_dir)
    extractor = HVFormerRelationExtractionPipeline(model=model, processor=processor, device=-1)
    cached = load_mnre(data_dir, processor, splits=["test"], cache_dir=cache_dir)["test"].with_format("numpy")
    predicted = {
        row["id"]: row["probabilities"]
        for row in map(json.loads, (output_dir / "predictions.jsonl").read_text().splitlines())
    }
    crops = json.loads((data_dir / "mre_test_dict.json").read_text())
    records = read_mnre_file(data_dir / "mnre_test.txt", split="test")
    assert len(predicted) == len(records) == 8
    with Image.open(data_dir / "img_org" / "test" / records[0]["img_id"]) as first:
        assert min(first.size) >= 4 * 2 * 32  # decoded at a quarter of its size or less
    forms = {"path": str, "PIL image": Image.open, "bytes": lambda path: Path(path).read_bytes()}
    for record in records:
        words = record["token"]
        starts = [sum(len(word) + 1 for word in words[:index]) for index in range(len(words))]
        spans = [
            [starts[entity["pos"][0]], starts[entity["pos"][1] - 1] + len(words[entity["pos"][1] - 1])]
            for entity in (record["h"], record["t"])
        ]
        image = data_dir / "img_org" / "test" / record["img_id"]
        crop_paths = [
            data_dir / "img_vg" / "test" / "crops" / name for name in crops.get(str(record["line_index"]), [])
        ]
        row = cached[record["line_index"]]
        assert row["id"] == record["id"]
        for form, make in forms.items():
            post = {"text": " ".join(words), "entity_spans": spans, "image": make(str(image))}
            post["object_crops"] = [make(str(path)) for path in crop_paths[: model.config.num_object_crops]]
            pixels = processor.image_processor(post["image"], object_crops=post["object_crops"])
            assert np.array_equal(pixels["pixel_values"][0].numpy(), row["pixel_values"]), (record["id"], form)
            assert np.array_equal(pixels["object_pixel_values"][0].numpy(), row["object_pixel_values"])
            answer = extractor(post, top_k=model.config.num_labels)
            scores = {item["label"]: item["score"] for item in answer}
            assert scores == pytest.approx(predicted[record["id"]], abs=1e-6), (record["id"], form)


@pytest.mark.parametrize("kind", sorted(hostile.CORRUPT))
def test_corrupt_files_of_other_formats_are_refused_naming_the_field(extractor, kind):
    """Corrupt QOI, AVIF, BLP, DDS and JPEG 2000 files raised IndexError, RuntimeError, BLPFormatError,
    NotImplementedError, OverflowError through the pipeline, without the field or the item."""
    post = {"text": TEXT, "subject": "Obama", "object": "Paris", "image": hostile.CORRUPT[kind]}
    name = kind.replace(" ", "")
    with pytest.raises(
        ValueError, match=rf"^item 1: `object_crops\[0\]`: cannot read the image: its format is {name};"
    ):
        extractor(
            [
                {**post, "image": random_image(np.random.default_rng(0))},
                {
                    **post,
                    "image": random_image(np.random.default_rng(0)),
                    "object_crops": [base64.b64encode(hostile.CORRUPT[kind]).decode()],
                },
            ]
        )
    with pytest.raises(ValueError, match=rf"^`image`: cannot read the image: its format is {name}; the accepted "):
        extractor(post)


ISOLATED_STRESS = (
    BLOCK_PROJECT_IMPORTS
    + """
import importlib.util, json, re, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

folder, requests_file, output_file = sys.argv[1:4]
sys.path.insert(0, folder)
spec = importlib.util.spec_from_file_location("handler", Path(folder) / "handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(folder)
requests = json.loads(Path(requests_file).read_text())
for _ in range(2):
    handler(requests[0])  # warm-up: a valid request


def status_kib(field):
    return int(re.search(rf"^{field}:\\s+(\\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1))


def timed(request):
    start = time.perf_counter()
    answer = handler(request)
    return answer, time.perf_counter() - start


Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current resident memory
before = status_kib("VmRSS")
with ThreadPoolExecutor(4) as pool:
    results = list(pool.map(timed, requests))
growth_mb = (status_kib("VmHWM") - before) / 1024
answers, seconds = zip(*results)
Path(output_file).write_text(json.dumps({"answers": answers, "seconds": seconds, "growth_mb": growth_mb}))
"""
)
STRESS_ERRORS = {
    "1. 9000x9000 1-bit PNG as `image` (14 KB)": "The image holds 81,000,000 pixels (`image` 9000x9000), more than "
    "max_image_pixels=24,385,536.",
    "1. 2 such PNGs as `object_crops`": "The images hold 162,003,072 pixels together (`image` 64x48, "
    "`object_crops[0]` 9000x9000, `object_crops[1]` 9000x9000), more than max_image_pixels=24,385,536.",
    "1. 30 such PNGs as `object_crops` (0.4 MB)": "30 object crops given, at most num_object_crops=2 allowed.",
    "1. truncated JPEG": "`image`: cannot read the image: image file is truncated",
    "2. text 'a' x 200,000, subject 'a' x 100,000": "The text has 200,000 characters, more than "
    "max_text_length=10,000.",
    "2. text 'a' x 10,000, subject 'a' x 5,000": "The subject entity 'aaaaaaaaaaaa...aaaaaaaaaaaaa' (5,000 "
    "characters) is absent from the text.",
    "3. data URL without a comma": "`image` is a data URL without base64 data: write `data:image/...;base64,<data>`.",
    "4. lone surrogate in the text": "The text holds a lone surrogate (U+D800) at character 8: a text must be valid "
    "Unicode.",
    "5. booleans in `entity_spans`": "The subject span must hold integers, got [False, True].",
    "7. batch [ok, ok, bad]": "inputs[2]: The object entity 'Rome' is absent from the text.",
    "8. bytes that are not an image": "`image`: cannot read the image: not a JPEG, PNG, WEBP or GIF file.",
    "valid inputs + unknown request key": "Unknown request keys ['options']; a request has `inputs` and optional "
    "`parameters`.",
    "progressive JPEG 6000x4000 + 20,000 empty scans": "`image`: refusing to decode the image: a JPEG of 20,000 "
    "scans, more than MAX_JPEG_SCANS=100.",
    "FLI animation of 65,535 BLACK chunks": "`image`: cannot read the image: its format is FLI; the accepted formats "
    "are JPEG, PNG, WEBP and GIF.",
    "ICO declaring 16x16, a 9459x9459 PNG inside": "`image`: cannot read the image: its format is ICO; the accepted "
    "formats are JPEG, PNG, WEBP and GIF.",
    "16x16 PNG, 70 zTXt chunks inflating to 1 MB each": "`image`: refusing to decode the image: a PNG of 70 "
    "compressed metadata chunks (iCCP, zTXt, iTXt), more than MAX_PNG_COMPRESSED_CHUNKS=16.",
    "1 x 24,385,536 palette PNG with transparency": "`image`: the image is 1x24385536 pixels, one side more than "
    "MAX_ASPECT_RATIO=20 times the other.",
    "corrupt QOI": "`image`: cannot read the image: its format is QOI; the accepted formats are JPEG, PNG, WEBP and "
    "GIF.",
}
"""The answer to each hostile request of `sample_inputs.requests.requests` (for a model with two crops) that the stress
sends; the others are answered as the pipeline answers them."""
STRESS_ANSWERED_IMAGES = ("16x16 PNG, EXIF directory of 65,535 entries pointing at 1 MB", "valid: 4938x4938 GIF")
"""The hostile image files of `sample_inputs.requests.hostile_images` that the stress sends and the handler answers;
it sends those of `STRESS_ERRORS` too."""
STRESS_MAX_GROWTH_MB = 300
"""Bound on the handler's peak memory growth over the whole stress run (four requests at a time). Without the bounds,
one bomb as `image` alone added 1.2 GB, three as crops 2.4 GB."""
STRESS_MAX_SECONDS = 5.0
"""Bound on the time of each request, waiting for the three others included (without the bounds, a bomb took 7 to
22 s)."""


@pytest.mark.slow
def test_the_handler_answers_a_stress_of_hostile_and_valid_requests_from_four_threads(saved, extractor, tmp_path):
    _, _, folder, _ = saved
    cases = requests(num_object_crops=2)
    assert set(STRESS_ERRORS) | set(STRESS_ANSWERED_IMAGES) < set(cases)
    images = set(hostile_images()) - set(STRESS_ERRORS) - set(STRESS_ANSWERED_IMAGES)
    cases = {name: request for name, request in cases.items() if name not in images}
    population = [*cases, *cases, *STRESS_ERRORS]
    names = ["valid post, 64x48 PNG"] + random.Random(0).sample(population, len(population))
    (tmp_path / "requests.json").write_text(json.dumps([cases[name] for name in names]))
    run_isolated(
        ISOLATED_STRESS, str(folder), str(tmp_path / "requests.json"), str(tmp_path / "out.json"), cwd=tmp_path
    )
    result = json.loads((tmp_path / "out.json").read_text())

    expected = {
        name: json.loads(json.dumps(extractor(cases[name]["inputs"]))) for name in set(cases) - set(STRESS_ERRORS)
    }
    for name, answer in zip(names, result["answers"], strict=True):
        if name in STRESS_ERRORS:
            assert answer == {"error": answer["error"]} and answer["error"].startswith(STRESS_ERRORS[name]), name
            assert answer["error"] == STRESS_ERRORS[name] or name == "1. truncated JPEG", answer
            assert len(answer["error"]) <= MAX_ERROR_LENGTH
        else:
            assert_same_relations(answer, expected[name], name)
    slowest = max(zip(result["seconds"], names, strict=True))
    print(f"stress: {len(names)} requests, peak growth {result['growth_mb']:.0f} MB, slowest {slowest}")
    assert result["growth_mb"] < STRESS_MAX_GROWTH_MB, result["growth_mb"]
    assert slowest[0] < STRESS_MAX_SECONDS, slowest


def test_the_limits_and_the_robustness_table_are_documented():
    for document in ("README.md", "model_card.md"):
        text = (ROOT / document).read_text(encoding="utf-8")
        limits = text[text.index("Limits\n") :]
        figures = [f"{MAX_IMAGE_PIXELS:,}", f"{MAX_TEXT_LENGTH:,}", f"at most {MAX_ERROR_LENGTH} characters"]
        figures += [f"{MAX_DECODE_BYTES // 2**20} MiB", f"{MAX_ASPECT_RATIO} times the other", "JPEG, PNG, WebP"]
        for figure in figures:
            assert figure in limits, (document, figure)
    assert ACCEPTED_FORMATS == ("JPEG", "PNG", "WEBP", "GIF")  # as the documents name them
    table = (ROOT / "docs" / "robustness.md").read_text(encoding="utf-8")
    for name in requests(num_object_crops=3):  # the main job's model
        assert f"| {name} |" in table, name
