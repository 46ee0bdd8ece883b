"""The claims ledger: pairing records, verdicts, Holm across a notebook's family, and the
upsert of figures/claims.csv (atomic, other notebooks' rows kept, manifest updated)."""

import dataclasses
import math
import os

import numpy as np
import pandas as pd
import pytest

from mielib import claims, experiments, metrics, stats

REPEATS, FOLDS, N_TEST, N_TRAIN = 3, 5, 30, 120


@pytest.fixture(autouse=True)
def figures_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_FIGURES", str(tmp_path / "figures"))
    return tmp_path / "figures"


def group(name, error, seed, repeats=REPEATS, folds=FOLDS, n_train=N_TRAIN, data_source="sim"):
    """Records of a model that errs on about `error` of each fold's test samples (3 classes).

    The truth of (repeat, fold) is the same for every model, as in a real cross-validation.
    """
    recs = []
    rng = np.random.default_rng(seed)
    for r in range(repeats):
        for f in range(folds):
            y = np.random.default_rng(100 * r + f).integers(0, 3, N_TEST)
            wrong = rng.random(N_TEST) < error
            last = np.where(wrong, (y + rng.integers(1, 3, N_TEST)) % 3, y)
            recs.append({"name": name, "key": f"{name}-{r}-{f}", "repeat": r, "fold": f,
                         "config": {"n_folds": folds}, "classes": ["negative", "positive", "surprise"],
                         "preset": "small", "data_source": data_source, "n_train": n_train,
                         "test": {"y_true": y.tolist()},
                         "history": {"test_pred": [rng.integers(0, 3, N_TEST).tolist(), last.tolist()]}})
    return recs


STRONG, WEAK = group("miex", 0.2, 1), group("none", 0.5, 2)


def test_compare_pairs_folds_and_reports_the_tables_difference():
    c = claims.compare(STRONG, WEAK)
    # The corrected t-test on per-fold UF1 at the last epoch, by hand.
    key = lambda r: (r["repeat"], r["fold"])  # noqa: E731
    fold = {g: [metrics.uf1(r["test"]["y_true"], r["history"]["test_pred"][-1], labels=range(3))
                for r in sorted(recs, key=key)] for g, recs in (("a", STRONG), ("b", WEAK))}
    ref = stats.corrected_ttest(fold["a"], fold["b"], n_train=N_TRAIN, n_test=N_TEST)
    assert c.result == ref and c.n_pairs == 15 and c.repeats == 3 and c.folds == 5
    # The difference is what the notebook's table shows: mean over repeats of pooled UF1.
    tab = experiments.table(STRONG + WEAK, selections=("last",)).set_index("name")
    assert c.mean_a == pytest.approx(tab.loc["miex", "uf1_mean"]) and c.mean_b == pytest.approx(tab.loc["none", "uf1_mean"])
    assert c.difference == pytest.approx(c.mean_a - c.mean_b) and c.difference > 0.2
    assert c.preset == "small" and c.data_source == "sim"
    # the more conservative (smaller) n_train of the two models
    small = claims.compare(STRONG, group("none", 0.5, 2, n_train=60))
    assert small.result.se == pytest.approx(stats.corrected_ttest(fold["a"], fold["b"], n_train=60, n_test=N_TEST).se)


def test_compare_refuses_what_it_cannot_pair():
    with pytest.raises(ValueError, match=r"pairs \[\(2, 4\)\] are in only one group"):
        claims.compare(STRONG, WEAK[:-1])
    no_n = [{k: v for k, v in r.items() if k != "n_train"} for r in WEAK]
    with pytest.raises(ValueError, match="none/none-0-0 stores no n_train; pass n_train="):
        claims.compare(STRONG, no_n)
    assert claims.compare(STRONG, no_n, n_train=N_TRAIN).result == claims.compare(STRONG, WEAK).result
    other = [dict(r, test={"y_true": list(reversed(r["test"]["y_true"]))}) for r in WEAK]
    with pytest.raises(ValueError, match="repeat 0, fold 0: the two records test different samples"):
        claims.compare(STRONG, other)
    with pytest.raises(ValueError, match="two records for repeat 0, fold 0"):
        claims.compare(STRONG + STRONG[:1], WEAK)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        claims.compare(STRONG, WEAK, metric="f1")


