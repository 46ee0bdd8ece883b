"""The experiment engine: cached units, resuming after a failure, atomic records, aggregation
over folds and repeats, cross-validation modes, parallel workers and the `results` command."""

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mielib import experiments, metrics, protocols, train
from mielib.__main__ import main as mielib_main


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


# ---------------------------------------------------------------------------------------------
# Generic units

CALLS = []


def square(unit):
    CALLS.append((unit.fold, unit.repeat))
    return {"value": unit.config["x"] ** 2 + unit.fold + 10 * unit.repeat}


@dataclass
class FailOn:
    fold: int

    def __call__(self, unit):
        if unit.fold == self.fold:
            raise RuntimeError("simulated crash")
        return square(unit)


def units(n=5, x=3, name="demo"):
    return [experiments.Unit(name, {"x": x, "preset": "smoke", "data_source": "sim", "seed": 0}, fold=f, repeat=0)
            for f in range(n)]


def test_run_caches_units_and_stamps_records(results_dir):
    CALLS.clear()
    first = experiments.run(units(), square, progress=False)
    assert [r["value"] for r in first] == [9, 10, 11, 12, 13]
    assert len(CALLS) == 5
    again = experiments.run(units(), square, progress=False)
    assert len(CALLS) == 5 and again == first
    rec = first[0]
    for k in ("commit", "created", "config", "preset", "data_source", "seed", "key", "fold", "repeat"):
        assert k in rec
    assert rec["preset"] == "smoke" and rec["data_source"] == "sim"
    u = units()[0]
    assert u.path == results_dir / "demo" / f"{u.key}.json"
    assert json.loads(u.path.read_text())["value"] == 9
    # another configuration is another key
    experiments.run(units(x=4), square, progress=False)
    assert len(CALLS) == 10


def test_interrupted_run_resumes_without_recomputing(results_dir):
    CALLS.clear()
    with pytest.raises(RuntimeError, match="simulated crash") as info:
        experiments.run(units(), FailOn(2), progress=False)
    assert any("re-run to resume" in n for n in getattr(info.value, "__notes__", []))
    assert CALLS == [(0, 0), (1, 0)]
    stored = sorted(p.name for p in (results_dir / "demo").glob("*.json"))
    assert len(stored) == 2
    created = {p.name: p.stat().st_mtime_ns for p in (results_dir / "demo").glob("*.json")}
    CALLS.clear()
    recs = experiments.run(units(), square, progress=False)
    assert CALLS == [(2, 0), (3, 0), (4, 0)]  # only the unfinished units
    assert [r["value"] for r in recs] == [9, 10, 11, 12, 13]
    for name, mtime in created.items():
        assert (results_dir / "demo" / name).stat().st_mtime_ns == mtime  # finished ones untouched


def test_partial_files_are_never_read_as_done(results_dir):
    u = units(1)[0]
    u.path.parent.mkdir(parents=True)
    # What a killed atomic write leaves behind: a hidden temp file beside the record.
    (u.path.parent / f".{u.path.name}.abc123.tmp").write_text('{"format": "mielib.result/1", "status": "do')
    CALLS.clear()
    experiments.run([u], square, progress=False)
    assert CALLS == [(0, 0)]
    # A record truncated by something else is recomputed, with a warning.
    u.path.write_text(u.path.read_text()[:40])
    with pytest.warns(UserWarning, match="unreadable"):
        experiments.run([u], square, progress=False)
    assert len(CALLS) == 2
    assert experiments.records("demo")[0]["value"] == 9


def test_invalidate_by_key_filter_and_all(results_dir):
    us = units(4)
    experiments.run(us, square, progress=False)
    assert experiments.invalidate("demo", key=us[0].key[:6]) == 1
    assert experiments.invalidate("demo", where=lambda r: r["fold"] == 1) == 1
    assert experiments.invalidate("demo", where={"x": 99}) == 0
    assert experiments.invalidate("demo", where={"x": 3}) == 2
    assert not (results_dir / "demo").exists()
    with pytest.raises(FileNotFoundError, match="no cached results"):
        experiments.invalidate("demo")


