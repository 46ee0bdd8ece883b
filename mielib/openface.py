"""OpenFace 2.x CSV readouts: the 17 AU intensities (and landmarks) per frame or per image.

The real loaders (`datasets`) attach them to clips and identity pools; notebooks 01 and 09 use
them as the real AU sources z_MiE and z_MaE.

Where a readout is looked for (the locating rule, also in the README):

| the thing | its CSV |
|---|---|
| a clip folder `.../X/` | `.../X.csv` beside the folder, else `ROOT/openface/<path of X relative to ROOT>.csv` |
| an image `.../a.jpg` | `.../a.csv` beside it, else `ROOT/openface/<path of a.jpg relative to ROOT, .csv>` |

ROOT is the dataset root given to the loader. Run `FeatureExtraction -fdir X -aus` for a clip
folder and `FaceLandmarkImg -f a.jpg -aus` for an image; move or name the CSV by the rule.

Conventions:
- Header names are stripped (older builds write `", "` separators, so `' AU01_r'`).
- The 17 `AU*_r` columns are selected by name (`au.OPENFACE_COLUMNS`), never by position, and
  divided by 5 to mielib's [0, 1] scale.
- Values within `TOLERANCE` (on OpenFace's 0..5 scale) outside [0, 5] are clipped, because
  tools that re-save CSVs leave round-off; anything further out, or NaN, is a ValueError naming
  the file, the line and the column.
- Failed frames (`success == 0`) are kept, flagged in `Readout.success` and listed by
  `Readout.failed`: OpenFace writes zeros there, which are not a measurement.
- `FeatureExtraction -fdir` processes a folder's images in name order (OpenFace issue #487:
  "sorted in an alphanumerical order"), so `img100` comes before `img46`; `for_frames`
  re-orders rows to the clip's numeric frame order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mielib import au

#: How far outside OpenFace's [0, 5] a value may be and still be clipped (round-off only).
TOLERANCE = 0.05

#: Landmark columns of the 2D landmark group (`-2Dfp`), 68 points.
LANDMARK_X = tuple(f"x_{i}" for i in range(68))
LANDMARK_Y = tuple(f"y_{i}" for i in range(68))


@dataclass
class Readout:
    """One OpenFace CSV: T rows of AU intensities on mielib's [0, 1] scale."""

    path: Path
    flavour: str  # "sequence" (FeatureExtraction) or "image" (FaceLandmarkImg)
    aus: np.ndarray  # T x 17 float32 in [0, 1], `au.CODES` order
    success: np.ndarray  # T bool; all True for the image flavour, which has no success column
    confidence: np.ndarray  # T float32 in [0, 1]
    frame: np.ndarray | None = None  # OpenFace's 1-based frame numbers (sequence flavour)
    landmarks: np.ndarray | None = None  # T x 68 x 2 pixels, when the CSV has x_0..y_67

    def __len__(self) -> int:
        return len(self.aus)

    @property
    def failed(self) -> list[int]:
        """Row positions where OpenFace lost the face (success == 0)."""
        return [int(i) for i in np.flatnonzero(~self.success)]


