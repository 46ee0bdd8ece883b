"""The Action Unit (AU) vocabulary, the expert AU tables and the label spaces.

Every notebook uses it: an AU vector is always the 17 OpenFace/GANimation intensities in the
order of `CODES`, on the [0, 1] scale (OpenFace's 0..5 divided by 5).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

import numpy as np

#: The 17 intensity AUs of OpenFace 2.x and GANimation, in their column order.
CODES: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
N_AUS = len(CODES)

#: FACS names (Ekman, Friesen & Hager 2002).
NAMES: dict[int, str] = {
    1: "Inner brow raiser",
    2: "Outer brow raiser",
    4: "Brow lowerer",
    5: "Upper lid raiser",
    6: "Cheek raiser",
    7: "Lid tightener",
    9: "Nose wrinkler",
    10: "Upper lip raiser",
    12: "Lip corner puller",
    14: "Dimpler",
    15: "Lip corner depressor",
    17: "Chin raiser",
    20: "Lip stretcher",
    23: "Lip tightener",
    25: "Lips part",
    26: "Jaw drop",
    45: "Blink",
}

#: OpenFace 2.x intensity columns (`AU01_r` ...), in `CODES` order.
OPENFACE_COLUMNS: tuple[str, ...] = tuple(f"AU{c:02d}_r" for c in CODES)
#: OpenFace intensities run 0..5; mielib (like GANimation and the MiE-X code) uses 0..1.
OPENFACE_SCALE = 5.0

#: Short labels for plots and sliders: "AU01" ... "AU45".
LABELS: tuple[str, ...] = tuple(f"AU{c:02d}" for c in CODES)


def index(au: int | str) -> int:
    """Position of an AU in the vector. Accepts 12, "12", "AU12", "au12" or "AU12_r"."""
    text = str(au).strip()
    m = re.fullmatch(r"(?i)(?:AU)?0*(\d+)(?:_[rc])?", text)
    if m and int(m.group(1)) in CODES:
        return CODES.index(int(m.group(1)))
    raise ValueError(
        f"unknown AU {au!r}: mielib uses the 17 OpenFace intensity AUs "
        f"{', '.join(LABELS)}"
    )


def validate(z, *, where: str = "AU vector", low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Check an AU vector (17,) or a stack of them (..., 17); return it as float32.

    Raises ValueError naming the first bad entry: wrong length, NaN/inf, or outside [low, high].
    `where` says what the vector is (a file name, a sample id) so the message points at it.
    """
    try:
        arr = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: not a numeric AU vector ({exc})") from None
    if arr.ndim == 0 or arr.shape[-1] != N_AUS:
        raise ValueError(
            f"{where}: an AU vector has {N_AUS} entries ({', '.join(LABELS)}), "
            f"got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr) | (arr < low) | (arr > high)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        value = float(arr[pos])
        prefix = f"row {pos[:-1]} " if len(pos) > 1 else ""
        raise ValueError(
            f"{where}: {prefix}{LABELS[pos[-1]]} = {value!r} is not allowed; "
            f"AU intensities must be finite and in [{low}, {high}]"
            + (" (OpenFace's 0..5 scale? divide by 5)" if high == 1.0 and np.isfinite(value) and 1 < value <= 5 else "")
        )
    return arr.astype(np.float32)


def vector(values: Mapping[int | str, float] | None = None, **kwargs: float) -> np.ndarray:
    """Build a validated AU vector from names: `vector({"AU12": .3}, AU06=.2)`."""
    z = np.zeros(N_AUS, dtype=np.float64)
    items = list((values or {}).items()) + list(kwargs.items())
    for key, val in items:
        z[index(key)] = val
    return validate(z, where="AU vector " + ", ".join(f"{k}={v}" for k, v in items))


def from_openface(values, *, where: str = "OpenFace readout") -> np.ndarray:
    """Convert OpenFace 0..5 intensities (17, in `OPENFACE_COLUMNS` order) to mielib's 0..1."""
    arr = np.asarray(values, dtype=np.float64) / OPENFACE_SCALE
    return validate(arr, where=where)


def describe(z, threshold: float = 0.05) -> str:
    """Human-readable summary of an AU vector, e.g. "AU06=0.20 AU12=0.30"."""
    z = validate(z)
    parts = [f"{LABELS[i]}={v:.2f}" for i, v in enumerate(z) if v >= threshold]
    return " ".join(parts) if parts else "neutral"


# ---------------------------------------------------------------------------------------------
# Emotions and label spaces

#: The MEGC 2019 3-class space used for the composite ("CompMiE").
MEGC3: tuple[str, ...] = ("negative", "positive", "surprise")

#: Canonical emotion words; dataset spellings map onto these.
_SYNONYMS = {
    "happy": "happiness", "happiness": "happiness", "amusement": "amusement",
    "sad": "sadness", "sadness": "sadness",
    "fearful": "fear", "fear": "fear",
    "angry": "anger", "anger": "anger",
    "surprised": "surprise", "surprise": "surprise",
    "disgusted": "disgust", "disgust": "disgust",
    "contempt": "contempt", "repression": "repression", "tense": "tense",
    "others": "others", "other": "others", "neutral": "neutral",
    "negative": "negative", "positive": "positive",
    "ne": "negative", "po": "positive", "sur": "surprise",
}

#: Each dataset's own emotion classes (canonical spelling), as documented in datasets.md.
DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "casme2": ("others", "disgust", "happiness", "repression", "surprise", "sadness", "fear"),
    "samm": ("anger", "others", "happiness", "surprise", "contempt", "disgust", "fear", "sadness"),
    "smic": ("negative", "positive", "surprise"),
    "composite": MEGC3,
    "ckplus": ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),
    "mmew": ("happiness", "surprise", "anger", "disgust", "fear", "sadness", "others", "repression"),
    "casme": ("amusement", "sadness", "disgust", "surprise", "contempt", "fear", "repression", "tense"),
    "oulu": ("surprise", "happiness", "sadness", "anger", "fear", "disgust"),
}

