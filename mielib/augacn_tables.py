"""Notebook 10's protocols and tables (Xie et al. 2020, AU-GACN and AU-ICGAN; seed 002).

The tasks (CASME II in 7 classes and 3, SAMM in 8 and 3, each training set tested on SMIC),
the clips read once as K-frame sequences, LOSO / LOVO / cross-database folds, one runner for
every method with or without AU-ICGAN pre-training, the paper's metrics (ACC and F1 as it
defines them, plus UF1/UAR) and its quoted numbers beside ours. The systems themselves live in
`augacn` (STPNet, AU graph, AU-GACN, MER-GCN), `mebaselines` (STCNN, ELRCN, CapsuleNet) and
`auicgan`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from mielib import au, experiments, metrics, paper, protocols
from mielib.auicgan import positions
from mielib.clip import ArrayFrames, ClipSet, Skipped

#: The label spaces, in the paper's Table 1 column order.
CASME2_CLASSES = ("happiness", "disgust", "surprise", "fear", "sadness", "repression", "others")
SAMM_CLASSES = ("happiness", "disgust", "surprise", "fear", "sadness", "anger", "contempt", "others")
DATASETS = {"casme2": "CASME II", "samm": "SAMM", "smic": "SMIC"}
QUOTED_FILE = "augacn_tables"


@dataclass(frozen=True)
class Task:
    """One of the paper's single-database tasks: a dataset in one label space."""

    dataset: str  # datasets.load name: "casme2" or "samm"
    classes: tuple[str, ...]
    attr: str  # the clip attribute holding the label: "label" (original classes) or "label3" (MEGC)

    @property
    def name(self) -> str:
        return f"{self.dataset}-{len(self.classes)}"

    @property
    def paper_classes(self) -> str:
        """How the paper's tables name the label space: "7", "8" or "3"."""
        return str(len(self.classes))

    @property
    def title(self) -> str:
        return f"{DATASETS[self.dataset]} ({len(self.classes)} classes)"


TASKS = (Task("casme2", CASME2_CLASSES, "label"), Task("casme2", tuple(au.MEGC3), "label3"),
         Task("samm", SAMM_CLASSES, "label"), Task("samm", tuple(au.MEGC3), "label3"))


def in_space(clips: ClipSet, task: Task) -> ClipSet:
    """The clips whose label is in the task's space; the others join `skipped` with the reason
    (e.g. CASME II "others" has no MEGC 3-class label)."""
    keep, dropped = [], []
    for c in clips:
        value = getattr(c, task.attr)
        if value in task.classes:
            keep.append(c)
        else:
            dropped.append(Skipped(c.dataset, c.key, f"{task.attr} {value!r} is not in {task.name}'s classes"))
    return ClipSet(f"{clips.name}-{len(task.classes)}", keep, list(clips.skipped) + dropped, clips.source)


# ---------------------------------------------------------------------------------------------
# Sequences: every clip read once as K frames from onset to offset

class SequenceFrames(ArrayFrames):
    """A loaded sequence's K frames (K x H x W x 3 uint8) and, optionally, the optical flow from
    its first frame to each frame (`flows`, K x 3 x H x W; the views read it instead of
    computing flow at the small training size)."""

    def __init__(self, array: np.ndarray, flows: np.ndarray | None = None, apex: int = 0):
        super().__init__(array)
        self.flows = flows
        self.flow = None if flows is None else flows[apex]  # onset -> apex, as paper.KeyFrames holds it


