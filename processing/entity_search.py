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
"""Entity search for HVFormer's processor: checks the texts of a call, finds the subject and the object in a text (a
linear search, with word boundaries that follow the script) or checks the spans given, and phrases the errors (short,
naming the sample only in a batch).

Travels to the Hub with `processing_hvformer.py` as remote code, so it imports nothing from the hvformer project.
"""

from __future__ import annotations

import bisect
import operator
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from .sample_errors import SampleError, at_sample, per_sample, short_repr

Span = tuple[int, int]

UNSPACED_SCRIPTS: tuple[tuple[int, int, str], ...] = (
    (0x0E00, 0x0EFF, "Thai, Lao"),
    (0x0F00, 0x0FFF, "Tibetan"),
    (0x1000, 0x109F, "Myanmar"),
    (0x1100, 0x11FF, "Hangul Jamo"),
    (0x1780, 0x17FF, "Khmer"),
    (0x1950, 0x1AAF, "Tai Le, New Tai Lue, Khmer symbols, Buginese, Tai Tham"),
    (0x1B00, 0x1B7F, "Balinese"),
    (0x2E80, 0x2FDF, "CJK and Kangxi radicals"),
    (0x3005, 0x3007, "ideographic iteration and number marks"),
    (0x3040, 0x31FF, "Hiragana, Katakana, Bopomofo, Hangul compatibility Jamo, Kanbun"),
    (0x3400, 0x4DBF, "CJK extension A"),
    (0x4E00, 0xA4CF, "CJK unified ideographs, Yi"),
    (0xA960, 0xA97F, "Hangul Jamo extended A"),
    (0xA980, 0xA9FF, "Javanese, Myanmar extended B"),
    (0xAA60, 0xAADF, "Myanmar extended A, Tai Viet"),
    (0xAC00, 0xD7FF, "Hangul syllables, Hangul Jamo extended B"),
    (0xF900, 0xFAFF, "CJK compatibility ideographs"),
    (0xFF66, 0xFFDC, "halfwidth Katakana and Hangul"),
    (0x20000, 0x323AF, "CJK extensions B to H, compatibility supplement"),
)
"""Code point ranges `(first, last, scripts)` of scripts written without spaces between words (Chinese, Japanese,
Thai, Lao, Khmer, Myanmar, Tibetan, ...), and of Hangul, whose particles are written onto the noun (`오바마는`): a
character of these scripts never glues an entity to its neighbours."""

COMBINING_MARKS = frozenset({"Mn", "Mc", "Me"})
"""Unicode categories of the combining marks (nonspacing, spacing, enclosing): accents (`"cafe\\u0301"` is `café`),
the vowel signs, tone marks and viramas of Indic and South-East Asian scripts (`भारती` is `भारत` followed by the vowel
sign `ी`), emoji variation selectors and keycaps. A mark belongs to the character before it, in every script, so no
match ends before one or starts with one."""
JOINERS = "\u200c\u200d"
"""The zero-width non-joiner and joiner, which sit inside words (Persian `می\\u200cروم`, Indic conjuncts) and inside
emoji sequences: no match begins or ends beside one."""

_UNSPACED_STARTS = [first for first, _, _ in UNSPACED_SCRIPTS]
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_LISTED_OCCURRENCES = 5
"""An entity found more often than this is reported with its count only (the error message stays short)."""


def _unspaced(char: str) -> bool:
    """Whether `char` belongs to one of the [`UNSPACED_SCRIPTS`]."""
    code = ord(char)
    index = bisect.bisect_right(_UNSPACED_STARTS, code) - 1
    return index >= 0 and code <= UNSPACED_SCRIPTS[index][1]


def _word_char(char: str) -> bool:
    """A character that continues a word: a letter, digit or `_` of a script that separates words with spaces."""
    return (char.isalnum() or char == "_") and not _unspaced(char)


def _attaches(char: str) -> bool:
    """Whether `char` belongs to the character before it: a combining mark or a zero-width (non-)joiner."""
    return char in JOINERS or unicodedata.category(char) in COMBINING_MARKS


def _in_word(text: str, index: int, memo: dict[int, bool]) -> bool:
    """Whether `text[index]` is a word character, or a mark or joiner continuing one: a run of marks and joiners takes
    the side of the character it follows. `memo` holds the answers for marks and joiners already seen in `text`, so
    that every run is walked once however many matches border it."""
    run = []
    while index >= 0 and index not in memo and _attaches(text[index]):
        run.append(index)
        index -= 1
    in_word = memo[index] if index in memo else index >= 0 and _word_char(text[index])
    memo.update(dict.fromkeys(run, in_word))
    return in_word


