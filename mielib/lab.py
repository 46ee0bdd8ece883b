"""The simulated lab: seeded stand-ins for every licence-restricted dataset (CASME II, SAMM, SMIC,
their MEGC 2019 composite, CK+, MMEW, CASME, Oulu-CASIA) and for the EmotioNet/CelebA identity
pools, generated on demand and cached under the data folder. The default data source ("sim").

Every notebook reaches it through `datasets.load(name, data_source="sim")` (and the identity
pools through `lab.pool`). What it assumes is listed in data/README.md, whose tables `card()` and
`assumptions()` produced. The lab is a controlled stand-in: its numbers are not evidence about the
papers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import au, readout, runtime, store
from .clip import Clip, ClipSet, RenderedFrames, Skipped

#: Bump when anything that changes generated content changes; old caches are then ignored.
LAB_VERSION = 2  # 2: noise scaled by size/native; micro-expression sets registered to the first frame

#: The structure of every stand-in (subjects, clip ids, labels) comes from this fixed seed, so
#: clip keys are the same for every lab seed; the lab seed varies everything else.
CATALOGUE_SEED = 20190404

STANDINS = ("composite", "casme2", "samm", "smic", "ckplus", "mmew", "casme", "oulu")
POOLS = ("emotionet", "celeba")
#: Images in each simulated identity pool (MiE-X uses 5,000 identities).
POOL_SIZES = {"emotionet": 10000, "celeba": 5000}

#: face.identity() indices: the pools use 0 .. POOL_SIZES-1 of their own pool; lab subjects use
#: the "emotionet" pool from IDENTITY_BASE upwards, so a lab subject is never a MiE-X identity.
IDENTITY_BASE = 1_000_000

#: Share of clips whose shown expression belongs to another class than their label.
LABEL_NOISE = 0.06
#: Range of a micro-expression's overall apex amplitude (each AU's apex is this times its
#: relative intensity, the person's gain and clip-level jitter, capped at MICRO_CAP).
MICRO_AMPLITUDE = (0.05, 0.28)
MICRO_CAP = 0.35
#: Range of a macro-expression's peak amplitude.
MACRO_AMPLITUDE = (0.6, 1.0)
#: Personal style: log-sd of each AU's probability, and the chances that a person adds an AU
#: of their own to an emotion or never uses one of its AUs.
STYLE_SD, STYLE_EXTRA, STYLE_DROP = 0.5, 0.6, 0.4
#: Incidental movements per clip (Poisson mean) and their intensity range.
INCIDENTAL_RATE = 0.8
INCIDENTAL_RANGE = (0.03, 0.15)
#: A clip counts as a micro-expression if it lasts under this many seconds.
MICRO_MAX_S = 0.5

#: The MiE-X paper's MMEW set-up: 234 micro-expressions in these six classes (datasets.md section 5).
MMEW_MIEX_CLASSES = ("happiness", "surprise", "anger", "disgust", "fear", "sadness")

# ---------------------------------------------------------------------------------------------
# Emotion prototypes: per AU, P(active) and relative intensity when active. They overlap the
# expert tables (au.DU2014, au.MIEX_MAP) but are not them: micro-expressions in the real
# datasets lean on brow lowering and lid tightening (AU4, AU7) for most negative classes, smiles
# are often partial (AU12 without AU6) or masked (AU14), and each emotion adds or drops AUs.
PROTOTYPES: dict[str, dict[int, tuple[float, float]]] = {
    "happiness": {12: (0.9, 1.0), 6: (0.55, 0.6), 25: (0.2, 0.5), 14: (0.15, 0.4), 7: (0.15, 0.4), 10: (0.1, 0.4)},
    "amusement": {12: (0.85, 1.0), 6: (0.5, 0.6), 25: (0.3, 0.6), 26: (0.1, 0.4), 14: (0.1, 0.4)},
    "surprise": {1: (0.8, 0.9), 2: (0.75, 0.9), 5: (0.4, 0.6), 25: (0.3, 0.5), 26: (0.25, 0.6), 4: (0.1, 0.4)},
    "disgust": {4: (0.6, 0.8), 9: (0.45, 0.8), 10: (0.4, 0.7), 7: (0.45, 0.6), 17: (0.3, 0.5),
                15: (0.15, 0.5), 25: (0.15, 0.4)},
    "repression": {14: (0.5, 0.7), 17: (0.5, 0.7), 15: (0.3, 0.6), 23: (0.35, 0.6), 12: (0.3, 0.5),
                   4: (0.15, 0.5)},
    "anger": {4: (0.85, 0.9), 7: (0.6, 0.7), 23: (0.35, 0.6), 17: (0.3, 0.5), 9: (0.15, 0.5),
              10: (0.1, 0.5), 5: (0.1, 0.4)},
    "contempt": {14: (0.75, 0.9), 12: (0.3, 0.4), 7: (0.2, 0.5), 4: (0.15, 0.4)},
    "fear": {4: (0.55, 0.7), 1: (0.5, 0.7), 20: (0.45, 0.7), 5: (0.35, 0.7), 2: (0.3, 0.6),
             7: (0.35, 0.5), 25: (0.25, 0.5), 26: (0.1, 0.4)},
    "sadness": {4: (0.65, 0.8), 1: (0.5, 0.7), 15: (0.5, 0.7), 17: (0.45, 0.6), 7: (0.2, 0.4), 6: (0.1, 0.3)},
    "tense": {4: (0.5, 0.7), 7: (0.45, 0.6), 23: (0.35, 0.6), 17: (0.35, 0.6), 14: (0.25, 0.5)},
}
# "others": 1-3 AUs drawn from this weighted list (the real "others" classes are a grab bag).
OTHERS_AUS = {4: 3, 7: 2, 1: 2, 2: 1.5, 12: 1.5, 14: 2, 17: 1.5, 45: 2, 10: 1, 15: 1, 25: 1, 23: 1, 5: 0.5}
# What the 3-class labels of SMIC (and CK+'s unlabelled sequences) hide.
HIDDEN = {
    "negative": {"disgust": 0.3, "sadness": 0.2, "fear": 0.2, "anger": 0.15, "repression": 0.15},
    "positive": {"happiness": 1.0},
}
# A subject's personal "tic": an AU that fires in some clips whatever the emotion.
TIC_AUS = {45: 3, 4: 1.5, 14: 1.5, 17: 1.5, 12: 1, 7: 1, 1: 1, 2: 0.5, 23: 1, 10: 0.5, 15: 0.5}


@dataclass(frozen=True)
class Capture:
    """How a dataset was recorded, as far as the lab reproduces it (applied at render time)."""

    fps: float
    native: int  # face size in pixels in the real recordings; frames render at min(size, native)
    gray: float  # share of sessions (subjects) recorded in grayscale
    cast: tuple[float, float, float]  # RGB gains of the lighting
    noise: float  # sensor noise sd on 0..255
    blur: float  # optics/compression blur, Gaussian sigma in pixels at 128 px
    motion: float  # head-motion scale: translation sd in pixels at 128 px (rotation in degrees)
    quality: float  # readout difficulty (1 = clean frontal colour video)
    jpeg: int  # JPEG quality of the stored frames (100: the real files are lossless, PNG or BMP)
    registered: bool = False  # distributed as cropped faces registered to the clip's first frame

    def noise_at(self, size: int) -> float:
        """Sensor noise sd (0..255) of a frame stored at `size` px. The camera adds it at the native
        face size; area-downsampling by native/size averages it, so its sd shrinks by size/native."""
        return float(self.noise) * min(1.0, int(size) / float(self.native))


#: Registration (cropped variants): what remains of the head motion after frames are aligned to
#: the clip's first frame by landmarks, as a share of the raw motion relative to that frame.
REGISTRATION_RESIDUAL = 0.15
VARIANTS = ("cropped", "raw")


@dataclass(frozen=True)
class _Spec:
    name: str  # the stand-in (cache name)
    dataset: str  # Clip.dataset
    slot: int  # identity and seed slot; shared by the two MMEW parts (same people)
    kind: str  # "micro" or "macro"
    capture: Capture
    length: tuple[float, float]  # micro: duration range in seconds; macro: frame range
    real: str  # the real dataset's name


SPECS: dict[str, _Spec] = {s.name: s for s in (
    _Spec("casme2", "casme2", 1, "micro", Capture(fps=200, native=300, gray=0.0, cast=(1.06, 1.0, 0.9), noise=3.0,
                                                  blur=0.4, motion=0.5, quality=1.0, jpeg=90, registered=True),
          (0.18, 0.49), "CASME II"),
    _Spec("samm", "samm", 2, "micro", Capture(fps=200, native=400, gray=1.0, cast=(1.0, 1.0, 1.0), noise=2.0,
                                              blur=0.3, motion=0.4, quality=1.1, jpeg=90, registered=True),
          (0.18, 0.49), "SAMM"),
    _Spec("smic", "smic", 3, "micro", Capture(fps=100, native=190, gray=0.0, cast=(0.95, 1.02, 0.92), noise=4.5,
                                              blur=0.9, motion=0.7, quality=1.3, jpeg=100, registered=True),
          (0.15, 0.49), "SMIC-HS"),
    _Spec("ckplus", "ckplus", 4, "macro", Capture(fps=30, native=250, gray=0.75, cast=(1.0, 1.0, 1.02), noise=2.5,
                                                  blur=0.6, motion=0.5, quality=0.9, jpeg=100),
          (10, 60), "CK+"),
    _Spec("mmew_micro", "mmew", 5, "micro", Capture(fps=90, native=400, gray=0.0, cast=(1.03, 1.0, 0.97), noise=2.0,
                                                    blur=0.3, motion=0.4, quality=1.0, jpeg=90, registered=True),
          (0.15, 0.49), "MMEW (micro)"),
    _Spec("mmew_macro", "mmew", 5, "macro", Capture(fps=90, native=400, gray=0.0, cast=(1.03, 1.0, 0.97), noise=2.0,
                                                    blur=0.3, motion=0.4, quality=1.0, jpeg=90, registered=True),
          (27, 54), "MMEW (macro)"),
    _Spec("casme", "casme", 6, "micro", Capture(fps=60, native=170, gray=0.0, cast=(1.05, 1.0, 0.88), noise=3.5,
                                                blur=0.7, motion=0.6, quality=1.2, jpeg=90, registered=True),
          (0.15, 0.49), "CASME"),
    _Spec("oulu", "oulu", 7, "macro", Capture(fps=25, native=100, gray=0.0, cast=(1.0, 1.0, 1.05), noise=3.5,
                                              blur=0.8, motion=0.6, quality=1.2, jpeg=85),
          (9, 30), "Oulu-CASIA VIS (strong light)"),
)}

# ---------------------------------------------------------------------------------------------
# Catalogues: subjects, clip ids and labels with the real datasets' sizes and compositions.

CASME2_COUNTS = {"others": 99, "disgust": 63, "happiness": 32, "repression": 27, "surprise": 25,
                 "sadness": 7, "fear": 2}
# Two CASME II disgust clips of the sheet are absent from the official MEGC 2019 list.
CASME2_UNLISTED = {("sub04", "EP12_01f"), ("sub05", "EP09_05f")}
# CASME II subjects whose clips are all in classes the MEGC rules drop (not in the composite).
CASME2_DROPPED_SUBJECTS = ("sub10", "sub18")
CASME2_UNANNOTATED_APEX = 5  # clips with '/' in ApexFrame
SAMM_COUNTS = {"anger": 57, "others": 26, "happiness": 26, "surprise": 15, "contempt": 12,
               "disgust": 9, "fear": 8, "sadness": 6}
SAMM_SUBJECTS = tuple(f"{i:03d}" for i in range(6, 38) if i not in (8, 27, 29))
SAMM_DROPPED_SUBJECTS = ("025",)  # only "Other" clips
SMIC_COUNTS = {"negative": 70, "positive": 51, "surprise": 43}
SMIC_SUBJECTS = tuple(f"s{i}" for i in (1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 18, 19, 20))
CKPLUS_COUNTS = {"anger": 45, "contempt": 18, "disgust": 59, "fear": 25, "happiness": 69,
                 "sadness": 28, "surprise": 83}
CKPLUS_SEQUENCES, CKPLUS_SUBJECTS = 593, 123
MMEW_MICRO_COUNTS = {"happiness": 36, "surprise": 89, "anger": 8, "disgust": 72, "fear": 16,
                     "sadness": 13, "others": 66}
MMEW_MACRO_PER_CLASS = 150  # 900 macro-expressions, six classes (assumed balanced)
MMEW_SUBJECTS = 36
MMEW_EMOTION_CODES = {"happiness": 1, "surprise": 2, "anger": 3, "disgust": 4, "fear": 5,
                      "sadness": 6, "others": 7}
CASME_COUNTS = {"disgust": 88, "repression": 40, "tense": 31, "surprise": 20, "sadness": 6,
                "amusement": 5, "contempt": 3, "fear": 2}
CASME_SUBJECTS = 19
OULU_SUBJECTS = 80
OULU_FOLDERS = {"anger": "Anger", "disgust": "Disgust", "fear": "Fear", "happiness": "Happiness",
                "sadness": "Sadness", "surprise": "Surprise"}


def _assign(rng, subjects, reserved, counts, *, min_size=1, weight_sd=0.6, exclude=()):
    """Spread the labels of `counts` over subjects: `reserved` first, then each subject (not in
    `exclude`) up to `min_size`, then the rest at random with subject-specific weights (some
    people produce many more expressions than others)."""
    pool = Counter(counts)
    out = {s: list(reserved.get(s, [])) for s in subjects}
    for labels in reserved.values():
        pool.subtract(labels)
    if min(pool.values()) < 0:
        raise AssertionError("reserved labels exceed the class counts")
    bag = [lab for lab, n in sorted(pool.items()) for _ in range(n)]
    rng.shuffle(bag)
    free = [s for s in subjects if s not in exclude]
    for s in free:
        while len(out[s]) < min_size:
            out[s].append(bag.pop())
    weights = np.exp(rng.normal(0.0, weight_sd, len(free)))
    for lab in bag:
        out[free[rng.choice(len(free), p=weights / weights.sum())]].append(lab)
    return out


def _ensure(rng, out, subjects, ok, donors_ok):
    """Swap labels until every subject in `subjects` has at least one label satisfying `ok`."""
    for s in subjects:
        if any(ok(lab) for lab in out[s]):
            continue
        donors = [d for d in out if d != s and sum(ok(lab) for lab in out[d]) > 1 and donors_ok(d)]
        d = donors[rng.integers(len(donors))]
        i = next(i for i, lab in enumerate(out[d]) if ok(lab))
        j = next(j for j, lab in enumerate(out[s]) if not ok(lab))
        out[d][i], out[s][j] = out[s][j], out[d][i]


def _catalogue_casme2(rng) -> list[dict]:
    subjects = [f"sub{i:02d}" for i in range(1, 27)]
    eligible = lambda lab: au.to_megc3("casme2", lab) is not None  # noqa: E731
    reserved = {"sub10": ["others", "others", "sadness"], "sub18": ["others", "fear"],
                "sub04": ["disgust"], "sub05": ["disgust"]}
    out = _assign(rng, subjects, reserved, CASME2_COUNTS, min_size=2, exclude=CASME2_DROPPED_SUBJECTS)
    # sub04/sub05's first clip is the unlisted disgust one, so they need another composite clip
    keep = [s for s in subjects if s not in CASME2_DROPPED_SUBJECTS]
    for s in keep:
        labs = out[s][1:] if s in ("sub04", "sub05") else out[s]
        if not any(eligible(lab) for lab in labs):
            donors = [d for d in keep if d not in (s, "sub04", "sub05")
                      and sum(eligible(lab) for lab in out[d]) > 1]
            d = donors[rng.integers(len(donors))]
            i = next(i for i, lab in enumerate(out[d]) if eligible(lab))
            j = len(out[s]) - 1
            out[d][i], out[s][j] = out[s][j], out[d][i]
    rows = []
    for s in subjects:
        used = set()
        for k, lab in enumerate(out[s]):
            if k == 0 and (s, lab) in (("sub04", "disgust"), ("sub05", "disgust")):
                cid = "EP12_01f" if s == "sub04" else "EP09_05f"
                listed = False
            else:
                cid, listed = None, True
                while cid is None or cid in used or (s, cid) in CASME2_UNLISTED:
                    ep, n = rng.integers(1, 20), rng.integers(1, 10)
                    r = rng.random()
                    cid = f"EP{ep:02d}f" if r < 0.02 else f"EP{ep:02d}_{n}" if r < 0.05 else \
                        f"EP{ep:02d}_{n:02d}" + ("f" if rng.random() < 0.5 else "")
            used.add(cid)
            rows.append({"subject": s, "clip_id": cid, "label": lab, "megc_listed": listed,
                         "first_frame": int(rng.integers(1, 300))})
    for i in rng.choice(len(rows), CASME2_UNANNOTATED_APEX, replace=False):
        rows[i]["apex_annotated"] = False
    return rows


def _catalogue_samm(rng) -> list[dict]:
    reserved = {"025": ["others", "others"]}
    out = _assign(rng, SAMM_SUBJECTS, reserved, SAMM_COUNTS, min_size=2, exclude=SAMM_DROPPED_SUBJECTS)
    keep = [s for s in SAMM_SUBJECTS if s not in SAMM_DROPPED_SUBJECTS]
    _ensure(rng, out, keep, lambda lab: lab != "others", lambda d: d in keep)
    rows = []
    for s in SAMM_SUBJECTS:
        seen = Counter()
        for lab in out[s]:
            ind = int(rng.integers(1, 8))
            seen[ind] += 1
            rows.append({"subject": s, "clip_id": f"{s}_{ind}_{seen[ind]}", "label": lab,
                         "inducement": ind, "first_frame": int(rng.integers(500, 9000))})
    return rows


def _catalogue_smic(rng) -> list[dict]:
    out = _assign(rng, SMIC_SUBJECTS, {}, SMIC_COUNTS, min_size=3)
    short = {"negative": "ne", "positive": "po", "surprise": "sur"}
    rows = []
    for s in SMIC_SUBJECTS:
        seen = Counter()
        for lab in sorted(out[s], key=list(short).index):
            seen[lab] += 1
            rows.append({"subject": s, "clip_id": f"{s}_{short[lab]}_{seen[lab]:02d}", "label": lab,
                         "apex_annotated": False, "first_frame": 1})
    return rows


def _catalogue_casme(rng) -> list[dict]:
    subjects = [f"sub{i:02d}" for i in range(1, CASME_SUBJECTS + 1)]
    out = _assign(rng, subjects, {}, CASME_COUNTS, min_size=3)
    rows = []
    for s in subjects:
        used = set()
        for lab in out[s]:
            cid = None
            while cid is None or cid in used:
                cid = f"EP{int(rng.integers(1, 20)):02d}_{int(rng.integers(1, 10))}"
            used.add(cid)
            rows.append({"subject": s, "clip_id": cid, "label": lab, "first_frame": int(rng.integers(1, 200))})
    return rows


def _catalogue_ckplus(rng) -> list[dict]:
    ids = np.sort(rng.choice(np.arange(5, 507), CKPLUS_SUBJECTS, replace=False))
    subjects = [f"S{i:03d}" for i in ids]
    # sequences per subject: 1..11, total 593
    sizes = np.ones(len(subjects), dtype=int)
    weights = np.exp(rng.normal(0.0, 0.5, len(subjects)))
    while sizes.sum() < CKPLUS_SEQUENCES:
        i = rng.choice(len(subjects), p=weights / weights.sum())
        if sizes[i] < 11:
            sizes[i] += 1
    labels = {s: [None] * n for s, n in zip(subjects, sizes)}
    # labelled sequences: each subject shows each emotion at most once where possible
    for emotion, count in sorted(CKPLUS_COUNTS.items(), key=lambda kv: -kv[1]):
        for _ in range(count):
            cand = [s for s in subjects if None in labels[s] and emotion not in labels[s]]
            if not cand:
                cand = [s for s in subjects if None in labels[s]]
            free = np.array([labels[s].count(None) for s in cand], dtype=float)
            s = cand[rng.choice(len(cand), p=free / free.sum())]
            free_slots = [k for k, lab in enumerate(labels[s]) if lab is None]
            labels[s][free_slots[rng.integers(len(free_slots))]] = emotion
    rows = []
    for s in subjects:
        seqs = np.sort(rng.choice(np.arange(1, 16), len(labels[s]), replace=False))
        for q, lab in zip(seqs, labels[s]):
            rows.append({"subject": s, "clip_id": f"{s}_{q:03d}", "label": lab, "labelled": lab is not None,
                         "first_frame": 1})
    return rows


def _catalogue_mmew(rng, part: str) -> list[dict]:
    subjects = [f"S{i:02d}" for i in range(1, MMEW_SUBJECTS + 1)]
    if part == "micro":
        out = _assign(rng, subjects, {}, MMEW_MICRO_COUNTS, min_size=3)
    else:
        counts = {e: MMEW_MACRO_PER_CLASS for e in MMEW_MIEX_CLASSES}
        out = _assign(rng, subjects, {}, counts, min_size=20, weight_sd=0.2)
    rows = []
    for s in subjects:
        seen = Counter()
        for lab in sorted(out[s], key=list(MMEW_EMOTION_CODES).index):
            seen[lab] += 1
            rows.append({"subject": s, "clip_id": f"{s}-{MMEW_EMOTION_CODES[lab]:02d}-{seen[lab]:03d}",
                         "label": lab, "part": part, "first_frame": 1})
    return rows


def _catalogue_oulu(rng) -> list[dict]:
    # only the visible-light, strong-illumination recordings are simulated (VL/Strong)
    return [{"subject": f"P{p:03d}", "clip_id": f"P{p:03d}_{folder}", "label": emotion, "first_frame": 0,
             "apex_annotated": False, "modality": "VL", "illumination": "Strong"}
            for p in range(1, OULU_SUBJECTS + 1) for emotion, folder in OULU_FOLDERS.items()]


@lru_cache(maxsize=None)
def _catalogue(name: str) -> tuple[dict, ...]:
    """The fixed structure of a stand-in: one dict per clip (subject, clip_id, label ...)."""
    rng = np.random.default_rng([CATALOGUE_SEED, SPECS[name].slot, 0 if name != "mmew_macro" else 1])
    rows = {
        "casme2": _catalogue_casme2, "samm": _catalogue_samm, "smic": _catalogue_smic,
        "casme": _catalogue_casme, "ckplus": _catalogue_ckplus, "oulu": _catalogue_oulu,
        "mmew_micro": lambda r: _catalogue_mmew(r, "micro"), "mmew_macro": lambda r: _catalogue_mmew(r, "macro"),
    }[name](rng)
    return tuple(rows)


# ---------------------------------------------------------------------------------------------
# People: identity, AU habits, readout offsets and recording session

def _proto_arrays(emotion: str) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.zeros(au.N_AUS), np.zeros(au.N_AUS)
    for code, (prob, inten) in PROTOTYPES[emotion].items():
        p[au.index(code)], m[au.index(code)] = prob, inten
    return p, m


@dataclass
class _Person:
    identity: int
    gain: np.ndarray  # per-AU expressiveness (multiplies every shown AU)
    rest: np.ndarray  # resting tonus: AUs the face shows at rest
    tic: int  # AU index of the personal tic
    tic_rate: float  # share of clips in which the tic fires
    offset: np.ndarray  # readout of the neutral face (identity-dependent detector offset)
    gray: bool  # session recorded in grayscale
    light: np.ndarray  # RGB gains of this session's lighting
    key: tuple  # seed key of this person (for per-emotion style draws)


def _person(seed: int, spec: _Spec, k: int) -> _Person:
    rng = np.random.default_rng([seed, spec.slot, 1, k])
    gain = np.exp(rng.normal(0.0, 0.35, au.N_AUS) + rng.normal(0.0, 0.25))
    rest = np.zeros(au.N_AUS)
    n_rest = rng.integers(0, 3)
    rest[rng.choice(au.N_AUS, n_rest, replace=False)] = rng.uniform(0.01, 0.06, n_rest)
    codes, w = zip(*TIC_AUS.items())
    tic = au.index(codes[rng.choice(len(codes), p=np.array(w) / sum(w))])
    return _Person(
        identity=IDENTITY_BASE + seed * 100_000 + spec.slot * 10_000 + k,
        gain=gain, rest=rest, tic=tic, tic_rate=float(rng.uniform(0.1, 0.5)),
        offset=readout.person_offset(rng),
        gray=bool(rng.random() < spec.capture.gray),
        light=np.exp(rng.normal(0.0, 0.06, 3)) * np.exp(rng.normal(0.0, 0.08)),
        key=(seed, spec.slot, k),
    )


def _style(person: _Person, emotion: str) -> tuple[np.ndarray, np.ndarray]:
    """This person's version of an emotion: the prototype with personal changes.

    Each person rescales each AU's probability, may add one AU of their own and may never use
    one of the prototype's AUs: the "idiosyncratic display" the real datasets show.
    """
    rng = np.random.default_rng([*person.key, 4, list(PROTOTYPES).index(emotion)])
    p, m = _proto_arrays(emotion)
    p = np.clip(p * np.exp(rng.normal(0.0, STYLE_SD, au.N_AUS)), 0.0, 0.97)
    if rng.random() < STYLE_EXTRA:
        extra = rng.integers(au.N_AUS)
        p[extra], m[extra] = max(p[extra], rng.uniform(0.3, 0.7)), max(m[extra], rng.uniform(0.3, 0.8))
    if rng.random() < STYLE_DROP:
        active = np.flatnonzero(p > 0)
        p[active[rng.integers(len(active))]] = 0.0
    return p, m


def _others(rng) -> tuple[np.ndarray, np.ndarray]:
    codes, w = zip(*OTHERS_AUS.items())
    k = rng.integers(1, 4)
    idx = [au.index(c) for c in rng.choice(codes, k, replace=False, p=np.array(w) / sum(w))]
    p, m = np.zeros(au.N_AUS), np.zeros(au.N_AUS)
    p[idx], m[idx] = 1.0, rng.uniform(0.3, 1.0, k)
    return p, m


def _pattern(rng, person: _Person | None, emotion: str, *, macro: bool) -> np.ndarray:
    """Relative AU pattern (17,) of one expression: which AUs move and how much (peak <= ~1)."""
    if emotion == "others":
        p, m = _others(rng)
    elif person is None:
        p, m = _proto_arrays(emotion)
    else:
        p, m = _style(person, emotion)
    if macro:  # posed macro-expressions recruit the prototype more completely
        p = 1.0 - (1.0 - p) ** 2
    active = rng.random(au.N_AUS) < p
    if not active.any():
        active[np.argmax(p * m + rng.random(au.N_AUS) * 1e-3)] = True
    gain = person.gain if person is not None else 1.0
    return active * m * gain * np.exp(rng.normal(0.0, 0.25, au.N_AUS))


def _hidden_emotion(rng, label: str | None, classes: Sequence[str]) -> str:
    """The emotion a clip shows: its label's, except for label noise (and 3-class labels)."""
    if label is not None and rng.random() < LABEL_NOISE:
        others = [c for c in classes if c != label]
        label = others[rng.integers(len(others))]
    if label is None:  # CK+ sequences without an emotion file
        emotions = list(CKPLUS_COUNTS) + ["others"]
        w = np.array([CKPLUS_COUNTS.get(e, 80) for e in emotions], dtype=float)
        return emotions[rng.choice(len(emotions), p=w / w.sum())]
    if label in HIDDEN:
        names, w = zip(*HIDDEN[label].items())
        return names[rng.choice(len(names), p=np.array(w) / sum(w))]
    return label


