"""MNRE metric: micro P/R/F1 over non-None labels, accuracy, per-relation report; local evaluate module."""

import socket

import numpy as np
import pytest
import torch

from training.metrics import MRE_METRIC_PATH, compute_metrics_fn, load_mre_metric, mre_scores

NONE = 0
ID2LABEL = {
    0: "None",
    1: "/per/per/parent",
    2: "/org/loc/locate_at",
    3: "/per/misc/present_in",
    4: "/misc/misc/part_of",
}

# Mixed case (None = 0):
#   i :  0  1  2  3  4  5  6  7  8
#   gold 1  1  2  0  0  3  2  0  0
#   pred 1  2  2  1  0  0  2  0  3
# correct (pred == gold != None): i = 0, 2, 6                        -> 3
# predictions != None: i = 0, 1, 2, 3, 6, 8                          -> 6   P = 3/6 = 0.5
# gold != None: i = 0, 1, 2, 5, 6                                    -> 5   R = 3/5 = 0.6
# F1 = 2 * 0.5 * 0.6 / 1.1 = 6/11
# accuracy: pred == gold at i = 0, 2, 4, 6, 7                        -> 5/9
MIXED_GOLD = [1, 1, 2, 0, 0, 3, 2, 0, 0]
MIXED_PRED = [1, 2, 2, 1, 0, 0, 2, 0, 3]
# per relation (one-vs-rest):
#   None: predicted at 4, 5, 7 (3); gold at 3, 4, 7, 8 (4); both at 4, 7 (2) -> P 2/3, R 1/2, F1 4/7, support 4
#   1:    predicted at 0, 3 (2);    gold at 0, 1 (2);       both at 0 (1)    -> P 1/2, R 1/2, F1 1/2, support 2
#   2:    predicted at 1, 2, 6 (3); gold at 2, 6 (2);       both at 2, 6 (2) -> P 2/3, R 1,   F1 4/5, support 2
#   3:    predicted at 8 (1);       gold at 5 (1);          none             -> 0, 0, 0,              support 1
#   4:    never seen                                                         -> 0, 0, 0,              support 0
MIXED_REPORT = {
    "None": {"precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "support": 4},
    "/per/per/parent": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
    "/org/loc/locate_at": {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2},
    "/per/misc/present_in": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
    "/misc/misc/part_of": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
}


def _assert_report(actual, expected):
    assert list(actual) == list(expected)
    for name, row in expected.items():
        assert actual[name]["support"] == row["support"], name
        for key in ("precision", "recall", "f1"):
            assert actual[name][key] == pytest.approx(row[key]), (name, key)


def test_mixed_case():
    scores = mre_scores(MIXED_PRED, MIXED_GOLD, none_label_id=NONE, id2label=ID2LABEL)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.6)
    assert scores["f1"] == pytest.approx(6 / 11)
    assert scores["accuracy"] == pytest.approx(5 / 9)
    assert (scores["correct"], scores["num_predicted"], scores["num_gold"], scores["num_examples"]) == (3, 6, 5, 9)
    _assert_report(scores["per_relation"], MIXED_REPORT)
    assert all(isinstance(scores[key], float) for key in ("precision", "recall", "f1", "accuracy"))


def test_report_without_id2label_uses_seen_ids():
    scores = mre_scores(np.array(MIXED_PRED), torch.tensor(MIXED_GOLD), none_label_id=NONE)
    expected = {str(i): row for i, row in enumerate(MIXED_REPORT.values()) if i < 4}
    _assert_report(scores["per_relation"], expected)
    # string keys (as in a JSON config) work too
    by_str = mre_scores(MIXED_PRED, MIXED_GOLD, NONE, id2label={str(k): v for k, v in ID2LABEL.items()})
    _assert_report(by_str["per_relation"], MIXED_REPORT)


def test_all_none_predictions():
    # gold 1 0 2 0, pred all None: correct 0, no prediction != None -> P = 0; R = 0/2 = 0; F1 = 0;
    # accuracy 2/4 (the two None golds)
    scores = mre_scores([0, 0, 0, 0], [1, 0, 2, 0], none_label_id=0)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
    assert scores["accuracy"] == pytest.approx(0.5)