def check_texts(texts: list, max_text_length: int | None) -> None:
    """Refuses a text (a string or a word list) longer than `max_text_length` characters (`None`: no limit), or one
    holding a lone surrogate (not valid Unicode, so no tokenizer can encode it)."""
    for index, sample in enumerate(texts):
        words = [sample] if isinstance(sample, str) else sample
        length = sum(len(word) for word in words)
        if max_text_length is not None and length > max_text_length:
            raise SampleError(
                f"the text has {length:,} characters, more than max_text_length={max_text_length:,}.", index=index
            )
        for number, word in enumerate(words):
            surrogate = _SURROGATE.search(word)
            if surrogate:
                place = f"character {surrogate.start()}" + ("" if isinstance(sample, str) else f" of word {number}")
                raise SampleError(
                    f"the text holds a lone surrogate (U+{ord(surrogate.group()):04X}) at {place}: a text "
                    "must be valid Unicode.",
                    index=index,
                )


def batch_texts(text: Any, is_split_into_words: bool) -> tuple[list, bool]:
    """The texts (strings, or word lists with `is_split_into_words`) as a list, and whether they were a batch."""
    if is_split_into_words:
        if isinstance(text, (list, tuple)) and all(isinstance(word, str) for word in text):
            return [list(text)], False
        if isinstance(text, (list, tuple)) and all(
            isinstance(words, (list, tuple)) and all(isinstance(word, str) for word in words) for words in text
        ):
            return [list(words) for words in text], True
        raise ValueError(
            "With `is_split_into_words=True`, `text` must be a list of words (strings) or a list of such lists."
        )
    if isinstance(text, str):
        return [text], False
    if isinstance(text, (list, tuple)) and not text:
        raise ValueError("`text` is an empty list: pass one text, or a list of texts.")
    if isinstance(text, (list, tuple)) and all(isinstance(sample, str) for sample in text):
        return list(text), True
    raise ValueError("`text` must be a string or a list of strings; pass word lists with `is_split_into_words=True`.")


def _all_occurrences(haystack: Sequence, needle: Sequence) -> list[int]:
    """Start indices of every occurrence of the non-empty `needle` in `haystack`, overlapping ones included, in
    `O(len(haystack) + len(needle))` steps (Knuth-Morris-Pratt)."""
    if not needle or len(needle) > len(haystack):
        return []
    border = [0] * len(needle)  # border[i]: length of the longest proper border of needle[: i + 1]
    length = 0
    for position in range(1, len(needle)):
        while length and needle[position] != needle[length]:
            length = border[length - 1]
        if needle[position] == needle[length]:
            length += 1
        border[position] = length
    starts, matched = [], 0
    for position, item in enumerate(haystack):
        while matched and item != needle[matched]:
            matched = border[matched - 1]
        if item == needle[matched]:
            matched += 1
        if matched == len(needle):
            starts.append(position - matched + 1)
            matched = border[matched - 1]
    return starts


def find_occurrences(text: str, needle: str) -> list[int]:
    """Start offsets of `needle` in `text`, overlapping ones included, that are not glued to a longer word; linear in
    the lengths of both.

    An occurrence whose first (last) character is a word character must not be preceded (followed) by one, so
    `"Paris"` is found in `"to Paris."` but not in `"Parisian"`. Characters of scripts written without spaces
    ([`UNSPACED_SCRIPTS`]) are never word characters: `"奥巴马"` is found in `"奥巴马和默克尔"`.

    A combining mark ([`COMBINING_MARKS`]) belongs to the character before it and a joiner ([`JOINERS`]) to both of
    its neighbours, so no occurrence ends before a mark or starts with one, nor begins or ends beside a joiner:
    `"भारत"` is not found in `"भारती"`, nor `"cafe"` in `"cafe\\u0301"`. A run of marks and joiners continues a word
    when it follows a word character: `"bar"` is not found in `"cafe\\u0301bar"`.
    """
    starts: list[int] = []
    memo: dict[int, bool] = {}
    ends_in_word = _in_word(needle, len(needle) - 1, {})
    for start in _all_occurrences(text, needle):
        end = start + len(needle)
        split_left = start > 0 and (_attaches(needle[0]) or text[start - 1] in JOINERS)
        split_right = end < len(text) and (_attaches(text[end]) or needle[-1] in JOINERS)
        glued_left = start > 0 and _word_char(needle[0]) and _in_word(text, start - 1, memo)
        glued_right = end < len(text) and ends_in_word and _word_char(text[end])
        if not (split_left or split_right or glued_left or glued_right):
            starts.append(start)
    return starts