def test_results_cli_ls_and_rm(results_dir, capsys):
    us = units(3)
    experiments.run(us, square, progress=False)
    (results_dir / "demo" / ".x.json.1.tmp").write_text("partial")
    assert mielib_main(["results", "ls"]) == 0
    out = capsys.readouterr().out
    assert "3 cached record(s)" in out
    header = out.splitlines()[1].split()
    assert header[:7] == ["name", "key", "fold", "repeat", "preset", "data", "source"]
    for u in us:
        assert u.key in out
    assert "1 temporary file(s)" in out
    assert mielib_main(["results", "ls", "nope"]) == 2
    assert "no cached results named 'nope'" in capsys.readouterr().err
    assert mielib_main(["results", "rm", "demo"]) == 2  # neither --key nor --all
    capsys.readouterr()
    assert mielib_main(["results", "rm", "demo", "--key", us[1].key]) == 0
    assert "removed 1 record(s) from demo" in capsys.readouterr().out
    assert mielib_main(["results", "rm", "demo", "--key", "zzzzzzzz"]) == 2
    assert "no record with key" in capsys.readouterr().err
    assert mielib_main(["results", "ls", "demo"]) == 0
    assert "2 cached record(s)" in capsys.readouterr().out
    assert mielib_main(["results", "rm", "demo", "--all"]) == 0
    assert "removed 2 record(s)" in capsys.readouterr().out
    assert not (results_dir / "demo").exists()


# ---------------------------------------------------------------------------------------------
# Aggregation over folds and repeats

def fake_record(name, fold, repeat, y_true, preds, val_epoch=None):
    n = 3
    rec = {"name": name, "key": f"{name}{fold}{repeat}", "fold": fold, "repeat": repeat,
           "config": {"n_folds": 2, "model": "m"}, "preset": "smoke", "data_source": "sim",
           "classes": ["a", "b", "c"], "history": {"test_pred": [list(p) for p in preds]},
           "test": {"y_true": list(y_true)}}
    rec["metrics"] = train.select(np.array(y_true), [np.array(p) for p in preds], n,
                                  val_true=None if val_epoch is None else np.zeros(1),
                                  val_pred=None if val_epoch is None else
                                  [np.array([0 if e == val_epoch - 1 else 1]) for e in range(len(preds))])
    return rec


def test_table_pools_folds_per_repeat_then_summarises_repeats():
    rng = np.random.default_rng(0)
    recs, truth = [], {}
    for r in range(3):
        for f in range(2):
            y = rng.integers(0, 3, 10)
            preds = [rng.integers(0, 3, 10) for _ in range(4)]
            recs.append(fake_record("exp", f, r, y, preds, val_epoch=2))
            truth[(r, f)] = (y, preds)
    per_repeat = experiments.scores(recs)
    last = per_repeat[per_repeat.selection == "last"].sort_values("repeat")
    for r in range(3):
        yt = np.concatenate([truth[(r, f)][0] for f in range(2)])
        yp = np.concatenate([truth[(r, f)][1][-1] for f in range(2)])
        assert last.uf1.iloc[r] == pytest.approx(metrics.uf1(yt, yp, labels=range(3)))
        # val-selected: epoch 2 in every fold
        yv = np.concatenate([truth[(r, f)][1][1] for f in range(2)])
        row = per_repeat[(per_repeat.selection == "val_selected") & (per_repeat.repeat == r)]
        assert row.uar.iloc[0] == pytest.approx(metrics.uar(yt, yv, labels=range(3)))
        # best oracle: each fold at its own best-accuracy epoch
        yb = np.concatenate([truth[(r, f)][1][int(np.argmax([np.mean(p == truth[(r, f)][0])
                                                                  for p in truth[(r, f)][1]]))] for f in range(2)])
        row = per_repeat[(per_repeat.selection == "best_oracle") & (per_repeat.repeat == r)]
        assert row.accuracy.iloc[0] == pytest.approx(np.mean(yt == yb))
    tab = experiments.table(recs)
    row = tab[tab.selection == "last"].iloc[0]
    s = metrics.summarize(last.uf1)
    assert row.uf1 == s.text and row.uf1_mean == pytest.approx(s.mean) and row.uf1_std == pytest.approx(s.std)
    assert row.repeats == 3 and row.folds == 2 and row.preset == "smoke" and row.data_source == "sim"
    assert set(tab.selection) == {"last", "best_oracle", "val_selected"}
    # fold_mean differs from pooling in general
    fm = experiments.scores(recs, pooling="fold_mean")
    fm_last = fm[fm.selection == "last"].sort_values("repeat")
    r0 = [metrics.uf1(truth[(0, f)][0], truth[(0, f)][1][-1], labels=range(3)) for f in range(2)]
    assert fm_last.uf1.iloc[0] == pytest.approx(np.mean(r0))
    with pytest.raises(ValueError, match="lacks folds"):
        experiments.table(recs[:-1])
    assert len(experiments.table(recs[:-1], complete=False)) == 3


