"""EIDNet (Wang et al., "Learning from Macro-expression", seed 004): the expression-identity
disentangle network, its two training phases, and the Tables 1-2 / Fig. 4 experiment.

Used by notebook 11. Phase I trains an EIDNet on pairs (neutral frame I_N, expression frame I_E)
of one clip: MicroNet on the micro-expression set, MacroNet on CK+ (Eqs. 1-4). Phase II
fine-tunes MicroNet against the frozen MacroNet with triplets, an embedding discriminator and
the LIR loss (Eqs. 5-10). Every (task, phase, fold) is a cached unit of `experiments.run` whose
record has the layout `experiments.cross_validate` writes, so `experiments.table`, `scores` and
`claims.compare` read it; it also stores the expression embeddings of the fold's test clips
(Fig. 4 is drawn from them).

What the paper leaves open, and our choices (the notebook states them):
- The encoder is mielib's ResNet-18 (`models.ResNet18`, torchvision names) up to its pooled
  512-d feature, shared; each branch is FC-BN-ReLU-FC to a 128-d embedding (`EMBEDDING`); the
  classifier FC 64 -> classes; the decoder maps [f_E^e, f_N^i] to a 4x4 map and doubles it with
  upsampling + conv + ReLU + BatchNorm (Fig. 3) up to the frame size; the discriminator, on
  embedding vectors, is fully connected (Fig. 3's convolves feature maps).
- ||.||_2 in Eqs. 1, 2 and 5 is the Euclidean norm per sample (not squared), averaged over the
  batch; the triplet margin m is `MARGIN`; Eq. 6's D(1 - f) is read as 1 - D(f).
- LIR (Eq. 9): L_cls is MicroNet's classifier on the macro positive's embedding (the one
  classifier Phase II trains), per triplet, max(L_cls(positive) - L_cls2(anchor), 0).
- Anchors whose class has no CK+ counterpart (CASME II's repression and others) keep the
  classification loss only (no positive, so no triplet, adversarial or LIR term).
- Cosine annealing with T_max = half of the run (the paper: 15 of 30 epochs), stepped per batch.
- A clip's prediction is the mean of its five frames' class probabilities; its embedding the
  mean of their expression embeddings.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import math
import time
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mielib import experiments, metrics, models, paper, protocols, runtime, store, train
from mielib.clip import ClipSet, Skipped

#: CASME II's five classes in Table 1 (fear and sadness dropped, paper §5.1).
CASME2_CLASSES: tuple[str, ...] = ("happiness", "disgust", "repression", "surprise", "others")
#: Frames per clip: five centred on the apex, each paired with the onset (paper §5.1).
FRAMES = 5
#: Width of the expression and identity embeddings (the paper gives none).
EMBEDDING = 128
#: Triplet margin m of Eq. 5 (the paper gives none).
MARGIN = 1.0
#: Clips whose full-size frames `load_frames` holds at once (and flows it caches per file).
_CHUNK = 32
#: Cosine annealing: T_max as a share of the run (paper: T_max = 15 of 30 epochs).
T_MAX_FRACTION = 15 / 30
PHASES = ("I", "II")
PHASE_NAMES = {"I": "Phase I", "II": "Phase I + II"}


# ---------------------------------------------------------------------------------------------
# Frames: five centred on the apex, each paired with the onset

def positions(onset: int, apex: int, offset: int, n: int = FRAMES) -> list[int]:
    """The `n` frame positions centred on the apex, inside [onset, offset]. When there are not
    enough frames after the apex, more are taken before it (paper §5.1), and vice versa; a clip
    shorter than `n` frames repeats its last one."""
    onset, apex, offset = int(onset), int(apex), int(offset)
    if not onset <= apex <= offset:
        raise ValueError(f"onset {onset}, apex {apex} and offset {offset} are not in order")
    start = apex - (n - 1) // 2
    start = min(start, offset - n + 1)  # too few after the apex: take more before
    start = max(start, onset)
    return [min(start + k, offset) for k in range(n)]


class PairFrames(paper.KeyFrames):
    """A clip's onset and its `FRAMES` frames around the apex, in memory at the training size;
    with flow, `flows` holds the onset -> frame optical flows (F x 3 x size x size) and `flow`
    the onset -> apex one (what `paper.linear_reference` reads)."""

    def __init__(self, n: int, frames: Mapping[int, np.ndarray], key: str, expression: Sequence[int],
                 flows: np.ndarray | None = None, apex: int | None = None):
        self.expression = [int(p) for p in expression]
        self.flows = flows
        at = self.expression.index(int(apex)) if apex is not None and int(apex) in self.expression else len(self.expression) // 2
        super().__init__(n, frames, key, None if flows is None else flows[at])


def load_frames(clipsets: Mapping[str, ClipSet], size: int, *, input: str = "frames", n: int = FRAMES,
                progress: bool = False) -> dict[str, ClipSet]:
    """The clip sets with each clip's onset and its `n` frames around the apex read once and
    resized to `size` (`PairFrames`); with `input="flow"` also the onset -> frame optical flows,
    computed at the frames' own resolution (load the clips larger, e.g. 128 px) and cached.

    A clip in several sets (CASME II and the composite share clips) is read once, by key. Clips
    are read `_CHUNK` at a time, so only that many clips' full-size frames are held at once.
    """
    from tqdm.auto import tqdm

    from mielib import flow as flow_

    models.view_for("apexme", input)  # checks `input`
    unique: dict[str, object] = {}
    for clips in clipsets.values():
        for c in clips:
            unique.setdefault(c.key, c)
    keys = list(unique)
    loaded = {}
    for start in tqdm(range(0, len(keys), _CHUNK), desc="EIDNet frames", disable=not progress, leave=False):
        chunk = keys[start:start + _CHUNK]
        full, small, where = {}, {}, {}
        for key in chunk:
            c = unique[key]
            where[key] = positions(c.onset, c.apex, c.offset, n)
            try:
                full[key] = {p: np.asarray(c.frames[p]) for p in sorted({int(c.onset), *where[key]})}
                small[key] = {p: paper._resize(f, size) for p, f in full[key].items()}
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        flows = {}
        if input == "flow":
            pairs = [(full[k][int(unique[k].onset)], full[k][p]) for k in chunk for p in where[k]]
            out = flow_.for_pairs(pairs, size, name="EIDNet pairs")
            flows = {k: out[i * n:(i + 1) * n] for i, k in enumerate(chunk)}
        for k in chunk:
            c = unique[k]
            loaded[k] = replace(c, frames=PairFrames(c.n_frames, small[k], k, where[k], flows.get(k), c.apex))
    return {name: replace(clips, clips=[loaded[c.key] for c in clips], skipped=list(clips.skipped))
            for name, clips in clipsets.items()}


def in_classes(clips: ClipSet, classes: Sequence[str], attr: str = "label", name: str | None = None) -> ClipSet:
    """The clips whose `attr` ("label" or "label3") is in `classes`; the others join `skipped`."""
    kept = clips.where(lambda c: getattr(c, attr) in classes, name=name)
    kept.skipped += [Skipped(c.dataset, c.key, f"{attr} {getattr(c, attr)!r} is not in the label space "
                                               f"({', '.join(classes)})") for c in clips if getattr(c, attr) not in classes]
    return kept


@dataclass
class Pairs:
    """One set's training tensors: per clip the neutral frame I_N (C x S x S, uint8) and the
    `FRAMES` expression inputs I_E (F x C x S x S: uint8 frames, or float16 flows), its class
    index in `classes`, its key ("dataset/subject/clip") and subject key."""

    neutral: np.ndarray
    expression: np.ndarray
    labels: np.ndarray
    keys: list
    subjects: np.ndarray
    classes: tuple
    input: str

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_clips(cls, clips, classes: Sequence[str], attr: str = "label", input: str = "frames") -> "Pairs":
        """Tensors of clips loaded by `load_frames` (with the same `input`)."""
        classes = tuple(classes)
        clips = list(clips)
        if not clips:
            raise ValueError("no clips")
        neutral, expression, labels = [], [], []
        for c in clips:
            fr = c.frames
            if not isinstance(fr, PairFrames):
                raise TypeError(f"{c.key}: load the clips with eidnet.load_frames first")
            value = getattr(c, attr)
            if value not in classes:
                raise ValueError(f"{c.key}: {attr} {value!r} is not in the label space ({', '.join(classes)}); "
                                 "filter with eidnet.in_classes")
            neutral.append(np.asarray(fr[c.onset]).transpose(2, 0, 1))
            if input == "flow":
                if fr.flows is None:
                    raise ValueError(f"{c.key}: loaded without flows; use load_frames(..., input='flow')")
                expression.append(np.asarray(fr.flows, np.float16))
            else:
                expression.append(np.stack([np.asarray(fr[p]).transpose(2, 0, 1) for p in fr.expression]))
            labels.append(classes.index(value))
        df = pd.DataFrame([{"dataset": c.dataset, "subject": c.subject} for c in clips])
        return cls(np.ascontiguousarray(np.stack(neutral)), np.ascontiguousarray(np.stack(expression)),
                   np.asarray(labels, np.int64), [c.key for c in clips], protocols.subject_keys(df), classes, input)

    def inputs(self, clip_idx, frame_idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(I_N, I_E) float tensors of the given (clip, frame) samples: frames in [0, 1], flows as they are."""
        i, j = np.asarray(clip_idx, np.int64), np.asarray(frame_idx, np.int64)
        return _float(self.neutral[i]), _float(self.expression[i, j])


