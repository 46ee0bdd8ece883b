"""Onset -> apex optical flow, the `input="flow"` representation of the classifiers (notebooks
04-05 and later): OpenCV's Farneback flow of the face, as OFF-ApexNet and STSTNet feed it.

A flow image has three channels, horizontal and vertical displacement and its magnitude, in
pixels of a 128-px face whatever the frames' size, so one trained network reads flows of any
resolution on the same scale. Flows of a whole set are computed once and cached under the data
folder, keyed by the frames' bytes and the parameters, so a changed frame is never served a
stale flow.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mielib import runtime, store

#: Farneback parameters at 128 px (the window scales with the frame size); OpenCV's defaults
#: elsewhere. Part of every cache key.
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}
#: Flow vectors are expressed in pixels of a face this many pixels wide.
REFERENCE_SIZE = 128
CHANNELS = ("dx", "dy", "magnitude")


def _gray(frame) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise ValueError(f"flow: frames must be uint8 images, got {arr.dtype} {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = (arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5).astype(np.uint8)
    elif arr.ndim != 2:
        raise ValueError(f"flow: frames must be H x W or H x W x 3, got shape {arr.shape}")
    return arr


def compute(onset, apex, size: int | None = None) -> np.ndarray:
    """The flow from `onset` to `apex` (H x W x 3 uint8 frames of one size) as a float32 array
    3 x size x size: dx, dy (pixels at 128 px) and magnitude. `size` None keeps the frames' size;
    otherwise the flow is computed at the frames' resolution, then area-resized."""
    import cv2

    a, b = _gray(onset), _gray(apex)
    if a.shape != b.shape:
        raise ValueError(f"flow: onset {a.shape} and apex {b.shape} frames differ in size")
    h, w = a.shape
    params = dict(FARNEBACK)
    params["winsize"] = max(5, int(round(FARNEBACK["winsize"] * w / REFERENCE_SIZE)) | 1)
    uv = cv2.calcOpticalFlowFarneback(a, b, None, flags=0, **params)  # H x W x 2, pixels at this size
    uv *= REFERENCE_SIZE / float(w)
    if size is not None and (h, w) != (size, size):
        uv = cv2.resize(uv, (int(size), int(size)), interpolation=cv2.INTER_AREA)
    mag = np.sqrt((uv ** 2).sum(axis=2, keepdims=True))
    return np.ascontiguousarray(np.concatenate([uv, mag], axis=2).transpose(2, 0, 1), dtype=np.float32)


def for_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: int, *, name: str = "",
              progress: bool = False) -> np.ndarray:
    """Flows of many (onset, apex) frame pairs, N x 3 x size x size float16, from the cache
    (`<data>/flow/<key>.npz`) or computed now and cached atomically. `name` only labels the bar."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(repr((sorted(FARNEBACK.items()), REFERENCE_SIZE, int(size), len(pairs))).encode())
    for a, b in pairs:
        for f in (a, b):
            arr = np.ascontiguousarray(f)
            h.update(repr((arr.shape, str(arr.dtype))).encode())
            h.update(arr.tobytes())
    path = runtime.folder("data") / "flow" / f"{h.hexdigest()}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                out = f["flow"]
            if out.shape == (len(pairs), 3, int(size), int(size)):
                return out
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: compute again and replace it
    from tqdm.auto import tqdm

    it = tqdm(pairs, desc=f"optical flow {name}".strip(), unit="pair", disable=not progress, leave=False)
    out = np.stack([compute(a, b, size) for a, b in it]).astype(np.float16) if len(pairs) else \
        np.zeros((0, 3, int(size), int(size)), np.float16)
    store.write_npz(path, flow=out)
    return out