# ---------------------------------------------------------------------------------------------
# Dynamics

def _smooth(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _micro_clip(rng, spec: _Spec, person: _Person, emotion: str) -> dict:
    fps = spec.capture.fps
    lo, hi = spec.length
    n_max = int(np.ceil(MICRO_MAX_S * fps)) - 1  # n / fps < 0.5 s
    n = int(np.clip(round(fps * np.exp(rng.uniform(np.log(lo), np.log(hi)))), 7, n_max))
    apex = int(np.clip(round((n - 1) * rng.uniform(0.3, 0.6)), 2, n - 3))
    amp = rng.uniform(*MICRO_AMPLITUDE)
    peak = np.clip(amp * _pattern(rng, person, emotion, macro=False), 0.0, MICRO_CAP)
    t = np.arange(n, dtype=float)
    residual = rng.uniform(0.0, 0.3)
    # AUs do not move in lockstep: each starts after its own short lag
    lag = rng.uniform(0.0, 0.25, au.N_AUS) * apex
    rise = _smooth((t[:, None] - lag) / np.maximum(apex - lag, 1.0))
    fall = 1.0 - (1.0 - residual) * _smooth((t[:, None] - apex) / max(n - 1 - apex, 1))
    env = np.where(t[:, None] <= apex, rise, fall)
    z = person.rest + env * peak
    return {"n": n, "true_apex": apex, "z": z, "peak": peak}


def _macro_clip(rng, spec: _Spec, person: _Person, emotion: str) -> dict:
    lo, hi = spec.length
    n = int(np.clip(round(np.exp(rng.normal(np.log(lo * 1.7), 0.4))), lo, hi))
    lead = rng.uniform(0.05, 0.2)  # neutral frames before the movement starts
    gamma = rng.uniform(1.3, 2.0)
    amp = rng.uniform(*MACRO_AMPLITUDE)
    peak = np.clip(amp * _pattern(rng, person, emotion, macro=True), 0.0, 1.0)
    u = np.arange(n, dtype=float) / (n - 1)
    lag = rng.uniform(0.0, 0.1, au.N_AUS)
    s = np.clip((u[:, None] - lead - lag) / (1.0 - lead - lag), 0.0, 1.0) ** gamma
    hold = rng.integers(0, 3)  # CK+ and Oulu end on the peak, sometimes held a frame or two
    s[n - 1 - hold:] = 1.0
    z = person.rest + s * peak
    return {"n": n, "true_apex": n - 1 - hold, "z": z, "peak": peak}


def _burst(rng, z: np.ndarray, k: int, low: float, high: float) -> None:
    """Add a brief movement of AU k somewhere in the clip (a Gaussian bump in time)."""
    n = len(z)
    centre, width = rng.uniform(0, n - 1), max(1.0, n * rng.uniform(0.08, 0.25))
    z[:, k] += rng.uniform(low, high) * np.exp(-0.5 * ((np.arange(n) - centre) / width) ** 2)


def _add_tic(rng, person: _Person, z: np.ndarray) -> bool:
    """The person's tic fires in some clips; incidental movements (blinks, swallowing, a brow
    twitch) happen in any clip, whatever the emotion."""
    for _ in range(rng.poisson(INCIDENTAL_RATE)):
        codes, w = zip(*OTHERS_AUS.items())
        _burst(rng, z, au.index(codes[rng.choice(len(codes), p=np.array(w) / sum(w))]), *INCIDENTAL_RANGE)
    if rng.random() >= person.tic_rate:
        return False
    _burst(rng, z, person.tic, 0.05, 0.2)
    return True


def _facs(values: np.ndarray, floor: float) -> str | None:
    """FACS codes as a coder writes them: the AUs that clearly move (at least 35% of the
    strongest one, and at least `floor`)."""
    top = float(np.max(values))
    codes = [str(c) for c, v in zip(au.CODES, values) if v >= max(floor, 0.35 * top)]
    return "+".join(codes) if codes else None


# ---------------------------------------------------------------------------------------------
# Generation and cache

def _settings() -> dict:
    """Every tunable number of the lab, so that changing one invalidates the cache by itself."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(readout.ReadoutModel)
                if f.default is not dataclasses.MISSING}
    return {
        "version": LAB_VERSION, "catalogue_seed": CATALOGUE_SEED, "identity_base": IDENTITY_BASE,
        "prototypes": PROTOTYPES, "others": OTHERS_AUS, "hidden": HIDDEN, "tics": TIC_AUS,
        "label_noise": LABEL_NOISE, "micro": [MICRO_AMPLITUDE, MICRO_CAP], "macro": MACRO_AMPLITUDE,
        "style": [STYLE_SD, STYLE_EXTRA, STYLE_DROP], "incidental": [INCIDENTAL_RATE, INCIDENTAL_RANGE],
        "specs": {k: dataclasses.asdict(v) for k, v in SPECS.items()},
        "floors": readout.FLOORS, "crosstalk": {f"{a}<-{b}": w for (a, b), w in readout.CROSSTALK.items()},
        "readout": defaults, "pools": [POOL_SIZES, _POOL_MIX, _POOL_CAPTURE],
    }


def _source_hash(*modules: str) -> str:
    """A short hash of mielib source files: the code that generated a cache is part of its key."""
    here = Path(__file__).resolve().parent
    return store.key([(m, (here / f"{m}.py").read_bytes().hex()) for m in modules])


@lru_cache(maxsize=1)
def _settings_key() -> str:
    # the tunable numbers and the simulator's code: any edit regenerates the stand-ins
    return store.key({"settings": _settings(), "code": _source_hash("lab", "readout")})


@lru_cache(maxsize=1)
def _face_key() -> str:
    # frames also depend on the face model: a change there re-renders them
    return _source_hash("face", "identity")[:8]


def _cache_dir(seed: int) -> Path:
    """`<data>/lab/v<LAB_VERSION>-<hash of the settings>/seed<seed>/`."""
    return runtime.folder("data") / "lab" / f"v{LAB_VERSION}-{_settings_key()}" / f"seed{seed}"


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _generate(name: str, seed: int) -> dict:
    """All annotations, hidden AU trajectories and readouts of one stand-in (no pixels)."""
    spec = SPECS[name]
    cat = _catalogue(name)
    subjects = sorted({r["subject"] for r in cat})
    people = {s: _person(seed, spec, k) for k, s in enumerate(subjects)}
    reader = readout.model(seed)
    classes = sorted({r["label"] for r in cat if r["label"] is not None})
    part = 1 if name == "mmew_macro" else 0
    rows, zs, rs, fails = [], [], [], []
    for i, row in enumerate(cat):
        rng = np.random.default_rng([seed, spec.slot, 2, part, i])
        person = people[row["subject"]]
        emotion = _hidden_emotion(rng, row["label"], classes)
        clip = (_micro_clip if spec.kind == "micro" else _macro_clip)(rng, spec, person, emotion)
        z = clip["z"]
        tic = _add_tic(rng, person, z)
        z = np.clip(z, 0.0, 1.0).astype(np.float32)
        n = clip["n"]
        if spec.kind == "micro":
            if row.get("apex_annotated", True):
                # coders pick the apex by eye: a few frames off the true peak
                apex = int(np.clip(clip["true_apex"] + round(rng.normal(0.0, 0.05 * n)), 1, n - 2))
            else:
                apex = (n - 1) // 2  # '/' or no apex annotation: loaders use the middle frame
            facs = _facs(clip["peak"], 1e-3) if name != "smic" else None
        else:
            apex = n - 1  # the last frame is the peak
            facs = _facs(clip["peak"], 0.1) if name in ("ckplus", "mmew_macro") else None
        r, failed = reader.read(z, offset=person.offset, quality=spec.capture.quality, rng=rng)
        label = row["label"]
        rows.append({
            **row, "n_frames": n, "onset": 0, "apex": apex, "offset": n - 1,
            "true_apex": int(clip["true_apex"]), "true_emotion": emotion, "tic": tic,
            "aus": facs, "identity": person.identity, "gray": person.gray,
            "light": [float(x) for x in person.light],
            "label3": (au.to_megc3(spec.dataset, label) if label is not None else None),
        })
        zs.append(z)
        rs.append(r)
        fails.append(failed)
    starts = np.cumsum([0] + [len(z) for z in zs])
    return {"rows": rows, "starts": starts, "true_aus": np.concatenate(zs), "readout": np.concatenate(rs),
            "failed": np.concatenate(fails)}


_MEMO: OrderedDict = OrderedDict()


def _tables(name: str, seed: int) -> dict:
    """A stand-in's tables from memory, else from the cache, else generated and cached."""
    key = (name, seed)
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_dir(seed) / f"{name}.npz"
    data = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {"rows": json.loads(str(f["rows"])), "starts": f["starts"], "true_aus": f["true_aus"],
                        "readout": f["readout"], "failed": f["failed"]}
        except (OSError, ValueError, KeyError):
            data = None  # unreadable cache (e.g. written by another version): regenerate it
    if data is None:
        data = _generate(name, seed)
        store.write_npz(path, rows=np.array(json.dumps(data["rows"])), starts=data["starts"],
                        true_aus=data["true_aus"], readout=data["readout"], failed=data["failed"])
    for k in ("true_aus", "readout", "failed"):
        data[k].setflags(write=False)  # clips share these arrays: nobody may edit them in place
    _MEMO[key] = data
    while len(_MEMO) > 16:
        _MEMO.popitem(last=False)
    return data


# ---------------------------------------------------------------------------------------------
# Rendering (lazy) with the capture quirks

_FACES: OrderedDict = OrderedDict()
_FRAME_FILES: OrderedDict = OrderedDict()


def _face(identity: int, pool: str):
    """A pool's face-model identity, or (pool "lab") a lab subject filmed in a lab."""
    from . import face

    key = (identity, pool)
    if key not in _FACES:
        if pool == "lab":
            _FACES[key] = _lab_face(face, identity)
        else:
            _FACES[key] = face.identity(identity, pool=pool)
        while len(_FACES) > 512:
            _FACES.popitem(last=False)
    return _FACES[key]


def _lab_face(face, identity: int):
    """A lab subject: a person of the face model's diverse "emotionet" population, but filmed as
    in a lab: near-frontal, framed and lit like a studio, in front of a plain wall. Neither pool's
    capture, so that a MiE-X identity pool does not match the test subjects by construction."""
    f = face.identity(identity, pool="emotionet")
    p = dict(f.params)
    rng = np.random.default_rng([identity, 0x1AB])
    lab_capture = {
        "yaw": float(np.clip(rng.normal(0, 3), -7, 7)), "pitch": float(np.clip(rng.normal(0, 2.5), -6, 6)),
        "roll": float(np.clip(rng.normal(0, 2), -5, 5)), "iod": float(rng.uniform(0.26, 0.29)),
        "light_az": float(rng.normal(0, 20)), "light_el": float(rng.uniform(50, 75)),
        "light_k": float(rng.uniform(0.25, 0.45)), "ambient": float(rng.uniform(0.55, 0.75)),
        "exposure": float(rng.uniform(0.95, 1.1)), "noise": float(rng.uniform(0.3, 1.0)), "bg_kind": 0,
        "bg_rgb": tuple(float(c) for c in rng.uniform(150, 215) * np.array([1.0, 1.0, 0.98])),
        "bg2_rgb": tuple(float(c) for c in rng.uniform(110, 160) * np.array([1.0, 1.0, 0.98])),
    }
    # only parameters the face model has: an unknown name would silently do nothing
    p.update({k: v for k, v in lab_capture.items() if k in p})
    return face.Face(name=f"lab:{identity}", pool=f.pool, index=f.index, params=p, key=f"lab:{identity}")


def _motion(seed: int, spec: _Spec, index: int, n: int) -> np.ndarray:
    """Per-frame head motion (dx, dy in pixels at 128 px, rotation in degrees): a smooth walk."""
    rng = np.random.default_rng([seed, spec.slot, 5, 1 if spec.name == "mmew_macro" else 0, index])
    steps = rng.normal(0.0, spec.capture.motion / np.sqrt(max(n, 1)) * 1.5, (n, 3))
    walk = np.cumsum(steps, axis=0) + rng.normal(0.0, spec.capture.motion, 3)
    walk[:, 2] *= 0.8  # rotation in degrees: a little less than the translation in pixels
    return walk


def _capture(img: np.ndarray, size: int, *, dx: float, dy: float, angle: float, cast, blur: float,
             gray: bool, noise: float, jpeg: int, key: list) -> bytes:
    """A rendered face as the dataset's camera records it, as the JPEG bytes of the stored frame:
    head motion, resize to `size`, optics blur, lighting, grayscale, sensor noise, compression."""
    from PIL import Image, ImageFilter

    im = Image.fromarray(img)
    if dx or dy or angle:
        fill = tuple(int(v) for v in img[0, 0])
        im = im.rotate(angle, resample=Image.BILINEAR, translate=(dx * im.width / 128.0, dy * im.width / 128.0),
                       fillcolor=fill)
    if im.width != size:
        im = im.resize((size, size), Image.BILINEAR)
    sigma = blur * size / 128.0
    if sigma >= 0.35:  # below that a Gaussian blur changes nothing visible at this size
        im = im.filter(ImageFilter.GaussianBlur(sigma))
    arr = np.asarray(im, dtype=np.float32) * np.asarray(cast, dtype=np.float32)
    if gray:
        arr = arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    rng = np.random.default_rng(key)
    arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(noise)
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L" if gray else "RGB")
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(jpeg), subsampling=0 if jpeg >= 95 else 2)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    """A stored frame as RGB uint8 (grayscale frames get 3 identical channels)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im)
    return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr


def _frames_dir(seed: int, size: int) -> Path:
    return _cache_dir(seed) / f"frames{size}-{_face_key()}"


def _frames_path(seed: int, size: int, name: str, index: int, variant: str = "cropped") -> Path:
    raw = variant == "raw" and SPECS[name].capture.registered  # the other stand-ins have one variant
    return _frames_dir(seed, size) / (f"{name}-raw" if raw else name) / f"{index:04d}.npz"


def _write_frames(path: Path, frames: Sequence[bytes]) -> None:
    offsets = np.cumsum([0] + [len(b) for b in frames]).astype(np.int64)
    store.write_npz(path, jpeg=np.frombuffer(b"".join(frames), dtype=np.uint8), offsets=offsets)


def _cached_frames(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored JPEG bytes and offsets of one cache file (a clip or a pool chunk), or None."""
    key = str(path)
    if key in _FRAME_FILES:
        _FRAME_FILES.move_to_end(key)
        return _FRAME_FILES[key]
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            entry = (f["jpeg"], f["offsets"])
    except (OSError, ValueError, KeyError):
        return None  # unreadable (e.g. a half-copied file): render instead
    _FRAME_FILES[key] = entry
    while len(_FRAME_FILES) > 16:
        _FRAME_FILES.popitem(last=False)
    return entry