#: CK+ emotion file codes (datasets.md section 4).
CKPLUS_CODES: dict[int, str] = {
    0: "neutral", 1: "anger", 2: "contempt", 3: "disgust",
    4: "fear", 5: "happiness", 6: "sadness", 7: "surprise",
}

# The MEGC 2019 merge rules (datasets.md section 6), with per-dataset exceptions.
_MEGC3_RULE = {
    "repression": "negative", "anger": "negative", "contempt": "negative",
    "disgust": "negative", "fear": "negative", "sadness": "negative",
    "happiness": "positive", "surprise": "surprise",
    "negative": "negative", "positive": "positive",
}
_MEGC3_EXCEPTIONS = {
    # CASME II: negative is disgust and repression only; its fear and sadness are dropped.
    "casme2": {"fear": None, "sadness": None},
    # CASME (not part of MEGC): amusement is its positive class; tense is CASME's "others".
    "casme": {"amusement": "positive", "tense": None},
}


def canonical_emotion(label: str, *, where: str = "label") -> str:
    """Map a dataset's spelling ("Happy", " Other", "ne") to mielib's canonical emotion word."""
    key = str(label).strip().lower()
    if key not in _SYNONYMS:
        raise ValueError(
            f"{where}: unknown emotion label {label!r}; known labels: {', '.join(sorted(set(_SYNONYMS.values())))}"
        )
    return _SYNONYMS[key]


def to_megc3(dataset: str, label: str, *, where: str | None = None) -> str | None:
    """The MEGC 3-class label of a dataset's emotion, or None where the rules drop the sample.

    Follows datasets.md section 6 (others and neutral are dropped; CASME II keeps only disgust
    and repression as negative). CK+ uses the semantic mapping (sadness is negative), not the
    MiE-X authors' code, which maps sadness to positive.
    """
    where = where or f"{dataset} label"
    emotion = canonical_emotion(label, where=where)
    allowed = DATASET_CLASSES.get(dataset)
    if allowed is not None and emotion not in allowed:
        raise ValueError(f"{where}: {label!r} is not a {dataset} class; its classes are {', '.join(allowed)}")
    rules = {**_MEGC3_RULE, **_MEGC3_EXCEPTIONS.get(dataset, {})}
    return rules.get(emotion)


