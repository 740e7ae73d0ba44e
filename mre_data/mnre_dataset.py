"""MNRE splits as cached `datasets` ([`load_mnre`]): tokenised posts with entity markers, and every image and crop
decoded and resized once into uint8 arrays, with what was loaded, substituted or switched off ([`image_report`]).

Normalisation happens later, in the model, on the device ([`HVFormerDataCollator`] only pads and stacks). Over 400
lines for a reason: this is one pipeline whose `Dataset.map` functions must live at module level (so `num_proc`
workers can pickle them) next to the features and fingerprints they must agree with.

[`HVFormerDataCollator`]: mre_data.collator.HVFormerDataCollator
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow.compute
import torch
from PIL import Image

from processing.object_detection import processor_detector

from .mnre import (
    HUB_SPLITS,
    MNRE_RELATIONS,
    MNRE_SPLITS,
    MNREFormatError,
    find_crops_mapping,
    find_split_file,
    load_crops_mapping,
    lookup_crops,
    read_hub_split,
    read_mnre_file,
)
from .post_files import REQUIRED_POST_COLUMNS, PostFormatError, parse_posts, read_post_file

logger = logging.getLogger(__name__)

TEXT_COLUMNS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "marker_positions")
IMAGE_COLUMNS: tuple[str, ...] = ("pixel_values", "object_pixel_values", "object_mask")
MODEL_COLUMNS: tuple[str, ...] = TEXT_COLUMNS + IMAGE_COLUMNS + ("labels",)
"""The columns [`HVFormerForRelationExtraction.forward`] takes; everything else is bookkeeping."""

IMAGE_STATUSES: tuple[str, ...] = ("loaded", "missing", "unreadable", "disabled")
"""Values of the `image_status` column (and of `crop_status` entries, less `disabled`, plus `DETECTED`)."""
DETECTED = "detected"
"""The `crop_status` of a crop the processor's object detector cut out of a post that brought none of its own."""
MISSING_IMAGES_POLICIES: tuple[str, ...] = ("error", "blank")
"""What `missing_images` may say about images and crops that are missing or unreadable (see [`load_mnre`])."""
MISSING_CROPS_POLICIES: tuple[str, ...] = ("error", "none")
"""What `missing_crops` may say about a split without object crops (see [`load_mnre`])."""

NO_CROPS_WARNING = "%s: no post has object crops: going without (counted as 'crops_unavailable')"
"""Logged (with the file or dataset) when no post of a split has object crops while the processor takes them."""

_IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)
_FAILED = ("missing", "unreadable")
_IMAGE_BATCH_SIZE = 64
_MAIN_PROCESS_ID = os.getpid()
"""The process that imported this module; `Dataset.map(num_proc=...)` workers forked from it see its id too."""


class MNREImageError(OSError):
    """Images or object crops that are missing or cannot be decoded while `missing_images="error"`; the message gives
    their count and the first paths."""


class MNRECropsError(FileNotFoundError):
    """A split without object crops (no crops folder, crops mapping or `object_crops` column) while the processor
    takes some and `missing_crops="error"`; the message names what is missing and the options."""


# ----------------------------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------------------------


def file_signature(path: str) -> str | None:
    """`size:mtime_ns` of a file, or `None` when it does not exist. Part of the cache fingerprint."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _sha256(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:40]


def _source_digest(obj: Any) -> str:
    """Digest of the Python sources beside the file defining `obj`'s class (its module and the sibling modules it
    imports), so that cached columns follow code changes."""
    try:
        folder = Path(inspect.getfile(type(obj))).parent
    except (TypeError, OSError):
        return type(obj).__qualname__
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The map functions (module level, so that `num_proc` workers can pickle them)
# ----------------------------------------------------------------------------------------------------------------


def _tokenize_batch(batch: dict[str, list], processor: Any, where: str, text_columns: Sequence[str]) -> dict:
    """Encodes a batch with the processor (unpadded): MNRE's word lists with word spans, or a post file's texts with
    character spans (a `text` column). A sample it rejects is reported at `where`, a format string of its 1-based
    `line` (a file's line) or 0-based `row` (a Hub dataset's row), or at the `location` a post file's row carries."""
    is_post = "text" in batch
    texts = batch["text"] if is_post else batch["token"]

    def encode(indices: Sequence[int]) -> Any:
        return processor(
            text=[texts[i] for i in indices],
            entity_spans=[[batch["h"][i]["pos"], batch["t"][i]["pos"]] for i in indices],
            is_split_into_words=not is_post,
            padding=False,
            return_tensors=None,
        )

    try:
        encoding = encode(range(len(texts)))
    except ValueError:
        for index, line_index in enumerate(batch["line_index"]):
            try:
                encode([index])
            except ValueError as error:
                if is_post:
                    raise MNREFormatError(
                        f"{batch['location'][index]}: columns 'subject'/'object': {error}"
                    ) from error
                location = where.format(line=line_index + 1, row=line_index)
                raise MNREFormatError(f"{location}: fields 'h'/'t': {error}") from error
        raise
    return {column: [list(map(int, row)) for row in encoding[column]] for column in text_columns}


def _decode(processor: Any, source: str | bytes | None, role: str) -> tuple[Image.Image | None, str]:
    """Decodes one image (a file path, or the bytes a Hub dataset embeds; `None` for an image that is not there)
    with `processor.image_processor.load_image` as the image processor decodes an image of its `role` (`"image"`
    or `"object_crop"`: a large one at a reduced scale), so that the cached pixels are those a served post gets;
    returns the image (or `None`) and its status."""
    if source is None or (isinstance(source, str) and not os.path.isfile(source)):
        return None, "missing"
    try:
        return processor.image_processor.load_image(source, reduce_for=role), "loaded"
    except _IMAGE_ERRORS as error:
        logger.debug("cannot decode an image: %s", error)
        return None, "unreadable"


def _embedded(image: dict[str, Any] | None) -> bytes | None:
    """The bytes of a `datasets.Image` value read with `decode=False`, `None` for an image that is not there. Never its
    path: a dataset's images come from its own bytes ([`raise_for_image_paths`] refuses a path without bytes)."""
    return None if image is None else image.get("bytes")


def _image_sources(batch: dict[str, list], num_object_crops: int) -> list[tuple[str | bytes | None, list]]:
    """Each row's image and crops as `_decode` takes them: the files of `image_path` / `crop_paths`, or the `image`
    and first `num_object_crops` `object_crops` of a Hub dataset."""
    if "image_path" in batch:
        return list(zip(batch["image_path"], batch["crop_paths"], strict=True))
    crops = batch.get("object_crops") or [[] for _ in batch["image"]]
    return [
        (_embedded(image), [_embedded(crop) for crop in (row_crops or [])[:num_object_crops]])
        for image, row_crops in zip(batch["image"], crops, strict=True)
    ]


def _image_columns(processor: Any) -> tuple[str, ...]:
    """The image columns a processor fills: no crop columns when it takes no object crops."""
    return IMAGE_COLUMNS if processor.num_object_crops else IMAGE_COLUMNS[:1]


