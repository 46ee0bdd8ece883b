"""mielib.paper: the quoted numbers, the side-by-side table, Table 1's rows, key frames, and one
tiny Table 1 row run end to end (exclusion counted from its records)."""

import numpy as np
import pandas as pd
import pytest

from mielib import au, paper, protocols, views
from mielib.clip import ArrayFrames, Clip, ClipSet


# ---------------------------------------------------------------------------------------------
# Quoted numbers

def test_table1_numbers_are_the_papers_nine_rows():
    q = paper.numbers("miex_table1")
    assert len(q) == 9 * 2 * 2
    assert sorted(q["row"].unique()) == list(range(1, 10))
    assert set(q["method"]) == {"ApexME", "Branches"} and set(q["metric"]) == {"UF1", "UAR"}
    # spot checks against the seed paper's Table 1
    cell = q[(q.row == 8) & (q.method == "ApexME") & (q.metric == "UF1")].iloc[0]
    assert (cell["mean"], cell["std"]) == (46.9, 0.9)
    cell = q[(q.row == 9) & (q.method == "Branches") & (q.metric == "UAR")].iloc[0]
    assert (cell["mean"], cell["std"]) == (52.3, 0.4)


def test_every_transcribed_file_loads():
    for name in paper.FILES:
        assert len(paper.numbers(name)) > 0


def test_numbers_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        paper.numbers("table9")
    with pytest.raises(FileNotFoundError, match="data/paper_numbers"):
        paper.numbers("miex_table1", folder=tmp_path)


def test_fmt():
    assert paper.fmt(45.24, 0.71) == "45.2 ± 0.7" and paper.fmt(45.2, 0.71, digits=2) == "45.20 ± 0.71"
    assert paper.fmt(34.6, float("nan")) == "34.6"
    assert paper.fmt(float("nan"), 1.0) == "n/r"


# ---------------------------------------------------------------------------------------------
# Side by side

def _ours():
    return pd.DataFrame({"row": [1, 2, 3], "method": ["ApexME"] * 3,
                         "uf1_mean": [0.41, 0.5, 0.2], "uf1_std": [0.01, 0.02, 0.0],
                         "uar_mean": [0.4, 0.45, 0.3], "uar_std": [0.005, 0.0, 0.01]})


def test_side_by_side_puts_ours_beside_the_quoted_numbers():
    quoted = paper.numbers("miex_table1")
    out = paper.side_by_side(_ours(), quoted, keys=("row", "method"))
    assert list(out["row"]) == [1, 2, 3]
    assert out.loc[0, "UF1 ours"] == "41.0 ± 1.0"
    assert out.loc[0, "UF1 paper (quoted)"] == "41.8 ± 0.7"
    assert out.loc[1, "UAR paper (quoted)"] == "45.5 ± 1.0"
    assert out.loc[2, "uar_ours_mean"] == pytest.approx(30.0)
    assert out.loc[2, "uf1_paper_mean"] == 45.0 and out.loc[2, "uf1_paper_std"] == 1.7


def test_side_by_side_marks_what_the_paper_does_not_report():
    quoted = paper.numbers("miex_table1")
    ours = _ours().assign(method=["ApexME", "ApexME", "DTSCNN"])
    out = paper.side_by_side(ours, quoted, keys=("row", "method"))
    assert out.loc[2, "UF1 paper (quoted)"] == "n/r" and np.isnan(out.loc[2, "uf1_paper_mean"])


def test_side_by_side_rejects_ambiguous_or_incomplete_input():
    quoted = paper.numbers("miex_table1")
    with pytest.raises(ValueError, match="repeats key"):
        paper.side_by_side(pd.concat([_ours(), _ours()]), quoted, keys=("row", "method"))
    with pytest.raises(ValueError, match="lacks column"):
        paper.side_by_side(_ours().drop(columns="uar_std"), quoted, keys=("row", "method"))
    with pytest.raises(ValueError, match="quoted numbers repeat"):
        paper.side_by_side(_ours(), pd.concat([quoted, quoted]), keys=("row", "method"))


# ---------------------------------------------------------------------------------------------
# Table 1 rows

def test_table1_rows_follow_the_paper():
    rows = {r.number: r for r in paper.TABLE1}
    assert [r.number for r in paper.TABLE1] == list(range(1, 10))
    assert rows[1].mode == "scratch" and rows[2].ckplus and rows[2].mode == "scratch"
    assert [rows[i].pretraining for i in (3, 4, 5, 6)] == ["smic", "casme", "samm", "mmew"]
    assert rows[7].mode == "direct" and not rows[7].compmie
    assert rows[8].mode == "finetune" and rows[9].ckplus
    d = paper.describe()
    assert list(d["pre-training"]) == ["-", "-", "SMIC", "CASME", "SAMM", "MMEW", "MiE-X", "MiE-X", "MiE-X"]
    assert list(d["CK+"]).count("✓") == 2 and list(d["CompMiE"]).count("✓") == 8


# ---------------------------------------------------------------------------------------------
# Key frames, caps, labels, fingerprints