def _cached_frame(path: Path, i: int, n: int) -> np.ndarray | None:
    entry = _cached_frames(path)
    if entry is None or len(entry[1]) != n + 1:
        return None
    data, off = entry
    return _decode(data[off[i]:off[i + 1]].tobytes())


class _ClipRenderer:
    """Frame t of one clip: from the frames cache when `build(frames=True)` wrote it, else
    rendered on the spot (the same bytes either way)."""

    def __init__(self, seed: int, spec: _Spec, index: int, row: dict, z: np.ndarray, size: int,
                 variant: str = "cropped"):
        self.seed, self.spec, self.index, self.row, self.z, self.size = seed, spec, index, row, z, size
        self.variant = variant
        self._motion = None
        self.path = _frames_path(seed, size, spec.name, index, variant)

    def motion(self) -> np.ndarray:
        """The head motion (dx, dy, degrees) the stored frames show: the raw walk, or for a
        registered (cropped) variant what registration to the first frame leaves of it."""
        if self._motion is None:
            m = _motion(self.seed, self.spec, self.index, len(self.z))
            if self.spec.capture.registered and self.variant == "cropped":
                m = m[:1] + REGISTRATION_RESIDUAL * (m - m[:1])
            self._motion = m
        return self._motion

    def _stored(self, img: np.ndarray, t: int) -> bytes:
        dx, dy, angle = self.motion()[t]
        cap = self.spec.capture
        part = 1 if self.spec.name == "mmew_macro" else 0
        return _capture(img, self.size, dx=dx, dy=dy, angle=angle, cast=np.asarray(cap.cast) * self.row["light"],
                        blur=cap.blur, gray=self.row["gray"], noise=cap.noise_at(self.size), jpeg=cap.jpeg,
                        key=[self.seed, self.spec.slot, 3, part, self.index, t])

    def stored(self, t: int) -> bytes:
        """The stored (JPEG) bytes of frame t, rendered now."""
        from . import face

        r = min(self.size, self.spec.capture.native)
        return self._stored(face.render(_face(self.row["identity"], "lab"), self.z[t], size=r), t)

    def stored_all(self) -> list[bytes]:
        from . import face

        r = min(self.size, self.spec.capture.native)
        imgs = face.render_batch(_face(self.row["identity"], "lab"), self.z, size=r)
        return [self._stored(np.asarray(img), t) for t, img in enumerate(imgs)]

    def __call__(self, t: int) -> np.ndarray:
        frame = _cached_frame(self.path, t, len(self.z))
        return frame if frame is not None else _decode(self.stored(t))