# ---------------------------------------------------------------------------------------------
# Cross-validation with a tiny model and in-memory data

class Net(nn.Module):
    def __init__(self, n_classes, width=4):
        super().__init__()
        self.n_classes = n_classes
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 * width, 8), nn.ReLU(), nn.Linear(8, n_classes))

    def forward(self, x):
        return self.head(self.body(x))


class Tensors(Dataset):
    def __init__(self, x, y, ids):
        self.x, self.y, self.ids = x, y, ids

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def make_samples(n_subjects=6, per_subject=6, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows, xs, ys = [], [], []
    for s in range(n_subjects):
        for c in range(per_subject):
            y = c % n_classes
            x = 0.5 * torch.randn(1, 8, 8, generator=g)
            x[:, y * 2:(y * 2) + 2, :] += 1.0
            rows.append({"dataset": "toy", "subject": f"s{s}", "clip_id": f"c{c}", "label3": str(y)})
            xs.append(x)
            ys.append(y)
    return pd.DataFrame(rows), torch.stack(xs), torch.tensor(ys)


@dataclass
class Provider:
    """Given a fold, the train/test (and val) datasets: what notebooks pass as `data`."""

    seed: int = 0

    def __call__(self, fold):
        df, x, y = make_samples(seed=self.seed)
        ids = [f"{d}/{s}/{c}" for d, s, c in zip(df.dataset, df.subject, df.clip_id)]

        def part(idx):
            return Tensors(x[idx], y[idx], [ids[i] for i in idx]) if len(idx) else None

        return experiments.Split(part(fold.train), part(fold.test), part(fold.val))


@dataclass
class PretrainSet:
    """A 2-class 'synthetic' pre-training set (a different label space)."""

    def __call__(self, fold):
        g = torch.Generator().manual_seed(99)
        y = torch.arange(24) % 2
        x = 0.5 * torch.randn(24, 1, 8, 8, generator=g)
        x[y == 1, :, :, :4] += 1.0
        return Tensors(x, y, [f"syn/{i}" for i in range(24)])


def folds(validation=False):
    df, _, _ = make_samples()
    fs = protocols.kfold(df, 2, seed=0)
    return protocols.add_validation(fs, df, fraction=0.34, seed=0) if validation else fs


CV = dict(classes=["0", "1", "2"], preset="smoke", data_source="sim", seed=3, epochs=2, lr=3e-3,
          config={"dataset": "toy"}, progress=False, device="cpu")


def comparable(rec):
    return {k: rec[k] for k in ("key", "fold", "repeat", "metrics", "test", "history", "unit_seed")}


def test_cross_validate_scratch_caches_and_reports(results_dir):
    recs = experiments.cross_validate("cv", folds(validation=True), Provider(), Net, repeats=2, **CV)
    assert [(r["fold"], r["repeat"]) for r in recs] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    r = recs[0]
    assert r["config"]["mode"] == "scratch" and r["config"]["epochs"] == 2 and r["config"]["batch_size"] == 32
    assert r["config"]["validation"] is True and r["metrics"]["val_selected"] is not None
    assert set(r["test"]) == {"ids", "y_true", "y_pred", "probs"}
    assert all(i.split("/")[1] in [s.split("/")[1] for s in r["subjects"]["test"]] for i in r["test"]["ids"])
    assert recs[0]["unit_seed"] != recs[2]["unit_seed"]  # repeats differ
    assert r["torch_threads"] == torch.get_num_threads()  # what a retrain needs to reproduce it
    mtimes = sorted(p.stat().st_mtime_ns for p in (results_dir / "cv").glob("*.json"))
    again = experiments.cross_validate("cv", folds(validation=True), Provider(), Net, repeats=2, **CV)
    assert [comparable(a) for a in again] == [comparable(b) for b in recs]
    assert sorted(p.stat().st_mtime_ns for p in (results_dir / "cv").glob("*.json")) == mtimes
    tab = experiments.table(experiments.load("cv"))
    assert list(tab.selection) == ["last", "best_oracle", "val_selected"]
    assert (tab.repeats == 2).all() and (tab.folds == 2).all()
    # CPU determinism end to end: recompute from scratch, same records
    experiments.invalidate("cv")
    fresh = experiments.cross_validate("cv", folds(validation=True), Provider(), Net, repeats=2, **CV)
    assert [comparable(a) for a in fresh] == [comparable(b) for b in recs]


def test_cross_validate_finetune_and_direct(results_dir):
    pre = experiments.Pretrain(PretrainSet(), classes=("x", "y"), config={"set": "syn"}, epochs=2)
    ft = experiments.cross_validate("ft", folds(), Provider(), Net, pretrain=pre, repeats=1, **CV)
    assert ft[0]["config"]["mode"] == "finetune" and ft[0]["pretrain"]["cached"] is False
    assert len(list((results_dir / experiments.PRETRAINED).glob("*.pt"))) == 2  # one per fold
    assert ft[0]["test"]["probs"] and len(ft[0]["test"]["probs"][0]) == 3  # a new 3-class head
    # a second fine-tuning experiment reuses the pre-trained weights, with the same result
    ft2 = experiments.cross_validate("ft2", folds(), Provider(), Net, pretrain=pre, repeats=1, **CV)
    assert ft2[0]["pretrain"]["cached"] is True
    assert [comparable(a)["metrics"] for a in ft2] == [comparable(b)["metrics"] for b in ft]
    assert ft2[0]["history"] == ft[0]["history"] and ft2[0]["test"] == ft[0]["test"]
    with pytest.raises(ValueError, match="same label space"):
        experiments.cross_validate("d", folds(), Provider(), Net, pretrain=pre, mode="direct", repeats=1, **CV)
    same = experiments.Pretrain(PretrainSet(), classes=("0", "1", "2"), config={"set": "syn3"}, epochs=2)
    direct = experiments.cross_validate("direct", folds(), Provider(), Net, pretrain=same, mode="direct",
                                        repeats=1, **CV)
    assert direct[0]["config"]["mode"] == "direct" and direct[0]["epochs"] == 2
    assert direct[0]["n_train"] == 24  # trained on the pre-training set alone
    with pytest.raises(ValueError, match="needs a `pretrain`"):
        experiments.cross_validate("x", folds(), Provider(), Net, mode="finetune", **CV)


def test_cross_validate_accepts_a_fresh_split_per_repeat(results_dir):
    df, _, _ = make_samples()
    per_repeat = [protocols.kfold(df, 2, seed=s) for s in (0, 1)]
    assert per_repeat[0][0].test_subjects != per_repeat[1][0].test_subjects
    recs = experiments.cross_validate("fresh", per_repeat, Provider(), Net, **{**CV, "epochs": 1})
    assert [(r["fold"], r["repeat"]) for r in recs] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert recs[0]["subjects"]["test"] == list(per_repeat[0][0].test_subjects)
    assert recs[2]["subjects"]["test"] == list(per_repeat[1][0].test_subjects)
    assert recs[0]["split"] != recs[2]["split"]
    with pytest.raises(ValueError, match="one per repeat"):
        experiments.cross_validate("fresh", per_repeat, Provider(), Net, repeats=3, **CV)


def test_parallel_workers_give_the_same_records(results_dir):
    serial = experiments.cross_validate("par", folds(), Provider(), Net, repeats=1, **CV)
    experiments.invalidate("par")
    parallel = experiments.cross_validate("par", folds(), Provider(), Net, repeats=1, workers=2, **CV)
    assert [comparable(a) for a in parallel] == [comparable(b) for b in serial]


def test_unpicklable_work_is_refused_for_workers():
    with pytest.raises(TypeError, match="picklable"):
        experiments.run(units(2), lambda u: {"v": 1}, workers=2, progress=False)


def test_unit_names_are_checked():
    with pytest.raises(ValueError, match="experiment name"):
        experiments.Unit("a/b", {})
    with pytest.raises(ValueError, match="experiment name"):
        experiments.Unit("_pretrained", {})


# ---------------------------------------------------------------------------------------------
# ClipSet providers, end to end with the real models, views and protocols

def tiny_clipset(n_subjects=4, per_subject=3, name="toyset", provenance=None):
    from mielib.clip import ArrayFrames, Clip, ClipSet

    rng = np.random.default_rng(1)
    labels = ("negative", "positive", "surprise")
    clips = []
    for s in range(n_subjects):
        for c in range(per_subject):
            frames = rng.integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)
            meta = {"provenance": provenance(s, c)} if provenance else {}
            clips.append(Clip(name, f"s{s}", f"c{c}", ArrayFrames(frames), 200.0, 0, 1, 2,
                              labels[c % 3], labels[c % 3], meta=meta))
    return ClipSet(name, clips)


