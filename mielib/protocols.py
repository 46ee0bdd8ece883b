"""Evaluation protocols: subject-wise k-fold, LOSO, LOVO and leave-one-dataset-out folds, with
held-out validation subjects and the MiE-X fold exclusion rules.

Used by notebooks 04-11 through `experiments`. Samples are the rows of a DataFrame (e.g.
`ClipSet.to_frame()`); a fold holds positional row indices into it. A subject is identified by
its subject key "dataset/subject", so SAMM's subject 6 and a CASME II subject "6" never merge.

- k-fold: subjects are split into k folds (MiE-X: k=3 on CompMiE, k=5 on MMEW and SAMM),
  stratified by class where the subjects allow it; every sample is tested once.
- LOSO: leave one subject out; one fold per subject.
- LOVO: leave one video out, as in the micro-expression literature (AU-GACN, seed 002): one
  fold per clip, tested on that clip and trained on every other clip, *including other clips
  of the same subject* (so LOVO is not subject-independent, unlike LOSO and k-fold).
- LODO: leave one dataset out (e.g. the composite's CASME II, SAMM and SMIC parts).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np
import pandas as pd

from . import store

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Fold:
    """One train/test split: subject keys and positional sample indices.

    `val_subjects`/`val` are held-out validation subjects carved from the training subjects
    (empty unless `add_validation` was applied); `train` then excludes them. Compare folds
    with `to_dict()`.
    """

    index: int
    train_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]
    train: np.ndarray
    test: np.ndarray
    val_subjects: tuple[str, ...] = ()
    val: np.ndarray = field(default_factory=lambda: _EMPTY)
    protocol: str = ""  # e.g. "kfold3", "loso", "lovo", "lodo"

    def to_dict(self) -> dict:
        return {"index": self.index, "protocol": self.protocol,
                "train_subjects": list(self.train_subjects), "test_subjects": list(self.test_subjects),
                "val_subjects": list(self.val_subjects),
                "train": self.train.tolist(), "test": self.test.tolist(), "val": self.val.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Fold":
        idx = lambda v: np.asarray(v, dtype=np.int64).reshape(-1)  # noqa: E731
        return cls(int(d["index"]), tuple(d["train_subjects"]), tuple(d["test_subjects"]),
                   idx(d["train"]), idx(d["test"]), tuple(d.get("val_subjects", ())), idx(d.get("val", [])),
                   d.get("protocol", ""))


# ---------------------------------------------------------------------------------------------
# Keys

def _norm_dataset(name) -> str:
    return re.sub(r"[\s_\-]", "", str(name).strip().lower())


def _norm_subject(subject) -> str:
    # Datasets write the same subject as "006", "6" or 6 (datasets.md: SAMM, SMIC, CASME II),
    # so leading zeros of each digit run are dropped: "006" -> "6", "sub01" -> "sub1".
    if isinstance(subject, (float, np.floating)) and float(subject).is_integer():
        subject = int(subject)
    text = str(subject).strip().lower()
    return re.sub(r"\d+", lambda m: str(int(m.group())), text)


def subject_key(dataset, subject) -> str:
    """The normalised key "dataset/subject" that identifies a subject across datasets."""
    return f"{_norm_dataset(dataset)}/{_norm_subject(subject)}"


def _frame(samples) -> pd.DataFrame:
    if hasattr(samples, "to_frame") and not isinstance(samples, pd.DataFrame):
        samples = samples.to_frame()  # a ClipSet
    if not isinstance(samples, pd.DataFrame):
        raise TypeError(f"samples must be a DataFrame or a ClipSet, got {type(samples).__name__}")
    if len(samples) == 0:
        raise ValueError("samples is empty: nothing to split")
    return samples


def _require(df: pd.DataFrame, *columns: str, what: str = "samples") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lack column(s) {', '.join(missing)}; columns present: {', '.join(map(str, df.columns))}")


def subject_keys(samples) -> np.ndarray:
    """Each sample's subject key ("dataset/subject"; just the subject without a dataset column)."""
    df = _frame(samples)
    _require(df, "subject")
    if df["subject"].isna().any():
        rows = np.flatnonzero(df["subject"].isna().to_numpy())[:5].tolist()
        raise ValueError(f"samples at rows {rows} have no subject")
    if "dataset" in df.columns:
        return np.array([subject_key(d, s) for d, s in zip(df["dataset"], df["subject"])], dtype=object)
    return np.array([_norm_subject(s) for s in df["subject"]], dtype=object)