def _single_threaded_in_forked_worker() -> None:
    """Limits torch to one thread in a worker that `Dataset.map(num_proc=...)` forked from this process.

    A forked child inherits the parent's OpenMP state but not its worker threads: once the parent has run a parallel
    torch op (building the model), the child's first parallel op (the image processor's tensors) waits forever for
    threads that do not exist. With one thread, torch runs ops inline and never enters an OpenMP region; the workers
    are parallel already. PyTorch's `DataLoader` does the same in its workers.
    """
    if os.getpid() != _MAIN_PROCESS_ID and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _encode_images_batch(batch: dict[str, list], processor: Any, use_images: bool, detect: bool) -> dict[str, Any]:
    """Decodes and resizes the images and crops of a batch into uint8 arrays, recording what was found; `detect`:
    the processor's object detector crops the posts that bring no crops of their own."""
    _single_threaded_in_forked_worker()
    blank = Image.new("RGB", (8, 8))
    size = len(next(iter(batch.values())))
    if not use_images:
        arrays = processor.image_processor([blank], object_crops=[[]])
        return {
            **{column: np.repeat(arrays[column].numpy(), size, axis=0) for column in _image_columns(processor)},
            "image_status": ["disabled"] * size,
            "crop_status": [[] for _ in range(size)],
        }
    images, statuses, crops, crop_statuses = [], [], [], []
    decoded: dict[str, tuple[Image.Image | None, str]] = {}  # the lines of one post share its image file
    sources_of_rows = _image_sources(batch, processor.num_object_crops)
    for source, crop_sources in sources_of_rows:
        if not isinstance(source, str):
            image, status = _decode(processor, source, "image")
        else:
            if source not in decoded:
                decoded[source] = _decode(processor, source, "image")
            image, status = decoded[source]
        images.append(image if image is not None else blank)
        statuses.append(status)
        found = [_decode(processor, crop_source, "object_crop") for crop_source in crop_sources]
        crops.append([crop for crop, _ in found if crop is not None])
        crop_statuses.append([crop_status for _, crop_status in found])
    if detect:  # the posts without crops of their own, cropped as a served post is
        wanted = [
            index for index, (_, sources) in enumerate(sources_of_rows) if not sources and statuses[index] == "loaded"
        ]
        detected = processor_detector(processor).crops([images[index] for index in wanted], processor.num_object_crops)
        for index, image_crops in zip(wanted, detected, strict=True):
            crops[index], crop_statuses[index] = image_crops, [DETECTED] * len(image_crops)
    arrays = processor.image_processor(images, object_crops=crops)
    return {
        **{column: arrays[column].numpy() for column in _image_columns(processor)},
        "image_status": statuses,
        "crop_status": crop_statuses,
    }


# ----------------------------------------------------------------------------------------------------------------
# Features and fingerprints
# ----------------------------------------------------------------------------------------------------------------


def _base_features(relation_labels: Sequence[str], with_kind: bool) -> datasets.Features:
    def entity() -> dict[str, Any]:
        return {"name": datasets.Value("string"), "pos": datasets.List(datasets.Value("int32"))}

    features = {
        "id": datasets.Value("string"),
        "line_index": datasets.Value("int32"),
        "token": datasets.List(datasets.Value("string")),
        "h": entity(),
        "t": entity(),
        "img_id": datasets.Value("string"),
        "relation": datasets.Value("string"),
        **({"kind": datasets.Value("string")} if with_kind else {}),
        "labels": datasets.ClassLabel(names=list(relation_labels)),
        "image_path": datasets.Value("string"),
        "crop_paths": datasets.List(datasets.Value("string")),
        "crops_unavailable": datasets.Value("bool"),
    }
    return datasets.Features(features)


def _post_features(relation_labels: Sequence[str], labelled: bool) -> datasets.Features:
    """The record columns of a post file's split (see `mre_data.post_files.parse_post`); `relation` and `labels`
    only for labelled posts."""

    def entity() -> dict[str, Any]:
        return {"name": datasets.Value("string"), "pos": datasets.List(datasets.Value("int32"))}

    features = {
        "id": datasets.Value("string"),
        "line_index": datasets.Value("int32"),
        "location": datasets.Value("string"),
        "text": datasets.Value("string"),
        "h": entity(),
        "t": entity(),
        "img_id": datasets.Value("string"),
        **({"relation": datasets.Value("string")} if labelled else {}),
        **({"labels": datasets.ClassLabel(names=list(relation_labels))} if labelled else {}),
        "image_path": datasets.Value("string"),
        "crop_paths": datasets.List(datasets.Value("string")),
        "crops_unavailable": datasets.Value("bool"),
    }
    return datasets.Features(features)


def _text_columns(processor: Any) -> list[str]:
    """The text columns this processor returns (`token_type_ids` only for tokenizers that use them)."""
    probe = processor(
        text=[["a", "b"]],
        entity_spans=[[[0, 1], [1, 2]]],
        is_split_into_words=True,
        padding=False,
        return_tensors=None,
    )
    return [column for column in TEXT_COLUMNS if column in probe]


def _text_features(text_columns: Sequence[str]) -> dict[str, Any]:
    return {
        column: datasets.List(datasets.Value("int64"), length=2 if column == "marker_positions" else -1)
        for column in text_columns
    }


def _image_features(processor: Any) -> datasets.Features:
    """Features of the image columns, with the shapes found by resizing one blank image (no file is read)."""
    probe = processor.image_processor([Image.new("RGB", (8, 8))], object_crops=[[]])
    features = {
        "pixel_values": datasets.Array3D(shape=tuple(probe["pixel_values"].shape[1:]), dtype="uint8"),
        "image_status": datasets.Value("string"),
        "crop_status": datasets.List(datasets.Value("string")),
    }
    if processor.num_object_crops:
        crop_shape = tuple(probe["object_pixel_values"].shape[1:])
        features["object_pixel_values"] = datasets.Array4D(shape=crop_shape, dtype="uint8")
        features["object_mask"] = datasets.List(datasets.Value("int64"), length=crop_shape[0])
    return datasets.Features(features)


def _text_settings(processor: Any) -> dict[str, Any]:
    """What the text columns depend on besides the records."""
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return {
        "processor": type(processor).__qualname__,
        "processor_source": _source_digest(processor),
        "tokenizer": type(tokenizer).__qualname__,
        "tokenizer_state": backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items()),
        "max_length": processor.max_length,
    }


def _image_settings(processor: Any) -> dict[str, Any]:
    """What the image columns depend on besides the files."""
    return {
        "processor": type(processor).__qualname__,
        "processor_source": _source_digest(processor),
        "image_processor": processor.image_processor.to_dict(),
        "num_object_crops": processor.num_object_crops,
        "object_image_size": processor.object_image_size,
    }


# ----------------------------------------------------------------------------------------------------------------
# Image report and the missing-image policy
# ----------------------------------------------------------------------------------------------------------------


def _columns(dataset: datasets.Dataset, names: Sequence[str]) -> dict[str, list]:
    """Whole columns as Python lists, in one read (iterating `dataset[name]` would format row by row)."""
    return dataset.select_columns(list(names)).with_format(None)[:]