# ---------------------------------------------------------------------------------------------
# Public: stand-ins

def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 1024:
        raise ValueError(f"size must be an integer number of pixels in [16, 1024], got {size!r}")
    return int(size)


def _clipset(name: str, seed: int, size: int, variant: str = "cropped") -> ClipSet:
    spec = SPECS[name]
    data = _tables(name, seed)
    starts = data["starts"]
    clips = []
    for i, row in enumerate(data["rows"]):
        a, b = starts[i], starts[i + 1]
        z = data["true_aus"][a:b]
        meta = {k: row[k] for k in ("first_frame", "apex_annotated", "megc_listed", "inducement", "part",
                                    "labelled", "modality", "illumination") if k in row}
        meta.setdefault("apex_annotated", True)
        meta.update({
            "true_aus": z, "true_emotion": row["true_emotion"], "true_apex": row["true_apex"],
            "failed_frames": np.flatnonzero(data["failed"][a:b]), "identity": row["identity"],
            "grayscale": row["gray"], "tic": row["tic"], "lab_seed": seed, "stand_in": name,
            "lab_version": LAB_VERSION, "variant": variant if spec.capture.registered else "raw",
        })
        clips.append(Clip(
            dataset=spec.dataset, subject=row["subject"], clip_id=row["clip_id"],
            frames=RenderedFrames(row["n_frames"], _ClipRenderer(seed, spec, i, row, z, size, variant)),
            fps=float(spec.capture.fps), onset=row["onset"], apex=row["apex"], offset=row["offset"],
            label=row["label"], label3=row["label3"], aus=row["aus"], readout=data["readout"][a:b], meta=meta,
        ))
    return ClipSet(name, clips, [], "sim")