def load_sequences(clips: ClipSet, size: int, n_frames: int, *, flow: bool = False, progress: bool = False) -> ClipSet:
    """The clips as K-frame sequences in memory: frames at `positions(onset, offset, K)` resized
    to `size`, onset 0, offset K-1, apex the sampled position nearest the annotated apex, and
    the AU readout (if any) at the same positions. The original positions stay in `meta`.
    `flow=True` also computes the optical flow from the onset to each frame at the clips' own
    resolution (load them larger, e.g. 128 px), resized to `size` and cached (mielib.flow).

    Every method of notebook 10 reads the whole sequence (STPNet, STCNN, ELRCN, MER-GCN) or its
    apex (CapsuleNet), so each fold in each worker reuses these instead of rendering again.
    """
    from tqdm.auto import tqdm

    from mielib import flow as flow_

    out = []
    for c in tqdm(list(clips), desc=f"{clips.name} sequences", disable=not progress, leave=False):
        where = positions(c.onset, c.offset, n_frames)
        try:
            full = [np.asarray(c.frames[p]) for p in where]
            frames = np.stack([paper._resize(f, size) for f in full])
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{c.key}: {exc}") from None
        flows = None
        if flow:  # one cached batch per clip: a changed clip recomputes only its own flows
            flows = flow_.for_pairs([(full[0], f) for f in full], size, name=c.key)
        apex = int(np.argmin([abs(p - int(c.apex)) for p in where]))
        readout = None if c.readout is None else np.asarray(c.readout)[where]
        meta = {**c.meta, "positions": where, "source_onset": int(c.onset), "source_apex": int(c.apex),
                "source_offset": int(c.offset)}
        out.append(replace(c, frames=SequenceFrames(frames, flows, apex), onset=0, apex=apex, offset=len(where) - 1,
                           readout=readout, meta=meta))
    return replace(clips, clips=out, skipped=list(clips.skipped))


# ---------------------------------------------------------------------------------------------
# Folds

def _reindexed(folds: Sequence[protocols.Fold]) -> list[protocols.Fold]:
    return [replace(f, index=i) for i, f in enumerate(folds)]


def loso(clips: ClipSet, task: Task, *, groups: int | None = None, seed: int = 0) -> list[protocols.Fold]:
    """Leave one subject out (the paper); `groups` = k deals the subjects into k subject-wise
    folds instead (the `small` preset's shortcut), stratified by the task's label."""
    df = clips.to_frame()
    if groups is None:
        return protocols.loso(df)
    return protocols.kfold(df, int(groups), seed=seed, label=task.attr)


def lovo(clips: ClipSet, task: Task, *, videos: int | None = None, seed: int = 0) -> list[protocols.Fold]:
    """Leave one video out (the paper: one fold per clip). `videos` = n tests only n clips,
    drawn with the seed and stratified by class (classes in turn, in proportion to their size,
    every class at least once while n allows); each is still one fold trained on all others."""
    folds = protocols.lovo(clips.to_frame())
    if videos is None or int(videos) >= len(folds):
        return folds
    labels = np.array([getattr(c, task.attr) for c in clips], dtype=object)
    rng = np.random.default_rng([int(seed), 10])
    by_class = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in task.classes if (labels == c).any()}
    share = {c: len(v) / len(labels) for c, v in by_class.items()}
    taken: dict[str, int] = {c: 0 for c in by_class}
    chosen: list[int] = []
    while len(chosen) < int(videos):
        # the class furthest below its share (never-drawn classes first), ties in class order
        open_ = [c for c in by_class if taken[c] < len(by_class[c])]
        c = min(open_, key=lambda c: (taken[c] > 0, taken[c] / max(len(chosen), 1) - share[c]))
        chosen.append(int(by_class[c][taken[c]]))
        taken[c] += 1
    return _reindexed([folds[i] for i in sorted(chosen)])


def combined(train: ClipSet, test: ClipSet, name: str) -> tuple[ClipSet, list[protocols.Fold]]:
    """Cross-database: one ClipSet holding both sets and its single fold (train on all of
    `train`, test on all of `test`; the datasets share no subject)."""
    both = ClipSet(name, list(train) + list(test), list(train.skipped) + list(test.skipped), train.source)
    df = both.to_frame()
    subjects = protocols.subject_keys(df)
    n = len(train)
    fold = protocols.Fold(0, tuple(sorted(set(subjects[:n].tolist()))), tuple(sorted(set(subjects[n:].tolist()))),
                          np.arange(n, dtype=np.int64), np.arange(n, len(both), dtype=np.int64),
                          protocol=f"cross:{train.name}->{test.name}")
    return both, [fold]


# ---------------------------------------------------------------------------------------------
# Methods

@dataclass(frozen=True)
class Method:
    """A classifier of the paper's tables: how to build it and what it reads."""

    name: str  # as the paper's tables name it
    module: str  # mielib module holding it
    cls: str  # its class there: a factory (n_classes, **kw) -> nn.Module
    view: str  # the view it reads: "au_stack" (AU-GACN, MER-GCN), "stack", "frame_flow_stack", "apex"
    graph: bool = False  # reads AU nodes (nodes=...) and the AU labels

    def factory(self) -> Callable:
        import importlib

        return getattr(importlib.import_module(f"mielib.{self.module}"), self.cls)


