"""A run's files written so that a kill or a full disk never leaves a half-written one in place, and the checks that
tell a damaged file from a complete one: a finished run records every file it wrote in a manifest ([`write_manifest`]),
checked whole before the run is taken as finished ([`manifest_problem`]).

[`write_text_atomic`], [`atomic_writer`] and [`atomic_folder`] write into a temporary sibling of their target
(`.{name}.partial-*` in the same folder, so the rename stays on one file system), flush it to disk and rename it into
place: a reader sees the old version or the new one, never a part. A failed write (a full disk) removes its sibling and
raises; a kill leaves at most the sibling, which the next write of the same target removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from safetensors import SafetensorError, safe_open

PARTIAL = ".partial-"
"""Marks the temporary siblings (`.{name}.partial-*`) that the writers rename into place."""
MAX_REASON_CHARS = 200
"""Longest error text quoted in a reason, so that a message about a damaged file stays short."""


def brief(error: BaseException) -> str:
    """`error`'s type and the first line of its message, at most [`MAX_REASON_CHARS`] characters."""
    message = str(error).strip()
    text = f"{type(error).__name__}: {message.splitlines()[0]}" if message else type(error).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _partial_name(target: Path) -> Path:
    """A fresh name for a temporary sibling of `target`."""
    return target.parent / f".{target.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}"


def _remove_partials(target: Path) -> None:
    """Removes the temporary siblings of `target` that a killed writer left."""
    for stale in target.parent.glob(f".{target.name}{PARTIAL}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flushes a file, or a folder's entries (not on Windows, which cannot open a folder), to disk."""
    if os.name == "nt" and path.is_dir():
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Yields a text file (UTF-8) to write `path`'s new content into, a piece at a time: a temporary sibling, flushed
    to disk and renamed into place when the block ends without an error, removed on an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_partials(path)
    partial = _partial_name(path)
    try:
        with partial.open("x", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` through a temporary sibling renamed into place; returns `path`."""
    with atomic_writer(path) as handle:
        handle.write(text)
    return Path(path)


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """
    Yields an empty temporary sibling of `folder` to write into. When the block ends without an error, its files
    are flushed to disk and it replaces `folder` (an old `folder` is removed); on an error it is removed and `folder`
    is left as it was.

    Replacing an old folder takes two renames (the old one aside, the new one into place): a kill between them leaves
    no `folder`, never a mixture of the two.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_partials(folder)
    partial = _partial_name(folder)
    partial.mkdir()
    try:
        yield partial
        for path in partial.rglob("*"):
            if path.is_file():
                _fsync(path)
        _fsync(partial)
        if folder.exists():
            old = _partial_name(folder)
            os.replace(folder, old)
            os.replace(partial, folder)
            shutil.rmtree(old)
        else:
            os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _fsync(folder.parent)


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as what its suffix says, as a phrase after its name ("is missing or empty",
    "is not valid JSON (...)", ...), or `None`. A `.json` file must hold a JSON object; a `.safetensors` file must have
    a readable header that matches its size (no tensor data is read); other files must exist and not be empty."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return "is missing or empty"
    if path.suffix == ".json":
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return f"is not valid JSON ({brief(error)})"
        if not isinstance(value, dict):
            return f"holds a JSON {type(value).__name__}, not an object"
    elif path.suffix == ".safetensors":
        try:
            with safe_open(path, framework="pt") as weights:
                weights.keys()
        except (SafetensorError, OSError) as error:
            return f"cannot be read as safetensors ({brief(error)})"
    return None


def folder_problem(folder: str | os.PathLike, required: tuple[str, ...]) -> str | None:
    """Why `folder` is not a complete saved folder, naming the file (`"<path> is not valid JSON (...)"`), or `None`:
    each of `required` must be there and every `.json` and `.safetensors` file of it must read ([`file_problem`])."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is missing"
    names = sorted({*required, *(path.name for path in folder.iterdir() if path.suffix in (".json", ".safetensors"))})
    for name in names:
        problem = file_problem(folder / name)
        if problem is not None:
            return f"{folder / name} {problem}"
    return None


MANIFEST_FILE = "run_manifest.json"
"""Names, sizes and SHA-256 hashes of every file a finished run wrote, relative to its folder; written last."""


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def write_manifest(folder: str | os.PathLike, names: list[str]) -> Path:
    """Records the size and hash of each of `names` (paths relative to `folder`, a sub-folder standing for all the
    files under it) in `folder/run_manifest.json`, written atomically; returns its path."""
    folder = Path(folder)
    files = {}
    for name in names:
        path = folder / name
        members = sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
        for member in members:
            files[member.relative_to(folder).as_posix()] = _file_record(member)
    return write_text_atomic(folder / MANIFEST_FILE, json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")


def manifest_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` does not hold every file its manifest records, whole (naming the first file that is missing,
    of another size or of other content), or `None`."""
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    problem = file_problem(manifest)
    if problem is not None:
        return f"{manifest} {problem}"
    files = json.loads(manifest.read_text(encoding="utf-8")).get("files")
    if not isinstance(files, dict) or not files:
        return f"{manifest} lists no files"
    for name, recorded in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if not isinstance(recorded, dict) or path.stat().st_size != recorded.get("size"):
            return f"{path} has {path.stat().st_size} bytes, {recorded.get('size')} when the run finished"
        if _file_record(path)["sha256"] != recorded.get("sha256"):
            return f"{path} differs from the file the run wrote (its SHA-256 changed)"
    return None


def manifest_files(folder: str | os.PathLike) -> list[str]:
    """The files `folder`'s manifest records (empty when it has none)."""
    manifest = Path(folder) / MANIFEST_FILE
    if file_problem(manifest) is not None:
        return []
    return sorted(json.loads(manifest.read_text(encoding="utf-8")).get("files", {}))
