"""Reading cached MNRE rows a batch at a time (`ColumnBatches`) and collating them into model batches."""

from __future__ import annotations

import re

import datasets
import numpy as np
import pytest
import torch
from _data_fixtures import NUM_CROPS, build_small_sample, make_processor
from tiny_models import CROP_SIZE, IMAGE_SIZE, tiny_model_for

from mre_data.collator import (
    COLLATED_COLUMNS,
    IGNORE_INDEX,
    ColumnBatches,
    HVFormerDataCollator,
    StaticShapes,
    static_text_lengths,
)
from mre_data.mnre_dataset import load_mnre

MODEL_KEYS = {
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "marker_positions",
    "pixel_values",
    "object_pixel_values",
    "object_mask",
    "labels",
}


@pytest.fixture(scope="module")
def processor():
    return make_processor()


@pytest.fixture(scope="module")
def train(tmp_path_factory, processor):
    folder = tmp_path_factory.mktemp("collator")
    return load_mnre(build_small_sample(folder / "data"), processor, cache_dir=folder / "cache")["train"]


def _rows_of_different_lengths(dataset, count: int = 4) -> list[dict]:
    rows = sorted((dataset[index] for index in range(len(dataset))), key=lambda row: len(row["input_ids"]))
    return [rows[0], rows[-1], *rows[1 : count - 1]]


