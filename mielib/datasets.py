"""Real dataset loaders, identity pools and `python -m mielib data inspect`.

`load(name, data_source, data_root)` is how every notebook gets clips: the simulated lab by
default, or a real dataset folder in the layout documented by each `load_<name>` (notebook 00
lists both). Loaders return a `clip.ClipSet`; anything they cannot use is a `Skipped` with a
reason naming the file, and structural problems (no root, no sheet, no column) raise. Known
annotation errata (an index outside the clip or out of order) are repaired, not skipped: see
`_repair`, meta["repairs"] and the README's "Real data".
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect as pyinspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from mielib import au, openface
from mielib.clip import Clip, ClipSet, PathFrames, Skipped

KNOWN: tuple[str, ...] = ("casme2", "samm", "smic", "composite", "ckplus", "mmew", "casme", "oulu")

#: Frame rates (frames per second). MMEW's 90 fps and CK+'s 30 fps are unverified (datasets.md).
FPS: dict[str, float] = {
    "casme2": 200.0, "samm": 200.0, "smic": 100.0, "ckplus": 30.0,
    "mmew": 90.0, "casme": 60.0, "oulu": 25.0,
}

#: The six MMEW classes of the MiE-X experiments (234 micro-expressions): all but the seventh
#: folder, `others` or `repression` (datasets.md section 5).
MMEW_MIEX_CLASSES: tuple[str, ...] = tuple(c for c in au.DATASET_CLASSES["mmew"] if c not in ("others", "repression"))

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"})


class _Skip(Exception):
    """One sample cannot be used; the message is the Skipped reason."""


# ---------------------------------------------------------------------------------------------
# The dispatcher

def load(
    name: str,
    data_source: str = "sim",
    data_root: str | Path | None = None,
    *,
    seed: int = 0,
    size: int = 128,
    **options,
) -> ClipSet:
    """The clips of dataset `name` from a data source: "sim" (the simulated lab) or "real".

    "sim" calls `mielib.lab.load(name, seed=seed, size=size, **options)` (the lab takes e.g.
    part= and selection=); "real" calls `load_<name>` on `dataset_root(data_root, name)` with
    `options` (see each loader's docstring for its layout and options; `size` is for the lab
    only: views resize).
    """
    name = _check_name(name)
    if data_source == "sim":
        from mielib import lab  # imported lazily: the lab pulls in the face model

        if options:
            accepted = pyinspect.signature(lab.load).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
            unknown = [k for k in options if k not in accepted and not takes_any]
            if unknown:
                raise ValueError(
                    f"option(s) {', '.join(unknown)} apply to real data only; the simulated lab "
                    f"takes {', '.join(k for k in accepted if k != 'name')}"
                )
        return lab.load(name, seed=seed, size=size, **options)
    if data_source == "real":
        if data_root is None:
            raise ValueError(
                f"data_source='real' needs data_root, the folder holding {name}; "
                f"its layout is described in help(mielib.datasets.load_{name})"
            )
        loader = LOADERS[name]
        _check_options(loader, options)
        return loader(dataset_root(data_root, name), **options)
    raise ValueError(f"unknown data source {data_source!r}; use 'sim' (the simulated lab) or 'real'")


# A folder holding all datasets names each one's folder like this (first match wins) ...
_FOLDER_NAMES = {
    "casme2": ("casme2", "CASME2", "CASME_II", "CASMEII", "CASME II"),
    "samm": ("samm", "SAMM"),
    "smic": ("smic", "SMIC"),
    "composite": ("composite", "CompMiE", "megc2019", "MEGC2019"),
    "ckplus": ("ckplus", "CK+", "CKPlus", "ck+"),
    "mmew": ("mmew", "MMEW"),
    "casme": ("casme", "CASME"),
    "oulu": ("oulu", "Oulu-CASIA", "Oulu_CASIA", "OuluCASIA"),
}
# ... unless the folder is already the dataset's own root, recognised by these entries. (SAMM's
# own frames folder is also called `SAMM`, so its sheet, not a folder name, marks its root.)
_ROOT_MARKERS = {
    "casme2": ("CASME2*coding*.xls*", "CASME2_RAW_selected", "Cropped"),
    "samm": ("*FACS*Codes*.xls*", "SAMM_CROP"),
    "smic": ("HS", "VIS", "NIR"),
    "composite": ("combined_3class_gt.csv",),
    "ckplus": ("cohn-kanade-images",),
    "mmew": ("MMEW_*.xls*", "Micro_Expression", "Macro_Expression"),
    "casme": ("Cropped",),
    "oulu": ("OriginalImg",),
}


def dataset_root(data_root: str | Path, name: str) -> Path:
    """Where dataset `name` lives: `data_root` itself when it holds the dataset's own files,
    else its subfolder named for the dataset (one folder holding all your datasets, e.g.
    `datasets/casme2/`, `datasets/SAMM/`, `datasets/CK+/`), else `data_root` unchanged."""
    root, name = Path(data_root).expanduser(), _check_name(name)
    if any(any(root.glob(marker)) for marker in _ROOT_MARKERS[name]):
        return root
    for folder in _FOLDER_NAMES[name]:
        if (root / folder).is_dir():
            return root / folder
    return root


def found(data_root: str | Path) -> list[str]:
    """The known datasets that `data_root` holds, as its own root or a subfolder named for one
    (recognised by the files each loader needs, `_ROOT_MARKERS`)."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        return []
    return [name for name in KNOWN
            if any(any(dataset_root(root, name).glob(marker)) for marker in _ROOT_MARKERS[name])]


#: Identity pools (EmotioNet, CelebA) under a data root that holds several datasets.
_POOL_FOLDERS = {"emotionet": ("emotionet", "EmotioNet"), "celeba": ("celeba", "CelebA")}


def pool_root(data_root: str | Path, pool: str) -> Path:
    """Where identity pool `pool` lives: `data_root/<pool folder>` if present, else `data_root`."""
    root = Path(data_root).expanduser()
    for folder in _POOL_FOLDERS.get(pool, (pool,)):
        if (root / folder).is_dir():
            return root / folder
    return root


def _check_name(name: str) -> str:
    key = str(name).strip().lower()
    if key not in KNOWN:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN)} "
            "(identity pools: datasets.identity_pool(root))"
        )
    return key


def _check_options(loader: Callable, options: dict) -> None:
    params = pyinspect.signature(loader).parameters
    accepted = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(
            f"{loader.__name__} has no option {', '.join(map(repr, unknown))}; "
            f"its options are {', '.join(accepted)}"
        )


# ---------------------------------------------------------------------------------------------
# Shared pieces: roots, frame folders, sheets, cells

def _check_root(root: str | Path, dataset: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset} root {root} does not exist or is not a folder")
    return root


def _listing(folder: Path, limit: int = 20) -> str:
    """What a folder holds, for error messages."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _first_dir(root: Path, candidates: Iterable[str], what: str, required: bool = True) -> Path | None:
    """The first existing folder among `candidates` (relative to root)."""
    candidates = list(candidates)
    for rel in candidates:
        if (root / rel).is_dir():
            return root / rel
    if not required:
        return None
    raise FileNotFoundError(
        f"{root}: no {what} folder (looked for {', '.join(c + '/' for c in candidates)}); "
        f"found: {_listing(root)}"
    )


def _natural_key(text: str):
    """Sort key that orders digit runs by value: img9 before img10, s2 before s11."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text) if t]


def _subdirs(folder: Path) -> list[Path]:
    """Sub-folders in natural order; stray files (`Desktop - Shortcut.lnk`) are not folders."""
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))


_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def _frame_number(path: Path) -> int | None:
    """The frame number in a file name: the last digit run of the stem (`reg_img46` -> 46)."""
    m = _LAST_NUMBER.search(path.stem)
    return int(m.group(1)) if m else None


