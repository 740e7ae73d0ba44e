"""The model folder of a run and its way to the Hub: what a model repository holds (weights, config, remote code,
processor files, model card) and nothing specific to the machine or the run, and the upload of exactly those files
(not a cache that appears in the folder later). The card itself is rendered by `training.model_card`."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from processing.object_detection import DETECTOR_FOLDER

from .run_files import atomic_folder, write_text_atomic

MODEL_FOLDER = "model"
"""Sub-folder of a run's `output_dir` holding the model repository (what `--push_to_hub` uploads); the rest of
`output_dir` is the run: checkpoints, trainer state, results, predictions, figures."""
SAMPLE_RUN_DIR = Path("outputs") / "hvformer-sample"
"""Where the main job (`python run_mre.py`, the built-in sample) writes its run, relative to where it is started."""
MACHINE_SPECIFIC_KEYS: tuple[str, ...] = ("is_local", "local_files_only", "cache_dir", "token", "_name_or_path")
"""Keys that `from_pretrained` records in saved tokenizer / processor configs but that only describe where and how
files were loaded on this machine."""
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]|[A-Za-z0-9][\w.-]*[A-Za-z0-9]")
"""A Hub repository id: `name` or `owner/name`."""


def hub_ids(names: Sequence[str]) -> list[str]:
    """The names that are Hub repository ids, not local paths (existing folders are local, whatever their name)."""
    return [name for name in names if HUB_ID.fullmatch(name) and not Path(name).exists()]


def _drop_machine_specific_keys(path: Path) -> None:
    """Removes [`MACHINE_SPECIFIC_KEYS`] from a saved JSON config, at any depth."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items() if key not in MACHINE_SPECIFIC_KEYS}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    path.write_text(json.dumps(clean(json.loads(path.read_text(encoding="utf-8"))), indent=2) + "\n", encoding="utf-8")


def export_model_folder(model: Any, processor: Any, folder: str | os.PathLike, card: str) -> Path:
    """
    Writes a model repository to `folder`: `config.json` (with `auto_map` and `custom_pipelines`), `model.safetensors`,
    the remote code, the processor files and the model card as `README.md`. The folder is written whole beside
    `folder` and then renamed into place ([`atomic_folder`]), replacing an old one: a kill or a full disk never leaves
    a part of it.

    The folder holds no pickle, no checkpoint and nothing that describes this machine: the encoders' `_name_or_path`
    is kept only when it is a Hub id, and the keys `from_pretrained` records about local loading
    ([`MACHINE_SPECIFIC_KEYS`]) are dropped from the tokenizer and processor configs.
    """
    for sub_config in (model.config.text_config, model.config.vision_config):
        sub_config._name_or_path = next(iter(hub_ids([sub_config._name_or_path or ""])), "")
    with atomic_folder(folder) as partial:
        model.save_pretrained(partial)
        processor.save_pretrained(partial)
        for name in (
            "tokenizer_config.json",
            "processor_config.json",
            "preprocessor_config.json",
            f"{DETECTOR_FOLDER}/preprocessor_config.json",
        ):
            if (partial / name).is_file():
                _drop_machine_specific_keys(partial / name)
        (partial / "README.md").write_text(card, encoding="utf-8")
    return Path(folder)


def model_repository_files(folder: str | os.PathLike) -> list[str]:
    """The files of `folder` that belong to the model repository: those [`export_model_folder`] writes, at the top
    level and in the object detector's sub-folder (`object_detector/`, as relative paths). Other sub-folders (a
    `__pycache__/` left by importing `handler.py` there, caches), hidden files and compiled Python are not part of
    it."""
    folder = Path(folder)
    paths = [path for path in folder.iterdir() if path.is_file()]
    if (folder / DETECTOR_FOLDER).is_dir():
        paths += [path for path in (folder / DETECTOR_FOLDER).iterdir() if path.is_file()]
    return sorted(
        path.relative_to(folder).as_posix()
        for path in paths
        if not path.name.startswith(".") and path.suffix != ".pyc"
    )


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    card: Callable[[str], str] | None = None,
) -> str:
    """Creates the Hub repository `repo_id` (if needed) and uploads the [`model_repository_files`] of `folder` (named
    one by one in `allow_patterns`); returns the full repo id.

    `card`, when given, renders the model card for the full repo id (`owner/name`, known once the repository exists);
    it is written as the folder's `README.md` (atomically) before the upload."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if card is not None:
        write_text_atomic(Path(folder) / "README.md", card(repo_id))
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        allow_patterns=[glob.escape(name) for name in model_repository_files(folder)],
        commit_message="Upload HVFormer model, processor, remote code and model card",
    )
    return repo_id
