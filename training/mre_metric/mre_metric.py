# Copyright the hvformer authors. Licensed under the Apache License, Version 2.0.
"""MNRE relation-extraction metric as a local `evaluate` module.

The scores behind every published MNRE number: micro precision / recall / F1 over the relation labels other
than ``None``, plus accuracy and a per-relation report. Everything is a fraction in [0, 1] (not percent).

`evaluate.load` copies this single file into its module cache and imports it from there, so it must not
import anything from the hvformer project: the math lives here (`mre_scores`, numpy only) and
`training/metrics.py` imports it from this file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Micro precision, recall and F1 over the non-None relation labels, as used for every published MNRE result:
correct = number of examples with prediction == gold and gold != None;
precision = correct / number of predictions != None; recall = correct / number of gold labels != None;
f1 = 2 * precision * recall / (precision + recall). Each score is 0 when its denominator is 0. For a label set
without a "no relation" class (none_label_id=None) every label counts.
Also accuracy over all examples (None included) and a per-relation report. All values are fractions in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted label ids.
    references (`list` of `int`): gold label ids.
    none_label_id (`int` or `None`): id of the `None` (no relation) label; `None` for a label set without one, where
        every label counts (precision, recall and F1 then equal accuracy). Required: pass it even when `None`.
    id2label (`dict`, optional): label names for the per-relation report keys (int or str-of-int keys).
Returns:
    precision, recall, f1, accuracy (floats in [0, 1]); correct, num_predicted, num_gold, num_examples
    (ints); per_relation: {label name: {precision, recall, f1, support}} for every label of id2label (or every
    label seen), the None label included (it does not enter the micro scores).
Examples:
    >>> metric = evaluate.load("training/mre_metric")
    >>> metric.compute(predictions=[1, 0, 2], references=[1, 2, 0], none_label_id=0)["f1"]
    0.5
"""

_CITATION = """
@inproceedings{zheng2021mnre,
  title = {MNRE: A Challenge Multimodal Dataset for Neural Relation Extraction with Visual Evidence in Social
           Media Posts},
  author = {Zheng, Changmeng and Wu, Zhiwei and Feng, Junhao and Fu, Ze and Cai, Yi},
  booktitle = {2021 IEEE International Conference on Multimedia and Expo (ICME)},
  pages = {1--6},
  year = {2021}
}
"""


def _as_ids(values: Any, name: str) -> np.ndarray:
    """A 1-D int64 array of label ids; floats are accepted only when they hold whole numbers."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of label ids, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise ValueError(f"{name} must hold integer label ids, got dtype {array.dtype}")


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def mre_scores(
    predictions: Any,
    references: Any,
    none_label_id: int | None,
    id2label: Mapping[int | str, str] | None = None,
) -> dict[str, Any]:
    """MNRE scores: micro P/R/F1 over non-None labels, accuracy, and a per-relation report (fractions in [0, 1]).

    - ``correct`` = #(prediction == gold and gold != None)
    - ``precision`` = correct / #(prediction != None); ``recall`` = correct / #(gold != None);
      ``f1`` = 2PR / (P + R); each is 0.0 when its denominator is 0. A wrong non-None prediction for a
      non-None gold counts against both precision and recall.
    - ``accuracy`` = #(prediction == gold) / #examples over all examples (None included); 0.0 when empty.
    - ``per_relation``: ``{name: {"precision", "recall", "f1", "support"}}``, one-vs-rest for each label
      (support = #gold with that label), keyed by ``id2label[id]`` (or ``str(id)`` without ``id2label``),
      ordered by id. With ``id2label`` every label in it is listed (support 0 included) and an id outside it
      is an error; without it, the labels seen in predictions or references. The None label is listed too,
      but it never enters the micro scores.

    Args:
        predictions: 1-D predicted label ids (list, numpy array or CPU tensor).
        references: 1-D gold label ids, same length.
        none_label_id: id of the ``None`` label, or ``None`` when the labels have no "no relation" class: then every
            label counts in the micro scores (``correct`` = #(prediction == gold), and P = R = F1 = accuracy).
        id2label: optional id -> name mapping (keys may be ints or strings of ints, as in a JSON config).

    Returns:
        dict with float ``precision``, ``recall``, ``f1``, ``accuracy``; int ``correct``, ``num_predicted``,
        ``num_gold``, ``num_examples``; and ``per_relation``.
    """
    preds = _as_ids(predictions, "predictions")
    refs = _as_ids(references, "references")
    if preds.shape != refs.shape:
        raise ValueError(f"predictions and references differ in length: {preds.size} vs {refs.size}")
    none_id = None if none_label_id is None else int(none_label_id)

    names: dict[int, str] | None = None
    if id2label is not None:
        names = {int(key): str(value) for key, value in id2label.items()}
        if len(set(names.values())) != len(names):
            raise ValueError("id2label has duplicate label names")
        if none_id is not None and none_id not in names:
            raise ValueError(f"none_label_id {none_id} is not a key of id2label")
        unknown = sorted(set(np.unique(np.concatenate([preds, refs])).tolist()) - set(names))
        if unknown:
            raise ValueError(f"label ids {unknown} are not keys of id2label")

    hits = preds == refs
    gold_relation = refs != none_id if none_id is not None else np.ones_like(hits)
    correct = int(np.sum(hits & gold_relation))
    num_predicted = int(np.sum(preds != none_id)) if none_id is not None else int(preds.size)
    num_gold = int(np.sum(gold_relation))
    precision = _ratio(correct, num_predicted)
    recall = _ratio(correct, num_gold)

    labels = sorted(names) if names is not None else sorted(set(preds.tolist()) | set(refs.tolist()))
    per_relation: dict[str, dict[str, float | int]] = {}
    for label in labels:
        predicted_here = preds == label
        gold_here = refs == label
        true_positive = int(np.sum(predicted_here & gold_here))
        label_precision = _ratio(true_positive, int(np.sum(predicted_here)))
        label_recall = _ratio(true_positive, int(np.sum(gold_here)))
        key = names[label] if names is not None else str(label)
        per_relation[key] = {
            "precision": label_precision,
            "recall": label_recall,
            "f1": _f1(label_precision, label_recall),
            "support": int(np.sum(gold_here)),
        }

    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "accuracy": _ratio(int(np.sum(hits)), int(preds.size)),
        "correct": correct,
        "num_predicted": num_predicted,
        "num_gold": num_gold,
        "num_examples": int(preds.size),
        "per_relation": per_relation,
    }


_REQUIRED = object()
"""The default of `none_label_id` in `compute()`: it must be passed, `None` included (a label set without a "no
relation" class), so that forgetting it is an error rather than scores over every label."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MreMetric(evaluate.Metric):
    """MNRE micro P/R/F1 over non-None labels, accuracy and per-relation report (see `mre_scores`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://github.com/thecharm/MNRE"],
        )

    def _compute(
        self,
        predictions: Any,
        references: Any,
        none_label_id: Any = _REQUIRED,
        id2label: Mapping[int | str, str] | None = None,
    ) -> dict[str, Any]:
        if none_label_id is _REQUIRED:
            raise ValueError(
                "pass none_label_id=<id of the None label> to compute() (none_label_id=None: every label counts)"
            )
        return mre_scores(predictions, references, none_label_id=none_label_id, id2label=id2label)