def verdict(a, b, expect="greater", **kw):
    row = claims.claim("MiE-X Table 1", "MiE-X pre-training helps", claims.compare(a, b, **kw),
                       paper="+5.1 UF1 points (row 8 - row 1)", expect=expect)
    return claims.family([row])[0]


def test_clear_effect_is_reproduced_and_reversed_is_not():
    row = verdict(STRONG, WEAK)
    # one claim: Holm leaves p as it is; the correction for shared training data keeps p above
    # 0.001 even for a 28-point gap over 15 pairs
    assert row.verdict == "reproduced on the lab" and row.p_holm == row.p < 0.01 and row.stars == "**"
    assert row.difference > 20 and row.ours.startswith(f"{100 * claims.compare(STRONG, WEAK).mean_a:.1f} vs ")
    rev = verdict(STRONG, WEAK, expect="less")
    assert rev.verdict == "not reproduced" and "opposite direction" in rev.note
    flipped = verdict(WEAK, STRONG)
    assert flipped.verdict == "not reproduced" and flipped.difference < -20


def test_no_effect_on_noisy_folds_and_too_few_pairs_are_not_testable():
    # two equally good models on noisy folds: not significant, and the wide interval still
    # allows the paper's effect, so the run cannot tell
    row = verdict(group("b1", 0.4, 3), group("b2", 0.4, 4))
    assert row.p > 0.05 and row.verdict == "not testable at this size"
    assert row.note.startswith("no significant difference") and "allows an effect" in row.note
    few = verdict(group("a", 0.2, 1, repeats=1, folds=2), group("b", 0.5, 2, repeats=1, folds=2))
    assert few.verdict == "not testable at this size" and math.isnan(few.p) and math.isnan(few.p_holm)
    assert few.stars == "n/a" and "too few paired scores (2" in few.note
    # with too few repeats, the permutation test on predictions still decides
    pred = verdict(group("a", 0.2, 1, repeats=1, folds=2), group("b", 0.5, 2, repeats=1, folds=2),
                   test="predictions", n_resamples=300)
    assert pred.verdict == "reproduced on the lab" and pred.test.startswith(stats.SWAP) and pred.p == pytest.approx(1 / 301)
    # not significant: a permutation test gives no interval, so the run cannot rule the effect out
    none = verdict(group("b1", 0.4, 3, repeats=1, folds=2), group("b2", 0.4, 4, repeats=1, folds=2),
                   test="predictions", n_resamples=300)
    assert none.p > 0.05 and none.verdict == "not testable at this size" and "gives no interval" in none.note


def test_a_claim_can_word_its_own_number():
    row = claims.claim("Fig. 4", "closer", claims.compare(STRONG, WEAK), paper="-", ours="0.61 vs 0.93 balanced accuracy")
    assert row.ours == "0.61 vs 0.93 balanced accuracy"
    assert claims.claim("Fig. 4", "closer", claims.compare(STRONG, WEAK), paper="-").ours.endswith("last epoch)")


def test_equivalence_claims_use_the_rope():
    same = verdict(STRONG, STRONG, expect="equal")  # identical predictions: a zero-width interval at 0
    assert same.verdict == "reproduced on the lab" and "inside" in same.note
    apart = verdict(STRONG, WEAK, expect="equal")
    assert apart.verdict == "not reproduced" and "outside" in apart.note
    noisy = verdict(group("b1", 0.4, 3), group("b2", 0.4, 4), expect="equal")
    assert noisy.verdict == "not testable at this size" and "straddles" in noisy.note
    with pytest.raises(ValueError, match="needs the t-test's interval"):
        claims.claim("x", "y", claims.compare(STRONG, WEAK, test="predictions", n_resamples=50), paper="", expect="equal")
    with pytest.raises(ValueError, match="unknown expect 'more'"):
        claims.claim("x", "y", claims.compare(STRONG, WEAK), paper="", expect="more")