METHODS = {m.name: m for m in (
    Method("STCNN", "mebaselines", "MicroExpSTCNN", "stack"),
    Method("ELRCN", "mebaselines", "ELRCN", "frame_flow_stack"),
    Method("CapsuleNet", "mebaselines", "CapsuleNet", "apex"),
    Method("MER-GCN", "augacn", "MERGCN", "au_stack", graph=True),
    Method("AU-GACN", "augacn", "AUGACN", "au_stack", graph=True),
)}


INPUTS = ("frames", "flow")


def view(method: Method, clips, *, size: int, classes: Sequence[str], attr: str, n_frames: int,
         nodes: Sequence[int] = (), input: str = "frames"):
    """The torch Dataset `method` trains and tests on. `input="flow"`: the optical flow from the
    onset instead of the frames (a frame stack becomes a flow stack, CapsuleNet's apex frame the
    onset -> apex flow); ELRCN reads frames and flow either way, as its paper does."""
    from mielib import views

    if input not in INPUTS:
        raise ValueError(f"unknown input {input!r}; use 'frames' (the paper's) or 'flow'")
    kw = {"size": size, "labels": tuple(classes), "label_attr": attr}
    if method.view == "au_stack":
        from mielib import augacn

        return augacn.AUStack(clips, tuple(nodes), n_frames=n_frames, input=input, **kw)
    if input == "flow" and method.view == "stack":
        return views.FlowStack(clips, n_frames=n_frames, **kw)
    if input == "flow" and method.view == "apex":
        return views.Flow(clips, **kw)
    from mielib import mebaselines

    return mebaselines.view(method.name, clips, n_frames=n_frames, **kw)


@dataclass
class Data:
    """A picklable data provider for `experiments.cross_validate`: (fold) -> Split of `method`'s view."""

    clips: ClipSet
    method: Method
    size: int
    classes: tuple
    attr: str
    n_frames: int
    nodes: tuple = ()
    input: str = "frames"

    def part(self, idx):
        chosen = [self.clips[int(i)] for i in idx]
        if not chosen:
            return None
        return view(self.method, chosen, size=self.size, classes=self.classes, attr=self.attr,
                    n_frames=self.n_frames, nodes=self.nodes, input=self.input)

    def __call__(self, fold) -> experiments.Split:
        train, test = self.part(fold.train), self.part(fold.test)
        if train is None or test is None:
            raise ValueError(f"fold {fold.index}: no training or no test clips")
        return experiments.Split(train, test)


# ---------------------------------------------------------------------------------------------
# Scores as the paper defines them, and the quoted numbers

def fold_scores(records: Sequence[dict], n_classes: int) -> pd.DataFrame:
    """Per fold: accuracy and macro F1 of the last epoch (F1 over the classes present in the
    fold's truth), with the fold's test size."""
    rows = []
    for r in records:
        y, p = np.asarray(r["test"]["y_true"]), np.asarray(r["test"]["y_pred"])
        s = metrics.scores(y, p, labels=range(n_classes))
        rows.append({"fold": int(r["fold"]), "n": len(y), "accuracy": s["accuracy"], "f1": s["uf1"]})
    return pd.DataFrame(rows)