def _composite(seed: int, size: int, variant: str = "cropped") -> ClipSet:
    """The MEGC 2019 composite built from the CASME II, SAMM and SMIC stand-ins by its rules."""
    clips, skipped = [], []
    for name in ("smic", "casme2", "samm"):
        for c in _clipset(name, seed, size, variant):
            if c.label3 is None:
                skipped.append(Skipped(c.dataset, c.key, f"class {c.label!r} is dropped by the MEGC 2019 rules"))
            elif not c.meta.get("megc_listed", True):
                skipped.append(Skipped(c.dataset, c.key, "absent from the official MEGC 2019 list "
                                                         "(combined_3class_gt.csv)"))
            else:
                clips.append(c)
    return ClipSet("composite", clips, skipped, "sim")


def load(name: str, *, seed: int = 0, size: int = 128, part: str | None = None,
         selection: str | None = None, variant: str = "cropped") -> ClipSet:
    """A stand-in as a ClipSet: annotations, readouts and hidden truth; frames render lazily.

    name: one of STANDINS. part: for "mmew", "micro" (default) or "macro". selection:
    "miex" for MMEW micro (the 234 clips in the six classes of the MiE-X experiments),
    "labelled" for CK+ (the 327 sequences with an emotion file); clips left out are listed in
    `ClipSet.skipped` with the reason. size: frame side in pixels. variant: "cropped" (default)
    gives the micro-expression sets as distributed, faces registered to each clip's first frame
    (CASME II `Cropped/reg_img*`, SAMM_CROP, SMIC `reg_image*`, MMEW, CASME); "raw" keeps the
    head motion of the uncropped recordings. CK+ and Oulu-CASIA come raw either way.
    """
    seed, size = _check_seed(seed), _check_size(size)
    if name not in STANDINS:
        raise ValueError(f"unknown stand-in {name!r}; the lab has {', '.join(STANDINS)}")
    if part is not None and name != "mmew":
        raise ValueError(f"part= applies to 'mmew' only (micro or macro), not to {name!r}")
    if name == "mmew":
        part = part or "micro"
        if part not in ("micro", "macro"):
            raise ValueError(f"MMEW part must be 'micro' or 'macro', got {part!r}")
    allowed = {("mmew", "miex"), ("ckplus", "labelled")}
    if selection is not None and (name, selection) not in allowed:
        raise ValueError(f"unknown selection {selection!r} for {name!r}; selections: "
                         "mmew 'miex' (234 micro clips, six classes), ckplus 'labelled' (327 sequences)")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use 'cropped' (registered faces, as distributed) or 'raw'")
    if name == "composite":
        return _composite(seed, size, variant)
    cs = _clipset(f"mmew_{part}" if name == "mmew" else name, seed, size, variant)
    cs.name = f"mmew-{part}" if name == "mmew" else name
    if selection == "miex":
        if part != "micro":
            raise ValueError("selection 'miex' is a set of MMEW micro-expressions; use part='micro'")
        keep = [c for c in cs if c.label in MMEW_MIEX_CLASSES]
        cs.skipped = [Skipped(c.dataset, c.key, f"class {c.label!r} is not one of the six MiE-X MMEW classes")
                      for c in cs if c.label not in MMEW_MIEX_CLASSES]
        cs.clips, cs.name = keep, "mmew-micro-miex"
    elif selection == "labelled":
        cs.skipped = [Skipped(c.dataset, c.key, "no emotion file (unlabelled CK+ sequence)")
                      for c in cs if c.label is None]
        cs.clips, cs.name = [c for c in cs if c.label is not None], "ckplus-labelled"
    return cs


