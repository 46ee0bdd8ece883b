"""AU-ICGAN (Xie et al., ACM MM 2020, seed 002, §3.4): GANimation grown into a micro-expression
sequence synthesizer, and the class-balanced augmentation set it makes for one fold (§4.2,
Table 1, Fig. 3). Used by notebook 10 (AU-GACN / AU-ICGAN).

The generator is `ganimation.Generator`: it turns one face I_in and the K AU vectors of an
AU-intensity sequence Y_c into K frames, one image at a time (paper §3.4). Two critics judge
them: `ganimation.Critic` per image (PatchGAN realness + AU regression) and `SequenceCritic` per
sequence (3D convolutions; realness D_S + emotion classifier D_ME). Eq. 9's seven losses are
GANimation's four (reused from `mielib.ganimation`) plus SSIM (Eq. 6), ME (Eq. 7) and sequence
authenticity (Eq. 8).

What the paper leaves open, and our choices (the notebook states them):
- No loss weights are given: `Settings` takes GANimation's for the shared four terms and 1 for
  the three new ones.
- Y_c is a training clip's per-frame AU readout at K frames spaced evenly from onset to offset
  (`positions`); I_c (Eq. 8's real sequence) is that clip's frames at the same positions.
- Training faces I_in are the macro set's identity faces (the paper: AffectNet) plus the onset
  frames of the fold's training clips, each with its AU readout (GANimation's cycle needs the
  source AUs). The image critic's real images are those faces.
- The critics' ME head learns on real sequences with the loss of Eq. 7 (as GANimation's critic
  learns its AU head on real faces); Eq. 8's penalty, written with D_I, is taken on D_S.
- Synthetic counts (`counts`): Table 1's synthetic counts are exactly "T minus the real count"
  per class, with T = 416 = 16 x 26 subjects (CASME II) and 290 = 10 x 29 (SAMM), i.e. real +
  synthetic is balanced, the same number per subject and class; only CASME II's fear (294) and
  sadness (307) fall short of it (by 120 and 105), unexplained.
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mielib import au, ganimation, paper, runtime, store
from mielib.clip import ArrayFrames, Clip, ClipSet

#: Written into every cached model so `train` reads back only its own files.
FORMAT = "mielib.auicgan/1"
#: Frames per sequence K (the paper gives none; AU-GACN's backbone takes L frames).
FRAMES = 8
#: A synthetic clip's FACS codes are the AUs whose peak readout in Y_c exceeds this ([0, 1]
#: scale; 0.5 on OpenFace's 0..5).
AU_THRESHOLD = 0.1
#: Real + synthetic sequences per class in the paper's Table 1 (see `counts`).
PAPER_TOTALS: dict[str, int] = {"casme2": 416, "samm": 290}
#: Table 1's class columns, in the paper's order.
TABLE1_CLASSES: tuple[str, ...] = ("happiness", "disgust", "surprise", "fear", "sadness", "anger", "repression",
                                   "contempt", "others")


# ---------------------------------------------------------------------------------------------
# Settings: the weights of Eq. 8-9


@dataclass(frozen=True)
class Settings:
    """λ1..λ7 of Eq. 9 and λ_gp of Eq. 8. The paper gives no values: the terms shared with
    GANimation take GANimation's (`ganimation.DEFAULT_WEIGHTS`, the authors' code); the three new
    ones are ours, 1 each (λ7 = λ1: the sequence critic weighs as much as the image critic)."""

    adv: float = 1.0        # λ1 L_adv, WGAN on single frames
    c: float = 10.0         # λ2 L_c, consistency (cycle) back to I_in
    att: float = 0.1        # λ3 L_att, on the attention mask's mean ...
    att_tv: float = 1e-5    # ... and on its total variation (GANimation's two attention terms)
    ai: float = 4000.0      # λ4 L_AI, applied as ganimation.au_loss (MSE / number of images)
    ssim: float = 1.0       # λ5 L_SSIM (ours)
    me: float = 1.0         # λ6 L_ME (ours)
    sa: float = 1.0         # λ7 L_sa (ours)
    gp: float = 10.0        # λ_gp of both critics' gradient penalties (Gulrajani et al.; GANimation)


# ---------------------------------------------------------------------------------------------
# The sequence critic


def _conv3d_init(module: nn.Module, generator: torch.Generator) -> None:
    # As GANimation's critic: conv weights ~ N(0, 0.02), biases 0.
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()


class SequenceCritic(nn.Module):
    """The video branch of Fig. 2: 3D convolutions over a K-frame sequence, two heads.

    Like GANimation's critic, in 3D: (3 x 4 x 4) convs with LeakyReLU 0.01, no normalization
    (WGAN-GP), width doubling from `width`; each halves the image (as `ganimation.critic_depth`)
    and the time axis while it has 2 frames or more. A (1 x 3 x 3) conv gives the realness map
    D_S; a conv spanning the whole remaining volume gives the emotion logits D_ME.
    """

    def __init__(self, frames: int = FRAMES, classes: int = 7, width: int = 64, size: int = 128):
        super().__init__()
        if frames < 1 or classes < 2:
            raise ValueError(f"SequenceCritic needs at least 1 frame and 2 classes, got {frames} and {classes}")
        n, side = ganimation.critic_depth(size)
        layers: list[nn.Module] = []
        c_in, c_out, t = 3, width, frames
        for _ in range(n):
            stride_t = 2 if t >= 2 else 1
            layers += [nn.Conv3d(c_in, c_out, (3, 4, 4), (stride_t, 2, 2), 1), nn.LeakyReLU(0.01, inplace=True)]
            t = (t - 1) // stride_t + 1  # kernel 3, padding 1
            c_in, c_out = c_out, c_out * 2
        self.frames, self.size = frames, size
        self.body = nn.Sequential(*layers)
        self.realness_head = nn.Conv3d(c_in, 1, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.me_head = nn.Conv3d(c_in, classes, (t, side, side), bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: B x K x 3 x S x S (a sequence of images, as the generator makes them), in [-1, 1].
        Returns (realness map B x 1 x t x s x s, emotion logits B x classes)."""
        if x.ndim != 5 or x.shape[1] != self.frames or x.shape[2] != 3:
            raise ValueError(f"SequenceCritic: expected B x {self.frames} x 3 x S x S, got {tuple(x.shape)}")
        h = self.body(x.transpose(1, 2))
        return self.realness_head(h), self.me_head(h).flatten(1)