def pooled(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """All folds' last-epoch test predictions, concatenated: (y_true, y_pred)."""
    return metrics.pool([(np.asarray(r["test"]["y_true"]), np.asarray(r["test"]["y_pred"])) for r in records])


def scores(records: Sequence[dict], n_classes: int, protocol: str) -> dict[str, float]:
    """ACC and F1 as the paper reports them, and MEGC's UF1/UAR (fractions).

    LOSO: "the average of all results of different subjects" (paper §4.2), so ACC and F1 are the
    means over folds of each fold's accuracy and macro F1. LOVO and cross-database: pooled over
    all test clips (a fold of one video has no F1). UF1 and UAR: pooled, always (MEGC).
    """
    y, p = pooled(records)
    all_ = metrics.scores(y, p, labels=range(n_classes))
    out = {"UF1": all_["uf1"], "UAR": all_["uar"], "n": len(y), "folds": len(records)}
    if protocol in ("loso",) or protocol.startswith("kfold"):
        per = fold_scores(records, n_classes)
        out.update(ACC=float(per["accuracy"].mean()), F1=float(per["f1"].mean()))
    else:
        out.update(ACC=all_["accuracy"], F1=all_["uf1"])
    return out


def quoted(table: str) -> pd.DataFrame:
    """The paper's table (fractions): columns table, protocol, method, dataset, classes, metric, value."""
    df = paper.numbers(QUOTED_FILE)
    df = df[df["table"] == table].copy()
    if df.empty:
        raise ValueError(f"no quoted numbers for {table!r}; the file has {sorted(paper.numbers(QUOTED_FILE)['table'].unique())}")
    df["classes"] = df["classes"].astype(str)
    return df


def side_by_side(ours: Mapping[tuple[str, str, str], Mapping[str, float]], table: str,
                 columns: Sequence[tuple[str, str, str]], rows: Sequence[str]) -> pd.DataFrame:
    """One row per method; for each (dataset, classes, metric) column, ours and the paper's
    (quoted), in percent. `ours[(method, dataset, classes)]` maps "ACC"/"F1"/... to fractions.
    A method the paper does not list gets "–"; a number we did not compute "–"."""
    q = quoted(table)
    out = []
    for method in rows:
        row = {"method": method}
        for ds, classes, metric in columns:
            mine = ours.get((method, ds, classes), {}).get(metric)
            col = f"{ds} ({classes}) {metric}"
            row[f"{col} ours"] = "–" if mine is None else f"{100 * float(mine):.1f}"
            hit = q[(q["method"] == method) & (q["dataset"] == ds) & (q["classes"] == classes) & (q["metric"] == metric)]
            row[f"{col} {paper.QUOTED}"] = f"{100 * float(hit['value'].iloc[0]):.1f}" if len(hit) else "–"
        out.append(row)
    return pd.DataFrame(out)


def reference_records(y: np.ndarray, folds: Sequence[protocols.Fold], pred: np.ndarray) -> list[dict]:
    """Predictions of a reference (aligned with `y`) in the records' layout, fold by fold, so
    `scores` and `claims.compare` treat it as any method."""
    return [{"fold": int(f.index), "repeat": 0,
             "test": {"y_true": np.asarray(y)[f.test].tolist(), "y_pred": np.asarray(pred)[f.test].tolist()}}
            for f in folds]


def references(clips, y: np.ndarray, folds: Sequence[protocols.Fold], *, input: str = "frames",
               seed: int = 0) -> dict[str, list[dict]]:
    """The floor every method must clear, as records: the training folds' majority class, and a
    logistic regression on the same input (`paper.linear_reference`: the apex - onset pixel
    difference, or the onset -> apex flow)."""
    y = np.asarray(y)
    major = np.full(len(y), -1)
    for f in folds:
        major[f.test] = int(np.bincount(y[f.train]).argmax())
    linear = paper.linear_reference(clips, folds, y, input=input, seed=seed, cover=False)
    return {"majority class": reference_records(y, folds, major),
            "logistic regression": reference_records(y, folds, linear)}


# ---------------------------------------------------------------------------------------------
# Running a method

def model_kw(method: Method, preset: Mapping, nodes: Sequence[int] = (), input: str = "frames") -> dict:
    """The JSON-able settings `method` is built with at this preset's sizes and input."""
    kw = {"width": int(preset["augacn_width"])}
    if method.name == "AU-GACN":
        return {**kw, "nodes": [int(n) for n in nodes], "input": input, "node_dim": int(preset["augacn_node_dim"])}
    if method.graph:
        return {**kw, "nodes": [int(n) for n in nodes], "input": input}
    if method.name == "ELRCN":  # frames + flow + strain, whatever `input`
        return {**kw, "frames": int(preset["augacn_frames"]), "size": int(preset["augacn_size"])}
    channels = {"frames": 3, "flow": 2 if method.view == "stack" else 3}[input]
    extra = {"frames": int(preset["augacn_frames"])} if method.view == "stack" else {}
    return {**kw, **extra, "size": int(preset["augacn_size"]), "in_channels": channels}


def run(name: str, method: Method, task: Task, clips: ClipSet, folds: Sequence[protocols.Fold], *,
        preset: Mapping, data_source: str, seed: int = 0, nodes: Sequence[int] = (),
        input: str = "frames", pretrain: experiments.Pretrain | None = None, executor=None,
        progress: bool = True) -> list[dict]:
    """Train and test `method` on every fold (one repeat, last epoch reported, as the paper),
    cached under results/<name>/; `pretrain`: an AU-ICGAN pre-training stage (`synthetic_stage`)."""
    data = Data(clips, method, int(preset["augacn_size"]), tuple(task.classes), task.attr,
                int(preset["augacn_frames"]), tuple(int(n) for n in nodes), input)
    config = {"task": task.name, "clips": paper.fingerprint(clips), "labels": [getattr(c, task.attr) for c in clips],
              "size": data.size, "frames": data.n_frames, "view": method.view, "input": input}
    preset = {**preset, "batch_size": int(preset["augacn_batch"])}
    return experiments.cross_validate(
        name, folds, data, method.factory(), classes=task.classes, preset=preset, data_source=data_source, seed=seed,
        repeats=1, model_kw=model_kw(method, preset, nodes, input), config=config, epochs=int(preset["augacn_epochs"]),
        lr=float(preset["augacn_lr"]), pretrain=pretrain, executor=executor, progress=progress)


# ---------------------------------------------------------------------------------------------
# AU-ICGAN: one synthetic set per fold, then pre-training on it (Tables 1, 5 and 6; Fig. 3)

SYNTHETIC = "augacn-auicgan"  # results/<this>/: one record and one set (.npz) per (task, protocol, fold)


def identity_faces(data_source: str, n: int, *, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """AU-ICGAN's extra faces I_in with their AU readouts (the paper: AffectNet). On the lab: the
    first `n` faces of its EmotioNet-like identity pool; with real data none (the training
    clips' onset frames, which AU-ICGAN always adds, are the faces)."""
    if data_source != "sim" or n == 0:
        from mielib import au as au_

        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, au_.N_AUS), np.float32)
    from mielib import lab

    pool = lab.pool("emotionet", n=n, seed=seed, size=size)
    return np.stack([pool.image(i) for i in range(len(pool))]), np.asarray(pool.readout, np.float32)


