# Copyright 2025 The hvformer authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Entity marking (paper Eq. 1): wraps the subject and the object (found by `entity_search.py`) in the four markers
within a token budget, then pads the marked sequences with the marker positions following the padding; the markers
themselves (chosen, added to the tokenizer); the labels.

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from typing import Any

from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from .entity_search import Span
from .sample_errors import SampleError, short_repr

ENTITY_MARKERS: tuple[str, str, str, str] = ("<s>", "</s>", "<o>", "</o>")
"""Subject start, subject end, object start, object end: the default `entity_markers` of `HVFormerProcessor`."""

FALLBACK_ENTITY_MARKERS: tuple[str, str, str, str] = ("<subj>", "</subj>", "<obj>", "</obj>")
"""The markers `HVFormerProcessor` takes instead of `ENTITY_MARKERS` for a tokenizer whose own special tokens include
one of those (RoBERTa's, BART's and XLM-R's `<s>` and `</s>`)."""

SPECIAL_TOKEN_ROLES: tuple[str, ...] = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
"""The tokenizer's own special tokens (`{role}_token`), which no marker may be."""

SUBJECT_START, SUBJECT_END, OBJECT_START, OBJECT_END = range(4)
"""Marker roles, as indices into the processor's `entity_markers`."""


def layout(subject: Span, obj: Span) -> tuple[list[int | None], tuple[int, int, int, int], bool]:
    """Cuts a text around its two entities.

    Returns the six boundaries of the five segments, the role of the marker that precedes each of the segments 1 to
    4, and whether one entity lies inside the other.
    """
    (subject_start, subject_end), (object_start, object_end) = subject, obj
    if subject_start <= object_start and object_end <= subject_end:
        bounds = [subject_start, object_start, object_end, subject_end]
        return [0, *bounds, None], (SUBJECT_START, OBJECT_START, OBJECT_END, SUBJECT_END), True
    if object_start <= subject_start and subject_end <= object_end:
        bounds = [object_start, subject_start, subject_end, object_end]
        return [0, *bounds, None], (OBJECT_START, SUBJECT_START, SUBJECT_END, OBJECT_END), True
    if subject_start < object_start:
        bounds = [subject_start, subject_end, object_start, object_end]
        return [0, *bounds, None], (SUBJECT_START, SUBJECT_END, OBJECT_START, OBJECT_END), False
    bounds = [object_start, object_end, subject_start, subject_end]
    return [0, *bounds, None], (OBJECT_START, OBJECT_END, SUBJECT_START, SUBJECT_END), False


Words = list[list[int]]
"""A segment of a text as its words, each the list of its word pieces."""


def _pieces(words: Words) -> int:
    return sum(len(word) for word in words)


def _head(words: Words, room: int) -> Words:
    """The first words of `words` that hold at most `room` pieces together."""
    kept, used = [], 0
    for word in words:
        if used + len(word) > room:
            break
        kept.append(word)
        used += len(word)
    return kept


def _tail(words: Words, room: int) -> Words:
    """The last words of `words` that hold at most `room` pieces together."""
    return _head(words[::-1], room)[::-1]


def _entity_head(words: Words, room: int) -> Words:
    """The first whole words of an entity within `room` pieces; the first pieces of its first word when even that
    word alone is longer (the one case where a word is cut: an entity keeps at least one piece)."""
    return _head(words, room) or [words[0][:room]]