def test_shapes_dtypes_and_padding(train, processor):
    rows = _rows_of_different_lengths(train)
    batch = HVFormerDataCollator(processor)(rows)
    assert set(batch) == MODEL_KEYS  # id, kind, token, image_status, ... are dropped
    lengths = [len(row["input_ids"]) for row in rows]
    size, longest = len(rows), max(lengths)
    assert (
        batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape == (size, longest)
    )
    assert batch["pixel_values"].shape == (size, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["object_pixel_values"].shape == (size, NUM_CROPS, 3, CROP_SIZE, CROP_SIZE)
    assert batch["object_mask"].shape == (size, NUM_CROPS) and batch["marker_positions"].shape == (size, 2)
    assert batch["labels"].shape == (size,)
    for key in MODEL_KEYS - {"pixel_values", "object_pixel_values"}:
        assert batch[key].dtype == torch.long, key
    assert batch["pixel_values"].dtype == batch["object_pixel_values"].dtype == torch.uint8  # stacked as they are
    assert batch["pixel_values"].tolist() == [row["pixel_values"].tolist() for row in rows]
    assert batch["object_pixel_values"].tolist() == [row["object_pixel_values"].tolist() for row in rows]

    shortest = lengths[0]
    assert shortest < longest
    assert batch["input_ids"][0, :shortest].tolist() == rows[0]["input_ids"].tolist()
    assert (batch["input_ids"][0, shortest:] == processor.tokenizer.pad_token_id).all()
    assert batch["attention_mask"][0].tolist() == [1] * shortest + [0] * (longest - shortest)
    assert not batch["token_type_ids"].any()
    assert batch["marker_positions"].tolist() == [row["marker_positions"].tolist() for row in rows]
    assert batch["labels"].tolist() == [int(row["labels"]) for row in rows]
    assert batch["object_mask"].tolist() == [row["object_mask"].tolist() for row in rows]
    assert (batch["object_mask"] == 0).any() and not batch["object_pixel_values"][batch["object_mask"] == 0].any()


def test_pad_to_multiple_of():
    """Rows of 9 and 5 tokens pad to 16: ids, masks and token types on the padding side, markers moved with it."""
    rows = [
        {"input_ids": np.arange(10, 19), "attention_mask": np.ones(9, int), "marker_positions": np.array([1, 4])},
        {"input_ids": np.arange(20, 25), "attention_mask": np.ones(5, int), "marker_positions": np.array([3, 1])},
    ]
    for side, shifts in (("right", (0, 0)), ("left", (7, 11))):
        processor = make_processor()
        processor.tokenizer.padding_side = side
        pad = processor.tokenizer.pad_token_id
        batch = HVFormerDataCollator(processor, pad_to_multiple_of=8)(rows)
        ids, masks = [[*range(10, 19)], [*range(20, 25)]], [[1] * 9, [1] * 5]
        if side == "right":
            assert batch["input_ids"].tolist() == [ids[0] + [pad] * 7, ids[1] + [pad] * 11]
            assert batch["attention_mask"].tolist() == [masks[0] + [0] * 7, masks[1] + [0] * 11]
        else:
            assert batch["input_ids"].tolist() == [[pad] * 7 + ids[0], [pad] * 11 + ids[1]]
            assert batch["attention_mask"].tolist() == [[0] * 7 + masks[0], [0] * 11 + masks[1]]
        assert batch["token_type_ids"].tolist() == [[0] * 16] * 2
        assert batch["marker_positions"].tolist() == [[1 + shifts[0], 4 + shifts[0]], [3 + shifts[1], 1 + shifts[1]]]


@pytest.mark.parametrize(
    ("max_length", "expected"),
    [(80, (24, 40, 64, 80)), (512, (128, 256, 384, 512)), (55, (16, 32, 48, 55)), (16, (8, 16)), (5, (5,))],
)
def test_static_text_lengths_are_four_multiples_of_8_up_to_the_maximum(max_length, expected):
    """ceil(max_length * k / 4) rounded up to a multiple of 8, never past the maximum, which is always one."""
    assert static_text_lengths(max_length) == expected


def _small_rows(crops: int) -> list[dict]:
    """Two rows of 9 and 5 tokens with 2x2 pixels and `crops` object crops, labelled 4 and 7."""
    return [
        {
            "input_ids": np.arange(10, 10 + length),
            "marker_positions": np.array([1, 3]),
            "pixel_values": np.full((3, 2, 2), value, np.uint8),
            "object_pixel_values": np.full((crops, 3, 2, 2), value, np.uint8),
            "object_mask": np.ones(crops, int),
            "labels": label,
        }
        for length, value, label in ((9, 1, 4), (5, 2, 7))
    ]


def test_static_shapes_pad_the_text_the_crops_and_the_rows():
    """Two rows (9 and 5 tokens, 2 crops) become 4 rows of 16 tokens and 3 crops: the text to the smallest length
    holding 9, an absent third crop, and two copies of the first row labelled IGNORE_INDEX."""
    processor = make_processor()
    pad = processor.tokenizer.pad_token_id
    shapes = StaticShapes(text_lengths=(32, 8, 16), batch_sizes=(16, 4), num_object_crops=3)
    assert shapes.text_lengths == (8, 16, 32) and shapes.batch_sizes == (4, 16)  # sorted
    batch = HVFormerDataCollator(processor, static_shapes=shapes)(_small_rows(crops=2))
    first, second = [*range(10, 19)] + [pad] * 7, [*range(10, 15)] + [pad] * 11
    assert batch["input_ids"].tolist() == [first, second, first, first]
    assert batch["attention_mask"].tolist() == [[1] * 9 + [0] * 7, [1] * 5 + [0] * 11, *[[1] * 9 + [0] * 7] * 2]
    assert batch["token_type_ids"].shape == (4, 16) and batch["marker_positions"].tolist() == [[1, 3]] * 4
    assert batch["labels"].tolist() == [4, 7, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["object_mask"].tolist() == [[1, 1, 0]] * 4
    assert batch["object_pixel_values"].shape == (4, 3, 3, 2, 2) and batch["pixel_values"].shape == (4, 3, 2, 2)
    assert batch["object_pixel_values"][:, :2].flatten(1).tolist() == [[1] * 24, [2] * 24, [1] * 24, [1] * 24]
    assert not batch["object_pixel_values"][:, 2].any()
    assert batch["pixel_values"].flatten(1).tolist() == [[1] * 12, [2] * 12, [1] * 12, [1] * 12]
    full = HVFormerDataCollator(processor, static_shapes=shapes)(_small_rows(crops=3) * 2)  # 4 rows: none added
    assert full["labels"].tolist() == [4, 7, 4, 7] and full["input_ids"].shape == (4, 16)


def test_static_shapes_refuse_what_does_not_fit():
    processor = make_processor()
    shapes = StaticShapes(text_lengths=(8,), batch_sizes=(1,), num_object_crops=1)
    without_labels = [{name: value for name, value in row.items() if name != "labels"} for row in _small_rows(1)]
    cases = [
        (shapes, _small_rows(1)[:1], "a row has 9 tokens, more than the longest text length of the static shapes, 8"),
        (StaticShapes((16,), (1,), 1), _small_rows(1), "a batch has 2 rows, more than the largest batch size"),
        (StaticShapes((16,), (2,), 1), _small_rows(3), "rows have 3 object crops, more than the 1 of the static"),
        (StaticShapes((16,), (4,), 1), without_labels, "pad a batch with rows labelled IGNORE_INDEX: the rows need"),
    ]
    for static_shapes, rows, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            HVFormerDataCollator(processor, static_shapes=static_shapes)(rows)
    with pytest.raises(ValueError, match="pass `pad_to_multiple_of` or `static_shapes`, not both"):
        HVFormerDataCollator(processor, pad_to_multiple_of=8, static_shapes=shapes)
    with pytest.raises(ValueError, match=re.escape("StaticShapes.batch_sizes must be integers >= 1, got (4, 0)")):
        StaticShapes(text_lengths=(8,), batch_sizes=(4, 0), num_object_crops=1)


def test_padding_rows_change_neither_the_loss_nor_the_gradients_nor_the_real_rows(train, processor):
    """Three rows padded to a batch of 8 and the longest text length: the same loss (cross-entropy leaves the
    IGNORE_INDEX rows out), the same gradients and the same logits of the three rows as the plain batch."""
    model = tiny_model_for(make_processor(relation_labels=train.features["labels"].names))
    rows = _rows_of_different_lengths(train, count=3)
    shapes = StaticShapes(static_text_lengths(processor.max_length), batch_sizes=(8,), num_object_crops=NUM_CROPS)
    results = []
    for collator in (HVFormerDataCollator(processor), HVFormerDataCollator(processor, static_shapes=shapes)):
        batch = collator(rows)
        model.zero_grad()
        outputs = model(**batch)
        outputs.loss.backward()
        gradients = {
            name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None
        }
        results.append((batch["input_ids"].shape, outputs.loss.detach(), outputs.logits.detach()[:3], gradients))
    (plain_shape, plain_loss, plain_logits, plain_grads), (static_shape, loss, logits, grads) = results
    assert plain_shape[0] == 3 and plain_shape[1] < 24 and static_shape == (8, 24)  # 24: the shortest length
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == plain_grads.keys()
    for name, gradient in grads.items():
        torch.testing.assert_close(gradient, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_batch_equals_the_processor_called_directly(train, processor):
    """The text, masks and labels are the processor's; the uint8 pixels are its resized images, which its own
    normalisation turns into exactly the float pixels it returns (the model normalises them the same way)."""
    rows = _rows_of_different_lengths(train)
    batch = HVFormerDataCollator(processor)(rows)
    images, crops = [row["image_path"] for row in rows], [row["crop_paths"] for row in rows]
    direct = processor(
        text=[row["token"] for row in rows],
        entity_spans=[[row["h"]["pos"], row["t"]["pos"]] for row in rows],
        is_split_into_words=True,
        images=images,
        object_crops=crops,
        labels=[int(row["labels"]) for row in rows],
    )
    assert set(direct) == MODEL_KEYS
    for key in MODEL_KEYS:
        torch.testing.assert_close(batch[key], direct[key], rtol=0, atol=0, msg=key)
    assert batch["pixel_values"].dtype == direct["pixel_values"].dtype == torch.uint8


def test_left_padding_moves_the_markers(train):
    processor = make_processor()
    processor.tokenizer.padding_side = "left"
    rows = _rows_of_different_lengths(train)
    batch = HVFormerDataCollator(processor, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"][0, 0] == processor.tokenizer.pad_token_id  # the shortest row
    marker_ids = batch["input_ids"].gather(1, batch["marker_positions"])
    subject, _, obj, _ = processor.marker_token_ids()
    assert (marker_ids == torch.tensor([subject, obj])).all()


def test_rows_as_plain_lists(train, processor):
    rows = [train.with_format(None)[index] for index in range(3)]
    assert isinstance(rows[0]["pixel_values"], list)
    from_lists = HVFormerDataCollator(processor)(rows)
    from_arrays = HVFormerDataCollator(processor)([train[index] for index in range(3)])
    for key in MODEL_KEYS:
        torch.testing.assert_close(from_lists[key], from_arrays[key], rtol=0, atol=0, msg=key)


def test_works_in_a_dataloader(train, processor):
    loader = torch.utils.data.DataLoader(train, batch_size=8, collate_fn=HVFormerDataCollator(processor))
    batches = list(loader)
    assert sum(len(batch["labels"]) for batch in batches) == len(train)


def test_refuses_normalised_pixels_and_foreign_rows(train, processor):
    row = dict(train[0])
    row["pixel_values"] = row["pixel_values"].astype(np.float32) / 255
    with pytest.raises(ValueError, match="uint8 pixels"):
        HVFormerDataCollator(processor)([row])
    with pytest.raises(KeyError, match="load_mnre"):
        HVFormerDataCollator(processor)([{"text": "hello"}])
    with pytest.raises(ValueError, match="cannot collate an empty batch"):
        HVFormerDataCollator(processor)([])


def _positions(count: int, size: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).choice(count, size=size, replace=False).tolist()


@pytest.mark.parametrize("view", ["split", "contiguous select", "shuffled", "indices with a repeat"])
def test_column_batches_read_the_rows_of_the_dataset(train, view):
    """A batch read straight from the Arrow data holds the dataset's own values at those positions, whatever indices
    mapping `select` or `shuffle` left (the pixels as uint8 tensors, not datasets' int64)."""
    dataset = {
        "split": train,
        "contiguous select": train.select(range(3, 17)),
        "shuffled": train.shuffle(seed=1),
        "indices with a repeat": train.select([5, 0, 5, 12]),
    }[view]
    batches = ColumnBatches(dataset)
    assert len(batches) == len(dataset)
    positions = _positions(len(dataset), 4)
    batch = batches.__getitems__(positions)
    assert set(batch) == set(COLLATED_COLUMNS)
    assert batch["pixel_values"].dtype == batch["object_pixel_values"].dtype == torch.uint8
    expected = dataset[positions]
    for name in ("pixel_values", "object_pixel_values", "object_mask", "labels"):
        np.testing.assert_array_equal(np.asarray(batch[name]), expected[name], err_msg=name)
    for name in ("input_ids", "marker_positions"):
        assert batch[name] == [np.asarray(value).tolist() for value in expected[name]], name
    row = batches[positions[1]]
    np.testing.assert_array_equal(row["object_pixel_values"].numpy(), dataset[positions[1]]["object_pixel_values"])
    assert row["input_ids"] == dataset[positions[1]]["input_ids"].tolist()


def test_column_batches_bypass_datasets_formatting_and_the_collator_copies_no_pixels(train, processor, monkeypatch):
    """No row or batch goes through `datasets`' formatting, and the collated pixels are the fetched tensors
    themselves; the collated batch equals the one collated from the dataset's rows."""
    batches = ColumnBatches(train)
    positions = _positions(len(train), 6, seed=1)
    queries = []
    original = datasets.Dataset._getitem

    def counted(*args, **kwargs):
        queries.append(args[1:])
        return original(*args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "_getitem", counted)
    fetched = batches.__getitems__(positions)
    assert queries == []
    collator = HVFormerDataCollator(processor, pad_to_multiple_of=8)
    batch = collator(fetched)
    for name in ("pixel_values", "object_pixel_values"):
        assert batch[name].data_ptr() == fetched[name].data_ptr(), name
    monkeypatch.undo()
    from_rows = collator([train[position] for position in positions])
    assert batch.keys() == from_rows.keys() == MODEL_KEYS
    for key in MODEL_KEYS:
        torch.testing.assert_close(batch[key], from_rows[key], rtol=0, atol=0, msg=key)


def test_column_batches_in_a_dataloader_worker(train, processor):
    """Through a worker process (batches built in shared memory), every example arrives once with its pixels."""
    loader = torch.utils.data.DataLoader(
        ColumnBatches(train),
        batch_size=8,
        shuffle=True,
        num_workers=1,
        timeout=120,
        collate_fn=HVFormerDataCollator(processor),
        generator=torch.Generator().manual_seed(0),
    )
    seen = {}
    for batch in loader:
        for label, pixels in zip(batch["labels"].tolist(), batch["pixel_values"], strict=True):
            seen.setdefault(pixels.numpy().tobytes(), []).append(label)
    rows = [train[index] for index in range(len(train))]
    assert sorted(len(labels) for labels in seen.values()) == [1] * len(train)  # the sample's images differ
    for row in rows:
        assert seen[row["pixel_values"].astype(np.uint8).tobytes()] == [int(row["labels"])]