def image_report(dataset: datasets.Dataset | datasets.DatasetDict) -> dict[str, Any]:
    """
    Counts, from the `image_status` and `crop_status` columns, how the images and crops of a split were obtained.

    The counts come from the data, so they are right as well when [`load_mnre`] reused its cache. All values are
    ints, ready for a metrics file.

    Returns:
        `dict`: for a `DatasetDict`, `{split: counts}`; for a `Dataset`, the counts: `examples`, `images_loaded`,
        `images_missing` and `images_unreadable` (each replaced by a blank image under `missing_images="blank"`),
        `images_disabled` (`use_images=False`), `images_blank` (the sum of the last three), `examples_with_crops`
        (at least one crop loaded), `crops_loaded`, `crops_missing` and `crops_unreadable` (dropped: `object_mask`
        0), `crops_unavailable` (examples of a split that has no object crops at all, loaded without them under
        `missing_crops="none"`), `detector_crops` (crops the processor's object detector cut out of the posts that
        brought none of their own).
    """
    if isinstance(dataset, datasets.DatasetDict):
        return {split: image_report(split_dataset) for split, split_dataset in dataset.items()}
    columns = _columns(dataset, ["image_status", "crop_status", "crops_unavailable"])
    images = Counter(columns["image_status"])
    crop_statuses = columns["crop_status"]
    crops = Counter(status for statuses in crop_statuses for status in statuses)
    return {
        "examples": len(dataset),
        **{f"images_{status}": images[status] for status in IMAGE_STATUSES},
        "images_blank": images["missing"] + images["unreadable"] + images["disabled"],
        "examples_with_crops": sum("loaded" in statuses for statuses in crop_statuses),
        **{f"crops_{status}": crops[status] for status in ("loaded", "missing", "unreadable")},
        "crops_unavailable": sum(columns["crops_unavailable"]),
        "detector_crops": crops[DETECTED],
    }


def _failure_message(split: str, what: str, paths: Sequence[str], total: int, reason: str) -> str:
    shown = ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")
    return (
        f"split '{split}': {len(paths)} of {total} {what} {reason} (first: {shown}). Fix the paths, or pass "
        "missing_images='blank' to use blank images instead (counted in the 'image_status'/'crop_status' columns, "
        "in image_report() and in the log)."
    )


def raise_for_missing_files(split: str, records: list[dict[str, Any]], signatures: Mapping[str, str | None]) -> None:
    """Raises [`MNREImageError`] for images or crops that do not exist (found with `stat`, before any decoding)."""
    missing = [record["image_path"] for record in records if signatures[record["image_path"]] is None]
    if missing:
        raise MNREImageError(_failure_message(split, "images", missing, len(records), "are missing"))
    crop_paths = [path for record in records for path in record["crop_paths"]]
    missing = [path for path in crop_paths if signatures[path] is None]
    if missing:
        raise MNREImageError(_failure_message(split, "object crops", missing, len(crop_paths), "are missing"))


def _first_path_only(values: pyarrow.ChunkedArray) -> list[tuple[int, str]]:
    """The position and path of the first `datasets.Image` value (a `{bytes, path}` struct) of `values` that holds a
    path but no bytes; an empty list when there is none."""
    paths = pyarrow.compute.struct_field(values, "path")
    no_bytes = pyarrow.compute.is_null(pyarrow.compute.struct_field(values, "bytes"))
    found = pyarrow.compute.and_(no_bytes, pyarrow.compute.is_valid(paths)).fill_null(False)
    return [(position, paths[position].as_py()) for position in pyarrow.compute.indices_nonzero(found)[:1].to_pylist()]


def raise_for_image_paths(images: datasets.Dataset, source: str) -> None:
    """Raises [`MNREFormatError`] for the first row of a Hub dataset's `image` (and `object_crops`) column, read with
    `datasets.Image(decode=False)`, that holds a path but no bytes: such a path names a file of the machine that
    loads the dataset (any file), and a dataset's images come from its own bytes only. Reads Arrow, decodes
    nothing."""
    table = images.with_format("arrow")[:]
    found = [(row, "image", path) for row, path in _first_path_only(table["image"])]
    if "object_crops" in table.column_names:
        lists = table["object_crops"]
        rows = pyarrow.compute.list_parent_indices(lists).to_pylist()
        for position, path in _first_path_only(pyarrow.compute.list_flatten(lists)):
            found.append((rows[position], f"object_crops[{position - rows.index(rows[position])}]", path))
    if found:
        row, field, path = min(found)
        raise MNREFormatError(
            f"{source}[{row}]: field '{field}' holds a path ({path!r:.120}) but no bytes: a dataset's images are read "
            "from the bytes it embeds, never from a path (python -m mre_data.export_mnre embeds them)"
        )


def _decode_failure(processor: Any, path: str) -> str:
    """Why `path` cannot be decoded (decodes it once more: only called on the way to an error)."""
    try:
        processor.image_processor.load_image(path)
    except _IMAGE_ERRORS as error:
        return str(error)
    return f"{path} was not readable while decoding"


def _apply_image_policy(
    split: str, dataset: datasets.Dataset, missing_images: str, first_error: Callable[[str], str] | None
) -> None:
    """Raises for missing or unreadable images under `"error"` (with the decoder's message for the first unreadable
    one when `first_error` gives it); logs what was substituted otherwise."""
    report = image_report(dataset)
    if missing_images == "error":
        columns = _columns(dataset, ["image_path", "image_status", "crop_paths", "crop_status"])
        crops = [
            (path, status)
            for paths, statuses in zip(columns["crop_paths"], columns["crop_status"], strict=True)
            for path, status in zip(paths, [status for status in statuses if status != DETECTED], strict=True)
        ]
        for what, items in (
            ("images", list(zip(columns["image_path"], columns["image_status"], strict=True))),
            ("object crops", crops),
        ):
            missing = [path for path, status in items if status == "missing"]
            if missing:
                raise MNREImageError(_failure_message(split, what, missing, len(items), "are missing"))
            unreadable = [path for path, status in items if status == "unreadable"]
            if unreadable:
                message = _failure_message(split, what, unreadable, len(items), "cannot be decoded")
                if first_error is not None:
                    message += f" First error: {first_error(unreadable[0])}"
                raise MNREImageError(message)
    substituted = [report[key] for key in ("images_missing", "images_unreadable", "crops_missing", "crops_unreadable")]
    if any(substituted):
        logger.warning(
            "split '%s': blank images for %d missing and %d unreadable images; %d missing and %d unreadable object "
            "crops dropped (%d examples)",
            split,
            *substituted,
            report["examples"],
        )
    if report["images_disabled"]:
        logger.info("split '%s': images switched off (use_images=False): %d blank images", split, len(dataset))


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def _without_crops(missing_crops: str, what: str, remedy: str) -> None:
    """Applies `missing_crops` to a split or a folder without object crops (`what` says what is missing): raises
    [`MNRECropsError`] under `"error"` (with `remedy`, how to provide them), logs a warning under `"none"`."""
    if missing_crops == DETECTED:
        logger.info("%s: the object detector crops the posts", what)
        return
    if missing_crops == "error":
        raise MNRECropsError(
            f"{what}: {remedy}, or pass missing_crops='none' to go without object crops (counted as "
            "'crops_unavailable' in image_report())"
        )
    logger.warning("%s: going without object crops (missing_crops='none')", what)


