"""MNRE metric: micro precision / recall / F1 over non-None relations, accuracy, per-relation report.

All scores are fractions in [0, 1] (multiply by 100 for the percentages of the paper's tables).

- :func:`mre_scores`: the math (numpy only). It lives in ``training/mre_metric/mre_metric.py`` because
  `evaluate` copies that file alone into its cache; this module re-exports it.
- :func:`load_mre_metric`: the same metric as an `evaluate` module, loaded from the local folder (works
  offline: nothing is fetched from the Hub).
- :func:`compute_metrics_fn`: a ``compute_metrics`` callable for :class:`transformers.Trainer`, which runs the
  `evaluate` module (so `run_mre.py` and the tests use the one implementation, through the one interface).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .mre_metric.mre_metric import mre_scores

__all__ = ["MRE_METRIC_PATH", "compute_metrics_fn", "load_mre_metric", "mre_scores"]

MRE_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mre_metric")
"""Folder of the local `evaluate` module (``evaluate.load(MRE_METRIC_PATH)``)."""


def load_mre_metric(**load_kwargs: Any):
    """``evaluate.load`` of the local MNRE metric module (offline-safe).

    Extra keyword arguments go to :func:`evaluate.load` (e.g. ``experiment_id``, ``num_process``,
    ``process_id``, ``keep_in_memory``). Use it as
    ``load_mre_metric().compute(predictions=..., references=..., none_label_id=..., id2label=...)``;
    the result is the dict of :func:`mre_scores`.
    """
    import evaluate

    return evaluate.load(MRE_METRIC_PATH, **load_kwargs)


def _first(value: Any) -> Any:
    """The first element of a tuple/list of model outputs, or the value itself."""
    while isinstance(value, (tuple, list)):
        if not value:
            raise ValueError("empty tuple of predictions")
        value = value[0]
    return value


def compute_metrics_fn(
    none_label_id: int | None, id2label: Mapping[int | str, str] | None = None
) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` function for :class:`transformers.Trainer`, computed by the local `evaluate` module.

    The returned function takes an ``EvalPrediction`` (or a ``(predictions, label_ids)`` pair) whose
    predictions are logits ``(N, num_labels)`` -- or a tuple of outputs, of which the first is the logits --
    or already label ids ``(N,)``, and returns ``{"precision", "recall", "f1", "accuracy"}`` as floats in
    [0, 1] (Trainer prefixes them with ``eval_``; select the model with ``metric_for_best_model="f1"``).
    ``none_label_id`` is the config's (``None``: every label counts); ``id2label`` only validates the ids
    here. The module keeps its data in memory, so the processes of a distributed run (each given the gathered
    predictions by Trainer) share no cache file.
    """
    metric = load_mre_metric(keep_in_memory=True)

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        if hasattr(eval_prediction, "predictions") and hasattr(eval_prediction, "label_ids"):
            predictions, label_ids = eval_prediction.predictions, eval_prediction.label_ids
        else:
            predictions, label_ids = eval_prediction[0], eval_prediction[1]
        labels = np.asarray(_first(label_ids)).reshape(-1)
        scores = np.asarray(_first(predictions))
        if scores.ndim == 2 and scores.shape[0] == labels.shape[0]:
            predicted = scores.argmax(axis=-1)
        elif scores.ndim == 1:
            predicted = scores
        else:
            raise ValueError(
                f"expected logits of shape (N, num_labels) or label ids of shape (N,) for N={labels.shape[0]} "
                f"labels, got predictions of shape {scores.shape}"
            )
        result = metric.compute(
            predictions=predicted, references=labels, none_label_id=none_label_id, id2label=id2label
        )
        return {key: float(result[key]) for key in ("precision", "recall", "f1", "accuracy")}

    return compute_metrics
