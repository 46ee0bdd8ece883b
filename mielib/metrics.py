"""Recognition metrics: UF1, UAR, accuracy and the confusion matrix, per fold and pooled.

Used by every results notebook (04-11) through `experiments`. Pooling follows MEGC 2019 and
the MiE-X authors: the predictions of all folds are concatenated (equivalently, TP/FP/FN are
summed over folds) and the metric is computed once.

Which classes a macro average runs over is explicit (`classes=`):
- "true" (default, the MEGC convention): classes with at least one test sample. The MEGC
  evaluation code skips a class absent from the ground truth, so a fold without, say,
  surprise is averaged over its other classes. UAR is then sklearn's balanced accuracy.
- "union": classes in y_true or y_pred (sklearn's default for average="macro"); a class
  predicted but absent scores F1 = 0.
- "all": every class in `labels`; an absent class scores F1 = 0 and recall = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

CLASSES = ("true", "union", "all")


def _arrays(y_true, y_pred, labels) -> tuple[np.ndarray, np.ndarray, list]:
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D label sequences, got shapes {yt.shape} and {yp.shape}")
    if len(yt) != len(yp):
        raise ValueError(f"y_true has {len(yt)} labels but y_pred has {len(yp)}")
    if len(yt) == 0:
        raise ValueError("no predictions to score (empty y_true)")
    if labels is None:
        labels = sorted(set(yt.tolist()) | set(yp.tolist()))
    else:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels contain duplicates: {labels}")
        unknown = (set(yt.tolist()) | set(yp.tolist())) - set(labels)
        if unknown:
            raise ValueError(f"labels {sorted(map(str, unknown))} occur in y_true/y_pred but not in labels={labels}")
    return yt, yp, labels


def confusion(y_true, y_pred, labels: Sequence | None = None) -> np.ndarray:
    """Counts C[i, j] of samples of class labels[i] predicted as labels[j] (rows: truth).

    Without `labels`, the classes are the sorted union of y_true and y_pred.
    """
    yt, yp, labels = _arrays(y_true, y_pred, labels)
    pos = {lab: i for i, lab in enumerate(labels)}
    ti = np.array([pos[v] for v in yt.tolist()], dtype=np.int64)
    pi = np.array([pos[v] for v in yp.tolist()], dtype=np.int64)
    c = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(c, (ti, pi), 1)
    return c


def _per_class(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Last two axes are (truth, prediction), so a stack of matrices is scored in one go.
    tp = np.diagonal(c, axis1=-2, axis2=-1).astype(np.float64)
    support = c.sum(axis=-1).astype(np.float64)  # TP + FN
    predicted = c.sum(axis=-2).astype(np.float64)  # TP + FP
    denom = support + predicted  # 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
    return f1, recall, support, predicted


def _mask(support: np.ndarray, predicted: np.ndarray, classes: str) -> np.ndarray:
    if classes == "true":
        return support > 0
    if classes == "union":
        return (support + predicted) > 0
    if classes == "all":
        return np.ones_like(support, dtype=bool)
    raise ValueError(f"unknown classes={classes!r}; use one of {', '.join(CLASSES)}")


def scores_from_confusion(c: np.ndarray, classes: str = "true") -> dict:
    """UF1, UAR and accuracy from a confusion matrix (rows: truth, columns: prediction)."""
    c = np.asarray(c)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {c.shape}")
    n = int(c.sum())
    if n == 0:
        raise ValueError("empty confusion matrix: no predictions to score")
    s = stacked_scores(c, classes)
    return {"uf1": float(s["uf1"]), "uar": float(s["uar"]), "accuracy": float(s["accuracy"]), "n": n,
            "n_classes": int(_mask(*_per_class(c)[2:], classes).sum())}


def stacked_scores(c: np.ndarray, classes: str = "true") -> dict:
    """{"uf1", "uar", "accuracy"} as arrays, one value per matrix of a stack (..., K, K).

    What a permutation test needs: thousands of resampled confusion matrices scored at once.
    """
    c = np.asarray(c)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"confusion matrices must be square in their last two axes, got shape {c.shape}")
    f1, recall, support, predicted = _per_class(c)
    m = _mask(support, predicted, classes)
    n = c.sum(axis=(-2, -1)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty matrix scores NaN
        return {"uf1": (f1 * m).sum(-1) / m.sum(-1), "uar": (recall * m).sum(-1) / m.sum(-1),
                "accuracy": np.diagonal(c, axis1=-2, axis2=-1).sum(-1) / n}


def uf1(y_true, y_pred, labels: Sequence | None = None, classes: str = "true") -> float:
    """Unweighted F1: the mean over classes of F1 = 2TP / (2TP + FP + FN)."""
    return scores(y_true, y_pred, labels, classes)["uf1"]


def uar(y_true, y_pred, labels: Sequence | None = None, classes: str = "true") -> float:
    """Unweighted average recall: the mean over classes of TP / (TP + FN)."""
    return scores(y_true, y_pred, labels, classes)["uar"]


def accuracy(y_true, y_pred) -> float:
    """The share of samples predicted correctly (the "recognition rate" of MiE-X Table 2)."""
    yt, yp, _ = _arrays(y_true, y_pred, None)
    return float(np.mean(yt == yp))


def scores(y_true, y_pred, labels: Sequence | None = None, classes: str = "true") -> dict:
    """{"uf1", "uar", "accuracy", "n", "n_classes"} of one set of predictions."""
    return scores_from_confusion(confusion(y_true, y_pred, labels), classes)


def pool(pairs: Iterable[tuple[Sequence, Sequence]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (y_true, y_pred) of several folds: the MEGC way to score a cross-validation."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no folds to pool")
    yt = np.concatenate([np.asarray(t) for t, _ in pairs])
    yp = np.concatenate([np.asarray(p) for _, p in pairs])
    return yt, yp


def evaluate(pairs: Iterable[tuple[Sequence, Sequence]], labels: Sequence | None = None,
             classes: str = "true") -> dict:
    """Score a cross-validation given each fold's (y_true, y_pred).

    Returns {"per_fold": [scores of each fold], "pooled": scores of all folds' predictions
    together (MEGC; what MiE-X reports), "fold_mean": the mean of per-fold scores (the other
    common convention), "labels": the class list, "confusion": the pooled confusion matrix}.
    """
    pairs = [(np.asarray(t), np.asarray(p)) for t, p in pairs]
    yt, yp = pool(pairs)
    _, _, labels = _arrays(yt, yp, labels)  # one class list for every fold
    per_fold = [scores(t, p, labels, classes) for t, p in pairs]
    c = confusion(yt, yp, labels)
    keys = ("uf1", "uar", "accuracy")
    return {"per_fold": per_fold, "pooled": scores_from_confusion(c, classes),
            "fold_mean": {k: float(np.mean([s[k] for s in per_fold])) for k in keys},
            "labels": list(labels), "confusion": c}


@dataclass(frozen=True)
class Summary:
    """Mean and standard deviation of a metric over repeats, and how they print."""

    mean: float
    std: float
    n: int
    text: str  # e.g. "45.2 ± 0.7" (scaled, by default to percent)

    def __str__(self) -> str:
        return self.text


def summarize(values: Iterable[float], *, scale: float = 100.0, digits: int = 1, ddof: int = 0) -> Summary:
    """Mean ± std of a metric over repeats, as the papers print it ("45.2 ± 0.7" in percent).

    `mean` and `std` stay in the units given; `text` multiplies by `scale`. ddof=0 (numpy's
    default, the population std) is our reading of the papers' "standard variance"; pass
    ddof=1 for the sample std. One value gives std 0.
    """
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("summarize: no values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"summarize: non-finite values {arr.tolist()}")
    mean = float(arr.mean())
    std = float(arr.std(ddof=ddof)) if arr.size > ddof else 0.0
    return Summary(mean, std, int(arr.size), f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}")
