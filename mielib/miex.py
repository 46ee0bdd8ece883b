"""The MiE-X builder (paper Sections 4.1, 4.3, 5.2): identities x classes x AU sources rendered to
onset/apex PNG frames with a manifest, and the loader and fold exclusion that training uses.

Notebooks 04-09 build and train on MiE-X (`dataset`, `load`, `exclude`); `python -m mielib miex
build` is the command line. The paper's preset: 5,000 identities x 3 classes x 3 AU sources =
45,000 samples of two frames each (footnote 4).

On disk (`out/`):
- `frames/NNN/SSSSSS_onset.png`, `..._apex.png` (NNN = sample // 1000); the video variant writes
  `frames/NNN/SSSSSS/TT.png`.
- `manifest.csv`: one row per sample (identity, pool, class, source, emotion, provenance, z_o and
  z_a as zo_AU01.. / za_AU01.., frame paths, generator, seed). Written last, atomically, after
  every frame it lists was checked on disk.
- `build.json`: the configuration, mielib commit, data source, status and summary.
- `journal.txt` while building: identities whose frames are all written. An interrupted build
  is continued by running the same build again.

The frame store (`data/cache/miex/_frames/`): variants that differ in one knob (AU sources,
mu/nu, samples ...) share many frames, the same identity at the same AU vector. Each frame of
the face generator is stored once under a hash of what decides its bytes, and builds hard-link
it, so a variant renders only the frames no earlier build rendered. Nothing ever removes store
entries: delete the folder to reclaim the space (build folders keep their links).

Fold exclusion (paper Section 5.1: "for each fold, MiE-X samples whose AUs (z_MiE) are computed
from real MiE samples in the test subset will not be used in training"): MiE-X is built once and
`exclude` removes, per fold, the samples whose provenance is a test clip or subject. That is
what the sentence describes (one dataset, samples left out per fold), so no per-fold rebuild.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from . import au, runtime, sources, store
from .clip import ArrayFrames, Clip, ClipSet, PathFrames, read_image

FORMAT = "mielib.miex/1"
CLASSES: tuple[str, ...] = au.MEGC3
GENERATORS: tuple[str, ...] = ("face", "ganimation")
POOLS: tuple[str, ...] = ("emotionet", "celeba")
#: PNG compression: 1 is fast and still lossless (the paper-size build must take minutes, not hours).
COMPRESS_LEVEL = 1
#: Identities per unit of work sent to a worker process.
CHUNK = 8
ZO = tuple(f"zo_{a}" for a in au.LABELS)
ZA = tuple(f"za_{a}" for a in au.LABELS)

#: Every option of a build and its default (the paper's choice where the paper gives one).
DEFAULTS: dict = {
    "identities": 5000,        # identities drawn from the pool (paper: 5,000)
    "sources": ("mie", "mae", "exp"),  # AU sources (paper: all three)
    "per_class": 1,            # samples per identity, class and source (footnote 4: one)
    "samples": None,           # total samples instead (Fig. 6b/c); a multiple of 3 x len(sources)
    "triplets": None,          # distinct AU triplets shared by all samples (Fig. 6a); None: one per sample
    "generator": "face",       # "face" (mielib's face model) or "ganimation" (a trained checkpoint)
    "gan_checkpoint": None,    # GANimation checkpoint file or folder (generator "ganimation")
    "pool": "emotionet",       # identity pool (supplementary Table 1: "celeba")
    "frontal": False,          # frontal faces only (Table 3, "w/o side")
    "size": 128,               # frame side in pixels (paper: 128)
    "seed": 0,                 # seeds identity choice and every AU draw
    "alpha": sources.ALPHA, "beta": sources.BETA, "rule": "paper",  # z_MaE apex window (Fig. 7a)
    "mu": sources.MU, "nu": sources.NU,  # z_exp intensities (Fig. 7b)
    "table": "miex",           # expert table: the authors' map ("miex") or "du2014"
    "mie_dataset": "composite",  # z_MiE clips (supplementary Table 2: "mmew")
    "mae_dataset": "ckplus",     # z_MaE sequences (supplementary Table 2: "oulu", "mmew")
    "perturb": 0.0,            # U(-p, p) added to apex AUs (Section 4.3's "random AU perturbations")
    "video": False,            # the DTSCNN variant (Section 5.2): frames from onset to apex
    "video_frames": sources.VIDEO_FRAMES,  # frames per video sample (z_MiE/z_MaE rows resampled to it)
    "data_source": "sim",      # where z_MiE / z_MaE clips and the identity pool come from
    "data_root": None,         # folder of the real datasets (data_source "real")
    "data_seed": 0,            # the simulated lab's seed (use the evaluation's lab seed)
}


# ---------------------------------------------------------------------------------------------
# Configuration

def configure(**options) -> dict:
    """A complete, checked build configuration: DEFAULTS overridden by `options`."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown MiE-X option(s) {', '.join(unknown)}; options: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **options}
    src = cfg["sources"]
    if isinstance(src, str):
        src = [s.strip() for s in src.split(",") if s.strip()]
    src = tuple(src)
    if not src or len(set(src)) != len(src) or any(s not in sources.SOURCES for s in src):
        raise ValueError(f"sources must be distinct names among {', '.join(sources.SOURCES)}, got {cfg['sources']!r}")
    cfg["sources"] = tuple(s for s in sources.SOURCES if s in src)  # canonical order
    for name, low in (("identities", 1), ("per_class", 1), ("size", 16), ("video_frames", 2)):
        v = cfg[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        cfg[name] = int(v)
    for name in ("samples", "triplets"):
        v = cfg[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        cfg[name] = None if v is None else int(v)
    unit = len(CLASSES) * len(cfg["sources"])
    if cfg["samples"] is not None and cfg["samples"] % unit:
        raise ValueError(f"samples ({cfg['samples']}) must be a multiple of {unit} (3 classes x "
                         f"{len(cfg['sources'])} sources) so that classes and sources stay balanced")
    if cfg["generator"] not in GENERATORS:
        raise ValueError(f"unknown generator {cfg['generator']!r}; use 'face' (mielib's face model) or 'ganimation'")
    if cfg["generator"] == "ganimation":
        if not cfg["gan_checkpoint"]:
            raise ValueError("generator 'ganimation' needs gan_checkpoint (train one with `python -m mielib gan train`)")
        cfg["gan_checkpoint"] = str(Path(cfg["gan_checkpoint"]).expanduser().resolve())
    elif cfg["gan_checkpoint"] is not None:
        raise ValueError("gan_checkpoint applies to generator 'ganimation' only")
    if cfg["pool"] not in POOLS:
        raise ValueError(f"unknown identity pool {cfg['pool']!r}; use one of {', '.join(POOLS)}")
    if cfg["data_source"] not in ("sim", "real"):
        raise ValueError(f"unknown data source {cfg['data_source']!r}; use 'sim' or 'real'")
    if cfg["data_source"] == "real":
        if not cfg["data_root"]:
            raise ValueError("data_source 'real' needs data_root, the folder holding your datasets")
        cfg["data_root"] = str(Path(cfg["data_root"]).expanduser().resolve())
    else:
        cfg["data_root"] = None
    sources.apex_window(2, cfg["alpha"], cfg["beta"], cfg["rule"])  # checks alpha, beta, rule
    if not (0.0 <= cfg["mu"] <= cfg["nu"] <= 1.0):
        raise ValueError(f"need 0 <= mu <= nu <= 1, got mu={cfg['mu']}, nu={cfg['nu']}")
    au.expert_table(cfg["table"])
    if not 0.0 <= cfg["perturb"] <= 1.0:
        raise ValueError(f"perturb must be in [0, 1], got {cfg['perturb']!r}")
    for key in ("alpha", "beta", "mu", "nu", "perturb"):
        cfg[key] = float(cfg[key])
    for key in ("seed", "data_seed"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, np.integer)) or cfg[key] < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {cfg[key]!r}")
        cfg[key] = int(cfg[key])
    cfg["frontal"], cfg["video"] = bool(cfg["frontal"]), bool(cfg["video"])
    return cfg


def _comparable(cfg: Mapping) -> dict:
    return json.loads(json.dumps({k: cfg.get(k) for k in DEFAULTS}, default=store._jsonable))


# ---------------------------------------------------------------------------------------------
# Identities

@dataclass
class _Identity:
    index: int  # position in the pool
    name: str  # "emotionet/000123" or the image's relative path
    path: str | None = None  # real pools: the image file
    landmarks: np.ndarray | None = None  # real pools: 68 x 2


_POOL_SKIPPED: dict[str, list] = {}  # real pool folder -> images its loader skipped, with reasons


def _pool(cfg: Mapping) -> list[_Identity]:
    """Every identity of the configured pool (sim: the lab's; real: the folder's images)."""
    if cfg["data_source"] == "sim":
        from . import lab

        n = lab.POOL_SIZES[cfg["pool"]]
        return [_Identity(i, f"{cfg['pool']}/{i:06d}") for i in range(n)]
    from . import datasets

    root = datasets.pool_root(cfg["data_root"], cfg["pool"])
    # landmarks (needed by the face generator, which warps each photo): a `landmarks/` folder
    # mirroring the images or a `landmarks.npz`, else OpenFace CSVs (see datasets.identity_pool)
    marks = next((m for m in (root / "landmarks", root / "landmarks.npz") if m.exists()), None)
    pool = datasets.identity_pool(root, marks)
    _POOL_SKIPPED[str(root)] = [vars(k) for k in pool.skipped]
    out = []
    for i, ident in enumerate(pool):
        out.append(_Identity(i, f"{cfg['pool']}/{ident.meta.get('relative_path', ident.path.name)}", str(ident.path),
                             ident.landmarks))
    return out


def _sim_landmarks(pool: str, index: int, size: int) -> np.ndarray:
    from . import face

    return np.asarray(face.landmarks(face.identity(index, pool=pool), np.zeros(au.N_AUS, np.float32), size),
                      dtype=np.float64)


def pose_scores(landmarks: np.ndarray) -> np.ndarray:
    """How far each face is from frontal, from its 68 landmarks (N x 68 x 2): lower = more frontal.

    Each shape is aligned (translation, scale, in-plane rotation) to a left-right symmetric
    template, the pool's own mean shape mirrored onto itself; the score is the remaining RMS
    distance in inter-ocular units. Out-of-plane turns (yaw, pitch) cannot be aligned away, so
    they dominate it. The paper found its frontal faces the same way, by landmark similarity to
    frontal queries (Section 5.3, "Impact of face poses").
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2) or not np.isfinite(pts).all():
        raise ValueError(f"landmarks must be N x 68 x 2 finite points, got shape {pts.shape}")
    mirror = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                       45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48,
                       59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])

    def normalise(x):
        x = x - x.mean(axis=-2, keepdims=True)
        eyes = x[..., 42:48, :].mean(axis=-2) - x[..., 36:42, :].mean(axis=-2)
        iod = np.linalg.norm(eyes, axis=-1)
        return x / iod[..., None, None]

    def align(x, template):  # similarity Procrustes of each shape onto the template
        out = np.empty_like(x)
        for i, s in enumerate(x):
            u, sig, vt = np.linalg.svd(s.T @ template)
            d = np.sign(np.linalg.det(u @ vt))
            r = u @ np.diag([1.0, d]) @ vt
            scale = (sig * [1.0, d]).sum() / (s ** 2).sum()
            out[i] = scale * s @ r
        return out

    x = normalise(pts)
    template = x.mean(axis=0)
    for _ in range(3):
        template = template - template.mean(axis=0)
        flipped = template[mirror] * [-1.0, 1.0]
        template = normalise(0.5 * (template + flipped))
        x = align(x, template)
        template = x.mean(axis=0)
    flipped = template[mirror] * [-1.0, 1.0]
    template = normalise(0.5 * (template - template.mean(axis=0) + flipped - flipped.mean(axis=0)))
    x = align(x, template)
    return np.sqrt(((x - template) ** 2).sum(axis=-1).mean(axis=-1))


def _frontal_order(cfg: Mapping, pool: list[_Identity]) -> np.ndarray:
    """Pool positions from most to least frontal (cached per pool for the simulated lab)."""
    if cfg["data_source"] == "sim":
        path = runtime.folder("data") / "miex" / f"pose_{cfg['pool']}.npz"
        probe = np.stack([_sim_landmarks(cfg["pool"], i, 128) for i in range(3)])
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as f:
                    scores, old = f["scores"], f["probe"]
                # the cache is valid only if the face model still draws the same faces
                if scores.shape == (len(pool),) and np.allclose(old, probe):
                    return np.argsort(scores, kind="stable")
            except (OSError, ValueError, KeyError):
                pass
        marks = np.stack([_sim_landmarks(cfg["pool"], p.index, 128) for p in pool])
        scores = pose_scores(marks)
        store.write_npz(path, scores=scores, probe=probe)
        return np.argsort(scores, kind="stable")
    missing = [p.name for p in pool if p.landmarks is None]
    if missing:
        raise ValueError(f"frontal faces are found from landmarks, and {len(missing)} image(s) of the "
                         f"{cfg['pool']} pool have none (first: {missing[0]}); give landmarks or OpenFace CSVs "
                         "(see datasets.identity_pool)")
    return np.argsort(pose_scores(np.stack([p.landmarks for p in pool])), kind="stable")


def _pool_skipped(cfg: Mapping) -> list:
    if cfg["data_source"] != "real":
        return []
    from . import datasets

    return _POOL_SKIPPED.get(str(datasets.pool_root(cfg["data_root"], cfg["pool"])), [])


def _select(cfg: Mapping) -> list[_Identity]:
    """The build's identities: a seeded random choice from the pool (the most frontal ones with
    `frontal`). The choice for n identities is the start of the choice for more, so Fig. 6's
    700 / 1,000 / 1,700 / 5,000 identities are nested."""
    pool = _pool(cfg)
    n = cfg["identities"]
    if n > len(pool):
        where = "the simulated" if cfg["data_source"] == "sim" else "your"
        skipped = _pool_skipped(cfg)
        why = f" ({len(skipped)} image(s) skipped, e.g. {skipped[0]['item']}: {skipped[0]['reason']})" if skipped else ""
        raise ValueError(f"{n} identities requested but {where} {cfg['pool']} pool has {len(pool)}{why}")
    if cfg["generator"] == "face" and cfg["data_source"] == "real":
        missing = [p.name for p in pool if p.landmarks is None]
        if missing:
            raise ValueError(f"the face generator warps each photo by its 68 landmarks, and {len(missing)} image(s) "
                             f"of the {cfg['pool']} pool have none (first: {missing[0]}); put them in a landmarks/ "
                             "folder or landmarks.npz beside the images, or OpenFace CSVs (datasets.identity_pool)")
    if cfg["frontal"]:
        order = _frontal_order(cfg, pool)[:n]
        order = order[np.random.default_rng([cfg["seed"], 31]).permutation(n)]
    else:
        order = np.random.default_rng([cfg["seed"], 31]).permutation(len(pool))[:n]
    return [pool[int(i)] for i in order]


# ---------------------------------------------------------------------------------------------
# The plan: every sample's identity, class, source and AU triplet (no pixels)

@dataclass
class Plan:
    """What a build renders. `manifest` is the final manifest; `videos` the per-frame AUs."""

    config: dict
    identities: list
    manifest: pd.DataFrame
    videos: dict = field(default_factory=dict)  # sample -> T x 17 (video variant)
    skipped: dict = field(default_factory=dict)  # source -> [Skipped as dict]


def _frame_paths(sample: int, video: bool, n_frames: int) -> list[str]:
    block = f"frames/{sample // 1000:03d}"
    if video:
        return [f"{block}/{sample:06d}/{t:02d}.png" for t in range(n_frames)]
    return [f"{block}/{sample:06d}_onset.png", f"{block}/{sample:06d}_apex.png"]


def plan(**options) -> Plan:
    """Every sample of a build, with its AU triplet and frame paths, without rendering anything.

    Samples come in rounds: one per class and source. Identity j gets round j (and j + n,
    j + 2n ... when there are more rounds than identities), so per_class=1 gives footnote 4's
    nine samples per identity. Each (source, class) pair draws its triplets from its own
    generator: triplets=None draws a fresh triplet per sample (z_MiE: a random clip of the
    class); triplets=T draws T triplets once (split over sources and classes) and samples them
    with replacement.
    """
    cfg = configure(**options)
    idents = _select(cfg)
    n = len(idents)
    unit_sources = cfg["sources"]
    rounds = cfg["samples"] // (len(CLASSES) * len(unit_sources)) if cfg["samples"] else n * cfg["per_class"]
    per_identity = [rounds // n + (1 if j < rounds % n else 0) for j in range(n)]
    rows = []
    for j, ident in enumerate(idents):
        for _ in range(per_identity[j]):
            for c in CLASSES:
                for s in unit_sources:
                    rows.append((j, c, s))
    df = pd.DataFrame(rows, columns=["slot", "class", "source"])
    df.insert(0, "sample", np.arange(len(df)))
    zo = np.zeros((len(df), au.N_AUS), np.float32)
    za = np.zeros((len(df), au.N_AUS), np.float32)
    emotion = np.empty(len(df), dtype=object)
    provenance = np.empty(len(df), dtype=object)
    videos, skipped = {}, {}
    t_split = sources.split_count(cfg["triplets"], len(unit_sources)) if cfg["triplets"] else None
    for si, s in enumerate(unit_sources):
        common = dict(seed=cfg["seed"], perturb=cfg["perturb"], alpha=cfg["alpha"], beta=cfg["beta"],
                      rule=cfg["rule"], mu=cfg["mu"], nu=cfg["nu"], table=cfg["table"],
                      dataset=cfg["mie_dataset"] if s == "mie" else cfg["mae_dataset"] if s == "mae" else None,
                      data_source=cfg["data_source"], data_root=cfg["data_root"], data_seed=cfg["data_seed"])
        if s != "exp":
            common["clips"] = sources.load_clips(s, common["dataset"], data_source=cfg["data_source"],
                                                 data_root=cfg["data_root"], data_seed=cfg["data_seed"])
        if t_split is None:
            pool = sources.triplets(s, per_class={c: rounds for c in CLASSES}, **common)
        else:
            pool = sources.triplets(s, t_split[si], **common)
        skipped[s] = [vars(k) for k in pool.skipped]
        for ci, c in enumerate(CLASSES):
            where = np.flatnonzero((df["source"].to_numpy() == s) & (df["class"].to_numpy() == c))
            of_class = np.flatnonzero(pool.label == c)
            if t_split is None:
                chosen = of_class[:len(where)]
            else:
                if len(of_class) == 0:
                    raise ValueError(f"{t_split[si]} {sources.SOURCE_NAMES[s]} triplets leave none of class {c!r}; "
                                     f"use at least {3 * len(unit_sources)} triplets")
                rng = np.random.default_rng([cfg["seed"], 41, sources.SOURCES.index(s), ci])
                chosen = of_class[rng.integers(0, len(of_class), len(where))]
            zo[where], za[where] = pool.z_onset[chosen], pool.z_apex[chosen]
            emotion[where], provenance[where] = pool.emotion[chosen], pool.provenance[chosen]
            if cfg["video"]:
                for k, i in zip(where, chosen):
                    videos[int(k)] = pool.path(int(i), cfg["video_frames"])
    frames = [_frame_paths(i, cfg["video"], cfg["video_frames"]) for i in range(len(df))]
    df["identity"] = [idents[j].index for j in df["slot"]]
    df["identity_name"] = [idents[j].name for j in df["slot"]]
    df["pool"] = cfg["pool"]
    df["emotion"] = emotion
    df["provenance"] = provenance
    # the subject a sample's AUs came from ("dataset/subject"; empty for z_exp): what fold exclusion matches
    df["provenance_subject"] = ["" if s == "exp" else "/".join(str(p).split("/")[:2])
                                for s, p in zip(df["source"], provenance)]
    df = pd.concat([df, pd.DataFrame(zo, columns=ZO), pd.DataFrame(za, columns=ZA)],
                   axis=1)
    df["onset"] = [f[0] for f in frames]
    df["apex"] = [f[-1] for f in frames]
    df["n_frames"] = [len(f) for f in frames]
    df["generator"] = cfg["generator"]
    df["seed"] = cfg["seed"]
    skipped["pool"] = _pool_skipped(cfg)
    return Plan(cfg, idents, df, videos, skipped)


def _tasks(p: Plan) -> list[tuple]:
    """One task per identity: (slot, identity spec, [(relative path, z)...]) in sample order."""
    zo, za = p.manifest[list(ZO)].to_numpy(np.float32), p.manifest[list(ZA)].to_numpy(np.float32)
    slots = p.manifest["slot"].to_numpy()
    per_slot: dict[int, list] = {}
    for k in range(len(p.manifest)):
        paths = _frame_paths(k, p.config["video"], p.config["video_frames"])
        zs = p.videos[k] if p.config["video"] else (zo[k], za[k])
        per_slot.setdefault(int(slots[k]), []).extend(zip(paths, zs))
    tasks = []
    for j, ident in enumerate(p.identities):
        spec = (ident.index, ident.path, ident.landmarks)
        tasks.append((j, spec, per_slot.get(j, [])))
    return tasks


# ---------------------------------------------------------------------------------------------
# Rendering (worker side: module-level functions, so spawned processes can import them)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # no metadata chunks: the same pixels always give the same bytes
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=COMPRESS_LEVEL)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename: a frame on disk is always complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _complete(path: Path) -> bool:
    """A PNG that exists and was written to its end (signature and IEND chunk)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(-12, os.SEEK_END)
            tail = fh.read(12)
    except OSError:
        return False
    return head == _PNG_SIGNATURE and tail[-8:] == _PNG_END


