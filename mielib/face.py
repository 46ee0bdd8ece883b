"""The AU-controlled face model: identities, the 68-landmark geometry, AU deformation, rendering
and photo warping.

A face is rendered as G(face, z): the identity's neutral texture warped piecewise-affinely by the
AU landmark displacements, with AU wrinkle shading, an eye and mouth interior composited per
frame. The simulated lab, the MiE-X builder (`miex`) and notebooks 00-02 and 04-09 use it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import Delaunay

from . import au
from . import identity as _id

POOLS = _id.POOLS
DEFAULT_SIZE = 128
#: The bundled example photo's landmarks (iBUG 68 points in the 512 x 512 astronaut image).
ASTRONAUT_LANDMARKS = Path(__file__).resolve().parent.parent / "data" / "astronaut_landmarks.csv"


@dataclass(eq=False)
class Face:
    """One identity: procedural (`pool`, `index`, `params`) or a photo (`image`, `points`)."""

    name: str
    pool: str | None = None
    index: int | None = None
    params: dict = field(default_factory=dict, repr=False)
    image: np.ndarray | None = field(default=None, repr=False)
    points: np.ndarray | None = field(default=None, repr=False)
    key: str = field(default="", repr=False)

    @property
    def kind(self) -> str:
        return "photo" if self.image is not None else "procedural"


# ---------------------------------------------------------------------------------------------
# AU displacements, in canonical units (IOD = 1) at intensity 1, as (outward, downward) moves of
# the image-left half and the midline; the image-right half is mirrored. FACS (Ekman, Friesen &
# Hager 2002) gives the directions; magnitudes follow its "E" (maximum) appearance.

_MIRROR = {**{k: 16 - k for k in range(17)}, **{17 + k: 26 - k for k in range(5)},
           31: 35, 32: 34, 36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46,
           48: 54, 49: 53, 50: 52, 55: 59, 56: 58, 60: 64, 61: 63, 65: 67}
_MIRROR.update({v: k for k, v in list(_MIRROR.items())})
for _k in (27, 28, 29, 30, 33, 51, 57, 62, 66, 8):
    _MIRROR[_k] = _k

# Extra mesh points on the skin between the landmarks, placed from each face's own landmarks
# by `_extras` and moved by AUs like the skin around them: two on the midline, the rest on the
# image-left half (the name) and mirrored on the image-right half (the name + "_r").
_EXTRAS_MID = ("forehead_c", "chin_c")
_EXTRAS_SIDE = ("forehead", "forehead_o", "lid", "temple", "noseside", "cheek", "naso", "chin")
# Fixed anchors: the hairline and a ring around the head keep hair, ears and background still.
_HAIRLINE = [(0.0, -1.3), (-0.5, -1.22), (0.5, -1.22), (-0.95, -1.0), (0.95, -1.0)]
_RING = [(1.55 * np.cos(t), 0.25 + 1.95 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 20, endpoint=False)]

_MOVES: dict[int, dict] = {
    1: {21: (0, -0.17), 20: (0, -0.13), 19: (0, -0.075), 18: (0, -0.035), 17: (0, -0.01),
        "forehead_c": (0, -0.07), "forehead": (0, -0.045), "lid": (0, -0.05), 37: (0, -0.01), 38: (0, -0.015)},
    2: {17: (0.01, -0.16), 18: (0.005, -0.14), 19: (0, -0.1), 20: (0, -0.05), 21: (0, -0.015),
        "forehead_o": (0, -0.06), "forehead": (0, -0.04), "lid": (0, -0.05), "temple": (0, -0.02)},
    4: {21: (-0.06, 0.12), 20: (-0.045, 0.1), 19: (-0.03, 0.075), 18: (-0.015, 0.05), 17: (0, 0.03),
        "lid": (0, 0.07), 37: (0, 0.02), 38: (0, 0.025), "forehead_c": (0, 0.03), "forehead": (-0.02, 0.04),
        27: (0, 0.01)},
    5: {37: (0, -0.075), 38: (0, -0.075), "lid": (0, -0.03), 19: (0, -0.01), 20: (0, -0.01)},
    6: {41: (0, -0.045), 40: (0, -0.04), 36: (0, -0.01), "cheek": (0, -0.075), "naso": (0.01, -0.04),
        1: (0, -0.02), 2: (0.01, -0.03), 3: (0.01, -0.03), 17: (0, 0.025), 18: (0, 0.015),
        48: (0.01, -0.02), 49: (0, -0.01), 37: (0, 0.01), 38: (0, 0.01)},
    7: {41: (0, -0.06), 40: (0, -0.055), 37: (0, 0.02), 38: (0, 0.02), 36: (-0.01, 0), "cheek": (0, -0.015)},
    9: {31: (0.01, -0.08), 32: (0, -0.085), 33: (0, -0.08), 30: (0, -0.05), 29: (0, -0.025), 28: (0, -0.01),
        21: (0, 0.05), 20: (0, 0.035), 19: (0, 0.015), 50: (0, -0.04), 51: (0, -0.04), 49: (0, -0.03),
        48: (0, -0.01), 61: (0, -0.03), 62: (0, -0.03), "naso": (0.01, -0.05), "cheek": (0, -0.025),
        41: (0, -0.02), 40: (0, -0.02), "noseside": (0, -0.03), "lid": (0, 0.03)},
    10: {50: (0, -0.11), 51: (0, -0.11), 49: (0, -0.09), 48: (0, -0.03), 61: (0, -0.1), 62: (0, -0.1),
         31: (0.015, -0.03), 32: (0, -0.025), 33: (0, -0.02), "naso": (0.01, -0.06),
         "cheek": (0, -0.02)},
    12: {48: (0.12, -0.15), 49: (0.05, -0.08), 61: (0.04, -0.075), 50: (0.015, -0.03),
         51: (0, -0.015), 62: (0, -0.015), 59: (0.06, -0.08), 67: (0.04, -0.07), 58: (0.015, -0.03),
         57: (0, -0.015), 66: (0, -0.015), "naso": (0.06, -0.08), "cheek": (0.02, -0.06),
         3: (0.02, -0.02), 4: (0.03, -0.03), 5: (0.02, -0.025), 6: (0.01, -0.01),
         41: (0, -0.02), 40: (0, -0.02)},
    14: {48: (-0.06, -0.01), 49: (-0.02, 0), 59: (-0.02, 0), 61: (-0.015, 0),
         67: (-0.015, 0)},
    15: {48: (0.01, 0.1), 59: (0, 0.05), 49: (0, 0.04), 67: (0, 0.04), 61: (0, 0.035),
         58: (0, 0.02), 50: (0, 0.01), 5: (0, 0.01)},
    17: {8: (0, -0.08), 7: (0, -0.075), 6: (0, -0.05), 5: (0, -0.02), "chin_c": (0, -0.09), "chin": (0, -0.07),
         57: (0, -0.09), 58: (0, -0.08), 59: (0, -0.05), 66: (0, -0.045), 67: (0, -0.04),
         62: (0, -0.035), 61: (0, -0.035), 51: (0, -0.035), 50: (0, -0.035), 49: (0, -0.02), 48: (0, 0.02)},
    20: {48: (0.12, 0.02), 49: (0.06, 0.01), 59: (0.06, 0.01), 61: (0.05, 0.01),
         67: (0.05, 0.01), 50: (0.02, 0.005), 58: (0.02, -0.005), 3: (0.02, 0), 4: (0.035, 0.005),
         5: (0.025, 0.005), 6: (0.01, 0), "naso": (0.03, 0)},
    # AU23 also thins both lips towards the lip line; that part scales with each face's lips.
    23: {48: (-0.05, 0), 49: (-0.025, 0), 50: (-0.01, 0), 59: (-0.025, 0), 58: (-0.01, 0),
         61: (-0.02, 0), 67: (-0.02, 0)},
    25: {62: (0, -0.03), 61: (0, -0.025), 66: (0, 0.09), 67: (0, 0.08), 51: (0, -0.03), 50: (0, -0.025),
         49: (0, -0.015), 57: (0, 0.08), 58: (0, 0.075), 59: (0, 0.05), 8: (0, 0.03), 7: (0, 0.03),
         "chin_c": (0, 0.05), "chin": (0, 0.04), 48: (0, 0.005)},
    26: {8: (0, 0.28), 7: (0, 0.26), 6: (-0.01, 0.2), 5: (-0.01, 0.13), 4: (0, 0.07), 3: (0, 0.025),
         "chin_c": (0, 0.27), "chin": (0, 0.25), 57: (0, 0.24), 58: (0, 0.23), 59: (-0.01, 0.17),
         66: (0, 0.24), 67: (0, 0.22), 48: (-0.025, 0.06),
         "naso": (0, 0.02)},
    # AU45's upper-lid travel depends on the eye; the identity-specific part is added per face.
    45: {41: (0, -0.01), 40: (0, -0.01), 17: (0, 0.01), 18: (0, 0.01), 19: (0, 0.01), 20: (0, 0.01), 21: (0, 0.01)},
}
_LID_PAIRS = ((37, 41), (38, 40), (44, 46), (43, 47))  # upper lid point -> the lower lid point below it


_EXTRA_NAMES = list(_EXTRAS_MID) + [n + sfx for n in _EXTRAS_SIDE for sfx in ("", "_r")]
_N_MOVING = 68 + len(_EXTRA_NAMES)


def _extras(L: np.ndarray) -> np.ndarray:
    """Pixel positions of the extra skin points (in `_EXTRA_NAMES` order) from landmarks L."""
    right = L[42:48].mean(0) - L[36:42].mean(0)  # one IOD along the eye line
    down = np.array([-right[1], right[0]])
    pos = {"forehead_c": (L[21] + L[22]) / 2 - 0.45 * down, "chin_c": (L[8] + L[57]) / 2}
    for suffix, sgn, m in (("", -1, lambda j: j), ("_r", 1, lambda j: _MIRROR[j])):
        out = sgn * right
        pos["forehead" + suffix] = L[m(19)] - 0.42 * down
        pos["forehead_o" + suffix] = L[m(17)] - 0.38 * down + 0.03 * out
        pos["lid" + suffix] = (L[m(19)] + (L[m(37)] + L[m(38)]) / 2) / 2
        pos["temple" + suffix] = L[m(17)] + 0.2 * out + 0.04 * down
        pos["noseside" + suffix] = (L[29] + L[m(39)]) / 2 + 0.05 * out
        pos["cheek" + suffix] = L[m(41)] + 0.38 * down
        pos["naso" + suffix] = (L[m(31)] + L[m(48)]) / 2 + 0.1 * out
        pos["chin" + suffix] = (L[m(7)] + L[m(59)]) / 2
    return np.array([pos[n] for n in _EXTRA_NAMES])


def _canonical_moves() -> np.ndarray:
    """(17, 68 + extras, 2) canonical displacements at intensity 1 (the pose-free part)."""
    D = np.zeros((au.N_AUS, _N_MOVING, 2))
    for code, moves in _MOVES.items():
        k = au.CODES.index(code)
        for point, (out, down) in moves.items():
            if isinstance(point, str):
                j = 68 + _EXTRA_NAMES.index(point)
                if point in _EXTRAS_MID:
                    D[k, j] = (0.0, down)
                else:
                    D[k, j] = (-out, down)
                    D[k, 68 + _EXTRA_NAMES.index(point + "_r")] = (out, down)
            else:
                mid = _MIRROR[point] == point
                if mid and out != 0:
                    raise AssertionError(f"AU{code}: midline point {point} cannot move sideways")
                D[k, point] = (0.0 if mid else -out, down)
                if not mid:
                    D[k, _MIRROR[point]] = (out, down)
    # The inner and outer lip corners are one anatomical point (the commissure): moving them
    # together keeps the thin triangles between them from folding over.
    D[:, 60], D[:, 64] = D[:, 48], D[:, 54]
    return D


_CANON = _canonical_moves()
_MEAN_TEMPLATE = _id.landmarks3d(_id.mean_params())[:, :2]


# ---------------------------------------------------------------------------------------------
# Faces


def identity(i: int, pool: str = "emotionet") -> Face:
    """Procedural identity `i` of `pool` ("emotionet" or "celeba"); the same i is the same person."""
    p = _id.sample(i, pool)
    return Face(name=f"{pool}:{int(i)}", pool=pool, index=int(i), params=p, key=f"{pool}:{int(i)}")


def _where(name: str) -> str:
    return f"photo {name!r}"


def _check_landmarks(points, shape: tuple[int, int], name: str) -> np.ndarray:
    """Validate 68 (x, y) landmarks for an image of `shape` (H, W); raise ValueError naming the problem."""
    where = _where(name)
    try:
        arr = np.asarray(points, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: landmarks are not numbers ({exc})") from None
    if arr.shape != (68, 2):
        raise ValueError(f"{where}: expected 68 landmarks as (x, y) rows in the iBUG 68-point layout, "
                         f"got an array of shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: landmark {i} is {tuple(arr[i])} (NaN or infinite); all 68 points are needed")
    h, w = shape
    out = (arr[:, 0] < 0) | (arr[:, 0] > w - 1) | (arr[:, 1] < 0) | (arr[:, 1] > h - 1)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise ValueError(f"{where}: landmark {i} at ({arr[i, 0]:.1f}, {arr[i, 1]:.1f}) lies outside the "
                         f"{w} x {h} image (x in [0, {w - 1}], y in [0, {h - 1}], pixels)")
    right, left = arr[36:42].mean(0), arr[42:48].mean(0)
    iod = float(np.linalg.norm(left - right))
    if iod < 4:
        raise ValueError(f"{where}: degenerate landmarks: the eye centres are {iod:.1f} px apart (need >= 4 px)")
    axis = (left - right) / iod
    if axis[0] < 0.34:  # more than ~70 degrees of roll, or mirrored
        raise ValueError(f"{where}: inverted landmark layout: the right eye (points 36-41) must lie to the "
                         f"image left of the left eye (42-47); are x and y swapped or the points mirrored?")
    down = np.array([-axis[1], axis[0]])
    mid = (left + right) / 2
    depth = lambda idx: float(((arr[idx] - mid) @ down).mean())  # noqa: E731
    order = [("brows (17-26)", list(range(17, 27))), ("eyes (36-47)", list(range(36, 48))),
             ("nose tip (30)", [30]), ("mouth (48-67)", list(range(48, 68))), ("chin (8)", [8])]
    for (n1, i1), (n2, i2) in zip(order, order[1:]):
        if depth(i1) >= depth(i2):
            raise ValueError(f"{where}: inverted landmark layout: the {n1} should lie above the {n2}; "
                             f"is the face upside down or are the points in another order than iBUG-68?")
    if float((arr[16] - arr[0]) @ axis) <= 0 or float((arr[54] - arr[48]) @ axis) <= 0:
        raise ValueError(f"{where}: inverted landmark layout: jaw point 0 / mouth corner 48 must be on the "
                         f"image left of jaw point 16 / mouth corner 54")

    def area(idx):
        q = arr[idx]
        return 0.5 * float(np.sum(q[:, 0] * np.roll(q[:, 1], -1) - np.roll(q[:, 0], -1) * q[:, 1]))

    for label, idx in (("right eye (36-41)", range(36, 42)), ("left eye (42-47)", range(42, 48)),
                       ("outer lip (48-59)", range(48, 60))):
        if abs(area(list(idx))) < 0.002 * iod * iod:
            raise ValueError(f"{where}: degenerate landmarks: the {label} outline encloses no area")
    return arr


def read_landmarks(path) -> np.ndarray:
    """Read a landmark CSV with columns x, y (68 rows, pixels); ValueError names the file and fault."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: landmark file is missing")
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises several parser errors
        raise ValueError(f"{path}: not a readable CSV ({exc})") from None
    cols = {c.strip().lower(): c for c in df.columns}
    if "x" not in cols or "y" not in cols:
        raise ValueError(f"{path}: needs columns 'x' and 'y' (pixels), found {list(df.columns)}")
    if len(df) != 68:
        raise ValueError(f"{path}: needs 68 rows (iBUG 68-point layout), found {len(df)}")
    try:
        return df[[cols["x"], cols["y"]]].to_numpy(dtype=float)
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric landmark values ({exc})") from None


