"""Reading MNRE (multimodal neural relation extraction, Zheng et al. 2021) files: the text lines, validated, with
errors naming `file:line` and the field; the object-crop mappings; where each split's files are; and the same
records from a dataset in the Hub layout that `python -m mre_data.export_mnre` writes.

Layout (the one of the MNRE and MKGformer/HVPNeT downloads; [`build_sample_dataset`] writes the same one)::

    data_dir/
        mnre_{split}.txt            one Python dict literal per line (also found as `ours_{split}.txt`, and inside
                                    `data_dir/txt/` or `data_dir/mnre_txt/`)
        mre_{split}_dict.pth        optional object crops: {line index or img_id: [crop file name, ...]} (`.json` too;
                                    the val split is also found as `mre_dev_dict.*`, the reference code's name)
        img_org/{split}/<img_id>    the post's image
        img_vg/{split}/crops/<crop> visual-grounding object crops

A line looks like (single quotes: a Python literal, not JSON)::

    {'token': ['RT', '@news', ':', 'Corra', 'Vane', "'s", 'visit', 'to', 'Harbor', 'Square'],
     'h': {'name': 'Corra Vane', 'pos': [3, 5]}, 't': {'name': 'Harbor Square', 'pos': [8, 10]},
     'img_id': 'post_0001.jpg', 'relation': '/per/misc/present_in'}

(an invented post in MNRE's format).

`pos` is a `[start, end)` range of word indices. The built-in sample dataset adds a `kind` field (a string).
[`load_mnre`] turns the splits into cached `datasets`.

[`build_sample_dataset`]: mre_data.sample_data.build_sample_dataset
[`load_mnre`]: mre_data.mnre_dataset.load_mnre
"""

from __future__ import annotations

import ast
import codecs
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from modeling_hvformer.configuration_hvformer import MNRE_RELATIONS

from .sample_data import SAMPLE_DATASET_NAME, declared_relations

logger = logging.getLogger(__name__)

MNRE_SPLITS: tuple[str, ...] = ("train", "val", "test")
HUB_SPLITS: dict[str, str] = {"train": "train", "val": "validation", "test": "test"}
"""The name of each MNRE split in a Hub dataset repository (`python -m mre_data.export_mnre`)."""
HUB_COLUMNS: tuple[str, ...] = ("token", "h", "t", "relation", "image")
"""The columns every split of such a repository has (besides `id`, `img_id`, `object_crops` and `kind`)."""
_REQUIRED_FIELDS: tuple[str, ...] = ("token", "h", "t", "img_id", "relation")
MNRE_DATASET_NAME = "MNRE"
"""The name of a folder whose relations are MNRE's (see [`folder_dataset`])."""


class MNREFormatError(ValueError):
    """A line of an MNRE file (or a crops mapping) that does not have the expected form; the message names
    `file:line` (1-based) and the field."""


# ----------------------------------------------------------------------------------------------------------------
# Reading and validating the text files
# ----------------------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_entity(entity: Any, field: str, num_tokens: int, where: str) -> None:
    if not isinstance(entity, dict):
        raise MNREFormatError(f"{where}: field '{field}' must be a dict with 'name' and 'pos', got {entity!r}")
    for key in ("name", "pos"):
        if key not in entity:
            raise MNREFormatError(f"{where}: missing field '{field}.{key}'")
    if not isinstance(entity["name"], str):
        raise MNREFormatError(f"{where}: field '{field}.name' must be a str, got {entity['name']!r}")
    pos = entity["pos"]
    if not (isinstance(pos, list | tuple) and len(pos) == 2 and all(_is_int(index) for index in pos)):
        raise MNREFormatError(f"{where}: field '{field}.pos' must be [start, end] word indices, got {pos!r}")
    start, end = pos
    if not 0 <= start < end <= num_tokens:
        raise MNREFormatError(
            f"{where}: field '{field}.pos' = {list(pos)} is not a non-empty [start, end) range within the "
            f"{num_tokens} words of 'token'"
        )


