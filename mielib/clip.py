"""The clip: one annotated expression sequence, real or simulated, and collections of clips.

Real loaders (`datasets`) and the simulated lab (`lab`) both return a `ClipSet`, so every
notebook works the same on either data source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd


class FrameError(ValueError):
    """A frame that cannot be read (missing, corrupt, wrong format); the message names the file."""


class PathFrames(Sequence):
    """Frames stored as image files, read only when indexed (RGB uint8, H x W x 3)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return read_image(self.paths[i])


class ArrayFrames(Sequence):
    """Frames already in memory: an array T x H x W x 3 (uint8)."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i):
        return self.array[i]


class RenderedFrames(Sequence):
    """Frames rendered on demand by a callable `render(i) -> H x W x 3 uint8` (the lab)."""

    def __init__(self, n: int, render: Callable[[int], np.ndarray]):
        self.n, self.render = n, render

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -self.n <= i < self.n:
            raise IndexError(f"frame {i} out of range for a clip of {self.n} frames")
        return self.render(i % self.n)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8; grayscale is replicated to 3 channels.

    Raises FrameError naming the file when it is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FrameError(f"{path}: frame file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise FrameError(f"{path}: not a readable image ({exc})") from None


@dataclass
class Clip:
    """One expression sequence with its annotation.

    Frame indices (`onset`, `apex`, `offset`) are 0-based positions in `frames`, whatever
    numbering the dataset's files use (that stays in `meta`).
    """

    dataset: str
    subject: str
    clip_id: str
    frames: Sequence  # PathFrames, ArrayFrames or RenderedFrames
    fps: float
    onset: int
    apex: int
    offset: int
    label: str  # the dataset's own emotion, canonical spelling (au.canonical_emotion)
    label3: str | None  # MEGC 3-class label, or None where the merge rules drop it
    aus: str | None = None  # FACS AU codes as annotated, e.g. "4+L10"
    readout: np.ndarray | None = None  # per-frame AU readouts, T x 17 in [0, 1]
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def key(self) -> str:
        """A unique id across datasets: "dataset/subject/clip_id"."""
        return f"{self.dataset}/{self.subject}/{self.clip_id}"

    def frame(self, i: int) -> np.ndarray:
        return self.frames[i]

    def row(self) -> dict:
        """The clip's annotation as a flat dict (no pixels): one DataFrame row."""
        return {
            "dataset": self.dataset, "subject": self.subject, "clip_id": self.clip_id,
            "n_frames": self.n_frames, "fps": self.fps,
            "onset": self.onset, "apex": self.apex, "offset": self.offset,
            "label": self.label, "label3": self.label3, "aus": self.aus,
            "has_readout": self.readout is not None,
            **{f"meta_{k}": v for k, v in self.meta.items() if np.isscalar(v) or v is None},
        }


@dataclass
class Skipped:
    """A sample a loader could not use, and why. Loaders never drop anything silently."""

    dataset: str
    item: str  # the clip or file concerned
    reason: str


@dataclass
class ClipSet:
    """The clips of a dataset plus the samples that were skipped, with reasons."""

    name: str
    clips: list[Clip]
    skipped: list[Skipped] = field(default_factory=list)
    source: str = "sim"  # the data source: "sim" (simulated lab) or "real"

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    def __getitem__(self, i):
        return self.clips[i]

    def to_frame(self) -> pd.DataFrame:
        """One row per clip (annotations only), for pandas users."""
        return pd.DataFrame([c.row() for c in self.clips])

    @property
    def subjects(self) -> list[str]:
        return sorted({c.subject for c in self.clips})

    def where(self, predicate: Callable[[Clip], bool], name: str | None = None) -> "ClipSet":
        """The clips for which `predicate` holds (skipped samples are kept for the record)."""
        return ClipSet(name or self.name, [c for c in self.clips if predicate(c)], list(self.skipped), self.source)

    def summary(self) -> dict:
        """Counts a person checks first: samples, subjects, classes, skipped samples."""
        df = self.to_frame()
        return {
            "name": self.name,
            "data_source": self.source,
            "samples": len(self.clips),
            "subjects": len(self.subjects),
            "classes": df["label"].value_counts().to_dict() if len(df) else {},
            "classes_3": df["label3"].fillna("(dropped)").value_counts().to_dict() if len(df) else {},
            "skipped": [vars(s) for s in self.skipped],
        }
