"""Notebook 10's protocols and tables (mielib.augacn_tables): sequences, folds, the paper's
ACC/F1 definitions, the quoted numbers beside ours."""

import numpy as np
import pandas as pd
import pytest

from mielib import augacn_tables as tables
from mielib.clip import ArrayFrames, Clip, ClipSet

T7 = tables.TASKS[0]  # CASME II, 7 classes
T3 = tables.TASKS[1]  # CASME II, MEGC 3 classes


def _clips(n_subjects=4, labels=("happiness", "disgust", "others", "surprise"), frames=20, size=12):
    rng = np.random.default_rng(0)
    label3 = {"happiness": "positive", "disgust": "negative", "surprise": "surprise", "others": None}
    out = []
    for s in range(n_subjects):
        for j, lab in enumerate(labels):
            arr = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
            arr[:, 0, 0, 0] = np.arange(frames)  # frame number in a pixel, to check positions
            out.append(Clip("casme2", f"s{s}", f"c{j}", ArrayFrames(arr), 30.0, 2, 9, 17, lab, label3[lab],
                            aus="4+L10", readout=np.tile(np.arange(frames)[:, None], (1, 17)) / frames))
    return ClipSet("casme2", out)


def test_sequences_sample_onset_to_offset_and_keep_the_readout_aligned():
    seq = tables.load_sequences(_clips(), size=8, n_frames=5)
    c = seq[0]
    assert tables.positions(2, 17, 5) == [2, 6, 10, 13, 17]  # linspace 2..17 in 5 steps, rounded half to even
    assert (c.onset, c.offset, c.n_frames, c.frames[0].shape) == (0, 4, 5, (8, 8, 3))
    assert c.apex == 2  # the sampled position nearest the annotated apex 9 is 10
    np.testing.assert_allclose(c.readout[:, 0], np.array([2, 6, 10, 13, 17]) / 20)
    assert c.meta["positions"] == [2, 6, 10, 13, 17] and c.meta["source_apex"] == 9


def test_in_space_keeps_the_tasks_classes_and_says_what_it_left_out():
    c = tables.in_space(_clips(), T3)
    assert len(c) == 12 and {x.label3 for x in c} == {"positive", "negative", "surprise"}
    assert len(c.skipped) == 4 and all("'others'" not in s.reason or "None" in s.reason for s in c.skipped)
    assert len(tables.in_space(_clips(), T7)) == 16


def test_lovo_subset_is_class_stratified_seeded_and_one_clip_per_fold():
    c = tables.in_space(_clips(n_subjects=6), T7)
    full = tables.lovo(c, T7)
    assert len(full) == 24
    sub = tables.lovo(c, T7, videos=4, seed=0)
    labels = [c[int(f.test[0])].label for f in sub]
    assert sorted(labels) == sorted(["happiness", "disgust", "others", "surprise"])  # every class once
    assert [f.index for f in sub] == [0, 1, 2, 3] and all(len(f.test) == 1 and len(f.train) == 23 for f in sub)
    assert [f.to_dict() for f in sub] == [f.to_dict() for f in tables.lovo(c, T7, videos=4, seed=0)]
    assert [f.to_dict() for f in sub] != [f.to_dict() for f in tables.lovo(c, T7, videos=4, seed=1)]


def test_loso_and_grouped_folds_are_subject_disjoint():
    c = tables.in_space(_clips(n_subjects=6), T7)
    assert len(tables.loso(c, T7)) == 6
    grouped = tables.loso(c, T7, groups=3, seed=0)
    assert len(grouped) == 3
    for f in grouped:
        assert not set(f.train_subjects) & set(f.test_subjects)


def test_cross_database_fold_trains_on_one_set_and_tests_on_the_other():
    a = tables.in_space(_clips(n_subjects=2), T3)
    b = ClipSet("smic", [Clip("smic", f"x{i}", "c", ArrayFrames(np.zeros((3, 4, 4, 3), np.uint8)), 25.0, 0, 1, 2,
                              "positive", "positive") for i in range(3)])
    both, (fold,) = tables.combined(a, b, "casme2->smic")
    assert len(both) == 9 and fold.train.tolist() == list(range(6)) and fold.test.tolist() == [6, 7, 8]
    assert all(s.startswith("smic/") for s in fold.test_subjects)


def _rec(fold, y, p):
    return {"fold": fold, "test": {"y_true": y, "y_pred": p}}


def test_scores_average_folds_under_loso_and_pool_under_lovo():
    recs = [_rec(0, [0, 0, 1, 1], [0, 0, 1, 0]), _rec(1, [1, 1], [1, 1])]
    s = tables.scores(recs, 2, "loso")
    # fold 0: accuracy 3/4; F1 class 0: 2/(2+1/2(0+1))... by hand: class 0 P=2/3 R=1 F1=0.8; class 1 P=1 R=1/2 F1=2/3
    # fold 1: accuracy 1, only class 1 present: F1 1
    assert s["ACC"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["F1"] == pytest.approx(((0.8 + 2 / 3) / 2 + 1.0) / 2)
    # pooled: y 0 0 1 1 1 1, p 0 0 1 0 1 1: accuracy 5/6; class 0 P 2/3 R 1 F1 .8; class 1 P 1 R 3/4 F1 6/7
    assert s["UF1"] == pytest.approx((0.8 + 6 / 7) / 2)
    pooled = tables.scores(recs, 2, "lovo")
    assert pooled["ACC"] == pytest.approx(5 / 6) and pooled["F1"] == pytest.approx(pooled["UF1"])


def test_references_are_the_training_majority_and_a_logistic_regression():
    c = tables.in_space(_clips(n_subjects=4, labels=("happiness", "happiness", "disgust", "surprise")), T3)
    y = np.array([T3.classes.index(x.label3) for x in c])
    fs = tables.loso(c, T3)
    refs = tables.references(c, y, fs, seed=0)
    major = tables.pooled(refs["majority class"])[1]
    assert (major == T3.classes.index("positive")).all()
    assert len(tables.pooled(refs["logistic regression"])[1]) == len(c)


def test_side_by_side_quotes_the_paper_and_marks_what_it_lacks():
    ours = {("AU-GACN", "CASME II", "7"): {"ACC": 0.5, "F1": 0.25}}
    tab = tables.side_by_side(ours, "Table 2", [("CASME II", "7", "ACC"), ("CASME II", "7", "F1")],
                              ["AU-GACN", "majority class"])
    assert tab.loc[0, "CASME II (7) ACC ours"] == "50.0"
    assert tab.loc[0, "CASME II (7) ACC paper (quoted)"] == "56.1"  # Table 2: 0.561
    assert tab.loc[0, "CASME II (7) F1 paper (quoted)"] == "39.4"
    assert tab.loc[1].tolist()[1:] == ["–"] * 4
    with pytest.raises(ValueError, match="Table 9"):
        tables.quoted("Table 9")