def photo(image: np.ndarray, landmarks: np.ndarray, name: str = "photo") -> Face:
    """A user's photo (H x W x 3 uint8, or grayscale) with its 68 landmarks (pixels) as a Face."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ValueError(f"{_where(name)}: expected an H x W x 3 uint8 image, got {img.dtype} {img.shape}")
    img = np.ascontiguousarray(img[..., :3])
    pts = _check_landmarks(landmarks, img.shape[:2], name)
    digest = hashlib.sha1(img.tobytes() + pts.tobytes()).hexdigest()[:16]
    return Face(name=name, image=img, points=pts, key=f"photo:{name}:{digest}")


def astronaut() -> Face:
    """The bundled example: scikit-image's public-domain astronaut portrait and its landmarks."""
    from skimage import data

    return photo(data.astronaut(), read_landmarks(ASTRONAUT_LANDMARKS), name="astronaut")


# ---------------------------------------------------------------------------------------------
# Geometry at a size


def _photo_crop(face: Face) -> tuple[float, float, float]:
    """(x0, y0, side) of the square crop, in image edge coordinates, that frames the face like
    a procedural one (eye mid-point at EYE_MID, IOD = IOD x side)."""
    pts = face.points
    right, left = pts[36:42].mean(0), pts[42:48].mean(0)
    side = float(np.linalg.norm(left - right)) / _id.IOD
    mid = (left + right) / 2 + 0.5
    return float(mid[0] - _id.EYE_MID[0] * side), float(mid[1] - _id.EYE_MID[1] * side), side