def fixed(p, difference=3.0):
    return claims.Claim("Fig. 5", f"claim p={p}", "quoted", "ours", difference, difference, stats.TTEST, p, "greater",
                        9, (difference - 1, difference + 1), 2.0, "small", "sim")


def test_family_applies_holm_across_the_notebook():
    rows = claims.family([fixed(0.01), fixed(0.03), fixed(0.04), fixed(float("nan"))])
    # Holm over the 3 p-values: 0.01 × 3 = 0.03; 0.03 × 2 = 0.06; max(0.06, 0.04 × 1) = 0.06
    assert [r.p_holm for r in rows[:3]] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(rows[3].p_holm)
    assert [r.stars for r in rows] == ["*", "n.s.", "n.s.", "n/a"]
    # raw p < 0.05 for all three, but only the first survives the family's correction
    # the other two: not significant, but their interval [2, 4] still allows an effect beyond the
    # ROPE (2 points) of the paper's sign, so this size cannot tell
    assert [r.verdict for r in rows] == ["reproduced on the lab", "not testable at this size",
                                         "not testable at this size", "not testable at this size"]
    assert "allows an effect" in rows[1].note
    # an interval that stops short of the ROPE: not significant and no room for the effect
    none = claims.family([fixed(0.01), dataclasses.replace(fixed(0.5, 0.2), interval=(-1.0, 1.5))])[1]
    assert none.verdict == "not reproduced" and "excludes" in none.note


def test_lab_effect_is_flagged_on_lab_data_only():
    kw = dict(paper="+5.1", lab_effect="the simulator's MiE-X pre-training gain")
    sim = claims.claim("T1", "c", claims.compare(STRONG, WEAK), **kw)
    assert "lab effect: the simulator's MiE-X pre-training gain" in sim.note
    real = claims.claim("T1", "c", claims.compare(group("a", 0.2, 1, data_source="real"),
                                                  group("b", 0.5, 2, data_source="real")), **kw)
    assert "lab effect" not in real.note


def stamp(notebook):
    return {"notebook": notebook, "preset": "small", "data_source": "sim", "seed": 0}


def test_write_upserts_one_notebook_and_keeps_the_others(figures_dir):
    c = claims.compare(STRONG, WEAK)
    rows = claims.family([claims.claim("Table 1", "row 8 > row 1", c, paper="+5.1"),
                          claims.claim("Table 1", "row 7 > row 2", c, paper="+1.0")])
    claims.write(rows, stamp=stamp("05_table2_sota"))
    first = claims.write(rows, stamp=stamp("04_table1_pretraining"))
    assert list(first.columns) == list(claims.COLUMNS) and len(first) == 2
    table = pd.read_csv(figures_dir / "claims.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == list(claims.COLUMNS)
    assert table["notebook"].tolist() == ["04_table1_pretraining"] * 2 + ["05_table2_sota"] * 2
    assert table["claim"].tolist() == ["row 8 > row 1", "row 7 > row 2"] * 2  # order given, per notebook
    assert table["verdict"].iloc[0] == "reproduced on the lab"
    assert float(table["difference"].iloc[0]) == pytest.approx(100 * c.difference, abs=0.005)
    # re-running notebook 04 with one claim replaces its rows, notebook 05's stay
    claims.write(rows[1:], stamp=stamp("04_table1_pretraining"))
    table = claims.read(figures_dir)
    assert table["notebook"].tolist() == ["04_table1_pretraining"] + ["05_table2_sota"] * 2
    assert table["claim"].iloc[0] == "row 7 > row 2"
    manifest = pd.read_csv(figures_dir / "manifest.csv", dtype=str)
    assert manifest.set_index("output").loc["claims.csv", "notebook"] == "04_table1_pretraining"
    with pytest.raises(ValueError, match="pass the notebook's rows through claims.family"):
        claims.write([claims.claim("T", "c", c, paper="")], stamp=stamp("04_table1_pretraining"))


def test_write_is_atomic(figures_dir, monkeypatch):
    rows = claims.family([claims.claim("Table 1", "c", claims.compare(STRONG, WEAK), paper="+5.1")])
    claims.write(rows, stamp=stamp("04_table1_pretraining"))
    before = (figures_dir / "claims.csv").read_bytes()

    def killed(src, dst):  # the process dies before the rename
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError, match="simulated crash"):
        claims.write(rows, stamp=stamp("05_table2_sota"))
    assert (figures_dir / "claims.csv").read_bytes() == before
    assert not list(figures_dir.glob(".*.tmp"))