def true_aus(clip: Clip) -> np.ndarray:
    """The AUs a lab clip's face really shows (T x 17): for tests and the data card only."""
    if "true_aus" not in clip.meta:
        raise ValueError(f"{clip.key}: not a lab clip (no hidden truth); only the simulated lab has true AUs")
    return clip.meta["true_aus"]


# ---------------------------------------------------------------------------------------------
# Identity pools

_POOL_MIX = {
    # in-the-wild web images: many expressions, a third near-neutral
    "emotionet": {"neutral": 0.3, "happiness": 0.3, "surprise": 0.08, "sadness": 0.07, "anger": 0.06,
                  "disgust": 0.05, "fear": 0.04, "contempt": 0.03, "others": 0.07},
    # celebrity photos: posed, mostly neutral or smiling
    "celeba": {"neutral": 0.42, "happiness": 0.45, "surprise": 0.04, "others": 0.05, "contempt": 0.02,
               "sadness": 0.02},
}
_POOL_CAPTURE = {
    # small camera jitter only: the face model already gives each pool its own pose, framing and
    # lighting. Web images (EmotioNet) are noisier and more compressed than portraits (CelebA).
    "emotionet": {"rotation": 2.0, "translation": 2.0, "light": 0.1, "noise": 3.0, "blur": 0.5, "quality": 1.2,
                  "jpeg": 80},
    "celeba": {"rotation": 0.5, "translation": 0.5, "light": 0.05, "noise": 1.5, "blur": 0.3, "quality": 1.0,
               "jpeg": 90},
}


@dataclass
class Pool:
    """A simulated identity pool: one image per identity, showing a spontaneous expression.

    `readout` is what the lab's OpenFace stand-in reads on each image (GANimation trains on
    (image, readout) pairs); `true_aus` is the hidden truth, for tests and the data card only.
    """

    name: str
    seed: int
    size: int
    identities: np.ndarray  # face.identity(i, pool=name) indices
    true_aus: np.ndarray  # n x 17, hidden truth
    readout: np.ndarray  # n x 17
    expression: list  # the emotion each image shows ("neutral" included): hidden truth
    images: Sequence = field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.identities)

    @property
    def aus(self) -> np.ndarray:
        """The readouts, under the name the real identity pools use (`datasets.Identity.aus`)."""
        return self.readout

    def face(self, i: int):
        """The face model identity of image i (for rendering it with other AUs)."""
        return _face(int(self.identities[i]), self.name)

    def image(self, i: int) -> np.ndarray:
        return self.images[i]


def _generate_pool(name: str, seed: int) -> dict:
    n = POOL_SIZES[name]
    reader = readout.model(seed)
    slot = 20 + POOLS.index(name)
    mix = _POOL_MIX[name]
    emotions, w = list(mix), np.array(list(mix.values()))
    zs, offsets, expr = [], [], []
    cap = _POOL_CAPTURE[name]
    rot, trans, light, quality = cap["rotation"], cap["translation"], cap["light"], cap["quality"]
    for i in range(n):
        # one generator per image: the expression of image i never depends on the others
        rng = np.random.default_rng([seed, slot, i])
        e = emotions[rng.choice(len(emotions), p=w / w.sum())]
        z = np.zeros(au.N_AUS)
        if e != "neutral":
            z = rng.uniform(0.15, 1.0) * _pattern(rng, None, e, macro=True) * np.exp(rng.normal(0, 0.3, au.N_AUS))
        z = z + (rng.random(au.N_AUS) < 0.1) * rng.uniform(0.0, 0.08, au.N_AUS)  # stray movements
        zs.append(np.clip(z, 0.0, 1.0))
        offsets.append(readout.person_offset(rng))
        expr.append(e)
    rng = np.random.default_rng([seed, slot, 1 << 30])  # readout and capture of all images
    true = np.stack(zs).astype(np.float32)
    reads, _ = reader.read_images(true, offsets=np.stack(offsets), quality=quality, rng=rng)
    params = np.concatenate([rng.normal(0, trans, (n, 2)), rng.normal(0, rot, (n, 1)),
                             np.exp(rng.normal(0, light, (n, 3)) + rng.normal(0, light, (n, 1)))], axis=1)
    return {"true_aus": true, "readout": reads, "expression": expr, "params": params.astype(np.float32)}


def _pool_tables(name: str, seed: int) -> dict:
    key = ("pool:" + name, seed)
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_dir(seed) / f"pool_{name}.npz"
    data = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {"true_aus": f["true_aus"], "readout": f["readout"],
                        "expression": [str(x) for x in f["expression"]], "params": f["params"]}
        except (OSError, ValueError, KeyError):
            data = None
    if data is None:
        data = _generate_pool(name, seed)
        store.write_npz(path, true_aus=data["true_aus"], readout=data["readout"],
                        expression=np.array(data["expression"]), params=data["params"])
    for k in ("true_aus", "readout", "params"):
        data[k].setflags(write=False)
    _MEMO[key] = data
    return data


POOL_CHUNK = 500  # pool images per frames cache file