def _base(face: Face, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Neutral landmarks (68, 2) in pixels, the 2 x 2 map from canonical moves to pixels, and
    (procedural faces) the canonical 3-D landmarks."""
    if face.kind == "photo":
        x0, y0, side = _photo_crop(face)
        L = (face.points + 0.5 - (x0, y0)) * (size / side) - 0.5
        right, left = L[36:42].mean(0), L[42:48].mean(0)
        v = left - right  # a similarity: scale by the IOD, rotate by the eye line
        M = np.array([[v[0], -v[1]], [v[1], v[0]]])
        return L, M, None
    centre, A = _id.projection(face.params, size)
    L3 = _id.landmarks3d(face.params)
    return L3 @ A.T + centre, A[:, :2], L3


def _affine(L: np.ndarray) -> np.ndarray:
    """Least-squares affine (3 x 2) from the mean canonical template to landmarks L."""
    X = np.hstack([_MEAN_TEMPLATE, np.ones((68, 1))])
    return np.linalg.lstsq(X, L, rcond=None)[0]


def displacements(face: Face, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(17, 68, 2) landmark displacement of each AU at intensity 1, in pixels at `size`."""
    _check(face, size)
    L, M, _ = _base(face, size)
    return _moves(L, M)[:, :68].copy()


def _moves(L: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(17, 68 + extras, 2) pixel displacements from neutral landmarks L and canonical map M."""
    D = _CANON @ M.T
    k = au.CODES.index(45)
    for up, lo in _LID_PAIRS:  # the upper lid travels to where the lower lid will be
        D[k, up] = L[lo] - L[up] + D[k, lo]
    for n, pair in (("lid", _LID_PAIRS[0]), ("lid_r", _LID_PAIRS[2])):
        D[k, 68 + _EXTRA_NAMES.index(n)] += 0.45 * (L[pair[1]] - L[pair[0]])
    right = L[42:48].mean(0) - L[36:42].mean(0)
    right = right / np.linalg.norm(right)
    down = np.array([-right[1], right[0]])
    k = au.CODES.index(23)
    for outer, inner in (([49, 50, 51, 52, 53], [60, 61, 62, 63, 64]), ([55, 56, 57, 58, 59], [64, 65, 66, 67, 60])):
        u_in, v_in = L[inner] @ right, L[inner] @ down
        order = np.argsort(u_in)
        target = np.interp(L[outer] @ right, u_in[order], v_in[order])
        D[k, outer] += 0.4 * (target - L[outer] @ down)[:, None] * down
    return D


def landmarks(face: Face, z=None, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(68, 2) landmark pixel coordinates at `size` with AU intensities z (None = neutral)."""
    _check(face, size)
    L, M, _ = _base(face, size)
    zz = _z(z, face)
    if not zz.any():
        return L
    return L + np.tensordot(zz.astype(np.float64), _moves(L, M)[:, :68], axes=1)


def _z(z, face: Face | None = None) -> np.ndarray:
    if z is None:
        return np.zeros(au.N_AUS, np.float32)
    where = f"AU vector for {face.name}" if face is not None else "AU vector"
    zz = au.validate(z, where=where)
    if zz.ndim != 1:
        raise ValueError(f"{where}: expected one AU vector of {au.N_AUS} entries, got shape {zz.shape}")
    return zz


# ---------------------------------------------------------------------------------------------
# Per-identity set-up: texture, mesh, shading maps, interiors


class _Rig:
    """Everything `render` needs for one face at one size; built once, kept in an LRU cache."""

    def __init__(self, face: Face, size: int):
        self.size = size
        L, M, L3 = _base(face, size)
        self.L0 = L
        s = float(np.linalg.norm(L[42:48].mean(0) - L[36:42].mean(0)))
        self.s = s
        if face.kind == "photo":
            tex = _photo_texture(face, size)
            self.rgb = tex
            self.noise = None
            self.skin = _skin_mask(tex, L, s)
            self.glasses = None
            self.eyes = []
            self.light = 1.0
            seed = int(face.key.split(":")[-1][:8], 16)
        else:
            t = _id.draw(face.params, size, L3)
            self.rgb, self.skin, self.noise = t.rgb, t.skin, t.noise
            self.glasses = None if t.glasses_a is None else _bbox_layer(t.glasses_rgb, t.glasses_a)
            self.eyes = [_eye_sprite(e, L, idx, s, size) for e, idx in
                         zip(t.eyes, ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)))]
            mc = L[[48, 54, 51, 57]].mean(0)
            self.light = t.light_at(mc[0], mc[1])
            seed = face.params["seed"]
        H = W = size
        pad = np.empty((H + 1, W + 1, 3), np.float32)  # one replicated row/column for bilinear taps
        pad[:H, :W] = self.rgb
        pad[H, :W] = self.rgb[H - 1]
        pad[:, W] = pad[:, W - 1]
        self.chan = [np.ascontiguousarray(pad[..., c]).ravel() for c in range(3)]
        self.M = M
        self.mouth = _mouth_setup(self, L, s, size)
        # Photos already carry their own skin texture and folds: drawn wrinkles are fainter there.
        self.shading_gain = 0.6 if face.kind == "photo" else 1.0
        self.seed = seed
        self._geometry = None
        self._patches: dict[int, list] = {}
        self._mesh = None
        self._neutral = None

    # Mesh and shading maps are built lazily: a neutral frame needs neither.
    def mesh(self) -> "_Mesh":
        if self._mesh is None:
            self._mesh = _Mesh(self.L0, _moves(self.L0, self.M), self.s, self.size)
        return self._mesh

    def shading(self, k: int) -> list:
        """AU k's shading patches (y0, x0, patch), rasterised on first use."""
        patches = self._patches.get(k)
        if patches is None:
            if self._geometry is None:
                self._geometry = _shading_geometry(self.L0, self.s)
            patches = _shading_patches(au.CODES[k], self._geometry, self.skin * self.shading_gain,
                                       self.size, self.seed)
            self._patches[k] = patches
        return patches