class _FaceRenderer:
    """G = mielib's face model: the identity's face rendered at the target AUs."""

    def __init__(self, pool: str, size: int):
        self.pool, self.size = pool, size
        self._photo = None  # (path, Face): a real identity's photo is read once for its key and its frames

    def face(self, spec):
        from . import face

        index, path, landmarks = spec
        if path is None:
            return face.identity(int(index), pool=self.pool)
        if self._photo is None or self._photo[0] != path:
            self._photo = (path, face.photo(read_image(Path(path)), landmarks))
        return self._photo[1]

    def render(self, spec, zs: np.ndarray) -> list[np.ndarray]:
        from . import face

        f = self.face(spec)
        if hasattr(face, "render_batch"):
            return list(face.render_batch([f] * len(zs), zs, size=self.size))
        return [face.render(f, z, size=self.size) for z in zs]


def frame_store() -> Path:
    """The shared frame store: `data/cache/miex/_frames` (MIELIB_DATA moves it with the cache)."""
    return runtime.folder("data") / "miex" / "_frames"


@functools.lru_cache(maxsize=None)
def _model_fingerprint() -> str:
    """The code and libraries that decide a frame's bytes besides its face, size and AUs.

    A store entry written by another face model (or another PNG encoder) is never reused:
    a build must give the same bytes whatever earlier builds left in the store.
    """
    import zlib

    import PIL
    import scipy

    from . import face, identity

    code = b"".join(Path(m.__file__).read_bytes() for m in (face, identity, au))
    versions = f"{np.__version__} {scipy.__version__} {PIL.__version__} {zlib.ZLIB_RUNTIME_VERSION} {COMPRESS_LEVEL}"
    return hashlib.sha256(code + versions.encode()).hexdigest()[:16]


