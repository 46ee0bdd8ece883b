"""Metrics against scikit-learn on the same predictions, pooling, and summaries."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from mielib import metrics

CLASSES = ["negative", "positive", "surprise"]


def random_predictions(seed, n=40, absent=None):
    rng = np.random.default_rng(seed)
    y_true = rng.choice(CLASSES, size=n, p=[0.55, 0.3, 0.15])
    # Noisy predictions: right half the time, otherwise a random class.
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(CLASSES, size=n))
    if absent is not None:  # a class missing from the ground truth (but still predicted)
        keep = y_true != absent
        y_true, y_pred = y_true[keep], y_pred[keep]
        y_pred[0] = absent
    return y_true, y_pred


def sk_f1(y_true, y_pred, labels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("absent", [None, "surprise"])
def test_matches_sklearn(seed, absent):
    y_true, y_pred = random_predictions(seed, absent=absent)
    present = sorted(set(y_true))
    union = sorted(set(y_true) | set(y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about a class absent from y_true
        balanced = balanced_accuracy_score(y_true, y_pred)
        recall_all = recall_score(y_true, y_pred, labels=CLASSES, average="macro", zero_division=0)
    # MEGC default: classes with test samples; UAR is sklearn's balanced accuracy.
    assert metrics.uf1(y_true, y_pred, CLASSES) == pytest.approx(sk_f1(y_true, y_pred, present))
    assert metrics.uar(y_true, y_pred, CLASSES) == pytest.approx(balanced)
    # sklearn's default class set (union of true and predicted), and a fixed label list.
    assert metrics.uf1(y_true, y_pred, classes="union") == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics.uf1(y_true, y_pred, CLASSES, classes="all") == pytest.approx(sk_f1(y_true, y_pred, CLASSES))
    assert metrics.uar(y_true, y_pred, CLASSES, classes="all") == pytest.approx(recall_all)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(metrics.confusion(y_true, y_pred, CLASSES),
                                  confusion_matrix(y_true, y_pred, labels=CLASSES))
    if absent is not None:  # the conventions really differ when a class is absent
        assert metrics.uf1(y_true, y_pred, CLASSES) > metrics.uf1(y_true, y_pred, CLASSES, classes="union")


def test_integer_labels_and_hand_computed_case():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    s = metrics.scores(y_true, y_pred, labels=[0, 1, 2])
    # F1: class 0 = 2*2/(4+0+1) = 0.8; class 1 = 2/(2+1+1) = 0.5; class 2 = 2/(2+1+0) = 2/3.
    assert s["uf1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert s["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["n"] == 6 and s["n_classes"] == 3


def test_pooled_is_concatenation_not_fold_mean():
    folds = [random_predictions(s, n=n) for s, n in [(10, 12), (11, 30), (12, 9)]]
    result = metrics.evaluate(folds, CLASSES)
    yt = np.concatenate([t for t, _ in folds])
    yp = np.concatenate([p for _, p in folds])
    assert result["pooled"]["uf1"] == pytest.approx(sk_f1(yt, yp, CLASSES))
    assert result["pooled"]["uar"] == pytest.approx(balanced_accuracy_score(yt, yp))
    assert result["pooled"]["accuracy"] == pytest.approx(accuracy_score(yt, yp))
    # Summing the folds' confusion matrices is the same as pooling TP/FP/FN.
    summed = sum(metrics.confusion(t, p, CLASSES) for t, p in folds)
    np.testing.assert_array_equal(result["confusion"], summed)
    per_fold_uf1 = [metrics.uf1(t, p, CLASSES) for t, p in folds]
    assert [f["uf1"] for f in result["per_fold"]] == pytest.approx(per_fold_uf1)
    assert result["fold_mean"]["uf1"] == pytest.approx(np.mean(per_fold_uf1))
    assert result["fold_mean"]["uf1"] != pytest.approx(result["pooled"]["uf1"])
    assert result["labels"] == CLASSES


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        metrics.uf1([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"\['anger'\] occur in y_true/y_pred but not in labels"):
        metrics.uf1(["anger", "positive"], ["positive", "positive"], labels=CLASSES)
    with pytest.raises(ValueError, match="empty"):
        metrics.uar([], [])
    with pytest.raises(ValueError, match="unknown classes='some'"):
        metrics.uf1([0, 1], [0, 1], classes="some")
    with pytest.raises(ValueError, match="no folds"):
        metrics.evaluate([])


def test_summarize_mean_std_text():
    s = metrics.summarize([0.45, 0.47, 0.43])
    assert s.mean == pytest.approx(0.45) and s.n == 3
    assert s.std == pytest.approx(np.std([0.45, 0.47, 0.43]))
    assert str(s) == "45.0 ± 1.6"
    assert metrics.summarize([0.45, 0.47, 0.43], ddof=1).std == pytest.approx(0.02)
    assert metrics.summarize([0.5]).text == "50.0 ± 0.0"
    assert metrics.summarize([0.5, 0.52], scale=1, digits=3).text == "0.510 ± 0.010"
    with pytest.raises(ValueError, match="non-finite"):
        metrics.summarize([0.5, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        metrics.summarize([])
