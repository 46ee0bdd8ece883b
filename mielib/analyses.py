"""MiE-X Section 5.3 and the supplement (notebooks 06-09): Branches trained on MiE-X builds that
differ in one builder option, tested on CompMiE by subject-wise 3-fold cross-validation.

The paper trains each build alone and tests it on CompMiE (its Table 3 and supplementary Table 1
repeat Table 1's row 7, "MiE-X, no fine-tuning": 47.7 ± 0.5 UF1), so every build here is Table 1's
row 7 with another MiE-X: `paper.run_table1_row` with the build in place of MiE-X, fold exclusion
included (samples whose z_MiE was read from a test subject are left out of that fold's training).
The real-data bars of Fig. 5 (CompMiE, CompMiE + CK+) are rows 1 and 2.

    ctx = analyses.setup(session)                        # CompMiE, CK+, folds, sizes, references
    recs = analyses.train(ctx, {"sources": ("mae",)}, pool=pool)   # one build, every fold x repeat
    ctx.references                                        # majority class and linear reference

A build's options are miex.DEFAULTS' keys; what `setup` does not set (identities, size, seeds,
data source) comes from the preset and the session. Builds are cached by their options (and
share rendered frames), records by their configuration, so notebooks 06-09 reuse each other's.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from mielib import au, datasets, experiments, metrics, miex, paper, protocols
from mielib.clip import ClipSet

MODEL = "branches"  # Section 5.3: "All experiments in this section are performed on the Branches baseline"
NAME = "miex_builds"  # results/miex_builds/: one record per (build, fold, repeat)
DIRECT = paper.Row(7, "miex", False, False)  # trained on the build alone, tested on CompMiE
#: The paper's builder defaults, for settings tables.
PAPER_DEFAULTS = {"identities": 5000, "sources": "z_MiE + z_MaE + z_exp", "alpha, beta": "0.3, 0.5",
                  "mu, nu": "0.1, 0.3", "pool": "EmotioNet", "frontal": "all poses"}
#: The lab renders MiE-X and its test subjects with one face model: flagged beside every claim.
SAME_GENERATOR = ("MiE-X and the lab's test faces are rendered by the same face model, so MiE-X is closer to the "
                  "test data than synthetic faces are to real ones")


@dataclass
class Context:
    """What every analysis notebook shares: the test set, its folds, sizes and reference levels."""

    preset: dict
    data_source: str
    data_root: str | None
    seed: int
    input: str
    size: int  # the classifier's input side (px)
    load: int  # frames are read (and flow computed) at this side
    repeats: int
    composite: ClipSet
    ckplus: ClipSet
    folds: list
    y: np.ndarray  # CompMiE's labels as indices of au.MEGC3
    references: dict = field(default_factory=dict)  # "majority", "linear": {"uf1", "uar", "accuracy"}
    builds: dict = field(default_factory=dict)  # store.key of options -> summary of the build

    @property
    def flow(self) -> bool:
        return self.input == "flow"


def setup(session, input: str | None = None, *, references: bool = True) -> Context:
    """CompMiE and CK+ (3 classes, key frames in memory), CompMiE's subject-wise 3 folds, and the
    majority-class and linear references on them, for `session`'s preset and data source."""
    p = session.preset
    inp = input or p["input"]
    size = int(p["train_size"])
    load = max(size, int(p["flow_size"])) if inp == "flow" else size

    def get(name, **options):
        clips = datasets.load(name, session.data_source, session.data_root, seed=session.seed, size=load, **options)
        clips = paper.cap(paper.megc3(clips), p["clips_per_dataset"], seed=session.seed)
        return paper.load_keyframes(clips, size, flow=inp == "flow")

    composite = get("composite")
    ckplus = get("ckplus", selection="labelled")
    folds = protocols.split(composite, "kfold3", seed=session.seed)
    protocols.check(folds, composite)
    y = np.array([au.MEGC3.index(c.label3) for c in composite])
    ctx = Context(dict(p), session.data_source, session.data_root, session.seed, inp, size, load,
                  int(p["analyses_repeats"]), composite, ckplus, folds, y)
    if references:
        top = int(np.bincount(y, minlength=3).argmax())
        ctx.references["majority"] = metrics.scores(y, np.full_like(y, top), labels=range(3))
        pred = paper.linear_reference(composite, folds, y, input=inp, seed=session.seed)
        ctx.references["linear"] = metrics.scores(y, pred, labels=range(3))
    return ctx


def options(ctx: Context, **overrides) -> dict:
    """A build's complete options: the preset's identities at the read size, the session's seeds
    and data source, then `overrides` (sources, triplets, samples, alpha, pool, ...)."""
    base = {"identities": int(ctx.preset["table1_miex_identities"]), "size": ctx.load, "seed": ctx.seed,
            "data_seed": ctx.seed, "data_source": ctx.data_source, "data_root": ctx.data_root}
    return miex.configure(**{**base, **overrides})