def _parse_line(line: str, where: str, relation_labels: Sequence[str] | None) -> dict[str, Any]:
    """Parses and validates one line; returns its known fields (`kind` included when present)."""
    try:
        example = ast.literal_eval(line)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as error:
        raise MNREFormatError(f"{where}: line: not a Python dict literal ({type(error).__name__}: {error})") from None
    if not isinstance(example, dict):
        raise MNREFormatError(f"{where}: line: expected a dict literal, got a {type(example).__name__}")
    return _validate_example(example, where, relation_labels)


def _validate_example(example: dict[str, Any], where: str, relation_labels: Sequence[str] | None) -> dict[str, Any]:
    """Validates the fields of one example (a parsed line, or a row of a Hub dataset); returns its known fields.
    `relation_labels=None` takes any non-empty relation name."""
    for field in _REQUIRED_FIELDS:
        if field not in example:
            raise MNREFormatError(f"{where}: missing field '{field}'")

    tokens = example["token"]
    if not (isinstance(tokens, list) and tokens and all(isinstance(word, str) for word in tokens)):
        raise MNREFormatError(f"{where}: field 'token' must be a non-empty list of str, got {tokens!r}")
    _validate_entity(example["h"], "h", len(tokens), where)
    _validate_entity(example["t"], "t", len(tokens), where)
    img_id = example["img_id"]
    if not (isinstance(img_id, str) and img_id not in ("", ".", "..") and not {"/", "\\", "\0"} & set(img_id)):
        raise MNREFormatError(f"{where}: field 'img_id' must be a plain file name, got {img_id!r}")
    relation = example["relation"]
    if relation_labels is None:
        if not (isinstance(relation, str) and relation):
            raise MNREFormatError(f"{where}: field 'relation' must be a non-empty str, got {relation!r}")
    elif relation not in relation_labels:
        raise MNREFormatError(f"{where}: field 'relation' = {relation!r} is not one of the known relation labels")
    if "kind" in example and not isinstance(example["kind"], str):
        raise MNREFormatError(f"{where}: field 'kind' must be a str, got {example['kind']!r}")

    parsed = {
        "token": list(tokens),
        "h": {"name": example["h"]["name"], "pos": list(example["h"]["pos"])},
        "t": {"name": example["t"]["name"], "pos": list(example["t"]["pos"])},
        "img_id": img_id,
        "relation": relation,
    }
    if "kind" in example:
        parsed["kind"] = example["kind"]
    return parsed


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (a leading BOM dropped), split where `open(path).readlines()` splits them (LF, CR LF
    or CR); a byte that is not UTF-8 is an [`MNREFormatError`] naming its line and column."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        lines_before = _universal_newlines(data[: error.start].decode("utf-8")).split("\n")
        raise MNREFormatError(
            f"{path}:{len(lines_before)}: line: not UTF-8 text (byte 0x{data[error.start]:02x} at column "
            f"{len(lines_before[-1]) + 1}: {error.reason})"
        ) from None
    return _universal_newlines(text).split("\n")


def _universal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _repeats(keys: Sequence[Any], first_number: int) -> list[str]:
    """`"n (= m)"` for each position `n` (counted from `first_number`) whose key equals that of an earlier one, `m`
    (keys `None` left out)."""
    first_seen: dict[Any, int] = {}
    repeats = []
    for number, key in enumerate(keys, start=first_number):
        if key is not None and first_seen.setdefault(key, number) != number:
            repeats.append(f"{number} (= {first_seen[key]})")
    return repeats


def _warn_about_repeated_lines(path: Path, lines: Sequence[str]) -> None:
    """Logs a warning with the count and the first line numbers of the lines that repeat an earlier one exactly."""
    repeats = _repeats([line if line.strip() else None for line in lines], first_number=1)
    if repeats:
        logger.warning(
            "%s: %d lines repeat an earlier line word for word (kept: line indices are ids), first: lines %s",
            path,
            len(repeats),
            ", ".join(repeats[:3]),
        )


