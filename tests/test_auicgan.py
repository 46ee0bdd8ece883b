"""AU-ICGAN (notebook 10): SSIM, the ME and sequence-authenticity losses on hand-computed values,
the class-balanced count rule against the paper's Table 1, a fold's augmentation set (balanced,
made from training clips only), and a short training run (deterministic, cached)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mielib import au, auicgan, paper
from mielib.clip import ArrayFrames, Clip, ClipSet

CLASSES = ("happiness", "disgust", "surprise")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: fast on a shared 2-core box


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def _clips(subjects=4, per_subject=3, frames=10, size=20, seed=0, dataset="casme2"):
    """Clips in memory with per-frame readouts: class k raises AU (4, 12, 26)[k] from onset to apex."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(subjects):
        for j in range(per_subject):
            label = CLASSES[(s + j) % len(CLASSES)]
            arr = rng.integers(40, 200, (frames, size, size, 3)).astype(np.uint8)
            readout = rng.uniform(0.0, 0.05, (frames, au.N_AUS)).astype(np.float32)
            moving = au.index((4, 12, 26)[CLASSES.index(label)])
            readout[:, moving] += np.minimum(np.arange(frames), 5) * 0.06
            out.append(Clip(dataset, f"s{s}", f"c{j}", ArrayFrames(arr), 100.0, 1, 6, frames - 1, label,
                            au.to_megc3(dataset, label), "4", readout))
    return ClipSet(dataset, out, [], "sim")


# ---------------------------------------------------------------------------------------------
# SSIM and the new losses


def test_ssim_is_one_for_identical_images_and_matches_the_formula_and_scikit_image():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 24, 24)).astype(np.float32))
    assert auicgan.ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    # Two flat images a and b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 x 2)^2.
    a, b = torch.full((1, 3, 16, 16), 0.5), torch.full((1, 3, 16, 16), -0.25)
    c1 = 0.02 ** 2
    assert auicgan.ssim(a, b).item() == pytest.approx((2 * 0.5 * -0.25 + c1) / (0.25 + 0.0625 + c1), rel=1e-4)
    # Wang et al.'s Gaussian-window SSIM as scikit-image computes it (population covariance).
    from skimage.metrics import structural_similarity

    y = (x + 0.3 * torch.from_numpy(rng.normal(size=x.shape).astype(np.float32))).clamp(-1, 1)
    ref = [structural_similarity(x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy(), channel_axis=2,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0)
           for i in range(2)]
    assert auicgan.ssim(x, y).tolist() == pytest.approx(ref, abs=1e-4)
    assert ref[0] < 0.9  # the check is not between two near-identical images
    with pytest.raises(ValueError, match="smaller than the 11 px window"):
        auicgan.ssim(x[..., :8, :8], x[..., :8, :8])


def test_ssim_loss_sums_one_minus_ssim_over_the_frames_of_eq_6():
    source = torch.full((1, 3, 16, 16), 0.5)
    frames = torch.stack([source[0], torch.full((3, 16, 16), -0.25)])[None]  # frame 1 = I_in, frame 2 flat
    c1 = 0.02 ** 2
    second = (2 * 0.5 * -0.25 + c1) / (0.25 + 0.0625 + c1)
    assert auicgan.ssim_loss(frames, source).item() == pytest.approx(0.0 + (1 - second), rel=1e-4)


def test_me_loss_is_the_squared_error_between_softmax_and_one_hot():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 1])
    # softmax (0.5, 0.5) vs (1, 0): 0.25 + 0.25; (0.75, 0.25) vs (0, 1): 0.5625 + 0.5625; mean 0.8125
    assert auicgan.me_loss(logits, labels).item() == pytest.approx(0.8125)