def clip_keys(samples) -> np.ndarray:
    """Each sample's clip key "dataset/subject/clip_id" (normalised like subject keys)."""
    df = _frame(samples)
    _require(df, "subject", "clip_id")
    subjects = subject_keys(df)
    return np.array([f"{s}/{str(c).strip().lower()}" for s, c in zip(subjects, df["clip_id"])], dtype=object)


def _labels(df: pd.DataFrame, label: str | None) -> np.ndarray | None:
    if label is None:
        return None
    _require(df, label)
    if df[label].isna().any():
        rows = np.flatnonzero(df[label].isna().to_numpy())[:5].tolist()
        raise ValueError(f"samples at rows {rows} have no {label!r}; drop them (e.g. label3=None) before splitting")
    return df[label].astype(str).to_numpy()


def _make_folds(subjects: np.ndarray, groups: list[list[str]], protocol: str) -> list[Fold]:
    folds = []
    all_subjects = sorted(set(subjects.tolist()))
    for i, test_subjects in enumerate(groups):
        test_set = set(test_subjects)
        is_test = np.array([s in test_set for s in subjects])
        folds.append(Fold(i, tuple(s for s in all_subjects if s not in test_set), tuple(sorted(test_set)),
                          np.flatnonzero(~is_test), np.flatnonzero(is_test), protocol=protocol))
    return folds


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Protocols

def kfold(samples, k: int, *, seed: int | np.random.Generator, label: str | None = "label3") -> list[Fold]:
    """Subject-wise k-fold: subjects are dealt into k folds; each fold is tested once.

    Subjects are visited in a seeded random order and each goes to the fold where it best
    keeps every fold's per-class counts near 1/k of the total (stratification while keeping
    subjects disjoint); `label=None` balances sample counts only. Raises when there are fewer
    subjects than folds.
    """
    df = _frame(samples)
    k = int(k)
    subjects = subject_keys(df)
    unique = sorted(set(subjects.tolist()))
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if len(unique) < k:
        raise ValueError(f"{len(unique)} subjects cannot fill {k} subject-disjoint folds")
    y = _labels(df, label)
    classes = sorted(set(y.tolist())) if y is not None else ["(all)"]
    col = {c: j for j, c in enumerate(classes)}
    counts = {s: np.zeros(len(classes)) for s in unique}
    for i, s in enumerate(subjects):
        counts[s][col[y[i]] if y is not None else 0] += 1
    target = sum(counts.values()) / k
    order = [unique[i] for i in _rng(seed).permutation(len(unique))]
    fold_counts = np.zeros((k, len(classes)))
    groups: list[list[str]] = [[] for _ in range(k)]
    for n_left, s in zip(range(len(order), 0, -1), order):
        empty = [f for f in range(k) if not groups[f]]
        # Keep every fold non-empty: once the subjects left only just cover the empty folds,
        # they must go there.
        candidates = empty if len(empty) >= n_left else range(k)
        costs = []  # the imbalance if s joined fold f, for each candidate f
        for f in candidates:
            after = fold_counts.copy()
            after[f] += counts[s]
            # Class balance first, total size second (scaled down to break ties).
            costs.append(((after - target) ** 2).sum() + 1e-3 * ((after.sum(1) - target.sum()) ** 2).sum())
        best = list(candidates)[int(np.argmin(costs))]
        fold_counts[best] += counts[s]
        groups[best].append(s)
    return _make_folds(subjects, groups, f"kfold{k}")


def loso(samples) -> list[Fold]:
    """Leave one subject out: one fold per subject key, in sorted order."""
    subjects = subject_keys(samples)
    return _make_folds(subjects, [[s] for s in sorted(set(subjects.tolist()))], "loso")


def lovo(samples) -> list[Fold]:
    """Leave one video out: one fold per sample (clip), in row order.

    The training set keeps the other clips of the test clip's subject, so `train_subjects`
    includes the test subject: LOVO measures recognition of unseen clips, not unseen people.
    """
    df = _frame(samples)
    subjects = subject_keys(df)
    n = len(df)
    folds = []
    for i in range(n):
        train_subjects = sorted(set(subjects[np.arange(n) != i].tolist()))
        folds.append(Fold(i, tuple(train_subjects), (subjects[i],),
                          np.delete(np.arange(n), i), np.array([i], dtype=np.int64), protocol="lovo"))
    return folds