def _store_path(shared: Path, face_key: str, size: int, z: bytes) -> Path:
    """Where the frame of this face at this size and AU vector (float32 bytes) lives in the store.

    face_key is the face model's own identity key: "pool:index" for the simulated pools, a
    digest of the pixels and landmarks for a real photo, so a changed photo is a new face.
    """
    h = hashlib.sha256(f"face\0{_model_fingerprint()}\0{face_key}\0{size}\0".encode() + z).hexdigest()[:32]
    return shared / h[:2] / f"{h}.png"


def _link(src: Path, dst: Path) -> None:
    """Put the store's frame at `dst`: a hard link (no second copy on disk), else a copy (another
    file system, or the link limit reached). Via a temporary name, so `dst` is always complete."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)  # rename onto a link of the same file leaves tmp in place


def _render_identity(renderer, out: Path, task: tuple, check: bool, shared: Path | None = None) -> tuple[int, int]:
    """Write one identity's frames; frames already complete on disk are kept.

    With a frame store (`shared`), frames found there are linked and only the others rendered.
    Returns (frames taken from the store, frames rendered now).
    """
    _, spec, frames = task
    todo = [(rel, np.asarray(z, np.float32).tobytes()) for rel, z in frames if not (check and _complete(out / rel))]
    if not todo:
        return 0, 0
    # identical AU vectors (z_exp onsets are all zero) are rendered and encoded once
    unique = list(dict.fromkeys(z for _, z in todo))
    entries, have = {}, set()
    if shared is not None:
        face_key = renderer.face(spec).key
        entries = {z: _store_path(shared, face_key, renderer.size, z) for z in unique}
        have = {z for z in unique if _complete(entries[z])}  # a torn entry is rendered again
    missing = [z for z in unique if z not in have]
    encoded = {}
    if missing:  # one batch per identity, as without the store
        images = renderer.render(spec, np.stack([np.frombuffer(z, np.float32) for z in missing]))
        encoded = {z: _png(np.asarray(img, dtype=np.uint8)) for z, img in zip(missing, images)}
        for z in missing:
            if shared is not None:
                entries[z].parent.mkdir(parents=True, exist_ok=True)
                _write(entries[z], encoded[z])  # atomic: workers writing the same entry both leave it whole
    for rel, z in todo:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if shared is not None:
            _link(entries[z], path)
        else:
            _write(path, encoded[z])
    reused = sum(z in have for _, z in todo)
    return reused, len(todo) - reused


_WORKER: dict = {}


def _init_worker(pool: str, size: int, out: str, shared: str | None) -> None:
    _WORKER.update(renderer=_FaceRenderer(pool, size), out=Path(out), shared=shared and Path(shared))


def _work(chunk: list[tuple]) -> list[tuple[int, int, int]]:
    w = _WORKER
    return [(task[0], *_render_identity(w["renderer"], w["out"], task, True, w["shared"])) for task in chunk]


class _GanRenderer:
    """G = a trained GANimation applied to the pool's face images (the paper's protocol)."""

    def __init__(self, cfg: Mapping):
        from . import ganimation

        self.gan = ganimation.load(cfg["gan_checkpoint"])
        self.size = cfg["size"]
        self.cfg = cfg
        self._pool = None

    def template(self, spec) -> np.ndarray:
        from PIL import Image

        index, path, _ = spec
        if path is None:
            from . import lab

            if self._pool is None:
                self._pool = lab.pool(self.cfg["pool"], seed=self.cfg["data_seed"], size=self.size)
            img = np.asarray(self._pool.image(int(index)))
        else:
            img = read_image(Path(path))
        if img.shape[:2] != (self.size, self.size):
            img = np.asarray(Image.fromarray(img).resize((self.size, self.size), Image.BILINEAR))
        return img

    def render(self, spec, zs: np.ndarray) -> list[np.ndarray]:
        x = self.template(spec)
        return list(self.gan.edit_batch(np.repeat(x[None], len(zs), axis=0), zs))


# ---------------------------------------------------------------------------------------------
# Output folder checks, journal, build

def _read_build(out: Path) -> dict | None:
    path = out / "build.json"
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); this folder is not a usable MiE-X build. "
                         "Delete it or choose another output folder") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{path}: not a mielib MiE-X build (expected format {FORMAT!r}); choose another output folder")
    return info


def _check_folder(out: Path, cfg: dict) -> dict | None:
    """The existing build.json of `out` when it holds this same build; an error for anything else."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; choose an output folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    info = _read_build(out)
    if info is not None and info.get("status") != "complete" and _failed_start(out):
        return None  # a start that failed before rendering anything: nothing in it depends on its config
    if info is None:
        raise ValueError(f"{out} is not empty and holds no build.json, so it is not a MiE-X build; mielib will not "
                         "write into it. Choose a new or empty folder")
    old, new = info.get("config", {}), _comparable(cfg)
    diff = [k for k in DEFAULTS if old.get(k) != new.get(k)]
    if diff:
        parts = ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in diff)
        raise ValueError(f"{out} holds a MiE-X build with another configuration ({parts}). Use another output "
                         "folder, or delete this one to rebuild")
    return info


