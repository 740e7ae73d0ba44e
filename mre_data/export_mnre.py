"""Exports an MNRE-format folder as a Hugging Face dataset repository: parquet shards per split with the images and
object crops embedded, and a dataset card, written locally and optionally pushed to the Hub.

    python -m mre_data.export_mnre --data_dir data/mnre --output_dir mnre-hub [--push_to_hub USER/mnre --private]

The folder is read as [`load_mnre`] reads it (the same text files, image folder, crops folder and crops mappings, and
the same `--missing_images` and `--missing_crops` policies) and streamed: one row group of posts at a time, so memory
stays bounded for the 15k posts of MNRE with their images. Its relations, and their ids, are those a run from the
folder uses ([`folder_dataset`]). `load_dataset(OUTPUT_DIR)` (or the Hub id) then reads it with `datasets.Image`
features, and `run_mre.py --dataset_name OUTPUT_DIR_OR_ID` trains from it.

The output folder is written whole beside its place and renamed into it. The export writes only into a folder that
does not exist or is empty, or, with `--overwrite`, replaces a previous export (recognised by the manifest
[`MANIFEST_FILE`] it writes, listing its files, and by holding nothing else); it never replaces any other folder, nor
one inside the data it reads or holding it.

[`load_mnre`]: mre_data.mnre_dataset.load_mnre
[`folder_dataset`]: mre_data.mnre.folder_dataset
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from huggingface_hub import HfApi

from processing.image_loading import load_image
from processing.image_processing_hvformer import HVFormerImageProcessor
from processing.object_detection import ObjectDetector
from training.run_files import atomic_folder

from .mnre import HUB_SPLITS, MNRE_RELATIONS, MNRE_SPLITS, find_split_file, folder_dataset, read_mnre_file
from .mnre_dataset import (
    DETECTED,
    MISSING_CROPS_POLICIES,
    MISSING_IMAGES_POLICIES,
    attach_paths,
    check_policies,
    file_signature,
    image_folders,
    raise_for_missing_files,
    resolve_crops_mapping,
)

logger = logging.getLogger(__name__)

ROWS_PER_GROUP = 64
"""Posts per parquet row group: what the export holds in memory at once (about 4 images each)."""
MAX_SHARD_BYTES = 500 * 1024 * 1024
"""A new parquet shard starts once a shard holds this many bytes (the Hub's usual 500 MB)."""
DATA_FOLDER = "data"
CARD_FILE = "README.md"
MANIFEST_FILE = "hvformer_export.json"
"""What marks a folder as an export (and lists its files): only such a folder is ever replaced."""
MANIFEST_FORMAT = "hvformer export_mnre"
LOCAL_DATASET_ID = "path/to/dataset"
"""What the card's snippet loads when the export has no Hub id."""
DEFAULT_NUM_OBJECT_CROPS = inspect.signature(HVFormerImageProcessor.__init__).parameters["num_object_crops"].default
"""Crops an object detector makes per post without crops: the image processor's default number of crop slots."""


class ExportDestinationError(ValueError):
    """An output folder the export may not write: not empty and not a previous export, a previous export without
    `overwrite=True`, or a folder that overlaps the data read."""


def export_features(relation_labels: Sequence[str], with_kind: bool = False) -> datasets.Features:
    """The columns of an exported split: the post's words, the subject `h` and object `t` (name and `[start, end)`
    word positions), the relation as a `ClassLabel` in `relation_labels` order, the image and the object crops as
    `datasets.Image` (bytes embedded; `None` for a file that was missing under `missing_images="blank"`; the crop
    list `None` in every row of a split exported without crops under `missing_crops="none"`)."""
    entity = {"name": datasets.Value("string"), "pos": datasets.List(datasets.Value("int32"), length=2)}
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "token": datasets.List(datasets.Value("string")),
            "h": entity,
            "t": entity,
            "img_id": datasets.Value("string"),
            "relation": datasets.ClassLabel(names=list(relation_labels)),
            **({"kind": datasets.Value("string")} if with_kind else {}),
            "image": datasets.Image(),
            "object_crops": datasets.List(datasets.Image()),
        }
    )