def resolve_crops_mapping(
    crops_mapping: str | os.PathLike | Mapping[str, str | os.PathLike] | None,
    split: str,
    text_file: Path,
    data_dir: Path,
    missing_crops: Literal["error", "none"] = "error",
) -> Path | None:
    """The crops mapping of `split` (see [`load_mnre`]'s `crops_mapping`); `None` when there is none and
    `missing_crops="none"` (logged), [`MNRECropsError`] under `"error"`."""
    if isinstance(crops_mapping, Mapping):
        if split not in crops_mapping:
            raise KeyError(f"crops_mapping has no entry for split '{split}' (it has {sorted(crops_mapping)})")
        return Path(crops_mapping[split])
    if crops_mapping is not None and Path(crops_mapping).is_file():
        return Path(crops_mapping)
    folders = [Path(crops_mapping)] if crops_mapping is not None else [text_file.parent, data_dir]
    found = find_crops_mapping(folders, split)
    if found is None:
        _without_crops(
            missing_crops,
            f"split '{split}': no crops mapping mre_{split}_dict.{{pth,pt,json}} in {', '.join(map(str, folders))}",
            "pass crops_mapping",
        )
    return found


def _outside(path: Path, folder: Path) -> Path | None:
    """Where `path` leads when that is outside `folder` (a resolved folder): through `..`, an absolute name or a
    symbolic link; `None` when it stays inside."""
    resolved = path.resolve()
    return None if resolved.is_relative_to(folder) else resolved


def attach_paths(
    records: list[dict[str, Any]],
    split: str,
    text_file: Path,
    image_root: Path | None,
    crops_root: Path | None,
    mapping_file: Path | None,
    num_object_crops: int | None,
) -> None:
    """Adds `image_path` and `crop_paths` (the first `num_object_crops` crops listed, all with `None`) to each
    record of `text_file`, in place.

    Raises:
        [`MNREFormatError`]: an image that leads outside `image_root/split` or a crop name of the mapping that leads
        outside `crops_root/split/crops` (an absolute name, `..`, or a symbolic link to a file elsewhere: such a file
        would be decoded, or embedded by an export); a mapping none of whose keys is a line of the split.
    """
    mapping = load_crops_mapping(mapping_file) if mapping_file is not None else {}
    if crops_root is not None:
        crops_folder = crops_root / split / "crops"
        resolved_crops = crops_folder.resolve()
        for key, names in mapping.items():
            for name in names:
                outside = _outside(crops_folder / name, resolved_crops)
                if outside is not None:
                    raise MNREFormatError(
                        f"{mapping_file}: key {key!r}: crop {name!r:.120} leads to {outside}, outside the crops "
                        f"folder {crops_folder}"
                    )
    resolved_images = (image_root / split).resolve() if image_root is not None else None
    matched = 0
    for record in records:
        record["image_path"] = ""
        if image_root is not None:
            image_path = image_root / split / record["img_id"]
            outside = _outside(image_path, resolved_images)
            if outside is not None:
                raise MNREFormatError(
                    f"{text_file}:{record['line_index'] + 1}: field 'img_id': {image_path} leads to {outside}, "
                    f"outside the image folder {image_root / split}"
                )
            record["image_path"] = str(image_path)
        names = lookup_crops(mapping, record["line_index"], record["img_id"]) or []
        matched += bool(names)
        record["crop_paths"] = [str(crops_root / split / "crops" / name) for name in names[:num_object_crops]]
    if mapping_file is not None:
        if mapping and not matched:
            keys = ", ".join(repr(key) for key in list(mapping)[:3])
            raise MNREFormatError(
                f"{mapping_file}: none of its {len(mapping)} keys (e.g. {keys}) is a line index or img_id of split "
                f"'{split}'"
            )
        logger.info("split '%s': %d of %d examples have object crops (%s)", split, matched, len(records), mapping_file)


def check_policies(missing_images: str, missing_crops: str) -> None:
    """Refuses a `missing_images` policy other than those of [`MISSING_IMAGES_POLICIES`], and a `missing_crops`
    policy other than those of [`MISSING_CROPS_POLICIES`]."""
    for name, value, policies in (
        ("missing_images", missing_images, MISSING_IMAGES_POLICIES),
        ("missing_crops", missing_crops, MISSING_CROPS_POLICIES),
    ):
        if value not in policies:
            raise ValueError(f"{name} must be {' or '.join(map(repr, policies))}, got {value!r:.100}")


def image_folders(
    data_dir: Path,
    image_dir: str | os.PathLike | None,
    crops_dir: str | os.PathLike | None,
    with_crops: bool,
    missing_crops: Literal["error", "none"] = "error",
) -> tuple[Path, Path | None]:
    """The image folder of an MNRE folder (`image_dir`, by default `data_dir/img_org`; it must exist) and, when
    `with_crops`, its object crops folder (`crops_dir`, which must exist when given; by default `data_dir/img_vg`).
    Without that default folder: [`MNRECropsError`] under `missing_crops="error"`, `None` (logged) under `"none"`."""
    image_root = Path(image_dir) if image_dir is not None else data_dir / "img_org"
    if not image_root.is_dir():
        raise FileNotFoundError(f"image folder {image_root} not found: pass image_dir, or use_images=False")
    if not with_crops:
        return image_root, None
    crops_root = Path(crops_dir) if crops_dir is not None else data_dir / "img_vg"
    if not crops_root.is_dir():
        if crops_dir is not None:
            raise FileNotFoundError(f"object crops folder {crops_root} not found")
        _without_crops(
            missing_crops,
            f"no object crops folder {crops_root} (with {{split}}/crops/ in it, and mre_{{split}}_dict.pth beside the "
            "text files)",
            "pass crops_dir",
        )
        return image_root, None
    return image_root, crops_root