def read(path: str | Path) -> Readout:
    """Read an OpenFace 2.x CSV (either flavour) and validate its 17 AU intensities."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OpenFace CSV not found")
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable OpenFace CSV ({exc})") from None
    # pandas renames a repeated header (`AU12_r`, `AU12_r.1`) and reading by name would then take
    # one of them silently: compare the header as written.
    header = _header(path)
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}: column(s) {', '.join(repeated)} appear more than once in the header; "
                         "a CSV edited or joined by hand? Re-export it from OpenFace")
    df.columns = header if len(header) == len(df.columns) else [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise ValueError(f"{path}: a header and no rows; OpenFace found no face or was stopped before writing. "
                         "Re-run it on this clip or image")
    missing = [c for c in au.OPENFACE_COLUMNS if c not in df.columns]
    if missing:
        found = [c for c in df.columns if c.startswith("AU")]
        raise ValueError(
            f"{path}: missing AU intensity columns {', '.join(missing)} "
            f"(found AU columns: {', '.join(found) or 'none'}); run OpenFace with -aus"
        )
    flavour = "sequence" if "frame" in df.columns else "image"
    raw = _numeric(df, au.OPENFACE_COLUMNS, path)
    bad = ~np.isfinite(raw) | (raw < -TOLERANCE) | (raw > au.OPENFACE_SCALE + TOLERANCE)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}: line {row + 2}, column {au.OPENFACE_COLUMNS[col]} = {float(raw[row, col])!r}; "
            f"OpenFace intensities must be numbers in [0, {au.OPENFACE_SCALE:g}]"
        )
    aus = au.validate(np.clip(raw, 0.0, au.OPENFACE_SCALE) / au.OPENFACE_SCALE, where=str(path))
    n = len(df)
    success = (_numeric(df, ["success"], path)[:, 0] != 0) if "success" in df.columns else np.ones(n, bool)
    confidence = (
        _numeric(df, ["confidence"], path)[:, 0].astype(np.float32)
        if "confidence" in df.columns else np.ones(n, np.float32)
    )
    frame = _numeric(df, ["frame"], path)[:, 0].astype(np.int64) if flavour == "sequence" else None
    landmarks = None
    if all(c in df.columns for c in LANDMARK_X + LANDMARK_Y):
        xs, ys = _numeric(df, LANDMARK_X, path), _numeric(df, LANDMARK_Y, path)
        landmarks = np.stack([xs, ys], axis=-1).astype(np.float32)
    return Readout(path, flavour, aus, success, confidence, frame, landmarks)


def for_frames(path: str | Path, frame_names: Sequence[str], *, order: str = "name") -> Readout:
    """Read a sequence CSV for a clip whose frames (in numeric order) have `frame_names`.

    `order="name"`: the rows follow the frames' file names sorted as strings, which is what
    `FeatureExtraction -fdir` does; rows are re-ordered to the clip's frame order.
    `order="frame"`: the rows already follow the clip's frame order (e.g. from a video).
    Raises ValueError naming the CSV when its row count differs from the frame count.
    """
    if order not in ("name", "frame"):
        raise ValueError(f"readout order {order!r}: use 'name' (OpenFace -fdir) or 'frame'")
    readout = read(path)
    if len(readout) != len(frame_names):
        raise ValueError(
            f"{readout.path}: {len(readout)} rows but the clip has {len(frame_names)} frames; "
            "re-run OpenFace on exactly the clip's frames"
        )
    if order == "frame":
        return readout
    # Row r belongs to the frame whose name sorts r-th; scatter rows back to numeric positions.
    by_name = np.array(sorted(range(len(frame_names)), key=lambda i: frame_names[i]), dtype=np.int64)
    inverse = np.empty_like(by_name)
    inverse[by_name] = np.arange(len(by_name))

    def pick(a):
        return None if a is None else a[inverse]

    return replace(
        readout, aus=readout.aus[inverse], success=readout.success[inverse],
        confidence=readout.confidence[inverse], frame=pick(readout.frame),
        landmarks=pick(readout.landmarks),
    )


def locate(target: str | Path, root: str | Path | None = None) -> Path | None:
    """The CSV for a clip folder or an image by the locating rule above, or None."""
    target = Path(target)
    is_dir = target.is_dir()

    def csv_of(p: Path) -> Path:
        return p.parent / (p.name + ".csv") if is_dir else p.with_suffix(".csv")

    if csv_of(target).is_file():
        return csv_of(target)
    if root is not None:
        try:
            rel = target.resolve().relative_to(Path(root).resolve())
        except ValueError:
            return None
        candidate = Path(root) / "openface" / csv_of(rel)
        if candidate.is_file():
            return candidate
    return None


def _header(path: Path) -> list[str]:
    """The CSV's header names as written, stripped (older OpenFace builds write `", "`)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        first = next(csv.reader(fh), [])
    return [c.strip() for c in first]


def _numeric(df: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """The columns as float64, with a ValueError naming file, line and column for text cells."""
    out = np.empty((len(df), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        values = pd.to_numeric(df[col], errors="coerce")
        text = values.isna() & df[col].notna()
        if text.any():
            row = int(np.flatnonzero(text.to_numpy())[0])
            raise ValueError(f"{path}: line {row + 2}, column {col} = {df[col].iloc[row]!r} is not a number")
        out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return out
