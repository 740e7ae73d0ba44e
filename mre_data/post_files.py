"""A user's own posts from plain files (JSON Lines, CSV or Parquet, as `run_glue.py --train_file` takes them), with any
relation schema: read and validated row by row, every error naming the file, the line (a Parquet file's row) and the
column. [`load_post_files`] turns them into the same cached splits as an MNRE folder.

One row a post:

| column | |
|---|---|
| `text` | the post's text |
| `subject`, `object` | the two entities, as written in the text (each must occur there once, or have its span) |
| `subject_span`, `object_span` | optional `[start, end)` character offsets into `text` (an entity found twice) |
| `image` | the post's picture: a path relative to the file's folder (it must stay inside it), or absolute |
| `object_crops` | optional list of object-crop paths (same rules); a post without has none (`object_mask` 0) |
| `relation` | the relation (a string); a file without this column is unlabelled (prediction only) |
| `id` | optional; the prediction's id (as a string). Default: the 0-based row number |

In a CSV file the spans and `object_crops` are JSON lists (`"[3, 8]"`, `"[""a.jpg"", ""b.jpg""]"`) and an empty cell
is an absent value. Absolute image paths are taken as the user wrote them (the file is theirs); a relative one that
leads outside the file's folder (through `..` or a symbolic link) is refused.

[`load_post_files`]: mre_data.mnre_dataset.load_post_files
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet

from processing.entity_search import find_occurrences
from processing.sample_errors import short_repr

from .mnre import MNREFormatError, _is_int

logger = logging.getLogger(__name__)

POST_COLUMNS: tuple[str, ...] = (
    "text",
    "subject",
    "object",
    "subject_span",
    "object_span",
    "image",
    "object_crops",
    "relation",
    "id",
)
"""Every column a post file may have; the others are ignored."""
REQUIRED_POST_COLUMNS: tuple[str, ...] = ("text", "subject", "object", "image")
"""The columns every post needs (`relation` too, in a file to train or evaluate on)."""
POST_FILE_FORMATS: dict[str, str] = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""The file suffixes a post file may have, with their format."""
_CSV_LIST_COLUMNS: tuple[str, ...] = ("subject_span", "object_span", "object_crops")


class PostFormatError(MNREFormatError):
    """A post file, or a row of one, that does not have the expected form; the message names the file, the line (a
    Parquet file's 0-based row) and the column."""


def post_file_format(path: str | os.PathLike) -> str:
    """`"json"`, `"csv"` or `"parquet"` from the file's suffix; a [`PostFormatError`] for another suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in POST_FILE_FORMATS:
        raise PostFormatError(
            f"{path}: a post file must be JSON Lines (.jsonl, .json), CSV (.csv) or Parquet (.parquet), got "
            f"{suffix or 'no suffix'!r}"
        )
    return POST_FILE_FORMATS[suffix]


def _json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a JSON Lines file, read a line at a time (a corpus need not fit in memory). Lines split where
    `open(path).readlines()` splits them (LF, CR LF or CR); a leading BOM is dropped; blank lines may only end the
    file; a byte that is not UTF-8 is an error naming its line and column."""
    number, blank_since = 0, None
    with open(path, "rb") as file:
        for chunk in file:
            if number == 0:
                chunk = chunk.removeprefix(codecs.BOM_UTF8)
            for raw in chunk.removesuffix(b"\n").removesuffix(b"\r").split(b"\r"):
                number += 1
                where = f"{path}:{number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise PostFormatError(
                        f"{where}: line: not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                        f"{len(raw[: error.start].decode('utf-8', errors='replace')) + 1}: {error.reason})"
                    ) from None
                if not line.strip():
                    blank_since = blank_since or number
                    continue
                if blank_since is not None:
                    raise PostFormatError(f"{path}:{blank_since}: blank line before the end of the file")
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PostFormatError(
                        f"{where}: not a JSON object ({error.msg} at column {error.colno})"
                    ) from None
                if not isinstance(row, dict):
                    raise PostFormatError(f"{where}: expected a JSON object, got a {type(row).__name__}")
                yield where, row