def _failed_start(out: Path) -> bool:
    """Whether `out` holds only what a build writes before its first frame (build.json, an empty
    journal, empty folders): a failed start, which any build may reuse."""
    written = [p for p in out.rglob("*") if p.is_file() and p.name not in ("build.json", "journal.txt")]
    return not written and not _journal(out)


def _journal(out: Path) -> set[int]:
    path = out / "journal.txt"
    if not path.exists():
        return set()
    done = set()
    for line in path.read_text().splitlines():
        if line.strip().isdigit():  # a torn last line (killed mid-write) is ignored
            done.add(int(line))
    return done


def _record(fh, slots: Iterable[int]) -> None:
    fh.write("".join(f"{j}\n" for j in slots))
    fh.flush()
    os.fsync(fh.fileno())


def default_workers() -> int:
    """Worker processes for rendering: 2 (the paper-size build's budget assumes 2 cores), fewer on 1 core."""
    return max(1, min(2, os.cpu_count() or 1))


def build(out_dir: str | os.PathLike, *, workers: int | None = None, progress: bool = True, verbose: bool = False,
          share_frames: bool | None = None, **options) -> "MiEX":
    """Build MiE-X into `out_dir` (or finish an interrupted build of the same configuration).

    Options are `DEFAULTS`' keys (identities, sources, per_class, samples, triplets, generator,
    gan_checkpoint, pool, frontal, size, seed, alpha, beta, rule, mu, nu, table, mie_dataset,
    mae_dataset, perturb, video, video_frames, data_source, data_root, data_seed). `workers`
    processes render whole identities (face generator; the dataset is the same for any number).
    Every input (checkpoint, pool, datasets) is checked before anything is written. A folder
    holding another build, or anything but a MiE-X build, is an error, never overwritten; one
    holding only a failed start (build.json and no frame) is reused. `share_frames` (default: on,
    unless the environment sets MIELIB_MIEX_FRAME_STORE=0) takes face-generator frames from the
    frame store (`frame_store()`) and adds new ones to it; the bytes are the same either way.
    Returns the loaded dataset (`load`).
    """
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    cfg = configure(**options)
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    info = _check_folder(out, cfg)
    if info is not None and info.get("status") == "complete" and (out / "manifest.csv").exists():
        if verbose:
            print(f"{out}: already built ({info['summary']['samples']} samples); nothing to do")
        return load(out)
    # Every input is checked before anything is written to `out`: the plan reads the pool and the
    # AU source datasets, and a GANimation checkpoint is loaded now, so a wrong path fails here.
    p = plan(**cfg)
    tasks = _tasks(p)
    gan_renderer = _GanRenderer(cfg) if cfg["generator"] == "ganimation" else None
    if share_frames is None:
        share_frames = os.environ.get("MIELIB_MIEX_FRAME_STORE", "1") != "0"
    # GANimation frames are not shared: a network's output may depend on the batch it was
    # rendered in, so rendering only the missing frames could change bytes
    shared = frame_store() if share_frames and gan_renderer is None else None
    out.mkdir(parents=True, exist_ok=True)
    started = info.get("started") if info else _now()
    meta = {"format": FORMAT, "status": "building", "config": _comparable(cfg), "started": started,
            "mielib_commit": runtime.commit(), "data_source": cfg["data_source"],
            "skipped": p.skipped}
    store.write_json(out / "build.json", meta)
    for stale in out.glob("frames/**/.*.tmp"):  # temporary files of a killed run
        stale.unlink(missing_ok=True)
    done = _journal(out)
    todo = [t for t in tasks if t[0] not in done]
    reused = len(tasks) - len(todo)
    counts = np.zeros(2, np.int64)  # frames taken from the store, frames rendered
    bar = _bar(len(tasks), reused, progress)
    with open(out / "journal.txt", "a") as journal:
        if gan_renderer is not None or workers == 1 or len(todo) <= CHUNK:
            # one chunk: a worker process would only add its start-up
            renderer = gan_renderer or _FaceRenderer(cfg["pool"], cfg["size"])
            for task in todo:
                counts += _render_identity(renderer, out, task, True, shared)
                _record(journal, [task[0]])
                bar.update(1)
        else:
            import multiprocessing as mp

            chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
            ctx = mp.get_context("spawn")  # safe under Jupyter, macOS and torch
            with ctx.Pool(min(workers, len(chunks)), initializer=_init_worker,
                          initargs=(cfg["pool"], cfg["size"], str(out), shared and str(shared))) as pool:
                for result in pool.imap(_work, chunks):
                    counts += np.sum([r[1:] for r in result], axis=0)
                    _record(journal, [r[0] for r in result])
                    bar.update(len(result))
    bar.close()
    missing = [rel for _, _, frames in tasks for rel, _ in frames if not (out / rel).is_file()]
    if missing:  # never write a manifest that lists files that are not there
        raise RuntimeError(f"{len(missing)} frame(s) missing after the build (first: {out / missing[0]}); "
                           "run the build again to finish it")
    manifest = p.manifest.drop(columns=["slot"])
    store.write_text(out / "manifest.csv", manifest.to_csv(index=False))
    seconds = time.perf_counter() - t0
    meta.update(status="complete", finished=_now(), seconds_last_run=round(seconds, 2),
                summary=_summary_dict(manifest, out, cfg, frames_reused=int(counts[0]), frames_rendered=int(counts[1]),
                                       reused_identities=reused))
    store.write_json(out / "build.json", meta)
    (out / "journal.txt").unlink(missing_ok=True)
    if verbose:
        print(format_summary(meta["summary"], seconds))
    return load(out)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(total: int, initial: int, progress: bool):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="identity", desc="MiE-X", file=sys.stderr)