class _PoolRenderer:
    def __init__(self, name: str, seed: int, size: int, data: dict):
        self.name, self.seed, self.size, self.data = name, seed, size, data

    def stored(self, i: int) -> bytes:
        """The stored (JPEG) bytes of image i, rendered now."""
        from . import face

        dx, dy, angle, *cast = self.data["params"][i]
        cap = _POOL_CAPTURE[self.name]
        img = face.render(_face(i, self.name), self.data["true_aus"][i], size=self.size)
        return _capture(img, self.size, dx=dx, dy=dy, angle=angle, cast=cast, blur=cap["blur"], gray=False,
                        noise=cap["noise"], jpeg=cap["jpeg"], key=[self.seed, 20 + POOLS.index(self.name), 3, i])

    def __call__(self, i: int) -> np.ndarray:
        path = _frames_dir(self.seed, self.size) / f"pool_{self.name}" / f"{i // POOL_CHUNK:04d}.npz"
        chunk = min(POOL_CHUNK, POOL_SIZES[self.name] - (i // POOL_CHUNK) * POOL_CHUNK)
        frame = _cached_frame(path, i % POOL_CHUNK, chunk)
        return frame if frame is not None else _decode(self.stored(i))


def pool(name: str = "emotionet", n: int | None = None, *, seed: int = 0, size: int = 128) -> Pool:
    """The first `n` images (default all, POOL_SIZES) of a simulated identity pool."""
    seed, size = _check_seed(seed), _check_size(size)
    if name not in POOLS:
        raise ValueError(f"unknown identity pool {name!r}; the lab has {', '.join(POOLS)}")
    total = POOL_SIZES[name]
    n = total if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total:
        raise ValueError(f"the {name} pool has {total} images; n must be in [1, {total}], got {n!r}")
    data = _pool_tables(name, seed)
    return Pool(name=name, seed=seed, size=size, identities=np.arange(n), true_aus=data["true_aus"][:n],
                readout=data["readout"][:n], expression=data["expression"][:n],
                images=RenderedFrames(n, _PoolRenderer(name, seed, size, data)))


# ---------------------------------------------------------------------------------------------
# Build, card, reference result, command line

_BUILD_ORDER = ("casme2", "samm", "smic", "ckplus", "mmew_micro", "mmew_macro", "casme", "oulu")


def _render_clips(job: tuple) -> int:
    """Render and cache the frames of some clips of one stand-in (a worker's share of `build`)."""
    seed, size, name, indices, data_dir = job
    os.environ["MIELIB_DATA"] = data_dir
    data, spec = _tables(name, seed), SPECS[name]
    done = 0
    for i in indices:
        path = _frames_path(seed, size, name, i)
        if path.exists():
            continue
        z = data["true_aus"][data["starts"][i]:data["starts"][i + 1]]
        _write_frames(path, _ClipRenderer(seed, spec, i, data["rows"][i], z, size).stored_all())
        done += 1
    return done


def _render_pool_chunk(job: tuple) -> int:
    seed, size, name, chunk, data_dir = job
    os.environ["MIELIB_DATA"] = data_dir
    path = _frames_dir(seed, size) / f"pool_{name}" / f"{chunk:04d}.npz"
    if path.exists():
        return 0
    r = _PoolRenderer(name, seed, size, _pool_tables(name, seed))
    ids = range(chunk * POOL_CHUNK, min((chunk + 1) * POOL_CHUNK, POOL_SIZES[name]))
    _write_frames(path, [r.stored(i) for i in ids])
    return len(ids)


def build(seed: int = 0, size: int = 128, frames: bool = False, *, pools: bool = False,
          workers: int | None = None, progress: bool = False) -> dict:
    """Generate (or find cached) the whole lab for a seed; returns the seconds spent per part.

    Without frames: every stand-in's annotations, AU trajectories and readouts and both pools'
    expressions and readouts. frames=True also renders every frame of every stand-in clip at
    `size` into the cache; pools=True renders the pools' images too (each is a new identity, so
    this is slow: about 0.2 s an image). Rendering runs in `workers` processes (default: all
    CPUs) and is resumable: finished clips are skipped.
    """
    seed, size = _check_seed(seed), _check_size(size)
    timings = {}
    for name in _BUILD_ORDER:
        t0 = time.perf_counter()
        _tables(name, seed)
        timings[name] = time.perf_counter() - t0
    for name in POOLS:
        t0 = time.perf_counter()
        _pool_tables(name, seed)
        timings[f"pool_{name}"] = time.perf_counter() - t0
    jobs = []
    data_dir = str(runtime.folder("data"))
    if frames:
        for name in _BUILD_ORDER:
            n = len(_tables(name, seed)["rows"])
            # interleaved shares, small enough to balance the load across workers
            step = max(1, n // 16)
            jobs += [(f"frames_{name}", _render_clips, (seed, size, name, list(range(k, n, step)), data_dir))
                     for k in range(step)]
    if pools:
        for name in POOLS:
            jobs += [(f"frames_pool_{name}", _render_pool_chunk, (seed, size, name, c, data_dir))
                     for c in range(-(-POOL_SIZES[name] // POOL_CHUNK))]
    if jobs:
        t0 = time.perf_counter()
        workers = workers or os.cpu_count() or 1
        if workers == 1:
            results = [(label, fn(job)) for label, fn, job in jobs]
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool_:
                futures = [(label, pool_.submit(fn, job)) for label, fn, job in jobs]
                results = []
                for k, (label, fut) in enumerate(futures):
                    results.append((label, fut.result()))
                    if progress and (k + 1) % 16 == 0:
                        print(f"  rendered {k + 1}/{len(futures)} shares ({label})", file=sys.stderr, flush=True)
        timings["frames"] = time.perf_counter() - t0
        timings["frames_rendered_clips_or_images"] = float(sum(r for _, r in results))
    timings["total"] = sum(v for k, v in timings.items() if k != "frames_rendered_clips_or_images")
    return timings


def _fmt_counts(counter: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def card(seed: int = 0) -> pd.DataFrame:
    """One row per stand-in and pool with its numbers, computed from the generated data.

    The data card's (data/README.md) tables are printed from this by `python -m mielib lab card`.
    """
    seed = _check_seed(seed)
    rows = []
    views = [("composite", {}), ("casme2", {}), ("samm", {}), ("smic", {}), ("ckplus", {}),
             ("mmew", {"part": "micro"}), ("mmew", {"part": "micro", "selection": "miex"}),
             ("mmew", {"part": "macro"}), ("casme", {}), ("oulu", {})]
    for name, kw in views:
        cs = load(name, seed=seed, **kw)
        n = np.array([c.n_frames for c in cs])
        fps = sorted({c.fps for c in cs})
        dur = np.array([c.n_frames / c.fps for c in cs])
        diff_t = np.stack([true_aus(c)[c.apex] - true_aus(c)[c.onset] for c in cs])
        diff_r = np.stack([c.readout[c.apex] - c.readout[c.onset] for c in cs])
        truth = np.concatenate([true_aus(c) for c in cs])
        reads = np.concatenate([c.readout for c in cs])
        apex_max = np.array([true_aus(c)[c.meta["true_apex"]].max() for c in cs])
        kind = "macro" if (name in ("ckplus", "oulu") or kw.get("part") == "macro") else "micro"
        windows = ""
        if kind == "macro":  # the MiE-X paper's [alpha, beta] windows of a macro-expression
            windows = "/".join(
                f"{np.median([true_aus(c)[int(a * c.n_frames):int(b * c.n_frames) + 1].max(1).mean() for c in cs]):.2f}"
                for a, b in ((0.1, 0.3), (0.3, 0.5), (0.5, 0.7)))
        labelled = [c for c in cs if c.label is not None]
        noise = np.mean([_shown_class(c) != (c.label3 if c.dataset == "smic" else c.label) for c in labelled])
        rows.append({
            "stand-in": cs.name, "kind": kind, "clips": len(cs), "subjects": len(cs.subjects),
            "labelled": len(labelled),
            "classes": _fmt_counts(Counter(c.label for c in labelled)),
            "classes (MEGC 3)": _fmt_counts(Counter(c.label3 for c in cs if c.label3 is not None)),
            "fps": "/".join(f"{f:g}" for f in fps),
            "frames min/median/max": f"{n.min()}/{int(np.median(n))}/{n.max()}",
            "duration s": f"{dur.min():.2f}-{dur.max():.2f}",
            "apex/peak max true AU median [5%, 95%]": f"{np.median(apex_max):.2f} [{np.quantile(apex_max, .05):.2f}, "
                                            f"{np.quantile(apex_max, .95):.2f}]",
            "max true AU in 10-30/30-50/50-70% of frames": windows,
            "grayscale clips": int(sum(c.meta["grayscale"] for c in cs)),
            "unannotated apex": int(sum(not c.meta["apex_annotated"] for c in cs)),
            "label noise (measured)": f"{noise:.3f}",
            "readout-truth r": f"{np.corrcoef(truth.ravel(), reads.ravel())[0, 1]:.2f}",
            "readout-truth r (apex - onset)": f"{np.corrcoef(diff_t.ravel(), diff_r.ravel())[0, 1]:.2f}",
            "failed frames": int(sum(len(c.meta["failed_frames"]) for c in cs)),
            "skipped": len(cs.skipped),
        })
    for name in POOLS:
        p = pool(name, seed=seed)
        rows.append({
            "stand-in": f"pool {name}", "kind": "images", "clips": len(p), "subjects": len(p),
            "labelled": 0, "classes": _fmt_counts(Counter(p.expression)), "classes (MEGC 3)": "",
            "fps": "", "frames min/median/max": "1/1/1", "duration s": "",
            "apex/peak max true AU median [5%, 95%]": f"{np.median(p.true_aus.max(1)):.2f} "
                                            f"[{np.quantile(p.true_aus.max(1), .05):.2f}, "
                                            f"{np.quantile(p.true_aus.max(1), .95):.2f}]",
            "max true AU in 10-30/30-50/50-70% of frames": "", "grayscale clips": 0, "unannotated apex": 0,
            "label noise (measured)": "",
            "readout-truth r": f"{np.corrcoef(p.true_aus.ravel(), p.readout.ravel())[0, 1]:.2f}",
            "readout-truth r (apex - onset)": "",
            "failed frames": int((p.readout.max(1) == 0).sum()), "skipped": 0,
        })
    return pd.DataFrame(rows)


def _shown_class(c: Clip) -> str:
    """The class of the emotion a clip really shows, in its label space (for the card)."""
    e = c.meta["true_emotion"]
    if c.dataset == "smic":
        return au.to_megc3("samm", e) if e != "repression" else "negative"
    return e


def reference_result(seed: int = 0, *, folds: int = 3) -> dict:
    """Logistic regression on (apex - onset) AU readouts of the composite stand-in, subject-wise
    `folds`-fold (subjects shuffled with `seed`, dealt round-robin); predictions pooled over folds
    (the MEGC convention) for UF1 (macro F1) and UAR (balanced accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    seed = _check_seed(seed)
    cs = load("composite", seed=seed)
    x = np.stack([c.readout[c.apex] - c.readout[c.onset] for c in cs])
    y = np.array([c.label3 for c in cs])
    groups = np.array([f"{c.dataset}/{c.subject}" for c in cs])
    subjects = np.unique(groups)
    order = np.random.default_rng([seed, 99]).permutation(len(subjects))
    fold_of = {subjects[j]: k % folds for k, j in enumerate(order)}
    fold = np.array([fold_of[g] for g in groups])
    pred = np.empty_like(y)
    per_fold = []
    for k in range(folds):
        test = fold == k
        clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        clf.fit(x[~test], y[~test])
        pred[test] = clf.predict(x[test])
        per_fold.append(float(f1_score(y[test], pred[test], average="macro")))
    return {
        "seed": seed, "lab_version": LAB_VERSION, "samples": len(y), "subjects": len(subjects),
        "folds": folds, "uf1": float(f1_score(y, pred, average="macro")),
        "uar": float(balanced_accuracy_score(y, pred)), "uf1_per_fold": per_fold,
        "model": "StandardScaler + LogisticRegression(class_weight='balanced') on readout[apex] - readout[onset]",
    }


def pixel_signal(seed: int = 0, sizes: Sequence[int] = (32, 64, 128), n: int = 60,
                 variants: Sequence[str] = VARIANTS) -> pd.DataFrame:
    """How much the stored onset -> apex change of a composite clip is expression, and how much
    is capture: mean absolute grey-level change per pixel (0..255) of each part, at each size.

    For `n` composite clips (evenly spaced), with the clip's own capture: `expression` compares
    the apex and onset faces stored with the same motion and no noise; `motion` the onset face
    stored with the apex's and with the onset's motion, no noise; `noise` the onset stored with
    and without sensor noise (JPEG included). `noise sd` is the capture's sd at that size
    (`Capture.noise_at`: scaled by size / native). `identity` compares two subjects' onsets.
    """
    from . import face

    seed = _check_seed(seed)
    base = load("composite", seed=seed, size=128)
    pick = np.unique(np.linspace(0, len(base) - 1, min(n, len(base))).round().astype(int))
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    parts = {(v, int(s)): {"expression": [], "motion": [], "noise": [], "noise sd": [], "onsets": []}
             for v in variants for s in sizes}
    for size in sizes:
        size = _check_size(size)
        for k in pick:
            c = base.clips[int(k)]
            r0 = c.frames.render  # the clip's _ClipRenderer: its spec, index, row and AUs
            cap = r0.spec.capture
            res = min(size, cap.native)
            # the faces are rendered once per size; only the capture differs between variants
            img = {t: face.render(_face(r0.row["identity"], "lab"), r0.z[t], size=res) for t in (c.onset, c.apex)}
            for variant in variants:
                m = _ClipRenderer(r0.seed, r0.spec, r0.index, r0.row, r0.z, size, variant).motion()

                def stored(t_img, t_motion, noise):
                    dx, dy, ang = m[t_motion]
                    data = _capture(img[t_img], size, dx=dx, dy=dy, angle=ang, cast=np.asarray(cap.cast) * r0.row["light"],
                                    blur=cap.blur, gray=r0.row["gray"], noise=noise, jpeg=cap.jpeg, key=[seed, 7, int(k)])
                    return _decode(data).astype(np.float32) @ luma

                p = parts[variant, size]
                on = stored(c.onset, c.onset, 0.0)
                p["expression"].append(np.abs(stored(c.apex, c.onset, 0.0) - on).mean())
                p["motion"].append(np.abs(stored(c.onset, c.apex, 0.0) - on).mean())
                p["noise"].append(np.abs(stored(c.onset, c.onset, cap.noise_at(size)) - on).mean())
                p["noise sd"].append(cap.noise_at(size))
                p["onsets"].append(on)
    rows = []
    for (variant, size), p in parts.items():
        ons = p.pop("onsets")
        p["identity"] = [np.abs(a - b).mean() for a, b in zip(ons[:-1], ons[1:])]
        rows.append({"variant": variant, "size": size, **{k: float(np.mean(v)) for k, v in p.items()},
                     "clips": len(pick)})
    df = pd.DataFrame(rows)
    df["expression / (noise + motion)"] = df["expression"] / (df["noise"] + df["motion"])
    return df


def _markdown(df: pd.DataFrame, columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in columns) + " |")
    return "\n".join(lines)


CARD_BEGIN, CARD_END = "<!-- lab card: begin (generated by `python -m mielib lab card --update data/README.md`) -->", \
    "<!-- lab card: end -->"


def assumptions() -> dict[str, pd.DataFrame]:
    """The simulator's tables of assumptions (prototypes, capture, readout), as DataFrames."""
    protos = pd.DataFrame([
        {"emotion": e, **{f"AU{c:02d}": (f"{p:.2f}/{m:.1f}" if c in PROTOTYPES[e] else "")
                          for c in au.CODES for p, m in [PROTOTYPES[e].get(c, (0, 0))]}}
        for e in PROTOTYPES])
    protos = protos.loc[:, (protos != "").any(axis=0)]
    capture = pd.DataFrame([
        {"stand-in": s.name, "real": s.real, "kind": s.kind, "fps": f"{s.capture.fps:g}",
         "length": (f"{s.length[0]:g}-{s.length[1]:g} s" if s.kind == "micro" else f"{s.length[0]}-{s.length[1]} frames"),
         "native face px": s.capture.native, "grayscale sessions": f"{s.capture.gray:.0%}",
         "RGB cast": "/".join(f"{v:.2f}" for v in s.capture.cast), "noise sd": s.capture.noise,
         "blur sigma": s.capture.blur, "motion px": s.capture.motion,
         "registered (cropped variant)": "yes" if s.capture.registered else "no", "JPEG quality": s.capture.jpeg,
         "readout quality": s.capture.quality}
        for s in SPECS.values()])
    model = readout.model(0)
    floors = pd.DataFrame([{"AU": f"AU{c:02d}", "floor": readout.FLOORS[c],
                            "cross-talk from": ", ".join(f"AU{b:02d} x{w:.2f}" for (a, b), w in readout.CROSSTALK.items()
                                                         if a == c)} for c in au.CODES])
    rm = pd.DataFrame([{"clip gain log-sd": model.clip_gain_sd, "jitter sd": model.jitter, "jitter AR(1) rho": model.rho,
                        "failed-frame rate": model.fail_rate, "soft-floor width": model.softness}])
    return {"prototypes": protos, "capture": capture, "floors": floors, "readout": rm}


def card_markdown(seed: int = 0, reference_seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> str:
    """The data card's generated section: the stand-ins' numbers, the simulator's assumption
    tables and the reference result."""
    df = card(seed)
    tabs = assumptions()
    parts = [
        f"Lab version {LAB_VERSION}, seed {seed}.\n",
        _markdown(df, ["stand-in", "kind", "clips", "subjects", "labelled", "classes", "classes (MEGC 3)"]),
        "",
        _markdown(df, ["stand-in", "fps", "frames min/median/max", "duration s", "apex/peak max true AU median [5%, 95%]",
                       "max true AU in 10-30/30-50/50-70% of frames", "grayscale clips", "unannotated apex",
                       "skipped"]),
        "",
        _markdown(df, ["stand-in", "label noise (measured)", "readout-truth r", "readout-truth r (apex - onset)",
                       "failed frames"]),
        "",
        "Reference result (composite stand-in, subject-wise 3-fold, logistic regression on "
        "readout[apex] - readout[onset], predictions pooled over folds):",
        "",
        "| seed | samples | subjects | UF1 | UAR |",
        "|---|---|---|---|---|",
    ]
    for s in reference_seeds:
        r = reference_result(s)
        parts.append(f"| {s} | {r['samples']} | {r['subjects']} | {r['uf1']:.3f} | {r['uar']:.3f} |")
    sig = pixel_signal(seed)
    sig_rows = sig.assign(**{c: sig[c].map(lambda v: f"{v:.2f}") for c in
                             ("expression", "motion", "noise", "noise sd", "identity", "expression / (noise + motion)")})
    parts += [
        "",
        f"Pixel-level signal (`pixel_signal()`: {int(sig['clips'].iloc[0])} composite clips; mean absolute onset -> apex "
        "change per pixel in grey levels 0..255, by what causes it; sensor noise sd scales with size / native face size):",
        "",
        _markdown(sig_rows, ["variant", "size", "expression", "motion", "noise", "noise sd", "identity",
                             "expression / (noise + motion)"]),
        "",
        "Emotion prototypes (P(active)/relative intensity per AU; `PROTOTYPES`):",
        "",
        _markdown(tabs["prototypes"], list(tabs["prototypes"].columns)),
        "",
        "Capture per stand-in (`SPECS`):",
        "",
        _markdown(tabs["capture"], list(tabs["capture"].columns)),
        "",
        "Readout model (`readout.FLOORS`, `readout.CROSSTALK`, `readout.ReadoutModel`):",
        "",
        _markdown(tabs["floors"], list(tabs["floors"].columns)),
        "",
        _markdown(tabs["readout"], list(tabs["readout"].columns)),
    ]
    return "\n".join(parts) + "\n"


def update_card(path: str | Path, seed: int = 0) -> None:
    """Rewrite the generated section of the data card (between the card markers) in `path`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if CARD_BEGIN not in text or CARD_END not in text:
        raise ValueError(f"{path}: no generated section; add the lines\n{CARD_BEGIN}\n{CARD_END}")
    head, rest = text.split(CARD_BEGIN, 1)
    _, tail = rest.split(CARD_END, 1)
    store.write_text(path, head + CARD_BEGIN + "\n" + card_markdown(seed) + CARD_END + tail)


def _card_text(table: pd.DataFrame, width: int | None = None) -> str:
    """The card for a terminal: one block per stand-in, one wrapped `field: value` line per
    column (as one table its rows are about 350 characters wide)."""
    import shutil
    import textwrap

    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    blocks = []
    for _, row in table.iterrows():
        head, *rest = table.columns
        lines = [str(row[head])]
        for col in rest:
            lines += textwrap.wrap(f"{col}: {row[col]}", width, initial_indent="  ", subsequent_indent="      ")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def cli(argv: list[str]) -> int:
    """`python -m mielib lab build|card ...`."""
    parser = argparse.ArgumentParser(prog="python -m mielib lab",
                                     description="Generate or inspect the simulated lab (the 'sim' data source).")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="generate every stand-in (annotations, AU trajectories, readouts) "
                                     "into the data cache",
                       description="Generate every stand-in of the simulated lab (annotations, AU trajectories, "
                                   "OpenFace-like readouts) into the data cache, so notebooks start without waiting; "
                                   "optionally render every frame and the identity pools too.")
    b.add_argument("--seed", type=int, default=0, help="lab seed (default 0)")
    b.add_argument("--frames", action="store_true", help="also render every frame into the cache")
    b.add_argument("--size", type=int, default=128, help="frame size in pixels for --frames (default 128)")
    b.add_argument("--pools", action="store_true", help="also render the identity pools' images (slow)")
    b.add_argument("--workers", type=int, default=None, help="rendering processes (default: all CPUs)")
    c = sub.add_parser("card", help="print the stand-ins' numbers (the data card's tables)",
                       description="Print each stand-in's numbers (clips, subjects, classes, frame rates, "
                                   "durations: the data card's tables), or rewrite the card's generated section.")
    c.add_argument("--seed", type=int, default=0, help="lab seed (default 0)")
    c.add_argument("--update", metavar="FILE", help="rewrite the generated section of FILE (data/README.md)")
    c.add_argument("--reference", action="store_true", help="also compute the reference result")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command == "build":
            t = build(args.seed, args.size, args.frames, pools=args.pools, workers=args.workers, progress=True)
            for k, v in t.items():
                print(f"{k:<32} {v:10.1f}" + ("" if k.startswith("frames_rendered") else " s"))
            print(f"cache: {_cache_dir(args.seed)}")
        elif args.update:
            update_card(args.update, args.seed)
            print(f"updated {args.update}")
        else:
            print(_card_text(card(args.seed)))
            if args.reference:
                print(json.dumps(reference_result(args.seed), indent=1))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