def _float(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


# ---------------------------------------------------------------------------------------------
# The networks

def _branch(in_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


class Decoder(nn.Module):
    """[f_E^e, f_N^i] -> I_E: a linear map to a small feature map, then blocks of x2 upsampling,
    3x3 conv, ReLU and BatchNorm (Fig. 3) up to `size`, and a 3x3 conv to `channels`."""

    def __init__(self, in_dim: int, channels: int, size: int, width: int = 128):
        super().__init__()
        self.size = int(size)
        ups = max(1, int(math.floor(math.log2(max(size, 8) / 4))))
        self.start = int(math.ceil(size / 2 ** ups))
        self.width = width
        self.fc = nn.Linear(in_dim, width * self.start * self.start)
        blocks, c = [], width
        for _ in range(ups):
            out = max(16, c // 2)
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, out, 3, padding=1),
                       nn.ReLU(inplace=True), nn.BatchNorm2d(out)]
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, self.width, self.start, self.start)
        x = self.out(self.blocks(x))
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x


class EIDNet(nn.Module):
    """The expression-identity disentangle network (paper §4.1, Fig. 3).

    A shared ResNet-18 backbone (mielib's, torchvision names, so `models.load_imagenet` fills
    it) feeds an expression branch and an identity branch (same structure, own weights); the
    classifier reads the expression embedding; the decoder rebuilds I_E from [f_E^e, f_N^i].
    `forward(expression_input)` gives class logits: a clip is recognised from I_E alone.
    """

    def __init__(self, n_classes: int, size: int, channels: int = 3, embedding: int = EMBEDDING,
                 hidden: tuple[int, ...] = (64,), dropout: float = 0.5):
        super().__init__()
        self.n_classes = int(n_classes)
        self.backbone = models.ResNet18(None, in_channels=channels)
        self.expression = _branch(models.ResNet18.feature_dim, embedding)
        self.identity = _branch(models.ResNet18.feature_dim, embedding)
        self.classifier = models._head(embedding, tuple(hidden), self.n_classes, dropout)
        self.decoder = Decoder(2 * embedding, channels, size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(expression embedding, identity embedding) of a batch of images."""
        h = self.backbone(x)
        return self.expression(h), self.identity(h)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The expression embedding f^e alone."""
        return self.expression(self.backbone(x))

    def reconstruct(self, expression: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """decoder([f_E^e, f_N^i]) (Eq. 2)."""
        return self.decoder(torch.cat([expression, identity], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class Discriminator(nn.Module):
    """Tells macro (real) from micro (fake) expression embeddings: one logit per embedding."""

    def __init__(self, embedding: int = EMBEDDING, hidden: tuple[int, ...] = (128, 64)):
        super().__init__()
        layers, d = [], embedding
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2, inplace=True)]
            d = h
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(1)


def build(n_classes: int, size: int, *, seed: int, channels: int = 3) -> EIDNet:
    """A fresh EIDNet whose initial weights come from `seed` (caller's RNG untouched)."""
    with models._seeded(seed):
        return EIDNet(n_classes, size, channels)


# ---------------------------------------------------------------------------------------------
# Losses (Eqs. 1-10), each on a batch

def similarity_loss(expression_identity: torch.Tensor, neutral_identity: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ||f_E^i - f_N^i||_2, the Euclidean norm per pair, averaged over the batch."""
    return (expression_identity - neutral_identity).flatten(1).norm(dim=1).mean()


def reconstruction_loss(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ||I_E - decoder([f_E^e, f_N^i])||_2 per sample (all pixels and channels), averaged."""
    return (target - output).flatten(1).norm(dim=1).mean()


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = MARGIN) -> torch.Tensor:
    """Eq. 5: max(||a - p||_2 - ||a - n||_2 + m, 0), averaged over the triplets."""
    d_pos = (anchor - positive).norm(dim=1)
    d_neg = (anchor - negative).norm(dim=1)
    return (d_pos - d_neg + margin).clamp(min=0).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's side of Eq. 6: -log D(f_pos) - log(1 - D(f_anc)), batch means (D = sigmoid)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7, the non-saturating generator loss: -log D(f_anc), averaged (MicroNet's side)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def lir_loss(macro_ce: torch.Tensor, micro_ce: torch.Tensor) -> torch.Tensor:
    """Eq. 9, loss inequality regularisation: max(L_cls(positive) - L_cls2(anchor), 0) per
    triplet (per-sample cross-entropies), averaged."""
    return (macro_ce - micro_ce).clamp(min=0).mean()


# ---------------------------------------------------------------------------------------------
# Settings

@dataclass(frozen=True)
class Settings:
    """Everything that shapes training (paper §5.1 defaults); epochs come from the preset.

    `lr_scale_2` multiplies Phase II's three learning rates (1 = the paper's); a preset that runs
    far fewer Phase II epochs than the paper's 30 can raise it so Phase II moves the weights at all.
    """

    epochs_1: int
    epochs_2: int
    batch_size: int = 32
    lr_encoder: float = 1e-4
    lr_classifier: float = 1e-4
    lr_decoder: float = 1e-5
    lambda_rec: float = 0.1
    lambda_sim: float = 0.1
    lr_generator: float = 5e-6
    lr_discriminator: float = 1e-5
    lr_classifier_2: float = 5e-6
    lr_scale_2: float = 1.0
    lambda_tri: float = 1e-3
    lambda_adv: float = 1e-3
    lambda_lir: float = 1e-3
    margin: float = MARGIN
    t_max_fraction: float = T_MAX_FRACTION
    frames: int = FRAMES
    embedding: int = EMBEDDING

    @classmethod
    def from_preset(cls, p: Mapping, **overrides) -> "Settings":
        return cls(epochs_1=int(p["eidnet_epochs_1"]), epochs_2=int(p["eidnet_epochs_2"]),
                   batch_size=int(p["batch_size"]), lr_scale_2=float(p["eidnet_lr_scale_2"]), **overrides)

    def phase1(self) -> dict:
        keys = ("epochs_1", "batch_size", "lr_encoder", "lr_classifier", "lr_decoder", "lambda_rec", "lambda_sim",
                "t_max_fraction", "frames", "embedding")
        return {k: getattr(self, k) for k in keys}

    def phase2(self) -> dict:
        keys = ("epochs_2", "lr_generator", "lr_discriminator", "lr_classifier_2", "lr_scale_2", "lambda_tri",
                "lambda_adv", "lambda_lir", "margin")
        return {k: getattr(self, k) for k in keys}


def _cosine(optimizer: torch.optim.Optimizer, total_steps: int, fraction: float):
    """Per-batch cosine annealing, T_max = fraction x total steps (after T_max the rate rises again,
    as PyTorch's CosineAnnealingLR does and as the paper's T_max = 15 of 30 epochs implies)."""
    t_max = max(1.0, fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / t_max)))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a last batch of one sample is dropped (BatchNorm needs two)."""
    order = torch.randperm(n, generator=generator)
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out.pop()
    return out


def _samples(clips: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (clip, frame) sample of the given clips: two aligned index arrays."""
    clips = np.asarray(clips, np.int64)
    return np.repeat(clips, frames), np.tile(np.arange(frames), len(clips))