def _folder_bytes(out: Path) -> int:
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def _summary_dict(manifest: pd.DataFrame, out: Path, cfg: Mapping, *, frames_reused: int, frames_rendered: int,
                  reused_identities: int) -> dict:
    table = pd.crosstab(manifest["source"], manifest["class"]).reindex(index=list(cfg["sources"]),
                                                                       columns=list(CLASSES), fill_value=0)
    distinct = manifest.drop_duplicates(subset=["source", "class", *ZO, *ZA])
    return {
        "samples": int(len(manifest)),
        "by_source_class": {s: {c: int(table.loc[s, c]) for c in CLASSES} for s in table.index},
        "identities": int(manifest["identity"].nunique()),
        "frames": int(manifest["n_frames"].sum()),
        "frames_written_last_run": frames_reused + frames_rendered,
        # of those, linked from the frame store / rendered by this run: the store's hit rate
        "frames_reused": frames_reused, "frames_rendered": frames_rendered,
        "identities_reused_last_run": int(reused_identities),
        "distinct_triplets": int(len(distinct)),
        "bytes": int(_folder_bytes(out)),
        "generator": cfg["generator"], "pool": cfg["pool"], "size": cfg["size"], "seed": cfg["seed"],
        "data_source": cfg["data_source"],
    }


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def format_summary(summary: Mapping, seconds: float | None = None) -> str:
    """The summary printed after a build: samples by source x class, identities, frames, size."""
    lines = [f"MiE-X: {summary['samples']} samples, generator {summary['generator']}, pool {summary['pool']}, "
             f"{summary['size']} px, seed {summary['seed']}, data source {summary['data_source']}",
             "samples by AU source x class:",
             "  " + " " * 7 + "".join(f"{c:>10}" for c in CLASSES) + f"{'total':>10}"]
    for s in sorted(summary["by_source_class"], key=sources.SOURCES.index):  # JSON sorts keys; show paper order
        counts = summary["by_source_class"][s]
        lines.append(f"  {sources.SOURCE_NAMES[s]:<7}" + "".join(f"{counts[c]:>10}" for c in CLASSES)
                     + f"{sum(counts.values()):>10}")
    written = f"{summary['frames_written_last_run']} written now"
    if "frames_reused" in summary:  # builds before the frame store have no such count
        written += f": {summary['frames_reused']} from the frame store, {summary['frames_rendered']} rendered"
    lines.append(f"identities: {summary['identities']}; distinct AU triplets: {summary['distinct_triplets']}; "
                 f"frames: {summary['frames']} ({written})")
    tail = f"output size: {_human_bytes(summary['bytes'])}"
    if seconds is not None:
        tail = f"time: {seconds:.1f} s; " + tail
    lines.append(tail)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Loading, exclusion, cached datasets

