"""LBP-TOP: feature dimension, histogram sanity, and a classifier that sees motion."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from mielib import lbptop

MOTIONS = [(0, 1), (1, 0), (0, 0)]  # per-frame shift (dy, dx): right, down, static


def moving_texture(rng, cls, t=8, size=24):
    """A fresh random texture per clip, moving one pixel per frame in the class's direction.

    Every clip's frames look alike (same texture statistics), so only the XT/YT planes can
    tell the classes apart."""
    tex = gaussian_filter(rng.random((size + 2 * t, size + 2 * t)), 1.0)
    tex = (255 * (tex - tex.min()) / np.ptp(tex)).astype(np.uint8)
    dy, dx = MOTIONS[cls]
    return np.stack([tex[t + dy * i:t + dy * i + size, t + dx * i:t + dx * i + size] for i in range(t)])


@pytest.mark.parametrize("grid,points,method,t_blocks,bins", [
    ((5, 5), 8, "nri_uniform", 1, 59), ((2, 3), 8, "uniform", 2, 10), ((1, 1), 4, "default", 1, 16)])
def test_feature_dimension_formula(grid, points, method, t_blocks, bins):
    assert lbptop.n_bins(points, method) == bins
    expected = grid[0] * grid[1] * t_blocks * 3 * bins
    assert lbptop.feature_dim(grid, points, method, t_blocks) == expected
    stack = np.random.default_rng(0).integers(0, 256, (9, 20, 22), dtype=np.uint8)
    f = lbptop.features(stack, grid=grid, points=points, method=method, t_blocks=t_blocks)
    assert f.shape == (expected,)
    # Each plane's histogram in each block sums to 1.
    per_hist = f.reshape(-1, bins).sum(axis=1)
    np.testing.assert_allclose(per_hist, 1.0)


def test_planes_capture_motion_and_inputs_agree():
    rng = np.random.default_rng(1)
    static, moving = moving_texture(rng, 2), moving_texture(rng, 0)
    bins = lbptop.n_bins()
    fs = lbptop.features(static, grid=(1, 1)).reshape(3, bins)
    # A static clip's XT and YT planes are constant along time: one pattern (all neighbours
    # >= centre along t, with equal intensities) at most of them.
    assert fs[1].max() > 0.2 and fs[2].max() > 0.2
    fm = lbptop.features(moving, grid=(1, 1)).reshape(3, bins)
    assert np.abs(fm[1] - fs[1]).sum() > 0.5  # XT differs when the texture moves along x
    # RGB, [0, 1] floats and grayscale uint8 give the same feature for the same intensities.
    rgb = np.repeat(static[..., None], 3, axis=-1)
    np.testing.assert_allclose(lbptop.features(rgb), lbptop.features(static))
    np.testing.assert_allclose(lbptop.features(static / 255.0), lbptop.features(static))


def test_errors():
    with pytest.raises(ValueError, match="needs at least 3 frames"):
        lbptop.features(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="too small for a 5x5 grid"):
        lbptop.features(np.zeros((5, 6, 6), np.uint8))
    with pytest.raises(ValueError, match="T x H x W"):
        lbptop.features(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="unknown LBP method"):
        lbptop.LBPTOP(method="var")
    with pytest.raises(ValueError, match="NaN"):
        lbptop.features(np.full((5, 16, 16), np.nan))
    with pytest.raises(RuntimeError, match="call fit"):
        lbptop.LBPTOP().predict([np.zeros((5, 16, 16), np.uint8)])


def test_classifier_beats_chance_on_texture_motion():
    rng = np.random.default_rng(2)
    y_train, y_test = np.repeat([0, 1, 2], 8), np.repeat([0, 1, 2], 6)
    x_train = [moving_texture(rng, c) for c in y_train]
    x_test = [moving_texture(rng, c) for c in y_test]
    model = lbptop.LBPTOP(grid=(2, 2), seed=0).fit(x_train, y_train)
    assert model.dim == lbptop.feature_dim((2, 2))
    accuracy = np.mean(model.predict(x_test) == y_test)
    assert accuracy >= 0.8  # chance is 1/3
    # Deterministic for a seed.
    again = lbptop.LBPTOP(grid=(2, 2), seed=0).fit(x_train, y_train)
    np.testing.assert_array_equal(again.predict(x_test), model.predict(x_test))
    # Control: the same pipeline on shuffled labels learns nothing transferable.
    shuffled = rng.permutation(y_train)
    control = lbptop.LBPTOP(grid=(2, 2), seed=0).fit_features(model.transform(x_train), shuffled)
    assert np.mean(control.predict(x_test) == y_test) < accuracy
    # The XY (appearance) histograms alone cannot tell the motions apart: the time planes do.
    def xy_only(f):
        return f.reshape(len(f), 4, 3, -1)[:, :, 0].reshape(len(f), -1)
    appearance = lbptop.LBPTOP(seed=0).fit_features(xy_only(model.transform(x_train)), y_train)
    assert np.mean(appearance.predict_features(xy_only(model.transform(x_test))) == y_test) < 0.7
