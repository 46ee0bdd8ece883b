"""The three AU sources of MiE-X (paper Section 4.2), z_MiE, z_MaE and z_exp, and the pools of AU
triplets (z_o, z_a, y) that the MiE-X builder (`miex`) renders onto faces.

Notebook 01 shows how each source is computed (Fig. 3, supplementary Fig. 1); notebooks 06-09
vary the sources and their options through `miex.build`.

- z_MiE: the onset and apex rows of each micro-expression clip's AU readout (OpenFace on real
  data, the lab's OpenFace stand-in on sim), with the clip's 3-class label (default: the
  MEGC 2019 composite, "CompMiE").
- z_MaE: macro-expression sequences (default CK+; MMEW macro and Oulu-CASIA for supplementary
  Table 2): onset = the first frame's readout, apex = the readout of a frame drawn uniformly
  from the indices floor(alpha*n) .. floor(beta*n), both ends included (alpha=0.3, beta=0.5 as
  in the paper; the authors' code drew floor(n * U(0.25, 0.5)): `rule="authors"`).
- z_exp: an expert table P(AU active | emotion): each AU switched on with its probability, at
  an intensity drawn from U[mu, nu] (0.1, 0.3); onset all zeros. "negative" draws one of the
  table's negative emotions at random (the authors' code). Table "miex" (the authors' map, used
  by the paper's runs) or "du2014" (Du, Tao & Martinez 2014).

A clip whose readout is missing, or whose onset/apex readout row is a failed frame, is never
dropped silently: it raises (missing="raise") or is listed in `Triplets.skipped` with why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import au
from .clip import Clip, ClipSet, Skipped

SOURCES: tuple[str, ...] = ("mie", "mae", "exp")
#: The paper's names of the sources, for plots and tables.
SOURCE_NAMES: dict[str, str] = {"mie": "z_MiE", "mae": "z_MaE", "exp": "z_exp"}
#: Default datasets: the paper's (Section 5.1). Supplementary Table 2 swaps in MMEW and Oulu.
DEFAULT_DATASET: dict[str, str] = {"mie": "composite", "mae": "ckplus"}
MIE_DATASETS: tuple[str, ...] = ("composite", "mmew", "casme2", "samm", "smic", "casme")
MAE_DATASETS: tuple[str, ...] = ("ckplus", "mmew", "oulu")

#: The paper's apex window for z_MaE (Section 5.3) and the authors' code's.
ALPHA, BETA = 0.3, 0.5
AUTHORS_ALPHA, AUTHORS_BETA = 0.25, 0.5
#: The paper's intensity range for z_exp (Section 5.3); the authors' U(0.5, 1.5)/5.
MU, NU = 0.1, 0.3
#: Frames per sample in the video variant of z_exp (Section 5.2: onset, 8 interpolated, apex).
VIDEO_FRAMES = 10

_CODE = {"mie": 11, "mae": 12, "exp": 13}  # stream ids: each source draws from its own generator


# ---------------------------------------------------------------------------------------------
# The tidy representation

@dataclass
class Triplets:
    """N AU triplets (z_o, z_a, y) of one source, with where each came from.

    `provenance` is the clip key "dataset/subject/clip" for z_MiE and z_MaE and "exp/<emotion>"
    for z_exp; `frames` holds the onset and apex frame indices in that clip (-1 for z_exp);
    `readouts` keeps each used clip's readout (shared, not copied) for the video variant;
    `skipped` lists the clips that could not be used and why.
    """

    z_onset: np.ndarray  # N x 17 float32 in [0, 1]
    z_apex: np.ndarray  # N x 17 float32 in [0, 1]
    label: np.ndarray  # N str: the 3-class label (au.MEGC3)
    source: str  # "mie", "mae" or "exp"
    provenance: np.ndarray  # N str
    emotion: np.ndarray  # N str: the dataset's (or the expert table's) emotion
    frames: np.ndarray  # N x 2 int
    readouts: dict = field(default_factory=dict, repr=False)
    skipped: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, idx) -> "Triplets":
        """A subset (`idx`: slice, integer array or boolean mask); readouts stay shared."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return replace(self, z_onset=self.z_onset[idx], z_apex=self.z_apex[idx], label=self.label[idx],
                       provenance=self.provenance[idx], emotion=self.emotion[idx], frames=self.frames[idx])

    def of(self, label: str) -> "Triplets":
        """The triplets of one 3-class label."""
        _check_class(label)
        return self[self.label == label]

    @property
    def n_distinct(self) -> int:
        """How many different (z_o, z_a, y) triplets there are (a pool drawn with replacement repeats)."""
        if len(self) == 0:
            return 0
        rows = np.concatenate([self.z_onset, self.z_apex], axis=1)
        keyed = pd.DataFrame(rows).assign(label=self.label)
        return int(len(keyed.drop_duplicates()))

    def to_frame(self) -> pd.DataFrame:
        """One row per triplet: source, label, emotion, provenance, frames, zo_AU01.., za_AU01.."""
        df = pd.DataFrame({
            "source": self.source, "label": self.label, "emotion": self.emotion,
            "provenance": self.provenance, "onset_frame": self.frames[:, 0], "apex_frame": self.frames[:, 1],
        })
        zo = pd.DataFrame(self.z_onset, columns=[f"zo_{a}" for a in au.LABELS])
        za = pd.DataFrame(self.z_apex, columns=[f"za_{a}" for a in au.LABELS])
        return pd.concat([df, zo, za], axis=1)

    def summary(self) -> dict:
        """Counts a person checks first: triplets per class, distinct triplets, skipped clips."""
        return {
            "source": self.source, "name": SOURCE_NAMES[self.source], "triplets": len(self),
            "distinct": self.n_distinct,
            "by_class": {c: int((self.label == c).sum()) for c in au.MEGC3},
            "clips": int(len(set(self.provenance.tolist()))) if self.source != "exp" else None,
            "skipped": [vars(s) for s in self.skipped],
            **{k: v for k, v in self.config.items() if k not in ("source",)},
        }

    def draw(self, k: int, rng: np.random.Generator, *, label: str | None = None) -> "Triplets":
        """`k` triplets drawn uniformly with replacement (from one class if `label` is given)."""
        pool = self if label is None else self.of(label)
        if len(pool) == 0:
            raise ValueError(f"no {SOURCE_NAMES[self.source]} triplet of class {label!r} to draw from")
        return pool[rng.integers(0, len(pool), int(k))]

    def path(self, i: int, n_frames: int | None = VIDEO_FRAMES) -> np.ndarray:
        """The AU vectors of triplet `i` from onset to apex, for the video variant (Section 5.2).

        z_MiE / z_MaE: the readout rows from the onset to the apex frame (failed rows filled by
        linear interpolation), resampled to `n_frames` rows by nearest row (None: every row).
        z_exp: onset, `n_frames - 2` vectors interpolated linearly, apex. The first and last
        rows always equal z_o and z_a (with a perturbation spread linearly in between).
        """
        zo, za = self.z_onset[i].astype(np.float64), self.z_apex[i].astype(np.float64)
        if self.source == "exp":
            n = VIDEO_FRAMES if n_frames is None else int(n_frames)
            if n < 2:
                raise ValueError(f"a video needs at least 2 frames (onset and apex), got {n}")
            w = np.linspace(0.0, 1.0, n)[:, None]
            return ((1 - w) * zo + w * za).astype(np.float32)
        key = str(self.provenance[i])
        if key not in self.readouts:
            raise ValueError(f"triplet {i} ({key}): its clip's readout is not attached; build the pool with "
                             "sources.triplets(...) to use the video variant")
        on, ap = (int(x) for x in self.frames[i])
        rows = self.readouts[key][on:ap + 1].astype(np.float64)
        if n_frames is not None:
            if int(n_frames) < 2:
                raise ValueError(f"a video needs at least 2 frames (onset and apex), got {n_frames}")
            rows = rows[np.rint(np.linspace(0, len(rows) - 1, int(n_frames))).astype(int)]
        # the endpoints become z_o and z_a exactly (they differ from the rows only by a perturbation)
        w = np.linspace(0.0, 1.0, len(rows))[:, None] if len(rows) > 1 else np.ones((1, 1))
        rows = rows + (1 - w) * (zo - rows[0]) + w * (za - rows[-1])
        return np.clip(rows, 0.0, 1.0).astype(np.float32)

    @staticmethod
    def concat(parts: Sequence["Triplets"]) -> "Triplets":
        """Join pools of one source (skipped lists and readouts are merged)."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        if len({p.source for p in parts}) != 1:
            raise ValueError(f"cannot join triplets of different sources {sorted({p.source for p in parts})}")
        readouts, skipped = {}, []
        for p in parts:
            readouts.update(p.readouts)
            skipped += [s for s in p.skipped if s not in skipped]
        return Triplets(
            z_onset=np.concatenate([p.z_onset for p in parts]), z_apex=np.concatenate([p.z_apex for p in parts]),
            label=np.concatenate([p.label for p in parts]), source=parts[0].source,
            provenance=np.concatenate([p.provenance for p in parts]),
            emotion=np.concatenate([p.emotion for p in parts]), frames=np.concatenate([p.frames for p in parts]),
            readouts=readouts, skipped=skipped, config=dict(parts[0].config))


def _empty(source: str) -> Triplets:
    return Triplets(np.zeros((0, au.N_AUS), np.float32), np.zeros((0, au.N_AUS), np.float32),
                    np.array([], dtype=object), source, np.array([], dtype=object), np.array([], dtype=object),
                    np.zeros((0, 2), dtype=np.int64))


def _check_class(label: str) -> None:
    if label not in au.MEGC3:
        raise ValueError(f"unknown 3-class label {label!r}; use one of {', '.join(au.MEGC3)}")


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown AU source {source!r}; use one of {', '.join(SOURCES)} "
                         f"({', '.join(SOURCE_NAMES.values())})")
    return source


# ---------------------------------------------------------------------------------------------
# Clips: which dataset feeds z_MiE and z_MaE, from either data source

def load_clips(source: str, dataset: str | None = None, *, data_source: str = "sim",
               data_root: str | Path | None = None, data_seed: int = 0) -> ClipSet:
    """The clips behind z_MiE ("mie": micro-expressions) or z_MaE ("mae": macro-expressions).

    `dataset` defaults to the paper's (composite for z_MiE, CK+ for z_MaE); MMEW gives its
    micro part for z_MiE and its macro part for z_MaE. `data_seed` is the simulated lab's seed.
    """
    from . import datasets

    _check_source(source)
    if source == "exp":
        raise ValueError("z_exp comes from an expert table, not from clips")
    dataset = (dataset or DEFAULT_DATASET[source]).lower()
    allowed = MIE_DATASETS if source == "mie" else MAE_DATASETS
    if dataset not in allowed:
        raise ValueError(f"{SOURCE_NAMES[source]} cannot come from {dataset!r}; use one of {', '.join(allowed)}")
    options = {"part": "micro" if source == "mie" else "macro"} if dataset == "mmew" else {}
    # datasets.load finds the dataset under data_root (its own root, or one subfolder per dataset)
    return datasets.load(dataset, data_source, data_root, seed=data_seed, **options)


_LOCATING_RULE = (
    "AU readouts are OpenFace CSVs: for a clip folder .../X/ mielib reads .../X.csv beside it, else "
    "ROOT/openface/<path of X relative to ROOT>.csv (see mielib.openface); make one with "
    "`FeatureExtraction -fdir X -aus`, or pass missing='skip' to leave such clips out (they are reported)")


def _folder(clip: Clip) -> str:
    paths = getattr(clip.frames, "paths", None)
    return f" (frames in {Path(paths[0]).parent})" if paths else ""


def _failed_frames(clip: Clip) -> set[int]:
    failed = clip.meta.get("readout_failed_frames", clip.meta.get("failed_frames", ()))
    return {int(i) for i in np.asarray(failed, dtype=np.int64).ravel()}


def _repaired(readout: np.ndarray, failed: set[int]) -> np.ndarray:
    """The readout with failed rows (OpenFace writes zeros there) filled in from their neighbours."""
    if not failed or len(failed) >= len(readout):
        return readout
    good = np.array([i for i in range(len(readout)) if i not in failed])
    out = readout.astype(np.float32, copy=True)
    for j in range(au.N_AUS):
        out[sorted(failed), j] = np.interp(sorted(failed), good, readout[good, j])
    return out


@dataclass
class _Usable:
    clip: Clip
    readout: np.ndarray
    onset: int
    apex: np.ndarray  # candidate apex indices (one for z_MiE, the window for z_MaE)


def _usable(clips: ClipSet, source: str, *, missing: str, failed: str, window) -> tuple[list[_Usable], list[Skipped]]:
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', not {missing!r}")
    if failed not in ("skip", "keep"):
        raise ValueError(f"failed must be 'skip' (leave out clips whose onset/apex frame failed) or 'keep', "
                         f"not {failed!r}")
    name = SOURCE_NAMES[source]
    usable, skipped = [], []
    for clip in clips:
        if clip.label3 not in au.MEGC3:
            why = ("no emotion label (unlabelled or neutral sequence)" if clip.label in (None, "neutral")
                   else f"class {clip.label!r} has no 3-class label under the MEGC 2019 rules")
            skipped.append(Skipped(clip.dataset, clip.key, f"{name}: {why}"))
            continue
        if clip.readout is None:
            if missing == "raise":
                raise ValueError(f"{clip.key}{_folder(clip)}: no AU readout, so {name} cannot be read from it. "
                                 f"{_LOCATING_RULE}")
            skipped.append(Skipped(clip.dataset, clip.key, f"{name}: no AU readout ({_LOCATING_RULE})"))
            continue
        readout = au.validate(clip.readout, where=f"{clip.key} AU readout")
        n = len(readout)
        if readout.ndim != 2 or n != clip.n_frames:
            raise ValueError(f"{clip.key}: its AU readout has {n} rows but the clip has {clip.n_frames} frames")
        bad = _failed_frames(clip) if failed == "skip" else set()
        if source == "mie":
            onset, cand = int(clip.onset), np.array([int(clip.apex)])
            if not (0 <= onset <= cand[0] < n):
                raise ValueError(f"{clip.key}: onset {onset} and apex {cand[0]} are not frames 0..{n - 1} in order")
        else:
            onset, cand = 0, window(n)
        if onset in bad:
            skipped.append(Skipped(clip.dataset, clip.key, f"{name}: face tracking failed on the onset frame "
                                                           f"{onset} (its readout row is not a measurement)"))
            continue
        good = np.array([c for c in cand if c not in bad], dtype=np.int64)
        if len(good) == 0:
            where = f"apex frame {cand[0]}" if len(cand) == 1 else f"every frame of the apex window {cand[0]}..{cand[-1]}"
            skipped.append(Skipped(clip.dataset, clip.key, f"{name}: face tracking failed on the {where}"))
            continue
        usable.append(_Usable(clip, readout, onset, good))
    return usable, skipped


def apex_window(n: int, alpha: float = ALPHA, beta: float = BETA, rule: str = "paper") -> np.ndarray:
    """The frame indices a z_MaE apex is drawn from, for a sequence of `n` frames.

    "paper": floor(alpha*n) .. floor(beta*n), both ends included (capped at n-1), each equally
    likely. "authors": floor(n*u) with u ~ U(alpha, beta); the indices it can reach, which are not
    all equally likely (the authors' code used alpha=0.25, beta=0.5).
    """
    if not (0.0 <= alpha <= beta <= 1.0) or math.isnan(alpha) or math.isnan(beta):
        raise ValueError(f"need 0 <= alpha <= beta <= 1, got alpha={alpha}, beta={beta}")
    if rule not in ("paper", "authors"):
        raise ValueError(f"rule must be 'paper' or 'authors', not {rule!r}")
    if n < 1:
        raise ValueError(f"a sequence needs at least one frame, got n={n}")
    lo = min(int(math.floor(alpha * n)), n - 1)
    hi = min(int(math.floor(beta * n)), n - 1)
    if rule == "authors" and beta * n == math.floor(beta * n) and hi > lo:
        hi -= 1  # u < beta, so floor(n*u) never reaches beta*n when that is a whole number
    return np.arange(lo, hi + 1)


def _draw_apex(rng: np.random.Generator, cand: np.ndarray, n: int, alpha: float, beta: float, rule: str) -> int:
    if rule == "paper" or len(cand) == 1:
        return int(cand[rng.integers(len(cand))])
    # authors: floor(n * U(alpha, beta)), redrawn if it lands on a failed frame
    for _ in range(100):
        i = min(int(math.floor(n * rng.uniform(alpha, beta))), n - 1)
        if i in cand:
            return i
    return int(cand[rng.integers(len(cand))])


# ---------------------------------------------------------------------------------------------
# The three sources

def mie(clips: ClipSet, *, missing: str = "raise", failed: str = "skip") -> Triplets:
    """z_MiE: one triplet per micro-expression clip, from its readout's onset and apex rows.

    missing: "raise" (default) or "skip" clips without a readout. failed: "skip" (default)
    clips whose onset or apex readout row is a failed frame (OpenFace writes zeros there) or
    "keep" them, zeros included, as an unchecked pipeline would.
    """
    usable, skipped = _usable(clips, "mie", missing=missing, failed=failed, window=None)
    out = _from_usable("mie", usable, [u.apex[0] for u in usable], skipped)
    out.config = {"dataset": getattr(clips, "name", None), "data_source": getattr(clips, "source", None)}
    return out


def mae(clips: ClipSet, *, alpha: float = ALPHA, beta: float = BETA, rule: str = "paper",
        seed: int | np.random.Generator = 0, missing: str = "raise", failed: str = "skip") -> Triplets:
    """z_MaE: one triplet per labelled macro-expression sequence, its apex drawn from the window.

    Onset = the first frame's readout; apex = the readout of a frame drawn from `apex_window`.
    Sequences without a 3-class label (CK+'s unlabelled ones) are listed in `skipped`.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([int(seed), _CODE["mae"]])
    apex_window(2, alpha, beta, rule)  # check the options once, before any clip
    usable, skipped = _usable(clips, "mae", missing=missing, failed=failed,
                              window=lambda n: apex_window(n, alpha, beta, rule))
    apexes = [_draw_apex(rng, u.apex, len(u.readout), alpha, beta, rule) for u in usable]
    out = _from_usable("mae", usable, apexes, skipped)
    out.config = {"dataset": getattr(clips, "name", None), "data_source": getattr(clips, "source", None),
                  "alpha": alpha, "beta": beta, "rule": rule}
    return out


def _from_usable(source: str, usable: list[_Usable], apexes: Sequence[int], skipped: list) -> Triplets:
    if not usable:
        out = _empty(source)
        out.skipped = skipped
        return out
    zo = np.stack([u.readout[u.onset] for u in usable]).astype(np.float32)
    za = np.stack([u.readout[a] for u, a in zip(usable, apexes)]).astype(np.float32)
    readouts = {u.clip.key: _repaired(u.readout, _failed_frames(u.clip)) for u in usable}
    return Triplets(
        z_onset=zo, z_apex=za, label=np.array([u.clip.label3 for u in usable], dtype=object), source=source,
        provenance=np.array([u.clip.key for u in usable], dtype=object),
        emotion=np.array([str(u.clip.label) for u in usable], dtype=object),
        frames=np.array([[u.onset, a] for u, a in zip(usable, apexes)], dtype=np.int64),
        readouts=readouts, skipped=skipped)


def exp(per_class: int | Mapping[str, int], *, table: str = "miex", mu: float = MU, nu: float = NU,
        seed: int | np.random.Generator = 0) -> Triplets:
    """z_exp: `per_class` triplets per 3-class label (or a {label: count} mapping) from an expert table.

    For each triplet: an emotion of the class (negative: one of the table's negative emotions,
    uniformly, as in the authors' code), each AU active with P(AU | emotion), active AUs at
    U[mu, nu], the others 0; the onset is all zeros (a neutral face). A draw may switch no AU on
    (e.g. fear in the authors' map has P = 0.5 everywhere): that is the Bernoulli model, kept.
    """
    counts = _counts(per_class)
    parts = []
    for k, label in enumerate(au.MEGC3):
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([int(seed), _CODE["exp"], k])
        parts.append(_exp_class(label, counts[label], rng, table, mu, nu))
    out = Triplets.concat(parts)
    out.config = {"table": table, "mu": mu, "nu": nu}
    return out


def _exp_class(label: str, m: int, rng: np.random.Generator, table: str, mu: float, nu: float) -> Triplets:
    if not (0.0 <= mu <= nu <= 1.0) or math.isnan(mu) or math.isnan(nu):
        raise ValueError(f"need 0 <= mu <= nu <= 1, got mu={mu}, nu={nu}")
    tab = au.expert_table(table)
    emotions = au.expert_emotions(label, table)
    if not emotions:
        raise ValueError(f"the {table} expert table has no emotion of class {label!r}")
    za = np.zeros((m, au.N_AUS), np.float32)
    names = np.empty(m, dtype=object)
    for j in range(m):  # one triplet after another, so a pool of m is the start of a pool of m + 1
        e = emotions[int(rng.integers(len(emotions)))]
        active = rng.random(au.N_AUS) < tab[e]
        za[j] = np.where(active, rng.uniform(mu, nu, au.N_AUS), 0.0)
        names[j] = e
    return Triplets(z_onset=np.zeros((m, au.N_AUS), np.float32), z_apex=za,
                    label=np.array([label] * m, dtype=object), source="exp",
                    provenance=np.array([f"exp/{e}" for e in names], dtype=object), emotion=names,
                    frames=np.full((m, 2), -1, dtype=np.int64))


def _counts(per_class) -> dict[str, int]:
    if isinstance(per_class, Mapping):
        unknown = [k for k in per_class if k not in au.MEGC3]
        if unknown:
            raise ValueError(f"unknown 3-class label(s) {unknown}; use {', '.join(au.MEGC3)}")
        counts = {c: per_class.get(c, 0) for c in au.MEGC3}
    else:
        counts = {c: per_class for c in au.MEGC3}
    for c, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"the number of triplets of class {c!r} must be a non-negative integer, got {v!r}")
    return {c: int(v) for c, v in counts.items()}


def split_count(n: int, parts: int) -> list[int]:
    """`n` split into `parts` near-equal whole numbers, the remainder going to the first parts."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of triplets must be a non-negative integer, got {n!r}")
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------------------------------------
# Pools of triplets

def triplets(source: str, n: int | None = None, *, seed: int = 0, perturb: float = 0.0,
             perturb_onset: bool = False, per_class: int | Mapping[str, int] | None = None,
             clips: ClipSet | None = None, dataset: str | None = None, data_source: str = "sim",
             data_root: str | Path | None = None, data_seed: int = 0, alpha: float = ALPHA, beta: float = BETA,
             rule: str = "paper", mu: float = MU, nu: float = NU, table: str = "miex",
             missing: str = "raise", failed: str = "skip") -> Triplets:
    """A pool of AU triplets (z_o, z_a, y) of one source, each with its provenance.

    - n = None and per_class = None: the source's own set: one triplet per usable clip for
      "mie" and "mae" (z_MaE apexes drawn once); "exp" needs a number.
    - n: that many triplets, split evenly over the three classes (the remainder to the first
      classes in au.MEGC3 order); per_class: a number per class instead. z_MiE and z_MaE pick
      clips of the class uniformly with replacement (the paper: "we randomly draw a pair of
      AUs ... that have the desired emotion label"), z_MaE draws a fresh apex each time, z_exp
      draws fresh vectors. This is Fig. 6's "number of AU triplets": a builder then samples with
      replacement from this fixed pool (`Triplets.draw`). z_MiE repeats once n exceeds its clips;
      `Triplets.n_distinct` says how many differ.
    - perturb = p > 0: add U(-p, p) to every apex AU (and onset AU with perturb_onset), clipped
      to [0, 1]; the paper's "random AU perturbations" (Section 4.3). z_exp onsets stay zero.
    - clips: the ClipSet to read z_MiE / z_MaE from; else `load_clips(source, dataset, ...)`.

    Class k of source s draws from its own generator (seed, s, k), so changing one class's count
    never changes another class's triplets.
    """
    _check_source(source)
    if not (0.0 <= perturb <= 1.0) or math.isnan(perturb):
        raise ValueError(f"perturb must be in [0, 1], got {perturb!r}")
    if n is not None and per_class is not None:
        raise ValueError("give n (split over the classes) or per_class, not both")
    counts = None
    if n is not None:
        counts = dict(zip(au.MEGC3, split_count(n, len(au.MEGC3))))
    elif per_class is not None:
        counts = _counts(per_class)
    config = {"source": source, "seed": seed, "perturb": perturb, "perturb_onset": perturb_onset}
    if source == "exp":
        if counts is None:
            raise ValueError("z_exp has no natural size: give n or per_class")
        parts = [_exp_class(c, counts[c], np.random.default_rng([int(seed), _CODE["exp"], k]), table, mu, nu)
                 for k, c in enumerate(au.MEGC3)]
        out = Triplets.concat(parts)
        config.update(table=table, mu=mu, nu=nu)
    else:
        if clips is None:
            clips = load_clips(source, dataset, data_source=data_source, data_root=data_root, data_seed=data_seed)
        config.update(dataset=getattr(clips, "name", dataset), data_source=getattr(clips, "source", data_source))
        if source == "mie":
            base = mie(clips, missing=missing, failed=failed)
        else:
            base = mae(clips, alpha=alpha, beta=beta, rule=rule, seed=np.random.default_rng([int(seed), _CODE["mae"]]),
                       missing=missing, failed=failed)
            config.update(alpha=alpha, beta=beta, rule=rule)
        out = base if counts is None else _resample(base, clips, counts, seed, source, alpha, beta, rule, missing, failed)
    if perturb > 0:
        out = _perturb(out, perturb, perturb_onset, seed)
    out.config = config
    return out


def _resample(base: Triplets, clips: ClipSet, counts: dict, seed: int, source: str, alpha, beta, rule,
              missing, failed) -> Triplets:
    """counts[c] triplets of each class: clips drawn uniformly with replacement (z_MaE: fresh apex)."""
    usable, _ = _usable(clips, source, missing=missing, failed=failed,
                        window=(lambda n: apex_window(n, alpha, beta, rule)) if source == "mae" else None)
    parts = []
    for k, c in enumerate(au.MEGC3):
        m = counts[c]
        of_class = [u for u in usable if u.clip.label3 == c]
        if m and not of_class:
            raise ValueError(f"{SOURCE_NAMES[source]}: {getattr(clips, 'name', 'the dataset')} has no usable clip "
                             f"of class {c!r} to draw {m} triplets from")
        rng = np.random.default_rng([int(seed), _CODE[source], k])
        chosen, apexes = [], []
        for _ in range(m):  # one triplet after another, so a pool of m is the start of a pool of m + 1
            u = of_class[int(rng.integers(len(of_class)))]
            chosen.append(u)
            apexes.append(u.apex[0] if source == "mie" else _draw_apex(rng, u.apex, len(u.readout), alpha, beta, rule))
        part = _from_usable(source, chosen, apexes, []) if chosen else _empty(source)
        parts.append(part)
    out = Triplets.concat(parts)
    out.readouts = {**base.readouts, **out.readouts}
    out.skipped = list(base.skipped)
    return out


def _perturb(t: Triplets, p: float, onset: bool, seed: int) -> Triplets:
    rng = np.random.default_rng([int(seed), _CODE[t.source], 99])
    za = np.clip(t.z_apex + rng.uniform(-p, p, t.z_apex.shape), 0.0, 1.0).astype(np.float32)
    zo = t.z_onset
    if onset and t.source != "exp":
        zo = np.clip(zo + rng.uniform(-p, p, zo.shape), 0.0, 1.0).astype(np.float32)
    return replace(t, z_onset=zo, z_apex=za)


# ---------------------------------------------------------------------------------------------
# Summaries for notebook 01 (supplementary Fig. 1)

def mean_aus(pools: Iterable[Triplets], which: str = "apex") -> pd.DataFrame:
    """Mean AU value per source and class (supplementary Fig. 1): rows (source, label), 17 AU columns."""
    if which not in ("apex", "onset"):
        raise ValueError(f"which must be 'apex' or 'onset', not {which!r}")
    rows = []
    for t in pools:
        z = t.z_apex if which == "apex" else t.z_onset
        for c in au.MEGC3:
            mask = t.label == c
            if mask.any():
                rows.append({"source": t.source, "label": c, "n": int(mask.sum()),
                             **dict(zip(au.LABELS, z[mask].mean(axis=0).astype(float)))})
    return pd.DataFrame(rows)