@dataclass
class MiEX(ClipSet):
    """A built MiE-X dataset: a ClipSet (one clip per sample, frames onset .. apex, label3 = the
    class) usable by `views.OnsetApex`, `views.Apex` and `views.Stack`, plus its manifest and
    build record."""

    manifest: pd.DataFrame = field(default=None, repr=False)
    info: dict = field(default_factory=dict, repr=False)
    root: Path | None = None

    def summary(self) -> dict:
        return dict(self.info.get("summary", {}))

    def exclude(self, test: Iterable[str]) -> "MiEX":
        """The samples left for training when `test` (subject or clip keys) is the test fold."""
        return exclude(self, test)


def load(out_dir: str | os.PathLike, *, memory: bool = False) -> MiEX:
    """A finished build as a `MiEX` ClipSet. memory=True reads every frame once into a uint8
    array cache (`frames_<key>.npy` in the folder, memory-mapped afterwards) for fast training."""
    out = Path(out_dir).expanduser()
    info = _read_build(out)
    if info is None:
        raise FileNotFoundError(f"{out}: no build.json, so no MiE-X build here (build one with `python -m mielib "
                                "miex build --out DIR`)")
    if info.get("status") != "complete" or not (out / "manifest.csv").exists():
        raise ValueError(f"{out}: the build is not finished; run the same build again to complete it")
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False,
                           dtype={"provenance": str, "emotion": str, "class": str, "source": str})
    need = {"sample", "identity", "pool", "class", "source", "emotion", "provenance", "onset", "apex", "n_frames",
            *ZO, *ZA}
    missing = sorted(need - set(manifest.columns))
    if missing:
        raise ValueError(f"{out / 'manifest.csv'}: missing column(s) {', '.join(missing)}")
    cfg = info["config"]
    arrays = _frame_cache(out, manifest, cfg) if memory else None
    zo, za = manifest[list(ZO)].to_numpy(np.float32), manifest[list(ZA)].to_numpy(np.float32)
    cols = {c: manifest[c].tolist() for c in ("sample", "identity", "pool", "class", "source", "emotion",
                                              "provenance", "n_frames")}
    clips = []
    for k in range(len(manifest)):
        n, sample = int(cols["n_frames"][k]), int(cols["sample"][k])
        rels = _frame_paths(sample, bool(cfg["video"]), n)
        frames = ArrayFrames(arrays[k]) if arrays is not None else PathFrames([out / r for r in rels])
        clips.append(Clip(
            dataset="miex", subject=f"{cols['pool'][k]}{int(cols['identity'][k]):06d}", clip_id=f"{sample:06d}",
            frames=frames, fps=float("nan"), onset=0, apex=n - 1, offset=n - 1, label=str(cols["emotion"][k]),
            label3=str(cols["class"][k]),
            meta={"source": cols["source"][k], "provenance": cols["provenance"][k], "z_onset": zo[k],
                  "z_apex": za[k], "identity": int(cols["identity"][k]), "sample": sample}))
    return MiEX(name=f"miex:{out.name}", clips=clips, skipped=[], source=str(cfg.get("data_source", "sim")),
                manifest=manifest, info=info, root=out)