def _scan_frames(folder: Path, variant: str = "auto") -> tuple[list[int], list[Path]]:
    """The image files of a clip folder, sorted by frame number, and their numbers.

    Frames are matched by their parsed integer, so 4- and 5-digit padding (SAMM) and unpadded
    names (CASME II `img9`, `img10`) sort correctly. Non-image files are ignored. A folder
    holding both raw and cropped (`reg_`) frames needs `variant` "raw" or "cropped".
    """
    if not folder.is_dir():
        raise _Skip(f"clip folder {folder} is missing")
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    cropped = [p for p in images if p.name.lower().startswith("reg_")]
    raw = [p for p in images if not p.name.lower().startswith("reg_")]
    if cropped and raw:
        if variant == "auto":
            raise _Skip(
                f"{folder} mixes raw and cropped (reg_) frames; pass variant='raw' or 'cropped'"
            )
        images = cropped if variant == "cropped" else raw
    if not images:
        raise _Skip(f"{folder} holds no image files (found: {_listing(folder, 5)})")
    numbered: dict[int, Path] = {}
    for p in images:
        n = _frame_number(p)
        if n is None:
            raise _Skip(f"{p}: image file name has no frame number")
        if n in numbered:
            raise _Skip(f"{p} and {numbered[n].name} both claim frame {n}")
        numbered[n] = p
    numbers = sorted(numbered)
    return numbers, [numbered[n] for n in numbers]


def _expected_name(example: Path, n: int) -> str:
    """The file name frame `n` would have, following a sibling's pattern (padding included)."""
    m = _LAST_NUMBER.search(example.stem)
    digits = m.group(1)
    text = str(n).zfill(len(digits)) if digits.startswith("0") and len(digits) > 1 else str(n)
    return example.stem[: m.start()] + text + example.stem[m.end():] + example.suffix


def _verify_images(paths: Iterable[Path], decode: Iterable[Path] = ()) -> None:
    """Open every frame's header with PIL and fully decode the frames in `decode` (those that
    training reads: onset, apex, offset). A header check alone passes a truncated JPEG, whose
    damage only shows when its pixels are decoded. The first bad file is a _Skip naming it."""
    from PIL import Image, UnidentifiedImageError

    for p, full in [(p, False) for p in paths] + [(p, True) for p in decode]:
        try:
            with Image.open(p) as im:
                im.load() if full else im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise _Skip(f"{p}: corrupt or unreadable image ({exc})") from None


def _is_blank(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _int_cell(v, column: str) -> int | None:
    """A frame number from a sheet cell; None for blank, `/` or `-` (not annotated)."""
    if _is_blank(v) or (isinstance(v, str) and v.strip() in ("/", "-")):
        return None
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    raise _Skip(f"{column} = {v!r} is not a frame number")


def _text_cell(v) -> str | None:
    """A sheet cell as text (`12` stays `12`, not `12.0`); None when blank."""
    if _is_blank(v):
        return None
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def _number_in(v) -> int | None:
    """The number in a subject name: `sub01`, `01`, 1, `006`, `s1`, `S03` -> its integer."""
    text = _text_cell(v)
    m = re.search(r"\d+", text or "")
    return int(m.group()) if m else None


def _norm_id(text: str) -> str:
    """A clip id with zero padding removed from every number, lowercase (`s01_ne_01` -> `s1_ne_1`)."""
    return re.sub(r"\d+", lambda m: str(int(m.group())), str(text).strip().lower())


def _find_sheet(root: Path, patterns: Iterable[str], what: str) -> Path:
    """The newest-named spreadsheet matching one of the glob patterns (dates sort last)."""
    patterns = list(patterns)
    for pattern in patterns:
        hits = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("~$"))
        if hits:
            return hits[-1]
    raise FileNotFoundError(
        f"{root}: no {what} (looked for {', '.join(patterns)}); found: {_listing(root)}; "
        "pass sheet=PATH if it has another name"
    )


# Accepted header spellings per field, compared after lowercasing and dropping non-alphanumerics.
_HEADERS = {
    "subject": ("subject",),
    "filename": ("filename",),
    "inducement": ("inducementcode",),
    "onset": ("onsetframe", "onsetf", "onset"),
    "apex": ("apexframe", "apexf1", "apexf", "apex"),
    "apex2": ("apexf2",),
    "offset": ("offsetframe", "offsetf", "offset"),
    "aus": ("actionunits", "actionunit", "aus"),
    "emotion": ("estimatedemotion", "emotion"),
    "objective": ("objectiveclasses", "objectiveclass"),
}
# The spelling used in error messages.
_SHOWN = {
    "subject": "Subject", "filename": "Filename", "inducement": "Inducement Code",
    "onset": "OnsetFrame", "apex": "ApexFrame", "apex2": "ApexF2", "offset": "OffsetFrame",
    "aus": "Action Units", "emotion": "Estimated Emotion", "objective": "Objective Classes",
}


def _norm_header(v) -> str:
    return re.sub(r"[^a-z0-9]", "", str(v).lower()) if not _is_blank(v) else ""


@dataclass
class _Sheet:
    path: Path
    sheet: str
    columns: list[str]  # as pandas would name them: blank header cells become "Unnamed: j"
    rows: list[tuple[int, dict]]  # (spreadsheet row number, {field: cell})

    def where(self, row: int) -> str:
        return f"{self.path.name} row {row}"


def _read_sheet(
    path: Path, required: Iterable[str], optional: Iterable[str] = (), sheet_name: str | None = None
) -> _Sheet:
    """Read an annotation sheet whose header row may sit below preamble text (SAMM: 13 rows).

    The header is the first of the top 50 rows that names the most required fields; a required
    field it lacks is a ValueError naming the file, sheet and column and listing what was found.
    """
    required, optional = list(required), list(optional)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation sheet {path} does not exist")
    if path.suffix.lower() == ".csv":
        sheet = "csv"
        table = pd.read_csv(path, header=None, dtype=object, skip_blank_lines=False)
    else:
        try:
            book = pd.ExcelFile(path)
        except Exception as exc:  # openpyxl/xlrd raise many types for a bad file
            raise ValueError(f"{path}: not a readable spreadsheet ({exc})") from None
        names = book.sheet_names
        if sheet_name is not None and sheet_name not in names:
            raise ValueError(f"{path}: no sheet {sheet_name!r}; its sheets are {', '.join(names)}")
        sheet = sheet_name or ("Sheet1" if "Sheet1" in names else names[0])
        table = pd.read_excel(book, sheet_name=sheet, header=None, dtype=object)
    cells = table.to_numpy(dtype=object)

    def matches(row) -> dict[str, int]:
        found: dict[str, int] = {}
        normed = [_norm_header(c) for c in row]
        for key in required + optional:
            for spelling in _HEADERS[key]:
                if spelling in normed and key not in found:
                    found[key] = normed.index(spelling)
        return found

    scored = [(sum(k in required for k in matches(r)), i) for i, r in enumerate(cells[:50])]
    best = max(scored, key=lambda t: (t[0], -t[1]), default=(0, -1))
    if best[0] < min(2, len(required)):
        raise ValueError(
            f"{path} (sheet {sheet!r}): no header row naming "
            f"{', '.join(_SHOWN[k] for k in required)} in its first 50 rows"
        )
    head = best[1]
    columns = [f"Unnamed: {j}" if _is_blank(c) else str(c).strip() for j, c in enumerate(cells[head])]
    index = matches(cells[head])
    missing = [k for k in required if k not in index]
    if missing:
        raise ValueError(
            f"{path} (sheet {sheet!r}): missing column "
            + ", ".join(f"{_SHOWN[k]!r}" for k in missing)
            + f"; found columns: {', '.join(map(repr, columns))}"
        )
    rows = []
    for i in range(head + 1, len(cells)):
        record = {k: cells[i][j] for k, j in index.items()}
        if all(_is_blank(v) for v in cells[i]):
            continue  # an empty spreadsheet row is not a sample
        rows.append((i + 1, record))
    return _Sheet(path, sheet, columns, rows)


