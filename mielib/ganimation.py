"""GANimation (Pumarola et al., ECCV 2018): an AU-conditioned face editor, trained and applied here.

Notebook 03 trains and inspects it; the MiE-X builder calls `GAN.edit(neutral_face, z)` to
synthesize onset/apex frames when GANimation is the generator G.

Facts cite the paper ("paper") or the authors' code, albertpumarola/GANimation ("authors' code");
where they differ we say which one we follow and why.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import au, runtime, store

#: Written into every checkpoint so `load` can refuse files that are not ours.
FORMAT = "mielib.ganimation/1"

#: Loss weights (paper Sec. 5 and the authors' train_options.py).
DEFAULT_WEIGHTS: dict[str, float] = {
    "adv": 1.0,        # WGAN critic/generator term (lambda_D_prob)
    "gp": 10.0,        # gradient penalty (lambda_gp)
    "au": 4000.0,      # AU regression (lambda_y); applied to MSE / batch size, see `au_loss`
    "cycle": 10.0,     # L1 back to the source AUs (lambda_idt / lambda_cyc)
    "att_mean": 0.1,   # mean of the attention mask (lambda_A)
    "att_tv": 1e-5,    # total variation of the attention mask (authors' lambda_mask_smooth)
}

#: Attention pixels above HIGH keep the input; below LOW they take the colour mask.
HIGH, LOW = 0.95, 0.05
#: A mask is "saturated" when at least this fraction of its pixels is above HIGH (or below LOW).
SATURATION_LIMIT = 0.99

#: Checkpoint file name inside `checkpoint_dir`; the key is `store.key(config)`.
CHECKPOINT_PATTERN = "ganimation-{key}.pt"


class AttentionSaturationWarning(UserWarning):
    """The attention mask is (almost) all 1 or all 0: see `attention_report`."""


# ---------------------------------------------------------------------------------------------
# Networks


def _conv_init(module: nn.Module, generator: torch.Generator) -> None:
    # Authors' code (networks.py): conv weights ~ N(0, 0.02), biases 0; instance-norm affine
    # parameters keep torch's (1, 0).
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()


class ResidualBlock(nn.Module):
    """conv3x3 - IN - ReLU - conv3x3 - IN, plus the input (no biases: IN removes them anyway)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """GANimation's generator: image + AU vector -> (edited image, attention A, colour C).

    Paper Sec. 4.1 / authors' generator_wasserstein_gan.py: the 17 target AUs are tiled as 17
    extra input channels; 7x7 conv (w) -> two 4x4 stride-2 convs (2w, 4w) -> residual blocks ->
    two 4x4 transposed convs back up; instance norm, no biases. Two 7x7 heads (no bias, as in the
    authors' code): colour C (3 ch, tanh) and attention A (1 ch, sigmoid).
    Output = A * x + (1 - A) * C, so A = 1 keeps the input pixel. Images are in [-1, 1].
    """

    def __init__(self, width: int = 64, residual_blocks: int = 6, n_aus: int = au.N_AUS):
        super().__init__()
        self.n_aus = n_aus
        w = width
        layers: list[nn.Module] = [
            nn.Conv2d(3 + n_aus, w, 7, 1, 3, bias=False), nn.InstanceNorm2d(w, affine=True), nn.ReLU(inplace=True),
        ]
        for c in (w, 2 * w):  # down-sampling: 128 -> 64 -> 32 px at the paper's size
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.InstanceNorm2d(2 * c, affine=True), nn.ReLU(inplace=True)]
        layers += [ResidualBlock(4 * w) for _ in range(residual_blocks)]
        for c in (4 * w, 2 * w):  # up-sampling back to the input size
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.InstanceNorm2d(c // 2, affine=True),
                       nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.colour_head = nn.Sequential(nn.Conv2d(w, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.attention_head = nn.Sequential(nn.Conv2d(w, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: B x 3 x S x S in [-1, 1]; z: B x 17. Returns (edited image, attention B x 1 x S x S, colour)."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of 4 (two stride-2 layers)")
        tiled = z[:, :, None, None].to(x.dtype).expand(-1, -1, x.shape[2], x.shape[3])
        features = self.body(torch.cat([x, tiled], dim=1))
        colour = self.colour_head(features)
        attention = self.attention_head(features)
        return blend(x, attention, colour), attention, colour


def blend(x: torch.Tensor, attention: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Paper Eq. (1): A * x + (1 - A) * C. A = 1 keeps the input pixel, A = 0 paints C."""
    return attention * x + (1 - attention) * colour


def critic_depth(size: int) -> tuple[int, int]:
    """(number of 4x4 stride-2 convs, final map side = AU-head kernel) for an image size.

    The paper's critic has six down-samplings at 128 px, leaving a 2 x 2 map, and an AU head whose
    kernel is size / 64 = 2 (one AU vector per image). For smaller images we stop halving while
    the map would drop below 2 px (at most six times), and the AU head's kernel is the final map
    side: 128 -> (6, 2), 64 -> (5, 2), 48 -> (4, 3), 32 -> (4, 2).
    """
    if size < 4:
        raise ValueError(f"image size {size} is too small for the critic (needs at least 4 px)")
    n, side = 0, size
    while n < 6 and side // 2 >= 2:
        side //= 2  # a 4x4 stride-2 conv with padding 1 maps side -> floor(side / 2)
        n += 1
    return n, side


class Critic(nn.Module):
    """GANimation's critic: a PatchGAN realness map and a 17-AU regression.

    Paper Sec. 4.1 / authors' discriminator_wasserstein_gan.py: 4x4 stride-2 convs with LeakyReLU
    0.01, width doubling from w (64 -> 2048 at 128 px); no normalization (WGAN-GP). A 3x3 conv
    (no bias) gives the realness map; a conv with kernel = final map side (no bias) regresses the
    AUs. Depth adapts to the image size, see `critic_depth`.
    """

    def __init__(self, size: int = 128, width: int = 64, n_aus: int = au.N_AUS):
        super().__init__()
        n, side = critic_depth(size)
        layers: list[nn.Module] = []
        c_in, c_out = 3, width
        for _ in range(n):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
            c_in, c_out = c_out, c_out * 2
        self.size, self.downsamplings, self.au_kernel = size, n, side
        self.body = nn.Sequential(*layers)
        self.realness_head = nn.Conv2d(c_in, 1, 3, 1, 1, bias=False)
        self.au_head = nn.Conv2d(c_in, n_aus, side, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: B x 3 x S x S. Returns (realness map B x 1 x s x s, AU estimates B x 17)."""
        h = self.body(x)
        return self.realness_head(h), self.au_head(h).flatten(1)


# ---------------------------------------------------------------------------------------------
# Losses (unweighted unless a weight is passed; `Trainer` applies DEFAULT_WEIGHTS)


def critic_adversarial_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss: mean D(fake) - mean D(real), averaged over the patch map too."""
    return fake_scores.float().mean() - real_scores.float().mean()


def generator_adversarial_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss: -mean D(G(x | y_f))."""
    return -fake_scores.float().mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean over the batch of (||grad_x D(x_mix)||_2 - 1)^2.

    x_mix = alpha * real + (1 - alpha) * fake with one alpha per sample (B x 1 x 1 x 1). The
    gradient is of the sum of the realness map (authors' code: grad_outputs of ones). Computed in
    float32 with autocast off: the double backward through half-precision activations under- and
    overflows, which is the usual way WGAN-GP breaks under mixed precision.
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        mix = (alpha * real.float() + (1 - alpha) * fake.float()).detach().requires_grad_(True)
        scores, _ = critic(mix)
        (grad,) = torch.autograd.grad(scores.float().sum(), mix, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def au_loss(predicted: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """AU regression loss: weight * MSE(predicted, target) / batch size.

    MSE is the mean over all B x 17 entries (torch's MSELoss), then divided once more by the
    batch size B, exactly as the authors' code does (`criterion_D_cond(...) / self._B *
    lambda_D_cond`). The paper's Eq. (4) writes a squared L2 norm per image instead; the weight
    4000 was tuned with the code's form (batch 25), so the effective weight per mean squared
    error is 4000 / B. Used on real images (critic) and on generated images (generator).
    """
    return weight * F.mse_loss(predicted.float(), target.float()) / predicted.shape[0]


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Identity (cycle) loss, paper Eq. (5): mean L1 between G(G(x | y_f) | y_o) and x."""
    return F.l1_loss(reconstructed.float(), original.float())


def attention_mean_loss(attention: torch.Tensor) -> torch.Tensor:
    """Mean of the attention mask. It pushes A below 1, so the generator cannot learn the
    do-nothing solution A = 1 everywhere (paper Sec. 4.2; the paper writes ||A||_2, the authors'
    code, whose weight 0.1 we use, takes the mean)."""
    return attention.float().mean()


def attention_tv_loss(attention: torch.Tensor) -> torch.Tensor:
    """Total variation of the attention mask: sum over the batch of |horizontal| + |vertical|
    neighbour differences. It keeps A smooth so C blends into the input without seams. The
    authors' code sums absolute differences (weight 1e-5, used here); the paper's Eq. (3)
    writes squared differences with lambda_TV = 1e-4."""
    a = attention.float()
    return (a[..., :, 1:] - a[..., :, :-1]).abs().sum() + (a[..., 1:, :] - a[..., :-1, :]).abs().sum()


def sample_desired(aus: torch.Tensor, generator: torch.Generator, noise: float = 0.1) -> torch.Tensor:
    """Target AUs for a batch: another sample's AUs plus U(-noise, noise), clipped to [0, 1].

    The authors' dataset draws a random training sample's AUs and adds U(-0.1, 0.1). We draw
    "another sample" as a random permutation of the (already random) batch, which is the same
    distribution without a second data read. Clipping is our addition: mielib's AU vectors live
    in [0, 1] (`au.validate`), and the authors' unclipped targets can fall below 0.
    """
    b = aus.shape[0]
    perm = torch.randperm(b, generator=generator)
    jitter = (torch.rand(aus.shape, generator=generator, dtype=torch.float32) * 2 - 1) * noise
    return (aus.float().cpu()[perm] + jitter).clamp(0.0, 1.0).to(aus.device)


def lr_factor(iteration: int, iterations: int, decay_fraction: float = 1 / 3) -> float:
    """Learning-rate multiplier at a (0-based) critic iteration.

    Paper: 20 epochs at the initial rate, then 10 epochs of linear decay to zero. In iterations:
    constant for the first (1 - decay_fraction) of the run, then linear towards 0 at the end.
    """
    start = int(round(iterations * (1 - decay_fraction)))
    if iteration < start or iterations <= start:
        return 1.0
    return (iterations - iteration) / (iterations - start)


# ---------------------------------------------------------------------------------------------
# Attention saturation


@dataclass(frozen=True)
class AttentionReport:
    """How much of an attention mask keeps the input (high) or is repainted (low)."""

    mean: float      # mean attention
    high: float      # fraction of pixels > HIGH (keep the input)
    low: float       # fraction of pixels < LOW (painted from the colour mask)
    saturated: bool  # nearly all pixels keep the input: the generator ignores the target AUs
    empty: bool      # nearly all pixels are repainted: the input face is not preserved directly
    message: str

    def as_dict(self) -> dict:
        return {"mean": self.mean, "high": self.high, "low": self.low, "saturated": self.saturated,
                "empty": self.empty, "message": self.message}


def _attention_stats(a: torch.Tensor, high: float = HIGH, low: float = LOW) -> tuple[float, float, float]:
    a = a.detach().float()
    return float(a.mean()), float((a > high).float().mean()), float((a < low).float().mean())


def attention_report(attention, *, high: float = HIGH, low: float = LOW, limit: float = SATURATION_LIMIT,
                     warn: bool = False) -> AttentionReport:
    """Summarize attention masks (any shape, values in [0, 1]: `GAN.attention(...)` or a tensor).

    GANimation's commonest failure is a mask saturated at 1: output = input, so the generator
    ignores the requested AUs (paper Sec. 4.2 names it; users report it most). A mask is
    `saturated` when at least `limit` of its pixels exceed `high`, and `empty` when at least
    `limit` are below `low`. With `warn=True` either case issues an AttentionSaturationWarning
    that says what to try.
    """
    a = torch.as_tensor(np.asarray(attention, dtype=np.float32) if not torch.is_tensor(attention) else attention)
    a = a.detach().float().cpu()
    if a.numel() == 0:
        raise ValueError("attention_report: empty attention mask")
    if not torch.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError("attention_report: attention values must be finite and in [0, 1]")
    mean, frac_high, frac_low = _attention_stats(a, high, low)
    saturated, empty = frac_high >= limit, frac_low >= limit
    if saturated:
        message = (f"attention saturated: {frac_high:.1%} of pixels > {high} (mean {mean:.3f}), so the output is "
                   "almost the input image and the generator ignores the requested AUs. Try: raise the attention-"
                   "mean weight (weights={'att_mean': ...}, default 0.1), lower the learning rate, or train longer.")
    elif empty:
        message = (f"attention empty: {frac_low:.1%} of pixels < {low} (mean {mean:.3f}), so the whole face is "
                   "repainted from the colour mask and identity rests on the cycle loss alone. Try: lower the "
                   "attention-mean weight, or train longer.")
    else:
        message = f"attention ok: mean {mean:.3f}, {frac_high:.1%} of pixels > {high}, {frac_low:.1%} < {low}"
    if warn and (saturated or empty):
        warnings.warn(message, AttentionSaturationWarning, stacklevel=2)
    return AttentionReport(mean, frac_high, frac_low, saturated, empty, message)


# ---------------------------------------------------------------------------------------------
# Images: uint8 H x W x 3 outside, float [-1, 1] B x 3 x S x S inside


def _check_images(images, where: str) -> np.ndarray:
    arr = np.ascontiguousarray(images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images))
    if arr.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 RGB images (0..255), got dtype {arr.dtype}; "
                         "convert with (img * 255).round().astype(np.uint8) if they are floats in [0, 1]")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{where}: expected an array N x H x W x 3 (RGB), got shape {arr.shape}")
    return arr


def _to_float(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.require(images_uint8, requirements=["C", "W"]))  # copies read-only arrays only
    return t.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)


class _Data:
    """Training pairs (image, AUs) from arrays or a torch Dataset, resized to `size`."""

    def __init__(self, images, aus, size: int):
        self.size = size
        self.dataset = None
        if isinstance(images, torch.utils.data.Dataset) or (
                hasattr(images, "__getitem__") and hasattr(images, "__len__")
                and not isinstance(images, (np.ndarray, torch.Tensor, list, tuple))):
            if aus is not None:
                raise ValueError("pass AUs either inside the dataset (items (image, aus)) or as `aus`, not both")
            self.dataset, self.n = images, len(images)
            # A dataset is fingerprinted by type and length only: reading every item may be slow.
            self.fingerprint = f"{type(images).__module__}.{type(images).__qualname__}:{self.n}"
        else:
            arr = _check_images(images, "images")
            if aus is None:
                raise ValueError("images given as an array need `aus`: an N x 17 array in [0, 1]")
            z = au.validate(aus, where="aus")
            if z.ndim != 2 or len(z) != len(arr):
                raise ValueError(f"aus: expected {len(arr)} x {au.N_AUS} (one row per image), got shape {z.shape}")
            if arr.shape[1] != arr.shape[2]:
                raise ValueError(f"images: GANimation trains on square face crops; got {arr.shape[1]} x {arr.shape[2]}")
            self.n = len(arr)
            digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes())
            digest.update(np.ascontiguousarray(z).tobytes())
            self.fingerprint = digest.hexdigest()[:16]
            chunks = []
            for i in range(0, self.n, 256):  # resize once, in chunks, and keep uint8 in memory
                x = _resize(torch.from_numpy(arr[i:i + 256]).permute(0, 3, 1, 2), size)
                chunks.append(x.round().clamp(0, 255).to(torch.uint8))
            self.pixels = torch.cat(chunks)
            self.aus = torch.from_numpy(z)
        if self.n == 0:
            raise ValueError("no training images")

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dataset is None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            return self.pixels[idx].float() / 127.5 - 1.0, self.aus[idx]
        xs, zs = [], []
        for i in indices:
            item = self.dataset[int(i)]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError(f"dataset item {i}: expected a pair (image, aus), got {type(item).__name__}")
            image, z = item
            xs.append(self._image(image, i))
            zs.append(torch.from_numpy(au.validate(np.asarray(z, dtype=np.float64).reshape(-1), where=f"dataset item {i} aus")))
        return torch.stack(xs), torch.stack(zs)

    def _image(self, image, i) -> torch.Tensor:
        if torch.is_tensor(image) and image.is_floating_point():
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"dataset item {i}: a float image must be 3 x H x W in [-1, 1], got {tuple(image.shape)}")
            return _resize(image[None].float(), self.size)[0]
        arr = _check_images(np.asarray(image)[None], f"dataset item {i}")
        return _resize(_to_float(arr), self.size)[0]


# ---------------------------------------------------------------------------------------------
# Inference wrapper


def _amp(device: torch.device) -> tuple[bool, torch.dtype]:
    """Mixed precision on CUDA: bf16 where supported (no loss scaling needed), else fp16."""
    if device.type != "cuda":
        return False, torch.float32
    return True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


class GAN:
    """A trained generator with a numpy interface: uint8 H x W x 3 images, 17-d AU vectors z.

    Images of another size than the network's are resized for the network, and the attention
    and colour masks are resized back, then blended with the full-resolution input
    (A * x + (1 - A) * C): where A ~ 1 the input's pixels come through untouched.
    """

    def __init__(self, generator: Generator, config: Mapping, device="auto"):
        self.device = runtime.device(device) if isinstance(device, str) else device
        self.generator = generator.to(self.device).eval()
        self.config = dict(config)
        self.size = int(self.config["size"])

    def __repr__(self) -> str:
        return f"GAN(size={self.size}, width={self.config.get('width')}, device={self.device})"

    @torch.no_grad()
    def _run(self, images: np.ndarray, zs: np.ndarray, batch_size: int = 32):
        out, att, col = [], [], []
        amp, dtype = _amp(self.device)
        self.generator.eval()
        for i in range(0, len(images), batch_size):
            x = _to_float(images[i:i + batch_size]).to(self.device)
            z = torch.from_numpy(zs[i:i + batch_size]).to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=amp):
                _, a, c = self.generator(_resize(x, self.size), z)
            a, c = _resize(a.float(), x.shape[-2:]).clamp(0, 1), _resize(c.float(), x.shape[-2:]).clamp(-1, 1)
            out.append(blend(x, a, c).cpu())
            att.append(a.cpu())
            col.append(c.cpu())
        return torch.cat(out), torch.cat(att), torch.cat(col)

    def _inputs(self, images, zs, where: str) -> tuple[np.ndarray, np.ndarray, bool]:
        arr = np.asarray(images)
        single = arr.ndim == 3
        arr = _check_images(arr[None] if single else arr, where)
        z = au.validate(zs, where=f"{where}: z")
        z = np.broadcast_to(z, (len(arr), au.N_AUS)) if z.ndim == 1 else z
        if z.shape != (len(arr), au.N_AUS):
            raise ValueError(f"{where}: {len(arr)} images need {len(arr)} AU vectors, got shape {z.shape}")
        return arr, np.array(z, dtype=np.float32, order="C"), single  # a writable copy (broadcast views are not)

    def edit(self, image: np.ndarray, z) -> np.ndarray:
        """One face (uint8 H x W x 3) rendered with the target AUs z (17, in [0, 1])."""
        arr, z, _ = self._inputs(image, z, "edit")
        if len(arr) != 1:
            raise ValueError("edit takes one image H x W x 3; use edit_batch for N x H x W x 3")
        return _to_uint8(self._run(arr, z)[0])[0]

    __call__ = edit

    def edit_batch(self, images, zs, batch_size: int = 32) -> np.ndarray:
        """N faces (N x H x W x 3 uint8) with N target AU vectors (N x 17, or one 17-vector for all)."""
        arr, z, _ = self._inputs(images, zs, "edit_batch")
        return _to_uint8(self._run(arr, z, batch_size)[0])

    def attention(self, image, z) -> np.ndarray:
        """Attention mask(s) A in [0, 1] (H x W, or N x H x W for a batch); 1 = input kept."""
        arr, z, single = self._inputs(image, z, "attention")
        a = self._run(arr, z)[1][:, 0].numpy()
        return a[0] if single else a

    def colour(self, image, z) -> np.ndarray:
        """Colour mask(s) C as uint8 RGB (H x W x 3, or N x H x W x 3): what A < 1 paints in."""
        arr, z, single = self._inputs(image, z, "colour")
        c = _to_uint8(self._run(arr, z)[2])
        return c[0] if single else c

    def save(self, path) -> Path:
        """Write the generator alone (weights and config), atomically; `load` reads it."""
        path = Path(path)
        state = {"format": FORMAT, "kind": "generator", "config": self.config,
                 "generator": {k: v.cpu() for k, v in self.generator.state_dict().items()}}
        with store.atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path


def _read_checkpoint(path) -> dict:
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob(CHECKPOINT_PATTERN.format(key="*")), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"{path}: no GANimation checkpoint ({CHECKPOINT_PATTERN.format(key='*')}) in this folder")
        path = found[-1]
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a weights-only file
        raise ValueError(f"{path}: not a readable mielib GANimation checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a mielib GANimation checkpoint (expected format {FORMAT!r})")
    state["path"] = str(path)
    return state


def load(path, device="auto") -> GAN:
    """The generator of a checkpoint (a file, or a folder: its newest checkpoint), as a GAN.

    Reads with torch.load(weights_only=True): checkpoints hold tensors and plain values only.
    """
    state = _read_checkpoint(path)
    config = state["config"]
    generator = Generator(width=config["width"], residual_blocks=config["residual_blocks"])
    generator.load_state_dict(state["generator"])
    return GAN(generator, config, device)


# ---------------------------------------------------------------------------------------------
# Training


def _seed_for(*parts: int) -> int:
    """A 63-bit seed derived from (seed, stream, counter) without collisions between streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] % 2**63)


_D_COLUMNS = ("d_adv", "d_gp", "d_au")
_G_COLUMNS = ("g_adv", "g_au", "g_cycle", "g_att_mean", "g_att_tv")
_A_COLUMNS = ("attention_mean", "attention_high", "attention_low")
#: History columns: weighted losses (as added to the totals), the learning rate, and the
#: attention statistics of the critic step's edits (fraction of pixels > 0.95 and < 0.05).
HISTORY_COLUMNS = ("iteration", "lr") + _D_COLUMNS + _G_COLUMNS + _A_COLUMNS


@dataclass
class Result:
    """What `train` returns: the trained GAN, its loss history, and where it was saved."""

    gan: GAN
    history: pd.DataFrame
    config: dict
    iteration: int
    resumed_from: int             # 0 for a fresh run; k when resumed from a checkpoint at k
    checkpoint: Path | None
    attention: AttentionReport    # of the final generator on a probe batch of training faces
    seconds: float                # wall time of this call (not of earlier, resumed parts)


class Trainer:
    """GANimation training state: networks, optimizers, history; resumable from checkpoints.

    One iteration is one critic step; the generator steps after every `critic_steps` critic
    steps (paper: 5). Each iteration draws its randomness (batch flips, target AUs, GP mixing)
    from a generator seeded by (seed, iteration), and the batch order of each epoch from one
    seeded by (seed, epoch): a run resumed at iteration k draws exactly what an uninterrupted
    run would, so no RNG state needs saving, and on CPU the result is bit-identical.
    """

    def __init__(self, images, aus=None, *, iterations: int, seed: int, batch_size: int = 25, size: int = 128,
                 device="auto", checkpoint_dir=None, resume: bool = True, progress: bool = True,
                 log_every: int = 10, checkpoint_every: int = 1000, width: int = 64, residual_blocks: int = 6,
                 critic_steps: int = 5, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999),
                 decay_fraction: float = 1 / 3, weights: Mapping[str, float] | None = None, flip: bool = True,
                 au_warmup: int = 0):
        for name, value, low in (("iterations", iterations, 1), ("batch_size", batch_size, 1), ("log_every", log_every, 1),
                                 ("checkpoint_every", checkpoint_every, 1), ("critic_steps", critic_steps, 1),
                                 ("width", width, 1), ("seed", seed, 0), ("au_warmup", au_warmup, 0)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if au_warmup >= iterations:
            raise ValueError(f"au_warmup ({au_warmup}) must be fewer than the {iterations} iterations")
        if size % 4 or size < 16:
            raise ValueError(f"size must be a multiple of 4 and at least 16 px, got {size}")
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; known: {', '.join(DEFAULT_WEIGHTS)}")
        self.data = _Data(images, aus, size)
        if batch_size > self.data.n:
            raise ValueError(f"batch_size {batch_size} is larger than the {self.data.n} training images")
        self.config = {
            "size": int(size), "width": int(width), "residual_blocks": int(residual_blocks),
            "iterations": int(iterations), "batch_size": int(batch_size), "seed": int(seed),
            "critic_steps": int(critic_steps), "lr": float(lr), "betas": [float(b) for b in betas],
            "decay_fraction": float(decay_fraction), "weights": {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in (weights or {}).items()}},
            "flip": bool(flip), "desired_noise": 0.1, "data": self.data.fingerprint,
        }
        if au_warmup:  # only when used, so keys (and checkpoints) of paper-faithful runs stay as they were
            self.config["au_warmup"] = int(au_warmup)
        self.key = store.key(self.config)
        self.device = runtime.device(device) if isinstance(device, str) else device
        self.amp, self.amp_dtype = _amp(self.device)
        self.progress, self.log_every, self.checkpoint_every = progress, int(log_every), int(checkpoint_every)

        # Build under a forked RNG so the caller's global torch RNG is left as it was; every
        # conv weight is then drawn from a generator seeded by `seed`.
        with torch.random.fork_rng(devices=[]):
            self.generator = Generator(width, residual_blocks)
            self.critic = Critic(size, width)
        init = torch.Generator().manual_seed(_seed_for(seed, 0))
        _conv_init(self.generator, init)
        _conv_init(self.critic, init)
        self.generator.to(self.device).train()
        self.critic.to(self.device).train()
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=tuple(betas))
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=tuple(betas))
        # Loss scaling only for fp16; bf16 has float32's range.
        scale = self.amp and self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=scale)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=scale)

        self.iteration = 0
        self.rows: list[dict] = []
        self.window: dict[str, list[float]] = {}
        self._epoch_order: tuple[int, torch.Tensor] | None = None
        self.checkpoint_path, self.resumed_from = None, 0
        self.attach(checkpoint_dir, resume)

    def attach(self, checkpoint_dir, resume: bool = True) -> None:
        """Checkpoint into `checkpoint_dir` (None: no checkpoints), resuming from this
        configuration's checkpoint there when `resume` and one exists."""
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_PATTERN.format(key=self.key) if checkpoint_dir else None
        if self.checkpoint_path is not None and resume:
            if self.checkpoint_path.exists():
                self._restore(_read_checkpoint(self.checkpoint_path))
                self.resumed_from = self.iteration
            else:
                others = sorted(p.name for p in Path(checkpoint_dir).glob(CHECKPOINT_PATTERN.format(key="*")))
                if others:
                    warnings.warn(f"{checkpoint_dir}: checkpoints {others} belong to other configurations "
                                  f"(sizes, weights, seed or data differ); starting a fresh run {self.checkpoint_path.name}",
                                  stacklevel=3)

    # -- state ----------------------------------------------------------------------------------

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS))

    def gan(self) -> GAN:
        return GAN(self.generator, self.config, self.device)

    def state(self) -> dict:
        """Everything to resume, as tensors and plain Python values (torch.load weights_only=True)."""
        cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}  # noqa: E731
        return {
            "format": FORMAT, "kind": "trainer", "config": self.config, "key": self.key,
            "iteration": self.iteration, "commit": runtime.commit(),
            # Where the last iterations ran (not part of the key: a run may resume on another device).
            "device": str(self.device), "amp": str(self.amp_dtype).replace("torch.", "") if self.amp else None,
            "generator": cpu(self.generator.state_dict()), "critic": cpu(self.critic.state_dict()),
            "opt_generator": self.opt_g.state_dict(), "opt_critic": self.opt_d.state_dict(),
            "scaler_generator": self.scaler_g.state_dict(), "scaler_critic": self.scaler_d.state_dict(),
            "history": {c: [float(r[c]) for r in self.rows] for c in HISTORY_COLUMNS},
            "window": {k: [float(v[0]), float(v[1])] for k, v in self.window.items()},
        }

    def save(self) -> Path | None:
        if self.checkpoint_path is None:
            return None
        with store.atomic_path(self.checkpoint_path) as tmp:
            torch.save(self.state(), tmp)
        return self.checkpoint_path

    def _restore(self, state: dict) -> None:
        if state.get("kind") != "trainer" or state.get("key") != self.key:
            raise ValueError(f"{state['path']}: checkpoint is for another configuration; delete it or pass resume=False")
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_generator"])
        self.opt_d.load_state_dict(state["opt_critic"])
        if state["scaler_generator"]:
            self.scaler_g.load_state_dict(state["scaler_generator"])
        if state["scaler_critic"]:
            self.scaler_d.load_state_dict(state["scaler_critic"])
        self.iteration = int(state["iteration"])
        hist = state["history"]
        self.rows = [{c: (int(hist[c][i]) if c == "iteration" else hist[c][i]) for c in HISTORY_COLUMNS}
                     for i in range(len(hist["iteration"]))]
        self.window = {k: list(v) for k, v in state["window"].items()}

    # -- one iteration --------------------------------------------------------------------------

    def _indices(self, t: int) -> list[int]:
        # Epochs of shuffled, non-overlapping batches (drop_last), the order seeded per epoch.
        b = self.config["batch_size"]
        per_epoch = self.data.n // b
        epoch, pos = divmod(t, per_epoch)
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            g = torch.Generator().manual_seed(_seed_for(self.config["seed"], 1, epoch))
            self._epoch_order = (epoch, torch.randperm(self.data.n, generator=g))
        return self._epoch_order[1][pos * b:(pos + 1) * b].tolist()

    def _add(self, name: str, value: float) -> None:
        s = self.window.setdefault(name, [0.0, 0.0])
        s[0] += value
        s[1] += 1

    def step(self) -> None:
        """One critic step, plus a generator step when (iteration + 1) % critic_steps == 0."""
        cfg, w, dev = self.config, self.config["weights"], self.device
        t = self.iteration
        rng = torch.Generator().manual_seed(_seed_for(cfg["seed"], 2, t))
        x, y = self.data.batch(self._indices(t))
        if cfg["flip"]:  # authors' code: RandomHorizontalFlip on training images
            flips = torch.rand(len(x), generator=rng) < 0.5
            x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        desired = sample_desired(y, rng, cfg["desired_noise"])
        alpha = torch.rand(len(x), 1, 1, 1, generator=rng)
        x, y, desired, alpha = (v.to(dev, non_blocking=True) for v in (x, y, desired, alpha))
        lr = cfg["lr"] * lr_factor(t, cfg["iterations"], cfg["decay_fraction"])
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        autocast = lambda: torch.autocast(device_type=dev.type, dtype=self.amp_dtype, enabled=self.amp)  # noqa: E731

        if t < cfg.get("au_warmup", 0):
            # AU warm-up (our addition, off by default): the critic learns only to read AUs on real
            # faces. Until it reads them better than the mean readout, the generator's AU loss has
            # no direction and the cycle loss wins (saturated attention). The paper's 30 epochs on
            # 200k faces leave time for this; a CPU budget of a few thousand steps does not.
            with autocast():
                _, real_aus = self.critic(x)
                d_au = au_loss(real_aus, y, w["au"])
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_au).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            self._add("d_au", d_au.item())
            self._finish(t, lr)
            return

        # Critic: WGAN loss on real vs edited faces, AU regression on real faces, gradient penalty.
        # The paper sums these into one critic loss; the authors' code takes a second Adam step
        # for the penalty alone. We follow the paper: one step.
        self.critic.requires_grad_(True)
        with autocast():
            with torch.no_grad():
                fake, attention, _ = self.generator(x, desired)
            real_scores, real_aus = self.critic(x)
            fake_scores, _ = self.critic(fake)
            d_adv = w["adv"] * critic_adversarial_loss(real_scores, fake_scores)
            d_au = au_loss(real_aus, y, w["au"])
        d_gp = w["gp"] * gradient_penalty(self.critic, x, fake, alpha)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(d_adv + d_au + d_gp).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        for name, value in (("d_adv", d_adv), ("d_gp", d_gp), ("d_au", d_au)):
            self._add(name, value.item())
        for name, value in zip(_A_COLUMNS, _attention_stats(attention)):
            self._add(name, value)

        # Generator, every `critic_steps` critic steps (paper: 5): fool the critic, match the
        # target AUs, cycle back to the source AUs, keep the attention mask small and smooth.
        if (t + 1) % cfg["critic_steps"] == 0:
            self.critic.requires_grad_(False)  # its gradients are not needed for this step
            with autocast():
                fake, attention, _ = self.generator(x, desired)
                scores, fake_aus = self.critic(fake)
                rec, rec_attention, _ = self.generator(fake, y)
                terms = {
                    "g_adv": w["adv"] * generator_adversarial_loss(scores),
                    "g_au": au_loss(fake_aus, desired, w["au"]),
                    "g_cycle": w["cycle"] * cycle_loss(rec, x),
                    # Both masks, the edit's and the reconstruction's (authors' code; paper Eq. 6).
                    "g_att_mean": w["att_mean"] * (attention_mean_loss(attention) + attention_mean_loss(rec_attention)),
                    "g_att_tv": w["att_tv"] * (attention_tv_loss(attention) + attention_tv_loss(rec_attention)),
                }
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(sum(terms.values())).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
            self.critic.requires_grad_(True)
            for name, value in terms.items():
                self._add(name, value.item())
        self._finish(t, lr)

    def _finish(self, t: int, lr: float) -> None:
        self.iteration = t + 1
        if self.iteration % self.log_every == 0 or self.iteration == self.config["iterations"]:
            row = {"iteration": self.iteration, "lr": lr}
            for name in _D_COLUMNS + _G_COLUMNS + _A_COLUMNS:
                s = self.window.get(name)
                row[name] = s[0] / s[1] if s and s[1] else math.nan  # NaN: no generator step (or warm-up) in the window
            self.rows.append(row)
            self.window = {}

    # -- the loop -------------------------------------------------------------------------------

    def probe(self, n: int = 16) -> AttentionReport:
        """Attention report of the current generator on the first `n` training faces, with
        target AUs drawn as in training (seeded, so the probe is the same every time)."""
        k = min(n, self.data.n)
        x, y = self.data.batch(range(k))
        desired = sample_desired(y, torch.Generator().manual_seed(_seed_for(self.config["seed"], 3)))
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            _, attention, _ = self.generator(x.to(self.device), desired.to(self.device))
        return attention_report(attention.float())

    def run(self, until: int | None = None) -> Result:
        """Train up to iteration `until` (default: all `iterations`), checkpointing on the way.

        Saves every `checkpoint_every` iterations and when it stops. Ends with an attention
        report on a probe batch and warns (AttentionSaturationWarning) if the mask saturated.
        """
        start_time = time.perf_counter()
        total = self.config["iterations"]
        until = total if until is None else min(int(until), total)
        from tqdm.auto import tqdm

        with tqdm(total=total, initial=self.iteration, disable=not self.progress, desc="GANimation",
                  unit="it", file=sys.stderr) as bar:
            while self.iteration < until:
                self.step()
                bar.update(1)
                if self.rows and self.rows[-1]["iteration"] == self.iteration:
                    r = self.rows[-1]
                    bar.set_postfix(d=f"{r['d_adv']:.3g}", g=f"{r['g_adv']:.3g}", A=f"{r['attention_mean']:.2f}")
                if self.iteration % self.checkpoint_every == 0 and self.iteration < until:
                    self.save()
        path = self.save()
        report = self.probe()
        if report.saturated or report.empty:
            warnings.warn(f"GANimation after {self.iteration} iterations: {report.message}",
                          AttentionSaturationWarning, stacklevel=2)
        return Result(self.gan(), self.history, dict(self.config), self.iteration, self.resumed_from, path,
                      report, time.perf_counter() - start_time)