# ---------------------------------------------------------------------------------------------
# Prediction: a clip from its five frames

@torch.inference_mode()
def predict(net: EIDNet, data: Pairs, clips, *, device: str | torch.device = "cpu",
            batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, expression embeddings) of `clips` (indices into `data`): the means
    over each clip's frames, in evaluation mode."""
    dev = torch.device(device)
    amp = dev.type == "cuda"
    net.eval()
    clips = np.asarray(clips, np.int64)
    n_frames = data.expression.shape[1]
    ci, fi = _samples(clips, n_frames)
    probs, embs = [], []
    for s in range(0, len(ci), batch_size):
        _, x = data.inputs(ci[s:s + batch_size], fi[s:s + batch_size])
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            f = net.embed(x.to(dev))
            logits = net.classifier(f)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        embs.append(f.float().cpu())
    p = torch.cat(probs).view(len(clips), n_frames, -1).mean(1).numpy()
    e = torch.cat(embs).view(len(clips), n_frames, -1).mean(1).numpy()
    return p, e


@dataclass
class PhaseHistory:
    """What one phase records: per-epoch loss terms and test predictions, final probabilities and embeddings."""

    losses: dict = field(default_factory=dict)  # term -> per-epoch means
    test_pred: list = field(default_factory=list)
    test_probs: np.ndarray | None = None
    test_embeddings: np.ndarray | None = None
    seconds: float = 0.0
    n_train: int = 0

    def log(self, sums: Mapping[str, float], n: int) -> None:
        for k, v in sums.items():
            self.losses.setdefault(k, []).append(float(v) / max(n, 1))

    def evaluate(self, net, data, test, device, last: bool) -> None:
        if test is None or not len(test):
            return
        probs, emb = predict(net, data, test, device=device)
        self.test_pred.append(probs.argmax(1).astype(np.int64))
        if last:
            self.test_probs, self.test_embeddings = probs, emb


def _device(device) -> torch.device:
    return runtime.device(device) if isinstance(device, str) else torch.device(device)


def _start(data: Pairs, train_clips, device, desc: str):
    """(device, amp, the training samples' clip and frame indices, an empty history) of a phase."""
    dev = _device(device)
    ci, fi = _samples(train_clips, data.expression.shape[1])
    if len(ci) < 2:
        raise ValueError(f"{desc}: needs at least two training samples, got {len(ci)}")
    return dev, dev.type == "cuda", ci, fi, PhaseHistory(n_train=len(np.unique(np.asarray(train_clips))))


# ---------------------------------------------------------------------------------------------
# Phase I (Eqs. 1-4): MicroNet or MacroNet on pairs (I_N, I_E)

def phase1(net: EIDNet, data: Pairs, train_clips, settings: Settings, *, seed: int, test_clips=None,
           device: str = "auto", progress: bool = False, desc: str = "phase I") -> PhaseHistory:
    """Train `net` in place on every (I_N, I_E) pair of `train_clips` (each clip's onset with
    each of its frames): L = CE(classifier(f_E^e), y) + λ_rec L_rec + λ_sim L_sim, Adam with
    the encoder, classifier and decoder at their own learning rates, cosine annealing. After
    every epoch `test_clips` are predicted (no training on them)."""
    from tqdm.auto import tqdm

    dev, amp, ci, fi, hist = _start(data, train_clips, device, desc)
    s = settings
    started = time.perf_counter()
    with train.seeded(seed, dev):
        gen = torch.Generator().manual_seed(train.derive_seed(seed, "shuffle"))
        net.to(dev)
        groups = [{"params": [*net.backbone.parameters(), *net.expression.parameters(), *net.identity.parameters()],
                   "lr": s.lr_encoder},
                  {"params": list(net.classifier.parameters()), "lr": s.lr_classifier},
                  {"params": list(net.decoder.parameters()), "lr": s.lr_decoder}]
        opt = torch.optim.Adam(groups)
        steps = len(_batches(len(ci), s.batch_size, torch.Generator().manual_seed(0)))
        sched = _cosine(opt, steps * s.epochs_1, s.t_max_fraction)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        labels = torch.from_numpy(data.labels)
        bar = tqdm(total=steps * s.epochs_1, desc=desc, unit="batch", disable=not progress, leave=False)
        try:
            for epoch in range(s.epochs_1):
                net.train()
                sums, seen = {"total": 0.0, "cls": 0.0, "rec": 0.0, "sim": 0.0}, 0
                for b in _batches(len(ci), s.batch_size, gen):
                    bi, bf = ci[b.numpy()], fi[b.numpy()]
                    x_n, x_e = (t.to(dev) for t in data.inputs(bi, bf))
                    y = labels[bi].to(dev)
                    with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                        f_e, f_i = net.encode(torch.cat([x_n, x_e]))
                        n = len(bi)
                        fe_expr, fn_id, fe_id = f_e[n:], f_i[:n], f_i[n:]
                        logits = net.classifier(fe_expr)
                        recon = net.reconstruct(fe_expr, fn_id)
                    terms = {"cls": F.cross_entropy(logits.float(), y),
                             "rec": reconstruction_loss(x_e, recon.float()),
                             "sim": similarity_loss(fe_id.float(), fn_id.float())}
                    loss = terms["cls"] + s.lambda_rec * terms["rec"] + s.lambda_sim * terms["sim"]
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    sums["total"] += float(loss.detach()) * n
                    for k, v in terms.items():
                        sums[k] += float(v.detach()) * n
                    seen += n
                    bar.update(1)
                if not math.isfinite(sums["total"]):
                    raise FloatingPointError(f"{desc}: the loss became {sums['total']} at epoch {epoch + 1}")
                hist.log(sums, seen)
                hist.evaluate(net, data, test_clips, dev, epoch == s.epochs_1 - 1)
        finally:
            bar.close()
    hist.seconds = time.perf_counter() - started
    return hist


# ---------------------------------------------------------------------------------------------
# Phase II (Eqs. 5-10): MicroNet against the frozen MacroNet

