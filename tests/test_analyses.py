"""mielib.analyses without training: build options from the preset, per-repeat scores and the
summary table from records (the notebooks' smoke runs cover the training path)."""

import numpy as np
import pytest

from mielib import analyses, experiments, miex, presets


def ctx(preset="small"):
    p = dict(presets.resolve(preset))
    return analyses.Context(p, "sim", None, 3, "flow", 32, 128, p["analyses_repeats"], None, None, [], np.zeros(0))


def test_options_take_sizes_from_the_preset_and_seeds_from_the_session():
    o = analyses.options(ctx(), sources=("mae",), alpha=0.1, beta=0.3)
    assert o["identities"] == presets.resolve("small")["table1_miex_identities"] == 150
    assert o["size"] == 128 and o["seed"] == 3 and o["data_seed"] == 3 and o["data_source"] == "sim"
    assert o["sources"] == ("mae",) and (o["alpha"], o["beta"]) == (0.1, 0.3)
    assert analyses.options(ctx(), identities=21)["identities"] == 21  # Fig. 6b overrides them
    with pytest.raises(ValueError, match="unknown MiE-X option"):
        analyses.options(ctx(), sauces=("mie",))


def test_fig6_points_scale_the_papers_counts_by_one_factor():
    p = presets.resolve("small")
    scale = p["fig6a_samples"] / 30000
    assert [round(t / scale) for t in p["fig6a_triplets"]] == [4000, 6000, 10000, 30000]
    assert [round(i / scale) for i in p["fig6b_identities"]] == [700, 1000, 1700, 5000]
    assert [round(s / scale) for s in p["fig6c_samples"]] == [9000, 18000, 36000, 54000]
    assert round(p["fig6c_triplets"] / scale) == 9000 and round(p["fig6c_identities"] / scale) == 1000
    for name in presets.PRESETS:  # every build of Fig. 6 is valid for the builder (balanced samples)
        q = presets.resolve(name)
        for t in q["fig6a_triplets"]:
            miex.configure(sources=("mae", "exp"), samples=q["fig6a_samples"], identities=q["fig6a_identities"], triplets=t)
        for s in q["fig6c_samples"]:
            miex.configure(samples=s, triplets=q["fig6c_triplets"], identities=q["fig6c_identities"])


def records(name, error, seed, repeats=3, folds=3, n=30):
    rng = np.random.default_rng(seed)
    out = []
    for r in range(repeats):
        for f in range(folds):
            y = np.random.default_rng(10 * r + f).integers(0, 3, n)
            pred = np.where(rng.random(n) < error, (y + 1) % 3, y)
            out.append({"name": name, "key": f"{name}{r}{f}", "repeat": r, "fold": f, "config": {"n_folds": folds},
                        "classes": ["negative", "positive", "surprise"], "preset": "small", "data_source": "sim",
                        "n_train": 100, "test": {"y_true": y.tolist()}, "history": {"test_pred": [pred.tolist()]}})
    return out


def test_per_repeat_and_summary_agree_with_the_experiment_tables():
    groups = {"good": records("good", 0.1, 1), "bad": records("bad", 0.6, 2)}
    per = analyses.per_repeat(groups, order=["bad", "good"])
    assert len(per) == 6 and list(per["group"].cat.categories) == ["bad", "good"]
    s = analyses.summary(groups, {"good": {"UF1": (47.7, 0.5)}})
    t = experiments.table(groups["good"], by=(), selections=("last",)).iloc[0]
    good = s.set_index("training set").loc["good"]
    assert good["uf1_mean"] == pytest.approx(100 * t["uf1_mean"])
    assert good["uf1_mean"] == pytest.approx(per[per["group"] == "good"]["UF1"].mean())
    assert good["UF1 paper (quoted)"] == "47.7 ± 0.5" and s.set_index("training set").loc["bad", "UF1 paper (quoted)"] == "n/r"
    assert good["repeats"] == 3


def test_real_rows_are_rows_1_and_2_only():
    with pytest.raises(ValueError, match="real-data rows are 1"):
        analyses.real(ctx(), 3)