def _clip(dataset, subject, k, label3, n=4, side=40, seed=0):
    rng = np.random.default_rng([seed, k, len(subject)])
    frames = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    return Clip(dataset=dataset, subject=subject, clip_id=f"{subject}_{k}", frames=ArrayFrames(frames), fps=100.0,
                onset=0, apex=2, offset=n - 1, label=label3 or "others", label3=label3)


def _set(name, dataset, subjects, per=2, seed=0):
    clips = [_clip(dataset, s, k, au.MEGC3[(i * per + k) % 3], seed=seed)
             for i, s in enumerate(subjects) for k in range(per)]
    return ClipSet(name, clips, [], "sim")


def test_keyframes_hold_onset_and_apex_resized_and_nothing_else():
    cs = _set("x", "smic", ["s1", "s2"])
    kf = paper.load_keyframes(cs, 32)
    c0, k0 = cs[0], kf[0]
    assert len(k0.frames) == c0.n_frames and k0.key == c0.key and k0.apex == c0.apex
    assert k0.frames[2].shape == (32, 32, 3) and k0.frames[-2].shape == (32, 32, 3)
    with pytest.raises(IndexError, match=r"smic/s1/s1_0: frame 1 was not preloaded"):
        k0.frames[1]
    with pytest.raises(IndexError, match="out of range"):
        k0.frames[4]
    # the views give the same tensors as on the original clips at that size
    for view in (views.Apex, views.OnsetApex):
        a, b = view(cs, size=32)[1], view(kf, size=32)[1]
        for x, y in zip(a[:-1], b[:-1]):
            assert np.array_equal(x.numpy(), y.numpy())
        assert a[-1] == b[-1]


def test_keyframes_name_the_clip_of_a_bad_frame():
    bad = _clip("smic", "s1", 0, "negative")
    bad.frames = ArrayFrames(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="smic/s1/s1_0"):
        paper.load_keyframes(ClipSet("x", [bad]), 32)


def test_cap_is_seeded_and_keeps_order():
    cs = _set("x", "smic", [f"s{i}" for i in range(10)])
    a, b = paper.cap(cs, 7, seed=1), paper.cap(cs, 7, seed=1)
    assert [c.key for c in a] == [c.key for c in b] and len(a) == 7
    order = [c.key for c in cs]
    assert [order.index(c.key) for c in a] == sorted(order.index(c.key) for c in a)
    assert paper.cap(cs, None, seed=1) is cs and len(paper.cap(cs, 100, seed=1)) == 20
    assert [c.key for c in paper.cap(cs, 7, seed=2)] != [c.key for c in a]


def test_megc3_lists_what_it_drops():
    cs = _set("x", "samm", ["6", "7"])
    cs.clips[1].label3, cs.clips[1].label = None, "others"
    out = paper.megc3(cs)
    assert len(out) == 3 and len(out.skipped) == 1 and "others" in out.skipped[0].reason


def test_fingerprint_changes_with_the_clips():
    cs = _set("x", "smic", ["s1", "s2"])
    f = paper.fingerprint(cs)
    assert f == paper.fingerprint(_set("x", "smic", ["s1", "s2"]))
    cs.clips[0].label3 = "surprise" if cs.clips[0].label3 != "surprise" else "negative"
    assert paper.fingerprint(cs) != f


# ---------------------------------------------------------------------------------------------
# One row, end to end

@pytest.fixture
def one_thread():
    # Two torch threads on a shared 2-core machine spin against other processes: ~30x slower.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_run_table1_row_excludes_test_subjects_from_pretraining(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "results"))
    composite = paper.load_keyframes(_set("composite", "smic", [f"s{i}" for i in range(1, 7)]), 32)
    smic = paper.load_keyframes(_set("smic", "smic", [f"s{i}" for i in range(1, 9)], seed=1), 32)
    folds = protocols.split(composite, "kfold3", seed=0)
    preset = {"name": "test", "batch_size": 8, "repeats": 1}
    kw = dict(composite=composite, folds=folds, sets={"smic": smic}, size=32, epochs_real=1, epochs_miex=1,
              preset=preset, data_source="sim", seed=0, progress=False)
    recs = paper.run_table1_row(paper.TABLE1[2], "apexme", **kw)
    assert len(recs) == 3
    for rec, fold in zip(sorted(recs, key=lambda r: r["fold"]), folds):
        n_test_clips = sum(c.subject in {s.split("/")[1] for s in fold.test_subjects} for c in smic)
        assert rec["pretrain"]["n_train"] == len(smic) - n_test_clips
        assert rec["n_train"] == len(fold.train)
        assert rec["config"]["data"]["row"] == 3 and rec["config"]["pretrain"]["epochs"] == 1
    # cached: the second call trains nothing and returns the same records
    again = paper.run_table1_row(paper.TABLE1[2], "apexme", **kw)
    assert [r["key"] for r in again] == [r["key"] for r in recs]
    with pytest.raises(ValueError, match="needs the set"):
        paper.run_table1_row(paper.TABLE1[1], "apexme", **kw)
    with pytest.raises(ValueError, match="unknown model"):
        paper.run_table1_row(paper.TABLE1[0], "resnet", **kw)
