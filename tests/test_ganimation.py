"""GANimation: architecture, the blend, each loss on hand-made tensors, checkpoints and resume,
attention saturation, desired-AU sampling, the numpy API and the command line (CPU, 32 px)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mielib import au, ganimation as gn

SIZE = 32
TINY = dict(size=SIZE, batch_size=4, width=8, residual_blocks=2, progress=False, device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py: fast on a shared 2-core box


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
    aus = rng.random((8, au.N_AUS))
    return images, aus


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _gan_with_attention(bias: float, width: int = 8) -> gn.GAN:
    """A generator whose attention head outputs sigmoid(bias) everywhere."""
    torch.manual_seed(0)
    g = gn.Generator(width=width, residual_blocks=1)
    head = g.attention_head[0]
    with torch.no_grad():
        head.weight.zero_()
    head.bias = nn.Parameter(torch.full((1,), float(bias)))  # the paper's head has no bias; add one here
    return gn.GAN(g, {"size": SIZE, "width": width, "residual_blocks": 1}, device="cpu")


# --- architecture ---------------------------------------------------------------------------------

def test_generator_shapes_blend_and_conditioning():
    torch.manual_seed(0)
    g = gn.Generator(width=8, residual_blocks=2)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    z = torch.rand(2, au.N_AUS)
    out, a, c = g(x, z)
    assert out.shape == (2, 3, SIZE, SIZE) and a.shape == (2, 1, SIZE, SIZE) and c.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(out, a * x + (1 - a) * c)  # output = A*x + (1-A)*C, exactly
    assert 0 <= a.min() and a.max() <= 1 and -1 <= c.min() and c.max() <= 1
    out2, _, _ = g(x, 1 - z)  # the AU channels reach the output
    assert not torch.allclose(out, out2)


def test_paper_architecture_at_128_and_adapted_critic_depth():
    g = gn.Generator()  # paper defaults
    convs = [m for m in g.body if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 3 + 17 and convs[0].out_channels == 64 and convs[0].kernel_size == (7, 7)
    assert [(c.out_channels, c.stride) for c in convs[1:3]] == [(128, (2, 2)), (256, (2, 2))]
    assert sum(isinstance(m, gn.ResidualBlock) for m in g.body) == 6
    ups = [m for m in g.body if isinstance(m, nn.ConvTranspose2d)]
    assert [u.out_channels for u in ups] == [128, 64]
    assert all(m.bias is None for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    assert any(isinstance(m, nn.InstanceNorm2d) for m in g.body)

    d = gn.Critic(128)
    convs = [m for m in d.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1024, 2048]
    assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.01 for m in d.body[1::2])
    assert d.realness_head.kernel_size == (3, 3) and d.au_head.kernel_size == (2, 2)  # 128 / 64
    with torch.no_grad():
        real, aus = d(torch.zeros(1, 3, 128, 128))
    assert real.shape == (1, 1, 2, 2) and aus.shape == (1, 17)

    assert gn.critic_depth(64) == (5, 2) and gn.critic_depth(48) == (4, 3) and gn.critic_depth(32) == (4, 2)
    d48 = gn.Critic(48, width=8)
    real, aus = d48(torch.zeros(2, 3, 48, 48))
    assert real.shape == (2, 1, 3, 3) and aus.shape == (2, 17)


# --- A = 1 keeps the input; numpy API --------------------------------------------------------------

def test_attention_one_keeps_input_and_zero_paints_colour(faces):
    image = faces[0][0]
    z = au.vector(AU12=0.8)
    keep = _gan_with_attention(+40.0)
    assert np.array_equal(keep.edit(image, z), image)
    assert keep.attention(image, z).min() == 1.0
    # A different size goes through the full-resolution blend: still the input, pixel for pixel.
    big = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.array_equal(keep.edit(big, z), big)

    paint = _gan_with_attention(-40.0)
    assert np.array_equal(paint.edit(image, z), paint.colour(image, z))
    assert paint.attention(image, z).max() < 1e-12


def test_edit_batch_matches_edit_and_checks_inputs(faces):
    gan = _gan_with_attention(0.0)
    images, aus = faces[0][:3], faces[1][:3]
    batch = gan.edit_batch(images, aus)
    assert batch.shape == images.shape and batch.dtype == np.uint8
    assert np.array_equal(batch[1], gan.edit(images[1], aus[1]))
    assert gan.attention(images, aus).shape == (3, SIZE, SIZE)
    assert gan.colour(images[0], aus[0]).shape == (SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="uint8"):
        gan.edit(images[0].astype(float) / 255, aus[0])
    with pytest.raises(ValueError, match="AU12"):
        gan.edit(images[0], au.vector() + np.eye(17)[au.index(12)] * 3)
    with pytest.raises(ValueError, match="3 images need 3"):
        gan.edit_batch(images, aus[:2])


# --- losses on hand-made tensors ------------------------------------------------------------------

def test_losses_on_known_values():
    real, fake = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.5, -0.5], [1.0, 2.0]])
    assert gn.critic_adversarial_loss(real, fake).item() == pytest.approx(0.75 - 2.0)
    assert gn.generator_adversarial_loss(fake).item() == pytest.approx(-0.75)
    # MSE over all entries (1.0), divided by the batch size (2), times the weight.
    assert gn.au_loss(torch.zeros(2, 17), torch.ones(2, 17), 4000).item() == pytest.approx(2000.0)
    assert gn.au_loss(torch.full((4, 17), 0.5), torch.zeros(4, 17)).item() == pytest.approx(0.25 / 4)
    assert gn.cycle_loss(torch.tensor([0.0, 1.0, -1.0, 2.0]), torch.zeros(4)).item() == pytest.approx(1.0)
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert gn.attention_mean_loss(mask).item() == pytest.approx(0.75)
    assert gn.attention_tv_loss(mask).item() == pytest.approx(2.0)  # |0-1| across + |0-1| down
    assert gn.attention_tv_loss(torch.cat([mask, mask])).item() == pytest.approx(4.0)  # summed over the batch
    assert gn.attention_tv_loss(torch.ones(3, 1, 5, 5)).item() == 0.0


class _Linear(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return self.scale * x.sum(dim=(1, 2, 3)), None


class _Square(nn.Module):
    def forward(self, x):
        return (x ** 2).sum(dim=(1, 2, 3)), None


def test_gradient_penalty_by_hand():
    real, fake = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    alpha = torch.tensor([0.25, 0.5]).view(2, 1, 1, 1)
    # D = s * sum(x): gradient s everywhere, norm s * sqrt(12); d gp / ds = 2 (s sqrt12 - 1) sqrt12.
    lin = _Linear(0.5)
    gp = gn.gradient_penalty(lin, real, fake, alpha)
    assert gp.item() == pytest.approx((0.5 * math.sqrt(12) - 1) ** 2, rel=1e-6)
    gp.backward()
    assert lin.scale.grad.item() == pytest.approx(2 * (0.5 * math.sqrt(12) - 1) * math.sqrt(12), rel=1e-5)
    # D = sum(x^2): gradient 2 * x_mix; x_mix = alpha, so norms 0.5 sqrt12 and 1.0 sqrt12.
    gp = gn.gradient_penalty(_Square(), real, fake, alpha)
    expected = ((0.5 * math.sqrt(12) - 1) ** 2 + (math.sqrt(12) - 1) ** 2) / 2
    assert gp.item() == pytest.approx(expected, rel=1e-6)


def test_weights_scale_the_logged_losses(faces):
    images, aus = faces
    def first_row(**weights):
        t = gn.Trainer(images, aus, iterations=1, seed=3, critic_steps=1, log_every=1, weights=weights, **TINY)
        t.step()
        return t.rows[0]
    base = first_row()
    # Critic terms are logged before the critic update: doubling a weight doubles the term.
    gp2 = first_row(gp=20.0)
    assert gp2["d_gp"] == pytest.approx(2 * base["d_gp"], rel=1e-6) and gp2["d_adv"] == pytest.approx(base["d_adv"])
    au2 = first_row(au=8000.0)
    assert au2["d_au"] == pytest.approx(2 * base["d_au"], rel=1e-6) and au2["d_gp"] == pytest.approx(base["d_gp"])
    # Generator-only weights do not touch the critic update, so the generator terms double.
    g2 = first_row(cycle=20.0, att_mean=0.2, att_tv=2e-5)
    for name in ("g_cycle", "g_att_mean", "g_att_tv"):
        assert g2[name] == pytest.approx(2 * base[name], rel=1e-5), name
    assert g2["g_au"] == pytest.approx(base["g_au"], rel=1e-6) and g2["g_adv"] == pytest.approx(base["g_adv"], rel=1e-5)
    assert all(math.isfinite(base[c]) for c in gn.HISTORY_COLUMNS)
    with pytest.raises(ValueError, match="unknown loss weight"):
        first_row(lambda_cyc=1.0)


# --- sampling and schedule ------------------------------------------------------------------------

def test_desired_aus_are_a_permutation_plus_small_noise_in_range():
    rng = np.random.default_rng(0)
    aus = rng.random((10, 17))
    aus[0], aus[1] = 0.0, 1.0  # edges: noise must be clipped
    y = torch.tensor(aus, dtype=torch.float32)
    desired = gn.sample_desired(y, torch.Generator().manual_seed(5))
    assert desired.shape == y.shape and desired.min() >= 0 and desired.max() <= 1
    dist = (desired[:, None, :] - y[None, :, :]).abs().amax(dim=2)  # desired row i vs source row j
    matches = [(dist[i] <= 0.1 + 1e-6).nonzero().flatten().tolist() for i in range(len(y))]
    assert all(len(m) == 1 for m in matches)
    assert sorted(m[0] for m in matches) == list(range(len(y)))  # a permutation
    assert not torch.equal(desired, y[[m[0] for m in matches]])  # with noise
    again = gn.sample_desired(y, torch.Generator().manual_seed(5))
    assert torch.equal(desired, again)


def test_lr_schedule_is_constant_then_linear():
    # 30 "epochs" of one iteration: 20 constant, then 10 decaying to a tenth (as the authors' code)
    f = [gn.lr_factor(t, 30) for t in range(30)]
    assert f[:21] == [1.0] * 21 and f[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(f[20:], f[21:]))


# --- attention saturation -------------------------------------------------------------------------

def test_attention_report_flags_saturation_but_not_a_half_mask():
    with pytest.warns(gn.AttentionSaturationWarning, match="attention-mean weight"):
        r = gn.attention_report(torch.full((2, 1, 8, 8), 0.99), warn=True)
    assert r.saturated and not r.empty and r.high == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        half = gn.attention_report(np.full((8, 8), 0.5), warn=True)
        split = gn.attention_report(np.r_[np.ones(32), np.zeros(32)], warn=True)
    assert not half.saturated and not half.empty and half.mean == 0.5 and half.high == 0.0
    assert not split.saturated and split.high == 0.5 and split.low == 0.5
    assert gn.attention_report(np.zeros(10)).empty
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gn.attention_report(np.array([0.5, 1.5]))


# --- training, checkpoints, resume ----------------------------------------------------------------

def test_checkpoint_round_trip_weights_only(faces, tmp_path):
    images, aus = faces
    state_before = torch.get_rng_state()
    result = gn.train(images, aus, iterations=2, seed=1, checkpoint_dir=tmp_path, critic_steps=2, log_every=1, **TINY)
    assert torch.equal(torch.get_rng_state(), state_before)  # the caller's global RNG is untouched
    assert result.iteration == 2 and result.checkpoint.exists() and list(result.history["iteration"]) == [1, 2]
    state = torch.load(result.checkpoint, weights_only=True)
    assert {"generator", "critic", "opt_generator", "opt_critic", "iteration", "history", "config"} <= set(state)
    assert state["iteration"] == 2 and state["config"]["weights"] == gn.DEFAULT_WEIGHTS
    gan = gn.load(tmp_path, device="cpu")  # a folder: its newest checkpoint
    for k, v in result.gan.generator.state_dict().items():
        assert torch.equal(v, gan.generator.state_dict()[k]), k
    assert np.array_equal(gan.edit(images[0], aus[0]), result.gan.edit(images[0], aus[0]))
    # generator-only file
    path = gan.save(tmp_path / "g.pt")
    assert np.array_equal(gn.load(path, device="cpu").edit(images[1], aus[1]), gan.edit(images[1], aus[1]))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        gn.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        gn.load(tmp_path / "missing.pt")


def test_resume_equals_uninterrupted_run(faces, tmp_path):
    images, aus = faces
    kw = dict(iterations=5, seed=2, critic_steps=2, log_every=2, **TINY)
    whole = gn.Trainer(images, aus, **kw)
    whole.run()

    first = gn.Trainer(images, aus, checkpoint_dir=tmp_path, **kw)
    first.run(until=3)  # "interrupted" after 3 iterations, mid log window, between generator steps
    assert first.iteration == 3
    second = gn.Trainer(images, aus, checkpoint_dir=tmp_path, **kw)
    assert second.iteration == 3 and second.resumed_from == 3
    result = second.run()
    assert result.iteration == 5 and result.resumed_from == 3
    for name, net in (("generator", whole.generator), ("critic", whole.critic)):
        resumed = getattr(second, name).state_dict()
        for k, v in net.state_dict().items():
            assert torch.equal(v, resumed[k]), f"{name}.{k}"
    pd.testing.assert_frame_equal(whole.history, result.history)
    assert list(result.history["iteration"]) == [2, 4, 5]

    # A finished run is reused, not retrained; another seed is another configuration.
    again = gn.train(images, aus, checkpoint_dir=tmp_path, **kw)
    assert again.resumed_from == 5 and again.iteration == 5
    with pytest.warns(UserWarning, match="other configurations"):
        other = gn.Trainer(images, aus, checkpoint_dir=tmp_path, **{**kw, "seed": 9})
    assert other.iteration == 0


def test_au_warmup_trains_only_the_critics_au_reading(faces):
    images, aus = faces
    kw = dict(iterations=6, seed=4, critic_steps=1, log_every=1, **TINY)
    plain = gn.Trainer(images, aus, **kw)
    warm = gn.Trainer(images, aus, au_warmup=3, **kw)
    assert "au_warmup" not in plain.config and warm.config["au_warmup"] == 3 and warm.key != plain.key
    g0, c0 = _params(warm.generator), _params(warm.critic)
    warm.run(until=3)
    assert all(torch.equal(v, warm.generator.state_dict()[k]) for k, v in g0.items())  # generator untouched
    assert not torch.equal(c0["au_head.weight"], warm.critic.au_head.weight)           # the AU head learned
    assert torch.equal(c0["realness_head.weight"], warm.critic.realness_head.weight)  # realness had no loss
    h = warm.history
    assert h["d_au"].notna().all() and h[["d_adv", "d_gp", "g_adv", "g_cycle", "attention_mean"]].isna().all().all()
    warm.run()  # then the usual adversarial steps, with generator steps
    assert warm.history.iloc[3:][["d_adv", "g_adv", "g_cycle"]].notna().all().all()
    assert not all(torch.equal(v, warm.generator.state_dict()[k]) for k, v in g0.items())
    with pytest.raises(ValueError, match="au_warmup"):
        gn.Trainer(images, aus, au_warmup=6, **kw)


def test_training_from_a_dataset_and_input_errors(faces):
    images, aus = faces

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i], aus[i]

    result = gn.train(Pairs(), iterations=2, seed=0, critic_steps=2, log_every=1, **TINY)
    assert result.iteration == 2 and np.isfinite(result.history[["d_adv", "g_cycle"]].iloc[-1]).all()
    with pytest.raises(ValueError, match="uint8"):
        gn.Trainer(images / 255.0, aus, iterations=1, seed=0, **TINY)
    with pytest.raises(ValueError, match="AU"):
        gn.Trainer(images, aus * 5, iterations=1, seed=0, **TINY)
    with pytest.raises(ValueError, match="8 x 17"):
        gn.Trainer(images, aus[:5], iterations=1, seed=0, **TINY)
    with pytest.raises(ValueError, match="batch_size 16"):
        gn.Trainer(images, aus, iterations=1, seed=0, **{**TINY, "batch_size": 16})


# --- command line ---------------------------------------------------------------------------------

def test_cli_train_edit_and_errors(faces, tmp_path, capsys):
    images, aus = faces
    np.savez(tmp_path / "faces.npz", images=images, aus=aus)
    out = tmp_path / "ckpt"
    rc = gn.cli(["train", "--images", str(tmp_path / "faces.npz"), "--out", str(out), "--iterations", "1",
                 "--size", "32", "--batch-size", "2", "--quiet", "--device", "cpu"])
    assert rc == 0 and (out / "history.csv").exists() and list(out.glob("ganimation-*.pt"))
    from PIL import Image
    Image.fromarray(images[0]).save(tmp_path / "face.png")
    rc = gn.cli(["edit", "--checkpoint", str(out), "--image", str(tmp_path / "face.png"), "--au", "AU12=0.5",
                 "--out", str(tmp_path / "edit.png"), "--device", "cpu"])
    assert rc == 0 and np.asarray(Image.open(tmp_path / "edit.png")).shape == (SIZE, SIZE, 3)
    capsys.readouterr()

    np.savez(tmp_path / "bad.npz", pictures=images)
    assert gn.cli(["train", "--images", str(tmp_path / "bad.npz"), "--out", str(out), "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'images'" in err and "bad.npz" in err
    assert gn.cli(["edit", "--checkpoint", str(out), "--image", str(tmp_path / "face.png"), "--au", "AU99=0.5",
                   "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown AU" in capsys.readouterr().err
    assert gn.cli(["train", "--images", str(tmp_path / "nowhere"), "--out", str(out), "--iterations", "1"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_cli_train_out_is_new_empty_or_the_same_run(faces, tmp_path, capsys):
    images, aus = faces
    np.savez(tmp_path / "faces.npz", images=images, aus=aus)
    args = ["train", "--images", str(tmp_path / "faces.npz"), "--iterations", "1", "--size", "32",
            "--batch-size", "2", "--quiet", "--device", "cpu"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "history.csv").write_text("my own results\n")
    (mine / "notes.txt").write_text("unrelated\n")
    assert gn.cli(args + ["--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is not empty and holds no training run of this configuration (found: history.csv, notes.txt)" in err
    assert (mine / "history.csv").read_text() == "my own results\n" and not list(mine.glob("ganimation-*"))

    out = tmp_path / "run"
    assert gn.cli(args + ["--out", str(out)]) == 0
    assert gn.cli(args + ["--out", str(out)]) == 0  # the same configuration: resumed (already finished)
    capsys.readouterr()
    assert gn.cli(args + ["--seed", "1", "--out", str(out)]) == 2
    assert "holds a GANimation training run of another configuration (ganimation-" in capsys.readouterr().err


def test_cli_train_names_an_npz_of_object_arrays(tmp_path, capsys):
    evil = tmp_path / "evil.npz"
    np.savez(evil, images=np.array([object()], dtype=object), aus=np.zeros((1, 17)))
    assert gn.cli(["train", "--images", str(evil), "--out", str(tmp_path / "o"), "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {evil}: cannot read its arrays (Object arrays cannot be loaded")