def freeze(net: nn.Module) -> nn.Module:
    """Evaluation mode (BatchNorm statistics fixed) and no gradients: MacroNet in Phase II."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class _Triplets:
    """Draws each anchor's positive (a macro sample of its class) and negative (a micro training
    sample of another class) from a seeded generator."""

    def __init__(self, micro: Pairs, train_clips, macro: Pairs, generator: torch.Generator):
        self.gen = generator
        f_micro, f_macro = micro.expression.shape[1], macro.expression.shape[1]
        ci, fi = _samples(train_clips, f_micro)
        y = micro.labels[ci]
        mi, mf = _samples(np.arange(len(macro)), f_macro)
        # The macro set's class indices live in the micro label space (MacroNet shares it).
        my = macro.labels[mi]
        self.pos = {c: np.stack([mi[my == c], mf[my == c]], 1) for c in range(len(micro.classes))}
        self.neg = {c: np.stack([ci[y != c], fi[y != c]], 1) for c in range(len(micro.classes))}

    def _draw(self, pool: np.ndarray) -> tuple[int, int] | None:
        if not len(pool):
            return None
        k = int(torch.randint(len(pool), (1,), generator=self.gen))
        return int(pool[k, 0]), int(pool[k, 1])

    def __call__(self, labels: np.ndarray):
        """(positive (clip, frame) pairs, negative pairs, has_positive mask) for anchors of `labels`."""
        pos, neg, ok = [], [], []
        for c in labels.tolist():
            p, q = self._draw(self.pos[c]), self._draw(self.neg[c])
            ok.append(p is not None and q is not None)
            pos.append(p or (0, 0))
            neg.append(q or (0, 0))
        return np.asarray(pos, np.int64), np.asarray(neg, np.int64), np.asarray(ok, bool)


def phase2(micro_net: EIDNet, macro_net: EIDNet, discriminator: Discriminator, data: Pairs, train_clips,
           macro: Pairs, settings: Settings, *, seed: int, test_clips=None, device: str = "auto",
           progress: bool = False, desc: str = "phase II") -> PhaseHistory:
    """Fine-tune `micro_net` in place (Eq. 10): L = L_cls2 + λ_tri L_tri + λ_adv L_adv + λ_LIR L_LIR,
    with `discriminator` trained alongside (macro embeddings real, micro fake) and `macro_net`
    frozen (`freeze`: its weights and BatchNorm statistics do not change). Anchors are every
    (clip, frame) sample of `train_clips`; each draws a CK+ positive of its class and a micro
    negative of another class from the training clips only."""
    from tqdm.auto import tqdm

    if tuple(macro.classes) != tuple(data.classes):
        raise ValueError(f"{desc}: the macro set's label space {macro.classes} differs from the micro one {data.classes}")
    dev, amp, ci, fi, hist = _start(data, train_clips, device, desc)
    s = settings
    started = time.perf_counter()
    with train.seeded(seed, dev):
        gen = torch.Generator().manual_seed(train.derive_seed(seed, "shuffle"))
        triplets = _Triplets(data, train_clips, macro, torch.Generator().manual_seed(train.derive_seed(seed, "triplets")))
        micro_net.to(dev)
        freeze(macro_net.to(dev))
        discriminator.to(dev)
        k = s.lr_scale_2
        opt_g = torch.optim.Adam([
            {"params": [*micro_net.backbone.parameters(), *micro_net.expression.parameters()], "lr": k * s.lr_generator},
            {"params": list(micro_net.classifier.parameters()), "lr": k * s.lr_classifier_2}])
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=k * s.lr_discriminator)
        steps = len(_batches(len(ci), s.batch_size, torch.Generator().manual_seed(0)))
        scheds = [_cosine(o, steps * s.epochs_2, s.t_max_fraction) for o in (opt_g, opt_d)]
        scaler_g = torch.amp.GradScaler("cuda", enabled=amp)
        scaler_d = torch.amp.GradScaler("cuda", enabled=amp)
        labels = torch.from_numpy(data.labels)
        macro_labels = torch.from_numpy(macro.labels)
        bar = tqdm(total=steps * s.epochs_2, desc=desc, unit="batch", disable=not progress, leave=False)
        try:
            for epoch in range(s.epochs_2):
                micro_net.train()
                discriminator.train()
                sums = dict.fromkeys(("total", "cls", "tri", "adv", "lir", "disc"), 0.0)
                seen = triplet_seen = 0
                for b in _batches(len(ci), s.batch_size, gen):
                    bi, bf = ci[b.numpy()], fi[b.numpy()]
                    y_np = data.labels[bi]
                    pos, neg, ok = triplets(y_np)
                    _, x_anc = data.inputs(bi, bf)
                    _, x_neg = data.inputs(neg[:, 0], neg[:, 1])
                    _, x_pos = macro.inputs(pos[:, 0], pos[:, 1])
                    x_anc, x_neg, x_pos = x_anc.to(dev), x_neg.to(dev), x_pos.to(dev)
                    y, mask = labels[bi].to(dev), torch.from_numpy(ok).to(dev)
                    y_pos = macro_labels[pos[:, 0]].to(dev)
                    n = len(bi)
                    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                        f_pos = macro_net.embed(x_pos).float()
                    with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                        f = micro_net.embed(torch.cat([x_anc, x_neg])).float()
                    f_anc, f_neg = f[:n], f[n:]
                    m = int(mask.sum())
                    # The discriminator's step: macro embeddings real, micro anchors fake.
                    d_loss = torch.zeros((), device=dev)
                    if m:
                        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                            real, fake = discriminator(f_pos[mask]), discriminator(f_anc[mask].detach())
                        d_loss = discriminator_loss(real.float(), fake.float())
                        opt_d.zero_grad(set_to_none=True)
                        scaler_d.scale(d_loss).backward()
                        scaler_d.step(opt_d)
                        scaler_d.update()
                    # MicroNet's step (the generator), with the discriminator held fixed.
                    with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                        logits_anc = micro_net.classifier(f_anc)
                        logits_pos = micro_net.classifier(f_pos)
                    ce_anc = F.cross_entropy(logits_anc.float(), y, reduction="none")
                    terms = {"cls": ce_anc.mean()}
                    if m:
                        discriminator.requires_grad_(False)
                        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                            fake_g = discriminator(f_anc[mask])
                        discriminator.requires_grad_(True)
                        ce_pos = F.cross_entropy(logits_pos.float(), y_pos, reduction="none")
                        terms["tri"] = triplet_loss(f_anc[mask], f_pos[mask], f_neg[mask], s.margin)
                        terms["adv"] = adversarial_loss(fake_g.float())
                        terms["lir"] = lir_loss(ce_pos[mask], ce_anc[mask])
                        loss = (terms["cls"] + s.lambda_tri * terms["tri"] + s.lambda_adv * terms["adv"]
                                + s.lambda_lir * terms["lir"])
                    else:
                        loss = terms["cls"]
                    opt_g.zero_grad(set_to_none=True)
                    scaler_g.scale(loss).backward()
                    scaler_g.step(opt_g)
                    scaler_g.update()
                    for sch in scheds:
                        sch.step()
                    sums["total"] += float(loss.detach()) * n
                    sums["cls"] += float(terms["cls"].detach()) * n
                    for key in ("tri", "adv", "lir"):
                        if key in terms:
                            sums[key] += float(terms[key].detach()) * m
                    sums["disc"] += float(d_loss.detach()) * m
                    seen += n
                    triplet_seen += m
                    bar.update(1)
                if not math.isfinite(sums["total"]):
                    raise FloatingPointError(f"{desc}: the loss became {sums['total']} at epoch {epoch + 1}")
                hist.log({"total": sums["total"], "cls": sums["cls"]}, seen)
                hist.log({k: sums[k] for k in ("tri", "adv", "lir", "disc")}, triplet_seen)
                hist.losses.setdefault("triplets", []).append(triplet_seen)
                hist.evaluate(micro_net, data, test_clips, dev, epoch == s.epochs_2 - 1)
        finally:
            bar.close()
    hist.seconds = time.perf_counter() - started
    return hist


# ---------------------------------------------------------------------------------------------
# Experiments: cached units (MacroNet; Phase I and Phase II per fold)

@dataclass
class Task:
    """One micro-expression task: its clips as training tensors, label space and folds, and the
    macro (CK+) set in the same label space. `name` names the experiment (`eidnet_<name>`)."""

    name: str
    micro: Pairs
    folds: list
    macro: Pairs
    config: dict  # JSON-able description of the data (fingerprints, sizes, input)
    macro_config: dict
    source: ClipSet | None = None  # the clips with all their frames (LBP-TOP reads ten, onset to offset)
    loaded: ClipSet | None = None  # the clips from load_frames (the logistic regression reads their flow)


def _state(net: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return buf.getvalue()


def _weights_path(unit: experiments.Unit):
    return runtime.folder("results") / experiments.PRETRAINED / f"eidnet-{unit.name}-{unit.key}.pt"


def _round(a: np.ndarray, digits: int = 5) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


def check_training(train_keys: Sequence[str], test_subjects: Sequence[str], where: str) -> None:
    """Raise if any clip of a test subject is among `train_keys` ("dataset/subject/clip")."""
    wanted = {protocols._parse_subject_key(s) for s in test_subjects}
    leaked = [k for k in train_keys if protocols.subject_key(*str(k).split("/")[:2]) in wanted]
    if leaked:
        raise RuntimeError(f"{where}: clips of test subjects would reach training: {leaked[:5]}")


@dataclass
class Work:
    """The picklable `work` of `run`: computes a MacroNet, Phase I, Phase II or reference-levels
    unit of any of `tasks` (by name); MacroNet and Phase I store their weights for Phase II."""

    tasks: dict
    settings: Settings
    device: str = "auto"
    progress: bool = False

    # -- weights: stored beside the records, recomputed through their unit when missing
    def _load(self, unit: experiments.Unit, net: nn.Module) -> nn.Module:
        path = _weights_path(unit)
        if not path.is_file():
            # A record without its weights (they were removed): compute the unit again.
            if unit.path.is_file():
                experiments.invalidate(unit.name, key=unit.key)
            experiments.run([unit], self, progress=False)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net

    def _macro(self, task: Task, unit: experiments.Unit) -> tuple[EIDNet, experiments.Unit]:
        uc = dict(unit.config)
        macro_unit = macro_unit_of(task, uc["preset"], uc["data_source"], uc["seed"], self.settings, unit.repeat)
        net = build(len(task.micro.classes), task.micro.neutral.shape[-1], seed=0,
                    channels=task.micro.expression.shape[2])
        return self._load(macro_unit, net), macro_unit

    def _task(self, config: Mapping) -> Task:
        if config["phase"] != "macro":
            return self.tasks[config["task"]]
        for t in self.tasks.values():  # any task with this label space and macro set
            if list(t.micro.classes) == list(config["classes"]) and dict(t.macro_config) == dict(config["macro"]):
                return t
        raise KeyError(f"no task has the label space {config['classes']} and macro set {config['macro']}")

    def __call__(self, unit: experiments.Unit) -> dict:
        c = unit.config
        task = self._task(c)
        size, channels = task.micro.neutral.shape[-1], task.micro.expression.shape[2]
        n_classes = len(task.micro.classes)
        base = int(c["seed"])
        if c["phase"] == "references":
            if task.source is None or task.loaded is None:
                raise ValueError(f"task {task.name}: the reference levels need its clips (Task.source and Task.loaded)")
            preds = references(task.source, task.loaded, task.micro.labels, task.folds, input=task.micro.input,
                               size=int(c["lbptop"]["size"]), seed=base)
            return {"classes": list(task.micro.classes), "ids": list(task.micro.keys),
                    "y_true": task.micro.labels.tolist(), "predictions": {k: v.tolist() for k, v in preds.items()}}
        if c["phase"] == "macro":
            seed = train.derive_seed(base, unit.repeat, "macro")
            net = build(n_classes, size, seed=train.derive_seed(seed, "init"), channels=channels)
            everything = np.arange(len(task.macro))
            hist = phase1(net, task.macro, everything, self.settings, seed=seed, device=self.device,
                          progress=self.progress, desc=f"MacroNet ({', '.join(c['classes'])})")
            store.write_bytes(_weights_path(unit), _state(net))
            _, emb = predict(net, task.macro, everything, device=_device(self.device))
            return {"classes": list(task.micro.classes), "epochs": self.settings.epochs_1, "n_train": len(task.macro),
                    "history": {"train_loss": _round(hist.losses["total"], 6)}, "losses": _rounded(hist.losses),
                    "train_seconds": round(hist.seconds, 3), "device": str(_device(self.device)),
                    "embeddings": {"ids": list(task.macro.keys), "labels": task.macro.labels.tolist(),
                                   "values": _round(emb)}}
        fold = task.folds[unit.fold]
        unit_seed = train.derive_seed(base, unit.repeat, unit.fold)
        train_clips, test_clips = np.asarray(fold.train, np.int64), np.asarray(fold.test, np.int64)
        check_training([task.micro.keys[i] for i in train_clips] + list(task.macro.keys), fold.test_subjects,
                       f"{unit.name} fold {unit.fold}")
        desc = f"{unit.name} fold {unit.fold + 1}/{len(task.folds)} phase {c['phase']}"
        if c["phase"] == "I":
            net = build(n_classes, size, seed=train.derive_seed(unit_seed, "init"), channels=channels)
            hist = phase1(net, task.micro, train_clips, self.settings, seed=train.derive_seed(unit_seed, "phase1"),
                          test_clips=test_clips, device=self.device, progress=self.progress, desc=desc)
            store.write_bytes(_weights_path(unit), _state(net))
            epochs = self.settings.epochs_1
        elif c["phase"] == "II":
            first = experiments.Unit(unit.name, phase1_config(c), fold=unit.fold, repeat=unit.repeat, split=unit.split)
            net = self._load(first, build(n_classes, size, seed=0, channels=channels))
            macro_net, macro_unit = self._macro(task, unit)
            with models._seeded(train.derive_seed(unit_seed, "discriminator")):
                disc = Discriminator(self.settings.embedding)
            hist = phase2(net, macro_net, disc, task.micro, train_clips, task.macro, self.settings,
                          seed=train.derive_seed(unit_seed, "phase2"), test_clips=test_clips, device=self.device,
                          progress=self.progress, desc=desc)
            epochs = self.settings.epochs_2
            origin = {"phase1_key": first.key, "macro_key": macro_unit.key}
        else:
            raise ValueError(f"unknown phase {c['phase']!r}")
        rec = _record(task, fold, test_clips, hist, epochs, self.device, unit_seed)
        if c["phase"] == "II":
            rec["started_from"] = origin  # the Phase I MicroNet and the MacroNet it was fine-tuned against
        return rec


def _rounded(losses: Mapping[str, list]) -> dict:
    return {k: _round(v, 6) for k, v in losses.items()}


def _record(task: Task, fold, test_clips, hist: PhaseHistory, epochs: int, device, unit_seed: int) -> dict:
    """The record layout of experiments.cross_validate, plus the loss terms and test embeddings."""
    y_true = task.micro.labels[test_clips]
    n = len(task.micro.classes)
    rec = {"classes": list(task.micro.classes), "epochs": epochs, "device": str(_device(device)),
           "amp": _device(device).type == "cuda", "train_seconds": round(hist.seconds, 3), "n_train": hist.n_train,
           "history": {"train_loss": _round(hist.losses["total"], 6), "test_pred": [p.tolist() for p in hist.test_pred],
                       "val_pred": None},
           "losses": _rounded(hist.losses),
           "test": {"ids": [task.micro.keys[i] for i in test_clips], "y_true": y_true.tolist(),
                    "y_pred": hist.test_pred[-1].tolist(), "probs": _round(hist.test_probs, 6)},
           "embeddings": {"test": _round(hist.test_embeddings)},
           "val": None, "unit_seed": unit_seed,
           "subjects": {"train": list(fold.train_subjects), "test": list(fold.test_subjects),
                        "val": list(fold.val_subjects)}}
    rec["metrics"] = train.select(y_true, hist.test_pred, n)
    return rec


def _config(task: Task, phase: str, preset: str, data_source: str, seed: int, settings: Settings) -> dict:
    cfg = {"experiment": "EIDNet", "task": task.name, "phase": phase, "classes": list(task.micro.classes),
           "preset": preset, "data_source": data_source, "seed": int(seed), "data": dict(task.config),
           "macro": dict(task.macro_config), "phase1": settings.phase1(),
           "n_folds": len(task.folds), "protocol": getattr(task.folds[0], "protocol", "")}
    if phase == "II":
        cfg["phase2"] = settings.phase2()
    return cfg


def phase1_config(config: Mapping) -> dict:
    """The Phase I unit's configuration behind a Phase II unit's."""
    out = {k: v for k, v in config.items() if k != "phase2"}
    out["phase"] = "I"
    return out


def macro_unit_of(task: Task, preset: str, data_source: str, seed: int, settings: Settings,
                  repeat: int = 0) -> experiments.Unit:
    """MacroNet's unit: one per label space and macro set, so tasks that share both (SMIC and the
    composite: MEGC's three classes, the same CK+ sequences) share one MacroNet."""
    cfg = {"experiment": "EIDNet", "phase": "macro", "classes": list(task.micro.classes), "preset": preset,
           "data_source": data_source, "seed": int(seed), "macro": dict(task.macro_config),
           "phase1": settings.phase1(), "n_folds": 1}
    return experiments.Unit("eidnet_macro", cfg, fold=0, repeat=repeat)