def _photo_texture(face: Face, size: int) -> np.ndarray:
    from PIL import Image

    x0, y0, side = _photo_crop(face)
    img = face.image
    h, w = img.shape[:2]
    # Pad with edge pixels where the crop leaves the photo.
    pl, pt = max(0, int(np.ceil(-x0))), max(0, int(np.ceil(-y0)))
    pr, pb = max(0, int(np.ceil(x0 + side - w))), max(0, int(np.ceil(y0 + side - h)))
    if pl or pt or pr or pb:
        img = np.pad(img, ((pt, pb), (pl, pr), (0, 0)), mode="edge")
    box = (x0 + pl, y0 + pt, x0 + pl + side, y0 + pt + side)
    out = Image.fromarray(img).resize((size, size), Image.LANCZOS, box=box, reducing_gap=None)
    return np.asarray(out, np.float32)


def _skin_mask(rgb: np.ndarray, L: np.ndarray, s: float) -> np.ndarray:
    """Where a photo shows skin (0..1): colour close to that of the cheeks and nose. AU shading
    is drawn only near the face, so background of a similar colour does no harm."""
    size = rgb.shape[0]
    samples = []
    for a, b in ((41, 48), (46, 54), (33, 30)):
        c = (L[a] + L[b]) / 2
        x, y = int(np.clip(round(c[0]), 1, size - 2)), int(np.clip(round(c[1]), 1, size - 2))
        samples.append(rgb[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3))
    ref = np.median(np.vstack(samples), axis=0)
    chroma = lambda v: v / (v.sum(-1, keepdims=True) + 1e-3)  # noqa: E731
    dc = np.linalg.norm(chroma(rgb) - chroma(ref), axis=-1)
    dl = np.abs(rgb.mean(-1) - ref.mean()) / (ref.mean() + 1e-3)
    return np.clip(1.5 - dc / 0.03 - dl / 0.5, 0, 1).astype(np.float32)


def _bbox_layer(rgb: np.ndarray, a: np.ndarray):
    ys, xs = np.nonzero(a > 0.002)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return (slice(y0, y1), slice(x0, x1), rgb[y0:y1, x0:x1].copy(), a[y0:y1, x0:x1, None].copy())


class _Mesh:
    """Delaunay mesh over landmarks, extra skin points and fixed anchors, with per-pixel neutral
    triangle ids; a frame finds each pixel's deformed triangle by walking from its neutral one."""

    def __init__(self, L: np.ndarray, D: np.ndarray, s: float, size: int):
        A = _affine(L)
        extras = _extras(L)
        fixed = np.array(_HAIRLINE + [q for q in _RING if q[1] < 1.3])
        fixed = np.hstack([fixed, np.ones((len(fixed), 1))]) @ A
        # Below the jaw a row of fixed points stands for the neck and collar: a dropping jaw
        # squeezes the strip above them (as if sliding over the neck) instead of dragging them.
        right = (L[42:48].mean(0) - L[36:42].mean(0)) / s
        down = np.array([-right[1], right[0]])
        neck = [L[j] + down * 0.4 * s + right * o * s for j, o in ((4, -0.15), (5, -0.1), (6, -0.05), (7, 0), (8, 0),
                                                                    (9, 0), (10, 0.05), (11, 0.1), (12, 0.15))]
        fixed = np.vstack([fixed, neck])
        e = size - 0.5  # border anchors just outside the outermost pixel centres
        ts = np.linspace(-0.5, e, 5)
        border = np.array([(t, -0.5) for t in ts] + [(t, e) for t in ts] + [(-0.5, t) for t in ts[1:-1]]
                          + [(e, t) for t in ts[1:-1]])
        border = border * (1 + 1e-3) - (size / 2 - 0.5) * 1e-3  # a hair outside, so the hull holds every pixel
        # Fixed anchors too close to a moving point (or to the border) would make slivers.
        moving_pts = np.vstack([L, extras])
        dist = np.linalg.norm(fixed[:, None] - np.vstack([moving_pts, border])[None], axis=-1).min(1)
        # The inner lip corners (60, 64) move exactly with the outer ones (48, 54); leaving them
        # out of the mesh avoids sliver triangles that would fold over.
        moving_pts[[60, 64]] = moving_pts[[48, 54]]
        V0 = np.vstack([moving_pts, fixed[dist > 0.12 * s], border])
        self.V0 = V0
        self.D = np.zeros((au.N_AUS, len(V0), 2), np.float64)
        self.D[:, :_N_MOVING] = D
        tri = Delaunay(V0)
        self.simp = tri.simplices.astype(np.int32)
        self.nbr = tri.neighbors.astype(np.int32)
        self.size = size
        self.tid = _rasterize(V0, self.simp, size)
        moving = np.abs(self.D).sum(-1) > 0  # (17, nV)
        tri_moves = moving[:, self.simp].any(-1)  # (17, T)
        # Include the neighbours of moving triangles: edge pixels may carry a neighbour's id.
        nb = np.where(self.nbr >= 0, self.nbr, np.arange(len(self.nbr))[:, None])
        self.tri_moves = tri_moves | tri_moves[:, nb].any(-1)
        self.V0s = V0[self.simp]  # (T, 3, 2) neutral triangle corners