def train(images, aus=None, *, iterations: int, seed: int, batch_size: int = 25, size: int = 128,
          device="auto", checkpoint_dir=None, resume: bool = True, progress: bool = True,
          log_every: int = 10, **options) -> Result:
    """Train GANimation on faces with AU labels; resume from `checkpoint_dir` when possible.

    images: uint8 N x H x W x 3 (square face crops; resized to `size`) with `aus` N x 17 in
    [0, 1], or a torch Dataset whose items are (image, aus). `iterations` counts critic steps
    (the generator steps every 5th). Defaults follow the paper: batch 25, 128 px, Adam 1e-4
    (0.5, 0.999), the last third of the iterations with linear lr decay (20 + 10 epochs), loss
    weights DEFAULT_WEIGHTS. `options` go to `Trainer` (width, residual_blocks, critic_steps,
    lr, betas, decay_fraction, weights, flip, checkpoint_every, au_warmup).
    """
    trainer = Trainer(images, aus, iterations=iterations, seed=seed, batch_size=batch_size, size=size,
                      device=device, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                      log_every=log_every, **options)
    return trainer.run()


# ---------------------------------------------------------------------------------------------
# Command line: python -m mielib gan ...


def _read_training_set(path: Path, aus_csv: Path | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from .clip import read_image

    if path.suffix == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"{path}: file not found")
        with np.load(path) as npz:
            missing = {"images", "aus"} - set(npz.files)
            if missing:
                raise ValueError(f"{path}: missing array(s) {sorted(missing)}; expected 'images' (N x H x W x 3 uint8) "
                                 f"and 'aus' (N x 17 in [0, 1]); found {npz.files}")
            try:
                images, aus = npz["images"], npz["aus"]
            except ValueError as exc:  # object arrays: loading them would unpickle, which mielib never does
                raise ValueError(f"{path}: cannot read its arrays ({exc}); save plain numeric arrays, 'images' as "
                                 "uint8 and 'aus' as float, with np.savez") from None
            return _check_images(images, str(path)), au.validate(aus, where=f"{path}: aus")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: neither a folder of images nor an .npz file")
    csv = aus_csv or path / "aus.csv"
    if not csv.exists():
        raise FileNotFoundError(f"{csv}: AU table not found; give --aus CSV with a 'file' column and "
                                f"{au.LABELS[0]}..{au.LABELS[-1]} (0..1) or OpenFace {au.OPENFACE_COLUMNS[0]}.. (0..5)")
    table = pd.read_csv(csv)
    table.columns = [c.strip() for c in table.columns]
    if "file" not in table.columns:
        raise ValueError(f"{csv}: needs a 'file' column naming each image")
    if all(c in table.columns for c in au.LABELS):
        z = au.validate(table[list(au.LABELS)].to_numpy(), where=str(csv))
    elif all(c in table.columns for c in au.OPENFACE_COLUMNS):
        z = au.from_openface(table[list(au.OPENFACE_COLUMNS)].to_numpy(), where=str(csv))
    else:
        raise ValueError(f"{csv}: needs the 17 AU columns {au.LABELS[0]}..{au.LABELS[-1]} (0..1) or "
                         f"{au.OPENFACE_COLUMNS[0]}..{au.OPENFACE_COLUMNS[-1]} (OpenFace 0..5)")
    images = []
    for name in table["file"]:
        img = read_image(path / str(name))
        if img.shape[0] != img.shape[1]:
            raise ValueError(f"{path / str(name)}: GANimation trains on square face crops; got {img.shape[1]} x {img.shape[0]}")
        if img.shape[0] != size:
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
        images.append(img)
    if not images:
        raise ValueError(f"{csv}: no rows")
    return np.stack(images), z


