"""The demo's `predict` (`app.py`) answers every refused input with a `gr.Error` holding the message, within the
pipeline's limits; the page itself is tested in a browser by `test_app.py`."""

from __future__ import annotations

import pytest
from _data_fixtures import make_processor
from PIL import Image
from tiny_models import tiny_model_for, tiny_text_config

from benchmarks.robustness import blank_png
from modeling_hvformer.handler import MAX_ERROR_LENGTH
from processing.sample_data import SAMPLE_RELATIONS

gr = pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
app = pytest.importorskip("app")

TEXT = "Photo : Alden with Corra Vane"


@pytest.fixture(scope="module")
def model_and_processor():
    processor = make_processor(tiny_text_config().max_position_embeddings, 2, ["None", *SAMPLE_RELATIONS])
    return tiny_model_for(processor).eval(), processor


@pytest.fixture
def picture(tmp_path):
    Image.new("RGB", (96, 80), (90, 120, 160)).save(tmp_path / "picture.png")
    return str(tmp_path / "picture.png")


def refusal(model_and_processor, image, text=TEXT, subject="Alden", obj="Corra Vane") -> str:
    with pytest.raises(gr.Error) as caught:
        app.predict(*model_and_processor, image, text, subject, obj)
    return caught.value.message


def test_the_demo_answers_a_valid_post(model_and_processor, picture):
    probabilities, relation, rows, figure = app.predict(*model_and_processor, picture, TEXT, "Alden", "Corra Vane")
    assert relation == max(probabilities, key=probabilities.get)
    assert [row[0] for row in rows] == ["text only", "ViT level 0", "ViT level 1", "ViT level 2"]
    assert figure.ndim == 3 and figure.shape[2] == 3


def test_the_demo_shows_a_message_for_every_refused_input(model_and_processor, picture, tmp_path):
    (tmp_path / "bomb.png").write_bytes(blank_png(9000, 9000))
    (tmp_path / "text.png").write_text("not an image")
    assert refusal(model_and_processor, str(tmp_path / "bomb.png")) == (
        "The image holds 81,000,000 pixels (`image` 9000x9000), more than max_image_pixels=24,385,536."
    )
    assert refusal(model_and_processor, str(tmp_path / "text.png")) == (
        f"`image`: cannot read the image {str(tmp_path / 'text.png')!r}: not a JPEG, PNG, WEBP or GIF file."
    )
    assert refusal(model_and_processor, str(tmp_path / "missing.png")) == (
        f"`image`: cannot read the image {str(tmp_path / 'missing.png')!r}: No such file or directory."
    )
    assert refusal(model_and_processor, picture, text="Photo : Alden \ud800 with Corra Vane") == (
        "The text holds a lone surrogate (U+D800) at character 14: a text must be valid Unicode."
    )
    assert refusal(model_and_processor, picture, text="a " * 100_000, subject="a", obj="a a") == (
        "The text has 200,000 characters, more than max_text_length=10,000."
    )
    assert refusal(model_and_processor, picture, subject="Quillon") == (
        "The subject entity 'Quillon' is absent from the text."
    )
    assert refusal(model_and_processor, None) == "Please give a picture."


def test_an_unexpected_failure_is_named_too(model_and_processor, picture, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("out of memory " * 100)

    monkeypatch.setattr(app, "explain", failing)
    message = refusal(model_and_processor, picture)
    assert message.startswith("RuntimeError while predicting: out of memory out of memory")
    assert len(message) == MAX_ERROR_LENGTH and message.endswith("...")
