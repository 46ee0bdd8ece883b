"""Builders of tiny dataset trees in the real layouts (datasets.md), for the loader tests.

Every builder writes into a temporary folder: 8x8 images, spreadsheets with the real sheet
and column names (blank header cells, SAMM's preamble), label files and OpenFace CSVs.
Nothing binary is committed. Frame pixel values encode the frame number (value = n % 250),
so a test can tell which file a loader picked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from openpyxl import Workbook
from PIL import Image

from mielib import au


def image(path: Path, value: int = 128, size: int = 8, mode: str = "RGB") -> Path:
    """A flat size x size image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), (value,) * len(mode) if mode != "L" else value).save(path)
    return path


def corrupt(path: Path) -> Path:
    """Overwrite a frame with bytes no image reader accepts."""
    path.write_bytes(b"this is not an image")
    return path


def frames(folder: Path, name, numbers, mode: str = "RGB") -> list[Path]:
    """Frames `name(n)` for each n, pixel value n % 250."""
    return [image(folder / name(n), value=n % 250, mode=mode) for n in numbers]


def workbook(path: Path, rows: list[list], sheet: str = "Sheet1") -> Path:
    """An .xlsx written cell by cell, so blank header cells stay blank (pandas: `Unnamed: j`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    ws = book.active
    ws.title = sheet
    for row in rows:
        ws.append(row)
    book.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# CASME II

CASME2_HEADER = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                 "Action Units", "Estimated Emotion"]
# (subject cell, filename, onset, apex, offset, AUs, emotion, frames on disk)
CASME2_ROWS = [
    (1, "EP02_01f", 46, 49, 52, "12", "happiness", range(46, 53)),
    ("02", "EP09f", 8, "/", 12, "4+L10", "disgust", range(8, 13)),  # img9 -> img10; apex `/`
    ("02", "EP01_2", 20, 22, 0, "1+2", "repression", range(20, 26)),  # OffsetFrame 0
    ("03", "EP03_02", 5, 7, 9, 14, "sadness", range(5, 10)),  # CASME II sadness: label3 None
    ("03", "EP04_01", 5, 6, 8, None, "others", range(5, 9)),
]


def casme2(root: Path, *, variant: str = "raw", rows=CASME2_ROWS, sheet: str = "CASME2-coding-20140508.xlsx") -> Path:
    """`CASME2_RAW_selected/subNN/EP../imgN.jpg` (or `Cropped/.../reg_imgN.jpg`) + the coding sheet."""
    top, prefix = ("CASME2_RAW_selected", "img") if variant == "raw" else ("Cropped", "reg_img")
    for subject, filename, *_, numbers in rows:
        sub = f"sub{int(subject):02d}"
        frames(root / top / sub / filename, lambda n: f"{prefix}{n}.jpg", numbers)
    (root / top / "sub01" / "Desktop - Shortcut.lnk").write_bytes(b"\x4c\x00\x00\x00")
    workbook(root / sheet, [CASME2_HEADER] + [[s, f, None, on, ap, off, None, aus, emo] for s, f, on, ap, off, aus, emo, _ in rows])
    (root / "readme.pdf").write_bytes(b"%PDF-1.4")
    return root


# ---------------------------------------------------------------------------------------------
# SAMM

SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
               "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
# (subject cell, filename, inducement, onset, apex, offset, AUs, emotion, digits of padding)
SAMM_ROWS = [
    ("006", "006_1_2", 1, 5562, 5564, 5566, "R12", "Anger", 5),
    (7, "007_3_1", 3, 998, 1000, 1002, "(R6 or R12)+R15", "Happiness", 4),  # 4-digit padding, 999 -> 1000
    ("006", "006_5_1", 5, 100, 101, 103, "A14C", "Other", 5),
]
# Two known errata of the real SAMM v2 sheet (datasets.md, SAMM quirks), as the sheet has them:
# 028_4_1's apex lies after its offset; 032_3_1's onset lies after its apex (the apex is the typo:
# the folder starts at the onset). The official MEGC 2019 list includes both.
SAMM_ERRATA = [
    ("028", "028_4_1", 4, 1120, 1143, 1134, "R12", "Anger", 4),
    ("032", "032_3_1", 3, 4896, 1930, 4905, "R14", "Contempt", 4),
]


def samm(root: Path, *, rows=SAMM_ROWS, top: str = "SAMM") -> Path:
    """`SAMM/006/006_1_2/006_05562.jpg` (grayscale) + `SAMM_Micro_FACS_Codes_v2.xlsx` with 13 preamble rows."""
    for subject, filename, _, onset, _, offset, _, _, digits in rows:
        sub = f"{int(subject):03d}"
        frames(root / top / sub / filename, lambda n, s=sub, d=digits: f"{s}_{n:0{d}d}.jpg",
               range(onset, offset + 1), mode="L")
    preamble = [["SAMM Micro-Movement FACS codes"], ["Version 2"]] + [[f"note line {i}"] for i in range(3, 13)] + [[None]]
    body = [[s, f, i, on, ap, off, off - on + 1, "Micro", aus, emo, "1", None]
            for s, f, i, on, ap, off, aus, emo, _ in rows]
    workbook(root / "SAMM_Micro_FACS_Codes_v2.xlsx", preamble + [SAMM_HEADER] + body, sheet="FACS")
    return root


# ---------------------------------------------------------------------------------------------
# SMIC

# (subject folder, label folder, clip, frame names)
SMIC_CLIPS = [
    ("s1", "negative", "s1_ne_01", [f"image{n:06d}.bmp" for n in range(1, 6)]),
    ("s1", "positive", "s1_po_01", [f"image{n:06d}.bmp" for n in range(7, 11)]),
    ("s2", "surprise", "s2_sur_01", [f"reg_{n:05d}.bmp" for n in range(1, 4)]),  # the reg_00001.bmp release
    ("s11", "negative", "s11_ne_02", [f"reg_image{n:06d}.bmp" for n in range(3, 7)]),
]


def smic(root: Path, *, clips=SMIC_CLIPS) -> Path:
    """`HS/s1/micro/negative/s1_ne_01/image000001.bmp` and friends."""
    for subject, label, clip, names in clips:
        for name in names:
            n = int("".join(ch for ch in name if ch.isdigit()))
            image(root / "HS" / subject / "micro" / label / clip / name, value=n % 250)
    return root


# ---------------------------------------------------------------------------------------------
# CK+

def ckplus(root: Path, *, nested: bool = True) -> Path:
    """Two sequences: S005/001 (disgust, FACS, landmarks) and S010/002 (no emotion file)."""
    emo = root / ("Emotion_labels/Emotion" if nested else "Emotion")
    marks = root / ("Landmarks/Landmarks" if nested else "Landmarks")
    for subject, seq, n in (("S005", "001", 5), ("S010", "002", 4)):
        folder = root / "cohn-kanade-images" / subject / seq
        frames(folder, lambda i, s=subject, q=seq: f"{s}_{q}_{i:08d}.png", range(1, n + 1))
        for i in range(1, n + 1):
            points = np.stack([np.arange(68) + i, np.arange(68) * 2.0], axis=1)
            path = marks / subject / seq / f"{subject}_{seq}_{i:08d}_landmarks.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points))
    (emo / "S005" / "001").mkdir(parents=True, exist_ok=True)
    (emo / "S005" / "001" / "S005_001_00000005_emotion.txt").write_text("   3.0000000e+00\n")
    (emo / "S010" / "002").mkdir(parents=True, exist_ok=True)  # present but empty: unlabelled
    facs = root / "FACS" / "S005" / "001"
    facs.mkdir(parents=True, exist_ok=True)
    (facs / "S005_001_00000005_facs.txt").write_text(
        "   9.0000000e+00   0.0000000e+00\n   1.7000000e+01   2.0000000e+00\n"
    )
    return root


# ---------------------------------------------------------------------------------------------
# MMEW

MMEW_HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
               "Estimated Emotion", "remarks"]
# (subject cell, clip, emotion folder, onset, apex, offset, label, frames)
MMEW_ROWS = [
    ("S03", "S03-01-002", "happiness", 2, 9, 11, "happiness", range(1, 13)),  # 10 after 9
    (5, "S05-02-001", "disgust", 1, 3, 5, "disgust", range(1, 6)),
    ("S05", "S05-03-004", "others", 1, 2, 4, "others", range(1, 5)),
]


def mmew(root: Path, *, rows=MMEW_ROWS, macro: bool = True) -> Path:
    """`Micro_Expression/{emotion}/{clip}/N.jpg`, `MMEW_Micro_Exp.xlsx`, `Macro_Expression/...`."""
    for _, clip, folder, *_, numbers in rows:
        frames(root / "Micro_Expression" / folder / clip, lambda n: f"{n}.jpg", numbers)
    workbook(root / "MMEW_Micro_Exp.xlsx", [MMEW_HEADER] + [
        [s, c, on, ap, off, "AU12", lab, None] for s, c, _, on, ap, off, lab, _ in rows
    ])
    if macro:
        frames(root / "Macro_Expression" / "surprise" / "S03-05-010", lambda n: f"{n}.jpg", range(1, 7))
        frames(root / "Macro_Expression" / "anger" / "S07-01-001", lambda n: f"{n}.jpg", range(1, 4))
    return root


# ---------------------------------------------------------------------------------------------
# CASME and Oulu-CASIA

CASME_HEADER = ["Subject", "Filename", None, "OnsetF", "ApexF1", "ApexF2", "OffsetF", None, "Emotion"]


def casme(root: Path) -> Path:
    """`Cropped/sub01/EP01_5/reg_EP01_5-12.jpg` + a coding sheet with two header-less columns."""
    rows = [(1, "EP01_5", 10, 12, "/", 14, "amusement"), ("04", "EP07_1", 3, "/", None, 6, "tense")]
    for subject, filename, onset, *_rest in rows:
        offset = _rest[2]
        frames(root / "Cropped" / f"sub{int(subject):02d}" / filename,
               lambda n, f=filename: f"reg_{f}-{n}.jpg", range(onset, offset + 1))
    workbook(root / "CASME_coding.xlsx", [CASME_HEADER] + [
        [s, f, None, on, a1, a2, off, None, emo] for s, f, on, a1, a2, off, emo in rows
    ])
    return root


def oulu(root: Path) -> Path:
    """`OriginalImg/{VL,NI}/Strong/P00N/{Expression}/NNN.jpeg`."""
    for modality in ("VL", "NI"):
        for subject, expression, n in (("P001", "Anger", 5), ("P001", "Happiness", 4), ("P002", "Surprise", 3)):
            frames(root / "OriginalImg" / modality / "Strong" / subject / expression,
                   lambda i: f"{i:03d}.jpeg", range(n))
    return root


# ---------------------------------------------------------------------------------------------
# The MEGC 2019 composite

COMPOSITE_GT = """casme2,sub01,EP02_01f,1
casme2,sub02,EP09f,0
,,,
casme2,sub02,EP01_2,0
samm,6,006_1_2,0
samm,7,007_3_1,1
smic,s01,s01_ne_01,0
smic,s01,s01_po_01,1
smic,s02,s02_sur_01,2
casme2,sub04,EP12_01f,0
"""


def megc2019(root: Path) -> Path:
    """The MEGC 2019 composite at full size, 3 frames per clip: a 159-row SAMM v2 sheet (29
    subjects, its class counts, the two SAMM_ERRATA rows), CASME II (a 147-row sheet, 145 of them
    listed, one with OffsetFrame 0), SMIC HS (164 clips, 16 subjects) and the official list of
    442 clips from 68 subjects (datasets.md section 6)."""
    # SAMM: subject 025 has only `Other` clips, which the composite drops (28 of 29 subjects).
    samm_subjects = [s for s in range(6, 38) if s not in (8, 27, 29)]
    listed = [s for s in samm_subjects if s != 25]
    emotions = ["Anger"] * 56 + ["Happiness"] * 26 + ["Surprise"] * 15 + ["Contempt"] * 11 + ["Disgust"] * 9 \
        + ["Fear"] * 8 + ["Sadness"] * 6  # + the two errata (Anger, Contempt) = 57 / 12
    rows = [(f"{listed[i % len(listed)]:03d}", emo) for i, emo in enumerate(emotions)]
    rows += [(f"{([25, 25, 25] + listed)[i % 31]:03d}", "Other") for i in range(26)]
    samm_rows, gt = list(SAMM_ERRATA), []
    for k, (sub, emo) in enumerate(rows):
        samm_rows.append((sub, f"{sub}_7_{k}", 7, 10 * k + 1, 10 * k + 2, 10 * k + 3, "R12", emo, 5))
    for sub, name, *_, emo, _d in samm_rows:
        cls = au.to_megc3("samm", au.canonical_emotion(emo))
        if cls is not None:
            gt.append(f"samm,{int(sub)},{name},{au.MEGC3.index(cls)}")
    samm(root / "SAMM", rows=samm_rows)
    # CASME II: negative 88 (disgust, repression), positive 32, surprise 25 from 24 subjects;
    # sub10 and sub18 hold only `others` rows, which the composite drops.
    subjects = [s for s in range(1, 27) if s not in (10, 18)]
    labels = ["disgust"] * 60 + ["repression"] * 28 + ["happiness"] * 32 + ["surprise"] * 25
    c_rows = [(subjects[i % 24], f"EP{i:03d}_01", 5, 6, 0 if i == 0 else 7, None, emo, range(5, 8))
              for i, emo in enumerate(labels)]
    c_rows += [(10, "EP900_01", 5, 6, 7, None, "others", range(5, 8)), (18, "EP901_01", 5, 6, 7, None, "others", range(5, 8))]
    casme2(root / "CASME2", rows=c_rows)
    gt += [f"casme2,sub{s:02d},{f},{au.MEGC3.index(au.to_megc3('casme2', emo))}"
           for s, f, *_, emo, _n in c_rows if emo != "others"]
    # SMIC HS: negative 70, positive 51, surprise 43 from 16 subjects.
    smic_subjects = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 18, 19, 20]
    clips = []
    for i, (folder, tag) in enumerate([("negative", "ne")] * 70 + [("positive", "po")] * 51 + [("surprise", "sur")] * 43):
        s = smic_subjects[i % 16]
        clips.append((f"s{s}", folder, f"s{s}_{tag}_{i:02d}", [f"image{n:06d}.bmp" for n in range(1, 4)]))
        gt.append(f"smic,s{s:02d},s{s:02d}_{tag}_{i:02d},{('ne', 'po', 'sur').index(tag)}")
    smic(root / "SMIC", clips=clips)
    (root / "combined_3class_gt.csv").write_text("\n".join(gt) + "\n")
    return root


def composite(root: Path) -> Path:
    """root/{casme2,samm,smic}/ in their own layouts + `combined_3class_gt.csv` (blank line included)."""
    casme2(root / "casme2")
    samm(root / "samm")
    smic(root / "smic")
    (root / "combined_3class_gt.csv").write_text(COMPOSITE_GT)
    return root


# ---------------------------------------------------------------------------------------------
# OpenFace CSVs and identity pools

def openface_csv(
    path: Path,
    aus: np.ndarray,
    *,
    flavour: str = "sequence",
    success=None,
    spaced: bool = True,
    landmarks: np.ndarray | None = None,
) -> Path:
    """An OpenFace 2.x CSV; `aus` is T x 17 on OpenFace's 0..5 scale (strings allowed).

    `spaced=True` writes the old `", "` separators (headers like `' AU01_r'`).
    """
    aus = np.asarray(aus, dtype=object)
    t = len(aus)
    success = np.ones(t, int) if success is None else np.asarray(success)
    if flavour == "sequence":
        head = ["frame", "face_id", "timestamp", "confidence", "success"]
        lead = [[i + 1, 0, round(i * 0.005, 3), 0.98, int(success[i])] for i in range(t)]
    else:
        head = ["face", "confidence"]
        lead = [[i, 0.9 - 0.1 * i] for i in range(t)]
    head += ["pose_Tx", "pose_Rx"]
    lead = [row + [10.0, 0.1] for row in lead]
    if landmarks is not None:
        head += [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
        lead = [row + list(landmarks[r][:, 0]) + list(landmarks[r][:, 1]) for r, row in enumerate(lead)]
    head += list(au.OPENFACE_COLUMNS) + [c.replace("_r", "_c") for c in au.OPENFACE_COLUMNS] + ["AU28_c"]
    rows = [lead[r] + list(aus[r]) + [1] * 18 for r in range(t)]
    sep = ", " if spaced else ","
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sep.join(str(v) for v in row) for row in [head] + rows) + "\n")
    return path


def identity_folder(root: Path) -> Path:
    """An EmotioNet/CelebA-like pool: nested images, a stray text file, one OpenFace CSV."""
    for rel in ("a/000001.jpg", "a/000010.jpg", "a/000002.jpg", "b/N_0000000356_00190.png"):
        image(root / rel)
    (root / "a" / "list_attr_celeba.txt").write_text("not an image\n")
    aus = np.zeros((2, 17))
    aus[0, au.index(12)] = 2.5
    aus[1, au.index(12)] = 5.0
    openface_csv(root / "a" / "000001.csv", aus, flavour="image")
    return root


def ramp_clips(name: str, subjects: int = 4, per_subject: int = 3, frames: int = 12, size: int = 40, seed: int = 0,
               fps: float = 100.0, aus: dict | None = None):
    """Two-class clips in memory: the face brightens from onset to apex, four times more for
    class "b" than "a"; `aus` gives each class its FACS codes."""
    from mielib.clip import ArrayFrames, Clip, ClipSet

    rng = np.random.default_rng(seed)
    out = []
    for s in range(subjects):
        for k in range(per_subject):
            label = "ab"[(s + k) % 2]
            base = rng.integers(60, 120, (size, size, 3))
            ramp = np.minimum(np.arange(frames), 6)[:, None, None, None] * (4 if label == "b" else 1)
            arr = np.clip(base[None] + ramp + rng.integers(0, 3, (frames, size, size, 3)), 0, 255).astype(np.uint8)
            out.append(Clip(name, f"s{s}", f"c{k}", ArrayFrames(arr), fps, 0, 6, frames - 1, label, None,
                            aus=(aus or {}).get(label)))
    return ClipSet(name, out, [], "sim")
