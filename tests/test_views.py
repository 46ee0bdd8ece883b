"""Torch views: onset/apex pairs, apex frames, frame stacks, labels, normalising and caching."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dataset_fixtures as fx
from mielib import au, datasets, views
from mielib.clip import ArrayFrames, Clip, ClipSet


def _clip(clip_id: str, label: str, dataset: str = "casme2", n: int = 9, onset: int = 0, apex: int = 4,
          offset: int = 8, frames=None) -> Clip:
    # Frame i is flat with value 10 * i, so a view's output names the frame it used.
    array = np.stack([np.full((8, 6, 3), 10 * i, np.uint8) for i in range(n)])
    return Clip(dataset, "sub01", clip_id, frames if frames is not None else ArrayFrames(array), 200.0,
                onset, apex, offset, label, au.to_megc3(dataset, label))


def _set():
    return ClipSet("casme2", [_clip("a", "happiness"), _clip("b", "disgust", onset=2, apex=3, offset=6)])


def test_onset_apex_pairs_are_resized_unit_range_tensors_with_megc3_labels():
    view = views.OnsetApex(_set(), size=4)
    assert len(view) == 2 and view.classes == au.MEGC3 and view.labels == [1, 0]
    onset, apex, label = view[1]
    assert onset.shape == (3, 4, 4) and onset.dtype == torch.float32
    assert torch.allclose(onset, torch.full_like(onset, 20 / 255)) and torch.allclose(apex, torch.full_like(apex, 30 / 255))
    assert label == 0  # disgust -> negative
    batch = next(iter(DataLoader(view, batch_size=2)))
    assert batch[0].shape == (2, 3, 4, 4) and batch[2].tolist() == [1, 0]


def test_apex_view_with_normalising_and_rectangular_size():
    view = views.Apex(_set(), size=(5, 3), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    apex, label = view[0]
    assert apex.shape == (3, 5, 3) and label == 1
    assert torch.allclose(apex, torch.full_like(apex, (40 / 255 - 0.5) / 0.25))
    with pytest.raises(ValueError, match="both mean and std"):
        views.Apex(_set(), mean=[0.5] * 3)


def test_resize_is_pil_bilinear():
    gradient = np.repeat(np.repeat(np.arange(8, dtype=np.uint8)[None, :, None] * 30, 8, 0), 3, 2)
    clip = _clip("g", "happiness", n=1, onset=0, apex=0, offset=0, frames=ArrayFrames(gradient[None]))
    from PIL import Image

    expected = np.asarray(Image.fromarray(gradient).resize((4, 4), Image.BILINEAR))
    got = views.Apex([clip], size=4)[0][0]
    assert torch.equal((got * 255).round().to(torch.uint8), torch.tensor(expected).permute(2, 0, 1))


def test_stack_samples_uniformly_until_apex_or_offset():
    clips = _set()
    to_offset = views.Stack(clips, n_frames=5, size=4)
    assert to_offset.positions(0) == [0, 2, 4, 6, 8]
    stack, label = to_offset[0]
    assert stack.shape == (3, 5, 4, 4) and label == 1  # C x T x H x W, torch's Conv3d layout
    assert torch.allclose(stack[0, :, 0, 0], torch.tensor([0, 20, 40, 60, 80]) / 255)
    to_apex = views.Stack(clips, n_frames=3, until="apex", size=4)
    assert to_apex.positions(0) == [0, 2, 4] and to_apex.positions(1) == [2, 2, 3]  # short span repeats
    with pytest.raises(ValueError, match="until must be"):
        views.Stack(clips, until="end")


def test_batched_stacks_feed_dtscnn():
    # DTSCNN's Conv3d streams take B x C x T x H x W: the DataLoader's batch of Stack items.
    from mielib import models

    stacks = views.Stack(_set(), n_frames=4, size=32)
    x, y = next(iter(DataLoader(stacks, batch_size=2)))
    assert x.shape == (2, 3, 4, 32, 32)
    net = models.build("dtscnn", 3, seed=0, scales=(2, 4), widths=(4, 8), frame_size=32).eval()
    assert net(x).shape == (2, 3)


def test_unknown_or_dropped_labels_name_the_clip():
    dropped = ClipSet("casme2", [_clip("ok", "happiness"), _clip("EP03_02", "sadness")])
    with pytest.raises(ValueError, match=r"clip casme2/sub01/EP03_02: label3 None is not in the label space .*clipset\.where"):
        views.Apex(dropped)
    own = views.Apex(dropped, labels=au.DATASET_CLASSES["casme2"])  # the dataset's own classes read `label`
    assert own.labels == [2, 5]
    with pytest.raises(ValueError, match=r"clip casme2/sub01/EP03_02: label 'sadness' is not in the label space \(happiness, disgust\)"):
        views.Apex(dropped, labels=("happiness", "disgust"))


class _Counting(ArrayFrames):
    reads = 0

    def __getitem__(self, i):
        type(self).reads += 1
        return super().__getitem__(i)


def test_cache_decodes_each_frame_once():
    frames = _Counting(np.zeros((3, 8, 8, 3), np.uint8))
    clip = _clip("c", "surprise", n=3, onset=0, apex=1, offset=2, frames=frames)
    cached = views.OnsetApex([clip], size=4, cache=True)
    cached[0], cached[0]
    assert _Counting.reads == 2
    plain = views.OnsetApex([clip], size=4)
    plain[0], plain[0]
    assert _Counting.reads == 6


def test_views_read_real_layout_frames(tmp_path):
    cs = datasets.load_samm(fx.samm(tmp_path))  # grayscale JPEGs
    kept = cs.where(lambda c: c.label3 is not None)
    view = views.OnsetApex(kept, size=6)
    onset, apex, label = view[0]
    assert onset.shape == (3, 6, 6) and label == 0  # 006_1_2 anger -> negative
    # fixture frames are flat with value frame % 250: onset 5562 -> 62, apex 5564 -> 64
    assert abs(onset.mean().item() * 255 - 62) < 2 and abs(apex.mean().item() * 255 - 64) < 2