def _frame_cache(out: Path, manifest: pd.DataFrame, cfg: Mapping) -> np.ndarray:
    n_frames = manifest["n_frames"].to_numpy()
    if len(set(n_frames.tolist())) != 1:
        raise ValueError("memory=True needs the same number of frames per sample (video_frames fixed)")
    key = store.key({"manifest": store.key(manifest.to_csv(index=False)), "size": cfg["size"]})
    path = out / f"frames_{key}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    size, t = int(cfg["size"]), int(n_frames[0])
    arr = np.empty((len(manifest), t, size, size, 3), np.uint8)
    for k, sample in enumerate(manifest["sample"].to_numpy()):
        for i, rel in enumerate(_frame_paths(int(sample), bool(cfg["video"]), t)):
            arr[k, i] = read_image(out / rel)
    with store.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    return np.load(path, mmap_mode="r")


def exclude(data, test: Iterable[str]):
    """Drop the samples whose AUs came from the test fold (paper Section 5.1).

    `data`: a manifest DataFrame or a `MiEX`. `test`: subject keys "dataset/subject" (drop
    every sample whose z_MiE or z_MaE clip is that subject's) and/or clip keys
    "dataset/subject/clip". z_exp samples come from no clip and are always kept. Uses
    `protocols.exclude_provenance`; returns the same kind of object, `attrs["excluded"]` (or
    `info["excluded"]`) saying how many were dropped.
    """
    from . import protocols

    manifest = data.manifest if isinstance(data, MiEX) else data
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"exclude takes a MiE-X manifest (DataFrame) or a MiEX, got {type(data).__name__}")
    test = list(test)
    view = manifest.copy()
    view["provenance"] = np.where(view["source"].astype(str) == "exp", "", view["provenance"].astype(str))
    kept = protocols.exclude_provenance(view, test)
    dropped = int(kept.attrs.get("excluded", len(manifest) - len(kept)))
    if not isinstance(data, MiEX):
        out = manifest.loc[kept.index].copy()
        out.attrs["excluded"] = dropped
        return out
    keep = set(kept.index.tolist())
    clips = [c for i, c in enumerate(data.clips) if i in keep]
    return MiEX(name=data.name, clips=clips, skipped=list(data.skipped), source=data.source,
                manifest=manifest.loc[kept.index].reset_index(drop=True),
                info={**data.info, "excluded": dropped}, root=data.root)