def _check_out(out: Path, key: str) -> None:
    """`gan train --out`, treated as `miex build --out` is: a new or empty folder, or a training
    run of this same configuration (its checkpoint ganimation-<key>.pt and the history.csv
    beside it). Anything else is refused, never written into or overwritten."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a checkpoint folder")
    if not out.exists():
        return
    # Hidden *.tmp files are what a killed atomic write leaves; they are not the user's.
    names = sorted(p.name for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp")))
    own = CHECKPOINT_PATTERN.format(key=key)
    if not names or (own in names and set(names) <= {own, "history.csv"}):
        return
    others = [n for n in names if n.startswith("ganimation-") and n.endswith(".pt") and n != own]
    if others:
        raise ValueError(f"--out {out} holds a GANimation training run of another configuration ({', '.join(others)}; "
                         f"this one would be {own}: sizes, weights, seed or data differ). Use another folder, or "
                         "delete that one to start over")
    shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
    raise ValueError(f"--out {out} is not empty and holds no training run of this configuration (found: {shown}); "
                     "mielib will not write into it. Choose a new or empty folder")


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mielib gan", description="Train or apply GANimation.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train GANimation on faces with AU labels (resumes from --out)",
                       description="Train GANimation (Pumarola et al. 2018, the MiE-X generator G) on face images "
                                   "with AU intensity labels. --out is a new or empty folder, or this same "
                                   "configuration's run, which training resumes from; it receives the checkpoint "
                                   "and history.csv.")
    t.add_argument("--images", required=True, type=Path,
                   help="an .npz with 'images' (N x H x W x 3 uint8) and 'aus' (N x 17, 0..1), or a folder of images")
    t.add_argument("--aus", type=Path, help="for a folder: CSV with 'file' and AU01..AU45 (0..1) or AU01_r.. (0..5); "
                                            "default FOLDER/aus.csv")
    t.add_argument("--out", required=True, type=Path, help="checkpoint folder (training resumes from it)")
    t.add_argument("--iterations", required=True, type=int, help="critic steps (the generator steps every 5th)")
    t.add_argument("--size", type=int, default=128, help="image size in px (paper: 128)")
    t.add_argument("--batch-size", type=int, default=25, help="paper: 25")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of weights, batches and target AUs (default 0); part of the configuration")
    t.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (paper: 1e-4)")
    t.add_argument("--au-warmup", type=int, default=0,
                   help="first iterations in which the critic only learns to read AUs (not in the paper; "
                        "helps short CPU runs whose attention saturates)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--log-every", type=int, default=10, help="iterations per history row")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("edit", help="apply a trained generator to one image",
                       description="Apply a trained GANimation generator to one face image, moving it to the "
                                   "given AU intensities (AUs not named are 0), and write the result as a PNG.")
    e.add_argument("--checkpoint", required=True, type=Path, help="checkpoint file or folder")
    e.add_argument("--image", required=True, type=Path, help="input face image")
    e.add_argument("--au", action="append", default=[], metavar="AU12=0.3", help="target AU intensity 0..1 (repeat)")
    e.add_argument("--out", required=True, type=Path, help="output PNG")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)

    try:
        if args.command == "train":
            images, z = _read_training_set(args.images, args.aus, args.size)
            trainer = Trainer(images, z, iterations=args.iterations, seed=args.seed, batch_size=args.batch_size,
                              size=args.size, device=args.device, checkpoint_dir=None, progress=not args.quiet,
                              log_every=args.log_every, lr=args.lr, au_warmup=args.au_warmup)
            _check_out(args.out, trainer.key)  # before anything is written there
            trainer.attach(args.out)
            result = trainer.run()
            store.write_text(args.out / "history.csv", result.history.to_csv(index=False))
            print(f"trained to iteration {result.iteration} (resumed from {result.resumed_from}); "
                  f"checkpoint {result.checkpoint}; history {args.out / 'history.csv'}")
            print(result.attention.message)
        else:
            from PIL import Image

            from .clip import read_image

            values = {}
            for item in args.au:
                name, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"--au {item!r}: write AU=VALUE, e.g. AU12=0.3")
                try:
                    values[name] = float(value)
                except ValueError:
                    raise ValueError(f"--au {item!r}: {value!r} is not a number") from None
            gan = load(args.checkpoint, device=args.device)
            out = gan.edit(read_image(args.image), au.vector(values))
            with store.atomic_path(args.out) as tmp:
                Image.fromarray(out).save(tmp, format="PNG")
            print(f"wrote {args.out}")
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