def _text_lines(path: Path) -> list[str]:
    """The lines of an MNRE text file, without the blank lines at its end."""
    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _parse_lines(path: Path, lines: Sequence[str], relation_labels: Sequence[str] | None) -> list[dict[str, Any]]:
    """The validated fields of each line of `path` (see [`_parse_line`]); a blank line is an error."""
    examples = []
    for line_index, line in enumerate(lines):
        where = f"{path}:{line_index + 1}"
        if not line.strip():
            raise MNREFormatError(f"{where}: line: blank line before the end of the file")
        examples.append(_parse_line(line, where, relation_labels))
    return examples


def read_mnre_file(
    path: str | os.PathLike, split: str | None = None, relation_labels: Sequence[str] | None = MNRE_RELATIONS
) -> list[dict[str, Any]]:
    """
    Reads and validates an MNRE text file.

    Args:
        path (`str` or `os.PathLike`):
            A file with one Python dict literal per line (parsed with `ast.literal_eval`, never `eval`). Blank lines
            are allowed at the end only: a blank line in the middle would shift the line indices that object-crop
            mappings and example ids refer to.
        split (`str`, *optional*):
            Prefix of the example ids; defaults to the file's stem.
        relation_labels (`Sequence[str]`, *optional*, defaults to [`MNRE_RELATIONS`]):
            The labels `relation` may take; `None` takes any non-empty name.

    Returns:
        `list[dict]`: one dict per line with `id` (`f"{split}-{line_index}"`, the 0-based line index, the
        `data_id` of the reference code), `line_index`, `token`, `h`, `t` (`{"name", "pos"}`), `img_id`,
        `relation` and, when the line has it, `kind`. Other keys of a line are ignored.

    Raises:
        [`MNREFormatError`]: for a line that is not UTF-8 text or not a dict literal, lacks a field, or has a field of
        the wrong type or value (a span outside the words, an empty span, an unknown relation); the message starts
        with `file:line` (1-based line number) and names the field.

    Lines repeated word for word are kept (line indices are ids) and reported in a warning: their count and the first
    ones.
    """
    path = Path(path)
    split = split if split is not None else path.stem
    lines = _text_lines(path)
    _warn_about_repeated_lines(path, lines)
    records = []
    name_mismatches = []
    for line_index, example in enumerate(_parse_lines(path, lines, relation_labels)):
        for field in ("h", "t"):
            start, end = example[field]["pos"]
            if example[field]["name"] != " ".join(example["token"][start:end]):
                name_mismatches.append(f"{path}:{line_index + 1} ('{field}')")
        records.append({"id": f"{split}-{line_index}", "line_index": line_index, **example})
    if name_mismatches:
        logger.warning(
            "%s: %d entity names differ from the words their span covers (the span is used), first: %s",
            path,
            len(name_mismatches),
            ", ".join(name_mismatches[:3]),
        )
    return records