@dataclass
class SplitExport:
    """What the export of one split wrote and found."""

    split: str
    examples: int = 0
    with_crops: bool = True
    num_bytes: int = 0
    shards: list[str] = field(default_factory=list)
    images_embedded: int = 0
    images_missing: list[str] = field(default_factory=list)
    crops_embedded: int = 0
    crops_missing: list[str] = field(default_factory=list)
    crops_detected: int = 0
    """Of `crops_embedded`, those an object detector made for posts without crops of their own."""


def _embedded(path: str, missing: list[str]) -> dict[str, Any] | None:
    """`{"bytes", "path"}` of an image file (its bytes as they are, its file name), or `None` when it is missing."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        missing.append(path)
        return None
    return {"bytes": data, "path": os.path.basename(path)}


def _detected(
    image_path: str, detector: ObjectDetector | None, num_object_crops: int, report: SplitExport
) -> list[dict[str, Any]]:
    """The crops `detector` cuts out of the full-size image at `image_path`, as PNG files (none without a detector)."""
    if detector is None:
        return []
    crops = detector.crops([load_image(image_path)], num_object_crops)[0]
    report.crops_detected += len(crops)
    stem = os.path.splitext(os.path.basename(image_path))[0]
    embedded = []
    for slot, crop in enumerate(crops):
        data = io.BytesIO()
        crop.save(data, format="PNG")
        embedded.append({"bytes": data.getvalue(), "path": f"{stem}-detected-{slot}.png"})
    return embedded


def _rows(
    records: list[dict[str, Any]],
    report: SplitExport,
    with_kind: bool,
    detector: ObjectDetector | None,
    num_object_crops: int,
) -> Iterator[dict[str, Any]]:
    for record in records:
        image = _embedded(record["image_path"], report.images_missing)
        crops = [_embedded(path, report.crops_missing) for path in record["crop_paths"]]
        if not record["crop_paths"] and image is not None:
            crops = _detected(record["image_path"], detector, num_object_crops, report)
        report.images_embedded += image is not None
        report.crops_embedded += sum(crop is not None for crop in crops)
        yield {
            "id": record["id"],
            "token": record["token"],
            "h": record["h"],
            "t": record["t"],
            "img_id": record["img_id"],
            "relation": record["relation"],
            **({"kind": record.get("kind", "")} if with_kind else {}),
            "image": image,
            "object_crops": crops if report.with_crops else None,
        }


def _write_split(
    records: list[dict[str, Any]],
    split: str,
    with_crops: bool,
    features: datasets.Features,
    folder: Path,
    max_shard_bytes: int,
    detector: ObjectDetector | None = None,
    num_object_crops: int = DEFAULT_NUM_OBJECT_CROPS,
) -> SplitExport:
    """Streams `records` into parquet shards `folder/data/{split}-NNNNN-of-NNNNN.parquet`, `ROWS_PER_GROUP` rows at
    a time (`object_crops` `None` in every row unless `with_crops`); `detector` crops the posts without crops."""
    report = SplitExport(split=split, examples=len(records), with_crops=with_crops)
    schema = features.arrow_schema
    writer: pq.ParquetWriter | None = None
    parts: list[Path] = []

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            report.num_bytes += parts[-1].stat().st_size
            writer = None

    rows = _rows(records, report, "kind" in features, detector, num_object_crops)
    while batch := [row for _, row in zip(range(ROWS_PER_GROUP), rows, strict=False)]:
        if writer is not None and parts[-1].stat().st_size >= max_shard_bytes:
            close()
        if writer is None:
            parts.append(folder / DATA_FOLDER / f"{split}-{len(parts):05d}.parquet.part")
            writer = pq.ParquetWriter(parts[-1], schema)
        writer.write_table(pa.Table.from_pylist([features.encode_example(row) for row in batch], schema=schema))
    close()
    for index, part in enumerate(parts):
        name = f"{split}-{index:05d}-of-{len(parts):05d}.parquet"
        part.replace(part.with_name(name))
        report.shards.append(f"{DATA_FOLDER}/{name}")
    return report


DATASET_CARD = """\
---
{metadata}---

# {title}

{description}