@dataclass
class SyntheticWork:
    """The `experiments.run` work of one fold: train AU-ICGAN on the fold's training clips only,
    make the fold's class-balanced, per-subject synthetic set, store it beside the record."""

    clips: ClipSet
    task: Task
    folds: list
    faces: np.ndarray
    face_aus: np.ndarray
    settings: dict  # iterations, width, size, frames, scale, seed

    def __call__(self, unit: experiments.Unit) -> dict:
        import collections
        import io
        import time

        from mielib import auicgan, runtime, store, train

        s = self.settings
        fold = self.folds[unit.fold]
        train_clips = [self.clips[int(i)] for i in fold.train]
        tested = {self.clips[int(i)].key for i in fold.test}
        if tested & {c.key for c in train_clips}:
            raise RuntimeError(f"fold {unit.fold}: test clips among AU-ICGAN's training clips: "
                               f"{sorted(tested & {c.key for c in train_clips})[:5]}")
        seed = train.derive_seed(int(s["seed"]), "auicgan", unit.fold)
        t0 = time.perf_counter()
        trained = auicgan.train(train_clips, self.faces, self.face_aus, iterations=int(s["iterations"]), seed=seed,
                                size=int(s["size"]), width=int(s["width"]), frames=int(s["frames"]),
                                classes=self.task.classes, progress=False, device=s.get("device", "auto"))
        real = collections.Counter(c.label for c in train_clips)
        wanted = auicgan.counts({k: int(real.get(k, 0)) for k in self.task.classes}, float(s["scale"]),
                                total=auicgan.PAPER_TOTALS[self.task.dataset])
        faces = auicgan.pick_faces(train_clips, seed=seed)
        synthetic = auicgan.synthesize(trained.model, train_clips, faces, wanted, seed=seed, fold=unit.fold,
                                       dataset=self.task.dataset)
        path = runtime.folder("results") / SYNTHETIC / f"{unit.key}.npz"
        arrays = {"frames": np.stack([np.asarray(c.frames.array) for c in synthetic]),
                  "readout": np.stack([c.readout for c in synthetic]).astype(np.float32),
                  "apex": np.array([c.apex for c in synthetic]),
                  "text": np.array([[c.subject, c.clip_id, c.label, c.label3 or "", c.meta["source_aus"] or "", c.meta["source_clip"],
                                     c.meta["face_clip"]] for c in synthetic], dtype=str)}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        store.write_bytes(path, buf.getvalue())
        hist = trained.history
        return {"set": path.name, "n": len(synthetic), "counts": dict(collections.Counter(c.label for c in synthetic)),
                "subjects": sorted({c.subject for c in synthetic}), "sources": sorted({c.meta["source_clip"] for c in synthetic}),
                "train_keys": sorted(c.key for c in train_clips), "test_keys": sorted(tested),
                "gan_seconds": round(trained.seconds, 2), "gan_reused": bool(trained.reused),
                "gan_history_last": {k: float(v) for k, v in hist.iloc[-1].items()} if len(hist) else {},
                "work_seconds": round(time.perf_counter() - t0, 2)}


