"""The demo's `predict` (`app.py`) answers every refused input with a `gr.Error` holding the message, within the
pipeline's limits; the page itself is tested in a browser by `test_app.py`."""

from __future__ import annotations

import pytest
from _data_fixtures import make_processor
from PIL import Image
from tiny_models import tiny_model_for, tiny_text_config

from modeling_hvformer.handler import MAX_ERROR_LENGTH
from mre_data.sample_data import SAMPLE_RELATIONS
from sample_inputs.hostile_images import blank_png

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


class RecordingDemo:
    """Stands for the Gradio page: records how it is launched."""

    def __init__(self) -> None:
        self.launched: dict = {}

    def launch(self, **kwargs) -> None:
        self.launched = kwargs


@pytest.mark.parametrize(
    ("environ", "argv", "host", "port"),
    [
        ({}, [], "127.0.0.1", 7860),
        ({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}, [], "0.0.0.0", 7861),
        ({"GRADIO_SERVER_NAME": "0.0.0.0"}, ["--host", "127.0.0.2", "--port", "9000"], "127.0.0.2", 9000),
    ],
)
def test_the_demo_serves_on_the_host_and_port_it_is_given(model_and_processor, monkeypatch, environ, argv, host, port):
    """`--host` / `--port`, else Gradio's (and a Space's) `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`, else
    127.0.0.1:7860."""
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    demo = RecordingDemo()
    monkeypatch.setattr(app, "load", lambda *args, **kwargs: model_and_processor)
    monkeypatch.setattr(app, "build_demo", lambda model, processor: demo)
    app.main(["--model", "some/model", *argv])
    assert (demo.launched["server_name"], demo.launched["server_port"]) == (host, port)


def test_the_answer_is_a_named_api_endpoint(model_and_processor):
    demo = app.build_demo(*model_and_processor)
    names = [dependency.get("api_name") for dependency in demo.config["dependencies"]]
    assert "predict" in names


@pytest.mark.slow
def test_a_space_installing_requirements_gets_every_package_the_page_imports():
    """A Space installs `requirements.txt` (this project with its demo extra), then runs app.py: every distribution
    that the project's modules loaded by `import app` import is among what that installs (the project's
    requirements, the extra's, and theirs)."""
    import ast
    import importlib.metadata as metadata
    import subprocess
    import sys
    from pathlib import Path

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    lines = [line.strip() for line in (root / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == [".[demo]"]
    probe = "import sys, app; print('\\n'.join(str(getattr(m, '__file__', '')) for m in list(sys.modules.values())))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=300, check=True
    )
    loaded = [Path(name) for name in result.stdout.split() if name.endswith(".py") and Path(name).is_absolute()]
    own_files = {path for path in loaded if path.is_relative_to(root) and ".venv" not in path.parts}
    imported = set()
    for path in own_files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    providers = metadata.packages_distributions()
    distributions = {dist.lower().replace("_", "-") for module in imported for dist in providers.get(module, [])}

    def closure(requirements: list[str], extras: set[str]) -> set[str]:
        found: set[str] = set()
        pending = [(text, extras) for text in requirements]
        while pending:
            text, active = pending.pop()
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in active] or [{"extra": ""}]
            if requirement.marker is not None and not any(requirement.marker.evaluate(e) for e in environments):
                continue
            name = requirement.name.lower().replace("_", "-")
            if name in found:
                continue
            found.add(name)
            try:
                pending += [(sub, set(requirement.extras)) for sub in metadata.requires(name) or []]
            except metadata.PackageNotFoundError:
                continue
        return found

    assert {"gradio", "torch", "transformers", "matplotlib"} <= distributions  # the probe saw the page's imports
    installed = closure(metadata.requires("hvformer"), {"demo"}) | {"hvformer"}
    missing = sorted(distributions - installed)
    assert missing == [], f"app.py imports distributions a Space would not install: {missing}"