def reference_unit(task: Task, preset: str, data_source: str, seed: int, lbp_size: int) -> experiments.Unit:
    """The unit of a task's reference levels (majority class, logistic regression, LBP-TOP) on its folds."""
    cfg = {"experiment": "EIDNet", "task": task.name, "phase": "references", "classes": list(task.micro.classes),
           "preset": preset, "data_source": data_source, "seed": int(seed), "data": dict(task.config),
           "lbptop": {"frames": LBP_FRAMES, "size": int(lbp_size)}, "n_folds": len(task.folds),
           "protocol": getattr(task.folds[0], "protocol", "")}
    return experiments.Unit("eidnet_references", cfg, split=store.key([f.to_dict() for f in task.folds]))


def units(task: Task, phase: str, *, preset: str, data_source: str, seed: int, settings: Settings,
          repeats: int = 1) -> list[experiments.Unit]:
    """The task's units of one phase ("I" or "II"): one per fold and repeat."""
    cfg = _config(task, phase, preset, data_source, seed, settings)
    return [experiments.Unit(f"eidnet_{task.name}", cfg, fold=i, repeat=r, split=experiments._split_key(f))
            for r in range(repeats) for i, f in enumerate(task.folds)]


def run(tasks: Sequence[Task], *, preset: str, data_source: str, seed: int, settings: Settings, repeats: int = 1,
        lbp_size: int | None = None, device: str = "auto", workers: int = 1, executor: cf.Executor | None = None,
        progress: bool = True) -> dict:
    """Train every task's MacroNet, then Phase I on every fold, then Phase II on every fold (each
    stage's units side by side in `workers` processes or on `executor`); cached units are read.
    With `lbp_size`, each task's reference levels (`references`, LBP-TOP at that size) run as
    units beside Phase I's.

    Returns {task name: {"macro": [records], "I": [records], "II": [records], "references":
    record}}. Tasks that share a label space and macro set share one MacroNet.
    """
    tasks = list(tasks)
    work = Work({t.name: t for t in tasks}, settings, device, progress=False)
    kw = dict(workers=workers, executor=executor, progress=progress)
    out = {t.name: {} for t in tasks}
    macro = [macro_unit_of(t, preset, data_source, seed, settings, r) for t in tasks for r in range(repeats)]
    for (t, r), rec in zip([(t, r) for t in tasks for r in range(repeats)], experiments.run(macro, work, **kw)):
        out[t.name].setdefault("macro", []).append(rec)
    refs = [reference_unit(t, preset, data_source, seed, lbp_size) for t in tasks] if lbp_size else []
    for phase in PHASES:
        # The reference units and the larger tasks first, so the pool's last units are short ones.
        per_task = {t.name: units(t, phase, preset=preset, data_source=data_source, seed=seed, settings=settings,
                                  repeats=repeats) for t in tasks}
        order = sorted(tasks, key=lambda t: -len(t.micro) * (len(t.folds) - 1) / max(len(t.folds), 1))
        extra = refs if phase == "I" else []
        flat = extra + [u for t in order for u in per_task[t.name]]
        recs = experiments.run(flat, work, **kw)
        for t, rec in zip(tasks, recs[:len(extra)]):
            out[t.name]["references"] = rec
        by_key = {(u.name, u.key, u.fold, u.repeat): r for u, r in zip(flat, recs)}
        for t in tasks:
            out[t.name][phase] = [by_key[(u.name, u.key, u.fold, u.repeat)] for u in per_task[t.name]]
    return out


