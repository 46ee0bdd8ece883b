"""The claims ledger: each results notebook (04-11) ends with the paper's claims that its table
supports, tested with `stats` and given a verdict; `write` gathers them in figures/claims.csv.

A notebook's claims: `compare` two groups of experiment records, `claim` one row per claim,
`family` (Holm within the notebook, stars, verdicts), then `write(rows, stamp=session.stamp)`.
Verdicts (one of VERDICTS; `note` says why):
- a directional claim ("a > b"): "reproduced on the lab" when the Holm-adjusted p < 0.05 and
  the tested difference has the paper's sign; "not reproduced" when significant in the opposite
  direction, or not significant with a 95% interval that excludes an effect of the paper's sign
  beyond the ROPE; "not testable at this size" when not significant but the interval still
  allows such an effect (too little power to tell), or when the test gives no interval (the
  permutation tests) and is not significant.
- a "no difference" claim: the corrected t-test's 95% interval against the ROPE (±0.02):
  inside: reproduced; wholly outside: not reproduced; straddling: "not testable at this size".
- fewer than MIN_PAIRS paired scores (or no test): "not testable at this size".
The `difference` column is in points (percent of the metric), the mean over repeats of the
pooled-score difference: the number the notebook's table shows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from mielib import experiments, metrics, plots, runtime, stats, store

VERDICTS = ("reproduced on the lab", "not reproduced", "not testable at this size")
COLUMNS = ("notebook", "item", "claim", "paper", "ours", "difference", "test", "p", "p_holm", "stars",
           "verdict", "note", "preset", "data_source")
EXPECT = ("greater", "less", "equal")
TESTS = ("ttest", "predictions")
FILE = "claims.csv"
ALPHA = 0.05
#: Fewer paired (repeat, fold) scores than this: no verdict (the t-test has too few df).
MIN_PAIRS = 3


@dataclass(frozen=True)
class Comparison:
    """Two groups of records compared on one metric: what a claim row is built from.

    `difference` = mean_a - mean_b: pooled scores (folds concatenated per repeat), mean over
    repeats, as tables show them. `result` tests the per-(repeat, fold) score differences
    (test="ttest") or the pooled predictions (test="predictions"); None with too few pairs.
    """

    metric: str
    selection: str
    mean_a: float
    mean_b: float
    difference: float
    result: stats.Result | None
    n_pairs: int
    repeats: int
    folds: int
    preset: str
    data_source: str


def _by_pair(recs, group: str) -> dict[tuple[int, int], dict]:
    out: dict[tuple[int, int], dict] = {}
    for r in experiments._as_records(recs):
        k = (int(r["repeat"]), int(r["fold"]))
        if k in out:
            raise ValueError(f"group {group}: two records for repeat {k[0]}, fold {k[1]} ({out[k].get('name')}/"
                             f"{out[k].get('key')} and {r.get('name')}/{r.get('key')}); pass one configuration")
        out[k] = r
    if not out:
        raise ValueError(f"group {group}: no records")
    return out


def _stamp(recs: list[dict], field_: str) -> str:
    return ", ".join(sorted({str(r.get(field_)) for r in recs}))


def compare(a, b, *, metric: str = "uf1", selection: str = "last", classes: str = "true", test: str = "ttest",
            n_train: int | None = None, n_resamples: int = 9999, seed=0, pooling: str = "pooled") -> Comparison:
    """Compare records `a` with records `b` (experiments.cross_validate / load) on `metric`.

    Records are paired by (repeat, fold) and must test the same samples. test="ttest": the
    corrected resampled t-test on per-fold scores, with n_test the fold's test samples and
    n_train the records' stored `n_train` (the smaller of the two models', the more
    conservative correction; pass `n_train` when records lack it). test="predictions": the
    paired permutation test on all repeats' pooled predictions (for too few repeats).
    `pooling` sets how the reported means are formed, as the notebook's table forms them:
    "pooled" (folds' predictions concatenated per repeat) or "fold_mean" (mean of the folds' scores).
    """
    if metric not in ("uf1", "uar", "accuracy"):
        raise ValueError(f"unknown metric {metric!r}; use 'uf1', 'uar' or 'accuracy'")
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; use one of {', '.join(TESTS)}")
    pa, pb = _by_pair(a, "a"), _by_pair(b, "b")
    unpaired = sorted(set(pa) ^ set(pb))
    if unpaired:
        raise ValueError(f"(repeat, fold) pairs {unpaired} are in only one group; finish both runs on the same "
                         "folds and repeats")
    keys = sorted(pa)
    cls = {tuple(r["classes"]) for r in [*pa.values(), *pb.values()]}
    if len(cls) != 1:
        raise ValueError(f"the records' class lists differ: {sorted(cls)}")
    labels = range(len(cls.pop()))
    scores_a, scores_b, n_tr, n_te, pooled = [], [], [], [], ([], [], [])
    for k in keys:
        (ya, pred_a), (yb, pred_b) = (experiments._fold_predictions(g[k], selection, metric, classes) for g in (pa, pb))
        if pred_a is None or pred_b is None:
            raise ValueError(f"repeat {k[0]}, fold {k[1]}: no {selection!r} predictions (no validation subjects?)")
        if not np.array_equal(ya, yb):
            raise ValueError(f"repeat {k[0]}, fold {k[1]}: the two records test different samples")
        scores_a.append(metrics.scores(ya, pred_a, labels, classes)[metric])
        scores_b.append(metrics.scores(yb, pred_b, labels, classes)[metric])
        stored = [g[k].get("n_train") for g in (pa, pb)]
        if n_train is None and any(not v for v in stored):
            missing = pa[k] if not stored[0] else pb[k]
            raise ValueError(f"record {missing.get('name')}/{missing.get('key')} stores no n_train; "
                             "pass n_train= (training samples per fold)")
        n_tr.append(n_train if n_train is not None else min(stored))
        n_te.append(len(ya))
        for lst, v in zip(pooled, (ya, pred_a, pred_b)):
            lst.append(v)
    recs_a, recs_b = [pa[k] for k in keys], [pb[k] for k in keys]
    per_repeat = [experiments.scores(r, by=(), selections=(selection,), classes=classes, pooling=pooling)
                  .set_index("repeat")[metric] for r in (recs_a, recs_b)]
    if test == "ttest":
        result = (stats.corrected_ttest(scores_a, scores_b, n_train=n_tr, n_test=n_te)
                  if len(keys) >= MIN_PAIRS else None)
    else:
        result = stats.paired_prediction_test(*(np.concatenate(v) for v in pooled), metric=metric, labels=labels,
                                              classes=classes, n_resamples=n_resamples, seed=seed)
    mean_a, mean_b = float(per_repeat[0].mean()), float(per_repeat[1].mean())
    all_recs = recs_a + recs_b
    return Comparison(metric, selection, mean_a, mean_b, float((per_repeat[0] - per_repeat[1]).mean()), result,
                      len(keys), len({k[0] for k in keys}), len({k[1] for k in keys}),
                      _stamp(all_recs, "preset"), _stamp(all_recs, "data_source"))


@dataclass(frozen=True)
class Claim:
    """One row of the ledger; `family` fills p_holm, stars and verdict."""

    item: str  # the paper item, e.g. "MiE-X Table 1"
    claim: str  # the claim in words
    paper: str  # the paper's number, quoted as text
    ours: str
    difference: float  # points: mean over repeats of the pooled-score difference
    tested: float  # the tested statistic's difference (its sign decides), in points
    test: str
    p: float
    expect: str  # "greater", "less" or "equal" (a "no difference" claim)
    n_pairs: int
    interval: tuple[float, float] | None  # points; the corrected t-test's 95% interval
    rope: float  # points
    preset: str
    data_source: str
    note: str = ""
    p_holm: float = math.nan
    stars: str = ""
    verdict: str = ""


def claim(item: str, text: str, comparison: Comparison, *, paper: str, expect: str = "greater",
          rope: float = stats.ROPE, lab_effect: str | None = None, note: str = "", ours: str | None = None) -> Claim:
    """One claim: the paper's `text` that a `expect`s b ("greater", "less" or "equal"), with
    `paper` its quoted number. `lab_effect`: the simulated lab was built with this effect;
    on lab data the row is flagged, as reproducing it checks the pipeline, not the paper.
    `ours` replaces the generated "a vs b METRIC % (...)" text (for a comparison that is not
    of two cross-validated classifiers, e.g. a figure's number)."""
    if expect not in EXPECT:
        raise ValueError(f"unknown expect {expect!r}; use one of {', '.join(EXPECT)}")
    c, res = comparison, comparison.result
    interval = None
    if res is not None and res.se is not None:
        interval = tuple(100 * v for v in res.interval(0.95))
    elif expect == "equal" and res is not None:
        raise ValueError("a 'no difference' claim needs the t-test's interval: compare(..., test='ttest')")
    m = c.metric.upper()
    if ours is None:
        ours = (f"{100 * c.mean_a:.1f} vs {100 * c.mean_b:.1f} {m} % ({c.repeats} repeats × {c.folds} folds, "
                f"{c.selection} epoch)")
    notes = [note] if note else []
    if lab_effect and "sim" in c.data_source.split(", "):
        notes.append(f"lab effect: {lab_effect}")
    if res is not None and res.difference * c.difference < 0:
        notes.append("pooled and tested differences disagree in sign")
    return Claim(item, text, paper, ours, 100 * c.difference, 100 * res.difference if res else math.nan,
                 res.test if res else f"{stats.TTEST} (not run)", res.p if res else math.nan, expect, c.n_pairs,
                 interval, 100 * rope, c.preset, c.data_source, "; ".join(notes))


def _verdict(c: Claim, p_holm: float) -> tuple[str, str]:
    """(verdict, why) of one claim given its Holm-adjusted p."""
    if math.isnan(p_holm):  # compare ran no test
        return VERDICTS[2], f"too few paired scores ({c.n_pairs}; the t-test needs at least {MIN_PAIRS})"
    if c.expect == "equal":
        decision = stats.rope(c.interval, c.rope)
        where = f"95% interval [{c.interval[0]:+.1f}, {c.interval[1]:+.1f}] points vs ROPE ±{c.rope:.1f}"
        return {"equivalent": (VERDICTS[0], f"{where}: inside"), "different": (VERDICTS[1], f"{where}: outside"),
                "undecided": (VERDICTS[2], f"{where}: straddles")}[decision]
    want = 1.0 if c.expect == "greater" else -1.0
    if p_holm < ALPHA:
        if np.sign(c.tested) == want:
            return VERDICTS[0], ""
        return VERDICTS[1], "significant in the opposite direction"
    if c.interval is None:
        # A permutation test gives no interval: a non-significant result cannot rule out the effect.
        return VERDICTS[2], ("no significant difference; the permutation test gives no interval, so this run cannot "
                             "rule out an effect of the paper's sign")
    if want * c.interval[1 if want > 0 else 0] > c.rope:
        # Not significant, yet an effect of the paper's sign larger than the ROPE is still
        # plausible: this run cannot tell, so it neither confirms nor refutes the claim.
        return VERDICTS[2], ("no significant difference; the 95% interval still allows an effect of the paper's "
                             "sign beyond the ROPE (too little power at this size)")
    return VERDICTS[1], "no significant difference; the 95% interval excludes an effect of the paper's sign beyond the ROPE"


def family(rows: Sequence[Claim]) -> list[Claim]:
    """One notebook's claims with Holm's correction applied across them, stars (of p_holm) and verdicts."""
    rows = list(rows)
    adjusted = stats.holm([r.p for r in rows])
    out = []
    for r, ph in zip(rows, adjusted):
        verdict, why = _verdict(r, float(ph))
        note = "; ".join(n for n in (why, r.note) if n)
        out.append(dataclasses.replace(r, p_holm=float(ph), stars=stats.stars(float(ph)), verdict=verdict, note=note))
    return out


def _num(v: float, fmt: str) -> str:
    return "" if v is None or math.isnan(v) else format(v, fmt)


def frame(rows: Sequence[Claim], notebook: str = "") -> pd.DataFrame:
    """The ledger's columns for `rows`, numbers as written to claims.csv (p to 3 significant digits)."""
    return pd.DataFrame([{"notebook": notebook, "item": r.item, "claim": r.claim, "paper": r.paper, "ours": r.ours,
                          "difference": _num(r.difference, "+.2f"), "test": r.test, "p": _num(r.p, ".3g"),
                          "p_holm": _num(r.p_holm, ".3g"), "stars": r.stars, "verdict": r.verdict, "note": r.note,
                          "preset": r.preset, "data_source": r.data_source} for r in rows], columns=list(COLUMNS))


def read(folder: Path | None = None) -> pd.DataFrame:
    """figures/claims.csv as text columns (empty when there is none yet)."""
    path = Path(folder or runtime.folder("figures")) / FILE
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = sorted(set(COLUMNS) - set(df.columns))
    if missing:
        raise ValueError(f"{path}: lacks columns {missing}; delete it and re-run the results notebooks")
    return df[list(COLUMNS)]


def write(rows: Sequence[Claim], *, stamp: Mapping, folder: Path | None = None) -> pd.DataFrame:
    """Upsert one notebook's claims (after `family`) into figures/claims.csv; return its rows.

    `stamp` is the session's (notebook, preset, data source, seed): the notebook's previous
    rows are replaced, other notebooks' rows kept; rows are sorted by notebook, in the order
    given within one. Written atomically, and recorded in figures/manifest.csv.
    """
    rows = list(rows)
    unfinished = [r.claim for r in rows if r.verdict not in VERDICTS]
    if unfinished:
        raise ValueError(f"claims without a verdict: {unfinished}; pass the notebook's rows through claims.family")
    folder = Path(folder or runtime.folder("figures"))
    notebook = str(stamp["notebook"])
    old = read(folder)
    new = frame(rows, notebook)
    table = pd.concat([old[old["notebook"] != notebook], new], ignore_index=True)
    table = table.sort_values("notebook", kind="stable")
    store.write_text(folder / FILE, table.to_csv(index=False))
    plots._record(folder, [FILE], dict(stamp))
    return new.reset_index(drop=True)