def read_hub_split(dataset: datasets.Dataset, split: str, source: str) -> list[dict[str, Any]]:
    """
    Reads and validates one split of a dataset in the layout `python -m mre_data.export_mnre` writes (a local
    folder or a Hub repository loaded with `datasets.load_dataset`): the same records as [`read_mnre_file`] gives for
    the file it was exported from, without decoding any image.

    Args:
        dataset (`datasets.Dataset`): the split, with the columns `token`, `h`, `t`, `relation` (a `ClassLabel`),
            `image` and optionally `id`, `img_id`, `object_crops` and `kind`.
        split (`str`): the MNRE split name (`train`, `val`, `test`): the prefix of the ids a row without `id` gets.
        source (`str`): how errors name the split (e.g. `user/mnre[validation]`).

    Returns:
        `list[dict]`: one record per row (`id`, `line_index` = the row index, `token`, `h`, `t`, `img_id`, `relation`
        as its label name, `kind` when the dataset has it).

    Raises:
        [`MNREFormatError`]: a missing column, a `relation` that is not a `ClassLabel`, or a row whose fields are
        wrong (named `source[row]` and the field, as a line of a file), a `relation` that is no id of the
        `ClassLabel` (null, negative or too large) included.

    Rows repeating an earlier row word for word, and rows with the `id` of an earlier row, are kept and reported in a
    warning (their count and the first ones), as [`read_mnre_file`] reports repeated lines.
    """
    missing = [column for column in HUB_COLUMNS if column not in dataset.column_names]
    if missing:
        raise MNREFormatError(
            f"{source}: missing columns {missing}; a dataset written by `python -m mre_data.export_mnre` has "
            f"{list(HUB_COLUMNS)}"
        )
    relation = dataset.features["relation"]
    if not isinstance(relation, datasets.ClassLabel):
        raise MNREFormatError(f"{source}: column 'relation' must be a ClassLabel, got {relation}")
    text_columns = [column for column in ("id", "img_id", "kind", *HUB_COLUMNS) if column in dataset.column_names]
    rows = dataset.select_columns([column for column in text_columns if column != "image"]).to_list()
    records = []
    for index, row in enumerate(rows):
        where = f"{source}[{index}]"
        label_id = row["relation"]
        if not (_is_int(label_id) and 0 <= label_id < relation.num_classes):
            raise MNREFormatError(
                f"{where}: field 'relation' = {label_id!r} is not a class id of its ClassLabel (0 to "
                f"{relation.num_classes - 1})"
            )
        example = {**row, "relation": relation.int2str(label_id), "img_id": row.get("img_id") or f"{index}"}
        parsed = _validate_example(example, where, relation.names)
        records.append({"id": row.get("id") or f"{split}-{index}", "line_index": index, **parsed})
    _warn_about_repeated_rows(source, rows, records)
    return records