# ---------------------------------------------------------------------------------------------
# Records: per source, tables

def restrict(records: Sequence[dict], dataset: str) -> list[dict]:
    """The records with their test predictions restricted to the clips of one source dataset
    (ids "dataset/subject/clip"), e.g. the composite's CASME II part for Table 2. Folds without
    such a clip are left out and the rest renumbered (the same way for every phase's records),
    so `experiments.table` and `claims.compare` read them as a cross-validation of that part."""
    prefix = f"{dataset}/"
    kept = []
    for rec in records:
        ids = rec["test"]["ids"]
        keep = [i for i, k in enumerate(ids) if str(k).startswith(prefix)]
        if keep:
            kept.append((rec, keep))
    folds = sorted({int(r["fold"]) for r, _ in kept})
    renumber = {f: i for i, f in enumerate(folds)}
    out = []
    for rec, keep in kept:
        test = rec["test"]
        pick = lambda values: [values[i] for i in keep]  # noqa: E731
        hist = dict(rec["history"])
        hist["test_pred"] = [pick(p) for p in rec["history"]["test_pred"]]
        new = dict(rec)
        new.update({"fold": renumber[int(rec["fold"])], "history": hist,
                    "test": {k: (pick(v) if isinstance(v, list) else v) for k, v in test.items()},
                    "config": {**rec["config"], "n_folds": len(folds), "source": dataset}})
        if rec.get("embeddings", {}).get("test") is not None:
            new["embeddings"] = {"test": pick(rec["embeddings"]["test"])}
        new["metrics"] = train.select(np.asarray(new["test"]["y_true"]), [np.asarray(p) for p in hist["test_pred"]],
                                      len(rec["classes"]))
        out.append(new)
    return out


def pooled(records: Sequence[dict]) -> dict:
    """UF1, UAR and accuracy of the last epoch's predictions pooled over folds, mean ± std over
    repeats (`experiments.table`'s numbers, as fractions): {metric: metrics.Summary}."""
    per_repeat = experiments.scores(list(records), by=(), selections=("last",))
    return {m: metrics.summarize(per_repeat[m].astype(float)) for m in ("uf1", "uar", "accuracy")}


def fold_predictions(y: np.ndarray, folds, fit_predict) -> np.ndarray:
    """Test-fold predictions of `fit_predict(train_idx, test_idx)` pooled into one array aligned with y."""
    pred = np.full(len(y), -1, np.int64)
    for f in folds:
        pred[f.test] = fit_predict(np.asarray(f.train), np.asarray(f.test))
    if (pred < 0).any():
        raise ValueError(f"{int((pred < 0).sum())} clips are in no test fold")
    return pred


def majority(y: np.ndarray, folds) -> np.ndarray:
    """Each fold's test clips predicted as its training clips' most frequent class."""
    return fold_predictions(y, folds, lambda tr, te: np.full(len(te), np.bincount(y[tr]).argmax()))


def quoted(table: str) -> pd.DataFrame:
    """The paper's Table 1 or 2 (fractions) from data/paper_numbers/eidnet_tables.csv."""
    df = paper.numbers("eidnet_tables")
    df = df[df["table"] == table].copy()
    if df.empty:
        raise ValueError(f"no quoted numbers for {table!r}; the file has {sorted(paper.numbers('eidnet_tables')['table'].unique())}")
    return df


