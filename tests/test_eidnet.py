"""EIDNet (notebook 11): its losses on hand-computed values, the frozen MacroNet, the fold rule
(no test subject's clip in either phase), cached records that the tables and claims read, and
Fig. 4's numbers computed from the stored embeddings."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from dataset_fixtures import ramp_clips

from mielib import claims, eidnet, experiments, metrics, protocols, stats

SIZE = 32


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def pairs(n_subjects=4, per_subject=4, classes=("a", "b"), dataset="casme2", seed=0, frames=3):
    """A tiny Pairs set: flows whose mean encodes the class, onset frames of noise."""
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    labels = np.arange(n) % len(classes)
    subjects = [f"s{i // per_subject}" for i in range(n)]
    keys = [f"{dataset}/{s}/clip{i}" for i, s in enumerate(subjects)]
    neutral = rng.integers(0, 256, (n, 3, SIZE, SIZE), dtype=np.uint8)
    expression = (rng.normal(size=(n, frames, 3, SIZE, SIZE)) + labels[:, None, None, None, None]).astype(np.float16)
    df = pd.DataFrame({"dataset": dataset, "subject": subjects})
    return eidnet.Pairs(neutral, expression, labels.astype(np.int64), keys, protocols.subject_keys(df),
                        tuple(classes), "flow"), df


SETTINGS = eidnet.Settings(epochs_1=1, epochs_2=1, batch_size=8)


# ---------------------------------------------------------------------------------------------
# Frames

def test_five_frames_centred_on_the_apex_with_the_papers_supplement_rule():
    assert eidnet.positions(0, 10, 20) == [8, 9, 10, 11, 12]
    # too few frames after the apex: more before it (paper §5.1); a CK+ sequence ends on its peak
    assert eidnet.positions(0, 19, 20) == [16, 17, 18, 19, 20]
    assert eidnet.positions(0, 9, 9) == [5, 6, 7, 8, 9]
    # too few before the apex: more after it
    assert eidnet.positions(3, 3, 20) == [3, 4, 5, 6, 7]
    # a clip shorter than five frames repeats its last one
    assert eidnet.positions(0, 1, 2) == [0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="not in order"):
        eidnet.positions(5, 3, 9)


# ---------------------------------------------------------------------------------------------
# Losses, by hand

def test_identity_similarity_and_reconstruction_are_euclidean_norms_averaged_over_the_batch():
    a = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    # ||(3, 4)|| = 5 and ||(0, -1)|| = 1: mean 3
    assert eidnet.similarity_loss(a, b).item() == pytest.approx(3.0)
    target = torch.zeros(2, 1, 2, 2)
    output = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 3.0]]]])
    # sqrt(4 x 1) = 2 and sqrt(9) = 3: mean 2.5
    assert eidnet.reconstruction_loss(target, output).item() == pytest.approx(2.5)


def test_triplet_loss_by_hand():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # distances 5 and 1
    negative = torch.tensor([[6.0, 8.0], [0.0, 2.0]])  # distances 10 and 2
    # margin 1.5: max(5 - 10 + 1.5, 0) = 0 and max(1 - 2 + 1.5, 0) = 0.5; mean 0.25
    assert eidnet.triplet_loss(anchor, positive, negative, margin=1.5).item() == pytest.approx(0.25)
    assert eidnet.triplet_loss(anchor, positive, negative, margin=10.0).item() == pytest.approx((5 + 9) / 2)


def test_discriminator_and_non_saturating_adversarial_losses_by_hand():
    # D = sigmoid(logit): logit ln 3 -> D = 0.75; logit -ln 3 -> D = 0.25
    real = torch.tensor([math.log(3.0), 0.0])
    fake = torch.tensor([-math.log(3.0), 0.0])
    # -log D(real) averaged: (-log 0.75 - log 0.5) / 2; -log(1 - D(fake)): (-log 0.75 - log 0.5) / 2
    half = (-math.log(0.75) - math.log(0.5)) / 2
    assert eidnet.discriminator_loss(real, fake).item() == pytest.approx(2 * half)
    # MicroNet's loss is -log D(f_anc) (Eq. 7): -log 0.25 and -log 0.5
    assert eidnet.adversarial_loss(fake).item() == pytest.approx((-math.log(0.25) - math.log(0.5)) / 2)
    # non-saturating: where the discriminator is sure the anchor is fake, the gradient stays large
    # (-log D has slope sigmoid - 1 -> -1), while the saturating log(1 - D) would give about 0
    sure = torch.tensor([-12.0], requires_grad=True)
    eidnet.adversarial_loss(sure).backward()
    assert sure.grad.item() == pytest.approx(-1.0, abs=1e-4)
    saturating = torch.tensor([-12.0], requires_grad=True)
    torch.log1p(-torch.sigmoid(saturating)).sum().backward()
    assert abs(saturating.grad.item()) < 1e-4


def test_lir_loss_by_hand():
    macro = torch.tensor([1.0, 0.2, 0.9])
    micro = torch.tensor([0.5, 0.7, 0.9])
    # max(0.5, 0) + max(-0.5, 0) + max(0, 0) = 0.5 over 3 triplets
    assert eidnet.lir_loss(macro, micro).item() == pytest.approx(0.5 / 3)


# ---------------------------------------------------------------------------------------------
# The networks and the phases

def test_eidnet_shapes_and_the_shared_resnet18_takes_torchvision_names():
    net, again = eidnet.build(5, SIZE, seed=0), eidnet.build(5, SIZE, seed=0)
    # the same seed, the same weights
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    x = torch.randn(4, 3, SIZE, SIZE)
    f_e, f_i = net.encode(x)
    assert f_e.shape == f_i.shape == (4, eidnet.EMBEDDING)
    assert net(x).shape == (4, 5)
    assert net.reconstruct(f_e, f_i).shape == x.shape
    assert "backbone.layer4.1.conv2.weight" in net.state_dict()
    assert isinstance(net.backbone, eidnet.models.ResNet18)
    for size in (48, 64):
        assert eidnet.Decoder(8, 3, size)(torch.randn(2, 8)).shape == (2, 3, size, size)


def test_macronet_weights_do_not_change_in_phase_two():
    micro, _ = pairs(seed=1)
    macro, _ = pairs(n_subjects=2, dataset="ckplus", seed=2)
    micro_net, macro_net = eidnet.build(2, SIZE, seed=1), eidnet.build(2, SIZE, seed=2)
    macro_net.train()  # Phase II must freeze it, BatchNorm statistics included
    before = {k: v.clone() for k, v in macro_net.state_dict().items()}
    micro_before = {k: v.clone() for k, v in micro_net.state_dict().items()}
    hist = eidnet.phase2(micro_net, macro_net, eidnet.Discriminator(), micro, np.arange(12), macro, SETTINGS,
                         seed=0, test_clips=np.arange(12, 16), device="cpu")
    after = macro_net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "MacroNet changed in Phase II"
    assert not macro_net.training and not any(p.requires_grad for p in macro_net.parameters())
    assert any(not torch.equal(micro_before[k], v) for k, v in micro_net.state_dict().items()), "MicroNet did not train"
    assert set(hist.losses) >= {"cls", "tri", "adv", "lir", "disc"} and hist.losses["triplets"] == [12 * 3]
    assert len(hist.test_pred) == 1 and hist.test_embeddings.shape == (4, eidnet.EMBEDDING)


def test_anchors_without_a_macro_class_keep_the_classification_loss_only():
    micro, _ = pairs(classes=("a", "b", "c"), seed=3)  # class "c" has no macro counterpart
    macro, _ = pairs(n_subjects=2, classes=("a", "b", "c"), dataset="ckplus", seed=4)
    macro.labels[:] = macro.labels % 2  # only a and b in the macro set
    draw = eidnet._Triplets(micro, np.arange(16), macro, torch.Generator().manual_seed(0))
    pos, neg, ok = draw(np.array([0, 1, 2, 2]))
    assert ok.tolist() == [True, True, False, False]
    assert (macro.labels[pos[:2, 0]] == [0, 1]).all() and (micro.labels[neg[:, 0]] != [0, 1, 2, 2]).all()
    hist = eidnet.phase2(eidnet.build(3, SIZE, seed=0), eidnet.build(3, SIZE, seed=1), eidnet.Discriminator(), micro,
                         np.arange(16), macro, SETTINGS, seed=0, device="cpu")
    # the triplet terms are averaged over the triplets that exist: two thirds of the anchors
    n_c = int((micro.labels[np.arange(16)] == 2).sum())
    assert hist.losses["triplets"] == [(16 - n_c) * 3]


class _Spy(eidnet.Pairs):
    """Pairs that note which clips are read outside inference (that is, for training)."""

    def inputs(self, clip_idx, frame_idx):
        if not torch.is_inference_mode_enabled():
            self.trained_on.update(np.asarray(clip_idx).tolist())
        return super().inputs(clip_idx, frame_idx)


def _spy(p):
    s = _Spy(**{f.name: getattr(p, f.name) for f in dataclasses.fields(p)})
    s.trained_on = set()
    return s


def _task(name="casme2", n_subjects=3):
    micro, df = pairs(n_subjects=n_subjects, seed=5, dataset=name)
    macro, _ = pairs(n_subjects=2, dataset="ckplus", seed=6)
    folds = protocols.loso(df)
    return eidnet.Task(name, _spy(micro), folds, _spy(macro), {"data": name}, {"data": "ckplus"})


def test_no_test_subjects_clip_reaches_either_phase():
    task = _task()
    work = eidnet.Work({task.name: task}, SETTINGS, device="cpu")
    for fold in task.folds:
        for phase in ("I", "II"):
            task.micro.trained_on.clear()
            unit = [u for u in eidnet.units(task, phase, preset="smoke", data_source="sim", seed=0, settings=SETTINGS)
                    if u.fold == fold.index][0]
            rec = work(unit)
            test = set(np.asarray(fold.test).tolist())
            assert task.micro.trained_on, "nothing was trained"
            assert not (task.micro.trained_on & test), f"fold {fold.index} phase {phase}: a test clip was trained on"
            subjects = {task.micro.subjects[i] for i in task.micro.trained_on}
            assert not subjects & set(fold.test_subjects)
            assert rec["test"]["ids"] == [task.micro.keys[i] for i in fold.test]
            assert rec["subjects"]["test"] == list(fold.test_subjects)
    # the guard every unit runs: a test subject's clip among the training clips raises
    with pytest.raises(RuntimeError, match="test subjects would reach training"):
        eidnet.check_training(["casme2/s0/clip0", "casme2/s1/clip5"], ["casme2/s1"], "fold 1")
    eidnet.check_training(["casme2/s0/clip0"], ["casme2/s1"], "fold 1")


def test_units_are_cached_and_read_by_tables_and_claims(results_dir):
    tasks = [_task("casme2", 3), _task("smic", 3)]
    out = eidnet.run(tasks, preset="smoke", data_source="sim", seed=0, settings=SETTINGS, device="cpu", progress=False)
    # both tasks share one label space and macro set: one MacroNet
    assert out["casme2"]["macro"][0]["key"] == out["smic"]["macro"][0]["key"]
    assert len(list((results_dir / "eidnet_macro").glob("*.json"))) == 1
    recs = out["casme2"]
    assert [r["config"]["phase"] for r in recs["I"] + recs["II"]] == ["I"] * 3 + ["II"] * 3
    assert len(recs["II"][0]["embeddings"]["test"][0]) == eidnet.EMBEDDING
    # the records have cross_validate's layout: experiments.table and claims.compare read them
    tab = experiments.table(recs["I"] + recs["II"], by=("phase",), selections=("last",))
    assert list(tab["phase"]) == ["I", "II"] and (tab["folds"] == 3).all()
    c = claims.compare(recs["II"], recs["I"], test="predictions", n_resamples=50)
    assert c.n_pairs == 3 and c.result.test.startswith(stats.SWAP)
    # a second run reads every record: nothing is retrained
    again = eidnet.run(tasks, preset="smoke", data_source="sim", seed=0, settings=SETTINGS, device="cpu", progress=False)
    assert [r["created"] for r in again["casme2"]["II"]] == [r["created"] for r in recs["II"]]
    # Phase II whose Phase I weights were removed recomputes them (the same weights: deterministic on CPU)
    for p in (results_dir / experiments.PRETRAINED).glob("eidnet-eidnet_casme2-*.pt"):
        p.unlink()
    experiments.invalidate("eidnet_casme2", where={"phase": "II"})
    redo = eidnet.run(tasks, preset="smoke", data_source="sim", seed=0, settings=SETTINGS, device="cpu", progress=False)
    assert [r["test"]["probs"] for r in redo["casme2"]["II"]] == [r["test"]["probs"] for r in recs["II"]]


def test_restrict_keeps_one_sources_clips_and_renumbers_folds():
    recs = []
    for fold, ids in enumerate([["smic/a/1", "samm/b/2"], ["samm/c/3"], ["smic/d/4", "smic/e/5"]]):
        y = [0, 1, 0][:len(ids)]
        recs.append({"name": "x", "key": str(fold), "fold": fold, "repeat": 0, "classes": ["p", "q"], "n_train": 10,
                     "config": {"n_folds": 3}, "preset": "smoke", "data_source": "sim",
                     "test": {"ids": ids, "y_true": y, "y_pred": y, "probs": None},
                     "history": {"test_pred": [y], "train_loss": [1.0]}, "embeddings": {"test": [[0.0]] * len(ids)}})
    smic = eidnet.restrict(recs, "smic")
    assert [r["fold"] for r in smic] == [0, 1] and [r["test"]["ids"] for r in smic] == [["smic/a/1"], ["smic/d/4", "smic/e/5"]]
    assert all(r["config"]["n_folds"] == 2 for r in smic)
    assert eidnet.pooled(smic)["accuracy"].mean == 1.0
    assert recs[0]["test"]["ids"] == ["smic/a/1", "samm/b/2"]  # the originals are untouched


# ---------------------------------------------------------------------------------------------
# Fig. 4: its numbers come from the stored embeddings

def _fig4_records(shift_phase2: float):
    rng = np.random.default_rng(0)
    classes = ["negative", "positive", "surprise"]
    macro = rng.normal(size=(90, 8))
    macro_y = np.repeat(np.arange(3), 30)
    phases = {}
    for ph, shift in (("I", 6.0), ("II", shift_phase2)):
        recs = []
        for fold in range(2):
            y = np.tile(np.arange(3), 10)
            emb = np.random.default_rng(fold).normal(size=(30, 8)) + shift
            recs.append({"fold": fold, "repeat": 0, "test": {"ids": [f"smic/s{fold}/{i}" for i in range(30)],
                                                             "y_true": y.tolist()},
                         "embeddings": {"test": emb.tolist()}})
        phases[ph] = recs
    macro_rec = {"classes": classes, "embeddings": {"values": macro.tolist(), "labels": macro_y.tolist()}}
    return phases, macro_rec


def test_fig4_numbers_are_computed_from_the_stored_embeddings(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    phases, macro = _fig4_records(shift_phase2=0.0)
    fig, close, used = eidnet.figure4(phases, macro, n=200, seed=0, n_resamples=200)
    tab = close.table.set_index(["class", "phase"])
    # Phase I: micro far from macro, told apart; Phase II: the same distribution, not
    assert (tab.xs("I", level="phase")["balanced_accuracy"] > 0.95).all()
    assert (tab.xs("II", level="phase")["balanced_accuracy"] < 0.75).all()
    assert (close.tests["change"] < -0.2).all() and (close.tests["p"] < 0.05).all()
    # by hand, from the records: class "positive" (label 1), Phase II
    ids, y, emb = eidnet.test_embeddings(phases["II"])
    micro = emb[y == 1]
    ref = np.asarray(macro["embeddings"]["values"])[np.asarray(macro["embeddings"]["labels"]) == 1]
    x, domain = np.concatenate([micro, ref]), np.r_[np.zeros(len(micro)), np.ones(len(ref))].astype(int)
    pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0)), x,
                             domain, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert tab.loc[("positive", "II"), "balanced_accuracy"] == pytest.approx(metrics.uar(domain, pred))
    dist = np.linalg.norm(micro.mean(0) - ref.mean(0)) / np.sqrt(((ref - ref.mean(0)) ** 2).sum(1).mean())
    assert tab.loc[("positive", "II"), "mean_distance"] == pytest.approx(dist)
    # the panels print those numbers
    titles = [ax.get_title() for ax in fig.axes]
    for (name, ph), row in tab.iterrows():
        assert any(t.startswith(f"{name}: bal. acc. {row['balanced_accuracy']:.2f}, dist. {row['mean_distance']:.2f}")
                   for t in titles)
    assert all(0 < used[k] <= 30 for k in used)
    # other stored embeddings, other numbers: nothing is fixed in the figure
    _, close_far = eidnet.figure4(*_fig4_records(shift_phase2=6.0), n=200, seed=0, n_resamples=200)[:2]
    assert (close_far.table.set_index(["class", "phase"]).xs("II", level="phase")["balanced_accuracy"] > 0.95).all()
    # and the figure's claim rows: "closer" is a fall of the balanced accuracy
    comp = eidnet.closeness_comparison(close, "positive", preset="smoke", data_source="sim", folds=2)
    row = claims.family([claims.claim("EIDNet Fig. 4", "closer", comp, paper="-", expect="less", ours="text")])[0]
    assert row.verdict == "reproduced on the lab" and row.ours == "text"
    assert row.difference == pytest.approx(100 * (tab.loc[("positive", "II"), "balanced_accuracy"]
                                                   - tab.loc[("positive", "I"), "balanced_accuracy"]))
    # the row carries its evidence: claims.verify recomputes p, difference and verdict from it
    folder = tmp_path / "figures"
    claims.write([row], stamp={"notebook": "11_eidnet", "preset": "smoke", "data_source": "sim", "seed": 0}, folder=folder)
    check = claims.verify(folder)
    assert len(check) == 1 and bool(check["match"].iloc[0]), check.T
    import matplotlib.pyplot as plt
    plt.close("all")


def test_quoted_numbers_and_side_by_side():
    assert eidnet.quoted_difference("Table 1", "CASME II", "ACC") == pytest.approx(0.7309 - 0.6506)
    ours = {("EIDNet phase I", "SMIC"): {"ACC": 0.5, "F1": metrics.summarize([0.4, 0.6])}}
    tab = eidnet.side_by_side(ours, "Table 1", [("SMIC", "ACC"), ("SMIC", "F1")],
                              rows=[("EIDNet phase I", "EIDNet phase I"), ("HIGO", "HIGO"), ("mine", "")])
    assert tab["SMIC ACC ours"].tolist() == ["50.0", "–", "–"]
    assert tab["SMIC F1 ours"].iloc[0] == "50.0 ± 10.0"
    assert tab[f"SMIC ACC {eidnet.paper.QUOTED}"].tolist() == ["65.2", "68.3", "–"]
    assert tab[f"SMIC F1 {eidnet.paper.QUOTED}"].tolist()[1] == "n/r"


def _clips(name, subjects=4, per_subject=3, frames=12, size=40, seed=0):
    """Clips in memory: the face brightens from onset to apex, more for class "b"."""
    return ramp_clips(name, subjects, per_subject, frames, size, seed)


def test_frames_are_read_once_and_the_references_run_as_a_unit(monkeypatch):
    micro, macro = _clips("smic"), _clips("ckplus", subjects=2, seed=1)
    both = _clips("smic")  # the same clips in a second set (as CASME II's are in the composite)
    reads = []
    for cs in (micro, both):
        for c in cs:
            real = c.frames

            class Counting(type(real)):
                def __getitem__(self, i, _real=real):
                    reads.append(i)
                    return _real[i]
            c.frames = Counting(real.array)
    loaded = eidnet.load_frames({"micro": micro, "again": both, "macro": macro}, SIZE, input="flow")
    assert len(reads) == len(micro) * 6  # onset + five frames per clip, the second set's copy not read again
    fr = loaded["micro"][0].frames
    assert fr.expression == eidnet.positions(0, 6, 11) and fr.flows.shape == (5, 3, SIZE, SIZE)
    assert np.array_equal(fr.flow, fr.flows[2])  # the onset -> apex flow, for the logistic regression
    folds = protocols.loso(loaded["micro"])
    task = eidnet.task("smic", loaded["micro"], ("a", "b"), "label", folds, loaded["macro"], input="flow", size=SIZE,
                       load_size=40, source=micro)
    assert task.micro.expression.shape == (12, 5, 3, SIZE, SIZE) and task.micro.neutral.dtype == np.uint8
    with pytest.raises(ValueError, match="other clips"):
        eidnet.task("smic", loaded["micro"], ("a", "b"), "label", folds, loaded["macro"], input="flow", size=SIZE,
                    load_size=40, source=macro)
    unit = eidnet.reference_unit(task, "smoke", "sim", 0, lbp_size=SIZE)
    rec = experiments.run([unit], eidnet.Work({"smic": task}, SETTINGS, device="cpu"), progress=False)[0]
    assert rec["ids"] == task.micro.keys and set(rec["predictions"]) == {"majority", "lbptop", "linear"}
    y = task.micro.labels
    # the majority answer of each LOSO fold: the most frequent class of the other subjects' clips
    want = [np.bincount(y[f.train], minlength=2).argmax() for f in folds for _ in f.test]
    order = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.asarray(rec["predictions"]["majority"])[order], want)
