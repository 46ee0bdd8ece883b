"""Optical flow (mielib.flow), the flow views and the `input` knob: known shifts are recovered,
flows are cached by the frames' content, and a changed frame never gets a stale flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mielib import au, flow, models, paper, protocols, views
from mielib.clip import ArrayFrames, Clip, ClipSet


def _texture(size: int, shift: float = 0.0) -> np.ndarray:
    """A smooth random texture, shifted right by `shift` pixels (sub-pixel via the phase)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size].astype(float)
    img = np.zeros((size, size))
    for _ in range(12):
        fx, fy, ph = rng.uniform(1, 5, 2).tolist() + [rng.uniform(0, 6.28)]
        img += np.sin(2 * np.pi * (fx * (x - shift) / size + fy * y / size) + ph)
    img = 128 + 100 * img / np.abs(img).max()
    return np.repeat(img[..., None], 3, axis=2).astype(np.uint8)


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_a_known_shift_is_recovered_in_128px_units():
    for size in (64, 128):
        f = flow.compute(_texture(size), _texture(size, shift=1.0))
        assert f.shape == (3, size, size) and f.dtype == np.float32
        centre = (slice(size // 4, 3 * size // 4),) * 2
        # 1 px at this size is 128 / size px of a 128-px face
        assert np.median(f[0][centre]) == pytest.approx(128 / size, rel=0.25)
        assert abs(np.median(f[1][centre])) < 0.2 * 128 / size
        np.testing.assert_allclose(f[2], np.hypot(f[0], f[1]), rtol=1e-5)
    still = np.abs(flow.compute(_texture(64), _texture(64)))
    assert np.median(still) < 0.01 and still.mean() < 0.05  # Farneback leaves small residues near the borders
    small = flow.compute(_texture(128), _texture(128, shift=1.0), size=32)
    assert small.shape == (3, 32, 32) and np.median(small[0]) == pytest.approx(1.0, rel=0.25)


def test_bad_frames_get_clear_errors():
    with pytest.raises(ValueError, match="differ in size"):
        flow.compute(_texture(32), _texture(48))
    with pytest.raises(ValueError, match="uint8"):
        flow.compute(_texture(32).astype(float), _texture(32))


def test_flows_are_cached_by_content_and_recomputed_when_damaged(data_folder, monkeypatch):
    pairs = [(_texture(48), _texture(48, s)) for s in (0.5, 1.0)]
    first = flow.for_pairs(pairs, 16)
    assert first.shape == (2, 3, 16, 16) and first.dtype == np.float16
    files = list((data_folder / "flow").glob("*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(flow, "compute", lambda *a, **k: pytest.fail("recomputed a cached flow"))
    np.testing.assert_array_equal(flow.for_pairs(pairs, 16), first)
    monkeypatch.undo()
    changed = [(pairs[0][0], _texture(48, 2.0)), pairs[1]]  # one frame changed: a new key, a new flow
    assert not np.array_equal(flow.for_pairs(changed, 16)[0], first[0])
    files[0].write_bytes(b"not a zip")  # a damaged cache file is recomputed, not trusted
    np.testing.assert_array_equal(flow.for_pairs(pairs, 16), first)


def _clips(n: int = 12, size: int = 48) -> ClipSet:
    out = []
    for k in range(n):
        label = au.MEGC3[k % 3]
        shift = (0.5, 1.5, -1.0)[k % 3]  # each class moves its own way
        frames = ArrayFrames(np.stack([_texture(size), _texture(size, shift / 2), _texture(size, shift)]))
        out.append(Clip("casme2", f"sub{k // 2:02d}", f"EP{k:02d}", frames, 200.0, 0, 2, 2,
                        {"negative": "disgust", "positive": "happiness", "surprise": "surprise"}[label], label))
    return ClipSet("toy", out)


def test_flow_views_and_the_input_knob():
    clips = _clips()
    assert [models.view_for(m, "flow") for m in ("apexme", "branches", "dtscnn")] == ["flow", "onset_flow", "flow_stack"]
    assert [models.view_for(m) for m in ("apexme", "branches", "dtscnn")] == ["apex", "onset_apex", "stack"]
    with pytest.raises(ValueError, match="unknown input 'optical'"):
        models.view_for("apexme", "optical")
    f, label = views.Flow(clips, size=16)[1]
    assert f.shape == (3, 16, 16) and label == au.MEGC3.index(clips[1].label3)
    onset, f2, _ = views.OnsetFlow(clips, size=16)[1]
    assert onset.shape == (3, 16, 16) and torch.equal(f, f2)
    stack, _ = views.FlowStack(clips, size=16, n_frames=3, until="apex")[1]
    assert stack.shape == (2, 3, 16, 16) and stack[:, 0].abs().mean() < 0.05  # onset -> onset: no motion
    torch.testing.assert_close(stack[:, -1], f[:2])
    net = models.build("dtscnn", 3, scales=(2, 3), frame_size=16, input_mode="flow")
    assert net(stack[None]).shape == (1, 3)
    onset, f, _ = views.OnsetFlow(clips, size=32)[1]
    assert models.build("branches", 3).eval()(onset[None], f[None]).shape == (1, 3)


def test_keyframes_carry_cached_flows_that_views_use(monkeypatch):
    clips = _clips()
    kf = paper.load_keyframes(clips, 16, flow=True)
    assert type(kf) is ClipSet and kf.clips[0].frames.flow.shape == (3, 16, 16)
    view = views.Flow(kf, size=16)
    monkeypatch.setattr(flow, "compute", lambda *a, **k: pytest.fail("the precomputed flow was not used"))
    torch.testing.assert_close(view[4][0], torch.from_numpy(kf.clips[4].frames.flow.astype(np.float32)))


def test_linear_reference_reads_the_flow_on_subject_wise_folds():
    clips = paper.load_keyframes(_clips(18), 16, flow=True)
    y = np.array([au.MEGC3.index(c.label3) for c in clips])
    folds = protocols.kfold(clips.to_frame(), 3, seed=0, label="label3")
    pred = paper.linear_reference(clips, folds, y, input="flow")
    assert pred.shape == y.shape and (pred == y).mean() == 1.0  # each class moves its own way
    assert paper.features(clips, "frames").shape == (18, 16 * 16 * 3)