def fit_to_budget(segments: list[Words], budget: int, nested: bool) -> list[list[int]]:
    """Truncates the five segments of a sample (each a list of words, a word a list of pieces) so that they hold at
    most `budget` word pieces together, dropping whole words only; returns the five segments' pieces.

    `segments` are `[before, first entity, between, second entity, after]` for disjoint entities and
    `[before, outer head, inner entity, outer tail, after]` when one entity lies inside the other. `budget` excludes
    the four markers and the special tokens and is at least 2. The policy, counted in word pieces and applied to whole
    words (a word is never cut into fragments, but for an entity whose first word alone exceeds its room):

    1. If the span from the first opening marker to the last closing marker fits, keep it whole and fill the
       remaining room with the context closest to it: half of the room before it and half after it, a side with too
       little context giving its share to the other side (an odd piece goes after).
    2. Otherwise drop all context outside that span, then the words in the middle of the text between the two
       entities, keeping the words next to each entity (one more piece of room after the first entity when odd).
    3. If the two entities alone still don't fit, share the room equally between them (an odd piece goes to the
       second; an entity shorter than its share leaves the rest to the other) and trim each from its end.

    For nested entities, step 2 drops the outer entity's own words from its end (those after the inner entity first,
    then those before it), and step 3 trims the inner entity from its end.
    """
    before, first, middle, second, after = segments
    core = _pieces(first) + _pieces(middle) + _pieces(second)
    if _pieces(before) + core + _pieces(after) <= budget:
        kept = segments
    elif core <= budget:
        room = budget - core
        right = _head(after, room - _pieces(_tail(before, room // 2)))
        left = _tail(before, room - _pieces(right))
        kept = [left, first, middle, second, right]
    elif nested:
        head, inner, tail = first, middle, second
        room = budget - _pieces(inner)
        if room < 0:
            kept = [[], [], _entity_head(inner, budget), [], []]
        else:
            head = _head(head, room)
            kept = [[], head, inner, _head(tail, room - _pieces(head)), []]
    else:
        room = budget - _pieces(first) - _pieces(second)
        if room >= 0:
            kept_head = _head(middle, (room + 1) // 2)
            kept_tail = _tail(middle[len(kept_head) :], room - _pieces(kept_head))
            kept_head = _head(middle[: len(middle) - len(kept_tail)], room - _pieces(kept_tail))
            kept = [[], first, kept_head + kept_tail, second, []]
        else:
            kept_first = _entity_head(first, min(_pieces(first), max(budget // 2, budget - _pieces(second))))
            kept = [[], kept_first, [], _entity_head(second, budget - _pieces(kept_first)), []]
    return [[piece for word in segment for piece in word] for segment in kept]


def words_as_text(words: Sequence[str], spans: tuple[Span, Span]) -> tuple[str, tuple[Span, Span]]:
    """A word list as its words joined by single spaces, and word spans as the character spans of their words.

    The tokenizer then reads the words as it reads a sentence: a byte-level BPE tokenizer saved without
    `add_prefix_space` would glue pre-split words together (no `Ġ` word starts).
    """
    starts = []
    offset = 0
    for word in words:
        starts.append(offset)
        offset += len(word) + 1
    return " ".join(words), tuple((starts[start], starts[end - 1] + len(words[end - 1])) for start, end in spans)


_ENCODING = {
    "add_special_tokens": False,
    "split_special_tokens": True,
    "return_attention_mask": False,
    "return_token_type_ids": False,
    "verbose": False,
}
"""Tokenizer arguments for the word pieces of a text: no special tokens, and text that looks like one (a literal marker
or `[SEP]` in a post) split like ordinary text, so only the markers inserted by [`mark_entities`] are marker tokens;
no warning that a long post exceeds the encoder's positions (it is truncated to `max_length` afterwards)."""


def split_at_bounds(
    text: str, ids: Sequence[int], offsets: Sequence[Span], word_ids: Sequence[int | None], bounds: list
) -> list[Words] | None:
    """The word pieces of the whole `text` (`ids`, their character `offsets` and the tokenizer's `word_ids`) shared
    out among its five segments (`bounds` from [`layout`]) as words, or `None` when a piece straddles a segment
    boundary.

    Each piece goes to the segment of its first character that is not a space: a byte-level BPE piece `Ġword` or a
    SentencePiece piece `▁word` to the segment of `word`, and a piece of spaces only (`▁`, `Ġ`) to that of the word
    after it. The pieces of one word that fall in one segment stay together.
    """
    starts = bounds[:5]
    segments: list[Words] = [[] for _ in starts]
    previous: tuple[int, int | None] | None = None
    for token_id, (start, end), word_id in zip(ids, offsets, word_ids, strict=True):
        piece = text[start:end]
        anchor = start + len(piece) - len(piece.lstrip()) if piece.strip() else end
        if any(anchor < cut < end for cut in starts[1:]):
            return None
        segment = bisect.bisect_right(starts, anchor) - 1
        if previous == (segment, word_id) and word_id is not None:
            segments[segment][-1].append(int(token_id))
        else:
            segments[segment].append([int(token_id)])
        previous = (segment, word_id)
    return segments


def _words(ids: Sequence[int], word_ids: Sequence[int | None] | None) -> Words:
    """Pieces grouped by the tokenizer's `word_ids` (each piece a word of its own when there are none)."""
    if word_ids is None:
        return [[int(token_id)] for token_id in ids]
    words: Words = []
    for index, (token_id, word_id) in enumerate(zip(ids, word_ids, strict=True)):
        if index and word_id is not None and word_id == word_ids[index - 1]:
            words[-1].append(int(token_id))
        else:
            words.append([int(token_id)])
    return words


def word_aligned(segments: list[str]) -> list[str]:
    """The segments of a text with the whitespace that ends each one moved to the start of the next.

    Byte-level BPE (`Ġword`) and SentencePiece (`▁word`) vocabularies read a word's leading space as part of it, so a
    segment then tokenizes as in the whole text: no trailing-space piece, no missing `Ġ` on the word after a marker.
    WordPiece ignores the spaces either way.
    """
    aligned, carry = [], ""
    for segment in segments[:-1]:
        text = carry + segment
        body = text.rstrip()
        aligned.append(body)
        carry = text[len(body) :]
    return [*aligned, carry + segments[-1]]


def _tokenize_segments(tokenizer: Any, segments: list[list[str]]) -> list[list[Words]]:
    """Tokenizes the five segments of every sample apart, with one batched tokenizer call, into words."""
    flat = [segment for sample in segments for segment in sample if len(segment) > 0]
    encoded = tokenizer(flat, **_ENCODING) if flat else None
    is_fast = getattr(encoded, "is_fast", False)
    words = iter(
        _words(ids, encoded.word_ids(index) if is_fast else None)
        for index, ids in enumerate(encoded["input_ids"] if encoded is not None else [])
    )
    return [[next(words) if len(segment) > 0 else [] for segment in sample] for sample in segments]


def segment_words(tokenizer: Any, texts: Sequence[str], bounds: list[list]) -> list[list[Words]]:
    """The words (lists of word pieces) of the five segments of each text (cut at `bounds`, from [`layout`]).

    With a fast tokenizer, each text is tokenized whole and its pieces are shared out by [`split_at_bounds`], so
    the pieces between the markers are exactly those of the unmarked text, and words are the tokenizer's (`word_ids`).
    A text in which a marker falls inside a piece (an entity boundary within a word piece), or every text with a
    tokenizer without offsets, has its segments tokenized apart, each with the whitespace before it
    ([`word_aligned`]).
    """
    pieces: list[list[Words] | None] = [None] * len(texts)
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(list(texts), return_offsets_mapping=True, **_ENCODING)
        pieces = [
            split_at_bounds(text, ids, offsets, encoded.word_ids(index), cuts)
            for index, (text, ids, offsets, cuts) in enumerate(
                zip(texts, encoded["input_ids"], encoded["offset_mapping"], bounds, strict=True)
            )
        ]
    apart = [index for index, split in enumerate(pieces) if split is None]
    segments = [
        word_aligned([texts[index][start:end] for start, end in zip(bounds[index], bounds[index][1:], strict=False)])
        for index in apart
    ]
    for index, split in zip(apart, _tokenize_segments(tokenizer, segments), strict=True):
        pieces[index] = split
    return pieces


def mark_entities(
    tokenizer: Any,
    texts: list,
    spans: list[tuple[Span, Span]],
    *,
    is_split_into_words: bool,
    marker_ids: Sequence[int],
    template: tuple[list[int], list[int]],
    max_length: int,
    truncation: bool,
) -> tuple[list[list[int]], list[list[int]]]:
    """Tokenizes each text with the markers around its entities and the special tokens around it, within
    `max_length` tokens: truncated by [`fit_to_budget`] with `truncation`, refused with a [`SampleError`] otherwise.

    A word list is read as its words joined by single spaces ([`words_as_text`]). The markers go between the word
    pieces of the unmarked text ([`segment_words`]), so that byte-level BPE (`Ġ`) and SentencePiece (`▁`) word
    starts stay where the unmarked text has them.

    Args:
        marker_ids: The ids of the four markers, in the order of their roles.
        template: The special token ids the tokenizer puts before and after a single sequence.

    Returns:
        The token ids of each sample and the positions `[subject start, object start]` of its markers.
    """
    prefix, suffix = template
    if is_split_into_words:
        texts, spans = zip(
            *(words_as_text(words, pair) for words, pair in zip(texts, spans, strict=True)), strict=True
        )
    cuts = [layout(subject, obj) for subject, obj in spans]
    bounds = [bounds for bounds, _, _ in cuts]
    budget = max_length - len(prefix) - len(suffix) - len(marker_ids)
    sequences, positions = [], []
    for index, (pieces, (_, roles, nested)) in enumerate(
        zip(segment_words(tokenizer, texts, bounds), cuts, strict=True)
    ):
        for slot in (2,) if nested else (1, 3):
            if not pieces[slot]:
                role = "subject" if roles[slot - 1] == SUBJECT_START else "object"
                entity = texts[index][bounds[index][slot] : bounds[index][slot + 1]]
                raise SampleError(
                    f"the {role} entity {short_repr(entity)} gives no word pieces with this tokenizer.", index=index
                )
        needed = sum(_pieces(segment) for segment in pieces)
        if needed > budget and not truncation:
            raise SampleError(
                f"the text needs {max_length - budget + needed} tokens with the special tokens and markers, more than "
                f"max_length={max_length}; pass `truncation=True` to shorten it.",
                index=index,
            )
        fitted = fit_to_budget(pieces, budget, nested)
        sequence = prefix + fitted[0]
        marker_at = {}
        for role, segment in zip(roles, fitted[1:], strict=True):
            marker_at[role] = len(sequence)
            sequence = sequence + [marker_ids[role]] + segment
        sequences.append(sequence + suffix)
        positions.append([marker_at[SUBJECT_START], marker_at[OBJECT_START]])
    return sequences, positions


def check_padding(padding: Any) -> None:
    """Refuses a `padding` other than `True`/`"longest"`, `"max_length"` and `False`/`"do_not_pad"`."""
    if not (isinstance(padding, (bool, str)) and padding in (True, "longest", "max_length", False, "do_not_pad")):
        raise ValueError(
            f"`padding` must be True, False, 'longest', 'max_length' or 'do_not_pad', got {short_repr(padding)}."
        )


def padded_length(lengths: list[int], padding: bool | str, max_length: int, pad_to_multiple_of: int | None) -> int:
    """The length that `padding` pads sequences of `lengths` to, rounded up to a multiple of `pad_to_multiple_of`;
    -1 for no padding."""
    check_padding(padding)
    if pad_to_multiple_of is not None and (
        isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
    ):
        raise ValueError(
            f"`pad_to_multiple_of` must be an integer >= 1 or None, got {short_repr(pad_to_multiple_of)}."
        )
    if padding in (False, "do_not_pad"):
        return -1
    pad_to = max_length if padding == "max_length" else max(lengths)
    if pad_to_multiple_of:
        pad_to = -(-pad_to // pad_to_multiple_of) * pad_to_multiple_of
    return pad_to


def pad_marked(
    sequences: list[list[int]], positions: list[list[int]], pad_to: int, pad_id: int | None, left: bool
) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Pads token id sequences to `pad_to` (shorter ones only) with `pad_id`, on the left with `left`.

    Returns the padded ids, their attention masks and the marker `positions`, moved right by the padding added on
    the left.
    """
    input_ids, attention_mask, marker_positions = [], [], []
    for sequence, (subject_position, object_position) in zip(sequences, positions, strict=True):
        missing = max(pad_to - len(sequence), 0)
        shift = missing if left else 0
        padding_ids, padding_mask = [pad_id] * missing, [0] * missing
        mask = [1] * len(sequence)
        input_ids.append(padding_ids + sequence if left else sequence + padding_ids)
        attention_mask.append(padding_mask + mask if left else mask + padding_mask)
        marker_positions.append([subject_position + shift, object_position + shift])
    return input_ids, attention_mask, marker_positions


def pad_encoded(
    tokenizer: Any,
    input_ids: list[list[int]],
    marker_positions: list[list[int]],
    padding: bool | str,
    max_length: int,
    pad_to_multiple_of: int | None,
) -> dict[str, list[list[int]]]:
    """Pads marked sequences on the tokenizer's padding side: `input_ids`, `attention_mask`, `token_type_ids` (zeros,
    when the tokenizer uses them) and `marker_positions`, moved right by the padding added on the left."""
    pad_to = padded_length([len(ids) for ids in input_ids], padding, max_length, pad_to_multiple_of)
    pad_id = tokenizer.pad_token_id
    if pad_id is None and pad_to >= 0:
        raise ValueError("The tokenizer has no pad token, so the texts cannot be padded; pass `padding=False`.")
    ids, mask, positions = pad_marked(input_ids, marker_positions, pad_to, pad_id, tokenizer.padding_side == "left")
    data = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in tokenizer.model_input_names:
        data["token_type_ids"] = [[0] * len(row) for row in ids]
    data["marker_positions"] = positions
    return data


def encode_marked(
    tokenizer: Any,
    texts: list,
    spans: list[tuple[Span, Span]],
    *,
    is_split_into_words: bool,
    marker_ids: Sequence[int],
    template: tuple[list[int], list[int]],
    max_length: int,
    padding: bool | str,
    truncation: bool,
) -> dict[str, list[list[int]]]:
    """The texts marked ([`mark_entities`]) and padded ([`pad_encoded`])."""
    sequences, positions = mark_entities(
        tokenizer,
        texts,
        spans,
        is_split_into_words=is_split_into_words,
        marker_ids=marker_ids,
        template=template,
        max_length=max_length,
        truncation=truncation,
    )
    return pad_encoded(tokenizer, sequences, positions, padding, max_length, None)


def _special_token_roles(tokenizer: Any) -> dict[str, str]:
    """The tokenizer's own special tokens and their roles, e.g. `{"<s>": "cls", "</s>": "sep", ...}` (the last role
    wins for a token with several)."""
    return {getattr(tokenizer, f"{role}_token", None): role for role in SPECIAL_TOKEN_ROLES}


def default_markers(tokenizer: Any) -> list[str]:
    """`ENTITY_MARKERS`, or `FALLBACK_ENTITY_MARKERS` when one of them is a special token of `tokenizer`."""
    roles = _special_token_roles(tokenizer)
    if any(marker in roles for marker in ENTITY_MARKERS):
        return list(FALLBACK_ENTITY_MARKERS)
    return list(ENTITY_MARKERS)


def add_markers(tokenizer: Any, markers: Sequence[str]) -> list[int]:
    """Registers the markers as special tokens of `tokenizer` (in place) unless it has them, and returns their ids.

    Raises a `ValueError` when a marker is one of the tokenizer's own special tokens or does not encode to one id.
    """
    roles = _special_token_roles(tokenizer)
    for marker in markers:
        if marker in roles:
            raise ValueError(
                f"The entity marker {marker!r} is already the tokenizer's {roles[marker]}_token; HVFormer needs "
                "markers distinct from the tokenizer's own special tokens."
            )
    missing = [marker for marker in markers if marker not in tokenizer.all_special_tokens]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    marker_ids = [int(token_id) for token_id in tokenizer.convert_tokens_to_ids(list(markers))]
    for marker, marker_id in zip(markers, marker_ids, strict=True):
        encoded = tokenizer.encode(marker, add_special_tokens=False)
        if encoded != [marker_id] or marker_id == tokenizer.unk_token_id:
            raise ValueError(f"The entity marker {marker!r} does not encode to a single token: {encoded}.")
    return marker_ids


def special_token_template(tokenizer: Any, marker: str, marker_id: int) -> tuple[list[int], list[int]]:
    """The special token ids `tokenizer` puts before and after a single sequence (`[CLS]` and `[SEP]`), found by
    encoding one marker (`marker`, of id `marker_id`) with them."""
    with_special = tokenizer.encode(marker, add_special_tokens=True)
    if with_special.count(marker_id) != 1:
        raise ValueError(f"Cannot locate the special tokens the tokenizer adds around a text: {with_special}.")
    position = with_special.index(marker_id)
    return with_special[:position], with_special[position + 1 :]


def check_markers(markers: Any) -> list[str]:
    """Refuses anything but four distinct marker strings; returns them as a list."""
    markers = list(markers)
    if len(markers) != 4 or len(set(markers)) != 4 or not all(isinstance(marker, str) for marker in markers):
        raise ValueError(f"`entity_markers` must be four distinct strings, got {markers}.")
    return markers


def check_max_length(max_length: Any, template: tuple[list[int], list[int]], model_max_length: int) -> None:
    """Refuses a `max_length` that cannot hold the special tokens of `template`, the four markers and one word piece
    per entity, or that the text encoder cannot read (`model_max_length`, unless unset)."""
    minimum = len(template[0]) + len(template[1]) + 4 + 2
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < minimum:
        raise ValueError(
            f"`max_length` must be an integer >= {minimum} (special tokens, four markers and one word piece per "
            f"entity), got {max_length!r}."
        )
    if model_max_length < VERY_LARGE_INTEGER and max_length > model_max_length:
        raise ValueError(
            f"`max_length` {max_length} exceeds the text encoder's {model_max_length} positions "
            "(`tokenizer.model_max_length`)."
        )


def check_relation_labels(relation_labels: Any) -> list[str] | None:
    """`relation_labels` as a list of distinct strings (or `None`), refusing anything else."""
    if relation_labels is None:
        return None
    relation_labels = list(relation_labels)
    if not all(isinstance(label, str) for label in relation_labels):
        raise ValueError("`relation_labels` must be a list of strings.")
    if len(set(relation_labels)) != len(relation_labels):
        raise ValueError(f"`relation_labels` contains duplicates: {relation_labels}.")
    return relation_labels


def label_ids(labels: list, relation_labels: list[str] | None) -> list[int]:
    """Maps labels (ids or relation names from `relation_labels`; not booleans) to ids."""
    ids = []
    for index, label in enumerate(labels):
        if isinstance(label, str):
            if relation_labels is None:
                raise SampleError(
                    f"label {short_repr(label)} is a string but the processor has no `relation_labels`.", index=index
                )
            if label not in relation_labels:
                raise SampleError(
                    f"unknown relation label {short_repr(label)}; known labels: {relation_labels}.", index=index
                )
            ids.append(relation_labels.index(label))
            continue
        try:
            if isinstance(label, bool):
                raise TypeError("a boolean is not a label id")
            label_id = operator.index(label)
        except TypeError:
            raise SampleError(
                f"a label must be an integer or a relation name, got {short_repr(label)}.", index=index
            ) from None
        if relation_labels is not None and not 0 <= label_id < len(relation_labels):
            raise SampleError(f"label id {label_id} is outside [0, {len(relation_labels)}).", index=index)
        ids.append(label_id)
    return ids
