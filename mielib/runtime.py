"""Seeds, devices and provenance: the few things every notebook sets up the same way."""

from __future__ import annotations

import os
import random
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

#: The repository root when mielib runs from a checkout (the usual case); else the cwd.
ROOT = Path(__file__).resolve().parent.parent
if not (ROOT / "pyproject.toml").exists():
    ROOT = Path.cwd()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (if installed). Call once, at the top of a notebook.

    Library functions never call this: they take a `seed` or a generator argument.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def device(preference: str = "auto"):
    """The torch device to use: CUDA when present (or when asked), else CPU.

    "auto" first reads the environment variable MIELIB_DEVICE ("cpu", "cuda", "cuda:1"): set it
    to pin every "auto" in a run, notebooks and their worker processes included. `make ci-cuda`
    sets MIELIB_DEVICE=cuda, so a notebook that cannot reach the GPU fails instead of quietly
    training on the CPU.
    """
    import torch

    where = ""
    if preference == "auto" and os.environ.get("MIELIB_DEVICE", "").strip() not in ("", "auto"):
        preference, where = os.environ["MIELIB_DEVICE"].strip(), " (from MIELIB_DEVICE)"
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(preference)
    except RuntimeError:
        raise ValueError(f"unknown device {preference!r}{where}; use 'auto', 'cpu' or 'cuda'") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r}{where} requested but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return chosen


@lru_cache(maxsize=1)
def commit() -> str:
    """The mielib git commit (with '+dirty' when files outside figures/ have changes), or 'unknown'."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        # figures/ holds outputs, not code: a run rewriting the committed figures must not mark
        # the code that made them as modified (only changes elsewhere make a commit "+dirty").
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)figures"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def folder(kind: str) -> Path:
    """Where mielib writes: "figures", "data" (caches), or "results". Env vars override.

    MIELIB_FIGURES, MIELIB_DATA and MIELIB_RESULTS let tests and CI write elsewhere, so a
    smoke run never overwrites the committed small-preset figures.
    """
    defaults = {"figures": ROOT / "figures", "data": ROOT / "data" / "cache", "results": ROOT / "results"}
    if kind not in defaults:
        raise ValueError(f"unknown folder kind {kind!r}; use one of {', '.join(defaults)}")
    path = Path(os.environ.get(f"MIELIB_{kind.upper()}", defaults[kind]))
    path.mkdir(parents=True, exist_ok=True)
    return path
