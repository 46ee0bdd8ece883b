"""Cached, resumable experiments: each (configuration, fold, repeat) is a unit of work whose
record is stored atomically under results/<experiment>/<key>.json and reused on re-runs.

Used by the results notebooks 04-11 (`cross_validate`, then `table` / `scores`) and by
`python -m mielib results ls|rm`. An interrupted run loses only the units that were running.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as _dt
import io
import json
import multiprocessing
import os
import pickle
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from mielib import __version__, metrics, presets, runtime, store

FORMAT = "mielib.result/1"
PRETRAINED = "_pretrained"  # results/_pretrained/<key>.pt: pre-trained weights shared by experiments
# Keys that the engine writes into every record; a unit's own result may not use them.
_META = ("format", "status", "name", "key", "fold", "repeat", "config", "split", "commit",
         "mielib_version", "created", "seconds", "preset", "data_source", "seed")


# ---------------------------------------------------------------------------------------------
# Units and their records

@dataclass(frozen=True)
class Unit:
    """One unit of work: an experiment's configuration on one fold in one repeat.

    `config` must be JSON-able and describe everything that changes the result (data, model,
    preset, seed, ...): it is hashed into the cache key. `split` optionally fingerprints the
    fold's subjects and samples, so a changed split never reuses an old record.
    """

    name: str
    config: Mapping = field(hash=False)
    fold: int = 0
    repeat: int = 0
    split: str | None = None

    def __post_init__(self):
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith((".", "_")):
            raise ValueError(f"experiment name {self.name!r} must be non-empty, without slashes, "
                             "and not start with '.' or '_'")

    @property
    def key(self) -> str:
        """The cache key: a hash of the configuration, fold, repeat (and split fingerprint)."""
        extra = {"split": self.split} if self.split else {}
        return store.key({**dict(self.config), "fold": int(self.fold), "repeat": int(self.repeat), **extra})

    @property
    def path(self) -> Path:
        return runtime.folder("results") / self.name / f"{self.key}.json"

    def __str__(self) -> str:
        return f"{self.name} fold {self.fold} repeat {self.repeat} (key {self.key})"


def _read(path: Path, key: str | None = None) -> dict | None:
    """A finished record, or None when there is none (or it is unreadable, with a warning).

    Records are renamed into place only once fully written (store.atomic_path), so a killed
    run leaves at most a hidden *.tmp file, which is never read here.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"{path}: unreadable result record ({exc}); it will be recomputed", stacklevel=3)
        return None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or rec.get("status") != "done":
        warnings.warn(f"{path}: not a finished mielib result record; it will be recomputed", stacklevel=3)
        return None
    # A record that parses and says "done" but lacks fields the engine always writes (an edit, a
    # copy from another tool) is as unusable as a truncated one: listing or reusing it would fail.
    missing = [k for k in _META if k not in rec]
    if missing or not isinstance(rec.get("config"), dict):
        warnings.warn(f"{path}: result record lacks field(s) {', '.join(missing) or 'config (not a mapping)'}; "
                      "it is ignored and will be recomputed", stacklevel=3)
        return None
    if key is not None and rec.get("key") != key:
        warnings.warn(f"{path}: holds key {rec.get('key')!r}, not {key!r}; it will be recomputed", stacklevel=3)
        return None
    return rec


def _compute(unit: Unit, work: Callable[[Unit], dict]) -> dict:
    """Run one unit and store its record atomically; return the record."""
    started = time.perf_counter()
    result = work(unit)
    if not isinstance(result, Mapping):
        raise TypeError(f"{unit}: work returned {type(result).__name__}, not a dict")
    clash = sorted(set(result) & set(_META))
    if clash:
        raise ValueError(f"{unit}: work's result uses reserved record keys {clash}")
    config = dict(unit.config)
    record = {
        "format": FORMAT, "status": "done", "name": unit.name, "key": unit.key,
        "fold": int(unit.fold), "repeat": int(unit.repeat), "config": config, "split": unit.split,
        "preset": config.get("preset"), "data_source": config.get("data_source"), "seed": config.get("seed"),
        "commit": runtime.commit(), "mielib_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        **dict(result),
    }
    try:
        store.write_json(unit.path, record)
    except TypeError as exc:
        raise TypeError(f"{unit}: its result cannot be stored as JSON ({exc})") from None
    # Hand back what a later run reads, so first and cached runs return equal records.
    stored = _read(unit.path, unit.key)
    if stored is None:
        raise RuntimeError(f"{unit.path}: the record could not be read back right after writing it")
    return stored


def _init_worker(threads: int) -> None:
    import torch

    # Workers share the cores: one BLAS pool per worker of cores/workers threads.
    torch.set_num_threads(max(1, threads))