# ---------------------------------------------------------------------------------------------
# Building one clip

@dataclass
class _Options:
    """What every loader passes down to clip building."""

    root: Path
    verify: bool = False
    readouts: bool = True
    readout_order: str = "name"

    def __post_init__(self):
        if self.readout_order not in ("name", "frame"):
            raise ValueError(
                f"readout_order {self.readout_order!r}: use 'name' (OpenFace -fdir rows in file-name "
                "order) or 'frame' (rows in frame order)"
            )


def _label(dataset: str, raw, where: str) -> tuple[str, str | None]:
    if _is_blank(raw):
        raise _Skip(f"{where}: emotion label is blank")
    try:
        label = au.canonical_emotion(raw, where=where)
        return label, au.to_megc3(dataset, label, where=where)
    except ValueError as exc:
        raise _Skip(str(exc)) from None


def _build_clip(
    dataset: str,
    subject: str,
    clip_id: str,
    folder: Path,
    opts: _Options,
    *,
    onset: int | None,
    apex: int | None,
    offset: int | None,
    label: str,
    label3: str | None,
    aus: str | None = None,
    variant: str = "auto",
    apex_at_end: bool = False,
    meta: dict | None = None,
) -> Clip:
    """A Clip from a folder and absolute frame numbers (None = use the folder's first/middle/last).

    `onset`/`apex`/`offset` are the dataset's own frame numbers; the Clip holds 0-based
    positions into the folder's frames, and the original numbers stay in meta. A missing apex
    is the middle frame, or the offset frame with `apex_at_end` (sequences that end at the peak).
    """
    numbers, paths = _scan_frames(folder, variant)
    meta = dict(meta or {})
    meta.update(folder=str(folder), first_frame=numbers[0])
    meta["offset_annotated"] = offset not in (None, 0)
    meta["apex_annotated"] = apex is not None
    onset, apex, offset, repairs = _repair(numbers, onset, apex, offset, apex_at_end=apex_at_end)
    position = {n: i for i, n in enumerate(numbers)}
    for n in range(onset, offset + 1):
        if n not in position:
            raise _Skip(f"frame {n} is missing: expected {folder / _expected_name(paths[0], n)}")
    meta["repairs"] = repairs
    meta["annotation_repaired"] = bool(repairs)
    meta.update(onset_frame=onset, apex_frame=apex, offset_frame=offset)
    if opts.verify:
        _verify_images(paths, decode=[paths[position[n]] for n in (onset, apex, offset)])
    clip = Clip(
        dataset=dataset, subject=subject, clip_id=clip_id, frames=PathFrames(paths),
        fps=FPS[dataset], onset=position[onset], apex=position[apex], offset=position[offset],
        label=label, label3=label3, aus=aus, meta=meta,
    )
    if opts.readouts:
        _attach_readout(clip, folder, paths, opts)
    return clip


#: The documented repairs of annotation errata (README "Real data"; datasets.md lists SAMM's
#: 028_4_1 and 032_3_1 and CASME II's OffsetFrame = 0 rows). Researchers use every clip of these
#: sheets (the MEGC 2019 list includes the SAMM errata), so a wrong index is repaired, flagged in
#: meta["repairs"] and listed by `data inspect`, never a reason to drop the clip.
def _repair(numbers: list[int], onset, apex, offset, *, apex_at_end: bool = False) -> tuple[int, int, int, list[str]]:
    """Onset, apex and offset frame numbers made consistent with each other and the frames on
    disk (`numbers`, sorted), and the repairs made, one sentence each.

    - OffsetFrame 0 (CASME II) or blank: the folder's last frame (meta offset_annotated False).
    - An onset or offset outside the frames on disk: the folder's first or last frame. This is
      how an onset after the apex is checked against the disk: an onset the folder does not
      hold is the wrong index, and becomes the first frame.
    - An apex outside onset..offset (SAMM 028_4_1: after the offset; 032_3_1: before an onset
      that is the folder's first frame): the middle frame, as for an unannotated apex.
    An onset after the offset with both frames on disk cannot be told apart: that is a _Skip.
    """
    first, last, repairs = numbers[0], numbers[-1], []
    if onset is None:
        onset = first
    elif not first <= onset <= last:
        repairs.append(f"onset {onset} is outside the frames on disk ({first}..{last}): the first frame {first} used")
        onset = first
    if offset == 0:  # CASME II has OffsetFrame = 0 rows: the clip runs to the folder's end
        repairs.append(f"offset 0 (not annotated): the last frame {last} used")
    if offset in (None, 0):
        offset = last
    elif not first <= offset <= last:
        repairs.append(f"offset {offset} is outside the frames on disk ({first}..{last}): the last frame {last} used")
        offset = last
    if onset > offset:
        raise _Skip(f"onset {onset} is after offset {offset} and both frames are on disk, so neither can be "
                    "repaired; correct the sheet row")
    middle = _middle(numbers, onset, offset)
    if apex is None:
        apex = offset if apex_at_end else middle  # `/` in CASME II: the middle frame, as the MEGC loaders do
    elif apex < onset:
        repairs.append(f"onset {onset} is after apex {apex}; the onset is on disk, so the apex is the error: "
                       f"the middle frame {middle} used")
        apex = middle
    elif apex > offset:
        repairs.append(f"apex {apex} is after offset {offset}: the middle frame {middle} used")
        apex = middle
    return onset, apex, offset, repairs