# ---------------------------------------------------------------------------------------------
# Expert AU tables: P(AU active | emotion)

def _table(rows: Mapping[str, Mapping[int, float]]) -> dict[str, np.ndarray]:
    out = {}
    for emotion, probs in rows.items():
        p = np.zeros(N_AUS, dtype=np.float64)
        for code, prob in probs.items():
            p[CODES.index(code)] = prob
        out[emotion] = p
    return out


#: Du, Tao & Martinez (2014, PNAS) Table 1. Prototypical AUs (used by >70% of subjects) get
#: P = 1 (the exact shares are not transcribed); variants get their share of subjects.
#: AU11 and AU24 are not among the 17 OpenFace AUs and are left out.
DU2014 = _table({
    "happiness": {12: 1.0, 25: 1.0, 6: 0.51},
    "sadness": {4: 1.0, 15: 1.0, 1: 0.60, 6: 0.50, 17: 0.67},
    "fear": {1: 1.0, 4: 1.0, 20: 1.0, 25: 1.0, 2: 0.57, 5: 0.63, 26: 0.33},
    "anger": {4: 1.0, 7: 1.0, 10: 0.26, 17: 0.52, 23: 0.29},
    "surprise": {1: 1.0, 2: 1.0, 25: 1.0, 26: 1.0, 5: 0.66},
    "disgust": {9: 1.0, 10: 1.0, 17: 1.0, 4: 0.31},
})

#: The MiE-X authors' own map (their synthesis code), which the paper's runs used.
MIEX_MAP = _table({
    "happiness": {12: 1.0, 25: 0.5, 6: 0.5},
    "sadness": {4: 1.0, 1: 0.5, 15: 0.5},
    "surprise": {1: 1.0, 2: 1.0, 5: 0.5, 25: 0.5, 26: 0.5},
    "fear": {5: 0.5, 20: 0.5, 25: 0.5, 26: 0.5},
    "anger": {4: 1.0, 7: 0.5, 23: 0.5},
    "disgust": {9: 1.0, 10: 0.5, 17: 1.0},
    "contempt": {14: 1.0},
})

EXPERT_TABLES: dict[str, dict[str, np.ndarray]] = {"du2014": DU2014, "miex": MIEX_MAP}


def expert_table(name: str = "miex") -> dict[str, np.ndarray]:
    """P(AU active | emotion) as {emotion: (17,) array}. `name` is "miex" or "du2014"."""
    if name not in EXPERT_TABLES:
        raise ValueError(f"unknown expert table {name!r}; choose one of {', '.join(EXPERT_TABLES)}")
    return EXPERT_TABLES[name]


def expert_emotions(megc3_class: str, table: str = "miex") -> tuple[str, ...]:
    """The table's emotions that make up a 3-class label.

    As in the MiE-X code, "negative" draws one of the table's negative emotions at random.
    """
    if megc3_class not in MEGC3:
        raise ValueError(f"unknown 3-class label {megc3_class!r}; use one of {', '.join(MEGC3)}")
    return tuple(e for e in expert_table(table) if _MEGC3_RULE.get(e) == megc3_class)


def expert_apex(emotion: str, intensity: float, table: str = "miex") -> np.ndarray:
    """A deterministic AU vector for an emotion: each AU at `intensity` times its P(active).

    Used by the explorer's emotion presets (micro about 0.2, macro about 0.8).
    """
    emotion = canonical_emotion(emotion)
    tab = expert_table(table)
    if emotion not in tab:
        raise ValueError(f"the {table} table has no {emotion!r}; it covers {', '.join(tab)}")
    if not (0.0 <= intensity <= 1.0) or math.isnan(intensity):
        raise ValueError(f"intensity {intensity!r} must be in [0, 1]")
    return validate(tab[emotion] * intensity)


def emotions(table: str = "miex") -> Iterable[str]:
    return tuple(expert_table(table))
