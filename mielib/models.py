"""Recognition models: ResNet-18, ApexME, Branches and DTSCNN, built by name for the trainer.

Used by notebooks 04 (MiE-X Table 1), 05 (Table 2), 06-09 (Branches everywhere). Each model
declares the torch view it eats in `model.inputs`: "onset_apex", "apex" or "stack"; with the
`input="flow"` representation it eats the view `view_for(name, "flow")` instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: The view each model name takes, so a trainer can pick frames before building anything.
INPUTS = {"apexme": "apex", "branches": "onset_apex", "dtscnn": "stack"}
#: Input representations: "frames" (the papers': onset/apex RGB frames, DTSCNN frame stacks) and
#: "flow" (onset -> apex optical flow, mielib.flow; ApexME: one ResNet-18 on the 3-channel flow,
#: Branches: onset frame + flow, DTSCNN: 2-channel flow stacks with input_mode="flow").
INPUT_KINDS = ("frames", "flow")
_FLOW_VIEWS = {"apexme": "flow", "branches": "onset_flow", "dtscnn": "flow_stack"}


def view_for(name: str, input: str = "frames") -> str:
    """The view (experiments.FoldData's `view`) model `name` reads with representation `input`."""
    key = str(name).lower()
    if key not in INPUTS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(INPUTS)}")
    if input not in INPUT_KINDS:
        raise ValueError(f"unknown input {input!r}; use 'frames' (the papers' onset/apex frames) or 'flow' "
                         "(onset -> apex optical flow)")
    return INPUTS[key] if input == "frames" else _FLOW_VIEWS[key]


@contextmanager
def _seeded(seed: int | None):
    """Initialise parameters from `seed` without touching the caller's global torch RNG."""
    if seed is None:
        yield
        return
    # devices=[]: CPU generator only; parameters are created on CPU and moved later.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


# ---------------------------------------------------------------------------------------------
# ResNet-18, with torchvision's parameter and buffer names so its ImageNet weights load as-is