def test_compare_reports_the_mean_the_table_uses():
    for pooling in ("pooled", "fold_mean"):
        c = claims.compare(STRONG, WEAK, metric="accuracy", pooling=pooling)
        want = [experiments.scores(g, by=(), selections=("last",), pooling=pooling)["accuracy"].mean()
                for g in (STRONG, WEAK)]
        assert (c.mean_a, c.mean_b) == pytest.approx(want)
    with pytest.raises(ValueError, match="unknown pooling"):
        claims.compare(STRONG, WEAK, pooling="median")


def test_all_of_is_reproduced_only_when_every_component_is():
    same = group("same", 0.2, 3)
    fam = claims.family([claims.claim("T", "strong beats weak", claims.compare(STRONG, WEAK), paper="+"),
                         claims.claim("T", "weak beats strong", claims.compare(WEAK, STRONG), paper="+"),
                         claims.claim("T", "strong vs same", claims.compare(STRONG, same), paper="=", expect="equal")])
    assert [c.verdict for c in fam[:2]] == [claims.VERDICTS[0], claims.VERDICTS[1]]
    both = claims.all_of("T", "both", fam[:2], paper="x")
    assert both.verdict == claims.VERDICTS[1] and "weak beats strong" in both.note
    assert both.p == max(fam[0].p_holm, fam[1].p_holm) and both.ours == "1 of 2 component claims reproduced"
    one = claims.all_of("T", "one", fam[:1], paper="x")
    assert one.verdict == claims.VERDICTS[0] and one.p == fam[0].p_holm and one.stars == stats.stars(fam[0].p_holm)
    # an equivalence component decides by its interval and does not enter the IUT p
    mixed = claims.all_of("T", "mixed", [fam[0], fam[2]], paper="x")
    assert mixed.p == fam[0].p_holm
    assert mixed.verdict == (claims.VERDICTS[0] if fam[2].verdict == claims.VERDICTS[0] else fam[2].verdict
                             if fam[2].verdict == claims.VERDICTS[1] else claims.VERDICTS[2])
    with pytest.raises(ValueError, match="through claims.family first"):
        claims.all_of("T", "raw", [claims.claim("T", "x", claims.compare(STRONG, WEAK), paper="+")], paper="x")


def test_verify_recomputes_the_ledger_from_its_evidence(figures_dir):
    mid = group("mid", 0.35, 4)
    fam = claims.family([claims.claim("T", "strong beats weak", claims.compare(STRONG, WEAK), paper="+"),
                         claims.claim("T", "strong beats mid, UAR", claims.compare(STRONG, mid, metric="uar"), paper="+"),
                         claims.claim("T", "mid vs weak (fold mean)", claims.compare(mid, WEAK, pooling="fold_mean"),
                                      paper="+", expect="less")])
    rows = fam + [claims.all_of("T", "all", fam[:2], paper="x")]
    claims.write(rows, stamp={"notebook": "nb", "preset": "small", "data_source": "sim", "seed": 0})
    assert (figures_dir / "claims_evidence" / "nb.json").is_file()
    check = claims.verify()
    assert len(check) == 4 and check["match"].all(), check.to_string()
    # a tampered p in the ledger is caught
    path = figures_dir / "claims.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[0, "p"] = "0.5"
    df.to_csv(path, index=False)
    check = claims.verify()
    assert not check["match"].iloc[0] and check["match"].iloc[1:].all()
    # so is tampered evidence: a changed prediction changes the recomputed p
    import json
    ev = json.loads((figures_dir / "claims_evidence" / "nb.json").read_text())
    g = ev["rows"][1]["a"]
    ev["groups"][g]["pred"][0] = [(p + 1) % 3 for p in ev["groups"][g]["pred"][0]]
    (figures_dir / "claims_evidence" / "nb.json").write_text(json.dumps(ev))
    assert not claims.verify()["match"].iloc[1]
