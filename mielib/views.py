"""Torch Dataset views of a ClipSet: onset/apex pairs, apex frames and frame stacks, and their
optical-flow counterparts.

The classifiers of notebooks 04-06 and 10-11 train and test on these. With `input="frames"`
(the papers'): Branches `OnsetApex`, ApexME `Apex`, DTSCNN `Stack`. With `input="flow"`:
Branches `OnsetFlow`, ApexME `Flow`, DTSCNN `FlowStack` (`models.view_for`). Views only decode,
resize, normalise and compute flow; train-time augmentation belongs to the training loop and
never runs at test time.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mielib import au
from mielib.clip import Clip, ClipSet


class _ClipView(Dataset):
    """Shared machinery: label lookup, frame decoding, resizing, normalising and caching."""

    def __init__(
        self,
        clips: ClipSet | Sequence[Clip],
        *,
        size: int | tuple[int, int] = 128,
        labels: Sequence[str] = au.MEGC3,
        label_attr: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        cache: bool = False,
    ):
        self.clips = list(clips)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.classes = tuple(labels)
        # The MEGC 3-class space reads label3; any other space reads the dataset's own label.
        self.label_attr = label_attr or ("label3" if self.classes == tuple(au.MEGC3) else "label")
        self.labels = [self._label_index(c) for c in self.clips]
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (per channel), or neither")
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        if self.std is not None and bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {list(std)}")
        self._cache: dict[tuple[int, int], torch.Tensor] | None = {} if cache else None

    def _label_index(self, clip: Clip) -> int:
        value = getattr(clip, self.label_attr)
        if value not in self.classes:
            hint = (
                "; the MEGC rules drop it: filter with clipset.where(lambda c: c.label3 is not None)"
                if value is None and self.label_attr == "label3" else ""
            )
            raise ValueError(
                f"clip {clip.key}: {self.label_attr} {value!r} is not in the label space "
                f"({', '.join(self.classes)}){hint}"
            )
        return self.classes.index(value)

    def __len__(self) -> int:
        return len(self.clips)

    def frame(self, i: int, position: int) -> torch.Tensor:
        """Frame `position` of clip `i` as a float C x H x W tensor (normalised if asked)."""
        key = (i, position)
        pixels = self._cache.get(key) if self._cache is not None else None
        if pixels is None:
            pixels = _resize(self.clips[i].frames[position], self.size)
            if self._cache is not None:
                self._cache[key] = pixels  # uint8: a quarter of the float memory
        x = pixels.float().div_(255.0)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def flow(self, i: int, start: int | None = None, end: int | None = None) -> torch.Tensor:
        """The optical flow of clip `i` from frame `start` (default onset) to `end` (default apex),
        3 x H x W float (mielib.flow: dx, dy, magnitude in pixels of a 128-px face). Onset -> apex
        flows precomputed by `paper.load_keyframes(..., flow=True)` are used as they are."""
        from mielib import flow

        clip = self.clips[i]
        start = clip.onset if start is None else int(start)
        end = clip.apex if end is None else int(end)
        if self.size[0] != self.size[1]:
            raise ValueError(f"flow views need square frames, got size {self.size}")
        pre = getattr(clip.frames, "flow", None)
        if pre is not None and (start, end) == (clip.onset, clip.apex) and pre.shape[-1] == self.size[0]:
            return torch.from_numpy(np.asarray(pre, dtype=np.float32))
        flows = getattr(clip.frames, "flows", None)  # onset -> every frame, precomputed (a loaded sequence)
        if flows is not None and start == clip.onset and flows.shape[-1] == self.size[0]:
            return torch.from_numpy(np.asarray(flows[end], dtype=np.float32))
        key = ("flow", i, start, end)
        cached = self._cache.get(key) if self._cache is not None else None
        if cached is None:
            cached = torch.from_numpy(flow.compute(clip.frames[start], clip.frames[end], self.size[0]))
            if self._cache is not None:
                self._cache[key] = cached
        return cached


def _resize(frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x size uint8 tensor, PIL bilinear."""
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 images, got {arr.dtype}")
    height, width = size
    if arr.shape[:2] != (height, width):
        arr = np.asarray(Image.fromarray(arr).resize((width, height), Image.BILINEAR))
    return torch.tensor(arr).permute(2, 0, 1).contiguous()  # a copy: PIL's arrays are read-only


class OnsetApex(_ClipView):
    """(onset, apex, label): two C x H x W frames and the class index (the Branches input)."""

    def __getitem__(self, i: int):
        clip = self.clips[i]
        return self.frame(i, clip.onset), self.frame(i, clip.apex), self.labels[i]


class Apex(_ClipView):
    """(apex, label): the apex frame and the class index (the ApexME input)."""

    def __getitem__(self, i: int):
        return self.frame(i, self.clips[i].apex), self.labels[i]


class Stack(_ClipView):
    """(frames, label): `n_frames` frames sampled uniformly from onset to apex (`until="apex"`)
    or to offset (`until="offset"`) as one C x T x H x W tensor (torch's 3D-convolution layout,
    what DTSCNN takes once batched), and the class index (DTSCNN)."""

    def __init__(self, clips, *, n_frames: int = 8, until: str = "offset", **kwargs):
        if n_frames < 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        if until not in ("apex", "offset"):
            raise ValueError(f"until must be 'apex' or 'offset', not {until!r}")
        super().__init__(clips, **kwargs)
        self.n_frames, self.until = n_frames, until

    def positions(self, i: int) -> list[int]:
        """The frame positions sampled for clip `i` (repeats when the span is shorter than K)."""
        clip = self.clips[i]
        end = clip.apex if self.until == "apex" else clip.offset
        return [int(p) for p in np.rint(np.linspace(clip.onset, end, self.n_frames))]

    def __getitem__(self, i: int):
        return torch.stack([self.frame(i, p) for p in self.positions(i)], dim=1), self.labels[i]


class Flow(_ClipView):
    """(flow, label): the onset -> apex optical flow, 3 x H x W (ApexME with `input="flow"`: one
    ResNet-18 on the flow, as OFF-ApexNet feeds its network)."""

    def __getitem__(self, i: int):
        return self.flow(i), self.labels[i]


class OnsetFlow(_ClipView):
    """(onset, flow, label): the onset frame and the onset -> apex flow (Branches with
    `input="flow"`: one branch keeps the face's appearance, the other sees the motion)."""

    def __getitem__(self, i: int):
        return self.frame(i, self.clips[i].onset), self.flow(i), self.labels[i]


class FlowStack(Stack):
    """(flows, label): the flow from the onset to each of `n_frames` positions sampled as `Stack`
    does, horizontal and vertical components only, as one 2 x T x H x W tensor (DTSCNN with
    `input_mode="flow"`, the paper's optical-flow stacks)."""

    def __getitem__(self, i: int):
        onset = self.clips[i].onset
        return torch.stack([self.flow(i, onset, p)[:2] for p in self.positions(i)], dim=1), self.labels[i]
