"""A run's files written atomically (a full disk or a kill never leaves half a file in place) and damaged files told
from complete ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from interruptions import disk_full
from safetensors.torch import save_file

from training import run_files
from training.run_files import atomic_folder, brief, file_problem, folder_problem, write_text_atomic


def partials(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if run_files.PARTIAL in path.name)


def test_write_text_atomic_replaces_the_file(tmp_path):
    path = tmp_path / "run" / "all_results.json"
    assert write_text_atomic(path, '{"f1": 0.5}\n') == path
    write_text_atomic(path, '{"f1": 0.75, "é": 1}\n')
    assert json.loads(path.read_text(encoding="utf-8")) == {"f1": 0.75, "é": 1}
    assert partials(path.parent) == []


def test_a_full_disk_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "all_results.json", '{"f1": 0.5}\n')
    monkeypatch.setattr(run_files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        write_text_atomic(path, '{"f1": 0.75}\n')
    assert path.read_text() == '{"f1": 0.5}\n' and partials(tmp_path) == []


def test_what_a_killed_writer_left_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "predictions.jsonl"
    (tmp_path / f".predictions.jsonl{run_files.PARTIAL}4242-00ff").write_text('{"id": "test-0"')
    (tmp_path / f".model{run_files.PARTIAL}4242-00ff").mkdir()  # another target's: left alone
    write_text_atomic(path, "{}\n")
    assert partials(tmp_path) == [f".model{run_files.PARTIAL}4242-00ff"]
    with atomic_folder(tmp_path / "model") as partial:
        (partial / "config.json").write_text("{}")
    assert partials(tmp_path) == [] and (tmp_path / "model" / "config.json").read_text() == "{}"


def test_atomic_folder_replaces_an_old_folder_whole(tmp_path):
    folder = tmp_path / "model"
    with atomic_folder(folder) as partial:
        assert partial.parent == tmp_path and partial.name.startswith(f".model{run_files.PARTIAL}")
        (partial / "config.json").write_text('{"old": true}')
        (partial / "only_in_the_old.json").write_text("{}")
    with atomic_folder(folder) as partial:
        (partial / "config.json").write_text('{"old": false}')
    assert sorted(path.name for path in folder.iterdir()) == ["config.json"]
    assert json.loads((folder / "config.json").read_text()) == {"old": False} and partials(tmp_path) == []


def test_a_failed_folder_write_leaves_the_old_folder(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    with atomic_folder(folder) as partial:
        (partial / "config.json").write_text('{"old": true}')
    with pytest.raises(RuntimeError, match="serialisation failed"), atomic_folder(folder) as partial:
        (partial / "config.json").write_text('{"old": false}')
        raise RuntimeError("serialisation failed")
    monkeypatch.setattr(run_files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"), atomic_folder(folder) as partial:
        (partial / "config.json").write_text('{"old": false}')
    assert json.loads((folder / "config.json").read_text()) == {"old": True} and partials(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("all_results.json", None, "is missing or empty"),
        ("all_results.json", b"", "is missing or empty"),
        ("all_results.json", b'{"eval_f1": 0.5', "is not valid JSON (JSONDecodeError: Expecting ',' delimiter"),
        ("all_results.json", b"[0.5]", "holds a JSON list, not an object"),
        ("config.json", b'{"a": "\xff"}', "is not valid JSON (UnicodeDecodeError: 'utf-8' codec can't decode"),
        (
            "model.safetensors",
            "truncated",
            "cannot be read as safetensors (SafetensorError: Error while deserializing",
        ),
        ("optimizer.pt", b"\x80", None),  # neither JSON nor safetensors: only there and not empty
    ],
)
def test_file_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    if content == "truncated":
        save_file({"weight": torch.ones(64)}, path)
        path.write_bytes(path.read_bytes()[:-100])
    elif content is not None:
        path.write_bytes(content)
    if problem is None:
        assert file_problem(path) is None
    else:
        assert file_problem(path).startswith(problem)


def test_folder_problem_names_the_file(tmp_path):
    folder = tmp_path / "model"
    assert folder_problem(folder, ("config.json",)) == f"{folder} is missing"
    folder.mkdir()
    save_file({"weight": torch.ones(4)}, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text('{"truncated": ')
    required = ("config.json", "model.safetensors")
    assert folder_problem(folder, required).startswith(f"{folder / 'tokenizer.json'} is not valid JSON")
    (folder / "tokenizer.json").write_text("{}")
    assert folder_problem(folder, required) is None
    assert folder_problem(folder, (*required, "README.md")) == f"{folder / 'README.md'} is missing or empty"


def test_brief_keeps_reasons_short():
    assert brief(ValueError("first line\nsecond line")) == "ValueError: first line"
    long = brief(RuntimeError("x" * 10_000))
    assert len(long) == run_files.MAX_REASON_CHARS and long.endswith("...")
    assert brief(EOFError()) == "EOFError"


def test_written_files_keep_the_usual_permissions(tmp_path):
    """The temporary file is created as `open` creates files (mode 0o666 less the umask), not 0o600."""
    umask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "all_results.json", "{}")
        with atomic_folder(tmp_path / "model") as partial:
            (partial / "config.json").write_text("{}")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 and (tmp_path / "model").stat().st_mode & 0o777 == 0o755