class _Linear(nn.Module):
    """A critic whose score is c x (sum of the input): its gradient norm is c x sqrt(n)."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return self.c * x.flatten(1).sum(1), None


def test_sequence_authenticity_loss_by_hand():
    from mielib import ganimation

    real = torch.zeros(2, 4, 3, 4, 4)  # 192 values per sequence
    fake = torch.ones(2, 4, 3, 4, 4)
    penalty = ganimation.gradient_penalty(_Linear(0.1), real, fake, torch.rand(2, 1, 1, 1, 1))
    assert penalty.item() == pytest.approx((0.1 * math.sqrt(192) - 1) ** 2, rel=1e-5)
    # mean D_S(fake) - mean D_S(real) = 0 - 2, plus 10 x penalty
    loss = auicgan.sequence_authenticity_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5, -0.5]), penalty, 10.0)
    assert loss.item() == pytest.approx(-2.0 + 10 * (0.1 * math.sqrt(192) - 1) ** 2, rel=1e-5)


def test_sequence_critic_gives_a_realness_map_and_one_logit_per_class():
    critic = auicgan.SequenceCritic(frames=8, classes=7, width=4, size=32)
    scores, logits = critic(torch.zeros(3, 8, 3, 32, 32))
    assert scores.shape[:2] == (3, 1) and logits.shape == (3, 7)
    with pytest.raises(ValueError, match="expected B x 8 x 3"):
        critic(torch.zeros(3, 3, 8, 32, 32))


# ---------------------------------------------------------------------------------------------
# Counts: the rule behind the paper's Table 1


def test_counts_rule_reproduces_table_1_except_casme2_fear_and_sadness():
    t = paper.numbers("augacn_tables")
    t = t[t["table"] == "Table 1"]
    per_class = lambda name: {m.removeprefix("count_"): int(v) for m, v in zip(t[t["dataset"] == name]["metric"],  # noqa: E731
                                                                              t[t["dataset"] == name]["value"])
                              if m != "count_total"}
    for name, total in (("CASME II", 416), ("SAMM", 290)):
        ours = auicgan.counts(per_class(name), 1.0, total=total)
        theirs = per_class(f"synthetic {name}")
        differ = {c for c in theirs if ours[c] != theirs[c]}
        assert differ == ({"fear", "sadness"} if name == "CASME II" else set())
    assert auicgan.PAPER_TOTALS == {"casme2": 416, "samm": 290}
    assert auicgan.counts({"anger": 57, "fear": 8}, 1.0, total=290) == {"anger": 233, "fear": 282}


def test_counts_scale_and_empty_classes():
    # 0.1 x (416 - 32) = 38.4 -> 38; 0.1 x (416 - 2) = 41.4 -> 41; no real clip: no Y_c, none
    assert auicgan.counts({"happiness": 32, "fear": 2, "sadness": 0}, 0.1, total=416) == {
        "happiness": 38, "fear": 41, "sadness": 0}
    assert auicgan.counts({"others": 500}, 1.0, total=416) == {"others": 0}
    with pytest.raises(ValueError, match="scale must be positive"):
        auicgan.counts({"others": 5}, 0.0, total=416)


# ---------------------------------------------------------------------------------------------
# The augmentation set of a fold


def _model(frames=4, size=16):
    return auicgan._build({"size": size, "width": 2, "frames": frames, "classes": list(au.DATASET_CLASSES["casme2"]),
                           "residual_blocks": 1}, seed=0)


def test_synthesize_balances_classes_and_subjects_from_training_clips_only():
    clips = _clips()
    train = clips.where(lambda c: c.subject != "s3")
    test = clips.where(lambda c: c.subject == "s3")
    faces = auicgan.pick_faces(train, seed=0)
    assert sorted(faces) == ["s0", "s1", "s2"] and all(c.subject == s for s, c in faces.items())
    wanted = {"happiness": 7, "disgust": 6, "surprise": 5}
    syn = auicgan.synthesize(_model(), train, faces, wanted, seed=1, fold=2)
    assert syn.name == "auicgan-casme2 fold 2" and len(syn) == 18
    df = pd.DataFrame([{"subject": c.subject, "label": c.label} for c in syn])
    table = pd.crosstab(df["subject"], df["label"])
    assert table.sum().to_dict() == wanted
    assert (table.max() - table.min()).max() <= 1 and (table.min() >= 1).all()  # every subject has every class
    assert table.sum(axis=1).max() - table.sum(axis=1).min() <= 1
    train_keys = {c.key for c in train}
    for c in syn:
        assert c.meta["source_clip"] in train_keys and c.meta["face_clip"] in train_keys
        source = next(s for s in train if s.key == c.meta["source_clip"])
        assert source.label == c.label  # Y_c comes from a clip of the class
        assert c.meta["face_clip"] == faces[c.subject].key
        np.testing.assert_allclose(c.readout, source.readout[[1, 4, 6, 9]])  # positions 1..9 in 4 steps
        assert (c.onset, c.offset, c.n_frames) == (0, 3, 4) and c.frame(0).shape == (16, 16, 3)
        assert c.apex == int(np.argmax(c.readout.sum(1)))
        assert c.dataset == "auicgan-casme2" and c.label3 == au.to_megc3("casme2", c.label)
        moving = (4, 12, 26)[CLASSES.index(c.label)]
        assert str(moving) in c.aus.split("+")  # the class's AU peaks at 0.3 > 0.1
    # a test subject's clip as a face is refused
    with pytest.raises(ValueError, match="not among the fold's training clips"):
        auicgan.synthesize(_model(), train, {**faces, "s3": test[0]}, wanted, seed=1, fold=2)
    with pytest.raises(ValueError, match="no training clip of this class"):
        auicgan.synthesize(_model(), train, faces, {"fear": 2}, seed=1, fold=2)


def test_table1_counts_real_and_synthetic_per_class():
    clips = _clips()
    syn = ClipSet("synthetic", [Clip("auicgan-casme2", "s0", str(i), ArrayFrames(np.zeros((2, 4, 4, 3), np.uint8)),
                                     1.0, 0, 0, 1, "fear", None) for i in range(3)], [], "sim")
    t = auicgan.table1(clips, syn)
    assert t["dataset"].tolist() == ["casme2", "synthetic"]
    assert t["happiness"].tolist() == [4, 0] and t["fear"].tolist() == [0, 3]
    assert t["total"].tolist() == [12, 3]
    assert t["anger"].isna().all()  # not a CASME II class: "-" in the paper


# ---------------------------------------------------------------------------------------------
# Training


def test_short_training_runs_is_deterministic_and_is_cached(results_dir, monkeypatch):
    train = _clips(subjects=3, per_subject=2)
    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (5, 24, 24, 3)).astype(np.uint8)
    face_aus = rng.uniform(0, 1, (5, au.N_AUS))
    kwargs = dict(iterations=4, seed=7, batch_size=2, size=16, width=2, frames=4, residual_blocks=1,
                  critic_steps=2, log_every=2, progress=False)
    first = auicgan.train(train, faces, face_aus, cache=False, **kwargs)
    second = auicgan.train(train, faces, face_aus, cache=False, **kwargs)
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    pd.testing.assert_frame_equal(first.history, second.history)
    h = first.history
    assert h["iteration"].tolist() == [2, 4]
    assert h[list(auicgan.HISTORY_COLUMNS[2:])].notna().all().all()  # a generator step in every window
    other = auicgan.train(train, faces, face_aus, cache=False, **{**kwargs, "seed": 8})
    assert not torch.equal(other.model.generator.colour_head[0].weight, first.model.generator.colour_head[0].weight)

    cached = auicgan.train(train, faces, face_aus, **kwargs)
    assert not cached.reused and cached.path.parent == results_dir / "auicgan" and cached.path.is_file()

    def no_training(self, t):
        raise AssertionError("trained again instead of reading the cache")

    real_step = auicgan._Trainer.step
    monkeypatch.setattr(auicgan._Trainer, "step", no_training)
    again = auicgan.train(train, faces, face_aus, **kwargs)
    monkeypatch.setattr(auicgan._Trainer, "step", real_step)
    assert again.reused and again.path == cached.path
    for a, b in zip(again.model.state_dict().values(), first.model.state_dict().values()):
        assert torch.equal(a, b)
    pd.testing.assert_frame_equal(again.history, first.history)
    # A trained GANimation's generator starts the generator (lr 0: it stays as it was).
    from mielib import ganimation

    gan = ganimation.GAN(second.model.generator, {"size": 16}, "cpu")
    started = auicgan.train(train, faces, face_aus, cache=False, init=gan, **{**kwargs, "lr": 0.0})
    assert started.config["init"] is not None
    for a, b in zip(started.model.generator.state_dict().values(), second.model.generator.state_dict().values()):
        assert torch.equal(a, b)
    syn = auicgan.synthesize(again.model, train, auicgan.pick_faces(train, seed=0), {"happiness": 2}, seed=0, fold=0)
    assert len(syn) == 2 and syn[0].frame(0).dtype == np.uint8
