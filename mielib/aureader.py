"""The lab's AU readout for arbitrary images: a pixel-based estimator of the 17 AU intensities,
standing in for OpenFace on images that have no hidden truth (GANimation's edits).

Notebook 03 uses it for GANimation's AU-regression check. Like OpenFace's AU regressors it is
linear on HOG features of the face region. It is fitted once per configuration on face-model
renders of identities that neither the lab nor MiE-X uses, and cached under the data folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import au, runtime, store

#: Bump when anything that changes a fitted reader changes (renders, features, fitting); old
#: cache files are then ignored.
VERSION = 1
#: Written into every saved reader so `load` can refuse files that are not ours.
FORMAT = "mielib.aureader/1"

#: face.identity() indices the reader renders. The identity pools (and so MiE-X) use 0 .. 9,999
#: and the lab's subjects 1,000,000 + 100,000 x lab seed + ... (mielib.lab), so no face the reader
#: saw is a MiE-X identity or a lab subject; held-out identities never overlap the training ones.
RESERVED_BASE = 1_000_000_000
HELD_OUT_BASE = 1_500_000_000

#: Share of faces with no AU at all, and each AU's chance to be active in the others: sparse
#: vectors, so that the reader cannot lean on AUs always appearing together.
NEUTRAL_SHARE = 0.1
ACTIVE_P = 0.25
#: AU vectors rendered per identity: preparing an identity costs several renders, so this buys
#: more images per second at some cost in identity variety.
PER_IDENTITY = 8

#: AUs whose geometry the face model draws clearly (brows, mouth corners, jaw, lids): the tests
#: and notebook 03 hold the reader to these.
CLEAR_AUS = (1, 2, 4, 12, 26, 45)

#: The face region (left, top, right, bottom as fractions of the side; the lab's faces are framed
#: with the eyes at 42 % of the height) resampled to FEATURE_SIZE px before HOG, so the cells sit
#: on the same facial parts at every image size.
FACE_BOX = (0.18, 0.2, 0.82, 0.84)
FEATURE_SIZE = 60
#: HOG (Dalal & Triggs) at two scales: (pixels per cell, cells per block), 9 orientations.
HOG_SCALES = ((6, 2), (10, 2))


# ---------------------------------------------------------------------------------------------
# Training renders


def sample_aus(n: int, rng: np.random.Generator) -> np.ndarray:
    """n sparse AU vectors in [0, 1]: NEUTRAL_SHARE all zero, the rest with each AU active with
    probability ACTIVE_P at intensity U(0, 1)."""
    active = rng.random((n, au.N_AUS)) < ACTIVE_P
    z = active * rng.uniform(0.0, 1.0, (n, au.N_AUS))
    z[rng.random(n) < NEUTRAL_SHARE] = 0.0
    return z.astype(np.float32)


def capture(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random capture of a render, as the lab's identity pools vary (mielib.lab): head motion
    (rotation sd 5 deg, shift sd 3 px at 128 px), blur, a light cast and sensor noise."""
    from PIL import Image, ImageFilter

    side = image.shape[0]
    k = side / 128.0
    angle, (dx, dy) = rng.normal(0.0, 5.0), rng.normal(0.0, 3.0 * k, 2)
    blur = rng.uniform(0.0, 1.0) * k
    cast = np.exp(rng.normal(0.0, 0.15, 3) + rng.normal(0.0, 0.15))
    noise = rng.normal(0.0, 1.0, image.shape) * rng.uniform(0.0, 4.0)
    im = Image.fromarray(image).rotate(angle, resample=Image.BILINEAR, translate=(dx, dy),
                                       fillcolor=tuple(int(v) for v in image[0, 0]))
    if blur > 0.1:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    return np.clip(np.asarray(im, np.float32) * cast + noise + 0.5, 0, 255).astype(np.uint8)