def test_all_none_gold():
    # gold all None, pred 0 1 0: R has denominator 0 -> 0; P = 0/1 = 0; F1 = 0; accuracy 2/3
    scores = mre_scores([0, 1, 0], [0, 0, 0], none_label_id=0)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    # everything None on both sides: all denominators 0 -> 0, accuracy 1
    both = mre_scores([0, 0], [0, 0], none_label_id=0)
    assert (both["precision"], both["recall"], both["f1"], both["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    empty = mre_scores([], [], none_label_id=0)
    assert (empty["precision"], empty["recall"], empty["f1"], empty["accuracy"]) == (0.0, 0.0, 0.0, 0.0)


def test_perfect_predictions():
    gold = [1, 2, 0, 3, 3]
    scores = mre_scores(gold, gold, none_label_id=0)
    assert (scores["precision"], scores["recall"], scores["f1"], scores["accuracy"]) == (1.0, 1.0, 1.0, 1.0)


def test_wrong_relation_counts_against_precision_and_recall():
    # gold 1 2; predicting 2 2 (a wrong relation): correct 1 of 2 predicted, 1 of 2 gold -> P = R = 0.5
    wrong = mre_scores([2, 2], [1, 2], none_label_id=0)
    assert (wrong["precision"], wrong["recall"]) == (0.5, 0.5)
    # predicting None instead only hurts recall: P = 1/1, R = 1/2
    abstain = mre_scores([0, 2], [1, 2], none_label_id=0)
    assert (abstain["precision"], abstain["recall"]) == (1.0, 0.5)
    assert abstain["f1"] == pytest.approx(2 / 3)


def test_without_a_none_label_every_label_counts():
    # none_label_id=None (a label set with no "no relation" class): correct = pred == gold at i = 0, 2, 4, 6, 7 -> 5
    # of the 9 predictions and 9 gold labels, so P = R = F1 = accuracy = 5/9; with None = 0, F1 was 6/11.
    scores = mre_scores(MIXED_PRED, MIXED_GOLD, none_label_id=None, id2label=ID2LABEL)
    assert (scores["correct"], scores["num_predicted"], scores["num_gold"]) == (5, 9, 9)
    for key in ("precision", "recall", "f1", "accuracy"):
        assert scores[key] == pytest.approx(5 / 9), key
    _assert_report(scores["per_relation"], MIXED_REPORT)
    compute = compute_metrics_fn(None, ID2LABEL)
    assert compute((np.eye(5)[MIXED_PRED], np.array(MIXED_GOLD)))["f1"] == pytest.approx(5 / 9)


def test_none_label_need_not_be_zero():
    # None = 2 here. gold 2 0 1, pred 0 0 2: correct 1 (i = 1); predicted != None 2; gold != None 2
    scores = mre_scores([0, 0, 2], [2, 0, 1], none_label_id=2)
    assert (scores["precision"], scores["recall"]) == (0.5, 0.5)
    assert scores["accuracy"] == pytest.approx(1 / 3)


def test_input_validation():
    with pytest.raises(ValueError, match="length"):
        mre_scores([1, 2], [1], none_label_id=0)
    with pytest.raises(ValueError, match="integer"):
        mre_scores([0.5, 1.0], [1, 1], none_label_id=0)
    with pytest.raises(ValueError, match="1-D"):
        mre_scores([[1, 2]], [[1, 2]], none_label_id=0)
    with pytest.raises(ValueError, match="not keys"):
        mre_scores([7], [1], none_label_id=0, id2label=ID2LABEL)
    with pytest.raises(ValueError, match="none_label_id"):
        mre_scores([1], [1], none_label_id=9, id2label=ID2LABEL)
    # whole-number floats (e.g. label_ids stored as float) are accepted
    assert mre_scores(np.array([1.0, 0.0]), [1, 0], none_label_id=0)["f1"] == 1.0


def test_compute_metrics_fn_with_trainer_eval_prediction():
    from transformers import EvalPrediction

    # logits whose argmax is MIXED_PRED
    logits = np.full((len(MIXED_PRED), 5), -1.0, dtype=np.float32)
    logits[np.arange(len(MIXED_PRED)), MIXED_PRED] = 3.0
    extra = np.zeros((len(MIXED_PRED), 2, 4))
    compute_metrics = compute_metrics_fn(NONE, ID2LABEL)
    expected = {"precision": 0.5, "recall": 0.6, "f1": 6 / 11, "accuracy": 5 / 9}
    for predictions in (logits, (logits, extra)):
        out = compute_metrics(EvalPrediction(predictions=predictions, label_ids=np.array(MIXED_GOLD)))
        assert set(out) == set(expected)
        assert all(type(value) is float for value in out.values())
        assert out == pytest.approx(expected)
    # already-argmaxed ids (preprocess_logits_for_metrics) and a plain pair
    assert compute_metrics((np.array(MIXED_PRED), np.array(MIXED_GOLD))) == pytest.approx(expected)


@pytest.fixture(scope="module")
def offline_metric():
    """The evaluate module, loaded while every socket connection fails (and HF_*_OFFLINE=1 from conftest)."""
    original_connect = socket.socket.connect

    def no_network(*args, **kwargs):
        raise OSError("network access attempted while loading the local metric")

    socket.socket.connect = no_network
    try:
        metric = load_mre_metric()
    finally:
        socket.socket.connect = original_connect
    return metric


def test_evaluate_module_loads_offline_from_local_folder(offline_metric):
    import evaluate

    assert isinstance(offline_metric, evaluate.Metric)
    assert offline_metric.name == "mre_metric"
    assert MRE_METRIC_PATH.endswith("mre_metric")


def test_evaluate_module_gives_the_hand_computed_scores(offline_metric):
    """The module, whole or batch by batch, against the hand-computed mixed case; and a case where every score has
    a zero denominator."""
    result = offline_metric.compute(
        predictions=MIXED_PRED, references=MIXED_GOLD, none_label_id=NONE, id2label=ID2LABEL
    )
    assert (result["precision"], result["recall"]) == (pytest.approx(0.5), pytest.approx(0.6))
    assert (result["f1"], result["accuracy"]) == (pytest.approx(6 / 11), pytest.approx(5 / 9))
    assert (result["correct"], result["num_predicted"], result["num_gold"]) == (3, 6, 5)
    _assert_report(result["per_relation"], MIXED_REPORT)
    for start in range(0, len(MIXED_PRED), 4):
        offline_metric.add_batch(predictions=MIXED_PRED[start : start + 4], references=MIXED_GOLD[start : start + 4])
    assert offline_metric.compute(none_label_id=NONE, id2label=ID2LABEL)["f1"] == pytest.approx(6 / 11)
    all_none = offline_metric.compute(predictions=[0, 0, 0], references=[0, 0, 0], none_label_id=0)
    assert (all_none["precision"], all_none["recall"], all_none["f1"], all_none["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="none_label_id"):
        offline_metric.compute(predictions=[1], references=[1])
    every_label = offline_metric.compute(predictions=[1, 0], references=[1, 2], none_label_id=None)
    assert (every_label["precision"], every_label["recall"], every_label["f1"]) == (0.5, 0.5, 0.5)