def lodo(samples) -> list[Fold]:
    """Leave one dataset out: one fold per value of the `dataset` column, in sorted order."""
    df = _frame(samples)
    _require(df, "dataset")
    datasets = np.array([_norm_dataset(d) for d in df["dataset"]], dtype=object)
    names = sorted(set(datasets.tolist()))
    if len(names) < 2:
        raise ValueError(f"leave-one-dataset-out needs at least 2 datasets, got {names}")
    subjects = subject_keys(df)
    groups = [sorted({s for s, d in zip(subjects, datasets) if d == name}) for name in names]
    return _make_folds(subjects, groups, "lodo")


def split(samples, protocol: str, *, seed: int | np.random.Generator | None = None,
          label: str | None = "label3") -> list[Fold]:
    """Folds by protocol name: "kfoldK" (e.g. "kfold3", seed required), "loso", "lovo", "lodo"."""
    name = str(protocol).lower()
    m = re.fullmatch(r"kfold(\d+)", name)
    if m:
        if seed is None:
            raise ValueError(f"{protocol}: k-fold needs a seed (folds are random)")
        return kfold(samples, int(m.group(1)), seed=seed, label=label)
    simple = {"loso": loso, "lovo": lovo, "lodo": lodo}
    if name not in simple:
        raise ValueError(f"unknown protocol {protocol!r}; use kfoldK (e.g. kfold3), loso, lovo or lodo")
    return simple[name](samples)


