"""Exports an MNRE folder as a Hugging Face dataset repository: parquet shards per split with the images and object
crops embedded, and a dataset card, written locally and optionally pushed to the Hub.

    python -m processing.export_mnre --data_dir data/mnre --output_dir mnre-hub [--push_to_hub USER/mnre --private]

The folder is read as [`load_mnre`] reads it (the same text files, image folder, crops folder and crops mappings, and
the same `--missing_images` policy) and streamed: one row group of posts at a time, so memory stays bounded for the
15k posts of MNRE with their images. `load_dataset(OUTPUT_DIR)` (or the Hub id) then reads it with `datasets.Image`
features, and `run_mre.py --dataset_name OUTPUT_DIR_OR_ID` trains from it.

[`load_mnre`]: processing.mnre_dataset.load_mnre
"""

from __future__ import annotations

import argparse
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

from training.run_files import atomic_folder

from .mnre import HUB_SPLITS, MNRE_RELATIONS, MNRE_SPLITS, find_split_file, read_mnre_file
from .mnre_dataset import (
    attach_paths,
    check_missing_images,
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


def export_features(relation_labels: Sequence[str], with_kind: bool = False) -> datasets.Features:
    """The columns of an exported split: the post's words, the subject `h` and object `t` (name and `[start, end)`
    word positions), the relation as a `ClassLabel` in `relation_labels` order, the image and the object crops as
    `datasets.Image` (bytes embedded; `None` for a file that was missing under `missing_images="blank"`)."""
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
    num_bytes: int = 0
    shards: list[str] = field(default_factory=list)
    images_embedded: int = 0
    images_missing: list[str] = field(default_factory=list)
    crops_embedded: int = 0
    crops_missing: list[str] = field(default_factory=list)


def _embedded(path: str, missing: list[str]) -> dict[str, Any] | None:
    """`{"bytes", "path"}` of an image file (its bytes as they are, its file name), or `None` when it is missing."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        missing.append(path)
        return None
    return {"bytes": data, "path": os.path.basename(path)}


def _rows(records: list[dict[str, Any]], report: SplitExport, with_kind: bool) -> Iterator[dict[str, Any]]:
    for record in records:
        image = _embedded(record["image_path"], report.images_missing)
        crops = [_embedded(path, report.crops_missing) for path in record["crop_paths"]]
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
            "object_crops": crops,
        }


def _write_split(
    records: list[dict[str, Any]], split: str, features: datasets.Features, folder: Path, max_shard_bytes: int
) -> SplitExport:
    """Streams `records` into parquet shards `folder/data/{split}-NNNNN-of-NNNNN.parquet`, `ROWS_PER_GROUP` rows at
    a time."""
    report = SplitExport(split=split, examples=len(records))
    schema = features.arrow_schema
    writer: pq.ParquetWriter | None = None
    parts: list[Path] = []

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            report.num_bytes += parts[-1].stat().st_size
            writer = None

    rows = _rows(records, report, "kind" in features)
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

MNRE (Zheng et al., ICME 2021), the multimodal neural relation extraction dataset of social-media posts, as a
Hugging Face dataset: each row is a post (its words), a subject `h` and an object `t` named in it, the relation
between them, the post's image and its visual-grounding object crops, with the images embedded. Exported from an
MNRE folder by the hvformer project:

```bash
python -m processing.export_mnre --data_dir DATA_DIR --output_dir OUTPUT_DIR
```

```python
from datasets import load_dataset

mnre = load_dataset("{load_id}")
```

## Splits

| split | posts | images | object crops | missing images | missing crops |
|---|---|---|---|---|---|
{split_rows}

Missing files were refused (`--missing_images error`, the default) or, with `--missing_images blank`, stored as
`None` and reported here: a training run then treats them by its own `missing_images` policy.

## Columns

| column | type | what |
|---|---|---|
| `id` | string | `{{split}}-{{line index}}` in the source file (val lines keep `val-N`) |
| `token` | list of strings | the post's words, as in MNRE's `token` |
| `h`, `t` | `name`, `pos` | subject and object: the name and `[start, end)` word positions in `token` |
| `img_id` | string | the image's file name in the MNRE download |
| `relation` | ClassLabel | one of {num_labels} relations, in MNRE's order (`None` = no relation, id 0) |
{kind_row}| `image` | Image | the post's picture (bytes as downloaded) |
| `object_crops` | list of Image | the picture's visual-grounding object crops, in their mapping's order |

## Source and licence

Text annotations: the MNRE repository (thecharm/MNRE); images: the tweets' pictures as distributed by the MNRE
authors; object crops: the visual-grounding crops of the MKGformer / HVPNeT release. This export adds nothing to them
and changes no byte of the images. Their terms apply (`license: other`): the posts come from Twitter, so keep the
repository private unless you may share them, and cite the dataset:

```bibtex
@inproceedings{{zheng2021mnre,
  title     = {{MNRE: A Challenge Multimodal Dataset for Neural Relation Extraction with Visual Evidence in
               Social Media Posts}},
  author    = {{Zheng, Changmeng and Wu, Zhiwei and Feng, Junhao and Fu, Ze and Cai, Yi}},
  booktitle = {{2021 IEEE International Conference on Multimedia and Expo (ICME)}},
  pages     = {{1--6}},
  year      = {{2021}},
  doi       = {{10.1109/ICME51207.2021.9428274}}
}}
```
"""


def render_dataset_card(reports: Sequence[SplitExport], features: datasets.Features, title: str, load_id: str) -> str:
    """The dataset card: YAML metadata (licence, task, the parquet files of each split, the features) and the text."""
    metadata = {
        "license": "other",
        "language": ["en"],
        "pretty_name": title,
        "task_categories": ["text-classification"],
        "tags": ["multimodal-relation-extraction", "relation-extraction", "mnre", "image"],
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
        f"| {report.split} | {report.examples} | {report.images_embedded} | {report.crops_embedded} | "
        f"{len(report.images_missing)} | {len(report.crops_missing)} |"
        for report in reports
    )
    kind_row = "| `kind` | string | how the built-in sample made the post |\n" if "kind" in features else ""
    return DATASET_CARD.format(
        metadata=yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True),
        title=title,
        load_id=load_id,
        split_rows=split_rows,
        num_labels=features["relation"].num_classes,
        kind_row=kind_row,
    )