def side_by_side(ours: Mapping[tuple[str, str], Mapping[str, object]], table: str,
                 columns: Sequence[tuple[str, str]], *, rows: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """One row per method: for each (dataset, metric) of `columns`, ours and the paper's (quoted).

    `ours[(method, dataset)]` maps a metric ("ACC", "F1", "UF1", "UAR") to a `metrics.Summary`
    or a float (fraction); `rows` are (label, paper method name or "") in display order; a
    method the paper does not list gets "–", a number the paper does not report "n/r". Numbers in
    percent, as text.
    """
    q = quoted(table)
    out = []
    for method, paper_name in rows:
        row = {"method": method}
        for ds, metric in columns:
            mine = ours.get((method, ds), {}).get(metric)
            if mine is None:
                row[f"{ds} {metric} ours"] = "–"
            elif isinstance(mine, metrics.Summary):
                row[f"{ds} {metric} ours"] = mine.text if mine.n > 1 else f"{100 * mine.mean:.1f}"
            else:
                row[f"{ds} {metric} ours"] = f"{100 * float(mine):.1f}"
            hit = q[(q["method"] == paper_name) & (q["dataset"] == ds) & (q["metric"] == metric)] if paper_name else q.iloc[:0]
            value = float(hit["value"].iloc[0]) if len(hit) else None
            row[f"{ds} {metric} {paper.QUOTED}"] = ("–" if not len(hit) else "n/r" if value is None or np.isnan(value)
                                                    else f"{100 * value:.1f}")
        out.append(row)
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------
# Figure 4: micro vs macro embeddings, per emotion, after Phase I and after Phase II

def test_embeddings(records: Sequence[dict], repeat: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
    """(clip ids, labels, embeddings) of every test clip of one repeat, each from its own fold's
    model, as stored in the records."""
    ids, labels, emb = [], [], []
    for r in sorted((r for r in records if int(r["repeat"]) == repeat), key=lambda r: int(r["fold"])):
        ids += list(r["test"]["ids"])
        labels += list(r["test"]["y_true"])
        emb += list(r["embeddings"]["test"])
    return ids, np.asarray(labels, np.int64), np.asarray(emb, np.float64)


def _subsample(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(idx, n, replace=False)) if len(idx) > n else idx


TWO_SAMPLE = "two-sample classifier (logistic regression, stratified 5-fold), balanced accuracy"


def _two_sample(x: np.ndarray, domain: np.ndarray, seed: int) -> np.ndarray | None:
    """Cross-validated predictions of a logistic regression telling micro (0) from macro (1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(5, int(np.bincount(domain, minlength=2).min()))
    if k < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return cross_val_predict(model, x, domain, cv=StratifiedKFold(k, shuffle=True, random_state=seed))


@dataclass
class Closeness:
    """Fig. 4's numbers: per class and phase, how well micro and macro embeddings separate."""

    table: pd.DataFrame  # class, phase, n_micro, n_macro, balanced_accuracy, mean_distance
    tests: pd.DataFrame  # class, change (Phase II - Phase I), p, test
    samples: dict  # class -> (micro row indices, macro row indices) used
    predictions: dict  # (class, phase) -> (domain labels, CV predictions)
    seed: int = 0  # the permutation test's seed and resamples (stored as the claims' evidence)
    n_resamples: int = 9999


def closeness(micro: Mapping[str, np.ndarray], micro_labels: np.ndarray, macro: np.ndarray, macro_labels: np.ndarray,
              classes: Sequence[str], *, n: int = 200, seed: int = 0, n_resamples: int = 9999) -> Closeness:
    """How close micro and macro expression embeddings of each class are, after each phase.

    `micro` maps a phase name to the micro test embeddings (rows aligned with `micro_labels`);
    `macro` holds MacroNet's embeddings (the same in every phase: MacroNet is frozen). Per class,
    up to `n` micro and `n` macro samples are drawn once (seeded) and used for every phase:
    - balanced_accuracy: a logistic regression telling micro from macro (stratified 5-fold
      cross-validated predictions); 0.5 means the two clouds cannot be told apart;
    - mean_distance: the distance between the micro and macro class means, in units of the
      macro cloud's RMS radius (the macro side is fixed, so the unit is too).
    `tests`: the change of balanced accuracy from the first phase to the last, tested with the
    paired permutation test on predictions (per-sample swaps; `stats.paired_prediction_test`).
    """
    from mielib import stats

    phases = list(micro)
    rng = np.random.default_rng([int(seed), 11])
    rows, tests, samples, preds = [], [], {}, {}
    for c, name in enumerate(classes):
        mi = _subsample(np.flatnonzero(micro_labels == c), n, rng)
        ma = _subsample(np.flatnonzero(macro_labels == c), n, rng)
        samples[name] = (mi, ma)
        domain = np.r_[np.zeros(len(mi), np.int64), np.ones(len(ma), np.int64)]
        ref = macro[ma]
        centre = ref.mean(0) if len(ma) else None
        radius = float(np.sqrt(((ref - centre) ** 2).sum(1).mean())) if len(ma) > 1 else math.nan
        for ph in phases:
            x = np.concatenate([micro[ph][mi], ref])
            pred = _two_sample(x, domain, seed) if len(mi) and len(ma) else None
            preds[name, ph] = (domain, pred)
            dist = (float(np.linalg.norm(micro[ph][mi].mean(0) - centre)) / radius
                    if len(mi) and len(ma) > 1 and radius > 0 else math.nan)
            rows.append({"class": name, "phase": ph, "n_micro": len(mi), "n_macro": len(ma),
                         "balanced_accuracy": metrics.uar(domain, pred, labels=(0, 1)) if pred is not None else math.nan,
                         "mean_distance": dist})
        first, last = preds[name, phases[0]][1], preds[name, phases[-1]][1]
        if first is not None and last is not None and len(phases) > 1:
            res = stats.paired_prediction_test(domain, last, first, metric="uar", labels=(0, 1),
                                               n_resamples=n_resamples, seed=seed)
            tests.append({"class": name, "change": res.difference, "p": res.p, "test": res.test, "result": res})
        else:
            tests.append({"class": name, "change": math.nan, "p": math.nan, "test": "", "result": None})
    return Closeness(pd.DataFrame(rows), pd.DataFrame(tests), samples, preds, int(seed), int(n_resamples))


def tsne(x: np.ndarray, *, seed: int = 0, perplexity: float = 30.0) -> tuple[np.ndarray, float]:
    """(2-D t-SNE coordinates, the perplexity used) of the rows of `x` (scikit-learn, PCA
    initialisation, `seed`); the perplexity is lowered below the number of rows when needed."""
    from sklearn.manifold import TSNE

    if len(x) < 3:
        return np.zeros((len(x), 2)), math.nan
    used = float(min(perplexity, max(1.0, (len(x) - 1) / 3)))
    coords = TSNE(n_components=2, perplexity=used, random_state=seed, init="pca", learning_rate="auto").fit_transform(
        np.asarray(x, np.float64))
    return coords, used


def figure4(phase_records: Mapping[str, Sequence[dict]], macro_record: dict, *, n: int = 200, seed: int = 0,
            perplexity: float = 30.0, repeat: int = 0, n_resamples: int = 9999):
    """EIDNet Fig. 4 from stored records: one column per class, t-SNE of micro test (purple) and
    macro (orange) expression embeddings after each phase (rows), each panel titled with its
    two-sample balanced accuracy and mean distance (`closeness`), the last row with the change
    and its p. Returns (figure, Closeness, perplexities used)."""
    import matplotlib.pyplot as plt

    phases = list(phase_records)
    classes = list(macro_record["classes"])
    micro, labels = {}, None
    ids = None
    for ph in phases:
        i, y, e = test_embeddings(phase_records[ph], repeat)
        if ids is not None and i != ids:
            raise ValueError(f"the {ph} records test other clips than the {phases[0]} records")
        ids, labels, micro[ph] = i, y, e
    macro = np.asarray(macro_record["embeddings"]["values"], np.float64)
    macro_labels = np.asarray(macro_record["embeddings"]["labels"], np.int64)
    close = closeness(micro, labels, macro, macro_labels, classes, n=n, seed=seed, n_resamples=n_resamples)
    fig, axes = plt.subplots(len(phases), len(classes), figsize=(2.6 * len(classes), 2.5 * len(phases)), squeeze=False)
    used = {}
    tab = close.table.set_index(["class", "phase"])
    tests = close.tests.set_index("class")
    for col, name in enumerate(classes):
        mi, ma = close.samples[name]
        for row, ph in enumerate(phases):
            ax = axes[row, col]
            x = np.concatenate([micro[ph][mi], macro[ma]])
            coords, used[name, ph] = tsne(x, seed=seed, perplexity=perplexity)
            ax.scatter(*coords[:len(mi)].T, s=6, c="tab:purple", alpha=0.7, label="micro (test clips)")
            ax.scatter(*coords[len(mi):].T, s=6, c="tab:orange", alpha=0.7, label="macro (CK+)")
            ax.set_xticks([])
            ax.set_yticks([])
            t = tab.loc[(name, ph)]
            title = f"{name}: bal. acc. {t['balanced_accuracy']:.2f}, dist. {t['mean_distance']:.2f}"
            if row == len(phases) - 1 and row > 0:
                title += f"\nchange {tests.loc[name, 'change']:+.2f}, p = {tests.loc[name, 'p']:.3g}"
            ax.set_title(title, fontsize=7)
    for row, ph in enumerate(phases):
        axes[row, 0].set_ylabel(PHASE_NAMES.get(ph, ph))
    fig.tight_layout()
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
               frameon=False, fontsize=8)
    return fig, close, used


# ---------------------------------------------------------------------------------------------
# Reference levels and the hand-crafted baseline

#: LBP-TOP's frames per clip, sampled uniformly from onset to offset (as notebook 05).
LBP_FRAMES = 10


def _stack(clip, n_frames: int, size: int) -> np.ndarray:
    where = np.rint(np.linspace(clip.onset, clip.offset, n_frames)).astype(int)
    return np.stack([paper._resize(clip.frames[int(p)], size) for p in where])


def references(clips: ClipSet, loaded: ClipSet, y, folds, *, input: str, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A task's reference predictions on its folds, pooled over folds (aligned with `y`):
    - "majority": the most frequent class of each fold's training clips;
    - "linear": a logistic regression on the EIDNet input (`paper.linear_reference` on the clips
      from `load_frames`: the onset -> apex flow, or apex - onset pixels with frames),
      regularisation chosen inside the training folds;
    - "lbptop": LBP-TOP (`lbptop`: 5 x 5 blocks, radius 1, 8 neighbours, uniform patterns) on
      `LBP_FRAMES` grey frames from onset to offset of `clips` at `size` px, standardised, then a
      linear SVM.
    """
    from mielib import lbptop

    y = np.asarray(y)
    x = np.stack([lbptop.features(_stack(c, LBP_FRAMES, size)) for c in clips])
    svm = lambda tr, te: lbptop.LBPTOP(seed=seed).fit_features(x[tr], y[tr]).predict_features(x[te])  # noqa: E731
    return {"majority": majority(y, folds), "lbptop": fold_predictions(y, folds, svm),
            "linear": paper.linear_reference(loaded, folds, y, input=input, seed=seed)}


# ---------------------------------------------------------------------------------------------
# The notebook's pieces: tasks, our numbers beside the paper's, Fig. 4's claims

#: How the paper names the sets (data/paper_numbers/eidnet_tables.csv) by mielib dataset name.
DATASETS = {"casme2": "CASME II", "smic": "SMIC", "samm": "SAMM", "composite": "composite"}
#: How the paper names our rows; the reference levels are ours only.
METHODS = {"lbptop": "LBP-TOP", "I": "EIDNet phase I", "II": "EIDNet phase I+II",
           "majority": "majority class (ours)", "linear": "logistic regression (ours)"}


def task(name: str, clips: ClipSet, classes: Sequence[str], attr: str, folds, macro: ClipSet, *, input: str,
         size: int, load_size: int, source: ClipSet | None = None) -> Task:
    """A Task from clips and CK+ sequences loaded by `load_frames` (the same label space: `attr`
    of each in `classes`), with the JSON description of its data that enters the cache keys.
    `source`: the same clips with all their frames, for the LBP-TOP reference."""
    def describe(cs):
        return {"dataset": getattr(cs, "name", ""), "clips": paper.fingerprint(cs),
                "labels": store.key([getattr(c, attr) for c in cs]), "attr": attr, "classes": list(classes),
                "input": input, "size": int(size), "load_size": int(load_size), "frames": FRAMES}

    protocols.check(folds, clips)
    if source is not None and [c.key for c in source] != [c.key for c in clips]:
        raise ValueError(f"task {name}: `source` holds other clips than `clips`")
    return Task(name, Pairs.from_clips(clips, classes, attr, input), list(folds),
                Pairs.from_clips(macro, classes, attr, input), describe(clips), describe(macro), source, clips)


def our_numbers(phases: Mapping[str, Sequence[dict]], refs: Mapping[str, np.ndarray], y, ids, *, dataset: str,
                metric_names: Mapping[str, str], sources: Mapping[str, str] | None = None) -> dict:
    """{(paper method name, paper dataset name): {paper metric: value}} for `side_by_side`.

    Phases' records give pooled last-epoch scores (`pooled`: a Summary over repeats); the
    reference predictions `refs` (aligned with `y` and the clip `ids`) give one number each.
    `metric_names` maps mielib metrics to the paper's ({"accuracy": "ACC", "uf1": "F1"});
    `sources` maps clip-id prefixes to per-source columns (Table 2: {"smic": "SMIC", ...}).
    """
    y = np.asarray(y)
    n = len(next(iter(phases.values()))[0]["classes"])
    parts = {dataset: None, **{v: k for k, v in (sources or {}).items()}}
    out: dict = {}
    for col, prefix in parts.items():
        for phase, recs in phases.items():
            recs = list(recs) if prefix is None else restrict(recs, prefix)
            s = pooled(recs)
            out.setdefault((METHODS[phase], col), {}).update({v: s[k] for k, v in metric_names.items()})
        keep = np.ones(len(y), bool) if prefix is None else np.array([str(i).startswith(prefix + "/") for i in ids])
        for ref, pred in refs.items():
            sc = metrics.scores(y[keep], np.asarray(pred)[keep], labels=range(n))
            out.setdefault((METHODS[ref], col), {}).update({v: sc[k] for k, v in metric_names.items()})
    return out


def quoted_difference(table: str, dataset: str, metric: str) -> float:
    """The paper's Phase I + II minus Phase I (fraction) for one dataset and metric."""
    q = quoted(table)
    get = lambda m: float(q[(q["method"] == m) & (q["dataset"] == dataset) & (q["metric"] == metric)]["value"].iloc[0])  # noqa: E731
    return get(METHODS["II"]) - get(METHODS["I"])


def closeness_comparison(close: Closeness, name: str, *, preset: str, data_source: str, folds: int):
    """A `claims.Comparison` of one class's two-sample balanced accuracy, last phase vs first
    (a - b < 0: the clouds became harder to tell apart), with the permutation test's result."""
    from mielib import claims

    t = close.table[close.table["class"] == name]
    first, last = t.iloc[0], t.iloc[-1]
    from mielib import stats

    res = close.tests.set_index("class").loc[name, "result"]
    res = res if isinstance(res, stats.Result) else None  # no test (too few samples of the class)
    evidence = None
    if res is not None:  # what the test read, so `claims.verify` recomputes this row as any other
        domain, pred_last = close.predictions[name, last["phase"]]
        pred_first = close.predictions[name, first["phase"]][1]
        evidence = claims.json_ready({
            "metric": "uar", "classes": "true", "labels": 2, "test": "predictions", "pooling": "pooled",
            "n_resamples": close.n_resamples, "seed": close.seed, "pairs": [[0, 0]], "n_train": [0],
            "y": [domain.tolist()], "a": [pred_last.tolist()], "b": [pred_first.tolist()]})
    return claims.Comparison("balanced accuracy", "last", float(last["balanced_accuracy"]),
                             float(first["balanced_accuracy"]),
                             float(last["balanced_accuracy"] - first["balanced_accuracy"]),
                             res, int(last["n_micro"] + last["n_macro"]), 1, int(folds), preset, data_source,
                             evidence)