def _rasterize(V: np.ndarray, simp: np.ndarray, size: int) -> np.ndarray:
    """A triangle id for every pixel centre (flat, size*size): PIL fills each triangle with its
    id. Pixels on shared edges may get either neighbour; the per-frame walk corrects that."""
    from PIL import Image, ImageDraw

    img = Image.new("I", (size, size), -1)
    d = ImageDraw.Draw(img)
    for t, tri in enumerate(V[simp].reshape(len(simp), 6).tolist()):
        d.polygon(tri, fill=t)
    tid = np.asarray(img, np.int32).ravel().copy()
    miss = tid < 0
    if miss.any():  # slivers thinner than a pixel: take the nearest assigned pixel's triangle
        from scipy.ndimage import distance_transform_edt

        _, (iy, ix) = distance_transform_edt(miss.reshape(size, size), return_indices=True)
        tid = tid.reshape(size, size)[iy, ix].ravel()
    return tid


def _eye_sprite(e, L, idx, s, size):
    """The open eye (sclera, iris, pupil, catch-light) over a box that any lid position fits in."""
    centre, r, iris, sclera = e
    pts = L[list(idx)]
    x0 = int(np.floor(pts[:, 0].min() - 0.06 * s))
    x1 = int(np.ceil(pts[:, 0].max() + 0.06 * s))
    y0 = int(np.floor(pts[:, 1].min() - 0.14 * s))
    y1 = int(np.ceil(pts[:, 1].max() + 0.1 * s))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size - 1), min(y1, size - 1)
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    corners = pts[[0, 3]]
    ew = abs(corners[1, 0] - corners[0, 0]) / 2 + 1e-3
    cxm = corners[:, 0].mean()
    col = sclera[None, None] * (1 - 0.3 * np.clip((xx - cxm) / ew, -1, 1) ** 2)[..., None]
    d = np.hypot(xx - centre[0], yy - centre[1])
    ring = np.clip((d - 0.72 * r) / (0.28 * r), 0, 1)
    ang = np.arctan2(yy - centre[1], xx - centre[0])
    iris_col = iris[None, None] * (1.15 - 0.55 * ring[..., None]) * (1 + 0.08 * np.sin(ang * 9)[..., None])
    a_iris = np.clip(r - d + 0.5, 0, 1)[..., None]
    col = col * (1 - a_iris) + iris_col * a_iris
    a_pupil = np.clip(0.4 * r - d + 0.5, 0, 1)[..., None]
    col = col * (1 - a_pupil) + np.array([12, 10, 10], np.float32) * a_pupil
    hl = np.hypot(xx - (centre[0] - 0.35 * r), yy - (centre[1] - 0.35 * r))
    a_hl = 0.85 * np.clip(0.2 * r + 0.35 - hl, 0, 1)[..., None]
    col = col * (1 - a_hl) + 250 * a_hl
    return dict(box=(y0, y1 + 1, x0, x1 + 1), rgb=col.astype(np.float32), upper=list(idx[:4]),
                lower=[idx[0], idx[5], idx[4], idx[3]], xs=np.arange(x0, x1 + 1, dtype=np.float64),
                ys=np.arange(y0, y1 + 1, dtype=np.float64))


def _mouth_setup(rig, L, s, size):
    x0 = int(np.floor(min(L[48, 0], L[60, 0]) - 0.25 * s))
    x1 = int(np.ceil(max(L[54, 0], L[64, 0]) + 0.25 * s))
    y0 = int(np.floor(L[[50, 51, 52], 1].min() - 0.2 * s))
    y1 = int(np.ceil(L[[56, 57, 58], 1].max() + 0.4 * s))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size - 1), min(y1, size - 1)
    box = (y0, y1 + 1, x0, x1 + 1)
    xs = np.arange(x0, x1 + 1, dtype=np.float64)
    ys = np.arange(y0, y1 + 1, dtype=np.float64)
    cov0 = _between(L[[60, 61, 62, 63, 64]], L[[60, 67, 66, 65, 64]], xs, ys)[0]
    teeth = _TEETH_RGB
    inside = rig.rgb[y0:y1 + 1, x0:x1 + 1][cov0 > 0.9]
    if len(inside) >= 12:  # a photo with its teeth showing: synthetic teeth take their colour
        bright = inside[inside.sum(1) >= np.percentile(inside.sum(1), 75)]
        teeth = bright.mean(0).astype(np.float32)
    return dict(box=box, xs=xs, ys=ys, cov0=cov0[..., None].astype(np.float32), teeth=teeth)


# ---------------------------------------------------------------------------------------------
# Per-frame pieces