def _middle(numbers: list[int], onset: int, offset: int) -> int:
    """The frame halfway (by position on disk) between onset and offset."""
    lo, hi = numbers.index(onset), numbers.index(offset)
    return numbers[lo + (hi - lo) // 2]


def _attach_readout(clip: Clip, folder: Path, paths: list[Path], opts: _Options) -> None:
    csv_path = openface.locate(folder, opts.root)
    if csv_path is None:
        return
    try:
        readout = openface.for_frames(csv_path, [p.name for p in paths], order=opts.readout_order)
    except (ValueError, FileNotFoundError) as exc:
        raise _Skip(f"AU readout: {exc}") from None
    clip.readout = readout.aus
    clip.meta["readout_file"] = str(csv_path)
    clip.meta["readout_failed_frames"] = readout.failed


class _Collector:
    """Collects clips and Skipped records; `attempt` turns a _Skip into a Skipped."""

    def __init__(self, dataset: str, name: str | None = None):
        self.dataset, self.name, self.clips, self.skipped = dataset, name or dataset, [], []
        self.used: dict[Path, str] = {}  # clip folder -> the sheet row that claimed it

    def claim(self, folder: Path, where: str) -> None:
        """Mark a clip folder as listed by a sheet row; a second row for it is a _Skip."""
        if folder in self.used:
            raise _Skip(f"{where} repeats {self.used[folder]} (same clip folder {folder})")
        self.used[folder] = where

    def attempt(self, item: str, make: Callable[[], Clip]) -> None:
        try:
            clip = make()
        except _Skip as exc:
            self.skipped.append(Skipped(self.dataset, item, str(exc)))
            return
        self.clips.append(clip)

    def report_unlisted(self, folders: Iterable[Path], sheet: Path) -> None:
        """Clip folders on disk that no sheet row uses: reported, since they are not loaded."""
        for folder in folders:
            if folder not in self.used:
                self.skipped.append(Skipped(
                    self.dataset, f"{folder.parent.name}/{folder.name}",
                    f"clip folder {folder} has no row in {sheet.name}",
                ))

    def result(self) -> ClipSet:
        return ClipSet(self.name, self.clips, self.skipped, source="real")


def _clip_folders(frames_dir: Path) -> list[Path]:
    """subject/clip folders two levels below `frames_dir`."""
    return [c for s in _subdirs(frames_dir) for c in _subdirs(s)]


def _subject_dir(parent: Path, names: Iterable[str]) -> Path:
    names = list(names)
    for name in names:
        if (parent / name).is_dir():
            return parent / name
    raise _Skip(f"no subject folder {' or '.join(names)} in {parent}")


def _sheet_clips(
    dataset: str,
    sheet: _Sheet,
    opts: _Options,
    subject_name: Callable[[int], str],
    find_folder: Callable[[int, str], tuple[Path, dict]],
    all_folders: list[Path],
    *,
    variant: str = "auto",
    extra_meta: Callable[[dict], dict] = lambda rec: {},
    name: str | None = None,
) -> ClipSet:
    """Clips of a sheet-driven dataset (CASME II, SAMM, CASME, MMEW), one per sheet row.

    `subject_name(number)` is the canonical subject (`sub01`, `006`, `S03`);
    `find_folder(number, filename)` returns the clip folder and meta, or raises _Skip. Folders
    in `all_folders` that no row claims are reported as Skipped.
    """
    out = _Collector(dataset, name)
    for row, rec in sheet.rows:
        where = sheet.where(row)
        filename = _text_cell(rec["filename"])
        number = _number_in(rec["subject"])
        subject = subject_name(number) if number is not None else _text_cell(rec["subject"])

        def make() -> Clip:
            if filename is None or number is None:
                raise _Skip(f"{where}: Subject or Filename is blank")
            folder, meta = find_folder(number, filename)
            out.claim(folder, where)  # listed, even if it fails below
            label, label3 = _label(dataset, rec["emotion"], where)
            onset = _int_cell(rec["onset"], f"{where}: {_SHOWN['onset']}")
            if onset is None:
                raise _Skip(f"{where}: {_SHOWN['onset']} is blank")
            apex = _int_cell(rec["apex"], f"{where}: {_SHOWN['apex']}")
            offset = _int_cell(rec["offset"], f"{where}: {_SHOWN['offset']}")
            try:
                return _build_clip(
                    dataset, subject, filename, folder, opts, onset=onset, apex=apex, offset=offset,
                    label=label, label3=label3, aus=_text_cell(rec.get("aus")), variant=variant,
                    meta={"sheet": sheet.path.name, "sheet_row": row, "subject_number": number, **meta, **extra_meta(rec)},
                )
            except _Skip as exc:
                raise _Skip(f"{where}: {exc}") from None

        out.attempt(f"{subject}/{filename}", make)
    out.report_unlisted(all_folders, sheet.path)
    return out.result()


def _in_subject_folder(frames_dir: Path, names: Callable[[int], list[str]]) -> Callable[[int, str], tuple[Path, dict]]:
    """find_folder for `frames_dir/{subject}/{filename}`, trying each spelling of the subject."""
    def find(number: int, filename: str) -> tuple[Path, dict]:
        return _subject_dir(frames_dir, names(number)) / filename, {}
    return find


def _variant_dir(root: Path, variant: str, table: dict[str, list[str]], dataset: str) -> tuple[Path, str]:
    """The frames folder for a variant ("auto" takes the first of cropped, raw that exists)."""
    if variant not in ("auto", *table):
        raise ValueError(f"{dataset}: unknown variant {variant!r}; use auto, {', '.join(table)}")
    order = list(table) if variant == "auto" else [variant]
    for v in order:
        for name in table[v]:
            if (root / name).is_dir():
                return root / name, v
    wanted = [n + "/" for v in order for n in table[v]]
    raise FileNotFoundError(
        f"{root}: no {dataset} frames folder (looked for {', '.join(wanted)}); found: {_listing(root)}"
    )


# ---------------------------------------------------------------------------------------------
# Loaders

def load_casme2(
    root: str | Path,
    *,
    variant: str = "auto",
    sheet: str | Path | None = None,
    sheet_name: str | None = None,
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """CASME II (255 clips, 26 subjects, 200 fps) from its coding sheet and frame folders.

    | root holds | used as |
    |---|---|
    | `CASME2-coding-*.xlsx` (the newest date, or `sheet=`) | the coding sheet, `Sheet1` |
    | `Cropped/` or `Cropped-updated/` `subNN/EPxx/reg_imgN.jpg` | variant "cropped" |
    | `CASME2_RAW_selected/subNN/EPxx/imgN.jpg` | variant "raw" |
    | `openface/...` (optional) | AU readouts (see `mielib.openface`) |

    `variant="auto"` takes cropped when present, else raw. Sheet frame numbers are absolute
    (`img46` is frame 46). Apex `/` -> the middle frame (meta apex_annotated False); OffsetFrame
    0 -> the folder's last frame (meta offset_annotated False). `verify=True` opens every frame.
    """
    root = _check_root(root, "casme2")
    frames_dir, variant = _variant_dir(
        root, variant, {"cropped": ["Cropped", "Cropped-updated"], "raw": ["CASME2_RAW_selected"]}, "casme2"
    )
    path = Path(sheet) if sheet else _find_sheet(root, ["CASME2-coding-*.xls*", "CASME2*coding*.xls*"], "CASME II coding sheet")
    table = _read_sheet(path, ["subject", "filename", "onset", "apex", "offset", "emotion"], ["aus"], sheet_name)
    opts = _Options(root, verify, readouts, readout_order)
    names = lambda n: [f"sub{n:02d}", f"sub{n}"]  # noqa: E731
    return _sheet_clips(
        "casme2", table, opts, lambda n: names(n)[0], _in_subject_folder(frames_dir, names),
        _clip_folders(frames_dir), variant=variant, extra_meta=lambda rec: {"variant": variant},
    )


def load_samm(
    root: str | Path,
    *,
    variant: str = "auto",
    sheet: str | Path | None = None,
    sheet_name: str | None = None,
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """SAMM (159 clips, 29 subjects, 200 fps, grayscale) from its FACS sheet and frames.

    | root holds | used as |
    |---|---|
    | `SAMM_Micro_FACS_Codes_v2.xlsx` (or another `*FACS*Codes*.xlsx`, or `sheet=`) | the sheet; its header row is found below the 13 preamble rows |
    | `SAMM_CROP/006/006_1_2/006_05562.jpg` | variant "cropped" |
    | `SAMM/006/006_1_2/006_05562.jpg` | variant "raw" |

    Frame files are matched by their parsed integer (4- or 5-digit padding). Subjects appear
    as `006` or `6` in the sheet; folders as `006` (or `6`). `Other` -> "others" (label3 None).
    Grayscale frames are read as RGB by `clip.read_image`.
    """
    root = _check_root(root, "samm")
    frames_dir, variant = _variant_dir(root, variant, {"cropped": ["SAMM_CROP"], "raw": ["SAMM"]}, "samm")
    path = Path(sheet) if sheet else _find_sheet(
        root, ["SAMM_Micro_FACS_Codes*.xls*", "*FACS*Codes*.xls*"], "SAMM FACS codes sheet"
    )
    table = _read_sheet(
        path, ["subject", "filename", "onset", "apex", "offset", "emotion"],
        ["aus", "inducement", "objective"], sheet_name,
    )
    opts = _Options(root, verify, readouts, readout_order)
    names = lambda n: [f"{n:03d}", f"{n}"]  # noqa: E731
    return _sheet_clips(
        "samm", table, opts, lambda n: names(n)[0], _in_subject_folder(frames_dir, names),
        _clip_folders(frames_dir), variant=variant,
        extra_meta=lambda rec: {
            "variant": variant,
            "inducement": _text_cell(rec.get("inducement")),
            "objective_class": _text_cell(rec.get("objective")),
        },
    )


def load_casme(
    root: str | Path,
    *,
    sheet: str | Path | None = None,
    sheet_name: str | None = None,
    frames: str = "Cropped",
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """CASME (195 clips, 60 fps) from its coding sheet and `Cropped/` frames.

    | root holds | used as |
    |---|---|
    | one spreadsheet `*.xlsx`/`*.xls` (or `sheet=`) | columns Subject, Filename, OnsetF, ApexF1, ApexF2, OffsetF, Emotion (+ two header-less columns) |
    | `Cropped/subXX/{Filename}/reg_{Filename}-{frame}.jpg` (`frames=` names another folder) | frames |

    ApexF1 is the apex; ApexF2 is kept in meta. The label set and AU column are unverified
    (datasets.md): an unknown label is skipped with its reason.
    """
    root = _check_root(root, "casme")
    frames_dir = _first_dir(root, [frames], "CASME frames")
    if sheet:
        path = Path(sheet)
    else:
        books = sorted(p for p in root.iterdir() if p.suffix.lower() in (".xlsx", ".xls") and not p.name.startswith("~$"))
        if len(books) != 1:
            raise FileNotFoundError(
                f"{root}: expected one CASME coding spreadsheet, found {len(books)} "
                f"({', '.join(p.name for p in books) or 'none'}); pass sheet=PATH"
            )
        path = books[0]
    table = _read_sheet(path, ["subject", "filename", "onset", "apex", "offset", "emotion"], ["apex2", "aus"], sheet_name)
    opts = _Options(root, verify, readouts, readout_order)
    names = lambda n: [f"sub{n:02d}", f"sub{n}"]  # noqa: E731
    return _sheet_clips(
        "casme", table, opts, lambda n: names(n)[0], _in_subject_folder(frames_dir, names),
        _clip_folders(frames_dir), extra_meta=lambda rec: {"apex2_frame": _safe_int(rec.get("apex2"))},
    )


def _safe_int(v) -> int | None:
    try:
        return _int_cell(v, "")
    except _Skip:
        return None


def load_mmew(
    root: str | Path,
    *,
    part: str = "micro",
    selection: str | None = None,
    sheet: str | Path | bool | None = None,
    sheet_name: str | None = None,
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """MMEW micro-expressions (300) or macro-expressions (900), `part="micro"|"macro"`.

    | root holds | used as |
    |---|---|
    | `Micro_Expression/{emotion}/{S03-01-002}/1.jpg` | micro clips (or the official `S03/{emotion}/S03-01-002/1.jpg` directly under root) |
    | `Macro_Expression/{emotion}/{clip}/1.jpg` | macro clips |
    | `MMEW_Micro_Exp.xlsx` (or `sheet=`) | micro onset/apex/offset and labels; required for micro (pass `sheet=False` to use folders only) |
    | `MMEW_Macro_Exp.xlsx` (optional) | the same for macro, when present |

    Without a sheet, the label is the emotion folder, onset/offset the first/last frame and the
    apex the middle frame (meta apex_annotated False). The subject comes from the sheet
    (`S03`) or the clip name's prefix. 90 fps is unverified. `selection="miex"` keeps the
    micro-expressions of the six classes the MiE-X experiments use (`MMEW_MIEX_CLASSES`; the
    others are listed as Skipped). The set is named like the lab's: "mmew-micro", "mmew-macro",
    "mmew-micro-miex".
    """
    if part not in ("micro", "macro"):
        raise ValueError(f"mmew: part must be 'micro' or 'macro', not {part!r}")
    if selection not in (None, "miex") or (selection == "miex" and part != "micro"):
        raise ValueError(f"mmew: selection {selection!r} with part {part!r}; the only selection is 'miex' (micro)")
    root = _check_root(root, "mmew")
    top = "Micro_Expression" if part == "micro" else "Macro_Expression"
    tree = _first_dir(root, [top, top.replace("_", "-"), top.lower()], f"MMEW {part}", required=part == "macro")
    if tree is None:  # official layout: subject folders S03/ directly under root
        subjects = [d for d in _subdirs(root) if re.fullmatch(r"[Ss]\d+", d.name)]
        if not subjects:
            raise FileNotFoundError(
                f"{root}: no MMEW micro folder (looked for Micro_Expression/ and subject folders S01/...); "
                f"found: {_listing(root)}"
            )
        folders = [(c, e.name) for s in subjects for e in _subdirs(s) for c in _subdirs(e)]
    else:
        folders = [(c, e.name) for e in _subdirs(tree) for c in _subdirs(e)]
    opts = _Options(root, verify, readouts, readout_order)
    if sheet is None:
        stem = "MMEW_Micro_Exp" if part == "micro" else "MMEW_Macro_Exp"
        found = sorted(root.glob(stem + "*.xls*")) + sorted(root.glob(stem + "*.csv"))
        if found:
            sheet = found[-1]
        elif part == "micro":
            raise FileNotFoundError(
                f"{root}: no {stem}.xlsx (the micro onset/apex sheet); found: {_listing(root)}; "
                "pass sheet=PATH, or sheet=False to take labels from folders and the middle frame as apex"
            )
    if sheet:
        by_name: dict[str, list[tuple[Path, str]]] = {}
        for folder, emotion in folders:
            by_name.setdefault(_norm_id(folder.name), []).append((folder, emotion))

        def find(number: int, filename: str) -> tuple[Path, dict]:
            hits = by_name.get(_norm_id(filename), [])
            if not hits:
                raise _Skip(f"clip folder {filename} not found under {tree or root}")
            if len(hits) > 1:
                raise _Skip(f"clip folder {filename} is ambiguous: {', '.join(str(h[0]) for h in hits)}")
            return hits[0][0], {"part": part, "emotion_folder": hits[0][1]}

        table = _read_sheet(Path(sheet), ["subject", "filename", "onset", "apex", "offset", "emotion"], ["aus"], sheet_name)
        cs = _sheet_clips(
            "mmew", table, opts, lambda n: f"S{n:02d}", find, [f for f, _ in folders], name=f"mmew-{part}",
        )
    else:
        out = _Collector("mmew", f"mmew-{part}")
        for folder, emotion in folders:
            def make(folder=folder, emotion=emotion) -> Clip:
                label, label3 = _label("mmew", emotion, f"{folder.parent}")
                m = re.match(r"[Ss]?(\d+)", folder.name)
                if not m:
                    raise _Skip(f"{folder}: clip name does not start with a subject (S03-...)")
                return _build_clip(
                    "mmew", f"S{int(m.group(1)):02d}", folder.name, folder, opts,
                    onset=None, apex=None, offset=None, label=label, label3=label3,
                    meta={"part": part},
                )

            out.attempt(f"{emotion}/{folder.name}", make)
        cs = out.result()
    if selection == "miex":
        cs.skipped += [Skipped("mmew", c.key, f"class {c.label!r} is not one of the six MiE-X MMEW classes")
                       for c in cs if c.label not in MMEW_MIEX_CLASSES]
        cs.clips, cs.name = [c for c in cs if c.label in MMEW_MIEX_CLASSES], "mmew-micro-miex"
    return cs


def load_smic(
    root: str | Path,
    *,
    camera: str = "HS",
    variant: str = "auto",
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """SMIC (HS: 164 clips, 16 subjects, 100 fps); labels are the folder names.

    | root holds | used as |
    |---|---|
    | `HS/s1/micro/{negative,positive,surprise}/s1_ne_01/image000001.bmp` | clips (`camera="VIS"` or `"NIR"`: 25 fps) |
    | or the same tree without `HS/` (root is the camera folder) | |

    Raw `image{6 digits}.bmp` and cropped `reg_image{6 digits}.bmp` / `reg_00001.bmp` are all
    read; a folder holding both needs `variant`. There is no onset/apex sheet: onset and offset
    are the first and last frames, the apex the middle frame (meta apex_annotated False).
    """
    cameras = {"HS": 100.0, "VIS": 25.0, "NIR": 25.0}
    if camera not in cameras:
        raise ValueError(f"smic: camera must be one of {', '.join(cameras)}, not {camera!r}")
    root = _check_root(root, "smic")
    base = root / camera if (root / camera).is_dir() else root
    subjects = [d for d in _subdirs(base) if re.fullmatch(r"[sS]\d+", d.name)]
    if not subjects:
        raise FileNotFoundError(
            f"{root}: no SMIC subject folders (looked for {camera}/s1/... and s1/...); found: {_listing(root)}"
        )
    opts = _Options(root, verify, readouts, readout_order)
    out = _Collector("smic")
    for subject in subjects:
        micro = subject / "micro"
        if not micro.is_dir():
            out.skipped.append(Skipped("smic", subject.name, f"{subject} has no micro/ folder (found: {_listing(subject)})"))
            continue
        for label_dir in _subdirs(micro):
            for folder in _subdirs(label_dir):
                def make(folder=folder, label_dir=label_dir) -> Clip:
                    label, label3 = _label("smic", label_dir.name, str(label_dir))
                    clip = _build_clip(
                        "smic", subject.name, folder.name, folder, opts, onset=None, apex=None,
                        offset=None, label=label, label3=label3, variant=variant,
                        meta={"camera": camera, "subject_number": _number_in(subject.name)},
                    )
                    clip.fps = cameras[camera]
                    return clip

                out.attempt(f"{subject.name}/{folder.name}", make)
    return out.result()


def load_ckplus(
    root: str | Path,
    *,
    selection: str | None = None,
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """CK+ (593 sequences, 123 subjects; 327 with an emotion label), neutral to peak.

    | root holds | used as |
    |---|---|
    | `cohn-kanade-images/S005/001/S005_001_00000011.png` | frames |
    | `Emotion/S005/001/S005_001_00000011_emotion.txt` (or `Emotion_labels/Emotion/`) | label: one float code 0..7 (`au.CKPLUS_CODES`) |
    | `FACS/S005/001/S005_001_00000011_facs.txt` (optional; or `FACS_labels/FACS/`) | peak-frame AU codes -> `Clip.aus` ("1+2+5"), intensities in meta["facs"] |
    | `Landmarks/S005/001/..._landmarks.txt` (optional; or `Landmarks/Landmarks/`) | 68-point landmark files per frame -> meta["landmark_files"]; read with `read_landmarks` |

    A sequence with no emotion file is kept with label None, label3 None and meta labelled
    False (as in the simulated lab); `selection="labelled"` keeps only the 327 labelled ones and
    lists the others as Skipped. Onset is the first frame; apex and offset the peak frame named by the emotion/FACS
    file (the last frame when neither exists). 30 fps is unverified.
    """
    root = _check_root(root, "ckplus")
    images = _first_dir(root, ["cohn-kanade-images/cohn-kanade-images", "cohn-kanade-images"], "CK+ image")
    emotions = _first_dir(root, ["Emotion_labels/Emotion", "Emotion/Emotion", "Emotion", "Emotion_labels"], "CK+ Emotion")
    facs = _first_dir(root, ["FACS_labels/FACS", "FACS/FACS", "FACS"], "CK+ FACS", required=False)
    marks = _first_dir(root, ["Landmarks/Landmarks", "Landmarks"], "CK+ Landmarks", required=False)
    opts = _Options(root, verify, readouts, readout_order)
    out = _Collector("ckplus")
    for subject in _subdirs(images):
        for seq in _subdirs(subject):
            rel = Path(subject.name) / seq.name

            def make(seq=seq, rel=rel, subject=subject) -> Clip:
                emo_file = _one_file(emotions / rel, "*_emotion.txt")
                facs_file = _one_file(facs / rel, "*_facs.txt") if facs else None
                meta: dict = {"labelled": emo_file is not None}
                if emo_file is not None:
                    code = _read_emotion_code(emo_file)
                    if code not in au.CKPLUS_CODES:
                        raise _Skip(f"{emo_file}: unknown emotion code {code}; CK+ codes are 0..7")
                    label = au.CKPLUS_CODES[code]
                    meta["emotion_file"] = str(emo_file)
                else:
                    label = None  # no emotion file: CK+ gives no label for this sequence
                label3 = au.to_megc3("ckplus", label) if emo_file is not None else None
                aus = None
                if facs_file is not None:
                    meta["facs"] = _read_facs(facs_file)
                    aus = "+".join(str(c) for c in meta["facs"]) or None
                peak_file = emo_file or facs_file
                peak = _frame_number(Path(peak_file.name.rsplit("_", 1)[0])) if peak_file else None
                clip = _build_clip(
                    "ckplus", subject.name, f"{subject.name}_{seq.name}", seq, opts,
                    onset=None, apex=peak, offset=peak, label=label, label3=label3, aus=aus,
                    apex_at_end=True, meta=meta,
                )
                # The peak frame is coded by design, even when no file names it.
                clip.meta["apex_annotated"] = True
                if marks is not None:
                    numbers = [_frame_number(p) for p in clip.frames.paths]
                    files = {_frame_number(Path(p.name.rsplit("_", 1)[0])): p for p in (marks / rel).glob("*_landmarks.txt")}
                    clip.meta["landmark_files"] = [files.get(n) for n in numbers]
                return clip

            out.attempt(f"{subject.name}/{seq.name}", make)
    cs = out.result()
    if selection is not None:
        if selection != "labelled":
            raise ValueError(f"ckplus: unknown selection {selection!r}; use 'labelled' (sequences with an emotion file)")
        cs.skipped += [Skipped("ckplus", c.key, "no emotion file (unlabelled CK+ sequence)") for c in cs if c.label is None]
        cs.clips, cs.name = [c for c in cs if c.label is not None], "ckplus-labelled"
    return cs


def _one_file(folder: Path, pattern: str) -> Path | None:
    if not folder.is_dir():
        return None
    hits = sorted(folder.glob(pattern))
    if len(hits) > 1:
        raise _Skip(f"{folder} holds {len(hits)} files matching {pattern}: {', '.join(p.name for p in hits)}")
    return hits[0] if hits else None


def _read_emotion_code(path: Path) -> int:
    text = path.read_text(errors="replace").split()
    try:
        return int(float(text[0]))
    except (IndexError, ValueError):
        raise _Skip(f"{path}: not an emotion code (expected one number 0..7, got {' '.join(text)[:40]!r})") from None


def _read_facs(path: Path) -> dict[int, float]:
    """CK+ FACS file: lines of `AU code, intensity` (floats; intensity 0 = not coded)."""
    codes: dict[int, float] = {}
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            code, intensity = (float(t) for t in line.split()[:2])
        except ValueError:
            raise _Skip(f"{path} line {i}: expected 'AU intensity', got {line.strip()!r}") from None
        codes[int(code)] = intensity
    return codes


def read_landmarks(path: str | Path) -> np.ndarray:
    """A 68-point landmark file (one `x y` pair per line, CK+ style) as a 68 x 2 float32 array."""
    path = Path(path)
    try:
        points = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a landmark file ({exc})") from None
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"{path}: expected 68 finite 'x y' lines, got shape {points.shape}")
    return points.astype(np.float32)


def load_oulu(
    root: str | Path,
    *,
    modality: str = "VL",
    illumination: str = "Strong",
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """Oulu-CASIA NIR&VIS (80 subjects, 6 expressions, 25 fps), one modality and illumination.

    | root holds | used as |
    |---|---|
    | `OriginalImg/{VL,NI}/{Strong,Weak,Dark}/P001/Anger/000.jpeg` | clips; label = expression folder |

    Sequences run from neutral to the peak: onset is the first frame, apex and offset the last
    (no annotation, so meta apex_annotated is False).
    """
    if modality not in ("VL", "NI"):
        raise ValueError(f"oulu: modality must be 'VL' (visible) or 'NI' (near infrared), not {modality!r}")
    if illumination not in ("Strong", "Weak", "Dark"):
        raise ValueError(f"oulu: illumination must be 'Strong', 'Weak' or 'Dark', not {illumination!r}")
    root = _check_root(root, "oulu")
    base = _first_dir(
        root, [f"OriginalImg/{modality}/{illumination}", f"{modality}/{illumination}"], "Oulu-CASIA OriginalImg"
    )
    opts = _Options(root, verify, readouts, readout_order)
    out = _Collector("oulu")
    for subject in _subdirs(base):
        for folder in _subdirs(subject):
            def make(folder=folder, subject=subject) -> Clip:
                label, label3 = _label("oulu", folder.name, str(folder))
                return _build_clip(
                    "oulu", subject.name, f"{subject.name}_{folder.name}", folder, opts,
                    onset=None, apex=None, offset=None, label=label, label3=label3, apex_at_end=True,
                    meta={"modality": modality, "illumination": illumination},
                )

            out.attempt(f"{subject.name}/{folder.name}", make)
    return out.result()


def load_composite(
    root: str | Path,
    *,
    gt: str | Path | None = None,
    casme2: str | Path | None = None,
    samm: str | Path | None = None,
    smic: str | Path | None = None,
    variant: str = "auto",
    verify: bool = False,
    readouts: bool = True,
    readout_order: str = "name",
) -> ClipSet:
    """The MEGC 2019 composite ("CompMiE": 442 clips, 68 subjects) from its three sources.

    | root holds | used as |
    |---|---|
    | `combined_3class_gt.csv` (or `gt=`) | the official list: database, subject, clip, class (0 negative, 1 positive, 2 surprise); no header |
    | `casme2/` (or `CASME2/`, `CASME_II/`, ..., or `casme2=`) | a CASME II root (see `load_casme2`) |
    | `samm/` (or `SAMM/`, or `samm=`) | a SAMM root (see `load_samm`) |
    | `smic/` (or `SMIC/`, or `smic=`) | a SMIC root (see `load_smic`) |

    Rows are matched to clips by database, subject number and clip name with zero padding
    ignored (`smic,s01,s01_ne_01` matches `s1/s1_ne_01`). Blank `,,,` lines are ignored. label3
    is the CSV's class (a disagreement with the merge rules is kept in meta["label3_rule"]);
    label stays the source's emotion and `dataset` the source's name. A listed clip the
    source could not load is Skipped with the source's reason.
    """
    root = _check_root(root, "composite")
    gt_path = Path(gt) if gt else root / "combined_3class_gt.csv"
    if not gt_path.is_file():
        raise FileNotFoundError(f"{gt_path}: the MEGC 2019 ground-truth list is missing; found in {root}: {_listing(root)}")
    roots = {"casme2": casme2, "samm": samm, "smic": smic}
    loaders = {"casme2": load_casme2, "samm": load_samm, "smic": load_smic}
    sources: dict[str, ClipSet] = {}
    for db, given in roots.items():
        folder = Path(given) if given else _first_dir(root, _FOLDER_NAMES[db], f"{db} source")
        sources[db] = loaders[db](folder, variant=variant, verify=verify, readouts=readouts, readout_order=readout_order)
        roots[db] = folder
    index: dict[tuple, Clip] = {}
    for db, cs in sources.items():
        for c in cs:
            index[(db, _number_in(c.subject), _norm_id(c.clip_id))] = c
    source_skips = {
        (db, _number_in(s.item.split("/")[0]), _norm_id(s.item.split("/")[-1])): s
        for db, cs in sources.items() for s in cs.skipped
    }
    clips, skipped, seen = [], [], {}
    with open(gt_path, newline="", encoding="utf-8-sig") as fh:
        for line, fields in enumerate(csv.reader(fh), 1):
            fields = [f.strip() for f in fields]
            if not any(fields):
                continue  # the blank `,,,` lines of the earlier 441-row file
            item = f"{gt_path.name} line {line}"
            if len(fields) < 4:
                skipped.append(Skipped("composite", item, f"expected database,subject,clip,class; got {','.join(fields)!r}"))
                continue
            db, subject, clip_name, cls = fields[:4]
            db = {"casme_ii": "casme2", "casmeii": "casme2"}.get(db.lower(), db.lower())
            item = f"{db}/{subject}/{clip_name}"
            if line == 1 and not cls.lstrip("-").isdigit():
                continue  # a header line someone added; the official file has none
            if db not in sources:
                skipped.append(Skipped("composite", item, f"{gt_path.name} line {line}: unknown database {fields[0]!r}; expected casme2, samm or smic"))
                continue
            if not cls.isdigit() or int(cls) >= len(au.MEGC3):
                skipped.append(Skipped("composite", item, f"{gt_path.name} line {line}: unknown label {cls!r}; classes are 0 negative, 1 positive, 2 surprise"))
                continue
            key = (db, _number_in(subject), _norm_id(clip_name))
            if key in seen:
                skipped.append(Skipped("composite", item, f"{gt_path.name} line {line} repeats line {seen[key]}"))
                continue
            seen[key] = line
            source = index.get(key)
            if source is None:
                why = source_skips.get(key)
                skipped.append(Skipped(
                    "composite", item,
                    f"{gt_path.name} line {line}: the {db} loader skipped it: {why.reason}" if why
                    else f"{gt_path.name} line {line}: no such clip under {roots[db]}",
                ))
                continue
            label3 = au.MEGC3[int(cls)]
            rule = au.to_megc3(db, source.label)
            meta = {**source.meta, "composite_line": line}
            if rule != label3:
                meta["label3_rule"] = rule
            clips.append(dataclasses.replace(source, label3=label3, meta=meta))
    return ClipSet("composite", clips, skipped, source="real")


LOADERS: dict[str, Callable[..., ClipSet]] = {
    "casme2": load_casme2, "samm": load_samm, "smic": load_smic, "composite": load_composite,
    "ckplus": load_ckplus, "mmew": load_mmew, "casme": load_casme, "oulu": load_oulu,
}


# ---------------------------------------------------------------------------------------------
# Identity pools

@dataclass
class Identity:
    """One face image of an identity pool, with optional landmarks and AU readout."""

    path: Path
    landmarks: np.ndarray | None = None  # 68 x 2, pixels
    aus: np.ndarray | None = None  # (17,) in [0, 1], from an OpenFace CSV
    meta: dict = field(default_factory=dict)


@dataclass
class IdentityPool:
    """The face images of a folder (EmotioNet, CelebA style) plus what was skipped."""

    root: Path
    identities: list[Identity]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.identities)

    def __iter__(self) -> Iterator[Identity]:
        return iter(self.identities)

    def __getitem__(self, i):
        return self.identities[i]

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "images": len(self.identities),
            "with_landmarks": sum(i.landmarks is not None for i in self.identities),
            "with_aus": sum(i.aus is not None for i in self.identities),
            "skipped": [vars(s) for s in self.skipped],
        }


def identity_pool(
    root: str | Path,
    landmarks: str | Path | None = None,
    *,
    readouts: bool = True,
    verify: bool = False,
) -> IdentityPool:
    """Every face image under `root` (recursive, image suffixes only), in natural path order.

    `landmarks` (optional) is either a folder mirroring root with `a_landmarks.txt`, `a.txt` or
    `a.npy` per image `a.jpg`, or an `.npz` file keyed by the image's path relative to root
    (POSIX, e.g. `sub/a.jpg`) or its stem. Each must hold 68 x 2 points; an image without
    them is Skipped when `landmarks` is given. With `readouts`, an OpenFace
    FaceLandmarkImg CSV found by `openface.locate` gives the AU vector (and landmarks when
    none were given) from its most confident face; a failed readout is noted in meta.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"identity pool root {root} does not exist or is not a folder")
    images = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
         and "openface" not in p.relative_to(root).parts[:1]),
        key=lambda p: _natural_key(p.relative_to(root).as_posix()),
    )
    table = _landmark_source(Path(landmarks)) if landmarks is not None else None
    pool = IdentityPool(root, [])
    for path in images:
        rel = path.relative_to(root)
        try:
            if verify:
                _verify_images([path], decode=[path])
            record = Identity(path, meta={"relative_path": rel.as_posix()})
            if table is not None:
                record.landmarks = table(rel)
            if readouts:
                _attach_image_readout(record, root)
        except _Skip as exc:
            pool.skipped.append(Skipped("identity_pool", rel.as_posix(), str(exc)))
            continue
        pool.identities.append(record)
    if not pool.identities and not pool.skipped:
        raise FileNotFoundError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); found: {_listing(root)}")
    return pool


def _landmark_source(source: Path) -> Callable[[Path], np.ndarray]:
    """A function from an image's relative path to its 68 x 2 landmarks (or a _Skip)."""
    if source.is_dir():
        def from_folder(rel: Path) -> np.ndarray:
            stem = source / rel.parent / rel.stem
            for candidate in (Path(f"{stem}_landmarks.txt"), Path(f"{stem}.txt")):
                if candidate.is_file():
                    try:
                        return read_landmarks(candidate)
                    except ValueError as exc:
                        raise _Skip(str(exc)) from None
            npy = Path(f"{stem}.npy")
            if npy.is_file():
                return _check_points(np.load(npy, allow_pickle=False), str(npy))
            raise _Skip(f"no landmarks for it in {source} (looked for {stem.name}_landmarks.txt, .txt, .npy)")
        return from_folder
    if source.suffix == ".npz" and source.is_file():
        with np.load(source, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}

        def from_npz(rel: Path) -> np.ndarray:
            for key in (rel.as_posix(), rel.stem):
                if key in arrays:
                    return _check_points(arrays[key], f"{source}[{key}]")
            raise _Skip(f"{source} has no key {rel.as_posix()!r} or {rel.stem!r}")
        return from_npz
    raise FileNotFoundError(f"landmarks {source}: expected a folder or an .npz file")


def _check_points(points, where: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.shape != (68, 2) or not np.isfinite(arr).all():
        raise _Skip(f"{where}: expected 68 x 2 finite landmarks, got shape {arr.shape}")
    return arr.astype(np.float32)


def _attach_image_readout(record: Identity, root: Path) -> None:
    csv_path = openface.locate(record.path, root)
    if csv_path is None:
        return
    try:
        readout = openface.read(csv_path)
    except ValueError as exc:
        raise _Skip(f"AU readout: {exc}") from None
    record.meta["readout_file"] = str(csv_path)
    ok = np.flatnonzero(readout.success)
    if len(ok) == 0:
        record.meta["readout_failed"] = True  # OpenFace found no face: no AU vector
        return
    best = ok[np.argmax(readout.confidence[ok])]
    record.aus = readout.aus[best]
    record.meta["readout_faces"] = len(readout)
    if record.landmarks is None and readout.landmarks is not None:
        record.landmarks = readout.landmarks[best]
        record.meta["landmarks_from"] = "openface"


# ---------------------------------------------------------------------------------------------
# Inspecting

def inspect(name: str, root: str | Path | None = None, *, sim: bool = False, seed: int = 0, **options) -> dict:
    """What `python -m mielib data inspect` prints: counts, classes and every skipped sample."""
    if sim:
        clipset = load(name, "sim", seed=seed, **options)
    else:
        if root is None:
            raise ValueError(f"inspecting real {name} needs ROOT, the dataset folder (or --sim)")
        clipset = load(name, "real", root, **options)
    return summarize(clipset, root=None if sim else root)


def summarize(clipset: ClipSet, root: str | Path | None = None) -> dict:
    """`ClipSet.summary()` plus the counts a loader's quirks produce."""
    out = clipset.summary()
    if root is not None:
        out["root"] = str(root)
    out["unlabelled"] = sum(c.label is None for c in clipset)
    out["apex_not_annotated"] = sum(c.meta.get("apex_annotated") is False for c in clipset)
    out["with_readout"] = sum(c.readout is not None for c in clipset)
    repaired = [c for c in clipset if c.meta.get("repairs")]
    out["annotation_repaired"] = len(repaired)
    out["repairs"] = [
        {"item": c.key, "row": f"{c.meta['sheet']} row {c.meta['sheet_row']}" if "sheet" in c.meta else None,
         "repairs": list(c.meta["repairs"])}
        for c in repaired
    ]
    return json.loads(json.dumps(out, default=_jsonable))


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def format_summary(summary: dict) -> str:
    """The summary as the text `data inspect` prints."""
    def counts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    lines = [
        f"{summary['name']} (data source: {summary['data_source']}"
        + (f", root: {summary['root']}" if summary.get("root") else "") + ")",
        f"samples: {summary['samples']}",
        f"subjects: {summary['subjects']}",
        f"classes: {counts(summary['classes'])}",
        f"3-class (MEGC): {counts(summary['classes_3'])}",
    ]
    if summary.get("unlabelled"):
        lines.append(f"unlabelled (no emotion file; kept, label3 None): {summary['unlabelled']}")
    if summary.get("apex_not_annotated"):
        lines.append(f"apex not annotated (middle or last frame used): {summary['apex_not_annotated']}")
    if "with_readout" in summary:
        lines.append(f"with AU readout: {summary['with_readout']}")
    if summary.get("repairs"):
        lines.append(f"annotation repaired (kept, flagged in meta['repairs']): {len(summary['repairs'])}")
        lines += [f"  {r['item']}" + (f" ({r['row']})" if r.get("row") else "") + f": {'; '.join(r['repairs'])}"
                  for r in summary["repairs"]]
    lines.append(f"skipped: {len(summary['skipped'])}")
    lines += [f"  {s['item']}: {s['reason']}" for s in summary["skipped"]]
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """`python -m mielib data inspect NAME [ROOT] [--sim] [--fast] [--json] [-o KEY=VALUE ...]`."""
    parser = argparse.ArgumentParser(
        prog="python -m mielib data",
        description="Inspect a real dataset folder or its simulated stand-in.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser(
        "inspect",
        help="count samples, subjects and classes; list every skipped sample with its reason",
        description="Count samples, subjects and classes (original and MEGC 3-class) and list "
        "every skipped sample with its reason.",
    )
    p.add_argument("name", help=f"dataset: {', '.join(KNOWN)}")
    p.add_argument("root", nargs="?", help="the dataset folder (its layout: help(mielib.datasets.load_NAME))")
    p.add_argument("--sim", action="store_true", help="inspect the simulated stand-in instead of real data")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated stand-in (default 0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--fast", action="store_true",
                   help="skip the frame check (by default every frame's header is opened and the onset, "
                        "apex and offset frames are decoded; a clip with a corrupt frame is skipped)")
    # Kept so that commands written before checking became the default still run.
    p.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a loader option, e.g. -o part=macro (mmew), -o variant=raw, -o modality=NI (oulu)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        options = dict(_parse_option(o) for o in args.option)
        if not args.sim:  # the simulated lab has no files to check
            options.setdefault("verify", not args.fast)
        if args.sim:
            if args.root:
                raise ValueError("give either ROOT or --sim, not both")
            summary = inspect(args.name, sim=True, seed=args.seed, **options)
        else:
            if args.root is None:
                raise ValueError(f"ROOT is required: the {args.name} folder (or --sim for the simulated stand-in)")
            if not Path(args.root).expanduser().is_dir():
                raise FileNotFoundError(f"ROOT {args.root} does not exist or is not a folder")
            summary = inspect(args.name, args.root, **options)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"option {text!r}: write KEY=VALUE, e.g. part=macro")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    return key, value