def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlock x [2, 2, 2, 2], widths 64-128-256-512), torchvision's key names.

    `n_classes=None` makes a backbone: `fc` is an identity and `forward` returns the 512-d
    pooled feature. Adaptive pooling lets it take any input of at least 32x32 pixels.
    """

    feature_dim = 512

    def __init__(self, n_classes: int | None = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        c_in = 64
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c_in, width, stride), BasicBlock(width, width)))
            c_in = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity() if n_classes is None else nn.Linear(512, n_classes)
        self._init()

    def _init(self) -> None:
        # torchvision's initialisation: He-normal convolutions, unit BN scale, zero BN shift.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d globally average-pooled feature of a B x C x H x W batch."""
        _check_image(x, "ResNet18")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _check_image(x: torch.Tensor, who: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{who}: expected a batch B x C x H x W, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < 32:
        raise ValueError(f"{who}: frames must be at least 32x32 pixels, got {tuple(x.shape[-2:])}")


def _head(in_dim: int, hidden: tuple[int, ...], n_classes: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each hidden width, then the class layer (last module)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_dim = width
    layers.append(nn.Linear(in_dim, n_classes))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# The MiE-X baselines

class ApexME(nn.Module):
    """ApexME as re-implemented by MiE-X: one ResNet-18 on the apex frame.

    The head is 512 -> FC 128 -> FC 32 -> classes like Branches (the MiE-X supplement says the
    two differ only in the number of branches); `hidden=()` gives a single linear layer.
    Call `model(apex)` or `model(onset, apex)`: the apex is always the last argument.
    """

    inputs = "apex"

    def __init__(self, n_classes: int, hidden: tuple[int, ...] = (128, 32), dropout: float = 0.5):
        super().__init__()
        self.n_classes = n_classes
        self.backbone = ResNet18(None)
        self.head = _head(ResNet18.feature_dim, tuple(hidden), n_classes, dropout)

    def embed(self, *frames: torch.Tensor) -> torch.Tensor:
        """The 512-d feature of the apex frame."""
        if not 1 <= len(frames) <= 2:
            raise TypeError(f"ApexME takes (apex) or (onset, apex), got {len(frames)} tensors")
        return self.backbone(frames[-1])

    def forward(self, *frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(*frames))


class Branches(nn.Module):
    """Branches (Liu et al., FG 2019; MiE-X [21]): two unshared ResNet-18s, onset and apex.

    The 512-d pooled features of both are concatenated (1024) -> FC 128 -> FC 32 -> classes,
    with ReLU and dropout between (the papers give no dropout rate; 0.5 is our choice).
    """

    inputs = "onset_apex"

    def __init__(self, n_classes: int, hidden: tuple[int, ...] = (128, 32), dropout: float = 0.5):
        super().__init__()
        self.n_classes = n_classes
        self.onset = ResNet18(None)
        self.apex = ResNet18(None)
        self.head = _head(2 * ResNet18.feature_dim, tuple(hidden), n_classes, dropout)

    def embed(self, onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
        """The 1024-d concatenated feature (onset half first)."""
        if onset.shape != apex.shape:
            raise ValueError(f"Branches: onset {tuple(onset.shape)} and apex {tuple(apex.shape)} batches differ in shape")
        return torch.cat([self.onset(onset), self.apex(apex)], dim=1)

    def forward(self, onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(onset, apex))


# ---------------------------------------------------------------------------------------------
# DTSCNN

class _Stream3D(nn.Module):
    """A shallow 3D CNN: blocks of Conv3d(3x3x3)-BN-ReLU, each followed by max pooling."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        blocks = []
        for width in widths:
            blocks.append(nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1, bias=False),
                                        nn.BatchNorm3d(width), nn.ReLU(inplace=True)))
            in_channels = width
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            # Pool by 2 along each axis still at least 2 long, so tiny test inputs run too.
            # The first pooling keeps time, as in C3D, so short stacks are not collapsed early.
            t, h, w = x.shape[-3:]
            kernel = (2 if (i > 0 and t >= 2) else 1, 2 if h >= 2 else 1, 2 if w >= 2 else 1)
            if kernel != (1, 1, 1):
                x = F.max_pool3d(x, kernel)
        return torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)


class DTSCNN(nn.Module):
    """Dual Temporal Scale CNN (Peng et al., Front. Psychol. 2017), simplified.

    Two shallow 3D-CNN streams see the same clip resampled to two temporal lengths (`scales`;
    the paper normalises clips to a short and a long frame count so each stream suits a
    different frame rate). Their pooled features are concatenated, then dropout and a linear
    classifier. Simplifications, stated: stream depth and widths (`widths`) are ours; temporal
    resampling is linear interpolation, a stand-in for the temporal interpolation model the
    paper uses; fusion is one softmax head trained end to end; frames are resized to
    `frame_size` pixels to bound memory (None keeps the input size).

    Input: B x C x T x H x W. `input_mode` says what C holds: "rgb" (3), "gray" (RGB converted
    to luma inside, 1 channel in the streams), "diff" (luma frame differences, T-1 of them: a
    cheap motion signal in place of the paper's optical flow) or "flow" (a precomputed
    2-channel optical-flow stack, as in the paper).
    """

    inputs = "stack"
    _CHANNELS = {"rgb": 3, "gray": 1, "diff": 1, "flow": 2}

    def __init__(self, n_classes: int, scales: tuple[int, int] = (32, 64), input_mode: str = "rgb",
                 widths: tuple[int, ...] = (16, 32, 64, 128), frame_size: int | None = 64, dropout: float = 0.5):
        super().__init__()
        if input_mode not in self._CHANNELS:
            raise ValueError(f"DTSCNN: unknown input_mode {input_mode!r}; use one of {', '.join(self._CHANNELS)}")
        if len(scales) != 2 or min(scales) < 1:
            raise ValueError(f"DTSCNN: scales must be two positive frame counts, got {scales!r}")
        self.n_classes = n_classes
        self.scales = tuple(int(s) for s in scales)
        self.input_mode = input_mode
        self.frame_size = frame_size
        c = self._CHANNELS[input_mode]
        self.streams = nn.ModuleList([_Stream3D(c, tuple(widths)) for _ in self.scales])
        dim = sum(s.out_dim for s in self.streams)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"DTSCNN: expected a stack B x C x T x H x W, got shape {tuple(x.shape)}")
        want = 2 if self.input_mode == "flow" else 3
        if x.shape[1] != want:
            raise ValueError(f"DTSCNN(input_mode={self.input_mode!r}) expects {want} channels, got {x.shape[1]}")
        if self.input_mode in ("gray", "diff"):
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)
        if self.input_mode == "diff":
            if x.shape[2] < 2:
                raise ValueError("DTSCNN(input_mode='diff') needs at least 2 frames")
            x = x[:, :, 1:] - x[:, :, :-1]
        return x

    def embed(self, stack: torch.Tensor) -> torch.Tensor:
        x = self._prepare(stack)
        h, w = x.shape[-2:]
        if self.frame_size is not None:
            h = w = self.frame_size
        feats = []
        for stream, t in zip(self.streams, self.scales):
            # align_corners=True: an unchanged axis is copied exactly, not re-sampled.
            xs = F.interpolate(x, size=(t, h, w), mode="trilinear", align_corners=True)
            feats.append(stream(xs))
        return torch.cat(feats, dim=1)

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(stack))


# ---------------------------------------------------------------------------------------------
# Registry and heads

_REGISTRY = {"apexme": ApexME, "branches": Branches, "dtscnn": DTSCNN}
NAMES = tuple(_REGISTRY)


def build(name: str, n_classes: int, *, seed: int | None = None, **kw) -> nn.Module:
    """A fresh model by name ("apexme", "branches", "dtscnn"); `seed` fixes its initial weights.

    Keyword arguments go to the model's constructor (e.g. `scales=(8, 16)` for DTSCNN).
    The model sits on the CPU; move it with `.to(device)`.
    """
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(NAMES)}")
    if int(n_classes) < 2:
        raise ValueError(f"{name}: n_classes must be at least 2, got {n_classes}")
    with _seeded(seed):
        model = _REGISTRY[key](int(n_classes), **kw)
    model.name = key
    return model


def new_head(model: nn.Module, n_classes: int, *, seed: int | None = None) -> nn.Module:
    """Replace the class layer for a new label space (pre-train, then fine-tune).

    Only the last linear layer is re-initialised; the hidden FC layers (128, 32) keep their
    pre-trained weights. The new layer lands on the model's device. Returns the model.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Sequential) or not isinstance(head[-1], nn.Linear):
        raise TypeError(f"new_head: {type(model).__name__} has no `head` ending in a linear layer")
    old = head[-1]
    with _seeded(seed):
        new = nn.Linear(old.in_features, int(n_classes))
    head[-1] = new.to(device=old.weight.device, dtype=old.weight.dtype)
    model.n_classes = int(n_classes)
    return model


# ---------------------------------------------------------------------------------------------
# ImageNet weights, supplied by the user (mielib never downloads)

def _backbones(model: nn.Module) -> list[tuple[str, ResNet18]]:
    if isinstance(model, ResNet18):
        return [("", model)]
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, ResNet18)]
    if not found:
        raise TypeError(f"load_imagenet: {type(model).__name__} contains no ResNet-18")
    return found


def _unwrap(obj, path: Path) -> dict:
    # Checkpoints are sometimes saved as {"state_dict": ...} or with DataParallel's "module."
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _listing(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_imagenet(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a torchvision ResNet-18 ImageNet state dict (a .pth the user supplies) into every
    ResNet-18 inside `model` (both branches of Branches, the backbone of ApexME, or a bare
    ResNet18). Loaded with `weights_only=True`, so a checkpoint cannot run code.

    `fc.*` is loaded only where the model's fc has the same shape; otherwise it is ignored
    (a backbone or a different number of classes keeps its own head). Any other missing,
    unexpected or mis-shaped key raises ValueError listing them. Returns a report:
    {"path", "backbones", "loaded", "ignored"}.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such weights file. mielib never downloads; place torchvision's ResNet-18 "
            "ImageNet state dict (e.g. resnet18-f37072fd.pth) there, or train from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or pickled-object file: name it, say why
        raise ValueError(f"{path}: cannot be read as a weights-only state dict ({exc})") from None
    state = _unwrap(state, path)
    report = {"path": str(path), "backbones": [], "loaded": 0, "ignored": []}
    for prefix, net in _backbones(model):
        own = net.state_dict()
        use, ignored = {}, []
        for k, v in state.items():
            if k.startswith("fc."):
                if k in own and own[k].shape == v.shape:
                    use[k] = v
                else:
                    ignored.append(k)
            else:
                use[k] = v
        # The model's own fc stays when the file's fc does not fit it (a new label space).
        missing = [k for k in own if k not in use and not (k.startswith("fc.") and ignored)]
        unexpected = [k for k in use if k not in own]
        shapes = [f"{k} {tuple(use[k].shape)} vs {tuple(own[k].shape)}" for k in use
                  if k in own and use[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            parts = [f"{path}: does not match a torchvision ResNet-18"]
            if missing:
                parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
            if unexpected:
                parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
            if shapes:
                parts.append(f"shape mismatches: {_listing(shapes)}")
            raise ValueError("; ".join(parts))
        net.load_state_dict({**own, **use}, strict=True)
        report["backbones"].append(prefix or "(model)")
        report["loaded"] += len(use)
        report["ignored"] = sorted(set(report["ignored"]) | set(ignored))
    return report