```bash
python -m mre_data.export_mnre --data_dir DATA_DIR --output_dir OUTPUT_DIR
```

```python
from datasets import load_dataset

dataset = load_dataset("{load_id}")
```

## Splits

| split | posts | images | object crops | missing images | missing crops |
|---|---|---|---|---|---|
{split_rows}

Missing files were refused (`--missing_images error`, the default) or, with `--missing_images blank`, stored as
`None` and reported here: a training run then treats them by its own `missing_images` policy. A split without object
crops (no crops folder or mapping, exported with `--missing_crops none`) has `object_crops` `None` in every row; a
training run that takes crops refuses it unless told `--missing_crops none`.

## Columns

| column | type | what |
|---|---|---|
| `id` | string | `{{split}}-{{line index}}` in the source file (val lines keep `val-N`) |
| `token` | list of strings | the post's words, as in MNRE's `token` |
| `h`, `t` | `name`, `pos` | subject and object: the name and `[start, end)` word positions in `token` |
| `img_id` | string | the image's file name in the source folder |
| `relation` | ClassLabel | one of {num_labels} relations, by id: {relation_ids} |
{kind_row}| `image` | Image | the post's picture (bytes as in the source folder) |
| `object_crops` | list of Image | the picture's visual-grounding object crops, in their mapping's order |

{source}"""

MNRE_DESCRIPTION = """\
MNRE (Zheng et al., ICME 2021), the multimodal neural relation extraction dataset of social-media posts, as a
Hugging Face dataset: each row is a post (its words), a subject `h` and an object `t` named in it, the relation
between them, the post's image and its visual-grounding object crops, with the images embedded. Exported from an
MNRE folder by the hvformer project:"""

OTHER_DESCRIPTION = """\
{title}, posts in MNRE's format, as a Hugging Face dataset: each row is a post (its words), a subject `h` and an object
`t` named in it, the relation between them, the post's image and its object crops, with the images embedded. Exported
from an MNRE-format folder by the hvformer project:"""

MNRE_SOURCE = """\
## Source and licence

Text annotations: the MNRE repository (thecharm/MNRE); images: the tweets' pictures as distributed by the MNRE
authors; object crops: the visual-grounding crops of the MKGformer / HVPNeT release. This export adds nothing to them
and changes no byte of the images. Their terms apply (`license: other`): the posts come from Twitter, so keep the
repository private unless you may share them, and cite the dataset:

```bibtex
@inproceedings{zheng2021mnre,
  title     = {MNRE: A Challenge Multimodal Dataset for Neural Relation Extraction with Visual Evidence in
               Social Media Posts},
  author    = {Zheng, Changmeng and Wu, Zhiwei and Feng, Junhao and Fu, Ze and Cai, Yi},
  booktitle = {2021 IEEE International Conference on Multimedia and Expo (ICME)},
  pages     = {1--6},
  year      = {2021},
  doi       = {10.1109/ICME51207.2021.9428274}
}
```
"""

OTHER_SOURCE = """\
## Source and licence

