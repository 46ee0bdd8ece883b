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
import json
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
    #: What the test read, to recompute it (`verify`): per (repeat, fold) pair, the true labels,
    #: both groups' predictions and the training-set size; and the test's settings.
    evidence: Mapping | None = dataclasses.field(default=None, repr=False, compare=False)


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
    evidence = {"metric": metric, "classes": classes, "labels": len(labels), "test": test, "pooling": pooling,
                "n_resamples": n_resamples, "seed": seed, "pairs": [list(k) for k in keys], "n_train": n_tr,
                "y": [v.tolist() for v in pooled[0]], "a": [v.tolist() for v in pooled[1]],
                "b": [v.tolist() for v in pooled[2]]}
    return Comparison(metric, selection, mean_a, mean_b, float((per_repeat[0] - per_repeat[1]).mean()), result,
                      len(keys), len({k[0] for k in keys}), len({k[1] for k in keys}),
                      _stamp(all_recs, "preset"), _stamp(all_recs, "data_source"), json_ready(evidence))


def json_ready(obj):
    """numpy scalars and arrays inside `obj` as plain Python numbers and lists (for JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


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
    evidence: Mapping | None = dataclasses.field(default=None, repr=False, compare=False)


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
                 interval, 100 * rope, c.preset, c.data_source, "; ".join(notes),
                 evidence={**c.evidence, "expect": expect, "rope": rope} if c.evidence else None)


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
    ci = f" (95% interval [{c.interval[0]:+.1f}, {c.interval[1]:+.1f}] points)" if c.interval is not None else ""
    if p_holm < ALPHA:
        if np.sign(c.tested) == want:
            return VERDICTS[0], ""
        return VERDICTS[1], "significant in the opposite direction" + ci
    if c.interval is None:
        # A permutation test gives no interval: a non-significant result cannot rule out the effect.
        return VERDICTS[2], ("no significant difference; the permutation test gives no interval, so this run cannot "
                             "rule out an effect of the paper's sign")
    if want * c.interval[1 if want > 0 else 0] > c.rope:
        # Not significant, yet an effect of the paper's sign larger than the ROPE is still
        # plausible: this run cannot tell, so it neither confirms nor refutes the claim.
        return VERDICTS[2], ("no significant difference; the 95% interval still allows an effect of the paper's "
                             f"sign beyond the ROPE (too little power at this size){ci}")
    return VERDICTS[1], f"no significant difference; the 95% interval excludes an effect of the paper's sign beyond the ROPE{ci}"


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


def all_of(item: str, text: str, components: Sequence[Claim], *, paper: str) -> Claim:
    """A claim that holds only if each of `components` does (e.g. "none of the three AU types
    is dispensable" = each removal lowers UF1 and UAR), from rows that went through `family`.

    Intersection-union test: the conjunction is reproduced when every component is, not
    reproduced when any component is not, else not testable. Its p is the largest Holm-adjusted
    p of the directional components (the IUT p-value; "no difference" components decide by
    their interval, not by a p, and do not enter it). Not itself part of a Holm family.
    """
    components = list(components)
    if not components:
        raise ValueError(f"{text!r}: all_of needs component claims")
    unfinished = [c.claim for c in components if c.verdict not in VERDICTS]
    if unfinished:
        raise ValueError(f"pass the components through claims.family first: {unfinished}")
    verdicts = [c.verdict for c in components]
    verdict = (VERDICTS[0] if all(v == VERDICTS[0] for v in verdicts)
               else VERDICTS[1] if VERDICTS[1] in verdicts else VERDICTS[2])
    directional = [c.p_holm for c in components if c.expect != "equal" and not math.isnan(c.p_holm)]
    p = max(directional) if directional else math.nan
    n_ok = verdicts.count(VERDICTS[0])
    failing = [c.claim for c in components if c.verdict != VERDICTS[0]]
    note = "" if not failing else "not reproduced or not testable: " + "; ".join(failing)
    first = components[0]
    return Claim(item, text, paper, f"{n_ok} of {len(components)} component claims reproduced", math.nan, math.nan,
                 f"intersection-union test over {len(components)} claims (largest Holm p of the directional ones)",
                 p, "all", sum(c.n_pairs for c in components), None, first.rope, first.preset, first.data_source,
                 note, p_holm=p, stars=stats.stars(p), verdict=verdict,
                 evidence={"all_of": [c.claim for c in components]})


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
    outputs = [FILE]
    evidence = _evidence_file(rows)
    if evidence is not None:
        path = folder / EVIDENCE / f"{notebook}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(path, json.dumps(evidence, separators=(",", ":"), sort_keys=True) + "\n")
        outputs.append(f"{EVIDENCE}/{path.name}")
    plots._record(folder, outputs, dict(stamp))
    return new.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Evidence: what each row's test read, stored beside the ledger so anyone can recompute it

#: figures/claims_evidence/<notebook>.json: per row, the paired predictions its test read.
EVIDENCE = "claims_evidence"


def _evidence_file(rows: Sequence[Claim]) -> dict | None:
    """The rows' evidence, each group of predictions stored once (groups recur across claims)."""
    if not any(r.evidence for r in rows):
        return None
    groups: dict[str, dict] = {}
    out = []

    def group(data: dict) -> str:
        key = store.key(data)
        groups.setdefault(key, data)
        return key

    for r in rows:
        ev = dict(r.evidence or {})
        row = {"item": r.item, "claim": r.claim, "paper": r.paper, "expect": r.expect}
        if "all_of" in ev:
            row["all_of"] = ev["all_of"]
        elif ev:
            shared = {k: ev[k] for k in ("pairs", "y", "n_train")}
            row.update({k: v for k, v in ev.items() if k not in ("pairs", "y", "n_train", "a", "b")})
            row["a"] = group({**shared, "pred": ev["a"]})
            row["b"] = group({**shared, "pred": ev["b"]})
        out.append(row)
    return {"format": "mielib.claims_evidence/1", "rows": out, "groups": groups}


def _comparison(row: Mapping, groups: Mapping) -> Comparison:
    """Rebuild a row's Comparison from its stored evidence (what `compare` computed)."""
    ga, gb = groups[row["a"]], groups[row["b"]]
    if ga["pairs"] != gb["pairs"] or ga["y"] != gb["y"]:
        raise ValueError(f"{row['claim']!r}: its two groups of evidence are not paired")
    labels, metric, classes = range(int(row["labels"])), row["metric"], row["classes"]
    ys = [np.asarray(v) for v in ga["y"]]
    pa, pb = ([np.asarray(v) for v in g["pred"]] for g in (ga, gb))
    sa = [metrics.scores(y, p, labels, classes)[metric] for y, p in zip(ys, pa)]
    sb = [metrics.scores(y, p, labels, classes)[metric] for y, p in zip(ys, pb)]
    if row["test"] == "ttest":
        result = (stats.corrected_ttest(sa, sb, n_train=ga["n_train"], n_test=[len(y) for y in ys])
                  if len(ys) >= MIN_PAIRS else None)
    else:
        result = stats.paired_prediction_test(np.concatenate(ys), np.concatenate(pa), np.concatenate(pb),
                                              metric=metric, labels=labels, classes=classes,
                                              n_resamples=row["n_resamples"], seed=row["seed"])
    repeats = sorted({int(r) for r, _ in ga["pairs"]})
    per = []
    for rep in repeats:
        idx = [i for i, (r, _) in enumerate(ga["pairs"]) if int(r) == rep]
        if row["pooling"] == "pooled":
            y = np.concatenate([ys[i] for i in idx])
            per.append([metrics.scores(y, np.concatenate([p[i] for i in idx]), labels, classes)[metric]
                        for p in (pa, pb)])
        else:
            per.append([float(np.mean([s[i] for i in idx])) for s in (sa, sb)])
    per = np.asarray(per)
    return Comparison(metric, "last", float(per[:, 0].mean()), float(per[:, 1].mean()),
                      float((per[:, 0] - per[:, 1]).mean()), result, len(ys), len(repeats),
                      len({int(f) for _, f in ga["pairs"]}), "", "")


def verify(folder: Path | None = None) -> pd.DataFrame:
    """Recompute every ledger row that has stored evidence (figures/claims_evidence/) with
    `stats`, Holm within each notebook and the intersection-union rows, and set the result
    beside figures/claims.csv: one row per claim with the ledger's and the recomputed p,
    p_holm, difference and verdict (as the ledger prints them), and `match`."""
    folder = Path(folder or runtime.folder("figures"))
    ledger = read(folder)
    out = []
    for path in sorted((folder / EVIDENCE).glob("*.json")):
        data = json.loads(path.read_text())
        notebook = path.stem
        tested = [r for r in data["rows"] if "all_of" not in r]
        rows = family([claim(r["item"], r["claim"], _comparison(r, data["groups"]), paper=r["paper"],
                             expect=r["expect"], rope=float(r["rope"])) for r in tested])
        by_text = {r.claim: r for r in rows}
        for r in data["rows"]:
            if "all_of" in r:
                by_text[r["claim"]] = all_of(r["item"], r["claim"], [by_text[c] for c in r["all_of"]],
                                             paper=r["paper"])
        mine = frame([by_text[r["claim"]] for r in data["rows"]], notebook)
        theirs = ledger[ledger["notebook"] == notebook].set_index("claim")
        for _, r in mine.iterrows():
            row = {"notebook": notebook, "claim": r["claim"]}
            for col in ("p", "p_holm", "difference", "verdict"):
                row[col] = theirs.at[r["claim"], col] if r["claim"] in theirs.index else "(missing)"
                row[f"{col} recomputed"] = r[col]
            row["match"] = all(row[c] == row[f"{c} recomputed"] for c in ("p", "p_holm", "difference", "verdict"))
            out.append(row)
    return pd.DataFrame(out)