def _csv_cell(value: str, column: str, where: str) -> Any:
    """A CSV cell as the value a JSON file would hold: `None` for an empty cell, a JSON list for the list columns."""
    if value == "":
        return None
    if column not in _CSV_LIST_COLUMNS:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise PostFormatError(
            f"{where}: column '{column}': expected a JSON list (e.g. [3, 8]), got {short_repr(value)}"
        ) from None


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None:
            return
        line = reader.line_num + 1  # a quoted cell may span lines: a row is named by the line it starts on
        for raw in reader:
            where = f"{path}:{line}"
            if None in raw:
                raise PostFormatError(f"{where}: more cells than the {len(reader.fieldnames)} columns of the header")
            yield where, {column: _csv_cell(value or "", column, where) for column, value in raw.items()}
            line = reader.line_num + 1


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        batches = pyarrow.parquet.ParquetFile(path).iter_batches()
        index = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield f"{path}[row {index}]", row
                index += 1
    except (OSError, pyarrow.ArrowException) as error:
        raise PostFormatError(f"{path}: not a readable Parquet file ({error})") from None


def iter_post_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a post file one at a time, each with where it is (`file:line`, `file[row N]` for Parquet), read
    as they are asked for: a corpus larger than memory goes through in one pass."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"post file {path} not found")
    reader = {"json": _json_rows, "csv": _csv_rows, "parquet": _parquet_rows}[post_file_format(path)]
    return reader(path)


def read_post_rows(path: str | os.PathLike) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """The columns and the rows of a post file, each row with where it is (`file:line`, `file[row N]` for Parquet)."""
    rows = list(iter_post_rows(path))
    if not rows:
        raise PostFormatError(f"{path}: no posts")
    columns = list(dict.fromkeys(column for _, row in rows for column in row))
    return columns, rows