def find_word_occurrences(words: Sequence[str], needle: Sequence[str]) -> list[int]:
    """Start indices of the word sequence `needle` in `words`; linear in the lengths of both."""
    return _all_occurrences(list(words), list(needle))


def _entity_name(entity: str) -> str:
    """The entity quoted in an error message: its `repr`, shortened, with its length when it is long."""
    quoted = short_repr(entity)
    return quoted if len(quoted) == len(repr(entity)) else f"{quoted} ({len(entity):,} characters)"


def locate_entity(sample: Any, entity: Any, role: str, is_split_into_words: bool) -> Span:
    """Finds the single occurrence of an entity string in a text (a string or a word list) and returns its span."""
    if not isinstance(entity, str) or not entity.strip():
        raise SampleError(f"the {role} entity must be a non-empty string, got {short_repr(entity)}.")
    if is_split_into_words:
        needle = entity.split()
        starts = find_word_occurrences(sample, needle)
        size = len(needle)
    else:
        starts = find_occurrences(sample, entity)
        size = len(entity)
    if not starts:
        raise SampleError(f"the {role} entity {_entity_name(entity)} is absent from the text.")
    if len(starts) > 1:
        listed = f" (at {starts})" if len(starts) <= MAX_LISTED_OCCURRENCES else ""
        raise SampleError(
            f"the {role} entity {_entity_name(entity)} occurs {len(starts):,} times in the text{listed}; "
            "pass `entity_spans` instead.",
        )
    return starts[0], starts[0] + size


def _check_span(sample: Any, item: Any, role: str, unit: str) -> Span:
    """Checks that `item` is a non-empty `(start, end)` span of integers (not booleans) within the text."""
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        raise SampleError(f"the {role} span must be a (start, end) pair, got {short_repr(item)}.")
    try:
        if any(isinstance(bound, bool) for bound in item):
            raise TypeError("a boolean is not an offset")
        start, end = (operator.index(bound) for bound in item)
    except TypeError:
        raise SampleError(f"the {role} span must hold integers, got {short_repr(item)}.") from None
    if start >= end:
        raise SampleError(f"the {role} span {short_repr(item)} is empty (start must be < end).")
    if start < 0 or end > len(sample):
        raise SampleError(f"the {role} span {short_repr(item)} is out of range for a text of {len(sample):,} {unit}s.")
    return start, end


def entity_spans(texts: list, pairs: list, *, by_string: bool, is_split_into_words: bool) -> list[tuple[Span, Span]]:
    """Returns `(subject_span, object_span)` per sample from `(subject, object)` spans or, with `by_string`, strings.

    Spans are character offsets into a string or word indices into a word list, `end` exclusive. They must be
    disjoint or nested: identical spans and spans that overlap without one containing the other are refused.
    """
    unit = "word" if is_split_into_words else "character"
    result = []
    for index, (sample, pair) in enumerate(zip(texts, pairs, strict=True)):
        with at_sample(index):
            result.append(_entity_pair(sample, pair, by_string, is_split_into_words, unit))
    return result


def call_entity_spans(
    texts: list, spans: Any, entities: Any, is_batched: bool, is_split_into_words: bool
) -> list[tuple[Span, Span]]:
    """[`entity_spans`] from exactly one of a processor call's `entity_spans` (`spans`) and `entities`, given per
    sample of a batch or once for a single text."""
    if (spans is None) == (entities is None):
        raise ValueError("Pass exactly one of `entity_spans` and `entities` with `text`.")
    name = "entity_spans" if entities is None else "entities"
    pairs = per_sample(spans if entities is None else entities, name, len(texts), is_batched)
    return entity_spans(texts, pairs, by_string=entities is not None, is_split_into_words=is_split_into_words)


def _entity_pair(sample: Any, pair: Any, by_string: bool, is_split_into_words: bool, unit: str) -> tuple[Span, Span]:
    """`(subject_span, object_span)` of one sample; see [`entity_spans`]."""
    if len(sample) == 0:
        raise SampleError("the text is empty.")
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise SampleError(f"expected a (subject, object) pair, got {short_repr(pair)}.")
    subject, obj = (
        locate_entity(sample, item, role, is_split_into_words) if by_string else _check_span(sample, item, role, unit)
        for role, item in zip(("subject", "object"), pair, strict=True)
    )
    if subject == obj:
        raise SampleError(f"the subject and object spans are identical: {subject}.")
    if subject[0] < obj[0] < subject[1] < obj[1] or obj[0] < subject[0] < obj[1] < subject[1]:
        raise SampleError(
            f"the subject span {subject} overlaps the object span {obj} without one containing the other."
        )
    return subject, obj