def synthetic_sets(task: Task, clips: ClipSet, folds: Sequence[protocols.Fold], *, protocol: str, preset: Mapping,
                   data_source: str, seed: int = 0, faces: tuple[np.ndarray, np.ndarray] | None = None,
                   executor=None, progress: bool = True) -> list[dict]:
    """One AU-ICGAN and its synthetic set per fold (cached units under results/augacn-auicgan/)."""
    settings = {"iterations": int(preset["auicgan_iterations"]), "width": int(preset["auicgan_width"]),
                "size": int(preset["augacn_size"]), "frames": int(preset["augacn_frames"]),
                "scale": float(preset["auicgan_scale"]), "seed": int(seed)}
    if faces is None:
        faces = identity_faces(data_source, int(preset["gan_images"]) if data_source == "sim" else 0,
                               size=settings["size"], seed=seed)
    config = {"task": task.name, "protocol": protocol, "clips": paper.fingerprint(clips), "settings": settings,
              "faces": len(faces[0]), "preset": preset["name"], "data_source": data_source}
    units = [experiments.Unit(SYNTHETIC, config, fold=i, split=experiments._split_key(f)) for i, f in enumerate(folds)]
    work = SyntheticWork(clips, task, list(folds), faces[0], faces[1], settings)
    return experiments.run(units, work, executor=executor, progress=progress)


def load_synthetic(record: Mapping, dataset: str) -> ClipSet:
    """A fold's synthetic set (stored by `SyntheticWork`) as a ClipSet. A sequence's FACS codes
    (`aus`, AU-GACN's AU labels) are those annotated on the clip whose AU intensities drove it:
    the lab's per-frame readouts are too noisy to threshold into AU labels (F1 about 0.3 against
    the annotations)."""
    from mielib import runtime
    from mielib.clip import Clip

    path = runtime.folder("results") / SYNTHETIC / record["set"]
    with np.load(path, allow_pickle=False) as f:
        frames, readout, apex, text = f["frames"], f["readout"], f["apex"], f["text"]
    clips = [Clip(f"auicgan-{dataset}", t[0], t[1], ArrayFrames(fr), 30.0, 0, int(a), len(fr) - 1, t[2], t[3] or None,
                  aus=t[4] or None, readout=r, meta={"source_clip": t[5], "face_clip": t[6]})
             for fr, r, a, t in zip(frames, readout, apex, text)]
    return ClipSet(f"auicgan-{dataset} fold {record['fold']}", clips, [], record["data_source"])


@dataclass
class SyntheticData:
    """`experiments.Pretrain.data`: (fold) -> `method`'s view of that fold's AU-ICGAN set."""

    records: dict  # fold index -> its `synthetic_sets` record
    method: Method
    task: Task
    size: int
    n_frames: int
    nodes: tuple = ()
    input: str = "frames"

    def __call__(self, fold):
        clips = load_synthetic(self.records[int(fold.index)], self.task.dataset)
        return view(self.method, list(clips), size=self.size, classes=self.task.classes, attr="label",
                    n_frames=self.n_frames, nodes=self.nodes, input=self.input)