This export adds nothing to the folder's posts and changes no byte of its images; the terms of the data it was
exported from apply (`license: other`).
"""


def _crops_cell(report: SplitExport) -> str:
    """The card's count of a split's object crops."""
    if not report.with_crops:
        return "none (no crops)"
    if report.crops_detected:
        return f"{report.crops_embedded} ({report.crops_detected} made by an object detector)"
    return str(report.crops_embedded)


def render_dataset_card(reports: Sequence[SplitExport], features: datasets.Features, title: str, load_id: str) -> str:
    """The dataset card: YAML metadata (licence, task, the parquet files of each split, the features) and the text,
    MNRE's description, source and citation when the relations are MNRE's."""
    relation_labels = features["relation"].names
    is_mnre = list(relation_labels) == list(MNRE_RELATIONS)
    metadata = {
        "license": "other",
        "language": ["en"],
        "pretty_name": title,
        "task_categories": ["text-classification"],
        "tags": ["multimodal-relation-extraction", "relation-extraction", *(["mnre"] if is_mnre else []), "image"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": report.split, "path": f"{DATA_FOLDER}/{report.split}-*"} for report in reports
                ],
            }
        ],
        "dataset_info": {
            "features": features._to_yaml_list(),
            "splits": [
                {"name": report.split, "num_bytes": report.num_bytes, "num_examples": report.examples}
                for report in reports
            ],
        },
    }
    split_rows = "\n".join(
        f"| {report.split} | {report.examples} | {report.images_embedded} | "
        f"{_crops_cell(report)} | "
        f"{len(report.images_missing)} | {len(report.crops_missing)} |"
        for report in reports
    )
    kind_row = "| `kind` | string | how the built-in sample made the post |\n" if "kind" in features else ""
    relation_ids = ", ".join(f"{index} `{name}`" for index, name in enumerate(relation_labels))
    return DATASET_CARD.format(
        metadata=yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True),
        title=title,
        description=MNRE_DESCRIPTION if is_mnre else OTHER_DESCRIPTION.format(title=title),
        load_id=load_id,
        split_rows=split_rows,
        num_labels=len(relation_labels),
        relation_ids=relation_ids,
        kind_row=kind_row,
        source=MNRE_SOURCE if is_mnre else OTHER_SOURCE,
    )


# ----------------------------------------------------------------------------------------------------------------
# The output folder
# ----------------------------------------------------------------------------------------------------------------


def _entries(folder: Path) -> list[str]:
    """Every file, folder and link under `folder` (links not followed), as POSIX paths relative to it."""
    entries = []
    for parent, folders, files in os.walk(folder):
        relative = Path(parent).relative_to(folder)
        entries += [(relative / name).as_posix() for name in folders + files]
    return entries


def _not_an_export(folder: Path) -> str | None:
    """Why `folder` (an existing, non-empty folder) is not an export this module wrote, or `None` when it is: it has
    a manifest of [`MANIFEST_FORMAT`] and nothing but the files it lists and their `data` folder."""
    manifest = folder / MANIFEST_FILE
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {MANIFEST_FILE}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"its {MANIFEST_FILE} is unreadable ({type(error).__name__})"
    if not (isinstance(info, dict) and info.get("format") == MANIFEST_FORMAT and isinstance(info.get("files"), list)):
        return f"its {MANIFEST_FILE} is not an export's manifest"
    others = sorted(set(_entries(folder)) - {MANIFEST_FILE, DATA_FOLDER, *map(str, info["files"])})
    if others:
        return f"it holds {len(others)} entries the export did not write: {', '.join(others[:3])}"
    return None


def check_output_dir(output_dir: str | os.PathLike, inputs: Sequence[Path], overwrite: bool = False) -> None:
    """
    Refuses an output folder the export may not write (checked before the export reads the data, and again before
    it renames its new folder into place).

    Raises:
        [`ExportDestinationError`]: `output_dir` is one of `inputs` (the data folder, image folder, crops folder and
        mapping), lies inside one or holds one; it is a symbolic link or a file; it is a non-empty folder that is not
        a previous export; or it is a previous export and `overwrite` is `False`.
    """
    output_dir = Path(output_dir)
    resolved = output_dir.resolve()
    for source in inputs:
        source_resolved = source.resolve()
        if resolved.is_relative_to(source_resolved) or source_resolved.is_relative_to(resolved):
            raise ExportDestinationError(
                f"output folder {output_dir} and the data {source} overlap (the same, or one inside the other): the "
                "export replaces its output folder whole; choose an output folder outside the data"
            )
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise ExportDestinationError(f"output folder {output_dir} is a symbolic link or a file: choose a folder")
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    problem = _not_an_export(output_dir)
    if problem is not None:
        raise ExportDestinationError(
            f"output folder {output_dir} is not empty and is not a previous export ({problem}): choose an empty or "
            "new folder (the export never replaces a folder it did not write)"
        )
    if not overwrite:
        raise ExportDestinationError(
            f"output folder {output_dir} holds a previous export: pass overwrite=True (--overwrite) to replace it"
        )


def export_mnre(
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    crops_dir: str | os.PathLike | None = None,
    crops_mapping: str | os.PathLike | None = None,
    relation_labels: Sequence[str] | None = None,
    missing_images: str = "error",
    missing_crops: str = "error",
    overwrite: bool = False,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    title: str | None = None,
    load_id: str | None = None,
    object_detector: str | None = None,
    num_object_crops: int = DEFAULT_NUM_OBJECT_CROPS,
) -> list[SplitExport]:
    """
    Writes the MNRE-format folder `data_dir` as a dataset repository into `output_dir` (written whole beside it and
    renamed into place): the dataset card `README.md`, `data/{train,validation,test}-NNNNN-of-NNNNN.parquet` and the
    manifest [`MANIFEST_FILE`].

    Args:
        data_dir, image_dir, crops_dir, crops_mapping: as for [`load_mnre`]: the text files, `img_org/`, `img_vg/`
            and `mre_{split}_dict.*` by default. Every crop a mapping lists is exported (a run takes the first
            `num_object_crops`).
        relation_labels: The `ClassLabel` names, in id order. Defaults to the folder's relations as a run from the
            folder takes them ([`folder_dataset`]).
        missing_images: `"error"` refuses a missing image or crop before anything is written (their count and first
            paths); `"blank"` stores `None` in their place, counted in the card and the returned reports.
        missing_crops: `"error"` refuses a folder without a crops folder, or a split without a crops mapping (as
            [`load_mnre`]); `"none"` exports such a split with `object_crops` `None` in every row.
        overwrite: Replace `output_dir` when it holds a previous export (never any other non-empty folder).
        max_shard_bytes: A split's shard is closed once it holds this many bytes.
        title: The card's title (defaults to the folder's name as [`folder_dataset`] gives it). load_id: The id the
            card's snippet loads (defaults to [`LOCAL_DATASET_ID`]).
        object_detector: An object detector (`AutoModelForObjectDetection` Hub id or folder) that crops the
            `num_object_crops` top boxes of each post without crops of its own, cut from the full-size image and
            embedded as PNG files (a folder or split without crops is then exported with the detector's).

    Returns:
        One [`SplitExport`] per split found under `data_dir` (Hub split names: `train`, `validation`, `test`).

    Raises:
        [`ExportDestinationError`]: an output folder that [`check_output_dir`] refuses.
    """
    check_policies(missing_images, missing_crops)
    detector = None if object_detector is None else ObjectDetector.from_pretrained(object_detector)
    crops_policy = missing_crops if detector is None else DETECTED
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    image_root, crops_root = image_folders(data_dir, image_dir, crops_dir, True, crops_policy)
    inputs = [data_dir, image_root, *(Path(path) for path in (crops_root, crops_mapping) if path is not None)]
    check_output_dir(output_dir, inputs, overwrite)
    name, found_labels = folder_dataset(data_dir)
    relation_labels = list(relation_labels) if relation_labels is not None else found_labels

    splits = [(split, path) for split in MNRE_SPLITS if (path := find_split_file(data_dir, split)) is not None]
    if not splits:
        raise FileNotFoundError(f"no MNRE text file (mnre_{{train,val,test}}.txt) under {data_dir}")
    loaded = []
    for split, text_file in splits:
        records = read_mnre_file(text_file, split=split, relation_labels=relation_labels)
        mapping = None
        if crops_root is not None:
            mapping = resolve_crops_mapping(crops_mapping, split, text_file, data_dir, crops_policy)
        attach_paths(records, split, text_file, image_root, crops_root, mapping, num_object_crops=None)
        if missing_images == "error":
            paths = {record["image_path"] for record in records}
            paths.update(path for record in records for path in record["crop_paths"])
            raise_for_missing_files(split, records, {path: file_signature(path) for path in paths})
        loaded.append((split, records, mapping is not None or detector is not None))

    with_kind = any("kind" in record for _, records, _ in loaded for record in records)
    features = export_features(relation_labels, with_kind)
    with atomic_folder(output_dir) as staging:
        (staging / DATA_FOLDER).mkdir()
        reports = [
            _write_split(
                records, HUB_SPLITS[split], with_crops, features, staging, max_shard_bytes, detector, num_object_crops
            )
            for split, records, with_crops in loaded
        ]
        card = render_dataset_card(reports, features, title or name, load_id or LOCAL_DATASET_ID)
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        files = [CARD_FILE, *(shard for report in reports for shard in report.shards)]
        manifest = {"format": MANIFEST_FORMAT, "files": files}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        check_output_dir(output_dir, inputs, overwrite)  # again: the folder may have changed while the export ran
    for report in reports:
        substituted = len(report.images_missing) + len(report.crops_missing)
        if substituted:
            logger.warning(
                "split '%s': %d missing images and %d missing crops stored as None (first: %s)",
                report.split,
                len(report.images_missing),
                len(report.crops_missing),
                ", ".join((report.images_missing + report.crops_missing)[:3]),
            )
    return reports


def push_dataset_to_hub(folder: str | os.PathLike, repo_id: str, private: bool, token: str | None = None) -> str:
    """Creates the dataset repository `repo_id` (if needed) and uploads the exported `folder` (its card and parquet
    shards); returns the repo id."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        allow_patterns=[CARD_FILE, f"{DATA_FOLDER}/*.parquet"],
        commit_message="Upload a dataset exported by hvformer",
    )
    return repo_id


def main(argv: Sequence[str] | None = None) -> list[SplitExport]:
    parser = argparse.ArgumentParser(
        prog="python -m mre_data.export_mnre", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--data_dir", required=True, help="MNRE folder (mnre_{train,val,test}.txt, img_org, img_vg)")
    parser.add_argument(
        "--output_dir", required=True, help="where to write the dataset repository (a new or empty folder)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR when it holds a previous export")
    parser.add_argument("--image_dir", help="images: {image_dir}/{split}/{img_id} (default: DATA_DIR/img_org)")
    parser.add_argument("--crops_dir", help="object crops: {crops_dir}/{split}/crops/... (default: DATA_DIR/img_vg)")
    parser.add_argument("--crops_mapping", help="folder of mre_{split}_dict.{pth,json} (default: beside the text)")
    parser.add_argument(
        "--relation_labels",
        nargs="+",
        metavar="LABEL",
        help="the relations in id order (default: MNRE's when the folder's relations are MNRE's, else None first "
        "and the folder's others sorted; the built-in sample's own)",
    )
    parser.add_argument("--title", help="the dataset card's title (default: the data's name)")
    parser.add_argument("--missing_images", choices=MISSING_IMAGES_POLICIES, default="error")
    parser.add_argument("--missing_crops", choices=MISSING_CROPS_POLICIES, default="error")
    parser.add_argument(
        "--object_detector",
        metavar="MODEL",
        help="an object detector (AutoModelForObjectDetection Hub id or folder) that crops each post without crops",
    )
    parser.add_argument(
        "--num_object_crops",
        type=int,
        default=DEFAULT_NUM_OBJECT_CROPS,
        help="crops the detector makes per post (default: %(default)s)",
    )
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="also upload to this Hub dataset repository")
    parser.add_argument("--private", action="store_true", help="make the Hub repository private")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        reports = export_mnre(
            args.data_dir,
            args.output_dir,
            image_dir=args.image_dir,
            crops_dir=args.crops_dir,
            crops_mapping=args.crops_mapping,
            relation_labels=args.relation_labels,
            missing_images=args.missing_images,
            missing_crops=args.missing_crops,
            overwrite=args.overwrite,
            title=args.title,
            load_id=args.push_to_hub,
            object_detector=args.object_detector,
            num_object_crops=args.num_object_crops,
        )
    except ExportDestinationError as error:
        parser.error(str(error))
    for report in reports:
        crops = f"{_crops_cell(report)} crops" if report.with_crops else "no crops"
        print(
            f"{report.split}: {report.examples} posts, {report.images_embedded} images and {crops} embedded, "
            f"{len(report.images_missing)} + {len(report.crops_missing)} missing, {len(report.shards)} shard(s), "
            f"{report.num_bytes / 1e6:.1f} MB"
        )
    print(f"Dataset repository: {args.output_dir}/ (load_dataset({str(args.output_dir)!r}))")
    if args.push_to_hub:
        repo_id = push_dataset_to_hub(args.output_dir, args.push_to_hub, args.private)
        print(f"Pushed to https://huggingface.co/datasets/{repo_id}")
    return reports


if __name__ == "__main__":
    main()