def test_fold_and_pretrain_providers_apply_exclusions():
    cs = tiny_clipset()
    extra = tiny_clipset(n_subjects=2, name="other")
    fs = protocols.kfold(cs, 2, seed=0)
    split = experiments.FoldData(cs, "onset_apex", 32, extra=extra)(fs[0])
    assert len(split.test) == len(fs[0].test) and split.val is None
    assert len(split.train) == len(fs[0].train) + len(extra)  # other dataset: no subject shared
    onset, apex, y = split.train[0]
    assert onset.shape == apex.shape == (3, 32, 32)
    assert train.sample_ids(split.test) == [cs[int(i)].key for i in fs[0].test]
    test_subjects = {k.split("/")[1] for k in fs[0].test_subjects}
    # a pre-training set from the same dataset drops the test subjects' clips
    pre = experiments.PretrainData(cs, "apex", 32)(fs[0])
    assert {c.subject for c in pre.clips}.isdisjoint(test_subjects) and len(pre) == len(fs[0].train)
    # MiE-X: drop samples whose AUs were read from test-fold clips
    miex = tiny_clipset(n_subjects=3, name="miex", provenance=lambda s, c: f"toyset/s{c}/c{s}")
    kept = experiments.PretrainData(miex, "apex", 32, exclude="provenance")(fs[0])
    assert all(c.meta["provenance"].split("/")[1] not in test_subjects for c in kept.clips)
    assert 0 < len(kept) < len(miex)


