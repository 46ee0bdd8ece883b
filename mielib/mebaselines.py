"""The deep baselines AU-GACN compares against (Xie et al. 2020, §4.3, Tables 2-6): MicroExpSTCNN,
ELRCN (spatial enrichment) and CapsuleNet, re-implemented small from their own papers' descriptions,
with the views they read. Used by notebook 10 (AU-GACN / AU-ICGAN); MER-GCN lives elsewhere.

Each model is a factory `(n_classes, **model_kw) -> nn.Module` (experiments.cross_validate's
`model`), declares the view it reads in `inputs`, and is built for one input size (`size` pixels,
`frames` frames): a mismatched view raises an error naming both shapes. `width` scales every layer,
so the `small` preset (32 px, 8 frames) trains in milliseconds per sample; each class says where it
is smaller than its paper.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mielib import au, views
from mielib.clip import Clip, ClipSet
from mielib.flow import REFERENCE_SIZE
from mielib.models import BasicBlock, _seeded

# ---------------------------------------------------------------------------------------------
# Optical strain and the ELRCN view


def optical_strain(flow: torch.Tensor, spacing: float = 1.0) -> torch.Tensor:
    """The optical strain magnitude of a flow field `... x C x H x W` (C >= 2: dx, dy first), `... x H x W`.

    With u, v the horizontal and vertical displacements, the strain tensor's entries are
    exx = du/dx, eyy = dv/dy and exy = (du/dy + dv/dx) / 2, and the magnitude is
    sqrt(exx^2 + eyy^2 + 2 exy^2) (Liong et al.'s optical strain, ELRCN's third input). Derivatives
    are central differences (one-sided on the border), exact for a linear field. `spacing` is the
    grid step in the flow's own units: mielib's flows are in pixels of a 128-px face, so at
    `size` pixels it is 128 / size, and the strain (dimensionless) does not depend on the size.
    """
    if flow.dim() < 3 or flow.shape[-3] < 2:
        raise ValueError(f"optical_strain: expected a flow ... x C x H x W with C >= 2 (dx, dy), "
                         f"got {tuple(flow.shape)}")
    if min(flow.shape[-2:]) < 2:
        raise ValueError(f"optical_strain: the flow needs at least 2x2 pixels for derivatives, "
                         f"got {tuple(flow.shape[-2:])}")
    if spacing <= 0:
        raise ValueError(f"optical_strain: spacing must be positive, got {spacing}")
    u, v = flow[..., 0, :, :].float(), flow[..., 1, :, :].float()
    du_dy, du_dx = torch.gradient(u, spacing=float(spacing), dim=(-2, -1))
    dv_dy, dv_dx = torch.gradient(v, spacing=float(spacing), dim=(-2, -1))
    exy = (du_dy + dv_dx) / 2
    return torch.sqrt(du_dx ** 2 + dv_dy ** 2 + 2 * exy ** 2)


class FrameFlowStack(views.Stack):
    """(x, label) for ELRCN-SE: at each of `n_frames` positions sampled as `Stack` does, the frame
    (3 channels), the onset -> frame optical flow's dx, dy (2, as `FlowStack`) and its optical
    strain magnitude (1), stacked channel-wise into one 6 x T x H x W tensor."""

    channels = ("r", "g", "b", "dx", "dy", "strain")

    def __getitem__(self, i: int):
        onset = self.clips[i].onset
        spacing = REFERENCE_SIZE / self.size[0]
        steps = []
        for p in self.positions(i):
            uv = self.flow(i, onset, p)[:2]
            steps.append(torch.cat([self.frame(i, p), uv, optical_strain(uv, spacing)[None]], dim=0))
        return torch.stack(steps, dim=1), self.labels[i]


# ---------------------------------------------------------------------------------------------
# Shared checks


def _check_input(x: torch.Tensor, who: str, expected: tuple[int, ...]) -> None:
    """Raise unless `x` is a batch of `expected`-shaped samples (the shape the model was built for)."""
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{who}: built for samples of shape {expected} (channels, [frames,] height, width), "
                         f"got a batch of shape {tuple(x.shape)}; build it with the view's size and n_frames")


def _positive(who: str, **values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{who}: {name} must be at least 1, got {value}")


# ---------------------------------------------------------------------------------------------
# MicroExpSTCNN


class MicroExpSTCNN(nn.Module):
    """MicroExpSTCNN (Reddy et al., IJCNN 2019): one 3D convolution over the whole face's frame stack,
    3D max pooling, dropout, a dense layer, dropout and a softmax classifier.

    The paper: 32 filters of 3 x 3 x 15 (the temporal extent covering 15 of CASME II's 18
    interpolated frames, no padding), 3 x 3 x 3 max pooling, dropout 0.5, dense 128, dropout 0.5,
    on 64 x 64 faces of 18 frames. Here: `width` filters (default 32, the paper's) and a dense
    layer of 4 `width` (128); the temporal kernel keeps the paper's share of the stack (15/18 of
    `frames`, 7 of 8; `temporal_kernel` overrides it), and the pooling's temporal extent is cut to
    what is left when fewer than 3 steps remain. RGB frames (`in_channels=3`) as the views give.
    """

    inputs = "stack"

    def __init__(self, n_classes: int, *, in_channels: int = 3, frames: int = 8, size: int = 32, width: int = 32,
                 temporal_kernel: int | None = None, dropout: float = 0.5, seed: int | None = None):
        super().__init__()
        _positive("MicroExpSTCNN", n_classes=n_classes, in_channels=in_channels, frames=frames, width=width)
        kt = max(1, round(frames * 15 / 18)) if temporal_kernel is None else int(temporal_kernel)
        if not 1 <= kt <= frames:
            raise ValueError(f"MicroExpSTCNN: temporal_kernel must be 1..frames ({frames}), got {kt}")
        if size < 6:
            raise ValueError(f"MicroExpSTCNN: size must be at least 6 pixels (3x3 convolution, then 3x3 pooling), "
                             f"got {size}")
        self.n_classes, self.width = int(n_classes), int(width)
        self.sample_shape = (int(in_channels), int(frames), int(size), int(size))
        t_out, s_out = frames - kt + 1, size - 2
        self.pool = (min(3, t_out), 3, 3)
        flat = width * (t_out // self.pool[0]) * (s_out // 3) ** 2
        with _seeded(seed):
            self.conv = nn.Conv3d(in_channels, width, (kt, 3, 3))
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat, 4 * width), nn.ReLU(inplace=True),
                                      nn.Dropout(dropout), nn.Linear(4 * width, n_classes))

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        _check_input(stack, "MicroExpSTCNN", self.sample_shape)
        x = F.max_pool3d(F.relu(self.conv(stack)), self.pool)
        return self.head(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------
# ELRCN


class ELRCN(nn.Module):
    """ELRCN-SE (Khor et al., FG 2018), the spatially enriched variant: a CNN encodes each time step of
    channel-stacked inputs (frame, optical flow dx and dy, optical strain: `FrameFlowStack`) into a
    feature vector, an LSTM runs over the steps, and a linear layer classifies its last state.

    The paper's CNN is VGG-Face (13 convolutions and two 4096-d layers, pre-trained on faces) at
    224 px. Here: three blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling, of
    `width`, 2 `width` and 4 `width` channels, trained from scratch, then a dense layer of
    8 `width` (the frame feature) and an LSTM of 8 `width` units. The batch norm is ours: trained
    from scratch, it evens out channels on different scales (intensities in [0, 1], flow in pixels).

    AU-GACN §4.3 ran ELRCN's spatio-temporal architecture "with only optical flow images as the
    input"; `FrameFlowStack` keeps ELRCN-SE's frame channels too, and `in_channels=3` on its last
    three channels (flow and strain) would be the flow-only reading.
    """

    inputs = "frame_flow_stack"

    def __init__(self, n_classes: int, *, in_channels: int = 6, frames: int = 8, size: int = 32, width: int = 12,
                 dropout: float = 0.5, seed: int | None = None):
        super().__init__()
        _positive("ELRCN", n_classes=n_classes, in_channels=in_channels, frames=frames, width=width)
        if size < 8 or size % 8:
            raise ValueError(f"ELRCN: size must be a multiple of 8 pixels (three 2x2 poolings), got {size}")
        self.n_classes, self.width = int(n_classes), int(width)
        self.sample_shape = (int(in_channels), int(frames), int(size), int(size))
        feature = 8 * width
        with _seeded(seed):
            layers: list[nn.Module] = []
            c = in_channels
            for w in (width, 2 * width, 4 * width):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                           nn.MaxPool2d(2)]
                c = w
            self.cnn = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * (size // 8) ** 2, feature),
                                     nn.ReLU(inplace=True))
            self.lstm = nn.LSTM(feature, feature, batch_first=True)
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature, n_classes))

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        _check_input(stack, "ELRCN", self.sample_shape)
        b, c, t, h, w = stack.shape
        frames = stack.transpose(1, 2).reshape(b * t, c, h, w)  # every time step through the same CNN
        features = self.cnn(frames).view(b, t, -1)
        _, (last, _) = self.lstm(features)
        return self.head(last[-1])


# ---------------------------------------------------------------------------------------------
# CapsuleNet


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Sabour et al.'s squashing: v = |s|^2 / (1 + |s|^2) * s / |s|, a vector of length below 1 with
    s's direction (a norm-3 vector comes out of length 0.9)."""
    n2 = (s * s).sum(dim=dim, keepdim=True)
    return s * (n2 / (1 + n2) / torch.sqrt(n2 + eps))