def _warn_about_repeated_rows(source: str, rows: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> None:
    """Logs a warning for the rows that repeat an earlier row word for word and one for the rows whose `id` is that
    of an earlier row: the count and the first row indices of each."""
    content = [json.dumps({key: value for key, value in row.items() if key != "id"}, sort_keys=True) for row in rows]
    for repeats, what in (
        (_repeats(content, first_number=0), "repeat an earlier row word for word (kept: ids tell them apart)"),
        (_repeats([record["id"] for record in records], first_number=0), "have the id of an earlier row (kept)"),
    ):
        if repeats:
            logger.warning("%s: %d rows %s, first: rows %s", source, len(repeats), what, ", ".join(repeats[:3]))


def _folder_examples(data_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The validated lines of every MNRE text file under `data_dir` (all splits, any relation name), in file order,
    read without the warnings of [`read_mnre_file`] (the loader gives them)."""
    return [
        example
        for split in MNRE_SPLITS
        if (path := find_split_file(data_dir, split)) is not None
        for example in _parse_lines(path, _text_lines(path), relation_labels=None)
    ]


def folder_words(data_dir: str | os.PathLike) -> list[str]:
    """Every word of the MNRE text files under `data_dir` (all splits), in file order."""
    return [word for example in _folder_examples(data_dir) for word in example["token"]]


def folder_dataset(data_dir: str | os.PathLike) -> tuple[str, list[str]]:
    """
    The name and the relation labels (in id order) of an MNRE-format folder: what a run from the folder and its export
    (`python -m mre_data.export_mnre`) both use.

    - The built-in sample (its `sample_info.json` declares its relations): `"hvformer built-in sample"` and its
      declared labels, `None` first.
    - A folder whose relations are all MNRE's: `"MNRE"` and [`MNRE_RELATIONS`] (all 23, in MNRE's order, so that
      label ids are MNRE's whichever relations a split holds).
    - Any other folder: its folder name and its relations, `None` first (id 0, the no-relation label the metric
      leaves out), then the others sorted.

    Raises:
        [`MNREFormatError`]: a malformed line in a text file (read to find the relations).
    """
    declared = declared_relations(data_dir)
    if declared is not None:
        return SAMPLE_DATASET_NAME, declared
    relations = {example["relation"] for example in _folder_examples(data_dir)}
    if relations <= set(MNRE_RELATIONS):
        return MNRE_DATASET_NAME, list(MNRE_RELATIONS)
    none = MNRE_RELATIONS[0]
    return Path(data_dir).resolve().name, [none, *sorted(relations - {none})]


def hub_words(dataset: datasets.DatasetDict) -> list[str]:
    """Every word of a dataset in `export_mnre`'s layout (all splits, in MNRE's split order): the words
    [`folder_words`] gives for the folder it was exported from."""
    return [
        word
        for split in MNRE_SPLITS
        if HUB_SPLITS[split] in dataset
        for tokens in dataset[HUB_SPLITS[split]].select_columns(["token"])["token"]
        for word in tokens
    ]


def load_crops_mapping(path: str | os.PathLike) -> dict[int | str, list[str]]:
    """
    Reads an object-crop mapping: `{key: [crop file name, ...]}`.

    The reference code (MKGformer, HVPNeT) ships `mre_{train,dev,test}_dict.pth` and looks a line up with its 0-based
    line index (`item_id in aux_imgs`); keys may also be img ids (see [`load_mnre`]). A `.pth`/`.pt` file is read with
    `torch.load(..., weights_only=True)` (so it must hold a plain dict of str/int keys and lists of str, never
    arbitrary pickled objects); any other suffix is read as JSON (keys are then strings: a string of digits is taken as
    a line index).

    Raises:
        [`MNREFormatError`]: when the file is not such a mapping; the message names the file and the offending key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"crops mapping {path} not found")
    if path.suffix in (".pth", ".pt"):
        try:
            mapping = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as error:  # torch raises UnpicklingError, RuntimeError, ... for unsafe or broken files
            raise MNREFormatError(f"{path}: not a plain dict readable with weights_only=True ({error})") from error
    else:
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise MNREFormatError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(mapping, dict):
        raise MNREFormatError(f"{path}: expected a dict of crop file lists, got a {type(mapping).__name__}")
    for key, files in mapping.items():
        if not (_is_int(key) or isinstance(key, str)):
            raise MNREFormatError(f"{path}: key {key!r} must be a line index (int) or an img id (str)")
        if not (isinstance(files, list | tuple) and all(isinstance(name, str) and name for name in files)):
            raise MNREFormatError(f"{path}: value of key {key!r} must be a list of crop file names, got {files!r}")
    return {key: list(files) for key, files in mapping.items()}


def lookup_crops(mapping: Mapping[int | str, list[str]], line_index: int, img_id: str) -> list[str] | None:
    for key in (line_index, str(line_index), img_id, os.path.splitext(img_id)[0]):
        if key in mapping:
            return mapping[key]
    return None


# ----------------------------------------------------------------------------------------------------------------
# Locating the files of a split
# ----------------------------------------------------------------------------------------------------------------


def _text_dirs(data_dir: Path) -> list[Path]:
    return [data_dir, data_dir / "txt", data_dir / "mnre_txt"]


def find_split_file(data_dir: str | os.PathLike, split: str) -> Path | None:
    """The text file of `split` under `data_dir` (`mnre_{split}.txt` or `ours_{split}.txt`, also in `txt/` and
    `mnre_txt/`), or `None`."""
    for folder in _text_dirs(Path(data_dir)):
        for name in (f"mnre_{split}.txt", f"ours_{split}.txt"):
            if (folder / name).is_file():
                return folder / name
    return None


def find_crops_mapping(folders: Sequence[Path], split: str) -> Path | None:
    stems = [f"mre_{split}_dict"] + (["mre_dev_dict"] if split == "val" else [])
    for folder in folders:
        for stem in stems:
            for suffix in (".pth", ".pt", ".json"):
                if (folder / (stem + suffix)).is_file():
                    return folder / (stem + suffix)
    return None