def _curve_y(P: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y of the Catmull-Rom curve through points P (ordered along x) at x; NaN outside its span.

    The same curve `identity.spline` draws, sampled densely and read off by linear interpolation."""
    c = _id.spline(P, 6)
    cx = np.maximum.accumulate(c[:, 0])
    return np.interp(x, cx, c[:, 1], left=np.nan, right=np.nan)


_SUB = np.array([-1 / 3, 0.0, 1 / 3])


def _between(upper: np.ndarray, lower: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Anti-aliased coverage (len(ys), len(xs)) of the region between two x-monotone curves,
    averaged over three sub-columns per pixel; also both curves' y at the pixel centres."""
    xq = (xs[None, :] + _SUB[:, None]).ravel()
    yu = _curve_y(upper, xq)
    yl = _curve_y(lower, xq)
    ok = np.isfinite(yu) & np.isfinite(yl)
    yu = np.where(ok, yu, 0.0)
    yl = np.where(ok, yl, -1.0)
    top = np.maximum(ys[:, None] - 0.5, yu[None, :])
    bot = np.minimum(ys[:, None] + 0.5, yl[None, :])
    cov = np.maximum(bot - top, 0).reshape(len(ys), 3, len(xs)).mean(1)
    n = len(xs)
    return np.minimum(cov, 1), yu[n:2 * n], yl[n:2 * n]


def _composite_eyes(rig: _Rig, V: np.ndarray, frame: np.ndarray) -> None:
    for e in rig.eyes:
        y0, y1, x0, x1 = e["box"]
        cov, yu, _ = _between(V[e["upper"]], V[e["lower"]], e["xs"], e["ys"])
        if not cov.any():
            continue
        d = np.maximum(e["ys"][:, None] - yu[None, :], 0)
        lid = 1 - 0.4 * np.exp(-d / (0.05 * rig.s + 0.3))  # the upper lid shades the eyeball
        c = cov[..., None].astype(np.float32)
        region = frame[y0:y1, x0:x1]
        frame[y0:y1, x0:x1] = region + (e["rgb"] * lid[..., None] - region) * c


def _composite_mouth(rig: _Rig, V: np.ndarray, frame: np.ndarray) -> None:
    m = rig.mouth
    y0, y1, x0, x1 = m["box"]
    xs, ys = m["xs"], m["ys"]
    cov, yu, yl = _between(V[[60, 61, 62, 63, 64]], V[[60, 67, 66, 65, 64]], xs, ys)
    if not cov.any():
        return
    s = rig.s
    yu, yl = yu[None, :], yl[None, :]
    Y = ys[:, None]
    cx = (V[60, 0] + V[64, 0]) / 2
    hw = max((V[64, 0] - V[60, 0]) / 2, 1e-3)
    u2 = np.minimum(((xs[None, :] - cx) / hw) ** 2, 1)
    depth = np.clip(np.minimum(Y - yu, yl - Y) / (0.12 * s + 0.5), 0, 1)
    inside = _MOUTH_RGB * (1 - 0.75 * depth[..., None])
    th = 0.13 * s * np.sqrt(1 - u2)
    a_t = np.clip(yu + th - Y + 0.5, 0, 1) * np.clip(Y - yu + 0.5, 0, 1)
    gaps = 1 - 0.3 * np.exp(-((np.abs(xs[None, :] - cx) % (0.085 * s)) / (0.012 * s + 0.3)) ** 2)
    teeth = m["teeth"] * ((1 - 0.45 * u2) * gaps)[..., None]
    inside += (teeth - inside) * a_t[..., None]
    open_ = np.clip((yl - yu) / (0.25 * s) - 0.4, 0, 1)  # lower teeth show only when wide open
    a_l = np.clip(Y - (yl - 0.06 * s) + 0.5, 0, 1) * (open_ * np.sqrt(1 - u2) * 0.85)
    inside += (teeth * 0.8 - inside) * a_l[..., None]
    inside *= rig.light
    region = frame[y0:y1, x0:x1]
    col = region + (inside - region) * (1 - m["cov0"])  # where a photo's mouth was open, keep its own teeth
    frame[y0:y1, x0:x1] = region + (col - region) * cov[..., None].astype(np.float32)


_MOUTH_RGB = np.array([96, 36, 40], np.float32)
_TEETH_RGB = np.array([232, 226, 210], np.float32)


def _sample(chan: list[np.ndarray], W: int, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Bilinear samples of flat (H+1)*(W+1) channels at float pixel coordinates."""
    x = np.clip(x, 0, W - 1)
    y = np.clip(y, 0, W - 1)
    xi = x.astype(np.int32)
    yi = y.astype(np.int32)
    fx = (x - xi).astype(np.float32)
    fy = (y - yi).astype(np.float32)
    i = yi * (W + 1) + xi
    w00 = (1 - fx) * (1 - fy)
    w01 = fx * (1 - fy)
    w10 = (1 - fx) * fy
    w11 = fx * fy
    j, k, m = i + 1, i + W + 1, i + W + 2
    return [c.take(i) * w00 + c.take(j) * w01 + c.take(k) * w10 + c.take(m) * w11 for c in chan]


def _warp_sources(mesh: _Mesh, V: np.ndarray, pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source (neutral) coordinates of output pixels `pix` (flat ids) under deformed vertices V.

    Exact inverse of the piecewise-affine warp: each pixel walks from its neutral triangle to
    the deformed triangle that contains it (a step or two), then maps back barycentrically."""
    size = mesh.size
    simp = mesh.simp
    a, b, c = V[simp[:, 0]], V[simp[:, 1]], V[simp[:, 2]]
    v0, v1 = b - a, c - a
    det = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    R = np.empty((len(simp), 6), np.float64)  # per triangle: a, then the inverse edge matrix
    R[:, 0], R[:, 1] = a[:, 0], a[:, 1]
    flat = np.abs(det) < 1e-9  # a collapsed triangle contains nothing: push walkers onward
    det = np.where(flat, 1.0, det)
    R[:, 2], R[:, 3] = v1[:, 1] / det, -v1[:, 0] / det
    R[:, 4], R[:, 5] = -v0[:, 1] / det, v0[:, 0] / det
    R[flat] = (1e7, 1e7, 1.0, 0.0, 0.0, 0.0)
    X = (pix % size).astype(np.float64)
    Y = (pix // size).astype(np.float64)
    t = mesh.tid[pix]
    todo = np.arange(len(pix))
    for _ in range(30):
        r = R[t[todo]]
        qx, qy = X[todo] - r[:, 0], Y[todo] - r[:, 1]
        bb = r[:, 2] * qx + r[:, 3] * qy
        gg = r[:, 4] * qx + r[:, 5] * qy
        aa = 1 - bb - gg
        m = np.minimum(np.minimum(aa, bb), gg)
        out = m < -1e-7
        if not out.any():
            break
        todo, aa, bb, m = todo[out], aa[out], bb[out], m[out]
        which = np.where(aa == m, 0, np.where(bb == m, 1, 2))
        nxt = mesh.nbr[t[todo], which]
        step = nxt >= 0  # at the hull (cannot happen inside the image): stay and clamp
        t[todo[step]] = nxt[step]
        todo = todo[step]
        if not len(todo):
            break
    r = R[t]
    qx, qy = X - r[:, 0], Y - r[:, 1]
    bb = np.clip(r[:, 2] * qx + r[:, 3] * qy, 0, 1)
    gg = np.clip(r[:, 4] * qx + r[:, 5] * qy, 0, 1 - bb)
    P = mesh.V0s[t]
    sx = P[:, 0, 0] + bb * (P[:, 1, 0] - P[:, 0, 0]) + gg * (P[:, 2, 0] - P[:, 0, 0])
    sy = P[:, 0, 1] + bb * (P[:, 1, 1] - P[:, 0, 1]) + gg * (P[:, 2, 1] - P[:, 0, 1])
    return sx, sy


def _frame(rig: _Rig, z: np.ndarray) -> np.ndarray:
    """Render one frame (uint8) from a prepared rig and a validated AU vector."""
    act = np.flatnonzero(z)
    if len(act) == 0 and rig._neutral is not None:
        return rig._neutral.copy()
    size = rig.size
    frame = rig.rgb.copy()
    shade = None
    for k in act:
        for (y0, x0, patch) in rig.shading(k):
            if shade is None:
                shade = np.zeros((size, size), np.float32)
            h, w = patch.shape
            shade[y0:y0 + h, x0:x0 + w] += z[k] * patch
    if shade is not None:
        frame *= (1 + shade)[..., None]
    if len(act):
        mesh = rig.mesh()
        V = mesh.V0 + np.tensordot(z[act].astype(np.float64), mesh.D[act], axes=1)
        pix = np.flatnonzero(mesh.tri_moves[act].any(0)[mesh.tid])
        sx, sy = _warp_sources(mesh, V, pix)
        r, g, b = _sample(rig.chan, size, sx, sy)
        flat = frame.reshape(-1, 3)
        if shade is not None:
            sh = 1 + _sample([np.pad(shade, ((0, 1), (0, 1)), mode="edge").ravel()], size, sx, sy)[0]
            r, g, b = r * sh, g * sh, b * sh
        flat[pix, 0], flat[pix, 1], flat[pix, 2] = r, g, b
        Lz = rig.L0 + (V[:68] - mesh.V0[:68])  # (the mesh merges 60/64 into 48/54; L0 keeps them)
    else:
        Lz = rig.L0
    _composite_eyes(rig, Lz, frame)
    _composite_mouth(rig, Lz, frame)
    if rig.glasses is not None:
        ys, xs, g, a = rig.glasses
        frame[ys, xs] = frame[ys, xs] * (1 - a) + g * a
    if rig.noise is not None:
        frame += rig.noise
    out = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    if len(act) == 0:
        rig._neutral = out.copy()
    return out


# ---------------------------------------------------------------------------------------------
# AU appearance: wrinkles, furrows, bulges (multiplicative shading in neutral texture space)


def _shading_geometry(L: np.ndarray, s: float) -> dict:
    """Where each AU's appearance cues go: the multiplicative shading change at intensity 1.

    Lines (wrinkles, furrows, folds) are polylines with a Gaussian cross-section; bulges are
    Gaussian blobs. Everything is placed relative to the neutral landmarks, so it follows the
    face's pose and proportions; `_shading_patches` rasterises one AU's marks when first used.
    """
    eye_r, eye_l = L[36:42].mean(0), L[42:48].mean(0)
    right = (eye_l - eye_r) / (np.linalg.norm(eye_l - eye_r) + 1e-9)  # image-right along the eye line
    up = np.array([right[1], -right[0]])
    w = max(0.018 * s, 0.45)
    lines: dict[int, list] = {c: [] for c in au.CODES}  # code -> [(points (k, 2), amp, width)]
    blobs: dict[int, list] = {c: [] for c in au.CODES}  # code -> [(centre, sigma, amp)]

    def line(code, pts, amp, width=w):
        lines[code].append((np.asarray(pts, float).reshape(-1, 2), amp, width))

    brow = L[17:27]
    # AU1: horizontal lines over the centre of the forehead; AU2: over the outer forehead.
    for k in range(3):
        off = (0.2 + 0.11 * k) * s
        line(1, [brow[3] + up * off, (brow[4] + brow[5]) / 2 + up * (off + 0.02 * s), brow[6] + up * off], -0.42 + 0.06 * k)
        for side in ((brow[0], brow[1], brow[2]), (brow[9], brow[8], brow[7])):
            line(2, [q + up * (off - 0.02 * s) for q in side], -0.36 + 0.06 * k)
    # AU4: vertical furrows between the brows, a crease at the nasal root, shadow under the brows.
    mid = (L[21] + L[22]) / 2
    for dx in (-0.07, 0.07):
        a = mid + right * dx * s + up * 0.12 * s
        line(4, [a, a - up * 0.24 * s], -0.45, 1.2 * w)
    line(4, [L[27] - right * 0.08 * s + up * 0.02 * s, L[27] + right * 0.08 * s + up * 0.02 * s], -0.25, 1.2 * w)
    for j in (19, 24):
        blobs[4].append((L[j] - up * 0.1 * s, 0.09 * s, -0.15))
    for corner, sgn, lo in ((L[36], -1, (L[41] + L[40]) / 2), (L[45], 1, (L[46] + L[47]) / 2)):
        # AU6: crow's feet, the furrow under the lower lid and the raised cheek.
        start = corner + right * sgn * 0.05 * s
        for ang in (-28, 0, 28):
            t = np.radians(ang)
            d = right * sgn * np.cos(t) + up * np.sin(t)
            line(6, [start, start + d * 0.08 * s], -0.32, 1.2 * w)
            line(6, [start + d * 0.08 * s, start + d * 0.16 * s], -0.16, 1.2 * w)
        line(6, [lo + right * x * s - up * (0.11 + 0.02 * (1 - (x / 0.16) ** 2)) * s for x in (-0.16, 0, 0.16)],
             -0.3, 1.4 * w)
        blobs[6].append((lo - up * 0.3 * s + right * sgn * 0.08 * s, 0.12 * s, 0.12))
        # AU7: a bulge line just below the tightened lower lid.
        line(7, [lo + right * x * s - up * 0.05 * s for x in (-0.12, 0, 0.12)], -0.22)
    # AU9: wrinkles across the nose bridge, deepest at its sides.
    for k in range(3):
        c = L[27] + (L[28] - L[27]) * (0.2 + 0.4 * k)
        for sgn in (-1, 1):
            line(9, [c + right * sgn * 0.02 * s, c + right * sgn * 0.11 * s + up * 0.03 * s], -0.45, 1.2 * w)
    for al, cor, sgn in ((31, 48, -1), (35, 54, 1)):
        # AU10 / AU12: the nasolabial fold deepens; AU12 also lifts a highlight on the cheek.
        top = L[al] + right * sgn * 0.07 * s + up * 0.03 * s
        midp = L[cor] + right * sgn * 0.08 * s + up * 0.12 * s
        line(10, [top, midp], -0.4, 1.4 * w)
        line(12, [top, midp, L[cor] + right * sgn * 0.11 * s - up * 0.02 * s], -0.4, 1.4 * w)
        blobs[12].append((L[cor] + right * sgn * 0.25 * s + up * 0.35 * s, 0.13 * s, 0.12))
        # AU14: a dimple beside the corner; AU15: a fold down from it; AU20: a corner crease.
        blobs[14].append((L[cor] + right * sgn * 0.09 * s - up * 0.01 * s, 0.03 * s + 0.3, -0.22))
        line(14, [L[cor] + right * sgn * 0.08 * s + up * 0.05 * s, L[cor] + right * sgn * 0.09 * s - up * 0.06 * s],
             -0.3, 1.2 * w)
        line(15, [L[cor] + right * sgn * 0.03 * s, L[cor] + right * sgn * 0.07 * s - up * 0.17 * s], -0.3)
        line(20, [L[cor] + right * sgn * 0.05 * s, L[cor] + right * sgn * 0.14 * s + up * 0.01 * s], -0.25)
    # AU17: the mentolabial furrow deepens (the dimpled chin texture is added below).
    chin_top = L[57] + (L[8] - L[57]) * 0.28
    line(17, [chin_top - right * 0.17 * s, chin_top, chin_top + right * 0.17 * s], -0.38, 1.3 * w)
    # AU23: fine vertical lines above the tightened upper lip.
    for x in (-0.18, -0.08, 0.08, 0.18):
        b0 = L[51] + right * x * s + up * 0.03 * s
        line(23, [b0, b0 + up * 0.08 * s], -0.25)

    # Group each AU's marks by side of the face, so each patch covers a compact box.
    centre = (eye_r + eye_l) / 2
    groups: dict[int, list] = {}
    for code in au.CODES:
        parts: dict[int, tuple[list, list]] = {}
        for item in lines[code]:
            side = int(np.sign(round(float((item[0].mean(0) - centre) @ right) / (0.25 * s))))
            parts.setdefault(side, ([], []))[0].append(item)
        for item in blobs[code]:
            side = int(np.sign(round(float((np.asarray(item[0]) - centre) @ right) / (0.25 * s))))
            parts.setdefault(side, ([], []))[1].append(item)
        groups[code] = list(parts.values())
    chin = L[57] + (L[8] - L[57]) * 0.62
    groups[17].append(([], [], chin))  # the dimpled chin texture, made in _shading_patches
    return {"groups": groups, "w": w, "s": s}


def _shading_patches(code: int, geom: dict, skin: np.ndarray, size: int, seed: int) -> list:
    """The (y0, x0, patch) list of one AU from its marks (see `_shading_geometry`)."""
    out = []
    s, w = geom["s"], geom["w"]
    for group in geom["groups"][code]:
        lines, blobs = group[0], group[1]
        chin = group[2] if len(group) > 2 else None
        pts = [q for q, _, _ in lines] + [np.asarray(c)[None] for c, _, _ in blobs]
        margin = 3 * max([wd for _, _, wd in lines] + [sg for _, sg, _ in blobs] + [w])
        if chin is not None:
            pts.append(chin[None])
            margin = max(margin, 0.25 * s)
        P = np.vstack(pts)
        y0 = int(min(max(np.floor(P[:, 1].min() - margin), 0), size))
        y1 = int(min(max(np.ceil(P[:, 1].max() + margin) + 1, 0), size))
        x0 = int(min(max(np.floor(P[:, 0].min() - margin), 0), size))
        x1 = int(min(max(np.ceil(P[:, 0].max() + margin) + 1, 0), size))
        if y1 <= y0 or x1 <= x0:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        field = np.zeros((y1 - y0, x1 - x0), np.float32)
        for q, amp, wd in lines:
            a, ab = q[:-1, :, None, None], (q[1:] - q[:-1])[:, :, None, None]
            den = (ab ** 2).sum(1) + 1e-9
            t = np.clip(((xx - a[:, 0]) * ab[:, 0] + (yy - a[:, 1]) * ab[:, 1]) / den, 0, 1)
            d2 = ((xx - a[:, 0] - t * ab[:, 0]) ** 2 + (yy - a[:, 1] - t * ab[:, 1]) ** 2).min(0)
            field += amp * np.exp(-d2 / (wd * wd))
        for c, sg, amp in blobs:
            field += amp * np.exp(-0.5 * ((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (sg * sg))
        if chin is not None:  # mentalis dimpling: smooth random bumps ~0.05 IOD across
            from PIL import Image

            k = max(2, int(round((x1 - x0) / (0.05 * s + 1))))
            bumps = np.random.default_rng([seed, code]).normal(0, 1, (k, k)).astype(np.float32)
            bumps = np.asarray(Image.fromarray(bumps, "F").resize((x1 - x0, y1 - y0), Image.BICUBIC))
            win = np.exp(-0.5 * ((xx - chin[0]) ** 2 + (yy - chin[1]) ** 2) / (0.11 * s) ** 2)
            field += win * (0.08 - 0.2 * np.clip(bumps, -1.5, 1.5))
        out.append((y0, x0, field * skin[y0:y1, x0:x1]))
    return out


# ---------------------------------------------------------------------------------------------
# Rendering API

_CACHE: "OrderedDict[tuple[str, int], _Rig]" = OrderedDict()
# About 1 MB per face at 128 px and four times that at twice the size: the cache holds at most
# 64 faces and at most as many pixels as 64 faces at 128 px (about 64 MB).
_CACHE_SIZE = 64
_CACHE_PIXELS = 64 * 128 * 128


def clear_cache() -> None:
    """Forget every prepared identity (textures, meshes)."""
    _CACHE.clear()


def _check(face, size) -> None:
    if not isinstance(face, Face):
        raise TypeError(f"expected a face.Face (from face.identity/photo/astronaut), got {type(face).__name__}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 16 <= size <= 1024:
        raise ValueError(f"size must be an integer number of pixels in [16, 1024], got {size!r}")


def _rig(face: Face, size: int) -> _Rig:
    _check(face, size)
    key = (face.key, int(size))
    rig = _CACHE.get(key)
    if rig is None:
        rig = _Rig(face, int(size))
        _CACHE[key] = rig
        while len(_CACHE) > 1 and (len(_CACHE) > _CACHE_SIZE
                                   or sum(k[1] ** 2 for k in _CACHE) > _CACHE_PIXELS):
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return rig


def render(face: Face, z=None, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of `face` with AU intensities z (17 values in [0, 1]; None = neutral)."""
    zz = _z(z, face if isinstance(face, Face) else None)
    return _frame(_rig(face, size), zz)


def render_batch(faces, zs, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(N, size, size, 3) uint8: row n renders faces[n] (or one face for all) with zs[n]."""
    Z = au.validate(zs, where="AU batch")
    if Z.ndim != 2:
        raise ValueError(f"AU batch: expected an (N, {au.N_AUS}) array, got shape {Z.shape}")
    if isinstance(faces, Face):
        faces = [faces] * len(Z)
    faces = list(faces)
    if len(faces) != len(Z):
        raise ValueError(f"render_batch: {len(faces)} faces but {len(Z)} AU vectors")
    out = np.empty((len(Z), size, size, 3), np.uint8)
    for n, (f, z) in enumerate(zip(faces, Z)):
        out[n] = _frame(_rig(f, size), z)
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_au(text: str) -> tuple[int, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--au {text!r}: write AU=VALUE, e.g. --au AU12=0.3")
    k = au.index(name)
    try:
        v = float(value)
    except ValueError:
        raise ValueError(f"--au {text!r}: {value!r} is not a number") from None
    return k, v


#: `render --out` suffixes and the format each writes (JPEG is lossy: fine for a look, not for data).
_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                  ".webp": "WEBP"}


def cli(argv: list[str]) -> int:
    """`python -m mielib render`: write one face with chosen AU intensities to a PNG."""
    ap = argparse.ArgumentParser(
        prog="python -m mielib render",
        description="Render a face from mielib's AU-controlled face model to an image file. "
                    "AU intensities are on the 0..1 scale (OpenFace's 0..5 divided by 5).")
    ap.add_argument("--identity", type=int, default=0, help="procedural identity index (default 0)")
    ap.add_argument("--pool", default="emotionet", choices=POOLS, help="identity pool (default emotionet)")
    ap.add_argument("--photo", help="'astronaut' for the bundled photo, or an image file (needs --landmarks)")
    ap.add_argument("--landmarks", help="CSV with columns x,y: the photo's 68 landmarks in pixels")
    ap.add_argument("--au", action="append", default=[], metavar="AU=VALUE",
                    help="an AU intensity, e.g. --au AU12=0.3 (repeatable); AUs: " + " ".join(au.LABELS))
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="output side in pixels (default 128)")
    ap.add_argument("--out", default="face.png",
                    help="output image; its suffix names the format: .png (default face.png), .jpg, .bmp, .tif, .webp")
    args = ap.parse_args(argv)
    try:
        z = np.zeros(au.N_AUS)
        given: dict[int, str] = {}
        for text in args.au:
            k, v = _parse_au(text)
            if k in given:  # the last would silently win: the user meant one value
                raise ValueError(f"--au {text}: {au.LABELS[k]} is already set by --au {given[k]}; give each AU once")
            given[k] = text
            z[k] = v
        fmt = _IMAGE_FORMATS.get(Path(args.out).suffix.lower())
        if fmt is None:
            raise ValueError(f"--out {args.out}: write a .png, .jpg/.jpeg, .bmp, .tif/.tiff or .webp file "
                             "(the suffix names the format)")
        z = au.validate(z, where="--au values")
        if args.photo:
            if args.photo.strip().lower() == "astronaut" and not args.landmarks:
                f = astronaut()
            else:
                if not args.landmarks:
                    raise ValueError(f"--photo {args.photo}: also give --landmarks CSV (68 rows of x,y)")
                from .clip import read_image

                f = photo(read_image(Path(args.photo)), read_landmarks(args.landmarks), name=str(args.photo))
        else:
            f = identity(args.identity, args.pool)
        img = render(f, z, args.size)
    except ValueError as exc:  # includes clip.FrameError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from PIL import Image

    out = Path(args.out)
    try:
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(out, format=fmt)
    except OSError as exc:
        print(f"error: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({f.name}, {au.describe(z)}, {args.size} px)")
    return 0
