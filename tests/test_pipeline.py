"""The multimodal-relation-extraction pipeline and the Inference Endpoints handler, in isolated processes."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated
from PIL import Image
from test_processor import build, matching_config, random_image

from modeling_hvformer import HVFormerForRelationExtraction
from modeling_hvformer.pipeline_hvformer import HVFormerRelationExtractionPipeline, decode_image

TEXT = "Barack Obama visited Paris"


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
        weights = model(**encoding).expert_weights[0, encoding["marker_positions"][0]]
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
        ({"text": TEXT, "subject": "Obama", "object": "Rome", "image": "IMAGE"}, "the object entity 'Rome' is absent"),
        (
            {"text": TEXT, "subject": "obama", "object": "Paris", "image": "IMAGE"},
            "the subject entity 'obama' is absent",
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
            "`image` does not hold a readable image",
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
def test_decompression_bombs_are_refused(monkeypatch, side):
    """An image over PIL's pixel limit (a warning up to twice the limit, an error above) is refused, not decoded."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="`image` is refused: decompression bomb"):
        decode_image(base64.b64encode(buffer.getvalue()).decode(), "image", allow_paths=False)


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
    assert answers[3] == {"error": "Sample 0: the subject entity 'Angela Merkel' is absent from the text."}
    assert answers[4] == {"error": "`inputs.image` must hold base64-encoded images (strings)."}
    assert answers[5] == {
        "error": "Unknown parameters ['device']; the parameters are ['top_k', 'return_expert_weights']."
    }
    assert answers[6] == {"error": "Unknown request keys ['input']; a request has `inputs` and optional `parameters`."}
    assert answers[7] == {"error": "The request must be a JSON object with `inputs`, got list."}