def build(ctx: Context, overrides: Mapping, *, workers: int = 2) -> ClipSet:
    """The MiE-X build of `overrides` (cached under data/cache/miex), key-framed for training."""
    from mielib import store

    cfg = options(ctx, **dict(overrides))
    t0 = time.perf_counter()
    mx = miex.dataset(workers=workers, progress=False, **cfg)
    ctx.builds[store.key(miex._comparable(cfg))] = {**mx.summary(), "seconds": round(time.perf_counter() - t0, 1)}
    return paper.load_keyframes(mx, ctx.size, flow=ctx.flow)


def train(ctx: Context, overrides: Mapping, *, pool: cf.Executor | None = None, workers: int = 2) -> list[dict]:
    """Branches trained on the MiE-X build of `overrides` alone (Table 1's row 7 protocol) and
    tested on every CompMiE fold x repeat; cached records."""
    data = build(ctx, overrides, workers=workers)
    p = ctx.preset
    return paper.run_table1_row(DIRECT, MODEL, composite=ctx.composite, folds=ctx.folds, sets={"miex": data},
                                size=ctx.size, epochs_real=p["table1_epochs_real"], epochs_miex=p["table1_epochs_miex"],
                                preset=p, data_source=ctx.data_source, seed=ctx.seed, repeats=ctx.repeats,
                                name=NAME, workers=workers, pool=pool, progress=False, input=ctx.input)


def real(ctx: Context, number: int, *, pool: cf.Executor | None = None, workers: int = 2) -> list[dict]:
    """Table 1's row 1 (CompMiE) or 2 (CompMiE + CK+) for Branches: the real-data reference bars.
    The same configuration as notebook 04's, so its records are shared (notebook 04 runs fewer
    repeats in the small preset; the missing ones are computed here)."""
    if number not in (1, 2):
        raise ValueError(f"real-data rows are 1 (CompMiE) and 2 (CompMiE + CK+), got {number}")
    row = paper.TABLE1[number - 1]
    p = ctx.preset
    return paper.run_table1_row(row, MODEL, composite=ctx.composite, folds=ctx.folds, sets={"ckplus": ctx.ckplus},
                                size=ctx.size, epochs_real=p["table1_epochs_real"], epochs_miex=p["table1_epochs_miex"],
                                preset=p, data_source=ctx.data_source, seed=ctx.seed, repeats=ctx.repeats,
                                workers=workers, pool=pool, progress=False, input=ctx.input)


def per_repeat(groups: Mapping[str, list[dict]], *, order=None) -> pd.DataFrame:
    """One row per (group, repeat): UF1 and UAR (%) of the folds' pooled last-epoch predictions."""
    frames = []
    for name, recs in groups.items():
        s = experiments.scores(recs, by=(), selections=("last",))
        frames.append(pd.DataFrame({"group": name, "repeat": s["repeat"].to_numpy(),
                                    "UF1": 100 * s["uf1"].to_numpy(), "UAR": 100 * s["uar"].to_numpy()}))
    out = pd.concat(frames, ignore_index=True)
    if order is not None:
        out["group"] = pd.Categorical(out["group"], categories=list(order), ordered=True)
    return out


def summary(groups: Mapping[str, list[dict]], quoted: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Per group: UF1 and UAR as "mean ± std" over repeats (%), the numbers behind them, repeats,
    and the paper's quoted value where given (`quoted[group][metric]`, text "n/r" otherwise)."""
    rows = []
    quoted = quoted or {}
    for name, recs in groups.items():
        t = experiments.table(recs, by=(), selections=("last",)).iloc[0]
        row = {"training set": name}
        for m in ("uf1", "uar"):
            row[f"{m.upper()} ours"] = paper.fmt(100 * t[f"{m}_mean"], 100 * t[f"{m}_std"])
            q = quoted.get(name, {}).get(m.upper())
            row[f"{m.upper()} {paper.QUOTED}"] = paper.fmt(*q) if isinstance(q, tuple) else paper.fmt(q, None)
            row[f"{m}_mean"], row[f"{m}_std"] = 100 * t[f"{m}_mean"], 100 * t[f"{m}_std"]
        row["repeats"] = int(t["repeats"])
        rows.append(row)
    return pd.DataFrame(rows)


def builds_frame(ctx: Context) -> pd.DataFrame:
    """The builds this notebook used: samples, identities, frames taken from other builds
    (the shared frame store) and rendered, seconds (0 when the build was already cached)."""
    rows = []
    for key, s in ctx.builds.items():
        rows.append({"build": key[:10], **{k: s.get(k) for k in ("samples", "identities", "frames_reused",
                                                                   "frames_rendered", "seconds")}})
    return pd.DataFrame(rows)
