"""Folds: subject-disjoint, complete, seeded, saved; LOSO/LOVO/LODO; exclusion rules."""

import json

import numpy as np
import pandas as pd
import pytest

from mielib import protocols

CLASSES = ("negative", "positive", "surprise")


def composite(seed=0):
    """A small CompMiE-like table: three datasets, their subject spellings, uneven classes."""
    rng = np.random.default_rng(seed)
    rows = []
    spec = {"casme2": [f"sub{i:02d}" for i in range(1, 9)], "samm": [f"{i:03d}" for i in (6, 7, 9, 10, 11, 12)],
            "smic": [f"s{i}" for i in range(1, 6)]}
    for dataset, subjects in spec.items():
        for s in subjects:
            for j in range(int(rng.integers(1, 7))):
                rows.append({"dataset": dataset, "subject": s, "clip_id": f"{s}_{j}",
                             "label3": rng.choice(CLASSES, p=[0.55, 0.27, 0.18])})
    return pd.DataFrame(rows)


def assert_valid_partition(folds, df, k):
    subjects = protocols.subject_keys(df)
    assert len(folds) == k
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(df)))  # every sample tested exactly once
    for f in folds:
        assert not set(subjects[f.train]) & set(subjects[f.test])  # subject-disjoint
        assert set(f.train.tolist()) | set(f.test.tolist()) == set(range(len(df)))
        assert set(subjects[f.test]) == set(f.test_subjects)
        assert set(subjects[f.train]) == set(f.train_subjects)
    protocols.check(folds, df)


@pytest.mark.parametrize("k", [3, 5])
def test_kfold_is_a_subject_disjoint_partition(k):
    df = composite()
    folds = protocols.kfold(df, k, seed=0)
    assert_valid_partition(folds, df, k)
    assert all(f.protocol == f"kfold{k}" for f in folds)


def test_kfold_is_seeded_and_stratified():
    df = composite()
    a, b = protocols.kfold(df, 3, seed=1), protocols.kfold(df, 3, seed=1)
    assert [f.test_subjects for f in a] == [f.test_subjects for f in b]
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b))
    others = {tuple(f.test_subjects for f in protocols.kfold(df, 3, seed=s)) for s in range(2, 8)}
    assert len(others) > 1  # seeds give different splits
    # Stratification: each fold's class shares stay near the overall shares, better than
    # random subject assignment does on average.
    overall = df["label3"].value_counts(normalize=True)

    def imbalance(groups):
        return sum(((df["label3"].iloc[g].value_counts(normalize=True).reindex(CLASSES, fill_value=0) - overall) ** 2).sum()
                   for g in groups)

    ours = np.mean([imbalance([f.test for f in protocols.kfold(df, 3, seed=s)]) for s in range(10)])
    rng = np.random.default_rng(0)
    subjects = protocols.subject_keys(df)
    unique = sorted(set(subjects))
    rand = []
    for _ in range(10):
        fold_of = dict(zip(unique, rng.permutation(len(unique)) % 3))
        rand.append(imbalance([np.flatnonzero([fold_of[s] == f for s in subjects]) for f in range(3)]))
    assert ours < np.mean(rand)
    # A generator works as a seed too.
    g = protocols.kfold(df, 3, seed=np.random.default_rng(1))
    assert [f.test_subjects for f in g] == [f.test_subjects for f in a]


def test_kfold_errors():
    df = composite()
    with pytest.raises(ValueError, match="cannot fill 30 subject-disjoint folds"):
        protocols.kfold(df, 30, seed=0)
    bad = df.copy()
    bad.loc[3, "label3"] = None
    with pytest.raises(ValueError, match=r"rows \[3\] have no 'label3'"):
        protocols.kfold(bad, 3, seed=0)
    with pytest.raises(ValueError, match="lack column\\(s\\) subject"):
        protocols.kfold(df.drop(columns="subject"), 3, seed=0)
    with pytest.raises(ValueError, match="needs a seed"):
        protocols.split(df, "kfold3")
    with pytest.raises(ValueError, match="unknown protocol 'loo'"):
        protocols.split(df, "loo")
    # Subjects named alike in different datasets stay different subjects.
    clash = pd.DataFrame({"dataset": ["a", "b", "a", "b"], "subject": ["1", "1", "2", "2"], "label3": list("xyxy")})
    assert len(protocols.loso(clash)) == 4


def test_loso_lovo_lodo():
    df = composite()
    subjects = protocols.subject_keys(df)
    folds = protocols.loso(df)
    assert len(folds) == len(set(subjects))
    assert_valid_partition(folds, df, len(set(subjects)))
    assert all(len(f.test_subjects) == 1 for f in folds)
    assert "samm/6" in {f.test_subjects[0] for f in folds}  # "006" normalised

    folds = protocols.lovo(df)
    assert len(folds) == len(df)
    assert [f.test.tolist() for f in folds] == [[i] for i in range(len(df))]
    multi = next(f for f in folds if (subjects == f.test_subjects[0]).sum() > 1)
    assert multi.test_subjects[0] in multi.train_subjects  # LOVO keeps the subject's other clips
    protocols.check(folds, df)

    folds = protocols.lodo(df)
    assert len(folds) == 3
    assert_valid_partition(folds, df, 3)
    assert {f.test_subjects[0].split("/")[0] for f in folds} == {"casme2", "samm", "smic"}
    assert all(len({s.split("/")[0] for s in f.test_subjects}) == 1 for f in folds)
    assert len(protocols.split(df, "loso")) == len(set(subjects))


