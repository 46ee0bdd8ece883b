"""Procedural identities for the face model: seeded parameters, 3-D landmark geometry and the
neutral-face texture.

`mielib.face` is the public entry point (`face.identity(i, pool)`); this module only knows how a
person looks at rest. Notebooks 00, 02 and 07-09 (identity pools, MiE-X grids, scaling in
identities) use it through `face`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

#: The two identity pools. "emotionet" imitates in-the-wild photos (all ages, skin tones, poses,
#: lighting and cluttered backgrounds); "celeba" a celebrity-portrait pool (younger, frontal,
#: made-up, studio backgrounds, bright soft light).
POOLS: tuple[str, ...] = ("emotionet", "celeba")
_POOL_SEED = {"emotionet": 0x5EED0E, "celeba": 0xCE1EBA}

#: Eye mid-point of an average face in unit image coordinates and the inter-ocular distance
#: (IOD) as a fraction of the image side; photos are cropped to the same framing.
EYE_MID = (0.5, 0.42)
IOD = 0.27

_SKIN = np.array([(244, 216, 198), (236, 200, 176), (226, 180, 150), (200, 150, 114),
                  (162, 114, 82), (122, 82, 58), (84, 56, 42)], float)
_HAIR = {"black": (24, 20, 19), "dark brown": (52, 36, 27), "brown": (92, 63, 41),
         "light brown": (138, 102, 68), "dark blonde": (168, 134, 86), "blonde": (212, 182, 128),
         "auburn": (135, 60, 30), "grey": (150, 147, 143), "white": (214, 211, 204)}
_IRIS = [(58, 37, 24), (98, 64, 36), (118, 98, 56), (84, 108, 70), (78, 114, 158), (108, 118, 128)]
_LIPSTICK = [(165, 24, 40), (198, 88, 118), (118, 30, 60), (186, 118, 104), (214, 98, 80)]


# ---------------------------------------------------------------------------------------------
# Parameters


def _cl(v: float, lo: float, hi: float) -> float:
    return float(min(max(v, lo), hi))


def sample(index: int, pool: str = "emotionet") -> dict:
    """The parameters of identity `index` in `pool` (deterministic: same index, same person)."""
    if pool not in POOLS:
        raise ValueError(f"unknown identity pool {pool!r}; choose one of {', '.join(POOLS)}")
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
        raise ValueError(f"identity index must be a non-negative integer, got {index!r}")
    rng = np.random.default_rng([_POOL_SEED[pool], int(index)])
    wild = pool == "emotionet"
    u = rng.uniform
    p: dict = {"pool": pool, "index": int(index), "seed": int(rng.integers(2**31))}

    # Who: age, sex cues, skin. CelebA is younger and lighter-skinned on average than EmotioNet.
    if wild:
        p["age"] = float(rng.choice([u(8, 17), u(18, 50), u(50, 82)], p=[0.14, 0.6, 0.26]))
        p["skin"] = float(u(0, 1))
    else:
        p["age"] = _cl(rng.normal(29, 7), 17, 58)
        p["skin"] = float(rng.beta(1.3, 3.2))
    male = bool(rng.random() < 0.5)
    p["masc"] = _cl((0.78 if male else 0.22) + rng.normal(0, 0.12), 0, 1)
    if p["age"] < 14:
        p["masc"] = 0.5 + 0.5 * (p["masc"] - 0.5)
    old = _cl((p["age"] - 35) / 45, 0, 1)
    p["old"] = old
    p["warm"] = float(u(-1, 1))

    # Face shape and proportions (IOD units).
    m = p["masc"]
    p["fw"] = _cl(rng.normal(1.0 + 0.04 * m, 0.055), 0.86, 1.16)
    p["fl"] = _cl(rng.normal(0.98 + 0.05 * m, 0.05), 0.86, 1.14)
    p["jaw_n"] = float(u(2.0, 2.6) + 0.7 * m * rng.random())
    p["taper"] = float(u(0.08, 0.32) - 0.08 * m)
    p["cheek"] = float(rng.normal(0.0, 0.04) + 0.02 * old)
    p["jaw_top"] = float(u(-0.04, 0.08))
    p["eye_w"] = _cl(rng.normal(1.0, 0.06), 0.86, 1.16)
    p["eye_h"] = _cl(rng.normal(1.0 - 0.12 * old, 0.13), 0.65, 1.35)
    p["eye_tilt"] = float(rng.normal(0.015, 0.022))
    p["brow_h"] = _cl(rng.normal(0.36 - 0.03 * m, 0.04), 0.26, 0.48)
    p["brow_arch"] = _cl(rng.normal(0.07 - 0.025 * m, 0.025), 0.0, 0.14)
    p["brow_tilt"] = float(rng.normal(0.02, 0.035))
    p["brow_thick"] = _cl(rng.normal(0.075 + 0.03 * m, 0.015), 0.04, 0.13)
    p["brow_len"] = float(u(0.92, 1.06))
    p["brow_dens"] = float(u(0.55, 0.95))
    p["nose_l"] = _cl(rng.normal(1.0 + 0.04 * m + 0.05 * old, 0.06), 0.85, 1.2)
    p["nose_w"] = _cl(rng.normal(0.205 + 0.025 * p["skin"] + 0.01 * m, 0.025), 0.15, 0.3)
    p["mouth_y"] = float(rng.normal(0.0, 0.035))
    p["mouth_w"] = _cl(rng.normal(0.4, 0.035), 0.31, 0.5)
    p["lip_up"] = _cl(rng.normal(0.095 - 0.02 * m - 0.025 * old, 0.02), 0.045, 0.16)
    p["lip_lo"] = _cl(rng.normal(0.13 - 0.015 * m - 0.025 * old, 0.022), 0.07, 0.2)
    p["bow"] = float(u(0.012, 0.04))
    p["lip_gap"] = float(u(0.014, 0.035))
    p["corner"] = float(rng.normal(0.0, 0.012) + 0.012 * old)

    # Colours.
    t = p["skin"] * (len(_SKIN) - 1)
    i0 = min(int(t), len(_SKIN) - 2)
    skin = _SKIN[i0] * (1 - (t - i0)) + _SKIN[i0 + 1] * (t - i0)
    skin = skin * np.array([1 + 0.035 * p["warm"], 1.0, 1 - 0.07 * p["warm"]]) * u(0.96, 1.04)
    p["skin_rgb"] = tuple(float(c) for c in np.clip(skin, 0, 255))
    names = list(_HAIR)
    dark = p["skin"] > 0.45
    w = np.array([6, 5, 3, 1.5, 0.7, 0.6, 0.5, 0, 0]) if dark else np.array([2, 3, 3, 2.5, 1.6, 1.5, 0.9, 0, 0])
    w[7] = 6 * old ** 1.5
    w[8] = 3 * max(old - 0.5, 0) * 2
    hair = np.array(_HAIR[names[rng.choice(len(names), p=w / w.sum())]]) * u(0.88, 1.12)
    p["hair_rgb"] = tuple(float(c) for c in np.clip(hair, 0, 255))
    brow = hair * (0.75 if hair.mean() > 120 else 0.9)
    if hair.mean() > 140:  # grey/blonde people often keep darker brows
        brow = brow * u(0.55, 0.9)
    p["brow_rgb"] = tuple(float(c) for c in brow)
    wi = np.array([6, 4, 1.2, 0.8, 0.8, 0.6]) if dark else np.array([2, 2.5, 1.5, 1.2, 2, 1])
    p["iris_rgb"] = tuple(float(c) for c in np.array(_IRIS[rng.choice(6, p=wi / wi.sum())]) * u(0.85, 1.15))
    lip = skin * 0.62 + np.array([150, 60, 70]) * 0.38
    lip = lip * (0.86 - 0.12 * p["skin"]) + np.array([10, 0, 12]) * p["skin"]
    p["lip_rgb"] = tuple(float(c) for c in np.clip(lip * u(0.92, 1.08), 0, 255))

    # Makeup and facial hair depend on sex cues and on the pool.
    fem = m < 0.5 and p["age"] >= 15
    p["lipstick"] = float(u(0.35, 0.85)) if fem and rng.random() < (0.8 if not wild else 0.3) else 0.0
    p["lipstick_rgb"] = _LIPSTICK[int(rng.integers(len(_LIPSTICK)))]
    p["liner"] = float(u(0.3, 1.0)) if fem and rng.random() < (0.6 if not wild else 0.2) else 0.0
    p["shadow"] = float(u(0.15, 0.45)) if fem and rng.random() < (0.45 if not wild else 0.12) else 0.0
    p["shadow_rgb"] = tuple(float(c) for c in rng.uniform(60, 200, 3))
    p["blush"] = float(u(0.0, 0.35) + (0.25 if fem and not wild else 0.0))
    beard_p = (0.42 if wild else 0.15) if (m > 0.5 and p["age"] >= 18) else 0.0
    p["beard"] = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.2, 0.35, 0.1])) if rng.random() < beard_p else 0
    p["beard_alpha"] = float(u(0.5, 0.95))

    # Hair style: 0 short, 1 medium, 2 long, 3 bald/receding, 4 bun, 5 buzz.
    if m > 0.5:
        sw = [5, 1.5, 0.6, (2.5 if wild else 0.8) * old + 0.1, 0.1, 1.5]
    else:
        sw = [1.2, 3, 4.5 if not wild else 3, 0.05, 1.3, 0.2]
    sw = np.array(sw)
    p["hair_style"] = int(rng.choice(6, p=sw / sw.sum()))
    p["hair_vol"] = float(u(0.04, 0.22) if p["hair_style"] != 5 else u(0.01, 0.03))
    p["hairline"] = float(u(1.08, 1.3) + (0.3 * old if m > 0.5 else 0.0))
    p["fringe"] = int(rng.choice(3, p=[0.55, 0.25, 0.2] if p["hair_style"] in (0, 1, 2) else [1, 0, 0]))
    p["fringe_side"] = float(rng.choice([-1.0, 1.0]))
    p["hair_len"] = float(u(2.3, 3.2) if p["hair_style"] == 2 else u(0.9, 1.5))

    # Accessories and clothing.
    p["glasses"] = int(rng.choice([1, 2])) if rng.random() < (0.2 if wild else 0.07) else 0
    p["frame_rgb"] = tuple(float(c) for c in rng.choice([(20, 20, 22), (70, 45, 30), (150, 150, 155), (170, 140, 70)]))
    p["frame_w"] = float(u(0.02, 0.05))
    p["lens_tint"] = float(u(0.04, 0.16))
    p["cloth_rgb"] = tuple(float(c) for c in rng.uniform(20, 235, 3))

    # Pose, framing, light and background: broad in the wild, narrow in the studio.
    if wild:
        p["yaw"] = _cl(rng.normal(0, 11), -24, 24)
        p["pitch"] = _cl(rng.normal(0, 6), -13, 13)
        p["roll"] = _cl(rng.normal(0, 5), -13, 13)
        p["iod"] = float(u(0.235, 0.3))
        p["cx"] = float(EYE_MID[0] + u(-0.035, 0.035))
        p["cy"] = float(EYE_MID[1] + u(-0.035, 0.03))
        p["light_az"] = float(u(-110, 110))  # from above or the side, rarely from below
        p["light_el"] = float(u(25, 70))
        p["light_k"] = float(u(0.35, 0.85))
        p["ambient"] = float(u(0.3, 0.7))
        p["exposure"] = float(u(0.72, 1.15))
        p["tint"] = tuple(float(c) for c in 1 + rng.normal(0, 0.06, 3))
        p["noise"] = float(u(1.0, 5.0))
        p["bg_kind"] = int(rng.choice([0, 1, 2], p=[0.15, 0.45, 0.4]))
    else:
        p["yaw"] = _cl(rng.normal(0, 4.5), -11, 11)
        p["pitch"] = _cl(rng.normal(0, 3.5), -8, 8)
        p["roll"] = _cl(rng.normal(0, 3), -7, 7)
        p["iod"] = float(u(0.255, 0.285))
        p["cx"] = float(EYE_MID[0] + u(-0.01, 0.01))
        p["cy"] = float(EYE_MID[1] + u(-0.01, 0.01))
        p["light_az"] = float(rng.normal(0, 35))
        p["light_el"] = float(u(55, 80))
        p["light_k"] = float(u(0.2, 0.45))
        p["ambient"] = float(u(0.62, 0.82))
        p["exposure"] = float(u(0.98, 1.1))
        p["tint"] = tuple(float(c) for c in 1 + rng.normal(0, 0.02, 3))
        p["noise"] = float(u(0.3, 1.5))
        p["bg_kind"] = 0
    p["spec"] = float(u(0.0, 0.18))
    if wild:  # a blurred scene: walls, foliage, sky, furniture in muted colours
        c1 = np.array(_SCENES[int(rng.integers(len(_SCENES)))]) * u(0.65, 1.15) + rng.normal(0, 12, 3)
        c2 = np.array(_SCENES[int(rng.integers(len(_SCENES)))]) * u(0.65, 1.15) + rng.normal(0, 12, 3)
    else:  # studio backdrops
        base = np.array([(205, 205, 208), (60, 62, 70), (120, 140, 170), (215, 200, 180), (140, 140, 140),
                         (30, 30, 34), (170, 190, 205), (95, 110, 100)][int(rng.integers(8))])
        c1, c2 = base * u(0.85, 1.1), base * u(0.6, 1.0)
    p["bg_rgb"] = tuple(float(c) for c in np.clip(c1, 0, 255))
    p["bg2_rgb"] = tuple(float(c) for c in np.clip(c2, 0, 255))
    return p


def mean_params() -> dict:
    """Shape parameters of an average face (the template that photos' extra mesh points use)."""
    return {"fw": 1.0, "fl": 1.0, "jaw_n": 2.4, "taper": 0.2, "cheek": 0.0, "jaw_top": 0.02, "eye_w": 1.0,
            "eye_h": 1.0, "eye_tilt": 0.015, "brow_h": 0.36, "brow_arch": 0.06, "brow_tilt": 0.02,
            "brow_len": 1.0, "nose_l": 1.0, "nose_w": 0.21, "mouth_y": 0.0, "mouth_w": 0.4, "lip_up": 0.09,
            "lip_lo": 0.125, "bow": 0.025, "lip_gap": 0.02, "corner": 0.0}


# ---------------------------------------------------------------------------------------------
# Geometry (canonical units: IOD = 1, origin between the eye centres, x right, y down, z to camera)


def landmarks3d(p: dict) -> np.ndarray:
    """The 68 landmarks (iBUG order) of a neutral face in canonical 3-D units, before pose."""
    L = np.zeros((68, 3))
    a, b, n = 1.02 * p["fw"], 1.62 * p["fl"], p["jaw_n"]
    top = p["jaw_top"]
    frac = np.array([0.0, 0.21, 0.38, 0.54, 0.69, 0.82, 0.92, 0.98, 1.0])
    xs = a * (1 - frac ** n) ** (1 / n) * (1 - p["taper"] * frac ** 2) * (1 + p["cheek"] * np.sin(np.pi * frac))
    ys = top + (b - top) * frac
    zs = -0.85 * (1 - frac) ** 0.7 + 0.05 * frac
    for k in range(9):
        L[k] = (-xs[k], ys[k], zs[k])
        L[16 - k] = (xs[k], ys[k], zs[k])
    # Brows, inner (s = 0) to outer (s = 1); 17..21 run outer to inner on the image-left brow.
    s = np.linspace(1, 0, 5)
    inner, outer = 0.2, 0.84 * p["brow_len"]
    bx = inner + (outer - inner) * s
    by = -p["brow_h"] - p["brow_arch"] * np.sin(np.pi * s ** 1.6) + p["brow_tilt"] * s
    bz = 0.08 - 0.3 * s
    for k in range(5):
        L[17 + k] = (-bx[k], by[k], bz[k])
        L[26 - k] = (bx[k], by[k], bz[k])
    nl, nw = p["nose_l"], p["nose_w"]
    L[27:31] = [(0, -0.02, 0.08), (0, 0.2 * nl, 0.2), (0, 0.41 * nl, 0.33), (0, 0.62 * nl, 0.48)]
    L[31:36] = [(-nw, 0.7 * nl, 0.2), (-0.5 * nw, 0.76 * nl, 0.28), (0, 0.78 * nl, 0.32),
                (0.5 * nw, 0.76 * nl, 0.28), (nw, 0.7 * nl, 0.2)]
    ew, eh, tilt = 0.24 * p["eye_w"], p["eye_h"], p["eye_tilt"]
    for side, base in ((-1, 36), (1, 42)):
        cx = 0.5 * side
        outer_x, inner_x = cx + side * ew, cx - side * ew
        up, lo = -0.085 * eh, 0.065 * eh
        pts = {  # outer corner, upper outer, upper inner, inner corner, lower inner, lower outer
            "oc": (outer_x, -tilt, -0.15), "uo": (cx + side * 0.35 * ew, up - 0.6 * tilt, 0.02),
            "ui": (cx - side * 0.3 * ew, up - 0.1 * tilt, 0.02), "ic": (inner_x, 0.01, -0.02),
            "li": (cx - side * 0.3 * ew, lo, 0.02), "lo": (cx + side * 0.35 * ew, lo - 0.4 * tilt, 0.02)}
        order = ["oc", "uo", "ui", "ic", "li", "lo"] if side < 0 else ["ic", "ui", "uo", "oc", "lo", "li"]
        for k, name in enumerate(order):
            L[base + k] = pts[name]
    my = 1.06 * p["fl"] + p["mouth_y"] + 0.08 * (nl - 1)
    my = max(my, L[33, 1] + p["lip_up"] + 0.17)
    mw, tu, tl, g, c = p["mouth_w"], p["lip_up"], p["lip_lo"], p["lip_gap"], p["corner"]
    bow = min(p["bow"], 0.4 * tu)  # the cupid's bow dip never reaches the lip line
    yc = my + c
    L[48] = (-mw, yc, 0.12)
    L[49] = (-0.55 * mw, my - 0.82 * tu, 0.22)
    L[50] = (-0.22 * mw, my - tu - 0.3 * bow, 0.29)
    L[51] = (0, my - tu + bow, 0.31)
    L[52], L[53], L[54] = L[50] * (-1, 1, 1), L[49] * (-1, 1, 1), L[48] * (-1, 1, 1)
    L[55] = (0.58 * mw, my + 0.78 * tl, 0.21)
    L[56] = (0.24 * mw, my + 0.97 * tl, 0.27)
    L[57] = (0, my + tl, 0.29)
    L[58], L[59] = L[56] * (-1, 1, 1), L[55] * (-1, 1, 1)
    L[60] = (-0.9 * mw, yc, 0.14)
    L[61] = (-0.42 * mw, my - g / 2 + 0.15 * c, 0.24)
    L[62] = (0, my - g / 2, 0.26)
    L[63], L[64] = L[61] * (-1, 1, 1), L[60] * (-1, 1, 1)
    L[65] = L[61] * (-1, 1, 1) + (0, g, 0)
    L[66] = L[62] + (0, g, 0)
    L[67] = L[61] + (0, g, 0)
    return L


def rotation(p: dict) -> np.ndarray:
    """3 x 3 head rotation (yaw, pitch, roll in degrees; y down, z towards the camera)."""
    y, x, r = np.radians([p["yaw"], p["pitch"], p["roll"]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def projection(p: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre (2,), A (2 x 3)): pixel = centre + A @ canonical point (pixel centres at integers)."""
    scale = p["iod"] * size
    return np.array([p["cx"] * size - 0.5, p["cy"] * size - 0.5]), scale * rotation(p)[:2]


# ---------------------------------------------------------------------------------------------
# Drawing helpers


_SPLINE_W: dict = {}


def _spline_weights(m: int, n: int, closed: bool) -> np.ndarray:
    """The matrix that maps m control points to their Catmull-Rom samples (cached by shape)."""
    key = (m, n, closed)
    W = _SPLINE_W.get(key)
    if W is None:
        t = np.linspace(0, 1, n, endpoint=False)
        c = np.stack([0.5 * (-t ** 3 + 2 * t ** 2 - t), 0.5 * (3 * t ** 3 - 5 * t ** 2 + 2),
                      0.5 * (-3 * t ** 3 + 4 * t ** 2 + t), 0.5 * (t ** 3 - t ** 2)], 1)
        # padded control points as combinations of the originals
        E = np.eye(m)
        pad = (np.vstack([E[-1], E, E[0], E[1]]) if closed else
               np.vstack([2 * E[0] - E[1], E, 2 * E[-1] - E[-2]]))
        rows = [c @ pad[i - 1:i + 3] for i in range(1, len(pad) - 2)]
        if not closed:
            rows.append(pad[-2][None])
        W = np.vstack(rows)
        _SPLINE_W[key] = W
    return W


def spline(points, n: int = 6, closed: bool = False) -> np.ndarray:
    """Dense Catmull-Rom curve through 2-D points (n samples per segment), for smooth outlines."""
    P = np.asarray(points, float)
    return _spline_weights(len(P), n, closed) @ P


def _flat(arr) -> list:
    return np.asarray(arr, float).ravel().tolist()


def _gauss(size: int, x: float, y: float, sx: float, sy: float | None = None) -> np.ndarray:
    """Separable Gaussian blob on the size x size pixel grid (cheap: an outer product)."""
    sy = sx if sy is None else sy
    r = np.arange(size, dtype=np.float32)
    return np.outer(np.exp(-0.5 * ((r - y) / sy) ** 2), np.exp(-0.5 * ((r - x) / sx) ** 2))


def _rgb(c, a: float | None = None):
    c = tuple(min(255, max(0, int(v + 0.5))) for v in np.asarray(c, float).tolist())
    return c if a is None else c + (min(255, max(0, int(a * 255 + 0.5))),)


_NOISE: np.ndarray | None = None


def _noise_tile() -> np.ndarray:
    """A fixed 256 x 256 x 3 standard-normal tile; identities crop it at seeded offsets (fast)."""
    global _NOISE
    if _NOISE is None:
        _NOISE = np.random.default_rng(20240601).standard_normal((256, 256, 3)).astype(np.float32)
    return _NOISE


def _noise(rng, size: int) -> np.ndarray:
    y, x = rng.integers(0, 256, 2)
    r = np.arange(size)
    return _noise_tile()[np.ix_((r + y) % 256, (r + x) % 256)]


# ---------------------------------------------------------------------------------------------
# The neutral texture


class Texture:
    """What `draw` produces for one identity at one size (float32 colours 0..255)."""

    def __init__(self, rgb, skin, glasses_rgb, glasses_a, eyes, light_at, noise):
        self.rgb = rgb                # (H, W, 3) the neutral face, noise-free
        self.noise = noise            # (H, W, 3) the camera's noise, added to every frame
        self.skin = skin              # (H, W) 0..1 where bare skin shows (for AU shading)
        self.glasses_rgb = glasses_rgb  # (H, W, 3) or None: overlay drawn after the warp
        self.glasses_a = glasses_a    # (H, W) alpha or None
        self.eyes = eyes              # per eye: (iris centre (2,), iris radius, iris rgb, sclera rgb)
        self.light_at = light_at      # callable (x, y) -> light factor at a pixel (mouth interior)


_SCENES = [(200, 190, 172), (118, 108, 98), (88, 118, 72), (150, 178, 205), (58, 54, 50), (168, 160, 150),
           (112, 82, 60), (205, 203, 196), (80, 90, 110), (140, 125, 95), (175, 140, 120)]


def _background(p: dict, size: int, N: int, rng) -> Image.Image:
    c1, c2 = np.array(p["bg_rgb"]), np.array(p["bg2_rgb"])
    g = 10
    yy, xx = np.mgrid[0:g, 0:g] / (g - 1.0)
    if p["bg_kind"] == 0:  # studio: a smooth two-tone gradient with a soft vignette
        ang = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + 0.7 * ((xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang)), 0, 1)
        small = c1 * (1 - t[..., None]) + c2 * t[..., None]
        small *= (1 - 0.3 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))[..., None]
        img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
    else:  # in the wild: a blurred scene of patches, walls, windows and furniture
        t = rng.random((g, g, 1))
        small = c1 * (1 - t) + c2 * t + rng.normal(0, 10, (g, g, 3))
        img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
        if p["bg_kind"] == 2:
            d = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(2, 6))):
                x0, y0 = rng.integers(-2, g, 2)
                w, h = rng.integers(1, 6, 2)
                col = np.array(_SCENES[int(rng.integers(len(_SCENES)))]) * rng.uniform(0.6, 1.2)
                d.rectangle([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=_rgb(col))
    # Blurry by design, so build it at output size and enlarge without filtering (cheap).
    return img.resize((size, size), Image.BICUBIC).resize((N, N), Image.NEAREST)


# Height-field bumps (canonical x, y, z, sigma, height; IOD units): nose ridge and tip, eye
# sockets, brow ridges, cheekbones, lips, chin, and the furrow under the lower lip.
_BUMPS = np.array([(0, 0.1, 0, 0.1, 0.2), (0, 0.3, 0, 0.085, 0.24), (0, 0.5, 0, 0.085, 0.28), (0, 0.63, 0, 0.11, 0.3),
                   (-0.5, -0.02, 0, 0.16, -0.16), (0.5, -0.02, 0, 0.16, -0.16), (-0.45, -0.36, 0, 0.16, 0.08),
                   (0.45, -0.36, 0, 0.16, 0.08), (-0.6, 0.42, 0, 0.24, 0.14), (0.6, 0.42, 0, 0.24, 0.14),
                   (0, 1.05, 0, 0.2, 0.1), (0, 1.48, 0, 0.17, 0.1), (0, 1.3, 0, 0.06, -0.04)], float)


def _lighting(p: dict, head_m: Image.Image, A: np.ndarray, centre: np.ndarray, size: int, s: float):
    """Diffuse shading factor and specular highlight from a height field: a dome over the head
    plus nose, brow ridge, cheeks, lips and chin. Smooth, so computed at half size for speed."""
    r = size // 2 if size >= 64 else size
    k = r / size
    hm = np.asarray(head_m if r == size else head_m.resize((r, r), Image.BILINEAR), np.float32)
    grid = np.arange(r, dtype=np.float32)
    G = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / (0.42 * s * k)) ** 2)
    G /= G.sum(1, keepdims=True)
    h = (G @ hm @ G.T) * (1.1 * s * k / 255.0)  # the head mask blurred into a dome
    fl = p["fl"]
    B = _BUMPS * np.array([1, 1, 1, 1, 1], float)
    B[10:13, 1] *= fl
    c = (B[:, :3] @ A.T + centre + 0.5) * k - 0.5
    sig = B[:, 3] * (s * k)
    gx = np.exp(-0.5 * ((grid[None] - c[:, 0, None]) / sig[:, None]) ** 2)
    gy = np.exp(-0.5 * ((grid[None] - c[:, 1, None]) / sig[:, None]) ** 2) * (B[:, 4] * s * k)[:, None]
    h = h + (gy.T @ gx).astype(np.float32)  # sum of separable Gaussian bumps in one product
    gy, gx = np.gradient(h)
    az, el = math.radians(p["light_az"]), math.radians(p["light_el"])
    lv = np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1)
    ndl = (lv[2] - gx * lv[0] - gy * lv[1]) * inv
    shade = (p["ambient"] + p["light_k"] * np.clip(ndl, 0, None)) / (p["ambient"] + p["light_k"] * lv[2])
    shade = np.clip(shade, 0.45, 1.25).astype(np.float32)
    hv = lv + np.array([0, 0, 1.0])
    hv /= np.linalg.norm(hv)
    spec = (np.clip((hv[2] - gx * hv[0] - gy * hv[1]) * inv, 0, 1) ** 24 * (p["spec"] * 255)).astype(np.float32)
    if r != size:
        shade = np.asarray(Image.fromarray(shade, "F").resize((size, size), Image.BILINEAR))
        spec = np.asarray(Image.fromarray(spec, "F").resize((size, size), Image.BILINEAR))
    return shade, spec


def draw(p: dict, size: int, L3: np.ndarray | None = None) -> Texture:
    """Render identity parameters `p` at rest into a Texture of `size` x `size` pixels
    (`L3`: its `landmarks3d`, when the caller already has them)."""
    ss = 4 if size <= 48 else 3 if size <= 96 else 2  # supersampling for anti-aliased edges
    N = size * ss
    rng = np.random.default_rng([p["seed"], 7])
    centre, A = projection(p, size)
    s = p["iod"] * size  # IOD in output pixels
    S = s * ss           # IOD in canvas pixels
    cA, cc = A * ss, (centre + 0.5) * ss - 0.5

    def P(pts3):  # canonical 3-D -> canvas coordinates
        return np.asarray(pts3, float) @ cA.T + cc

    detail = size >= 48  # sub-pixel decorations are skipped for thumbnails
    L3 = landmarks3d(p) if L3 is None else L3
    L = P(L3)
    skin = np.array(p["skin_rgb"])
    hair = np.array(p["hair_rgb"])
    a_s = 1.02 * p["fw"] * (1 + 0.5 * p["cheek"])
    top = p["jaw_top"]
    head_h = 1.95 + 0.1 * (p["fl"] - 1)
    style, vol = p["hair_style"], p["hair_vol"]

    im = _background(p, size, N, rng)
    d = ImageDraw.Draw(im, "RGBA")
    lw = max(1, int(round(0.028 * S)))  # a thin line, in canvas pixels
    # Masks at output resolution: head (for lighting), hair, skin (for AU shading).
    head_m = Image.new("L", (size, size), 0)
    hd_m = ImageDraw.Draw(head_m)
    skin_m = Image.new("L", (size, size), 0)
    sk_m = ImageDraw.Draw(skin_m)
    k_out = 1.0 / ss

    def out(arr):  # canvas -> output coordinates for the masks
        return _flat((np.asarray(arr) + 0.5) * k_out - 0.5)

    # Shoulders and clothing.
    sh = P([(-0.62, 2.05, -0.4), (-1.4, 2.35, -0.5), (-2.5, 2.75, -0.6), (-3.2, 4.0, -0.6), (3.2, 4.0, -0.6),
            (2.5, 2.75, -0.6), (1.4, 2.35, -0.5), (0.62, 2.05, -0.4)])
    cloth = np.array(p["cloth_rgb"])
    d.polygon(_flat(spline(sh, 3)), fill=_rgb(cloth))
    # Medium and long hair also fall behind the neck.
    if style in (1, 2):
        ln = p["hair_len"] if style == 2 else 1.25
        arc = [(-(a_s + vol) * math.cos(t), top - (head_h + vol) * math.sin(t), -0.6) for t in np.linspace(0, np.pi, 13)]
        back = [(a_s + vol + 0.12, ln, -0.7), (a_s + vol + 0.02, 0.7, -0.6)] + arc[::-1][1:-1] + \
               [(-(a_s + vol + 0.02), 0.7, -0.6), (-(a_s + vol + 0.12), ln, -0.7)]
        bp = spline(P(back), 4)
        d.polygon(_flat(bp), fill=_rgb(hair * 0.72))
        hd_m.polygon(out(bp), fill=255)
    neck = P([(-0.55, 1.0, -0.4), (-0.58, 2.1, -0.4), (-0.25, 2.32, -0.3), (0.25, 2.32, -0.3), (0.58, 2.1, -0.4),
              (0.55, 1.0, -0.4)])
    d.polygon(_flat(neck), fill=_rgb(skin * 0.8))
    hd_m.polygon(out(neck), fill=255)
    # Ears.
    ca = abs(math.cos(math.radians(p["yaw"])))
    for side in (-1, 1):
        ec = P([(side * (a_s - 0.02), 0.36 + top, -0.75)])[0]
        rx, ry = (0.11 * ca + 0.05) * S, 0.3 * S
        d.ellipse([ec[0] - rx, ec[1] - ry, ec[0] + rx, ec[1] + ry], fill=_rgb(skin * 0.92))
        if detail:
            d.ellipse([ec[0] - rx * 0.5, ec[1] - ry * 0.6, ec[0] + rx * 0.4, ec[1] + ry * 0.5], fill=_rgb(skin * 0.7, 0.5))
        hd_m.ellipse([(ec[0] - rx) * k_out, (ec[1] - ry) * k_out, (ec[0] + rx) * k_out, (ec[1] + ry) * k_out], fill=255)
    # The face: jaw line, then the skull arc over the top.
    ts = np.linspace(0.1, np.pi - 0.1, 15)
    cs = np.cos(ts)
    skull = np.stack([a_s * np.abs(cs) ** (2 / 2.3) * np.sign(cs), top - 0.05 - head_h * np.sin(ts) ** (2 / 2.3),
                      np.full_like(ts, -0.3)], 1)
    face_poly = spline(np.vstack([L[:17], P(skull)]), 4, closed=True)
    d.polygon(_flat(face_poly), fill=_rgb(skin))
    hd_m.polygon(out(face_poly), fill=255)
    sk_m.polygon(out(face_poly), fill=255)

    # Eyes: the aperture is lid-coloured (the open eye is composited per frame, so lids can
    # cover the iris); lashes, crease and make-up are drawn here and move with the lids.
    liner = p["liner"]
    for upper_i, lower_i in (([36, 37, 38, 39], [36, 41, 40, 39]), ([42, 43, 44, 45], [42, 47, 46, 45])):
        upper = spline(L[upper_i, :2], 5)
        lower = spline(L[lower_i, :2], 5)
        d.polygon(_flat(np.vstack([upper, lower[::-1]])), fill=_rgb(skin * 0.8))
        lift = np.array([0, -0.075 * S * p["eye_h"]])
        if p["shadow"] > 0:
            band = np.vstack([upper, (upper + lift * 1.8)[::-1]])
            d.polygon(_flat(band), fill=_rgb(p["shadow_rgb"], p["shadow"]))
        if detail:
            d.line(_flat((upper + lift)[2:-2]), fill=_rgb(skin * 0.55, 0.35), width=lw)
            d.line(_flat(lower + np.array([0, 0.4 * lw])), fill=_rgb(skin * 0.55, 0.3), width=max(1, lw // 2))
        lash_w = max(1, int(round((0.03 + 0.03 * liner) * S)))
        d.line(_flat(upper + np.array([0, -lash_w / 2])), fill=(22, 16, 16, 220), width=lash_w)
        if liner > 0:  # a small wing at the outer corner
            oc = L[upper_i[0] if upper_i[0] == 36 else upper_i[3], :2]
            wing = oc + np.array([(-1 if upper_i[0] == 36 else 1) * 0.07 * S, -0.045 * S])
            d.line(_flat([oc, wing]), fill=_rgb((15, 10, 10), 0.8 * liner), width=lash_w)

    # Brows: a tapered band around the five brow points.
    brow_rgb = np.array(p["brow_rgb"])
    for idx in ([17, 18, 19, 20, 21], [26, 25, 24, 23, 22]):
        c = spline(L[idx, :2], 4)
        tang = np.gradient(c, axis=0)
        nrm = np.stack([tang[:, 1], -tang[:, 0]], 1)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
        nrm *= -np.sign(nrm[:, 1].mean() + 1e-9)  # point up
        th = p["brow_thick"] * S * np.linspace(0.4, 1.0, len(c)) ** 0.6
        poly = np.vstack([c + nrm * th[:, None] * 0.55, (c - nrm * th[:, None] * 0.45)[::-1]])
        d.polygon(_flat(poly), fill=_rgb(brow_rgb, p["brow_dens"]))
        sk_m.polygon(out(poly), fill=0)
        if detail:
            j = rng.integers(1, len(c) - 1, 5)
            for q0, n_, t_, h_ in zip(c[j] - nrm[j] * th[j, None] * 0.4, nrm[j], tang[j], th[j]):
                d.line(_flat([q0, q0 + n_ * h_ * 0.8 + t_ * 1.5]), fill=_rgb(brow_rgb * 0.7, 0.5), width=max(1, lw // 2))

    # Nose: nostrils and alar creases (the ridge comes from the lighting).
    for a_i, b_i in ((31, 32), (35, 34)):
        c = L[a_i, :2] * 0.45 + L[b_i, :2] * 0.55 + np.array([0, -0.015 * S])
        rx, ry = 0.045 * S * p["nose_w"] / 0.2, 0.022 * S
        d.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=_rgb(skin * 0.3, 0.7))
        if detail:
            side = np.sign(L[a_i, 0] - L[33, 0])
            arc = L[a_i, :2] + np.array([[side * 0.0, 0.0], [side * 0.04, -0.07], [side * 0.015, -0.14]]) * S
            d.line(_flat(spline(arc, 4)), fill=_rgb(skin * 0.62, 0.4), width=lw)

    # Age: nasolabial folds, under-eye bags, forehead lines (faint, static).
    old = p["old"]
    if old > 0.05 and detail:
        for side, al, cor in ((-1, 31, 48), (1, 35, 54)):
            fold = [L[al, :2] + np.array([side * 0.06, -0.02]) * S, L[cor, :2] + np.array([side * 0.09, -0.12]) * S,
                    L[cor, :2] + np.array([side * 0.1, 0.08]) * S]
            d.line(_flat(spline(fold, 5)), fill=_rgb(skin * 0.55, 0.5 * old), width=lw)
            eye_lo = L[[40, 41] if side < 0 else [46, 47], :2].mean(0)
            bag = eye_lo + np.array([[-0.16, 0.07], [0, 0.1], [0.16, 0.07]]) * S
            d.line(_flat(spline(bag, 4)), fill=_rgb(skin * 0.6, 0.4 * old), width=lw)
        for k in range(3):
            yb = min(L[19, 1], L[24, 1]) - (0.22 + 0.13 * k) * S
            line = [(L[19, 0], yb + 0.02 * S), ((L[19, 0] + L[24, 0]) / 2, yb), (L[24, 0], yb + 0.02 * S)]
            d.line(_flat(spline(line, 5)), fill=_rgb(skin * 0.6, 0.35 * old), width=max(1, lw // 2))

    # Lips.
    lip = np.array(p["lip_rgb"])
    if p["lipstick"] > 0:
        lip = lip * (1 - p["lipstick"]) + np.array(p["lipstick_rgb"]) * p["lipstick"]
    upper = spline(L[[48, 49, 50, 51, 52, 53, 54], :2], 4)
    upper_in = spline(L[[60, 61, 62, 63, 64], :2], 4)
    lower = spline(L[[54, 55, 56, 57, 58, 59, 48], :2], 4)
    lower_in = spline(L[[64, 65, 66, 67, 60], :2], 4)
    up_poly, lo_poly = np.vstack([upper, upper_in[::-1]]), np.vstack([lower, lower_in[::-1]])
    d.polygon(_flat(up_poly), fill=_rgb(lip * 0.86))
    d.polygon(_flat(lo_poly), fill=_rgb(lip))
    d.line(_flat(np.vstack([L[48, :2], upper_in, L[54, :2]])), fill=_rgb(lip * 0.4, 0.8), width=lw)
    sk_m.polygon(out(up_poly), fill=90)
    sk_m.polygon(out(lo_poly), fill=90)

    # Facial hair.
    beard = p["beard"]
    if beard:
        col = _rgb(hair * 0.8, p["beard_alpha"] * (0.3 if beard == 1 else 1.0))
        if beard in (1, 3):  # stubble or full beard around the jaw
            inner = [L[2, :2] * 0.8 + L[31, :2] * 0.2, L[48, :2] + (L[4, :2] - L[48, :2]) * 0.35,
                     L[59, :2] * 0.5 + L[6, :2] * 0.5, L[57, :2] + (L[8, :2] - L[57, :2]) * 0.3,
                     L[55, :2] * 0.5 + L[10, :2] * 0.5, L[54, :2] + (L[12, :2] - L[54, :2]) * 0.35,
                     L[14, :2] * 0.8 + L[35, :2] * 0.2]
            outer = L[14:1:-1, :2] + (L[14:1:-1, :2] - L[33, :2]) * 0.04
            d.polygon(_flat(np.vstack([spline(inner, 4), spline(outer, 3)])), fill=col)
        if beard in (2, 3, 4):  # moustache
            m_up = np.vstack([L[31, :2] + (L[31, :2] - L[33, :2]) * 0.5, L[32:35, :2],
                              L[35, :2] + (L[35, :2] - L[33, :2]) * 0.5]) + np.array([0, 0.03 * S])
            m_lo = L[[54, 53, 52, 51, 50, 49, 48], :2] + np.array([0, -0.01 * S])
            d.polygon(_flat(np.vstack([spline(m_up, 4), spline(m_lo, 4)])), fill=col)
        if beard == 4:  # goatee
            g = [L[59, :2], L[57, :2] + np.array([0, 0.03 * S]), L[55, :2], L[9, :2] * 0.7 + L[56, :2] * 0.3,
                 L[8, :2], L[7, :2] * 0.7 + L[58, :2] * 0.3]
            d.polygon(_flat(spline(g, 4, closed=True)), fill=col)

    # Hair over the forehead and the sides of the head.
    hair_mask = Image.new("L", (N, N), 0)
    hm = ImageDraw.Draw(hair_mask)
    hl = p["hairline"]
    polys = []
    if style in (0, 1, 2, 4, 5):
        side_y = {0: 0.1, 4: 0.05, 5: 0.1, 1: 0.95, 2: 1.1}[style]
        arc = [(-(a_s + vol) * math.cos(t), top - (head_h + vol * 1.2) * math.sin(t), -0.3) for t in np.linspace(0, np.pi, 15)]
        outer = [(a_s + vol * 0.6, side_y, -0.5)] + arc[::-1] + [(-(a_s + vol * 0.6), side_y, -0.5)]
        fr, fs = p["fringe"], p["fringe_side"]
        brow_top = min(L3[19, 1], L3[24, 1])
        inner = [(-(a_s - 0.04), side_y, -0.5), (-(a_s - 0.05), -0.4, -0.4), (-0.86, -0.82, -0.2)]
        if fr == 0:
            inner += [(-0.6, -hl + 0.1, 0.0), (-0.3, -hl - 0.01, 0.05), (0, -hl, 0.05), (0.3, -hl - 0.01, 0.05),
                      (0.6, -hl + 0.1, 0.0)]
        elif fr == 1:  # straight bangs
            yb = brow_top - 0.17
            inner += [(-0.7, yb - 0.06, 0.0), (-0.35, yb, 0.05), (0, yb + 0.01, 0.05), (0.35, yb, 0.05), (0.7, yb - 0.06, 0.0)]
        else:  # side-swept
            inner += [(-0.6 * fs, brow_top - 0.15, 0.0), (-0.1 * fs, -hl + 0.28, 0.05), (0.4 * fs, -hl + 0.05, 0.05)]
        inner += [(0.86, -0.82, -0.2), (a_s - 0.05, -0.4, -0.4), (a_s - 0.04, side_y, -0.5)]
        if style in (1, 2):  # hair falls over the face edge down to the jaw
            inner = [(-0.93 * a_s, side_y + 0.05, -0.5)] + inner[1:-1] + [(0.93 * a_s, side_y + 0.05, -0.5)]
        polys.append(np.vstack([spline(P(outer), 3), spline(P(inner), 4)]))
        if style == 4:  # bun on top
            polys.append(spline(P([(0.35 * math.cos(t), top - head_h - 0.12 + 0.3 * math.sin(t), -0.6)
                                   for t in np.linspace(0, 2 * np.pi, 10, endpoint=False)]), 3, closed=True))
    elif style == 3:  # bald or receding: a horseshoe of hair around the sides and back
        for side in (-1, 1):
            ts_ = np.linspace(-0.05, 0.5, 6)
            out_arc = [(side * (a_s + vol * 0.5) * math.cos(t), top - (head_h + vol * 0.6) * math.sin(t), -0.5) for t in ts_]
            in_arc = [(side * (a_s - 0.06) * math.cos(t) * 0.97, top - (head_h - 0.25) * math.sin(t) * 0.9, -0.5)
                      for t in ts_[::-1]]
            polys.append(spline(P(out_arc + in_arc), 3, closed=True))
    for poly in polys:
        hm.polygon(_flat(poly), fill=255)
        hd_m.polygon(out(poly), fill=255)
        sk_m.polygon(out(poly), fill=0)
    if polys:
        hair_layer = Image.new("RGB", (N, N), _rgb(hair))
        if detail:  # strands radiating from the crown give the hair some texture
            hd = ImageDraw.Draw(hair_layer, "RGBA")
            crown = P([(0.0, top - head_h * 0.8, -0.3)])[0]
            n = 16
            ang = rng.uniform(0.1, np.pi - 0.1, n)
            r0, r1 = rng.uniform(0.2, 0.8, n) * S, rng.uniform(1.6, 3.2, n) * S
            p0 = crown + np.stack([np.cos(ang), np.sin(ang) * 0.9], 1) * r0[:, None]
            p1 = crown + np.stack([np.cos(ang) * 1.1, np.sin(ang) * 1.2], 1) * r1[:, None]
            pm = (p0 + p1) / 2 + rng.normal(0, 0.1 * S, (n, 2))
            cols = np.clip(hair[None] * rng.uniform(0.7, 1.35, (n, 1)), 0, 255).astype(int)
            for q0, q1, q2, c in zip(p0.tolist(), pm.tolist(), p1.tolist(), cols.tolist()):
                hd.line(q0 + q1 + q2, fill=(c[0], c[1], c[2], 115), width=max(1, lw // 2))
        if style == 5:  # buzz cut: skin shows through
            hair_mask = hair_mask.point(lambda v: int(v * 0.7))
        im.paste(hair_layer, (0, 0), hair_mask)

    # Glasses: their own RGBA layer, drawn over the warped face.
    glasses_rgb = glasses_a = None
    if p["glasses"]:
        gl = Image.new("RGBA", (N, N), (0, 0, 0, 0))
        gd = ImageDraw.Draw(gl)
        fw = max(1, int(round(p["frame_w"] * S)))
        frame = _rgb(p["frame_rgb"]) + (255,)
        hw, hh = 0.34, (0.25 if p["glasses"] == 1 else 0.21)
        for side in (-1, 1):
            cx = 0.52 * side
            if p["glasses"] == 1:
                tt = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                ring = np.stack([cx + hw * np.cos(tt), 0.02 + hh * np.sin(tt), np.full_like(tt, 0.05)], 1)
                ring2 = P(ring)
            else:
                ring = [(cx + side * hw * sx, 0.02 + hh * sy, 0.05) for sx, sy in
                        ((-1, -1), (-0.3, -1.08), (1, -1), (1.02, 0.3), (0.75, 1), (-0.8, 1), (-1, 0.2))]
                ring2 = spline(P(ring), 3, closed=True)
            gd.polygon(_flat(ring2), fill=(200, 215, 230, int(255 * p["lens_tint"])))
            gd.line(_flat(np.vstack([ring2, ring2[:1]])), fill=frame, width=fw, joint="curve")
            gd.line(_flat(P([(side * (0.52 + hw), -0.05, 0.0), (side * (a_s + 0.05), -0.02, -0.7)])), fill=frame, width=fw)
        gd.line(_flat(spline(P([(-0.19, -0.03, 0.1), (0, -0.1, 0.12), (0.19, -0.03, 0.1)]), 4)), fill=frame, width=fw)
        gd.line(_flat(P([(-0.64, -0.12, 0.1), (-0.47, 0.12, 0.1)])), fill=(255, 255, 255, 45), width=max(1, 3 * fw))
        g = np.asarray(gl.reduce(ss), np.float32)
        glasses_rgb, glasses_a = g[..., :3], g[..., 3] / 255.0

    # Downsample the crisp drawing, then shade softly at output resolution.
    rgb = np.asarray(im.reduce(ss), np.float32)
    head = np.asarray(head_m, np.float32) / 255.0
    skin_f = np.asarray(skin_m, np.float32) / 255.0
    Lo = L3 @ A.T + centre  # landmarks in output pixels

    def blob(q3, sig, sy=None):
        c = np.asarray(q3, float) @ A.T + centre
        return c, _gauss(size, c[0], c[1], sig * s, None if sy is None else sy * s)

    if p["blush"] > 0.02:
        for side in (-1, 1):
            _, g = blob((0.62 * side, 0.6, 0.1), 0.2)
            k = (g * (p["blush"] * 0.2) * skin_f)[..., None]
            rgb += k * (np.array([205, 80, 90], np.float32) - rgb)
    if beard == 1 or (beard and p["beard_alpha"] < 0.7):
        _, g = blob(((Lo[8, 0] - centre[0]) * 0, 1.35, 0), 0.55, 0.32)
        rgb *= (1 - 0.22 * g * skin_f * np.clip(0.5 + _noise(rng, size)[..., 0], 0, 1.5))[..., None]
    _, g = blob((0, Lo[57, 1] * 0 + L3[57, 1] - 0.45 * p["lip_lo"], 0.3), 0.1, 0.035)
    rgb += (g * 30 * (0.5 + p["lipstick"]))[..., None]

    shade, spec = _lighting(p, head_m, A, centre, size, s)
    rgb = rgb * (1 + (shade - 1) * head)[..., None] + (spec * head * skin_f)[..., None]
    tint = np.array(p["tint"], np.float32) * p["exposure"]
    rgb = np.clip(rgb * tint, 0, 255).astype(np.float32)
    # Sensor noise belongs to the camera, not the skin: it is added after the warp, per frame.
    noise = (_noise(rng, size) * p["noise"]).astype(np.float32)
    if glasses_rgb is not None:
        glasses_rgb = np.clip(glasses_rgb * tint, 0, 255)

    shade = 1 + (shade - 1) * head

    def light_at(x: float, y: float) -> float:
        return float(shade[min(max(int(round(y)), 0), size - 1), min(max(int(round(x)), 0), size - 1)] * tint.mean())

    # Eye interiors (composited per frame): iris centre and size, colours scaled by the light.
    eyes = []
    for side in (-1, 1):
        c = np.array([0.5 * side, -0.005, 0.05]) @ A.T + centre
        lf = light_at(c[0], c[1])
        sclera = np.array([234, 228, 222], np.float32) * (0.88 + 0.12 * skin / 255) * lf
        iris = np.array(p["iris_rgb"], np.float32) * lf
        eyes.append((c, 0.098 * p["eye_w"] * s, iris, np.clip(sclera, 0, 255)))
    return Texture(rgb, np.clip(skin_f, 0, 1), glasses_rgb, glasses_a, eyes, light_at, noise)