# ---------------------------------------------------------------------------------------------
# The new losses (GANimation's four are reused from mielib.ganimation)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image: B x C x H x W each -> B values.

    The standard form: Gaussian window 11, sigma 1.5, C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L the
    data range (2 for mielib's [-1, 1] images), local statistics over the window (population
    variances), the SSIM map over the positions where the window fits, averaged with channels.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim: expected two B x C x H x W tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim: images of {tuple(x.shape[-2:])} px are smaller than the {window} px window")
    c = x.shape[1]
    w = _gaussian_window(window, sigma).to(device=x.device, dtype=torch.float32).expand(c, 1, window, window)
    x, y = x.float(), y.float()
    blur = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return index.flatten(1).mean(1)


def ssim_loss(generated: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Eq. 6: per sequence, the sum over its K frames of 1 - SSIM(G(I_in | Y_c,i), I_in); mean over
    the batch. generated: B x K x 3 x S x S; source (I_in): B x 3 x S x S."""
    b, k = generated.shape[:2]
    frames = generated.reshape(b * k, *generated.shape[2:])
    scores = ssim(frames, source.repeat_interleave(k, dim=0)).view(b, k)
    return (1 - scores).sum(1).mean()


def me_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 7 as written: ||D_ME(sequence) - ME_c||_2^2, the squared error between the critic's
    class probabilities (softmax of `logits`, B x classes) and the one-hot label (B class
    indices), averaged over the batch."""
    probs = logits.float().softmax(dim=1)
    target = F.one_hot(labels.long(), probs.shape[1]).float()
    return ((probs - target) ** 2).sum(1).mean()


def sequence_authenticity_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, penalty: torch.Tensor,
                               gp_weight: float) -> torch.Tensor:
    """Eq. 8, the sequence critic's WGAN-GP objective: mean D_S(G(I_in | Y_c)) - mean D_S(I_c)
    + λ_gp x penalty, with penalty = `ganimation.gradient_penalty(D_S, I_c, G(I_in | Y_c), alpha)`.
    The critic minimises it; the generator's part is `ganimation.generator_adversarial_loss` on
    D_S of its sequences."""
    return ganimation.critic_adversarial_loss(real_scores, fake_scores) + gp_weight * penalty


# ---------------------------------------------------------------------------------------------
# Sequences: K frames from onset to offset