def test_validation_subjects_come_from_training_subjects():
    df = composite()
    subjects = protocols.subject_keys(df)
    folds = protocols.add_validation(protocols.kfold(df, 3, seed=0), df, fraction=0.25, seed=0)
    for f in folds:
        assert f.val_subjects and not set(f.val_subjects) & set(f.train_subjects)
        assert not set(f.val_subjects) & set(f.test_subjects)
        assert set(subjects[f.val]) == set(f.val_subjects)
        assert not set(subjects[f.train]) & set(f.val_subjects)
        assert len(f.train) + len(f.val) + len(f.test) == len(df)
    protocols.check(folds, df)
    again = protocols.add_validation(protocols.kfold(df, 3, seed=0), df, fraction=0.25, seed=0)
    assert [f.val_subjects for f in again] == [f.val_subjects for f in folds]
    with pytest.raises(ValueError, match="LOVO"):
        protocols.add_validation(protocols.lovo(df), df, seed=0)


def test_save_load_roundtrip_and_mismatch(tmp_path):
    df = composite()
    folds = protocols.add_validation(protocols.kfold(df, 3, seed=4), df, seed=1)
    path = tmp_path / "folds" / "compmie_kfold3.json"
    protocols.save(folds, path, samples=df, meta={"seed": 4})
    loaded = protocols.load(path, samples=df)
    assert len(loaded) == 3
    for a, b in zip(folds, loaded):
        assert a.to_dict() == b.to_dict()
        assert b.train.dtype == np.int64
    assert json.loads(path.read_text())["meta"] == {"seed": 4}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers
    with pytest.raises(ValueError, match="made for other samples"):
        protocols.load(path, samples=df.iloc[::-1].reset_index(drop=True))
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a mielib fold file"):
        protocols.load(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="no such fold file"):
        protocols.load(tmp_path / "none.json")


def test_exclude_subjects_from_pretraining_set():
    comp = composite()
    fold = protocols.kfold(comp, 3, seed=0)[0]
    # A stand-alone SAMM table spells subjects "006" or 6; the composite fold says "samm/6".
    samm = pd.DataFrame({"dataset": "SAMM", "subject": [6, 7, 9, 10, 11, 12, 13, 14],
                         "clip_id": [f"c{i}" for i in range(8)]})
    kept = protocols.exclude_subjects(samm, fold.test_subjects)
    test_samm = {s for s in fold.test_subjects if s.startswith("samm/")}
    kept_keys = set(protocols.subject_keys(kept))
    assert not kept_keys & test_samm
    assert len(kept) + kept.attrs["excluded"] == len(samm)
    assert kept.attrs["excluded"] == sum(protocols.subject_key("samm", s) in test_samm for s in samm["subject"])
    assert kept.attrs["excluded"] > 0 or not test_samm
    # Subjects 13 and 14 are not in the composite at all, so they always stay.
    assert {"samm/13", "samm/14"} <= kept_keys
    with pytest.raises(ValueError, match="not a subject key"):
        protocols.exclude_subjects(samm, ["006"])
    with pytest.raises(ValueError, match="lack column\\(s\\) dataset"):
        protocols.exclude_subjects(samm.drop(columns="dataset"), ["samm/6"])


def test_exclude_provenance_of_miex_manifest():
    manifest = pd.DataFrame({
        "source": ["mie", "mie", "mie", "mae", "exp", "mie"],
        "provenance": ["casme2/sub01/EP02_01f", "casme2/sub02/EP03_02", "samm/006/006_1_2",
                       "ckplus/S005/001", None, "smic/s1/s1_ne_01"],
    })
    kept = protocols.exclude_provenance(manifest, {"casme2/sub01", "samm/6"})
    assert kept["provenance"].tolist()[:2] == ["casme2/sub02/EP03_02", "ckplus/S005/001"]
    assert kept.attrs["excluded"] == 2 and len(kept) == 4
    # Clip keys drop only that clip.
    kept = protocols.exclude_provenance(manifest, ["smic/s01/S1_NE_01"])
    assert "smic/s1/s1_ne_01" not in kept["provenance"].tolist() and len(kept) == 5
    # With a real fold: no z_MiE of a test subject survives.
    comp = composite()
    fold = protocols.kfold(comp, 3, seed=2)[1]
    rows = [{"source": "mie", "provenance": f"{d}/{s}/{c}"} for d, s, c in comp[["dataset", "subject", "clip_id"]].values]
    kept = protocols.exclude_provenance(pd.DataFrame(rows), fold.test_subjects)
    left = {"/".join(p.split("/")[:2]) for p in kept["provenance"]}
    assert not {protocols.subject_key(*k.split("/")) for k in left} & set(fold.test_subjects)
    assert len(kept) == len(fold.train)
    with pytest.raises(ValueError, match="z_MiE sample without provenance"):
        protocols.exclude_provenance(pd.DataFrame({"source": ["mie"], "provenance": [""]}), ["a/b"])
    with pytest.raises(ValueError, match="provenance 'casme2-sub01' is not"):
        protocols.exclude_provenance(pd.DataFrame({"provenance": ["casme2-sub01"]}), ["a/b"])
    with pytest.raises(ValueError, match="lack column\\(s\\) provenance"):
        protocols.exclude_provenance(pd.DataFrame({"source": ["mie"]}), ["a/b"])
