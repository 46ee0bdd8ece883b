"""The training loop: it learns, it is deterministic on CPU, it reports last / best-oracle /
val-selected epochs correctly, and it never augments at test time. Tiny models, tiny data."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from mielib import train


class Tiny(nn.Module):
    """A 2-layer CNN with a `head` ending in a linear layer, like the mielib models."""

    def __init__(self, n_classes: int = 2, channels: int = 1):
        super().__init__()
        self.n_classes = n_classes
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                      nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, n_classes))

    def forward(self, x):
        return self.head(self.features(x))


class TwoFrames(nn.Module):
    """Takes (onset, apex) like Branches: classifies their difference."""

    def __init__(self, n_classes: int = 2):
        super().__init__()
        self.n_classes = n_classes
        self.net = Tiny(n_classes)

    def forward(self, onset, apex):
        return self.net(apex - onset)


def blobs(n=64, seed=0, size=8):
    """Two separable classes: a bright left half vs a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 1, size, size, generator=g)
    x[y == 0, :, :, : size // 2] += 1.0
    x[y == 1, :, :, size // 2:] += 1.0
    return TensorDataset(x, y)


def model(seed=0, cls=Tiny, **kw):
    with train.seeded(seed):
        return cls(**kw)


def test_fit_learns_a_separable_problem():
    data, test = blobs(96, seed=0), blobs(32, seed=1)
    net = model()
    h = train.fit(net, data, epochs=6, seed=0, test=test, lr=1e-2, batch_size=16, device="cpu", progress=False)
    assert h.epochs == 6 and len(h.test_pred) == 6
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]
    rec = h.to_record(["left", "right"])
    assert rec["metrics"]["last"]["accuracy"] >= 0.9
    assert rec["metrics"]["last"]["epoch"] == 6
    json.dumps(rec)  # the record is JSON-able as it stands


def test_two_input_batches_and_sample_ids():
    a, b = blobs(40, seed=2), blobs(40, seed=3)

    class Pairs(Dataset):
        ids = [f"subj{i // 4}/clip{i}" for i in range(40)]

        def __len__(self):
            return 40

        def __getitem__(self, i):
            return a.tensors[0][i], b.tensors[0][i], b.tensors[1][i]

    test = Subset(Pairs(), [5, 1, 7])
    h = train.fit(model(cls=TwoFrames), Pairs(), epochs=1, seed=0, test=test, device="cpu", progress=False)
    rec = h.to_record()
    assert rec["test"]["ids"] == ["subj1/clip5", "subj0/clip1", "subj1/clip7"]
    assert rec["test"]["y_true"] == [b.tensors[1][i].item() for i in (5, 1, 7)]
    assert np.allclose(np.sum(rec["test"]["probs"], axis=1), 1.0, atol=1e-5)
    assert rec["test"]["y_pred"] == np.argmax(rec["test"]["probs"], axis=1).tolist()


def test_cpu_runs_are_deterministic_for_a_seed():
    data, test = blobs(48, seed=4), blobs(16, seed=5)

    def once(seed):
        h = train.fit(model(7), data, epochs=3, seed=seed, test=test, val=test, lr=3e-3, batch_size=8,
                      device="cpu", augment=True, progress=False)
        return h.to_record()

    r1, r2, r3 = once(11), once(11), once(12)
    for k in ("history", "test", "metrics"):
        assert r1[k] == r2[k]
    # A different seed shuffles differently (so the check above could fail).
    assert r1["history"]["train_loss"] != r3["history"]["train_loss"]


def test_seeded_restores_the_callers_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with train.seeded(1):
        torch.rand(10)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_derive_seed_is_stable_and_distinct():
    assert train.derive_seed(0, 1, 2) == train.derive_seed(0, 1, 2)
    seeds = {train.derive_seed(0, r, f) for r in range(3) for f in range(5)}
    assert len(seeds) == 15
    assert train.derive_seed(3, "shuffle") != train.derive_seed(3, "augment")


def _hand_scores(y, p):
    labels = sorted(set(y))
    return {"uf1": f1_score(y, p, labels=labels, average="macro", zero_division=0),
            "uar": recall_score(y, p, labels=labels, average="macro", zero_division=0),
            "accuracy": accuracy_score(y, p)}


def test_select_last_best_oracle_and_val_selected():
    y = np.array([0, 0, 1, 1, 2, 2])
    epochs = [np.array([0, 0, 0, 0, 0, 0]),   # 1: poor
              np.array([0, 0, 1, 1, 2, 1]),   # 2: best on test
              np.array([0, 1, 1, 1, 2, 2]),   # 3: good
              np.array([0, 1, 0, 1, 2, 0])]   # 4: last, worse
    vy = np.array([0, 1, 2])
    vp = [np.array([0, 0, 0]), np.array([0, 1, 0]), np.array([0, 1, 2]), np.array([0, 1, 2])]  # best at 3 (tie with 4)
    out = train.select(y, epochs, 3, val_true=vy, val_pred=vp)
    for m, v in _hand_scores(y, epochs[3]).items():
        assert out["last"][m] == pytest.approx(v)
    assert out["last"]["epoch"] == 4
    per_epoch = [_hand_scores(y, p) for p in epochs]
    for m in ("uf1", "uar", "accuracy"):
        best = int(np.argmax([s[m] for s in per_epoch]))
        assert out["best_oracle"][m] == pytest.approx(per_epoch[best][m])
        assert out["best_oracle"]["epoch"][m] == best + 1
    assert out["best_oracle"]["epoch"]["uf1"] == 2
    assert out["val_selected"]["epoch"] == 3  # earliest of the tied validation epochs
    for m, v in per_epoch[2].items():
        assert out["val_selected"][m] == pytest.approx(v)
    assert train.select(y, epochs, 3)["val_selected"] is None
    with pytest.raises(ValueError, match="criterion"):
        train.select(y, epochs, 3, criterion="f2")


def test_history_select_matches_a_fitted_run():
    data, test = blobs(32, seed=6), blobs(12, seed=7)
    h = train.fit(model(), data, epochs=3, seed=0, test=test, device="cpu", progress=False)
    expected = train.select(h.test_true, h.test_pred, 2)
    assert h.select() == expected


def test_no_augmentation_at_test_time():
    """With augment=True the recorded test predictions equal a plain, unaugmented predict()."""
    data, test = blobs(32, seed=8), blobs(16, seed=9)
    net = model()
    h = train.fit(net, data, epochs=2, seed=0, test=test, device="cpu", augment=True, progress=False)
    y, probs = train.predict(net, test, device="cpu")
    assert np.array_equal(y, h.test_true)
    assert np.allclose(probs, h.test_probs, atol=1e-6)
    assert np.array_equal(probs.argmax(1), h.test_pred[-1])


def test_flip_mirrors_all_inputs_of_a_sample_alike():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    g = torch.Generator().manual_seed(0)
    a, b = train._flip((x, x.clone()), g)
    assert torch.equal(a, b)
    for i in range(2):
        assert torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="epochs"):
        train.fit(model(), blobs(8), epochs=0, seed=0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        train.fit(model(), Subset(blobs(8), []), epochs=1, seed=0, progress=False)

    class Bare(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(1, 8, 8)

    with pytest.raises(TypeError, match="inputs..., label"):
        train.fit(model(), Bare(), epochs=1, seed=0, batch_size=2, progress=False)


def test_a_model_with_its_own_criterion_trains_on_it_and_reads_the_batch_targets():
    """train.fit hands a dict batch's extra keys to the model's `criterion` (AU-GACN's AU-ME loss)."""
    from torch.utils.data import Dataset

    class Items(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"inputs": torch.full((3,), float(i)), "label": i % 2, "aus": torch.tensor([i, 10 * i])}

    class Net(torch.nn.Module):
        n_classes = 2

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.seen = []

        def forward(self, x):
            return (self.fc(x), x.sum(1)) if self.training else self.fc(x)

        def criterion(self, out, y, aus):
            logits, extra = out
            self.seen.append(aus.clone())
            assert extra.shape == y.shape
            return torch.nn.functional.cross_entropy(logits, y) + 0.0 * extra.sum()

    net = Net()
    hist = train.fit(net, Items(), epochs=2, seed=0, test=Items(), batch_size=4, progress=False)
    seen = torch.cat(net.seen)
    assert len(net.seen) == 4 and sorted(seen[:, 0].tolist()) == sorted(list(range(8)) * 2)
    assert (seen[:, 1] == 10 * seen[:, 0]).all()
    assert len(hist.test_pred) == 2 and hist.test_pred[-1].shape == (8,)