def test_provenance_exclusion_keeps_expert_samples_as_miex_names_them():
    # MiE-X gives z_exp samples the provenance "exp/<emotion>" and source "exp": no clip, always kept.
    cs = tiny_clipset()
    fs = protocols.kfold(cs, 2, seed=0)
    miex = tiny_clipset(n_subjects=2, name="miex", provenance=lambda s, c: f"toyset/s{s}/c{c}")
    for i, c in enumerate(miex.clips):
        c.meta["source"] = "exp" if i % 2 else "mie"
        if i % 2:
            c.meta["provenance"] = f"exp/{c.label}"
    kept = experiments.PretrainData(miex, "apex", 32, exclude="provenance")(fs[0])
    test_subjects = {k.split("/")[1] for k in fs[0].test_subjects}
    expected = [c for c in miex.clips if c.meta["source"] == "exp" or c.subject not in test_subjects]
    assert [c.key for c in kept.clips] == [c.key for c in expected] and len(expected) < len(miex)


def test_cross_validate_with_mielib_models_views_and_protocols(results_dir):
    models = pytest.importorskip("mielib.models")
    cs = tiny_clipset()
    fs = protocols.kfold(cs, 2, seed=0)
    recs = experiments.cross_validate("apexme_toy", fs, experiments.FoldData(cs, models.INPUTS["apexme"], 32),
                                      "apexme", classes=("negative", "positive", "surprise"), preset="smoke",
                                      data_source="sim", seed=0, repeats=1, epochs=1, device="cpu",
                                      progress=False, config={"dataset": "toyset"})
    assert len(recs) == 2 and recs[0]["config"]["model"] == "apexme"
    assert sorted(sum((r["test"]["ids"] for r in recs), [])) == sorted(c.key for c in cs)
    tab = experiments.table(recs)
    assert tab.loc[tab.selection == "last", "repeats"].iloc[0] == 1