def export_mnre(
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    crops_dir: str | os.PathLike | None = None,
    crops_mapping: str | os.PathLike | None = None,
    relation_labels: Sequence[str] = MNRE_RELATIONS,
    missing_images: str = "error",
    max_shard_bytes: int = MAX_SHARD_BYTES,
    title: str = "MNRE",
    load_id: str | None = None,
) -> list[SplitExport]:
    """
    Writes the MNRE folder `data_dir` as a dataset repository into `output_dir` (replaced whole, atomically): the
    dataset card `README.md` and `data/{train,validation,test}-NNNNN-of-NNNNN.parquet`.

    Args:
        data_dir, image_dir, crops_dir, crops_mapping: as for [`load_mnre`]: the text files, `img_org/`, `img_vg/`
            and `mre_{split}_dict.*` by default. Every crop a mapping lists is exported (a run takes the first
            `num_object_crops`).
        relation_labels: The `ClassLabel` names, in id order.
        missing_images: `"error"` refuses a missing image or crop before anything is written (their count and first
            paths); `"blank"` stores `None` in their place, counted in the card and the returned reports.
        max_shard_bytes: A split's shard is closed once it holds this many bytes.
        title: The card's title. load_id: The id the card's snippet loads (defaults to `output_dir`).

    Returns:
        One [`SplitExport`] per split found under `data_dir` (Hub split names: `train`, `validation`, `test`).
    """
    check_missing_images(missing_images)
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    image_root, crops_root = image_folders(data_dir, image_dir, crops_dir, use_object_crops=True)

    splits = [(split, path) for split in MNRE_SPLITS if (path := find_split_file(data_dir, split)) is not None]
    if not splits:
        raise FileNotFoundError(f"no MNRE text file (mnre_{{train,val,test}}.txt) under {data_dir}")
    loaded = []
    for split, text_file in splits:
        records = read_mnre_file(text_file, split=split, relation_labels=relation_labels)
        mapping = None if crops_root is None else resolve_crops_mapping(crops_mapping, split, text_file, data_dir)
        attach_paths(records, split, image_root, crops_root, mapping, num_object_crops=None)
        if missing_images == "error":
            paths = {record["image_path"] for record in records}
            paths.update(path for record in records for path in record["crop_paths"])
            raise_for_missing_files(split, records, {path: file_signature(path) for path in paths})
        loaded.append((split, records))

    with_kind = any("kind" in record for _, records in loaded for record in records)
    features = export_features(relation_labels, with_kind)
    with atomic_folder(output_dir) as staging:
        (staging / DATA_FOLDER).mkdir()
        reports = [
            _write_split(records, HUB_SPLITS[split], features, staging, max_shard_bytes) for split, records in loaded
        ]
        card = render_dataset_card(reports, features, title, load_id or str(output_dir))
        (staging / "README.md").write_text(card, encoding="utf-8")
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
    """Creates the dataset repository `repo_id` (if needed) and uploads the exported `folder`; returns the repo id."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        allow_patterns=["README.md", f"{DATA_FOLDER}/*.parquet"],
        commit_message="Upload MNRE exported by hvformer",
    )
    return repo_id


def main(argv: Sequence[str] | None = None) -> list[SplitExport]:
    parser = argparse.ArgumentParser(
        prog="python -m processing.export_mnre", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--data_dir", required=True, help="MNRE folder (mnre_{train,val,test}.txt, img_org, img_vg)")
    parser.add_argument("--output_dir", required=True, help="where to write the dataset repository")
    parser.add_argument("--image_dir", help="images: {image_dir}/{split}/{img_id} (default: DATA_DIR/img_org)")
    parser.add_argument("--crops_dir", help="object crops: {crops_dir}/{split}/crops/... (default: DATA_DIR/img_vg)")
    parser.add_argument("--crops_mapping", help="folder of mre_{split}_dict.{pth,json} (default: beside the text)")
    parser.add_argument("--missing_images", choices=("error", "blank"), default="error")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="also upload to this Hub dataset repository")
    parser.add_argument("--private", action="store_true", help="make the Hub repository private")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    reports = export_mnre(
        args.data_dir,
        args.output_dir,
        image_dir=args.image_dir,
        crops_dir=args.crops_dir,
        crops_mapping=args.crops_mapping,
        missing_images=args.missing_images,
        load_id=args.push_to_hub,
    )
    for report in reports:
        print(
            f"{report.split}: {report.examples} posts, {report.images_embedded} images and {report.crops_embedded} "
            f"crops embedded, {len(report.images_missing)} + {len(report.crops_missing)} missing, "
            f"{len(report.shards)} shard(s), {report.num_bytes / 1e6:.1f} MB"
        )
    print(f"Dataset repository: {args.output_dir}/ (load_dataset({str(args.output_dir)!r}))")
    if args.push_to_hub:
        repo_id = push_dataset_to_hub(args.output_dir, args.push_to_hub, args.private)
        print(f"Pushed to https://huggingface.co/datasets/{repo_id}")
    return reports


if __name__ == "__main__":
    main()