def add_validation(folds: Iterable[Fold], samples, *, fraction: float = 0.2,
                   seed: int | np.random.Generator) -> list[Fold]:
    """Carve held-out validation subjects from each fold's training subjects.

    About `fraction` of the training subjects (at least one, and at least one left for
    training) move to `val_subjects`; `train` loses their samples. For validation-selected
    reporting (choosing an epoch without looking at the test fold). Not for LOVO, whose
    training subjects overlap the test subject.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    subjects = subject_keys(samples)
    rng = _rng(seed)
    out = []
    for fold in folds:
        if fold.protocol == "lovo":
            raise ValueError("add_validation: LOVO folds share subjects between train and test; "
                             "carve validation clips by hand if you need them")
        pool = sorted(set(fold.train_subjects) & set(subjects[fold.train].tolist()))
        if len(pool) < 2:
            raise ValueError(f"fold {fold.index}: {len(pool)} training subject(s); cannot hold any out for validation")
        n_val = min(max(1, int(round(fraction * len(pool)))), len(pool) - 1)
        val_subjects = set(rng.choice(pool, size=n_val, replace=False).tolist())
        in_val = np.array([subjects[i] in val_subjects for i in fold.train], dtype=bool)
        out.append(replace(fold, train_subjects=tuple(s for s in fold.train_subjects if s not in val_subjects),
                           val_subjects=tuple(sorted(val_subjects)),
                           train=fold.train[~in_val], val=fold.train[in_val]))
    return out


def check(folds: Iterable[Fold], samples) -> None:
    """Raise if folds are inconsistent with `samples`: out-of-range indices, a subject in both
    train and test (except LOVO), or train/val/test overlapping."""
    subjects = subject_keys(samples)
    n = len(subjects)
    for f in folds:
        for name in ("train", "test", "val"):
            idx = getattr(f, name)
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"fold {f.index}: {name} indices out of range for {n} samples")
        if len(set(f.train.tolist()) & set(f.test.tolist())) or len(set(f.val.tolist()) & set(f.test.tolist())) \
                or len(set(f.train.tolist()) & set(f.val.tolist())):
            raise ValueError(f"fold {f.index}: a sample is in more than one of train/val/test")
        if f.protocol != "lovo":
            shared = set(subjects[f.train].tolist()) & set(subjects[f.test].tolist())
            if shared:
                raise ValueError(f"fold {f.index}: subjects {sorted(shared)[:5]} are in both train and test")


# ---------------------------------------------------------------------------------------------
# Saving

def save(folds: Iterable[Fold], path: str | os.PathLike, *, samples=None, meta: dict | None = None) -> None:
    """Write folds as JSON, atomically. With `samples`, their clip (or subject) keys are stored
    so `load` can check the folds still index the same samples in the same order."""
    record = {"format": "mielib.folds/1", "meta": meta or {}, "folds": [f.to_dict() for f in folds]}
    if samples is not None:
        record["keys"] = _sample_keys(samples).tolist()
    store.write_json(path, record)


def load(path: str | os.PathLike, *, samples=None) -> list[Fold]:
    """Read folds written by `save`; with `samples`, check they are the samples the folds index."""
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such fold file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON fold file ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != "mielib.folds/1":
        raise ValueError(f"{path}: not a mielib fold file (format {record.get('format') if isinstance(record, dict) else None!r})")
    folds = [Fold.from_dict(d) for d in record["folds"]]
    if samples is not None:
        keys = _sample_keys(samples).tolist()
        stored = record.get("keys")
        if stored is not None and stored != keys:
            diff = next((i for i, (a, b) in enumerate(zip(stored, keys)) if a != b), min(len(stored), len(keys)))
            raise ValueError(f"{path}: the folds were made for other samples "
                             f"({len(stored)} stored vs {len(keys)} given; first difference at row {diff})")
        check(folds, samples)
    return folds


def _sample_keys(samples) -> np.ndarray:
    df = _frame(samples)
    return clip_keys(df) if "clip_id" in df.columns else subject_keys(df)


# ---------------------------------------------------------------------------------------------
# Exclusion rules (MiE-X Section 5.1 and footnote 7)

def exclude_subjects(samples, test_subjects: Iterable[str]) -> pd.DataFrame:
    """Drop from a training or pre-training set every sample of the fold's test subjects.

    Subjects match by normalised subject key "dataset/subject" (so pre-training on SAMM drops
    the SAMM clips of the composite fold's test subjects, and "samm/006" matches "samm/6").
    `samples` needs `dataset` and `subject` columns. Returns the kept rows (original index);
    `attrs["excluded"]` holds how many were dropped.
    """
    df = _frame(samples)
    _require(df, "dataset", "subject")
    wanted = {_parse_subject_key(k) for k in test_subjects}
    keys = subject_keys(df)
    drop = np.array([k in wanted for k in keys], dtype=bool)
    kept = df.loc[~drop].copy()
    kept.attrs["excluded"] = int(drop.sum())
    return kept


def _parse_subject_key(key: str) -> str:
    parts = str(key).split("/")
    if len(parts) < 2:
        raise ValueError(f"test subject {key!r} is not a subject key 'dataset/subject' (see protocols.subject_key)")
    return subject_key(parts[0], parts[1])


def exclude_provenance(manifest: pd.DataFrame, test: Iterable[str]) -> pd.DataFrame:
    """Drop MiE-X samples whose AUs came from the test fold (MiE-X Section 5.1).

    `manifest` has a `provenance` column "dataset/subject/clip" naming the real clip each
    sample's z_MiE (or z_MaE) was read from; it may be empty where there is none (z_exp rows,
    `source == "exp"`). `test` mixes subject keys ("casme2/sub01", drop every clip of that
    subject) and clip keys ("casme2/sub01/EP02_01f", drop that clip). Rows with source "mie"
    must have a well-formed provenance. Returns the kept rows; `attrs["excluded"]` counts drops.
    """
    df = manifest
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"manifest must be a DataFrame, got {type(df).__name__}")
    _require(df, "provenance", what="MiE-X manifest")
    subjects, clips = set(), set()
    for key in test:
        parts = str(key).split("/")
        if len(parts) == 2:
            subjects.add(subject_key(*parts))
        elif len(parts) == 3:
            clips.add(f"{subject_key(parts[0], parts[1])}/{parts[2].strip().lower()}")
        else:
            raise ValueError(f"test key {key!r} is neither 'dataset/subject' nor 'dataset/subject/clip'")
    source = df["source"].astype(str).str.lower().to_numpy() if "source" in df.columns else None
    drop = np.zeros(len(df), dtype=bool)
    for i, prov in enumerate(df["provenance"].tolist()):
        empty = prov is None or (isinstance(prov, float) and np.isnan(prov)) or str(prov).strip() == ""
        if empty:
            if source is not None and source[i] == "mie":
                raise ValueError(f"MiE-X manifest row {df.index[i]!r}: a z_MiE sample without provenance")
            continue
        parts = str(prov).strip().split("/")
        if len(parts) != 3:
            raise ValueError(f"MiE-X manifest row {df.index[i]!r}: provenance {prov!r} is not 'dataset/subject/clip'")
        skey = subject_key(parts[0], parts[1])
        if skey in subjects or f"{skey}/{parts[2].strip().lower()}" in clips:
            drop[i] = True
    kept = df.loc[~drop].copy()
    kept.attrs["excluded"] = int(drop.sum())
    return kept