def _string(row: Mapping[str, Any], column: str, where: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise PostFormatError(f"{where}: column '{column}' must be a non-empty string, got {short_repr(value)}")
    return value


def _entity_span(text: str, row: Mapping[str, Any], role: str, where: str) -> list[int]:
    """The `[start, end)` character span of the `role` entity: its span column checked against the text, or its single
    occurrence in the text."""
    name = _string(row, role, where)
    span = row.get(f"{role}_span")
    if span is None:
        starts = find_occurrences(text, name)
        if not starts:
            raise PostFormatError(f"{where}: column '{role}': {short_repr(name)} is absent from the text")
        if len(starts) > 1:
            raise PostFormatError(
                f"{where}: column '{role}': {short_repr(name)} occurs {len(starts)} times in the text (at "
                f"{starts[:5]}); give column '{role}_span' = [start, end)"
            )
        return [starts[0], starts[0] + len(name)]
    column = f"{role}_span"
    if not (isinstance(span, list | tuple) and len(span) == 2 and all(_is_int(bound) for bound in span)):
        raise PostFormatError(f"{where}: column '{column}' must be [start, end] character offsets, got {span!r:.80}")
    start, end = span
    if not 0 <= start < end <= len(text):
        raise PostFormatError(
            f"{where}: column '{column}' = {list(span)} is out of range: not a non-empty [start, end) range within "
            f"the {len(text)} characters of the text"
        )
    if text[start:end] != name:
        raise PostFormatError(
            f"{where}: column '{column}' = {list(span)} covers {short_repr(text[start:end])}, not the {role} "
            f"{short_repr(name)}"
        )
    return [start, end]


def resolve_post_path(value: Any, folder: Path, column: str, where: str) -> str:
    """The file a post's `image` (or crop) names: absolute as written, or relative to `folder`, the post file's
    folder, which it must not leave (through `..` or a symbolic link)."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise PostFormatError(f"{where}: column '{column}' must be a file path, got {short_repr(value)}")
    path = Path(value)
    if path.is_absolute():
        return str(path)
    resolved = (folder / path).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise PostFormatError(
            f"{where}: column '{column}': {short_repr(value)} leads to {resolved}, outside the file's folder {folder}"
        )
    return str(folder / path)


def parse_post(
    row: Mapping[str, Any], where: str, index: int, folder: Path | None, labelled: bool, num_object_crops: int
) -> dict[str, Any]:
    """One validated post as a record of the cached splits: `id`, `line_index` (the row index), `location` (`where`),
    `text`, `h` / `t` (`{"name", "pos"}`, character spans), `img_id` (the `image` cell), `relation` (when
    `labelled`), `image_path` and `crop_paths` (the first `num_object_crops` crops). With `folder` `None` the row is a
    dataset's, whose `image` and `object_crops` embed their images: `image_path` and `crop_paths` then only name them
    (`where` and the column) in reports."""
    for column in (*REQUIRED_POST_COLUMNS, *(["relation"] * labelled)):
        if row.get(column) is None:
            raise PostFormatError(f"{where}: column '{column}' is missing")
    text = _string(row, "text", where)
    subject, obj = (_entity_span(text, row, role, where) for role in ("subject", "object"))
    crops = row.get("object_crops")
    if crops is None:
        crops = []
    if not isinstance(crops, list | tuple):
        raise PostFormatError(f"{where}: column 'object_crops' must be a list of images, got {crops!r:.80}")
    example_id = row.get("id")
    if example_id is not None and not (isinstance(example_id, str) and example_id or _is_int(example_id)):
        raise PostFormatError(f"{where}: column 'id' must be a non-empty string or an integer, got {example_id!r:.80}")
    record = {
        "id": str(example_id) if example_id is not None else str(index),
        "line_index": index,
        "location": where,
        "text": text,
        "h": {"name": row["subject"], "pos": subject},
        "t": {"name": row["object"], "pos": obj},
        "img_id": row["image"] if isinstance(row["image"], str) else "",
    }
    if folder is None:
        record["image_path"] = f"{where} image"
        record["crop_paths"] = [f"{where} object_crops[{slot}]" for slot in range(min(len(crops), num_object_crops))]
    else:
        record["image_path"] = resolve_post_path(row["image"], folder, "image", where)
        record["crop_paths"] = [
            resolve_post_path(crop, folder, f"object_crops[{slot}]", where)
            for slot, crop in enumerate(crops[:num_object_crops])
        ]
    if labelled:
        record["relation"] = _string(row, "relation", where)
    return record


def read_post_file(path: str | os.PathLike, num_object_crops: int, labelled: bool | None = None) -> list[dict]:
    """
    Reads and validates a post file (see the module docstring for its columns) into records ([`parse_post`]).

    Args:
        path: a `.jsonl` / `.json` (JSON Lines), `.csv` or `.parquet` file.
        num_object_crops: how many of a post's `object_crops` are used (the first ones; more are logged).
        labelled: whether every row needs a `relation`; by default, whether the file has a `relation` column.

    Raises:
        [`PostFormatError`]: a row that lacks a column or holds a wrong value (an empty entity, an entity absent from
        the text or found there more than once, a span out of range or covering other words, an image path that
        leaves the file's folder), or two rows with the same `id`; the message names the file, the line and the
        column. `FileNotFoundError`: no such file.
    """
    path = Path(path)
    columns, rows = read_post_rows(path)
    missing = [column for column in REQUIRED_POST_COLUMNS if column not in columns]
    if missing:
        raise PostFormatError(f"{path}: missing column(s) {missing}; a post file has {list(POST_COLUMNS)}")
    if labelled is None:
        labelled = "relation" in columns
    return parse_posts(rows, path.parent, labelled, num_object_crops, str(path))


def parse_posts(
    rows: Sequence[tuple[str, Mapping[str, Any]]],
    folder: Path | None,
    labelled: bool,
    num_object_crops: int,
    source: str,
) -> list[dict]:
    """The records of `rows` (each with where it is) validated by [`parse_post`], their ids distinct; `source` names
    them in the log."""
    records, first_row, extra_crops = [], {}, 0
    for index, (where, row) in enumerate(rows):
        record = parse_post(row, where, index, folder, labelled, num_object_crops)
        extra_crops += max(0, len(row.get("object_crops") or []) - num_object_crops)
        if record["id"] in first_row:
            raise PostFormatError(
                f"{where}: column 'id': {record['id']!r:.80} is the id of {first_row[record['id']]} too"
            )
        first_row[record["id"]] = where
        records.append(record)
    if extra_crops and num_object_crops:
        logger.warning(
            "%s: %d object crops beyond the first %d of their posts are not used",
            source,
            extra_crops,
            num_object_crops,
        )
    return records


def post_relations(records: Sequence[Mapping[str, Any]], none_label: str | None, source: str) -> list[str]:
    """The relation labels of training posts in id order: `none_label` first when given, then the others sorted (a
    stable order, whatever the order of the rows). A `none_label` that no post has is an error."""
    relations = {record["relation"] for record in records}
    if none_label is not None and none_label not in relations:
        raise PostFormatError(
            f"{source}: --none_label {none_label!r} is not a relation of the training posts "
            f"({', '.join(sorted(relations))[:200]})"
        )
    return ([none_label] if none_label is not None else []) + sorted(relations - {none_label})


def post_words(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The whitespace-separated words of the posts' texts, in order (a built-in text encoder's vocabulary)."""
    return [word for record in records for word in record["text"].split()]