def process_pool(workers: int) -> cf.Executor:
    """A pool of `workers` spawned processes sharing the cores (cores/workers torch threads each).

    Pass it to `run`/`cross_validate` as `executor=` to reuse one pool across many calls."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_init_worker, initargs=(threads,))


def executor(kind: str = "local", *, workers: int = 2, folder: str | os.PathLike | None = None,
             slurm: Mapping | None = None) -> cf.Executor:
    """Where missing units run: pass it to `run` / `cross_validate` as `executor=`, reuse it for a
    whole notebook, and `.shutdown()` it at the end.

    - "local": `process_pool(workers)`, spawned processes on this machine.
    - "submitit": one submitit job per unit, on Slurm when the machine has it, else as local
      processes (at most `workers` at a time). `slurm` holds the options, e.g.
      `{"partition": "gpu", "gpus_per_node": 1, "timeout_min": 240, "cpus_per_task": 8,
      "mem_gb": 32}`; `"cluster": "local"` (or `"debug"`, in this process) forces where jobs run.
      `cluster.option_names()` lists them all. Job logs go to `folder` (default
      results/_submitit). Units are cached by key either way, so a cluster run and a laptop run
      share the results folder and a resubmission skips the finished units.
    """
    if kind == "local":
        if slurm:
            warnings.warn(f"the local executor ignores the slurm options {dict(slurm)}; use kind 'submitit'",
                          stacklevel=2)
        return process_pool(int(workers))
    if kind == "submitit":
        from mielib import cluster

        where = Path(folder) if folder is not None else runtime.folder("results") / "_submitit"
        return cluster.executor(workers=workers, folder=where, options=slurm)
    raise ValueError(f"unknown executor kind {kind!r}; use 'local' (processes on this machine) or 'submitit' "
                     "(Slurm jobs, or submitit's local processes where there is no Slurm)")


def run(units: Iterable[Unit], work: Callable[[Unit], dict], *, workers: int = 1,
        executor: cf.Executor | None = None, progress: bool = True) -> list[dict]:
    """Records of `units` in order: cached ones are read, missing ones computed by `work`.

    `work(unit) -> dict` must be deterministic in the unit and return JSON-able values; its
    dict is stored with the unit's metadata (config, fold, repeat, preset, data source, seed,
    mielib commit, time). With `workers > 1` missing units run in that many spawned processes
    (then `work` must be picklable: a module-level function or a callable object, not a lambda
    or a function defined in a notebook). Any `concurrent.futures.Executor` can be passed as
    `executor` instead (e.g. a cluster scheduler's); each unit is written by whoever runs it.
    On a failure pending units are cancelled, finished ones stay stored, and the error is
    raised with a note naming the unit: re-running resumes where it stopped.
    """
    from tqdm.auto import tqdm

    units = list(units)
    keys = {}
    for u in units:
        keys.setdefault((u.name, u.key), u)
    records: dict[tuple[str, str], dict] = {}
    for ident, u in keys.items():
        rec = _read(u.path, u.key)
        if rec is not None:
            records[ident] = rec
    todo = [u for ident, u in keys.items() if ident not in records]
    names = sorted({u.name for u in units})
    bar = tqdm(total=len(keys), initial=len(records), desc=f"{', '.join(names)[:40]}: units", unit="unit",
               disable=not progress or not todo, dynamic_ncols=True)
    try:
        if todo and executor is None and workers <= 1:
            for u in todo:
                try:
                    records[(u.name, u.key)] = _compute(u, work)
                except BaseException as exc:
                    _note(exc, u)
                    raise
                bar.update(1)
        elif todo:
            try:
                blob = pickle.dumps(work)
            except Exception as exc:
                raise TypeError(f"work must be picklable to run in worker processes ({exc}); define it at module "
                                "level in a .py file (not a lambda or a notebook cell), or use workers=1") from None
            if b"__main__" in blob and not hasattr(sys.modules.get("__main__"), "__file__"):
                # Spawned workers cannot import what a notebook or REPL defined.
                raise TypeError("work (or a data provider or model it holds) is defined in a notebook or REPL; "
                                "spawned workers cannot import it: move it into a .py module, or use workers=1")
            own = executor is None
            pool = process_pool(workers) if own else executor
            try:
                futures = {pool.submit(_compute, u, work): u for u in todo}
                failure = None
                for fut in cf.as_completed(futures):
                    u = futures[fut]
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is not None:
                        if failure is None:
                            failure = (exc, u)
                            for other in futures:
                                other.cancel()
                        continue
                    records[(u.name, u.key)] = fut.result()
                    bar.update(1)
                if failure is not None:
                    _note(failure[0], failure[1])
                    raise failure[0]
            finally:
                if own:
                    pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    return [records[(u.name, u.key)] for u in units]


def _note(exc: BaseException, unit: Unit) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(f"while computing {unit}; finished units are stored, re-run to resume")


# ---------------------------------------------------------------------------------------------
# Reading and removing what is cached

def _experiment_dirs(name: str | None = None) -> list[Path]:
    root = runtime.folder("results")
    if name is not None:
        d = root / name
        return [d] if d.is_dir() else []
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))


def records(name: str | None = None) -> list[dict]:
    """All finished records of experiment `name` (every experiment when None), sorted."""
    out = []
    for d in _experiment_dirs(name):
        for path in sorted(d.glob("*.json")):
            rec = _read(path)
            if rec is not None:
                out.append(rec)
    out.sort(key=lambda r: (r["name"], r["repeat"], r["fold"], r["key"]))
    return out


def _metric(rec: dict, selection: str, metric: str):
    m = rec.get("metrics") or {}
    sel = m.get(selection) if isinstance(m, dict) else None
    return sel.get(metric) if isinstance(sel, dict) else None


def load(name: str | None = None) -> pd.DataFrame:
    """One row per cached record: identity, provenance and the per-fold metrics.

    Columns: name, key, fold, repeat, preset, data_source, seed, commit, created, seconds,
    <selection>_<metric> for selection in last / best_oracle / val_selected and metric in
    uf1 / uar / accuracy (per fold, not pooled), and `record` (the full dict, for `table`).
    """
    rows = []
    for rec in records(name):
        row = {k: rec.get(k) for k in ("name", "key", "fold", "repeat", "preset", "data_source", "seed",
                                       "commit", "created", "seconds")}
        for sel in ("last", "best_oracle", "val_selected"):
            for m in ("uf1", "uar", "accuracy"):
                row[f"{sel}_{m}"] = _metric(rec, sel, m)
        row["record"] = rec
        rows.append(row)
    columns = ["name", "key", "fold", "repeat", "preset", "data_source", "seed", "commit", "created", "seconds",
               *[f"{s}_{m}" for s in ("last", "best_oracle", "val_selected") for m in ("uf1", "uar", "accuracy")],
               "record"]
    return pd.DataFrame(rows, columns=columns)


def invalidate(name: str, key: str | Iterable[str] | None = None,
               where: Callable[[dict], bool] | Mapping | None = None) -> int:
    """Delete cached records of experiment `name`; return how many were removed.

    `key`: one key or several (a unique prefix of at least 4 characters is enough). `where`: a
    predicate on the record, or a mapping of config values that must all match. Neither: the
    whole experiment, including temporary files left by killed runs. For `_pretrained`, removes
    the cached pre-trained weights.
    """
    d = runtime.folder("results") / name
    if not d.is_dir():
        raise FileNotFoundError(f"no cached results named {name!r} in {runtime.folder('results')}")
    if name == PRETRAINED:
        paths = list(d.glob("*.pt"))
        if key is not None or where is not None:
            raise ValueError("pre-trained weights can only be removed all at once")
    else:
        paths = sorted(d.glob("*.json"))
    if key is not None:
        wanted = [key] if isinstance(key, str) else list(key)
        chosen = []
        stems = [p.stem for p in paths]
        for k in wanted:
            hits = [p for p, s in zip(paths, stems) if s == k or (len(k) >= 4 and s.startswith(k))]
            if not hits:
                raise KeyError(f"no record with key {k!r} in {name!r}")
            if len(hits) > 1:
                raise KeyError(f"key prefix {k!r} matches {len(hits)} records in {name!r}; give more characters")
            chosen += hits
        paths = chosen
    if where is not None:
        pred = where if callable(where) else (lambda rec: all(_lookup(rec, k) == v for k, v in where.items()))
        kept = []
        for p in paths:
            rec = _read(p)
            if rec is not None and pred(rec):
                kept.append(p)
        paths = kept
    for p in paths:
        p.unlink(missing_ok=True)
    if key is None and where is None:
        for tmp in d.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    if d.is_dir() and not any(d.iterdir()):
        d.rmdir()
    return len(paths)


def _lookup(rec: Mapping, field_: str):
    """A record field: top-level first ('name', 'preset', ...), then config, dots for nesting."""
    if field_ in rec and field_ != "config":
        return rec[field_]
    node: Any = rec.get("config", {})
    for part in field_.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------
# Aggregation: pool folds per repeat, then mean ± std over repeats

def _as_records(recs) -> list[dict]:
    if isinstance(recs, pd.DataFrame):
        if "record" not in recs.columns:
            raise ValueError("a DataFrame of records needs the 'record' column that experiments.load returns")
        return list(recs["record"])
    return list(recs)


def _hashable(v):
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def _fold_predictions(rec: dict, selection: str, metric: str, classes: str) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) of one record's test fold at the epoch `selection` picks."""
    if not rec.get("test") or not rec.get("history"):
        raise ValueError(f"record {rec.get('name')}/{rec.get('key')} holds no test predictions")
    y_true = np.asarray(rec["test"]["y_true"])
    per_epoch = rec["history"]["test_pred"]
    if selection == "last":
        return y_true, np.asarray(per_epoch[-1])
    if selection == "best_oracle":
        n = len(rec["classes"])
        values = [metrics.scores(y_true, p, labels=range(n), classes=classes)[metric] for p in per_epoch]
        return y_true, np.asarray(per_epoch[int(np.argmax(values))])
    if selection == "val_selected":
        sel = (rec.get("metrics") or {}).get("val_selected")
        if not sel:
            return y_true, None
        return y_true, np.asarray(per_epoch[int(sel["epoch"]) - 1])
    raise ValueError(f"unknown selection {selection!r}; use last, best_oracle or val_selected")


def scores(recs, *, by: Sequence[str] = ("name",), pooling: str = "pooled",
           selections: Sequence[str] = ("last", "best_oracle", "val_selected"),
           classes: str = "true", complete: bool = True) -> pd.DataFrame:
    """Per-repeat scores of each group of records: one row per (group, repeat, selection).

    `pooling="pooled"` (MEGC and the MiE-X authors): the folds' test predictions are
    concatenated, then UF1 / UAR / accuracy computed once. `"fold_mean"`: the mean of per-fold
    scores (the paper's text: "the average accuracy of the k tests"). For `best_oracle` each
    fold contributes its predictions at the epoch maximising that metric on its own test set
    (an oracle; the paper's Table 2 "Best"). `val_selected` rows appear only when validation
    subjects were held out. With `complete=True` a repeat missing folds raises.
    Use these rows for significance tests; `table` summarises them.
    """
    if pooling not in ("pooled", "fold_mean"):
        raise ValueError(f"unknown pooling {pooling!r}; use 'pooled' or 'fold_mean'")
    recs = _as_records(recs)
    if not recs:
        raise ValueError("no records to score")
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault(tuple(_hashable(_lookup(r, b)) for b in by), []).append(r)
    rows = []
    for gkey, members in groups.items():
        n_folds = max((r["config"].get("n_folds") or 0) for r in members) or len({r["fold"] for r in members})
        by_repeat: dict[int, dict[int, dict]] = {}
        for r in members:
            by_repeat.setdefault(int(r["repeat"]), {})[int(r["fold"])] = r
        for rep, folds in sorted(by_repeat.items()):
            missing = sorted(set(range(n_folds)) - set(folds))
            if missing and complete:
                raise ValueError(f"group {dict(zip(by, gkey))}: repeat {rep} lacks folds {missing}; finish the run "
                                 "or pass complete=False")
            fold_recs = [folds[f] for f in sorted(folds)]
            n_cls = len(fold_recs[0]["classes"])
            for sel in selections:
                row = {**dict(zip(by, gkey)), "repeat": rep, "selection": sel, "folds": len(fold_recs)}
                for m in ("uf1", "uar", "accuracy"):
                    pairs = [_fold_predictions(r, sel, m, classes) for r in fold_recs]
                    if any(p is None for _, p in pairs):
                        row[m] = None
                        continue
                    if pooling == "pooled":
                        yt, yp = metrics.pool(pairs)
                        row[m] = metrics.scores(yt, yp, labels=range(n_cls), classes=classes)[m]
                    else:
                        row[m] = float(np.mean([metrics.scores(t, p, labels=range(n_cls), classes=classes)[m]
                                                for t, p in pairs]))
                if row["uf1"] is not None:
                    rows.append(row)
    return pd.DataFrame(rows)


def table(recs, *, by: Sequence[str] = ("name",), pooling: str = "pooled",
          selections: Sequence[str] = ("last", "best_oracle", "val_selected"), classes: str = "true",
          digits: int = 1, complete: bool = True) -> pd.DataFrame:
    """Mean ± std over repeats of the per-repeat scores (`scores`), one row per group and selection.

    Columns: the `by` fields, selection, uf1 / uar / accuracy as text in percent ("45.2 ± 0.7"),
    their <metric>_mean and <metric>_std as fractions, repeats, folds, preset and data_source.
    The "best_oracle" rows pick epochs on the test set: label them as an oracle wherever shown.
    """
    recs = _as_records(recs)
    per_repeat = scores(recs, by=by, pooling=pooling, selections=selections, classes=classes, complete=complete)
    stamps: dict[tuple, tuple[str, str]] = {}
    for r in recs:
        g = tuple(_hashable(_lookup(r, b)) for b in by)
        p, s = stamps.get(g, (set(), set()))
        stamps[g] = (p | {str(r.get("preset"))}, s | {str(r.get("data_source"))})
    rows = []
    for gkey, sub in per_repeat.groupby([*by, "selection"], sort=False, dropna=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        row = dict(zip([*by, "selection"], gkey))
        for m in ("uf1", "uar", "accuracy"):
            s = metrics.summarize(sub[m].astype(float), digits=digits)
            row[m], row[f"{m}_mean"], row[f"{m}_std"] = s.text, s.mean, s.std
        row["repeats"] = int(sub["repeat"].nunique())
        row["folds"] = int(sub["folds"].max())
        presets_, sources = stamps[tuple(gkey[:len(by)])]
        row["preset"], row["data_source"] = ", ".join(sorted(presets_)), ", ".join(sorted(sources))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Cross-validation: the unit of work of every results notebook

class Split(NamedTuple):
    """What a data provider returns for one fold: torch datasets (val may be None)."""

    train: Any
    test: Any
    val: Any = None


@dataclass(frozen=True)
class Pretrain:
    """A pre-training stage: `data(fold)` gives the pre-training set for that fold, with the
    protocol's exclusions already applied (protocols.exclude_subjects / exclude_provenance).

    `config` describes the set (JSON-able; it enters the cache key). `classes` is its label
    space; `epochs` defaults to the preset's `epochs_miex` (paper: 30).
    """

    data: Callable
    classes: tuple
    config: Mapping
    epochs: int | None = None


_VIEWS = {"apex": "Apex", "onset_apex": "OnsetApex", "stack": "Stack",
          "flow": "Flow", "onset_flow": "OnsetFlow", "flow_stack": "FlowStack"}


def _view(clips, view: str, size: int, labels, view_kw: Mapping):
    from mielib import views

    if view not in _VIEWS:
        raise ValueError(f"unknown view {view!r}; use one of {', '.join(_VIEWS)} (a model's `inputs`)")
    return getattr(views, _VIEWS[view])(clips, size=size, labels=labels, **dict(view_kw))


@dataclass
class FoldData:
    """A data provider over a ClipSet: `FoldData(clips, "apex", 64)(fold) -> Split`.

    The fold's row indices select clips (rows of `clips.to_frame()`); `view` is the model's
    `inputs` ("apex", "onset_apex", "stack"). `extra` clips join every fold's training set
    after dropping the fold's test subjects (protocols.exclude_subjects), e.g. CK+ in
    MiE-X Table 1 rows 2 and 9. `view_kw` goes to the view (cache, mean, std, n_frames...).
    """

    clips: Any
    view: str
    size: int
    labels: Sequence[str] | None = None
    extra: Any = None
    view_kw: Mapping = field(default_factory=dict)

    def _labels(self):
        from mielib import au

        return tuple(self.labels) if self.labels is not None else tuple(au.MEGC3)

    def __call__(self, fold) -> Split:
        clips = list(self.clips)

        def part(idx, more=()):
            chosen = [clips[int(i)] for i in idx] + list(more)
            return _view(chosen, self.view, self.size, self._labels(), self.view_kw) if chosen else None

        more = []
        if self.extra is not None:
            from mielib import protocols

            kept = protocols.exclude_subjects(self.extra.to_frame(), fold.test_subjects)
            extra = list(self.extra)
            more = [extra[i] for i in kept.index]
        train_set = part(fold.train, more)
        if train_set is None:
            raise ValueError(f"fold {fold.index}: no training clips")
        test_set = part(fold.test)
        if test_set is None:
            raise ValueError(f"fold {fold.index}: no test clips")
        return Split(train_set, test_set, part(getattr(fold, "val", ())))


@dataclass
class PretrainData:
    """A pre-training set over a ClipSet, with the fold's exclusion applied: `(fold) -> Dataset`.

    `exclude="subjects"` drops clips of the fold's test subjects (real pre-training sets such
    as SAMM or SMIC, MiE-X footnote 7); `"provenance"` drops MiE-X samples whose AUs were read
    from the test fold's clips (MiE-X Section 5.1): the clips need a provenance
    "dataset/subject/clip" (column `provenance` or `meta_provenance` of `clips.to_frame()`);
    None keeps everything (e.g. CK+, whose subjects never appear in a micro test fold).
    """

    clips: Any
    view: str
    size: int
    labels: Sequence[str] | None = None
    exclude: str | None = "subjects"
    view_kw: Mapping = field(default_factory=dict)

    def __call__(self, fold):
        from mielib import au, protocols

        if self.exclude not in ("subjects", "provenance", None):
            raise ValueError(f"unknown exclude {self.exclude!r}; use 'subjects', 'provenance' or None")
        clips = list(self.clips)
        df = self.clips.to_frame()
        if self.exclude == "subjects":
            df = protocols.exclude_subjects(df, fold.test_subjects)
        elif self.exclude == "provenance":
            for col in ("provenance", "source"):
                if col not in df.columns and f"meta_{col}" in df.columns:
                    df[col] = df[f"meta_{col}"]
            if "source" in df.columns:  # z_exp samples come from no clip (MiE-X names them "exp/<emotion>")
                df["provenance"] = np.where(df["source"].astype(str) == "exp", "", df["provenance"].astype(str))
            df = protocols.exclude_provenance(df, fold.test_subjects)
        chosen = [clips[i] for i in df.index]
        if not chosen:
            raise ValueError(f"fold {fold.index}: the exclusion left no pre-training clips")
        labels = tuple(self.labels) if self.labels is not None else tuple(au.MEGC3)
        return _view(chosen, self.view, self.size, labels, self.view_kw)


def _model_name(model) -> str:
    if isinstance(model, str):
        return model.lower()
    name = getattr(model, "__qualname__", None) or type(model).__qualname__
    return f"{getattr(model, '__module__', '?')}.{name}"


def _fingerprint(path) -> dict | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such ImageNet weights file (mielib never downloads; see models.load_imagenet)")
    return {"file": p.name, "bytes": p.stat().st_size}


def _prepare(net, train_set) -> None:
    """Let a model read its training set before training (AU-GACN builds its AU graph from the
    fold's training clips: never from the test fold, which is not passed)."""
    prepare = getattr(net, "prepare", None)
    if prepare is not None:
        prepare(train_set)


@dataclass
class _CrossValidation:
    """The picklable `work` of `cross_validate`: trains and tests one (fold, repeat)."""

    folds: list  # one list of folds per repeat
    data: Callable
    model: Any
    classes: tuple
    model_kw: dict
    pretrain: Pretrain | None
    mode: str
    imagenet: str | None
    epochs: int
    pretrain_epochs: int | None
    batch_size: int
    lr: float
    augment: bool
    criterion: str
    device: str
    progress: bool
    cache_pretrained: bool
    base_config: dict
    repeats: int

    def _build(self, n_classes: int, seed: int):
        from mielib import train

        with train.seeded(seed):
            if isinstance(self.model, str):
                from mielib import models

                net = models.build(self.model, n_classes, **self.model_kw)
            else:
                net = self.model(n_classes, **self.model_kw)
        if self.imagenet is not None:
            from mielib import models

            models.load_imagenet(net, self.imagenet)
        return net

    def _pretrained(self, unit: Unit, fold, unit_seed: int, test, desc: str):
        """The pre-trained model of this fold and repeat: from the weights cache, or trained now."""
        import torch

        from mielib import train

        ckpt_key = store.key({"model": _model_name(self.model), "model_kw": self.model_kw,
                              "imagenet": _fingerprint(self.imagenet), "pretrain": dict(self.pretrain.config),
                              "classes": list(self.pretrain.classes), "epochs": self.pretrain_epochs,
                              "batch_size": self.batch_size, "lr": self.lr, "augment": self.augment,
                              "preset": self.base_config.get("preset"), "data_source": self.base_config.get("data_source"),
                              "seed": unit_seed, "split": unit.split})
        path = runtime.folder("results") / PRETRAINED / f"{ckpt_key}.pt"
        net = self._build(len(self.pretrain.classes), train.derive_seed(unit_seed, "init"))
        if test is None and self.cache_pretrained and path.is_file():
            try:
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                return net, {"cached": True, "weights": path.name}, None
            except Exception as exc:  # a damaged file: say so and retrain
                warnings.warn(f"{path}: unreadable pre-trained weights ({exc}); pre-training again")
        pre_set = self.pretrain.data(fold)
        _prepare(net, pre_set)
        history = train.fit(net, pre_set, epochs=self.pretrain_epochs, seed=train.derive_seed(unit_seed, "pretrain"),
                            test=test, batch_size=self.batch_size, lr=self.lr, device=self.device,
                            augment=self.augment, progress=self.progress, desc=desc)
        if self.cache_pretrained:
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
            store.write_bytes(path, buf.getvalue())
        info = {"cached": False, "weights": path.name, "epochs": history.epochs, "n_train": history.n_train,
                "train_loss": [round(v, 6) for v in history.train_loss], "train_seconds": round(history.seconds, 3)}
        return net, info, history

    def __call__(self, unit: Unit) -> dict:
        import torch

        from mielib import models, train

        fold = self.folds[unit.repeat][unit.fold]
        unit_seed = train.derive_seed(int(self.base_config["seed"]), unit.repeat, unit.fold)
        split = self.data(fold)
        split = Split(*split) if not isinstance(split, Split) else split
        desc = f"{unit.name} fold {unit.fold + 1}/{len(self.folds[0])} repeat {unit.repeat + 1}/{self.repeats}"
        pre_info = None
        if self.mode == "direct":
            # MiE-X alone, evaluated on the test fold after each epoch (MiE-X Table 1, row 7).
            _, pre_info, history = self._pretrained(unit, fold, unit_seed, split.test, desc)
            if split.val is not None:
                warnings.warn("direct deployment ignores the validation split (no per-epoch validation of the "
                              "pre-training run)")
        else:
            if self.mode == "finetune":
                net, pre_info, _ = self._pretrained(unit, fold, unit_seed, None, desc + " pre-train")
                if list(self.pretrain.classes) != list(self.classes):
                    models.new_head(net, len(self.classes), seed=train.derive_seed(unit_seed, "head"))
            else:
                net = self._build(len(self.classes), train.derive_seed(unit_seed, "init"))
            _prepare(net, split.train)
            history = train.fit(net, split.train, epochs=self.epochs, seed=train.derive_seed(unit_seed, "train"),
                                test=split.test, val=split.val, batch_size=self.batch_size, lr=self.lr,
                                device=self.device, augment=self.augment, progress=self.progress, desc=desc)
        out = history.to_record(self.classes, criterion=self.criterion)
        out["unit_seed"] = unit_seed
        # CPU float sums depend on the thread count: a retrain (augacn_tables.retrain) needs it.
        out["torch_threads"] = torch.get_num_threads()
        out["subjects"] = {"train": list(fold.train_subjects), "test": list(fold.test_subjects),
                           "val": list(fold.val_subjects)}
        out["pretrain"] = pre_info
        return out


def cross_validate(name: str, folds: Sequence, data: Callable, model, *, classes: Sequence[str],
                   preset: str | Mapping, data_source: str, seed: int = 0, repeats: int | None = None,
                   pretrain: Pretrain | None = None, mode: str | None = None, config: Mapping | None = None,
                   model_kw: Mapping | None = None, imagenet: str | os.PathLike | None = None,
                   epochs: int | None = None, lr: float = 1e-4, augment: bool = False, criterion: str = "uf1",
                   device: str = "auto", workers: int = 1, executor: cf.Executor | None = None,
                   progress: bool = True, cache_pretrained: bool = True) -> list[dict]:
    """Train and test `model` on every fold x repeat; return the records (cached ones reused).

    - `folds`: protocols.Fold records (k-fold, LOSO, LOVO; with validation subjects when
      `protocols.add_validation` was applied, which enables the val-selected report), reused
      by every repeat; or one list of folds per repeat (a fresh split each repeat).
    - `data(fold) -> Split(train, test, val)`: torch datasets for that fold; the protocol's
      rules (which subjects, which extra sets such as CK+ for fine-tuning) live in it.
    - `model`: a models.build name ("apexme", "branches", "dtscnn") or a factory
      `(n_classes, **model_kw) -> nn.Module`.
    - `mode`: "scratch" (train on the fold's training set; the default without `pretrain`),
      "finetune" (pre-train on `pretrain`, new head when label spaces differ, fine-tune; the
      default with `pretrain`) or "direct" (train on `pretrain` alone and test the fold).
    - `config`: JSON-able description of the data (dataset, AU sources, sizes...): with the
      model, preset, seed, mode and training settings it forms the cache key; the fold's
      subjects and samples are fingerprinted too.
    - Epochs come from the preset: `epochs_real` (paper: 80) for training / fine-tuning and
      `epochs_miex` (paper: 30) for pre-training; `epochs` overrides the former. Batch size
      from the preset (32), Adam lr 1e-4.
    - `repeats` defaults to the preset's; repeat r of fold f uses a seed derived from
      (seed, r, f), whatever order or process the units run in.
    - `workers > 1`: units run in spawned processes (`data`, `model` and `pretrain.data` must
      then be picklable); `executor` plugs in another scheduler.
    """
    from mielib import train

    p = dict(presets.resolve(preset)) if isinstance(preset, str) else dict(preset)
    if mode is None:
        mode = "finetune" if pretrain is not None else "scratch"
    if mode not in ("scratch", "finetune", "direct"):
        raise ValueError(f"unknown mode {mode!r}; use 'scratch', 'finetune' or 'direct'")
    if mode != "scratch" and pretrain is None:
        raise ValueError(f"mode {mode!r} needs a `pretrain` stage (experiments.Pretrain)")
    if mode == "scratch" and pretrain is not None:
        raise ValueError("mode 'scratch' with a `pretrain` stage: use mode='finetune' or 'direct'")
    classes = tuple(str(c) for c in classes)
    if mode == "direct" and tuple(map(str, pretrain.classes)) != classes:
        raise ValueError(f"direct deployment needs the same label space: pre-training classes "
                         f"{list(pretrain.classes)} vs test classes {list(classes)}")
    if criterion not in train.METRICS:
        raise ValueError(f"unknown criterion {criterion!r}; use one of {', '.join(train.METRICS)}")
    folds = list(folds)
    if not folds:
        raise ValueError("no folds given")
    if isinstance(folds[0], (list, tuple)):
        # One fold list per repeat (a fresh split each repeat).
        per_repeat = [list(fs) for fs in folds]
        if repeats is not None and int(repeats) != len(per_repeat):
            raise ValueError(f"repeats={repeats} but {len(per_repeat)} fold lists (one per repeat) were given")
        repeats = len(per_repeat)
    else:
        repeats = int(repeats if repeats is not None else p["repeats"])
        per_repeat = [folds] * repeats
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    n_folds = len(per_repeat[0])
    for r, fs in enumerate(per_repeat):
        if len(fs) != n_folds:
            raise ValueError(f"repeat {r} has {len(fs)} folds, repeat 0 has {n_folds}")
        for i, f in enumerate(fs):
            if getattr(f, "index", i) != i:
                raise ValueError(f"folds must be in order: repeat {r}, position {i} holds fold index {f.index}")
    folds = per_repeat[0]
    epochs = int(epochs if epochs is not None else p["epochs_real"])
    pre_epochs = None
    if pretrain is not None:
        pre_epochs = int(pretrain.epochs if pretrain.epochs is not None else p["epochs_miex"])
    model_kw = dict(model_kw or {})
    base = {
        "model": _model_name(model), "model_kw": model_kw, "classes": list(classes), "mode": mode,
        "preset": p["name"], "data_source": data_source, "seed": int(seed), "data": dict(config or {}),
        "epochs": epochs if mode != "direct" else None, "batch_size": int(p["batch_size"]), "lr": float(lr),
        "augment": bool(augment), "criterion": criterion, "imagenet": _fingerprint(imagenet),
        "pretrain": None if pretrain is None else {"config": dict(pretrain.config),
                                                   "classes": [str(c) for c in pretrain.classes],
                                                   "epochs": pre_epochs},
        "protocol": getattr(folds[0], "protocol", ""), "n_folds": n_folds,
        "validation": bool(any(len(getattr(f, "val", ())) for fs in per_repeat for f in fs)),
    }
    try:
        store.key(base)
    except TypeError as exc:
        raise TypeError(f"cross_validate: config and model_kw must be JSON-able ({exc})") from None
    work = _CrossValidation(per_repeat, data, model, classes, model_kw, pretrain, mode,
                            None if imagenet is None else str(imagenet), epochs, pre_epochs, int(p["batch_size"]),
                            float(lr), bool(augment), criterion, device,
                            progress and workers <= 1 and executor is None, cache_pretrained, base, repeats)
    units = [Unit(name, base, fold=i, repeat=r, split=_split_key(f))
             for r, fs in enumerate(per_repeat) for i, f in enumerate(fs)]
    return run(units, work, workers=workers, executor=executor, progress=progress)


def _split_key(fold) -> str | None:
    to_dict = getattr(fold, "to_dict", None)
    return store.key(to_dict()) if callable(to_dict) else None


# ---------------------------------------------------------------------------------------------
# Command line: python -m mielib results ls|rm

def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if isinstance(v, float) else str(v)


def _print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    cells = [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    print("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mielib results",
        description="List or invalidate cached experiment results (one JSON record per experiment, fold and "
                    "repeat, under the results folder; MIELIB_RESULTS overrides where that is).")
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("ls", help="list cached records: name, key, fold, repeat, preset, data source, commit, "
                                   "last-epoch UF1 of the fold (%%)",
                        description="List the cached result records (all experiments, or one): name, key, fold, "
                                    "repeat, preset, data source, commit and the fold's last-epoch UF1 (%%). "
                                    "Unreadable or incomplete records are warned about and left out; they are "
                                    "recomputed on the next run.")
    ls.add_argument("name", nargs="?", help="only this experiment")
    rm = sub.add_parser("rm", help="delete cached records so they are recomputed on the next run",
                        description="Delete cached records of one experiment (by key, or all of them) so that the "
                                    "next run recomputes them; `_pretrained` removes cached pre-trained weights.")
    rm.add_argument("name", help="the experiment (as listed by `ls`); `_pretrained` for cached pre-trained weights")
    what = rm.add_mutually_exclusive_group(required=True)
    what.add_argument("--key", action="append", metavar="K", help="a record's key (or a unique prefix); repeatable")
    what.add_argument("--all", action="store_true", help="every record of the experiment")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    root = runtime.folder("results")
    if args.action == "ls":
        if args.name is not None and not (root / args.name).is_dir():
            known = ", ".join(d.name for d in _experiment_dirs()) or "none"
            print(f"error: no cached results named {args.name!r} in {root} (experiments: {known})", file=sys.stderr)
            return 2
        recs = records(args.name)
        print(f"{len(recs)} cached record(s) in {root}" + (f"/{args.name}" if args.name else ""))
        if recs:
            rows = [{**r, "uf1": _metric(r, "last", "uf1")} for r in recs]
            _print_table(rows, [("name", "name"), ("key", "key"), ("fold", "fold"), ("repeat", "repeat"),
                                ("preset", "preset"), ("data_source", "data source"), ("commit", "commit"),
                                ("uf1", "UF1 last (fold)")])
        dirs = [root / args.name] if args.name else _experiment_dirs()
        tmps = sum(len(list(d.glob(".*.tmp"))) for d in dirs)
        if tmps:
            print(f"({tmps} temporary file(s) from interrupted runs ignored; `rm NAME --all` clears them)")
        if args.name is None and (root / PRETRAINED).is_dir():
            n = len(list((root / PRETRAINED).glob("*.pt")))
            print(f"{n} cached pre-trained weight file(s) in {root / PRETRAINED} "
                  f"(`python -m mielib results rm {PRETRAINED} --all` clears them)")
        return 0
    try:
        n = invalidate(args.name, key=args.key)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(f"removed {n} record(s) from {args.name}" if args.name != PRETRAINED
          else f"removed {n} pre-trained weight file(s)")
    return 0