def renders(n: int, size: int, seed: int = 0, *, held_out: bool = False,
            per_identity: int = PER_IDENTITY) -> tuple[np.ndarray, np.ndarray]:
    """n face-model renders with capture variations (uint8 n x size x size x 3) of reserved
    identities from both pools, and the AU vectors they show (n x 17). `held_out` draws other
    identities, AU vectors and captures."""
    from . import face

    n, size = _check_int("n", n, 1), _check_size(size)
    per_identity = _check_int("per_identity", per_identity, 1)
    base = HELD_OUT_BASE if held_out else RESERVED_BASE
    rng = np.random.default_rng([_check_int("seed", seed, 0), 7, int(held_out)])
    zs = sample_aus(n, rng)
    people = -(-n // per_identity)
    pools = np.where(rng.random(people) < 0.5, "emotionet", "celeba")
    faces = [face.identity(base + i, pool=str(p)) for i, p in enumerate(pools)]
    # Consecutive rows share an identity, so the face model's per-identity cache is reused.
    clean = face.render_batch([faces[k // per_identity] for k in range(n)], zs, size)
    return np.stack([capture(img, rng) for img in clean]), zs


# ---------------------------------------------------------------------------------------------
# Features


def _check_images(images, where: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(images)
    single = arr.ndim == 3
    arr = arr[None] if single else arr
    if arr.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 RGB images (0..255), got dtype {arr.dtype}; "
                         "convert with (img * 255).round().astype(np.uint8) if they are floats in [0, 1]")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{where}: expected images N x H x W x 3 (RGB) or one H x W x 3, got shape {np.shape(images)}")
    if arr.shape[1] != arr.shape[2]:
        raise ValueError(f"{where}: expected square face crops, got {arr.shape[2]} x {arr.shape[1]} px")
    if arr.shape[1] < 16:
        raise ValueError(f"{where}: images of {arr.shape[1]} px are too small to read AUs from (need >= 16 px)")
    return arr, single


def features(images: np.ndarray) -> np.ndarray:
    """HOG features of the face region of each image (N x D float32); images uint8 N x S x S x 3."""
    from PIL import Image
    from skimage.feature import hog

    arr, _ = _check_images(images, "features")
    out = []
    for img in arr:
        side = img.shape[0]
        box = tuple(b * side for b in FACE_BOX)
        crop = Image.fromarray(img).convert("L").resize((FEATURE_SIZE, FEATURE_SIZE), Image.BILINEAR, box=box)
        grey = np.asarray(crop, np.float32) / 255.0
        out.append(np.concatenate([hog(grey, orientations=9, pixels_per_cell=(c, c), cells_per_block=(b, b),
                                       feature_vector=True) for c, b in HOG_SCALES]))
    return np.asarray(out, np.float32)


# ---------------------------------------------------------------------------------------------
# The reader


@dataclass
class AUReader:
    """A fitted reader: `predict(images)` gives N x 17 AU intensities in [0, 1].

    Ridge regression from HOG features to the 17 intensities. `accuracy` holds per-AU MAE and
    Pearson r on held-out renders (identities, AU vectors and captures it never saw), measured
    when it was fitted.
    """

    weights: np.ndarray    # D x 17
    intercept: np.ndarray  # 17
    config: dict
    accuracy: pd.DataFrame = field(repr=False)
    seconds: float = 0.0   # time spent fitting (0 when loaded from the cache)
    path: Path | None = None

    def __repr__(self) -> str:
        return f"AUReader(size={self.config['size']}, n={self.config['n']}, seed={self.config['seed']})"

    def predict(self, images) -> np.ndarray:
        """AU intensities (N x 17 float32 in [0, 1]) read from uint8 RGB face crops N x S x S x 3,
        or a 17-vector for one H x W x 3 image. Any size from 16 px: the face region is resampled."""
        arr, single = _check_images(images, "predict")
        if len(arr) == 0:
            return np.zeros((0, au.N_AUS), np.float32)
        z = np.clip(features(arr) @ self.weights + self.intercept, 0.0, 1.0).astype(np.float32)
        return z[0] if single else z

    __call__ = predict

    def save(self, path) -> Path:
        """Write weights, config and accuracy as one .npz (no pickles), atomically."""
        store.write_npz(path, format=np.array(FORMAT), config=np.array(json.dumps(self.config)),
                        weights=self.weights, intercept=self.intercept,
                        accuracy=np.array(self.accuracy.to_json(orient="records")))
        return Path(path)


def load(path) -> AUReader:
    """A reader saved by `AUReader.save` (read without pickles)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: AU reader file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["format"]) != FORMAT:
                raise ValueError(f"expected format {FORMAT!r}, found {str(f['format'])!r}")
            config = json.loads(str(f["config"]))
            weights, intercept = f["weights"], f["intercept"]
            accuracy = pd.DataFrame(json.loads(str(f["accuracy"])))
    except Exception as exc:  # truncated, corrupt, another format
        raise ValueError(f"{path}: not a readable mielib AU reader ({exc})") from None
    if weights.ndim != 2 or weights.shape[1] != au.N_AUS or intercept.shape != (au.N_AUS,):
        raise ValueError(f"{path}: AU reader weights have shape {weights.shape}; expected D x {au.N_AUS}")
    return AUReader(weights, intercept, config, accuracy, 0.0, path)


def compare(read: np.ndarray, wanted: np.ndarray) -> pd.DataFrame:
    """Per-AU MAE and Pearson r between two N x 17 arrays (r is NaN where either is constant)."""
    read, wanted = np.asarray(read, np.float64), np.asarray(wanted, np.float64)
    if read.shape != wanted.shape or read.ndim != 2 or read.shape[1] != au.N_AUS:
        raise ValueError(f"compare: expected two N x {au.N_AUS} arrays of the same shape, got {read.shape} and {wanted.shape}")
    rows = []
    for j, label in enumerate(au.LABELS):
        a, b = read[:, j], wanted[:, j]
        rows.append({"AU": label, "mae": float(np.abs(a - b).mean()) if len(a) else math.nan, "r": _r(a, b)})
    return pd.DataFrame(rows)


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 1e-9 and b.std() > 1e-9 else math.nan


def check_edits(read_edited, read_input, requested) -> pd.DataFrame:
    """How close edits come to the requested AUs, judged by reading the images (N x 17 each).

    Per AU and pooled over all AUs ("all"): `r` and `mae` of the edited images' readings against
    the requested AUs, and `mae_unedited`, the same MAE for the unedited inputs (an editor that
    does nothing). Whether the request *steers* the edit is `check_steering`'s question.
    """
    arrays = [np.asarray(a, np.float64) for a in (read_edited, read_input, requested)]
    _same_shapes(arrays, "check_edits")
    edited, unedited, wanted = arrays
    rows = []
    for j, label in [(slice(None), "all")] + list(enumerate(au.LABELS)):
        e, u, w = (x[:, j].ravel() for x in (edited, unedited, wanted))
        rows.append({"AU": label, "r": _r(e, w), "mae": float(np.abs(e - w).mean()),
                     "mae_unedited": float(np.abs(u - w).mean())})
    return pd.DataFrame(rows)


def check_steering(read_a, read_b, requested_a, requested_b) -> pd.DataFrame:
    """Does the requested AU vector steer an edit? Each face is edited twice, with requests a and b.

    `steer` (per AU, and pooled over all AUs as "all") is the Pearson r of
    (reading of edit a - reading of edit b) with (a - b). The input face cancels out, so an editor
    that returns its input, or one that paints every face the same whatever was asked, scores ~0
    (NaN when nothing moved), and only an edit that follows the request scores above 0. We prefer
    it to comparing an edit with its input: an editor that wipes the input out also "moves" the
    reading away from the source AUs, which correlates with (requested - source) by construction.
    """
    arrays = [np.asarray(a, np.float64) for a in (read_a, read_b, requested_a, requested_b)]
    _same_shapes(arrays, "check_steering")
    ra, rb, za, zb = arrays
    moved, asked = ra - rb, za - zb
    rows = [{"AU": label, "steer": _r(moved[:, j].ravel(), asked[:, j].ravel())}
            for j, label in [(slice(None), "all")] + list(enumerate(au.LABELS))]
    return pd.DataFrame(rows)


def _same_shapes(arrays: list[np.ndarray], where: str) -> None:
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2 or arrays[0].shape[1] != au.N_AUS:
        raise ValueError(f"{where}: expected {len(arrays)} N x {au.N_AUS} arrays of one shape, "
                         f"got shapes {[a.shape for a in arrays]}")


def evaluate(reader: AUReader, images, aus) -> pd.DataFrame:
    """Per-AU accuracy (MAE, Pearson r) of `reader` on images whose AUs are known."""
    aus = au.validate(aus, where="evaluate: aus")
    pred = reader.predict(images)
    if aus.shape != pred.shape:
        raise ValueError(f"evaluate: {len(pred)} images need {len(pred)} AU vectors, got shape {aus.shape}")
    return compare(pred, aus)


# ---------------------------------------------------------------------------------------------
# Fitting and the cache


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_size(size) -> int:
    return _check_int("size", size, 16)


def cache_path(config: dict) -> Path:
    return runtime.folder("data") / "aureader" / f"aureader-{store.key(config)}.npz"


def fit(size: int = 64, n: int = 4000, seed: int = 0, *, alpha: float = 30.0, held_out: int = 400,
        cache: bool = True) -> AUReader:
    """Fit a reader on `n` face-model renders at `size` px, or load the cached one.

    Ridge regression (penalty `alpha`) from HOG features to the 17 AU intensities; accuracy is
    measured on `held_out` renders of other identities. Deterministic for a seed. Cached under
    runtime.folder("data")/aureader/, keyed by the configuration (`cache=False` refits and
    writes nothing). The time goes into rendering: about 4000 renders a minute on one core.
    """
    config = {"version": VERSION, "size": _check_size(size), "n": _check_int("n", n, 2),
              "seed": _check_int("seed", seed, 0), "alpha": float(alpha),
              "held_out": _check_int("held_out", held_out, 2), "per_identity": PER_IDENTITY,
              "features": {"box": list(FACE_BOX), "size": FEATURE_SIZE, "hog": [list(s) for s in HOG_SCALES]}}
    if not alpha > 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    path = cache_path(config)
    if cache and path.exists():
        try:
            return load(path)
        except ValueError:
            pass  # unreadable (e.g. cut short by a full disk): fit again and overwrite it
    start = time.perf_counter()
    images, zs = renders(config["n"], config["size"], config["seed"])
    x = features(images).astype(np.float64)
    x_mean, y_mean = x.mean(0), zs.mean(0)
    xc = x - x_mean
    # Ridge in closed form: (X'X + alpha I) W = X'Y on centred data; the intercept is unpenalized.
    weights = np.linalg.solve(xc.T @ xc + config["alpha"] * np.eye(x.shape[1]), xc.T @ (zs - y_mean))
    intercept = y_mean - x_mean @ weights
    reader = AUReader(weights.astype(np.float32), intercept.astype(np.float32), config, pd.DataFrame())
    test_images, test_zs = renders(config["held_out"], config["size"], config["seed"], held_out=True)
    reader.accuracy = evaluate(reader, test_images, test_zs)
    reader.seconds = time.perf_counter() - start
    if cache:
        reader.path = reader.save(path)
    return reader


def load_or_fit(size: int = 64, seed: int = 0, n: int = 4000, **options) -> AUReader:
    """The cached reader for (size, seed, n, options), fitting it first if there is none."""
    return fit(size, n, seed, cache=True, **options)
