"""The built-in sample's tiny encoders: reused when whole, built again with a warning naming the file when a kill or a
full disk damaged them, and written whole or not at all."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pytest
from _data_fixtures import build_small_sample
from interruptions import Killed, kill_at_replace
from transformers import AutoImageProcessor, AutoTokenizer, BertModel, ViTModel

from mre_data.builtin_encoders import (
    TEXT_ENCODER_FILES,
    VISION_ENCODER_FILES,
    build_builtin_text_encoder,
    build_builtin_vision_encoder,
)
from mre_data.mnre import folder_words
from training.run_files import PARTIAL, folder_problem


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return build_small_sample(tmp_path_factory.mktemp("small"))


def build(kind: str, folder: Path, data_dir: Path) -> Path:
    if kind == "text":
        return build_builtin_text_encoder(folder, partial(folder_words, data_dir))
    return build_builtin_vision_encoder(folder)


def loads(kind: str, folder: Path) -> None:
    if kind == "text":
        BertModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    else:
        ViTModel.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)


@pytest.mark.parametrize(
    ("kind", "name", "keep"),
    [
        ("text", "model.safetensors", 0.5),
        ("text", "tokenizer.json", 0.5),
        ("text", "config.json", 0.0),
        ("vision", "model.safetensors", 0.9),
        ("vision", "preprocessor_config.json", 0.5),
    ],
)
def test_damaged_encoder_is_built_again_with_a_warning(data_dir, tmp_path, caplog, kind, name, keep):
    folder = build(kind, tmp_path / kind, data_dir)
    required = TEXT_ENCODER_FILES if kind == "text" else VISION_ENCODER_FILES
    assert sorted(path.name for path in folder.iterdir()) == sorted(required)
    whole = {path.name: path.read_bytes() for path in folder.iterdir()}
    with caplog.at_level(logging.WARNING, logger="mre_data.builtin_encoders"):
        assert build(kind, folder, data_dir) == folder  # reused, untouched
    assert caplog.messages == [] and {path.name: path.read_bytes() for path in folder.iterdir()} == whole

    damaged = folder / name
    damaged.write_bytes(whole[name][: int(len(whole[name]) * keep)])
    with caplog.at_level(logging.WARNING, logger="mre_data.builtin_encoders"):
        build(kind, folder, data_dir)
    (message,) = caplog.messages
    assert message.startswith(f"{damaged} ") and message.endswith(": building the built-in encoder again")
    assert folder_problem(folder, required) is None
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == whole  # the same seed: the same encoder
    loads(kind, folder)


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_encoder_is_written_whole_or_not_at_all(data_dir, tmp_path, monkeypatch, kind):
    """Killed just before the finished folder is renamed into place: no encoder folder (so none is taken for whole),
    and the next build removes what the killed one left."""
    folder = tmp_path / kind
    armed = kill_at_replace(monkeypatch, folder)
    with pytest.raises(Killed):
        build(kind, folder, data_dir)
    assert not folder.exists()
    armed[0] = False
    build(kind, folder, data_dir)
    loads(kind, folder)
    assert [path.name for path in tmp_path.iterdir() if PARTIAL in path.name] == []