def synthetic_stage(records: Sequence[dict], method: Method, task: Task, preset: Mapping,
                    nodes: Sequence[int] = (), input: str = "frames") -> experiments.Pretrain:
    """AU-ICGAN pre-training for `method` (Tables 5-6): each fold pre-trains on its own set."""
    data = SyntheticData({int(r["fold"]): r for r in records}, method, task, int(preset["augacn_size"]),
                         int(preset["augacn_frames"]), tuple(int(n) for n in nodes), input)
    return experiments.Pretrain(data, tuple(task.classes), {"auicgan": [r["key"] for r in records],
                                                            "view": method.view, "input": input},
                                epochs=int(preset["auicgan_epochs"]))


# ---------------------------------------------------------------------------------------------
# Figure 4: the top-5 AU node scores of one clip

def retrain(record: Mapping, clips: ClipSet, task: Task, fold: protocols.Fold, preset: Mapping, nodes: Sequence[int]):
    """The AU-GACN of one unit, trained again exactly as its unit was (same seeds, data,
    settings and torch thread count; CPU training is then deterministic), so its AU node scores
    can be read. Checks that it predicts the unit's stored last-epoch test predictions (on CPU),
    and returns the model."""
    import torch

    from mielib import train

    method = METHODS["AU-GACN"]
    data = Data(clips, method, int(preset["augacn_size"]), tuple(task.classes), task.attr,
                int(preset["augacn_frames"]), tuple(int(n) for n in nodes), record["config"]["data"]["input"])
    split = data(fold)
    unit_seed = int(record["unit_seed"])
    with train.seeded(train.derive_seed(unit_seed, "init")):
        net = method.factory()(len(task.classes), **record["config"]["model_kw"])
    experiments._prepare(net, split.train)
    # The unit trained in a pool worker with its share of the cores; a different thread count
    # changes CPU float sums, and a model that learns amplifies them into other predictions.
    before = torch.get_num_threads()
    threads = int(record.get("torch_threads", before))
    torch.set_num_threads(threads)
    try:
        hist = train.fit(net, split.train, epochs=int(record["config"]["epochs"]), seed=train.derive_seed(unit_seed, "train"),
                         test=split.test, batch_size=int(record["config"]["batch_size"]),
                         lr=float(record["config"]["lr"]), device="cpu", progress=False, desc="Fig. 4 AU-GACN")
    finally:
        torch.set_num_threads(before)
    stored = np.asarray(record["test"]["y_pred"])
    if not np.array_equal(hist.test_pred[-1], stored):
        raise RuntimeError(f"{record.get('key')}: retraining with {threads} torch thread(s) did not reproduce the "
                           f"unit's predictions ({int((hist.test_pred[-1] != stored).sum())} of {len(stored)} differ)")
    return net.eval(), split.test


def top_au_nodes(net, test_set, index: int, k: int = 5) -> pd.DataFrame:
    """The `k` AU nodes with the highest scores for test clip `index`, with whether the clip's
    FACS codes contain each."""
    import torch

    from mielib import augacn

    item = test_set[index]
    with torch.no_grad():
        scores = net.au_scores(item["inputs"][None].float())[0].numpy()
    clip = test_set.clips[index]
    annotated = set(augacn.parse_aus(clip.aus, where=clip.key))
    order = np.argsort(-scores)[:k]
    return pd.DataFrame({"AU": [f"AU{net.nodes[i]}" for i in order], "score": scores[order],
                         "annotated": [net.nodes[i] in annotated for i in order]})


def figure4(panels: Sequence[tuple[str, pd.DataFrame]]):
    """One horizontal bar chart per clip: its top AU node scores, annotated AUs filled."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.8), squeeze=False)
    for ax, (title, top) in zip(axes[0], panels):
        colours = ["#4c72b0" if a else "white" for a in top["annotated"]]
        ax.barh(top["AU"][::-1], top["score"][::-1], color=colours[::-1], edgecolor="#4c72b0")
        ax.set_xlim(0, 1)
        ax.set_xlabel("AU node score (sigmoid)")
        ax.set_title(title, fontsize=9)
    fig.text(0.5, -0.08, "filled: the AU is in the clip's FACS codes; open: it is not", ha="center", fontsize=8)
    fig.tight_layout()
    return fig