def route(u_hat: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Dynamic routing by agreement (Sabour et al. 2017, Procedure 1).

    `u_hat`: predictions B x n_in x n_out x D of every input capsule for every output capsule.
    Logits b start at zero; each iteration couples each input to the outputs by c = softmax_j(b),
    forms s_j = sum_i c_ij u_hat_ij and v_j = squash(s_j), and (but the last) adds the agreement
    u_hat_ij . v_j to b. Returns the output capsules v, B x n_out x D.
    """
    if iterations < 1:
        raise ValueError(f"route: iterations must be at least 1, got {iterations}")
    logits = torch.zeros(u_hat.shape[:3], dtype=u_hat.dtype, device=u_hat.device)
    for r in range(iterations):
        coupling = torch.softmax(logits, dim=2)
        v = squash((coupling.unsqueeze(-1) * u_hat).sum(dim=1))
        if r < iterations - 1:
            logits = logits + (u_hat * v.unsqueeze(1)).sum(dim=-1)
    return v


def margin_loss(lengths: torch.Tensor, y: torch.Tensor, m_plus: float = 0.9, m_minus: float = 0.1,
                lam: float = 0.5) -> torch.Tensor:
    """Sabour et al.'s margin loss on capsule lengths B x K: for the true class max(0, m+ - |v|)^2,
    for each other class lam * max(0, |v| - m-)^2, summed over classes, averaged over the batch."""
    if lengths.dim() != 2 or y.shape != lengths.shape[:1]:
        raise ValueError(f"margin_loss: lengths must be B x K with B labels, "
                         f"got {tuple(lengths.shape)} and {tuple(y.shape)}")
    present = F.one_hot(y.long(), lengths.shape[1]).to(lengths.dtype)
    loss = present * F.relu(m_plus - lengths) ** 2 + lam * (1 - present) * F.relu(lengths - m_minus) ** 2
    return loss.sum(dim=1).mean()


class CapsuleNet(nn.Module):
    """CapsuleNet (Van Quang et al., FG 2019 / MEGC 2019): the apex frame -> convolutional features ->
    primary capsules (8-D) -> one 16-D emotion capsule per class by dynamic routing (3 iterations),
    trained with the margin loss (m+ 0.9, m- 0.1, lambda 0.5); a capsule's length is its class score.

    The paper takes the first layers of an ImageNet ResNet-18 (to its 256-channel stage) on
    224-px apex frames, a further convolution and 32 primary-capsule maps. Here the features are
    a 3x3 stem and two of mielib's ResNet BasicBlocks (stride 2; `width`, 2 `width`, 4 `width`
    channels, trained from scratch), and `capsule_maps` maps of primary capsules (paper 32) come
    from a 3x3 stride-2 convolution: at 32 px a 4x4 grid, 128 capsules. No reconstruction decoder
    (the paper trains on the margin loss alone).

    `forward` returns the log capsule lengths B x K in training and evaluation alike: their argmax
    is the predicted class, and the trainer's softmax of them is the lengths normalised to sum 1.
    `criterion(outputs, y)` is the margin loss on their exponential (mielib.train.fit uses it).
    """

    inputs = "apex"

    def __init__(self, n_classes: int, *, in_channels: int = 3, size: int = 32, width: int = 16,
                 capsule_maps: int = 8, routing: int = 3, seed: int | None = None):
        super().__init__()
        _positive("CapsuleNet", n_classes=n_classes, in_channels=in_channels, width=width,
                  capsule_maps=capsule_maps, routing=routing)
        if size < 16 or size % 8:
            raise ValueError(f"CapsuleNet: size must be a multiple of 8 pixels, at least 16, got {size}")
        self.n_classes, self.width, self.routing = int(n_classes), int(width), int(routing)
        self.sample_shape = (int(in_channels), int(size), int(size))
        self.primary_dim, self.emotion_dim = 8, 16
        grid = size // 8
        self.n_primary = capsule_maps * grid * grid
        with _seeded(seed):
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                BasicBlock(width, 2 * width, stride=2), BasicBlock(2 * width, 4 * width, stride=2))
            self.primary = nn.Conv2d(4 * width, capsule_maps * self.primary_dim, 3, stride=2, padding=1)
            # One transformation matrix per (primary capsule, emotion capsule), Sabour's W_ij.
            self.weights = nn.Parameter(
                0.05 * torch.randn(self.n_primary, n_classes, self.emotion_dim, self.primary_dim))

    def capsules(self, apex: torch.Tensor) -> torch.Tensor:
        """The emotion capsules B x K x 16 of a batch of apex frames."""
        _check_input(apex, "CapsuleNet", self.sample_shape)
        x = self.primary(self.features(apex))
        b, _, h, w = x.shape
        # Capsule = 8 consecutive channels of one map at one grid cell.
        u = x.reshape(b, -1, self.primary_dim, h, w).permute(0, 1, 3, 4, 2).reshape(b, self.n_primary, self.primary_dim)
        # Routing in float32 even under mixed precision: squash and softmax of fp16 agreements overflow.
        with torch.autocast(apex.device.type, enabled=False):
            u = squash(u.float())
            u_hat = torch.einsum("jkdp,bjp->bjkd", self.weights.float(), u)
            return route(u_hat, self.routing)

    def forward(self, apex: torch.Tensor) -> torch.Tensor:
        lengths = self.capsules(apex).norm(dim=-1)
        return torch.log(lengths.clamp_min(1e-12))

    def criterion(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The margin loss on the capsule lengths (`outputs` are forward's log lengths)."""
        return margin_loss(outputs.float().exp(), y)