def load_mnre(
    data_dir: str | os.PathLike,
    processor: Any,
    *,
    splits: Sequence[str] | None = None,
    image_dir: str | os.PathLike | None = None,
    crops_dir: str | os.PathLike | None = None,
    crops_mapping: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    relation_labels: Sequence[str] | None = None,
    use_images: bool = True,
    use_object_crops: bool = True,
    missing_images: Literal["error", "blank"] = "error",
    missing_crops: Literal["error", "none"] = "error",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """
    Loads MNRE-format splits into a `DatasetDict` for [`HVFormerDataCollator`], decoding each image only once.

    Args:
        data_dir (`str` or `os.PathLike`):
            Folder of the text files (see the module docstring for the layout).
        processor ([`HVFormerProcessor`]):
            Tokenizes with the entity markers and resizes images (`processor.image_processor`). With an
            `object_detector`, each post without crops of its own gets the detector's crops of its decoded image
            (`crop_status` `"detected"`), and a folder or split without crops is not refused.
        splits (`Sequence[str]`, *optional*):
            The splits to load; each must have its text file. Defaults to those of `("train", "val", "test")` that
            have one (at least one must).
        image_dir (`str` or `os.PathLike`, *optional*):
            Folder with a sub-folder per split: `{image_dir}/{split}/{img_id}`. Defaults to `data_dir/img_org`; must
            exist unless `use_images=False`.
        crops_dir (`str` or `os.PathLike`, *optional*):
            Folder of the object crops: `{crops_dir}/{split}/crops/{crop file}`. Defaults to `data_dir/img_vg`
            (without it, see `missing_crops`). Not read when the processor takes no crops (`num_object_crops=0`).
        crops_mapping (`str`, `os.PathLike` or `Mapping[str, str | os.PathLike]`, *optional*):
            Which crops belong to which line (read with [`load_crops_mapping`]): a `{split: file}` dict, a folder
            holding `mre_{split}_dict.{pth,pt,json}` (`mre_dev_dict.*` for val, the reference name), or one file when
            loading one split. Defaults to looking next to the text file, then in `data_dir`. A line is looked up by
            its 0-based line index (an int, or its decimal string in JSON: what the reference code does), then by its
            `img_id`, then by the `img_id` without extension; its first `processor.num_object_crops` crops are used.
            A mapping none of whose keys matches the split raises [`MNREFormatError`], a crop name that leads outside
            `{crops_dir}/{split}/crops` (an absolute name, `..` or a symbolic link) too, as an image that leads outside
            `{image_dir}/{split}`. A post the mapping lists no crops for has none (`object_mask` 0).
        relation_labels (`Sequence[str]`, *optional*):
            Label names in id order. Defaults to `processor.relation_labels`, else [`MNRE_RELATIONS`].
        use_images (`bool`, *optional*, defaults to `True`):
            `False` switches images off explicitly (the text-only experiment): no file is read, every example gets
            a blank (black) image and no crops, recorded as `image_status="disabled"` and logged.
        use_object_crops (`bool`, *optional*, defaults to `True`):
            `False` leaves the object crops out (every `object_mask` 0; logged) even when a crops folder exists.
        missing_images (`"error"` or `"blank"`, *optional*, defaults to `"error"`):
            Images or crops that are missing or cannot be decoded: `"error"` raises [`MNREImageError`] with their
            count and first paths (missing files are found with `stat` before anything is decoded). `"blank"` puts a
            blank (black) image in place of such an image and drops such a crop (`object_mask` 0); each case is
            recorded in the `image_status`/`crop_status` columns, counted by [`image_report`] and logged as a
            warning. Nothing is substituted silently.
        missing_crops (`"error"` or `"none"`, *optional*, defaults to `"error"`):
            A split without object crops while the processor takes some (no crops folder, or no crops mapping for
            the split): `"error"` raises [`MNRECropsError`] naming what is missing; `"none"` loads the split without
            crops (every `object_mask` 0), recorded in the `crops_unavailable` column, counted by [`image_report`]
            and logged as a warning.
        num_proc (`int`, *optional*):
            Worker processes for decoding images.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Folder of the cached splits. Defaults to `$HF_DATASETS_CACHE/hvformer_mnre`.

    Returns:
        `datasets.DatasetDict`: one `Dataset` per split with the columns
        - `id` (`f"{split}-{line_index}"`), `line_index` (0-based), `token`, `h`, `t`, `img_id`, `relation` (the label
          name), `kind` (only when the file has it, as the sample dataset does; `""` for lines without), `image_path`,
          `crop_paths`;
        - `labels` (`ClassLabel` named after `relation_labels`);
        - `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer uses them), `marker_positions`, all
          unpadded (the collator pads);
        - `pixel_values` (uint8 `(3, H, W)`), `object_pixel_values` (uint8 `(t, 3, s, s)`, zeros for absent crops),
          `object_mask` (`(t,)`): resized, not normalised;
        - `image_status` (one of [`IMAGE_STATUSES`]), `crop_status` (the status of each crop in `crop_paths`) and
          `crops_unavailable` (the split has no crops: `missing_crops="none"`).
        The model columns are formatted as numpy arrays of their own dtypes (the pixels uint8: `dtype=None` keeps
        `datasets` from widening integer arrays to int64, 8 times the bytes) and `output_all_columns=True` returns
        the others as Python objects. For training, `mre_data.collator.ColumnBatches` reads whole batches straight
        from the cached Arrow data.

    Caching: each split goes through two `Dataset.map` calls written under `cache_dir` with explicit fingerprints.
    The text one depends on the records, the tokenizer's full state and `max_length`; the image one on each line's
    image and crop paths, each file's size and mtime, the image processor's settings, `num_object_crops`,
    `object_image_size`, `use_images` and the processor's object detector (its config, image processor and a digest
    of its weights: a changed detector makes its crops anew); both on the source of the processor class and of this
    module. A rerun with the same inputs loads both from disk and decodes no image; changing the tokenizer or the
    labels re-tokenizes only.
    `missing_images` is not part of the fingerprint: decoding records what it finds and the policy is applied to
    the result. Old cache files are never deleted: remove `cache_dir` to reclaim the space.

    Raises:
        [`MNREFormatError`]: a malformed line or crops mapping, or a line the processor cannot encode.
        [`MNREImageError`]: under `missing_images="error"`, images or crops that are missing or cannot be decoded.
        [`MNRECropsError`]: under `missing_crops="error"`, a missing crops folder or crops mapping.
        `FileNotFoundError`: a missing text file, image folder or given crops folder.
    """
    data_dir = Path(data_dir)
    if relation_labels is None:
        relation_labels = getattr(processor, "relation_labels", None) or MNRE_RELATIONS
    if splits is None:
        splits = [split for split in MNRE_SPLITS if find_split_file(data_dir, split) is not None]
        if not splits:
            raise FileNotFoundError(f"no MNRE text file (mnre_{{train,val,test}}.txt) under {data_dir}")
        logger.info("MNRE splits found under %s: %s", data_dir, ", ".join(splits))
    single_mapping_file = crops_mapping is not None and not isinstance(crops_mapping, Mapping)
    if single_mapping_file and Path(crops_mapping).is_file() and len(splits) > 1:
        raise ValueError("one crops_mapping file given for several splits: pass a {split: file} dict or a folder")

    loader = _SplitLoader(
        processor,
        list(relation_labels),
        use_images,
        missing_images,
        missing_crops,
        num_proc,
        cache_dir,
        use_object_crops,
    )
    if use_images and not use_object_crops:
        logger.info("object crops switched off (use_object_crops=False): object_mask is 0 everywhere")
    with_crops = use_images and use_object_crops and bool(processor.num_object_crops)
    # With a detector, a folder or split without crops is not without: the detector crops its posts.
    crops_policy = DETECTED if with_crops and processor_detector(processor) is not None else missing_crops
    image_root = crops_root = None
    if use_images:
        image_root, crops_root = image_folders(data_dir, image_dir, crops_dir, with_crops, crops_policy)

    dataset_dict = datasets.DatasetDict()
    for split in splits:
        text_file = find_split_file(data_dir, split)
        if text_file is None:
            raise FileNotFoundError(f"no text file for split '{split}' (mnre_{split}.txt) under {data_dir}")
        mapping_file = None
        if crops_root is not None:
            mapping_file = resolve_crops_mapping(crops_mapping, split, text_file, data_dir, crops_policy)
        crops_unavailable = with_crops and mapping_file is None and crops_policy != DETECTED
        dataset_dict[split] = loader.load(split, text_file, image_root, crops_root, mapping_file, crops_unavailable)
    return dataset_dict


def load_mnre_hub(
    dataset: datasets.DatasetDict,
    dataset_name: str,
    processor: Any,
    *,
    splits: Sequence[str] | None = None,
    relation_labels: Sequence[str] | None = None,
    use_images: bool = True,
    use_object_crops: bool = True,
    missing_images: Literal["error", "blank"] = "error",
    missing_crops: Literal["error", "none"] = "error",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """
    [`load_mnre`] for `dataset`, a dataset in the layout `python -m mre_data.export_mnre` writes as
    `datasets.load_dataset(dataset_name)` returns it (`dataset_name` a local folder or a Hub repository, public or
    private; it names the dataset in messages).

    The same cached splits as [`load_mnre`] gives for the folder the dataset was exported from, under the MNRE split
    names (`train`, `val`, `test` from the Hub's `train`, `validation`, `test`): the same ids, tokens, labels and
    pixels (the images are decoded from the bytes the dataset embeds, as from the files). `image_path` and
    `crop_paths` name the images for the report (`dataset/split/img_id`). An image or crop stored as `None` is
    missing: `missing_images` applies as for files. An image or crop that holds a path but no bytes is an
    [`MNREFormatError`] naming the split, the row and the field: a dataset's images come from its own bytes, never
    from a file a path names. A split without an `object_crops` column, or whose rows all have it null (the export
    of a folder without crops), has no crops: `missing_crops` applies as for a folder without them. The image cache
    depends on the dataset's fingerprint instead of file sizes and times. The other arguments are [`load_mnre`]'s;
    `relation_labels` must be the names of the dataset's `relation` `ClassLabel`.
    """
    raw = dataset
    available = [split for split in MNRE_SPLITS if HUB_SPLITS[split] in raw]
    splits = list(splits) if splits is not None else available
    if not splits:
        raise FileNotFoundError(f"{dataset_name} has none of the splits {list(HUB_SPLITS.values())}")
    for split in splits:
        if split not in available:
            raise FileNotFoundError(f"{dataset_name} has no '{HUB_SPLITS[split]}' split (it has {sorted(raw)})")
    if relation_labels is None:
        relation_labels = raw[HUB_SPLITS[splits[0]]].features["relation"].names
    loader = _SplitLoader(
        processor,
        list(relation_labels),
        use_images,
        missing_images,
        missing_crops,
        num_proc,
        cache_dir,
        use_object_crops,
    )
    with_crops = use_images and use_object_crops and bool(processor.num_object_crops)
    return datasets.DatasetDict(
        {
            split: loader.load_hub(split, raw[HUB_SPLITS[split]], f"{dataset_name}[{HUB_SPLITS[split]}]", with_crops)
            for split in splits
        }
    )


def load_post_files(
    files: Mapping[str, str | os.PathLike],
    processor: Any,
    *,
    splits: Sequence[str] | None = None,
    relation_labels: Sequence[str] | None = None,
    use_images: bool = True,
    missing_images: Literal["error", "blank"] = "error",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """
    [`load_mnre`] for a user's own post files (`mre_data.post_files`: JSON Lines, CSV or Parquet, one row a post):
    `files` maps the MNRE split names (`train`, `val`, `test`) to a file each; `splits` picks some (default: all).

    The same cache, columns and guarantees as an MNRE folder, with `text` (and `location`, the row's `file:line`) in
    place of `token`, and `h` / `t` spans in characters. A file without a `relation` column is unlabelled: its split
    has no `relation` and `labels` columns (prediction only). A relation that is not one of `relation_labels` (default:
    the processor's) is a `PostFormatError` naming the file, the line and the relation. Object crops are optional: a
    post without has none (`object_mask` 0), and a split where no post has any goes without them (logged, counted as
    `crops_unavailable` by [`image_report`]). A missing image is an [`MNREImageError`] naming the file, the line and
    the column (under `missing_images="error"`; an unreadable one too, with the decoder's message).
    """
    splits = list(splits) if splits is not None else list(files)
    for split in splits:
        if split not in files:
            raise FileNotFoundError(f"no post file for split '{split}' (given: {sorted(files)})")
    if relation_labels is None:
        relation_labels = processor.relation_labels
    loader = _SplitLoader(processor, list(relation_labels), use_images, missing_images, "none", num_proc, cache_dir)
    return datasets.DatasetDict({split: loader.load_posts(split, Path(files[split])) for split in splits})


def load_post_records(
    records: list[dict[str, Any]],
    source: str,
    processor: Any,
    *,
    split: str = "test",
    relation_labels: Sequence[str] | None = None,
    use_images: bool = True,
    missing_images: Literal["error", "blank"] = "error",
    crops_unavailable: bool | None = None,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """
    [`load_post_files`] for a part of a post file: `records` as [`parse_post`] made them from rows of the file
    `source` (e.g. a shard of a corpus read with `iter_post_rows`), cached and checked as the whole file's split
    would be, row for row. `crops_unavailable` is what was decided for the whole file (whether no post of it has
    object crops); by default it is decided from `records`.
    """
    if relation_labels is None:
        relation_labels = processor.relation_labels
    loader = _SplitLoader(processor, list(relation_labels), use_images, missing_images, "none", num_proc, cache_dir)
    return loader.load_post_records(split, records, source, crops_unavailable)


def is_post_dataset(dataset: datasets.DatasetDict) -> bool:
    """Whether `dataset` holds posts (a `text` column, as a post file) rather than export_mnre's layout (`token`)."""
    return "token" not in next(iter(dataset.values())).column_names


def read_post_dataset(raw: datasets.Dataset, source: str, num_object_crops: int) -> list[dict[str, Any]]:
    """
    The records of a split of posts in a dataset: the columns of a post file (`mre_data.post_files`), with `image`
    a `datasets.Image` column and `object_crops` a list of them, and `relation` strings or a `ClassLabel` (its
    names). Validated as a post file's rows ([`parse_posts`]); a row is named `source[row]`. The images are not
    read (see [`raise_for_image_paths`]): `image_path` and `crop_paths` only name them.

    Raises:
        [`PostFormatError`]: a missing column, an `image` (or `object_crops`) column that does not hold images, or a
        row as [`parse_posts`] refuses it.
    """
    features = raw.features
    missing = [column for column in REQUIRED_POST_COLUMNS if column not in features]
    if missing:
        raise PostFormatError(
            f"{source}: missing column(s) {missing}; a dataset of posts has a post file's columns (or export_mnre's, "
            "with 'token')"
        )
    if not isinstance(features["image"], datasets.Image):
        raise PostFormatError(
            f"{source}: column 'image' must be a datasets.Image column (its images embedded), got {features['image']}"
        )
    crops_feature = features.get("object_crops")
    if crops_feature is not None and not (
        isinstance(crops_feature, datasets.List | datasets.Sequence)
        and isinstance(crops_feature.feature, datasets.Image)
    ):
        raise PostFormatError(f"{source}: column 'object_crops' must be a list of datasets.Image, got {crops_feature}")
    image_columns = ["image", *(["object_crops"] if crops_feature is not None else [])]
    table = raw.select_columns(image_columns).with_format("arrow")[:]
    has_image = table["image"].is_valid().to_pylist()
    crop_counts = [None] * len(raw)
    if crops_feature is not None:
        crop_counts = pyarrow.compute.list_value_length(table["object_crops"]).to_pylist()
    rows = raw.remove_columns(image_columns).to_list()
    relation = features.get("relation")
    names = relation.names if isinstance(relation, datasets.ClassLabel) else None
    for row, present, count in zip(rows, has_image, crop_counts, strict=True):
        row["image"] = "embedded" if present else None
        row["object_crops"] = None if count is None else [None] * count
        if names is not None and row.get("relation") is not None:
            row["relation"] = names[row["relation"]]
    located = [(f"{source}[{index}]", row) for index, row in enumerate(rows)]
    return parse_posts(located, None, "relation" in features, num_object_crops, source)


def dataset_relations(raw: datasets.Dataset) -> list[str] | None:
    """The names of a split's `relation` `ClassLabel`, in its order; `None` for string relations."""
    relation = raw.features.get("relation")
    return list(relation.names) if isinstance(relation, datasets.ClassLabel) else None


def load_post_dataset(
    dataset: datasets.DatasetDict,
    dataset_name: str,
    processor: Any,
    *,
    splits: Sequence[str] | None = None,
    relation_labels: Sequence[str] | None = None,
    use_images: bool = True,
    missing_images: Literal["error", "blank"] = "error",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """
    [`load_post_files`] for a dataset of posts ([`read_post_dataset`]) as `datasets.load_dataset(dataset_name)`
    returns it, under the MNRE split names (`train`, `val`, `test` from its `train`, `validation`, `test`).

    The same cached splits as the equivalent post files give, with the images decoded from the bytes the rows embed.
    A row whose image (or crop) holds a path but no bytes is an [`MNREFormatError`] naming the split, the row and the
    column: a dataset's images come from its own bytes only. A split where no post has object crops goes without
    them, as for post files.
    """
    available = [split for split in MNRE_SPLITS if HUB_SPLITS[split] in dataset]
    splits = list(splits) if splits is not None else available
    for split in splits:
        if split not in available:
            raise FileNotFoundError(f"{dataset_name} has no '{HUB_SPLITS[split]}' split (it has {sorted(dataset)})")
    if relation_labels is None:
        relation_labels = processor.relation_labels
    loader = _SplitLoader(processor, list(relation_labels), use_images, missing_images, "none", num_proc, cache_dir)
    return datasets.DatasetDict(
        {
            split: loader.load_post_rows(split, dataset[HUB_SPLITS[split]], f"{dataset_name}[{HUB_SPLITS[split]}]")
            for split in splits
        }
    )


@dataclass
class _SplitLoader:
    """Loads one split at a time with the settings [`load_mnre`] shares between splits."""

    processor: Any
    relation_labels: list[str]
    use_images: bool
    missing_images: str
    missing_crops: str
    num_proc: int | None
    cache_dir: str | os.PathLike | None
    use_object_crops: bool = True

    def __post_init__(self) -> None:
        check_policies(self.missing_images, self.missing_crops)
        self.cache_root = Path(self.cache_dir or Path(datasets.config.HF_DATASETS_CACHE) / "hvformer_mnre")
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.text_columns = _text_columns(self.processor)
        self.image_features = _image_features(self.processor)
        module_source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
        self.text_settings = {**_text_settings(self.processor), "module": module_source}
        detector = processor_detector(self.processor)
        self.detect = self.use_images and self.use_object_crops and bool(self.processor.num_object_crops)
        self.detect = self.detect and detector is not None
        self.image_settings = {
            **_image_settings(self.processor),
            "module": module_source,
            "use_images": self.use_images,
            "object_detector": detector.fingerprint() if self.detect else None,
        }

    def load(
        self,
        split: str,
        text_file: Path,
        image_root: Path | None,
        crops_root: Path | None,
        mapping_file: Path | None,
        crops_unavailable: bool,
    ) -> datasets.Dataset:
        """The split of an MNRE folder: its text file's records, their image files."""
        records = read_mnre_file(text_file, split=split, relation_labels=self.relation_labels)
        if not records:
            raise MNREFormatError(f"{text_file}: no examples")
        attach_paths(records, split, text_file, image_root, crops_root, mapping_file, self.processor.num_object_crops)
        for record in records:
            record["crops_unavailable"] = crops_unavailable
        signatures: dict[str, str | None] = {}
        if self.use_images:
            paths = {record["image_path"] for record in records}
            paths.update(path for record in records for path in record["crop_paths"])
            signatures = {path: file_signature(path) for path in sorted(paths)}
            if self.missing_images == "error":
                raise_for_missing_files(split, records, signatures)
        image_inputs = [(record["image_path"], record["crop_paths"]) for record in records]
        return self._cache(
            split,
            records,
            f"{text_file}:{{line}}",
            images=None,
            image_inputs=_sha256(image_inputs, signatures),
            first_error=partial(_decode_failure, self.processor),
        )

    def load_posts(self, split: str, path: Path) -> datasets.Dataset:
        """The split of a post file (`mre_data.post_files`): its validated rows, their image files."""
        records = read_post_file(path, self.processor.num_object_crops)
        return self.load_post_records(split, records, str(path))

    def load_post_records(
        self, split: str, records: list[dict[str, Any]], source: str, crops_unavailable: bool | None = None
    ) -> datasets.Dataset:
        """Validated post records ([`parse_post`]) of the file `source`, their image files; `crops_unavailable` as
        decided for the whole file when `records` are a part of it (default: decided from `records`)."""
        self._check_posts(records, source, crops_unavailable)
        signatures: dict[str, str | None] = {}
        first_location: dict[str, str] = {}
        if self.use_images:
            for record in records:
                first_location.setdefault(record["image_path"], f"{record['location']}: column 'image'")
                for slot, crop in enumerate(record["crop_paths"]):
                    first_location.setdefault(crop, f"{record['location']}: column 'object_crops[{slot}]'")
            signatures = {path: file_signature(path) for path in sorted(first_location)}
            if self.missing_images == "error":
                missing = next((path for path in first_location if signatures[path] is None), None)  # in row order
                if missing is not None:
                    raise MNREImageError(
                        f"{first_location[missing]}: image {missing} is missing (missing_images='blank' uses a blank "
                        "image instead, counted and reported)"
                    )

        def first_error(image_path: str) -> str:
            return f"{first_location[image_path]}: {_decode_failure(self.processor, image_path)}"

        image_inputs = [(record["image_path"], record["crop_paths"]) for record in records]
        return self._cache(
            split,
            records,
            source,
            images=None,
            image_inputs=_sha256(image_inputs, signatures),
            first_error=first_error,
        )

    def load_post_rows(self, split: str, raw: datasets.Dataset, source: str) -> datasets.Dataset:
        """The split of a dataset of posts ([`read_post_dataset`]): its validated rows, the images they embed."""
        records = read_post_dataset(raw, source, self.processor.num_object_crops)
        crops_unavailable = self._check_posts(records, source)
        images = None
        with_crops = self.use_images and bool(self.processor.num_object_crops) and not crops_unavailable
        if self.use_images:
            columns = ["image", *(["object_crops"] if with_crops else [])]
            images = raw.select_columns(columns).cast_column("image", datasets.Image(decode=False))
            if with_crops:
                images = images.cast_column("object_crops", datasets.List(datasets.Image(decode=False)))
            raise_for_image_paths(images, source)
        image_inputs = f"{raw._fingerprint} with crops: {with_crops}" if self.use_images else ""
        return self._cache(split, records, f"{source}[{{row}}]", images, image_inputs, first_error=None)

    def _check_posts(self, records: list[dict[str, Any]], source: str, crops_unavailable: bool | None = None) -> bool:
        """Refuses a post whose relation is not one of the run's; marks and returns whether the split goes without
        object crops (no post has any, while the processor takes them; or as `crops_unavailable` says)."""
        for record in records:
            if "relation" in record and record["relation"] not in self.relation_labels:
                raise PostFormatError(
                    f"{record['location']}: column 'relation': {record['relation']!r:.100} is not a relation of the "
                    f"training data ({', '.join(self.relation_labels)[:200]})"
                )
        if crops_unavailable is None:
            with_crops = self.use_images and bool(self.processor.num_object_crops)
            detector = processor_detector(self.processor) is not None
            crops_unavailable = with_crops and not detector and not any(record["crop_paths"] for record in records)
            if crops_unavailable:
                logger.warning(NO_CROPS_WARNING, source)
        for record in records:
            record["crops_unavailable"] = crops_unavailable
        return crops_unavailable

    def load_hub(self, split: str, raw: datasets.Dataset, source: str, with_crops: bool) -> datasets.Dataset:
        """The split of a dataset in `export_mnre`'s layout: its rows' records, the images its rows embed (and, when
        `with_crops`, their object crops)."""
        records = read_hub_split(raw, split, source)
        if not records:
            raise MNREFormatError(f"{source}: no examples")
        if not self.relation_labels == raw.features["relation"].names:
            raise MNREFormatError(
                f"{source}: the relations of its 'relation' ClassLabel {raw.features['relation'].names} are not the "
                f"model's {self.relation_labels}"
            )
        crop_counts = [0] * len(records)
        crops_unavailable = False
        if with_crops:  # the lengths of the crop lists, read from Arrow without decoding or copying any image
            lists = None
            if "object_crops" in raw.column_names:
                lists = raw.select_columns(["object_crops"]).with_format("arrow")[:]["object_crops"]
            if lists is None or lists.null_count == len(lists):
                problem = "no 'object_crops' column" if lists is None else "'object_crops' is null in every row"
                remedy = "export the MNRE folder with its object crops (img_vg/ and the mre_{split}_dict.pth mappings)"
                detected = processor_detector(self.processor) is not None
                _without_crops(DETECTED if detected else self.missing_crops, f"{source}: {problem}", remedy)
                crops_unavailable, with_crops = not detected, False
            else:
                crop_counts = pyarrow.compute.list_value_length(lists).fill_null(0).to_pylist()
        for record, count in zip(records, crop_counts, strict=True):
            record["image_path"] = f"{source}/{record['img_id']}"
            slots = range(min(count, self.processor.num_object_crops))
            record["crop_paths"] = [f"{source}/{record['img_id']} object crop {slot}" for slot in slots]
            record["crops_unavailable"] = crops_unavailable
        images = None
        if self.use_images:
            columns = ["image", *(["object_crops"] if with_crops else [])]
            images = raw.select_columns(columns).cast_column("image", datasets.Image(decode=False))
            if with_crops:
                images = images.cast_column("object_crops", datasets.List(datasets.Image(decode=False)))
            raise_for_image_paths(images, source)
        image_inputs = f"{raw._fingerprint} with crops: {with_crops}" if self.use_images else ""
        return self._cache(split, records, f"{source}[{{row}}]", images, image_inputs, first_error=None)

    def _cache(
        self,
        split: str,
        records: list[dict[str, Any]],
        where: str,
        images: datasets.Dataset | None,
        image_inputs: str,
        first_error: Callable[[str], str] | None,
    ) -> datasets.Dataset:
        """Tokenizes `records` and decodes their images (the files they name, or the rows of `images`, a Hub dataset's
        image columns) into the cache. `where` names a record in errors (see `_tokenize_batch`), `image_inputs` is
        what the images depend on besides the settings, `first_error` gives the decoder's message for an unreadable
        image."""
        with_kind = any("kind" in record for record in records)
        labelled = "relation" in records[0]
        for record in records:
            if labelled:
                record["labels"] = self.relation_labels.index(record["relation"])
            if with_kind:
                record.setdefault("kind", "")
        if "text" in records[0]:
            features = _post_features(self.relation_labels, labelled)
        else:
            features = _base_features(self.relation_labels, with_kind)
        base = datasets.Dataset.from_list(records, features=features)
        text_fingerprint = _sha256("text", records, self.text_settings)
        image_fingerprint = _sha256("images", image_inputs, self.image_settings)
        text = base.map(
            _tokenize_batch,
            batched=True,
            fn_kwargs={"processor": self.processor, "where": where, "text_columns": self.text_columns},
            features=datasets.Features({**base.features, **_text_features(self.text_columns)}),
            cache_file_name=str(self.cache_root / f"{split}-text-{text_fingerprint}.arrow"),
            new_fingerprint=text_fingerprint,
            desc=f"Tokenizing {split}",
        )
        decoded = (base if images is None else images).map(
            _encode_images_batch,
            batched=True,
            batch_size=_IMAGE_BATCH_SIZE,
            writer_batch_size=_IMAGE_BATCH_SIZE,
            fn_kwargs={"processor": self.processor, "use_images": self.use_images, "detect": self.detect},
            remove_columns=(base if images is None else images).column_names,
            features=self.image_features,
            num_proc=self.num_proc,
            cache_file_name=str(self.cache_root / f"{split}-images-{image_fingerprint}.arrow"),
            new_fingerprint=image_fingerprint,
            desc=f"Decoding {split} images",
        )
        dataset = datasets.concatenate_datasets([text, decoded], axis=1)
        _apply_image_policy(split, dataset, self.missing_images, first_error)
        model_columns = [column for column in MODEL_COLUMNS if column in dataset.column_names]
        dataset.set_format("numpy", columns=model_columns, output_all_columns=True, dtype=None)
        return dataset