def positions(onset: int, offset: int, k: int = FRAMES) -> list[int]:
    """K frame positions spaced evenly from onset to offset (rounded; a clip shorter than K
    frames repeats some)."""
    if offset < onset:
        raise ValueError(f"onset {onset} is after offset {offset}")
    return [int(p) for p in np.linspace(onset, offset, k).round()]


def _readout(clip: Clip, k: int) -> np.ndarray:
    if clip.readout is None:
        raise ValueError(f"clip {clip.key}: no per-frame AU readout; AU-ICGAN's Y_c is the readout sequence "
                         "(run OpenFace on the clip's frames)")
    return au.validate(np.asarray(clip.readout)[positions(clip.onset, clip.offset, k)], where=f"clip {clip.key} readout")


def _pixels(clip: Clip, where: Sequence[int], size: int) -> np.ndarray:
    try:
        return np.stack([paper._resize(clip.frames[p], size) for p in where])
    except ValueError as exc:
        raise ValueError(f"{clip.key}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The model


class AUICGAN(nn.Module):
    """Generator (GANimation's), image critic (GANimation's) and `SequenceCritic`, with the
    configuration that built them."""

    def __init__(self, *, size: int, width: int, frames: int, classes: Sequence[str], residual_blocks: int = 6):
        super().__init__()
        self.size, self.width, self.frames = int(size), int(width), int(frames)
        self.classes = tuple(classes)
        self.residual_blocks = int(residual_blocks)
        self.generator = ganimation.Generator(width, residual_blocks)
        self.critic = ganimation.Critic(size, width)
        self.sequence_critic = SequenceCritic(frames, len(self.classes), width, size)

    def generate(self, faces: np.ndarray, sequences: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """N faces (uint8 N x H x W x 3) and N AU sequences (N x K x 17, [0, 1]) -> the N synthetic
        sequences, uint8 N x K x H x W x 3, each frame G(face | Y_c,k) made one image at a time.
        Faces of another size than the network's are edited as `ganimation.GAN` does."""
        faces = np.asarray(faces)
        z = au.validate(sequences, where="AU sequences")
        if z.ndim != 3 or len(z) != len(faces):
            raise ValueError(f"generate: {len(faces)} faces need {len(faces)} AU sequences N x K x 17, got {z.shape}")
        n, k = z.shape[:2]
        device = next(self.generator.parameters()).device
        was_training = self.generator.training
        gan = ganimation.GAN(self.generator, {"size": self.size, "width": self.width}, device)
        out = gan.edit_batch(np.repeat(faces, k, axis=0), z.reshape(n * k, au.N_AUS), batch_size)
        self.generator.train(was_training)
        return out.reshape(n, k, *out.shape[1:])


# ---------------------------------------------------------------------------------------------
# Training on one fold


#: History columns: weighted losses (as added to the totals), the learning rate and the mean
#: attention of the critic step's frames. d_*: image critic; s_*: sequence critic; g_*: generator.
HISTORY_COLUMNS = ("iteration", "lr", "d_adv", "d_gp", "d_ai", "s_sa", "s_gp", "s_me",
                   "g_adv", "g_c", "g_att", "g_ai", "g_ssim", "g_me", "g_sa", "attention_mean")


@dataclass
class Trained:
    """What `train` returns."""

    model: AUICGAN       # on the training device, in eval mode
    history: pd.DataFrame
    config: dict
    path: Path | None    # the cached weights (None with cache=False)
    reused: bool         # True when read from the cache instead of trained
    seconds: float       # wall time of this call


@dataclass
class _Data:
    sequences: torch.Tensor  # N x K x 3 x S x S uint8: I_c
    aus: torch.Tensor        # N x K x 17: Y_c
    labels: torch.Tensor     # N class indices
    faces: torch.Tensor      # M x 3 x S x S uint8: I_in
    face_aus: torch.Tensor   # M x 17: the faces' own AUs (cycle target, critic AU regression)
    fingerprint: str


def _data(train_clips: Sequence[Clip], faces: np.ndarray, face_aus: np.ndarray, classes: Sequence[str],
          size: int, k: int) -> _Data:
    faces = ganimation._check_images(faces, "faces")
    z = au.validate(face_aus, where="face_aus")
    if z.ndim != 2 or len(z) != len(faces) or len(faces) == 0:
        raise ValueError(f"faces and face_aus: expected N x H x W x 3 and N x 17 with N >= 1, got {faces.shape} and {z.shape}")
    pixels, aus, labels, onsets, onset_aus = [], [], [], [], []
    for c in train_clips:
        if c.label not in classes:
            raise ValueError(f"clip {c.key}: label {c.label!r} is not among the classes {', '.join(classes)}")
        where = positions(c.onset, c.offset, k)
        frames = _pixels(c, where, size)
        y = _readout(c, k)
        pixels.append(frames)
        aus.append(y)
        labels.append(classes.index(c.label))
        onsets.append(frames[0])  # positions start at the onset
        onset_aus.append(y[0])
    if not pixels:
        raise ValueError("train: no training clips")
    face_pixels = np.concatenate([np.stack([paper._resize(f, size) for f in faces]), np.stack(onsets)])
    seq = np.stack(pixels)
    arrays = (seq, np.stack(aus), np.asarray(labels, np.int64), face_pixels,
              np.concatenate([z, np.stack(onset_aus)]).astype(np.float32))
    fingerprint = store.key([hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays]
                            + list(classes))
    return _Data(torch.from_numpy(seq).permute(0, 1, 4, 2, 3).contiguous(), torch.from_numpy(arrays[1]),
                 torch.from_numpy(arrays[2]), torch.from_numpy(face_pixels).permute(0, 3, 1, 2).contiguous(),
                 torch.from_numpy(arrays[4]), fingerprint)

def _classes(train_clips: Sequence[Clip], classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is not None:
        return tuple(classes)
    datasets = {c.dataset for c in train_clips}
    if len(datasets) == 1 and next(iter(datasets)) in au.DATASET_CLASSES:
        return au.DATASET_CLASSES[next(iter(datasets))]
    return tuple(sorted({c.label for c in train_clips}))


def _state_bytes(obj: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _fingerprint(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_path(key: str) -> Path:
    """Where `train` keeps the model of configuration `key` (results/auicgan/)."""
    return runtime.folder("results") / "auicgan" / f"auicgan-{key}.pt"


class _Trainer:
    """One fold's training: networks, optimizers and the loss history. Iteration t draws all its
    randomness (batches, frames for the penalty, mixing weights) from a generator seeded by
    (seed, t), so on CPU a run is bit-identical for the same seed."""

    def __init__(self, data: _Data, model: AUICGAN, config: dict, settings: Settings, device: torch.device):
        self.data, self.model, self.config, self.s, self.device = data, model, config, settings, device
        betas = tuple(config["betas"])
        self.opt_g = torch.optim.Adam(model.generator.parameters(), lr=config["lr"], betas=betas)
        critics = list(model.critic.parameters()) + list(model.sequence_critic.parameters())
        self.opt_d = torch.optim.Adam(critics, lr=config["lr"], betas=betas)
        self.rows: list[dict] = []
        self.window: dict[str, list[float]] = {}

    def _add(self, name: str, value: float) -> None:
        s = self.window.setdefault(name, [0.0, 0.0])
        s[0] += value
        s[1] += 1

    def _batch(self, t: int):
        cfg, d = self.config, self.data
        b, k = cfg["batch_size"], cfg["frames"]
        rng = torch.Generator().manual_seed(ganimation._seed_for(cfg["seed"], 2, t))
        fi = torch.randint(len(d.faces), (b,), generator=rng)
        si = torch.randint(len(d.sequences), (b,), generator=rng)
        pick = torch.randint(k, (b,), generator=rng)  # the frame of each sequence in the image penalty
        alpha_image, alpha_seq = torch.rand(b, 1, 1, 1, generator=rng), torch.rand(b, 1, 1, 1, 1, generator=rng)
        x = d.faces[fi].float() / 127.5 - 1.0
        real = d.sequences[si].float() / 127.5 - 1.0
        out = (x, d.face_aus[fi], real, d.aus[si], d.labels[si], pick, alpha_image, alpha_seq)
        return tuple(v.to(self.device) for v in out)

    def step(self, t: int) -> None:
        """One critic step (both critics), plus a generator step every `critic_steps`."""
        cfg, s, m = self.config, self.s, self.model
        b, k = cfg["batch_size"], cfg["frames"]
        x, y_o, real, y_c, labels, pick, alpha_image, alpha_seq = self._batch(t)
        lr = cfg["lr"] * ganimation.lr_factor(t, cfg["iterations"])
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        x_k, y_o_k = x.repeat_interleave(k, dim=0), y_o.repeat_interleave(k, dim=0)
        y_flat = y_c.reshape(b * k, au.N_AUS)

        # Critics: image WGAN-GP + AU regression on real faces; sequence WGAN-GP (Eq. 8) + ME head on real sequences.
        with torch.no_grad():
            fake, attention, _ = m.generator(x_k, y_flat)
        fake_seq = fake.view(b, k, *fake.shape[1:])
        real_scores, real_aus = m.critic(x)
        fake_scores, _ = m.critic(fake)
        d_adv = s.adv * ganimation.critic_adversarial_loss(real_scores, fake_scores)
        d_ai = ganimation.au_loss(real_aus, y_o, s.ai)
        d_gp = s.gp * ganimation.gradient_penalty(m.critic, x, fake_seq[torch.arange(b, device=pick.device), pick], alpha_image)
        seq_real_scores, real_logits = m.sequence_critic(real)
        seq_fake_scores, _ = m.sequence_critic(fake_seq)
        penalty = ganimation.gradient_penalty(m.sequence_critic, real, fake_seq, alpha_seq)
        s_sa = s.sa * sequence_authenticity_loss(seq_real_scores, seq_fake_scores, penalty, s.gp)
        s_me = s.me * me_loss(real_logits, labels)
        self.opt_d.zero_grad(set_to_none=True)
        (d_adv + d_ai + d_gp + s_sa + s_me).backward()
        self.opt_d.step()
        for name, value in (("d_adv", d_adv), ("d_gp", d_gp), ("d_ai", d_ai), ("s_sa", s_sa),
                            ("s_gp", s.sa * s.gp * penalty), ("s_me", s_me)):
            self._add(name, value.item())
        self._add("attention_mean", attention.mean().item())

        if (t + 1) % cfg["critic_steps"] == 0:
            self._generator_step(x, x_k, y_o_k, y_flat, labels)
        self._log(t + 1, lr)

    def _generator_step(self, x, x_k, y_o_k, y_flat, labels) -> None:
        s, m = self.s, self.model
        b, k = len(x), self.config["frames"]
        critics = (m.critic, m.sequence_critic)
        for c in critics:
            c.requires_grad_(False)
        fake, attention, _ = m.generator(x_k, y_flat)
        scores, fake_aus = m.critic(fake)
        rec, rec_attention, _ = m.generator(fake, y_o_k)
        fake_seq = fake.view(b, k, *fake.shape[1:])
        seq_scores, logits = m.sequence_critic(fake_seq)
        terms = {
            "g_adv": s.adv * ganimation.generator_adversarial_loss(scores),
            "g_c": s.c * ganimation.cycle_loss(rec, x_k),
            # Both masks, the edit's and the reconstruction's, as GANimation.
            "g_att": s.att * (ganimation.attention_mean_loss(attention) + ganimation.attention_mean_loss(rec_attention))
                     + s.att_tv * (ganimation.attention_tv_loss(attention) + ganimation.attention_tv_loss(rec_attention)),
            "g_ai": ganimation.au_loss(fake_aus, y_flat, s.ai),
            "g_ssim": s.ssim * ssim_loss(fake_seq, x),
            "g_me": s.me * me_loss(logits, labels),
            "g_sa": s.sa * ganimation.generator_adversarial_loss(seq_scores),
        }
        self.opt_g.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        self.opt_g.step()
        for c in critics:
            c.requires_grad_(True)
        for name, value in terms.items():
            self._add(name, value.item())

    def _log(self, iteration: int, lr: float) -> None:
        if iteration % self.config["log_every"] and iteration != self.config["iterations"]:
            return
        row = {"iteration": iteration, "lr": lr}
        for name in HISTORY_COLUMNS[2:]:
            total = self.window.get(name)
            row[name] = total[0] / total[1] if total else math.nan  # NaN: no generator step in the window
        self.rows.append(row)
        self.window = {}

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS))


def _build(shape: dict, seed: int) -> AUICGAN:
    # Built under a forked RNG so the caller's global torch RNG is untouched; every weight is then
    # drawn from a generator seeded by `seed`.
    with torch.random.fork_rng(devices=[]):
        model = AUICGAN(**shape)
    init = torch.Generator().manual_seed(ganimation._seed_for(seed, 0))
    ganimation._conv_init(model.generator, init)
    ganimation._conv_init(model.critic, init)
    _conv3d_init(model.sequence_critic, init)
    return model


def _read(path: Path, config: dict) -> tuple[AUICGAN, pd.DataFrame]:
    try:
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise ValueError(f"{path}: not a readable AU-ICGAN model ({exc}); delete it to train again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("config") != config:
        raise ValueError(f"{path}: not the AU-ICGAN model of this configuration; delete it to train again")
    model = AUICGAN(**state["shape"])
    model.load_state_dict(state["weights"])
    history = pd.DataFrame(state["history"], columns=list(HISTORY_COLUMNS))
    return model, history.astype({"iteration": int})


def train(train_clips: Sequence[Clip], faces: np.ndarray, face_aus: np.ndarray, *, iterations: int, seed: int,
          batch_size: int = 8, size: int = 32, width: int = 16, frames: int = FRAMES,
          classes: Sequence[str] | None = None, settings: Settings | None = None, residual_blocks: int = 6,
          critic_steps: int = 5, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999),
          init: ganimation.GAN | None = None, device="auto", cache: bool = True, progress: bool = True,
          desc: str = "AU-ICGAN", log_every: int = 10) -> Trained:
    """Train AU-ICGAN on ONE fold: the fold's training clips (real sequences I_c, their readouts
    Y_c and labels) and single faces I_in (uint8 N x H x W x 3 with their AUs N x 17; the onset
    frames of the training clips are added to them).

    `iterations` counts critic steps; the generator steps every `critic_steps` (GANimation: 5);
    Adam (lr, betas) with GANimation's schedule (`ganimation.lr_factor`: linear decay over the
    last third). `classes`: the label space of the ME head (default: the dataset's classes).
    `init`: a trained GANimation whose generator weights start the generator (same width and
    residual blocks; part of the configuration). The model is cached under results/auicgan/,
    keyed by the configuration and a fingerprint of the data: a second identical call reads it.
    Pass the clips through `augacn_tables.load_sequences` first so folds do not render frames again.
    """
    for name, value, low in (("iterations", iterations, 1), ("batch_size", batch_size, 1), ("width", width, 1),
                             ("frames", frames, 1), ("critic_steps", critic_steps, 1), ("log_every", log_every, 1),
                             ("seed", seed, 0), ("residual_blocks", residual_blocks, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if size % 4 or size < 16:
        raise ValueError(f"size must be a multiple of 4 and at least 16 px (the SSIM window is 11), got {size}")
    start = time.perf_counter()
    train_clips = list(train_clips)
    classes = _classes(train_clips, classes)
    settings = settings or Settings()
    data = _data(train_clips, faces, face_aus, classes, size, frames)
    shape = {"size": int(size), "width": int(width), "frames": int(frames), "classes": list(classes),
             "residual_blocks": int(residual_blocks)}
    config = {"format": FORMAT, **shape, "iterations": int(iterations), "batch_size": int(batch_size),
              "seed": int(seed), "critic_steps": int(critic_steps), "lr": float(lr),
              "betas": [float(b) for b in betas], "settings": asdict(settings), "log_every": int(log_every),
              "data": data.fingerprint, "init": None if init is None else _fingerprint(init.generator)}
    key = store.key(config)
    path = cache_path(key) if cache else None
    dev = runtime.device(device) if isinstance(device, str) else device
    if path is not None and path.is_file():
        model, history = _read(path, config)
        return Trained(model.to(dev).eval(), history, config, path, True, time.perf_counter() - start)

    model = _build(shape, seed)
    if init is not None:
        model.generator.load_state_dict(init.generator.state_dict())
    model.to(dev).train()
    trainer = _Trainer(data, model, config, settings, dev)
    from tqdm.auto import tqdm

    with tqdm(total=iterations, desc=desc, unit="it", disable=not progress, file=sys.stderr, leave=False) as bar:
        for t in range(iterations):
            trainer.step(t)
            bar.update(1)
    history = trainer.history
    if path is not None:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        store.write_bytes(path, _state_bytes({"format": FORMAT, "config": config, "shape": shape, "weights": weights,
                                              "history": history.to_dict(orient="list")}))
    return Trained(model.eval(), history, config, path, False, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# The augmentation set of a fold


def counts(real_counts: Mapping[str, int], scale: float = 1.0, *, total: int) -> dict[str, int]:
    """Synthetic sequences per class: scale x max(total - real count, 0), rounded half up.

    Paper §4.2: "300 to 400 samples for each category depending on the distribution in the
    real-world datasets", "tailored for each subject by making different subjects to have all
    types of MEs". Table 1 follows this rule exactly with `total` = 416 = 16 x 26 subjects
    (CASME II) and 290 = 10 x 29 (SAMM) (`PAPER_TOTALS`): real + synthetic is the same in every
    class, except CASME II's fear and sadness (294 and 307, not 414 and 412). A class with no real
    clip gets none: its AU sequences Y_c come from real clips.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    out = {}
    for label, n in real_counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"real count of {label!r} must be a count (integer >= 0), got {n!r}")
        out[label] = math.floor(scale * max(total - int(n), 0) + 0.5) if n > 0 else 0
    return out


def pick_faces(train_clips: Sequence[Clip], *, seed: int) -> dict[str, Clip]:
    """For every training subject, one of its own training clips (drawn with `seed`): its onset
    frame is the face I_in that `synthesize` gives that subject."""
    by_subject: dict[str, list[Clip]] = {}
    for c in train_clips:
        by_subject.setdefault(c.subject, []).append(c)
    rng = np.random.default_rng([seed, 11])
    return {s: by_subject[s][int(rng.integers(len(by_subject[s])))] for s in sorted(by_subject)}


def facs(sequence: np.ndarray, threshold: float = AU_THRESHOLD) -> str | None:
    """FACS codes ("4+12") of the AUs whose peak intensity in an AU sequence (K x 17) exceeds
    `threshold`; None when none does."""
    peak = au.validate(sequence, where="AU sequence").reshape(-1, au.N_AUS).max(0)
    codes = [str(code) for code, v in zip(au.CODES, peak) if v > threshold]
    return "+".join(codes) if codes else None


def _allocate(subjects: Sequence[str], wanted: Mapping[str, int]) -> list[tuple[str, str]]:
    # One cursor runs over the subjects through all classes, so each class's sequences differ by
    # at most one between subjects, and so do the subjects' totals.
    out, cursor = [], 0
    for label, n in wanted.items():
        out += [(subjects[(cursor + j) % len(subjects)], label) for j in range(n)]
        cursor += n
    return out


def synthesize(model: AUICGAN, train_clips: Sequence[Clip], faces_by_subject: Mapping[str, Clip],
               counts: Mapping[str, int], *, seed: int, fold: int | str, dataset: str | None = None,
               threshold: float = AU_THRESHOLD, batch_size: int = 64, progress: bool = False) -> ClipSet:
    """The augmentation set of one fold: `counts[c]` synthetic sequences of class c, spread
    evenly over the subjects of `faces_by_subject` (each gets every class).

    A sequence's face is the onset frame of its subject's clip in `faces_by_subject`; its AU
    sequence Y_c is the readout (at `positions`) of a training clip of class c, any subject,
    drawn with `seed`. Only `train_clips` are used: a face clip or a source outside them raises.
    Each result is a Clip of K frames (onset 0, apex = the frame of largest total intensity in
    Y_c, offset K - 1), label c, its MEGC 3-class label, FACS codes from Y_c (`facs`), readout
    Y_c, subject = the face's subject, dataset "auicgan-<dataset>", and meta naming the source
    clip of Y_c and of the face (plus the source's annotated codes, `source_aus`).
    """
    train = list(train_clips)
    keys = {c.key for c in train}
    datasets = {c.dataset for c in train}
    if dataset is None:
        if len(datasets) != 1:
            raise ValueError(f"training clips of several datasets ({', '.join(sorted(datasets))}): pass dataset=")
        dataset = next(iter(datasets))
    for subject, clip in faces_by_subject.items():
        if clip.key not in keys:
            raise ValueError(f"face of subject {subject}: clip {clip.key} is not among the fold's training clips")
        if clip.subject != subject:
            raise ValueError(f"face of subject {subject}: clip {clip.key} belongs to subject {clip.subject}")
    subjects = sorted(faces_by_subject)
    if not subjects:
        raise ValueError("synthesize: no faces (faces_by_subject is empty)")
    sources: dict[str, list[Clip]] = {}
    for c in train:
        sources.setdefault(c.label, []).append(c)
    wanted = {label: int(n) for label, n in counts.items() if n}
    for label in wanted:
        if label not in sources:
            raise ValueError(f"class {label!r}: no training clip of this class in fold {fold}, so no AU sequence Y_c; "
                             "give it a count of 0")

    rng = np.random.default_rng([seed, 12])
    plan = [(subject, label, sources[label][int(rng.integers(len(sources[label])))])
            for subject, label in _allocate(subjects, wanted)]
    k = model.frames
    face_images = {s: paper._resize(faces_by_subject[s].frames[faces_by_subject[s].onset], model.size) for s in subjects}
    out: list[Clip] = []
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(plan), batch_size), desc=f"AU-ICGAN fold {fold}", disable=not progress, leave=False):
        chunk = plan[start:start + batch_size]
        y = np.stack([_readout(src, k) for _, _, src in chunk])
        frames = model.generate(np.stack([face_images[s] for s, _, _ in chunk]), y, batch_size=batch_size * k)
        for (subject, label, src), seq, yc in zip(chunk, frames, y):
            span = max(src.offset - src.onset, 1)
            out.append(Clip(
                dataset=f"auicgan-{dataset}", subject=subject, clip_id=f"{label}-{len(out):05d}",
                frames=ArrayFrames(seq), fps=float(src.fps) * (k - 1) / span if k > 1 else float(src.fps),
                onset=0, apex=int(np.argmax(yc.sum(1))), offset=k - 1, label=label,
                label3=au.to_megc3(dataset, label, where=f"synthetic clip from {src.key}"),
                aus=facs(yc, threshold), readout=yc,
                meta={"source_clip": src.key, "face_clip": faces_by_subject[subject].key, "source_aus": src.aus,
                      "fold": str(fold)}))
    leaked = [c.key for c in out if c.meta["source_clip"] not in keys or c.meta["face_clip"] not in keys]
    if leaked:
        raise RuntimeError(f"fold {fold}: synthetic clips made from clips outside the training set: {leaked[:5]}")
    source = train_clips.source if isinstance(train_clips, ClipSet) else "sim"
    return ClipSet(f"auicgan-{dataset} fold {fold}", out, [], source)


# ---------------------------------------------------------------------------------------------
# Table 1 and Fig. 3


def table1(real: ClipSet, synthetic: ClipSet) -> pd.DataFrame:
    """Real vs synthetic sequences per class in the layout of the paper's Table 1: one row per
    set, the classes in the paper's order (<NA> where the dataset has no such class), then the
    total."""
    datasets = {c.dataset for c in real}
    own = set(au.DATASET_CLASSES.get(next(iter(datasets)), ())) if len(datasets) == 1 else set()
    present = own | {c.label for c in real} | {c.label for c in synthetic}
    columns = [c for c in TABLE1_CLASSES if c in present] + sorted(present - set(TABLE1_CLASSES))
    rows = []
    for name, clips in ((real.name, real), (synthetic.name, synthetic)):
        n = Counter(c.label for c in clips)
        rows.append({"dataset": name, **{c: n.get(c, 0) for c in columns}, "total": len(clips)})
    table = pd.DataFrame(rows, columns=["dataset", *TABLE1_CLASSES, *sorted(present - set(TABLE1_CLASSES)), "total"])
    return table.astype({c: "Int64" for c in table.columns if c != "dataset"})


def figure3(synthetic: ClipSet, n_per_class: int = 1, *, top: int = 3):
    """Fig. 3: synthetic sequences (rows, `n_per_class` per class) with the readout curves of their
    `top` dominant AUs (largest peak in Y_c) beside them."""
    import matplotlib.pyplot as plt

    order = [c for c in TABLE1_CLASSES] + sorted({c.label for c in synthetic} - set(TABLE1_CLASSES))
    shown = [c for label in order for c in [c for c in synthetic if c.label == label][:n_per_class]]
    if not shown:
        raise ValueError(f"{synthetic.name}: no synthetic clips to show")
    k = max(c.n_frames for c in shown)
    fig = plt.figure(figsize=(0.62 * k + 2.4, 0.7 * len(shown) + 0.3))
    grid = fig.add_gridspec(len(shown), k + 4, wspace=0.05, hspace=0.15)
    for r, clip in enumerate(shown):
        for t in range(clip.n_frames):
            ax = fig.add_subplot(grid[r, t])
            ax.imshow(clip.frame(t))
            ax.set_xticks([])
            ax.set_yticks([])
            if t == 0:
                ax.set_ylabel(clip.label, fontsize=7)
        curves = fig.add_subplot(grid[r, k + 1:])
        y = np.asarray(clip.readout)
        for i in np.argsort(-y.max(0))[:top]:
            curves.plot(np.arange(len(y)), y[:, i], lw=1, label=au.LABELS[i])
        curves.set_ylim(0, max(0.05, float(y.max()) * 1.1))
        curves.tick_params(labelsize=6)
        curves.legend(fontsize=5, loc="upper right", frameon=False)
        if r < len(shown) - 1:
            curves.set_xticklabels([])
        else:
            curves.set_xlabel("frame", fontsize=7)
    fig.suptitle(f"{synthetic.name}: synthetic sequences and their dominant AUs (readout Y_c)", fontsize=8)
    return fig