def test_a_done_record_lacking_fields_is_unreadable_not_a_crash(results_dir, capsys):
    us = units(2)
    experiments.run(us, square, progress=False)
    bare = {"format": experiments.FORMAT, "status": "done", "value": 1}  # parses, says done, lacks name, key, ...
    us[0].path.write_text(json.dumps(bare))
    with pytest.warns(UserWarning, match=r"lacks field\(s\) name, key, fold"):
        assert mielib_main(["results", "ls"]) == 0
    out = capsys.readouterr().out
    assert "1 cached record(s)" in out and us[1].key in out and us[0].key not in out
    CALLS.clear()
    with pytest.warns(UserWarning, match="will be recomputed"):
        recs = experiments.run(us, square, progress=False)
    assert CALLS == [(0, 0)] and recs[0]["key"] == us[0].key  # recomputed, the other reused


class Prepared(Net):
    """A Net that reads its training set before training, as AU-GACN builds its AU graph;
    it writes down which samples it was shown."""

    shown: list = []

    def prepare(self, train_set):
        Prepared.shown.append(list(train_set.ids))


def test_a_model_prepares_on_the_folds_training_set_only(results_dir):
    Prepared.shown = []
    fs = folds()
    recs = experiments.cross_validate("prep", fs, Provider(), Prepared, repeats=1, **CV)
    assert len(Prepared.shown) == len(fs)
    for shown, rec in zip(Prepared.shown, recs):
        test_ids = set(rec["test"]["ids"])
        assert shown and not test_ids & set(shown)
        assert {i.split("/")[1] for i in shown} == {s.split("/")[-1] for s in rec["subjects"]["train"]}
    # fine-tuning: prepared on the pre-training set, then again on the fold's training set
    Prepared.shown = []
    pre = experiments.Pretrain(PretrainSet(), ("a", "b"), {"set": "syn"}, epochs=1)
    experiments.cross_validate("prep_ft", fs[:1], Provider(), Prepared, pretrain=pre, repeats=1, **CV)
    assert Prepared.shown[0][0].startswith("syn/") and Prepared.shown[1][0].startswith("toy/")