def dataset(*, workers: int | None = None, progress: bool = True, memory: bool = False,
            share_frames: bool | None = None, **options) -> MiEX:
    """The MiE-X build of these options from the data cache (`data/cache/miex/<key>`), built on
    first use. Notebooks call this; the key is the complete configuration (not `share_frames`,
    which changes no byte)."""
    cfg = configure(**options)
    out = runtime.folder("data") / "miex" / store.key(_comparable(cfg))
    build(out, workers=workers, progress=progress, share_frames=share_frames, **cfg)
    return load(out, memory=memory)


# ---------------------------------------------------------------------------------------------
# Command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mielib miex",
        description="Build the MiE-X synthetic micro-expression dataset (MiE-X paper, Section 4), or describe a build.")
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build (or finish building) MiE-X into a folder",
                       description="Render onset/apex frames for identities x classes x AU sources, with a "
                                   "manifest. Re-running the same command continues an interrupted build.")
    b.add_argument("--out", required=True, help="output folder (new, empty, or an unfinished build of the same options)")
    b.add_argument("--ids", type=int, default=DEFAULTS["identities"], help="identities (paper: 5000)")
    b.add_argument("--per-id", type=int, default=DEFAULTS["per_class"],
                   help="samples per identity, class and AU source (paper: 1, i.e. 9 per identity)")
    b.add_argument("--samples", type=int, default=None, help="total samples instead of --per-id (Fig. 6b/c)")
    b.add_argument("--triplets", type=int, default=None,
                   help="distinct AU triplets shared by all samples (Fig. 6a; default: a fresh one per sample)")
    b.add_argument("--sources", default=",".join(DEFAULTS["sources"]), help="AU sources, e.g. mie,mae,exp or mae,exp")
    b.add_argument("--generator", default="face", choices=GENERATORS, help="G: mielib's face model or GANimation")
    b.add_argument("--gan-checkpoint", default=None, help="GANimation checkpoint (with --generator ganimation)")
    b.add_argument("--pool", default="emotionet", choices=POOLS, help="identity pool (supp. Table 1: celeba)")
    b.add_argument("--frontal", action="store_true", help="frontal faces only (Table 3)")
    b.add_argument("--size", type=int, default=DEFAULTS["size"], help="frame side in pixels (paper: 128)")
    b.add_argument("--seed", type=int, default=0, help="seed of identities, AU draws and rendering (default 0)")
    b.add_argument("--alpha", type=float, default=DEFAULTS["alpha"], help="z_MaE apex window start (paper: 0.3)")
    b.add_argument("--beta", type=float, default=DEFAULTS["beta"], help="z_MaE apex window end (paper: 0.5)")
    b.add_argument("--apex-rule", default="paper", choices=("paper", "authors"),
                   help="z_MaE apex draw: 'paper' (uniform index in [floor(alpha n), floor(beta n)]) or 'authors' "
                        "(floor(n U(alpha, beta)); their code used 0.25, 0.5)")
    b.add_argument("--mu", type=float, default=DEFAULTS["mu"], help="z_exp lowest intensity (paper: 0.1)")
    b.add_argument("--nu", type=float, default=DEFAULTS["nu"], help="z_exp highest intensity (paper: 0.3)")
    b.add_argument("--table", default="miex", choices=tuple(au.EXPERT_TABLES),
                   help="expert table for z_exp: the authors' map (miex) or Du et al. 2014")
    b.add_argument("--mie-dataset", default="composite", choices=sources.MIE_DATASETS, help="z_MiE clips")
    b.add_argument("--mae-dataset", default="ckplus", choices=sources.MAE_DATASETS, help="z_MaE sequences")
    b.add_argument("--perturb", type=float, default=0.0, help="add U(-p, p) to apex AUs")
    b.add_argument("--video", action="store_true", help="video variant for DTSCNN (Section 5.2)")
    b.add_argument("--video-frames", type=int, default=DEFAULTS["video_frames"], help="frames per video sample")
    b.add_argument("--workers", type=int, default=default_workers(), help="rendering processes (default: 2)")
    b.add_argument("--data-source", default="sim", choices=("sim", "real"),
                   help="'sim' = the simulated lab; 'real' = your licensed datasets under --data-root")
    b.add_argument("--data-root", default=None, help="folder holding the real datasets and identity pool")
    b.add_argument("--data-seed", type=int, default=0, help="the simulated lab's seed")
    b.add_argument("--no-frame-store", action="store_true",
                   help="render every frame, neither reusing nor adding to the shared frame store (data/cache/miex/_frames)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    i = sub.add_parser("info", help="describe a finished build", description="Print a build's summary and configuration.")
    i.add_argument("out", help="a MiE-X build folder")
    return parser


def cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "info":
            out = Path(args.out)
            info = _read_build(out)
            if info is None:
                raise FileNotFoundError(f"{out}: no build.json, so no MiE-X build here")
            if info.get("status") != "complete":
                print(f"{out}: unfinished build ({len(_journal(out))} identities done); run the same build again")
            else:
                print(format_summary(info["summary"]))
            print(json.dumps(info["config"], indent=1))
            return 0
        options = dict(
            identities=args.ids, per_class=args.per_id, samples=args.samples, triplets=args.triplets,
            sources=args.sources, generator=args.generator, gan_checkpoint=args.gan_checkpoint, pool=args.pool,
            frontal=args.frontal, size=args.size, seed=args.seed, alpha=args.alpha, beta=args.beta,
            rule=args.apex_rule, mu=args.mu, nu=args.nu, table=args.table, mie_dataset=args.mie_dataset,
            mae_dataset=args.mae_dataset, perturb=args.perturb, video=args.video, video_frames=args.video_frames,
            data_source=args.data_source, data_root=args.data_root, data_seed=args.data_seed)
        build(args.out, workers=args.workers, progress=not args.quiet, verbose=True,
              share_frames=False if args.no_frame_store else None, **options)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: finished identities are kept; run the same command again to continue", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
