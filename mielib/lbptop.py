"""LBP-TOP features (Zhao & Pietikäinen 2007) and a linear SVM: the hand-crafted baseline.

Used by notebook 05 (MiE-X Table 2 lists LBP-TOP [42]) and as a quick sanity baseline. Local
binary patterns are computed on the three orthogonal planes of a clip (XY: each frame; XT:
each row over time; YT: each column over time); per spatial block, one histogram per plane
orientation; all histograms concatenated.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

METHODS = {"nri_uniform", "uniform", "default"}


def n_bins(points: int = 8, method: str = "nri_uniform") -> int:
    """Histogram bins per plane: uniform patterns P(P-1)+3 (59 for P=8, the classic LBP-TOP
    u2 code), rotation-invariant uniform P+2, or all 2^P patterns ("default")."""
    if method == "nri_uniform":
        return points * (points - 1) + 3
    if method == "uniform":
        return points + 2
    if method == "default":
        return 2 ** points
    raise ValueError(f"unknown LBP method {method!r}; use one of {', '.join(sorted(METHODS))}")


def feature_dim(grid: tuple[int, int] = (5, 5), points: int = 8, method: str = "nri_uniform",
                t_blocks: int = 1) -> int:
    """Length of an LBP-TOP feature: rows x cols x t_blocks x 3 planes x bins per plane."""
    return int(grid[0]) * int(grid[1]) * int(t_blocks) * 3 * n_bins(points, method)


def _gray(stack) -> np.ndarray:
    """T x H x W uint8 from a grayscale (T x H x W) or RGB (T x H x W x 3) stack.

    uint8 input is used as is; float input in [0, 1] (the torch-view convention) is scaled by
    255, other floats are taken as 0-255 intensities.
    """
    arr = np.asarray(stack)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
        raise ValueError(f"LBP-TOP needs a frame stack T x H x W (gray) or T x H x W x 3 (RGB), got shape {arr.shape}")
    if arr.dtype == np.uint8 and arr.ndim == 3:
        return arr
    x = arr.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("LBP-TOP: the frame stack contains NaN or infinite values")
    if arr.dtype != np.uint8 and x.max(initial=0) <= 1.0:
        x = x * 255.0
    if x.ndim == 4:
        x = x @ np.array([0.299, 0.587, 0.114])
    # skimage recommends integer images: LBP on floats flips on tiny numerical differences.
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def features(stack, *, grid: tuple[int, int] = (5, 5), radius: int = 1, points: int = 8,
             method: str = "nri_uniform", t_blocks: int = 1) -> np.ndarray:
    """The LBP-TOP feature of one clip: length `feature_dim(grid, points, method, t_blocks)`.

    The same circle (`points` neighbours at `radius`) serves all three planes, so time and
    space share one radius (LBP-TOP_{P,P,P,R,R,R}). Border voxels closer than `radius` to an
    edge in x, y or t have incomplete neighbourhoods and are left out. Each histogram is
    normalised to sum to 1. Values in [0, 1] are taken as intensities scaled by 255.
    """
    from skimage.feature import local_binary_pattern

    bins = n_bins(points, method)
    g = _gray(stack)
    t, h, w = g.shape
    r = int(radius)
    rows, cols = int(grid[0]), int(grid[1])
    if r < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    if t < 2 * r + t_blocks:
        raise ValueError(f"LBP-TOP with radius {r} needs at least {2 * r + t_blocks} frames, got {t}")
    if h < 2 * r + rows or w < 2 * r + cols:
        raise ValueError(f"frames of {h}x{w} are too small for a {rows}x{cols} grid at radius {r}")

    def lbp(img):
        return local_binary_pattern(img, points, r, method=method).astype(np.int64)

    xy = np.stack([lbp(g[i]) for i in range(t)])                              # t, y, x
    xt = np.stack([lbp(g[:, y, :]) for y in range(h)]).transpose(1, 0, 2)    # (y, t, x) -> t, y, x
    yt = np.stack([lbp(g[:, :, x]) for x in range(w)]).transpose(1, 2, 0)    # (x, t, y) -> t, y, x
    crop = (slice(r, t - r), slice(r, h - r), slice(r, w - r))
    planes = [p[crop] for p in (xy, xt, yt)]
    t_edges = np.array_split(np.arange(t - 2 * r), t_blocks)
    y_edges = np.array_split(np.arange(h - 2 * r), rows)
    x_edges = np.array_split(np.arange(w - 2 * r), cols)
    out = []
    for ti in t_edges:
        for yi in y_edges:
            for xi in x_edges:
                for p in planes:
                    block = p[ti[0]:ti[-1] + 1, yi[0]:yi[-1] + 1, xi[0]:xi[-1] + 1]
                    hist = np.bincount(block.ravel(), minlength=bins)[:bins].astype(np.float64)
                    out.append(hist / hist.sum())
    return np.concatenate(out)


class LBPTOP:
    """LBP-TOP + linear SVM classifier with a fit/predict API on frame stacks.

    Features are standardised before the SVM (our choice: histogram bins differ in scale by
    orders of magnitude). `seed` fixes the SVM's solver; everything else is deterministic.
    """

    def __init__(self, *, grid: tuple[int, int] = (5, 5), radius: int = 1, points: int = 8,
                 method: str = "nri_uniform", t_blocks: int = 1, C: float = 1.0, seed: int = 0):
        n_bins(points, method)  # validates the method early
        self.params = {"grid": tuple(grid), "radius": radius, "points": points, "method": method, "t_blocks": t_blocks}
        self.C, self.seed = C, seed
        self.classifier = None

    @property
    def dim(self) -> int:
        p = self.params
        return feature_dim(p["grid"], p["points"], p["method"], p["t_blocks"])

    def transform(self, stacks: Iterable) -> np.ndarray:
        """n x dim features of several frame stacks (clips may differ in length and size)."""
        feats = [features(s, **self.params) for s in stacks]
        if not feats:
            raise ValueError("no frame stacks given")
        return np.stack(feats)

    def fit_features(self, x: np.ndarray, y: Sequence) -> "LBPTOP":
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
        if len(set(y.tolist())) < 2:
            raise ValueError(f"LBP-TOP needs at least two classes to train, got {sorted(set(y.tolist()))}")
        self.classifier = make_pipeline(StandardScaler(), LinearSVC(C=self.C, random_state=self.seed, max_iter=20000))
        self.classifier.fit(x, y)
        return self

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        if self.classifier is None:
            raise RuntimeError("LBPTOP: call fit before predict")
        return self.classifier.predict(np.asarray(x, dtype=np.float64))

    def fit(self, stacks: Iterable, y: Sequence) -> "LBPTOP":
        """Train on frame stacks (T x H x W or T x H x W x 3 each) and their labels."""
        return self.fit_features(self.transform(stacks), y)

    def predict(self, stacks: Iterable) -> np.ndarray:
        return self.predict_features(self.transform(stacks))