# ---------------------------------------------------------------------------------------------
# The table the notebook prints, and the views

#: Row label in AU-GACN's tables -> (model class, view, description with the citation).
BASELINES: dict[str, tuple[type[nn.Module], str, str]] = {
    "STCNN": (MicroExpSTCNN, "stack",
              "MicroExpSTCNN (Reddy et al., IJCNN 2019): 3D convolution, 3D max pooling and dense layers "
              "on the frame stack"),
    "ELRCN": (ELRCN, "frame_flow_stack",
              "ELRCN-SE (Khor et al., FG 2018): per-step CNN on frame + optical flow + optical strain, then an LSTM"),
    "CapsuleNet": (CapsuleNet, "apex",
                   "CapsuleNet (Van Quang et al., FG 2019): apex-frame CNN, primary and emotion capsules, "
                   "dynamic routing, margin loss"),
}


def view(name: str, clips: ClipSet | Sequence[Clip], *, size: int, labels: Sequence[str] = au.MEGC3,
         n_frames: int = 8, label_attr: str | None = None, **kw) -> views._ClipView:
    """The torch Dataset baseline `name` (a key of BASELINES) reads: a `views.Stack` for STCNN, a
    `FrameFlowStack` for ELRCN, a `views.Apex` for CapsuleNet (which ignores `n_frames`). Other
    keywords (`cache`, `until`, `mean`, `std`) go to the view."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known baselines: {', '.join(BASELINES)}")
    kind = BASELINES[name][1]
    common = dict(size=size, labels=labels, label_attr=label_attr, **kw)
    if kind == "apex":
        return views.Apex(clips, **common)
    cls = FrameFlowStack if kind == "frame_flow_stack" else views.Stack
    return cls(clips, n_frames=n_frames, **common)
