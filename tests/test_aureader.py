"""The image AU reader: fitted on face-model renders, it reads the AUs of held-out renders."""

import numpy as np
import pytest

from mielib import au, aureader, lab

SIZE, N, HELD_OUT = 48, 800, 200


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny reader, fitted once for the module into a private cache folder."""
    folder = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIELIB_DATA", str(folder))
        reader = aureader.fit(SIZE, N, seed=0, held_out=HELD_OUT)
    return reader, folder


@pytest.fixture(scope="module")
def held_out():
    return aureader.renders(HELD_OUT, SIZE, seed=0, held_out=True)


def test_tracks_the_true_aus_of_held_out_renders(fitted, held_out):
    reader, _ = fitted
    images, zs = held_out
    acc = aureader.evaluate(reader, images, zs)
    r = dict(zip(acc["AU"], acc["r"]))
    # AUs with clear geometry must be read; a reader that ignores the pixels scores r ~ 0.
    for code in aureader.CLEAR_AUS:
        assert r[au.LABELS[au.index(code)]] > 0.3, (code, acc.round(3).to_string())
    assert np.nanmean(acc["r"]) > 0.25
    # The accuracy stored at fit time is this same measurement.
    np.testing.assert_allclose(reader.accuracy["r"], acc["r"], atol=1e-5)
    # And the reader beats predicting the training mean for every clear AU.
    mean_mae = np.abs(zs - zs.mean(0)).mean(0)
    for code in aureader.CLEAR_AUS:
        j = au.index(code)
        assert acc["mae"][j] < mean_mae[j], code


def test_predict_direction_on_one_identity(fitted):
    from mielib import face

    reader, _ = fitted
    j = au.index(12)
    rises = 0
    for k in range(5):
        f = face.identity(aureader.HELD_OUT_BASE + 10_000 + k, pool="emotionet")
        z = np.zeros((2, au.N_AUS), np.float32)
        z[1, j] = 1.0
        read = reader.predict(face.render_batch(f, z, SIZE))
        rises += read[1, j] > read[0, j] + 0.1
    assert rises >= 4


def test_cached_by_configuration(fitted, monkeypatch):
    reader, folder = fitted
    monkeypatch.setenv("MIELIB_DATA", str(folder))
    assert reader.path is not None and reader.path.parent == folder / "aureader"
    again = aureader.load_or_fit(SIZE, seed=0, n=N, held_out=HELD_OUT)
    assert again.seconds == 0.0 and again.path == reader.path  # loaded, not refitted
    np.testing.assert_array_equal(again.weights, reader.weights)
    assert again.config == reader.config
    # Another configuration has another file.
    assert aureader.cache_path({**reader.config, "n": N + 1}) != reader.path


def test_load_refuses_corrupt_files(tmp_path, fitted):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="bad.npz"):
        aureader.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        aureader.load(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, format=np.array("something else"))
    with pytest.raises(ValueError, match="other.npz"):
        aureader.load(other)
    reader, _ = fitted
    ok = reader.save(tmp_path / "ok.npz")
    np.testing.assert_array_equal(aureader.load(ok).intercept, reader.intercept)


def test_predict_shapes_and_bad_input(fitted, held_out):
    reader, _ = fitted
    images, _ = held_out
    z = reader.predict(images[:3])
    assert z.shape == (3, au.N_AUS) and z.dtype == np.float32
    assert z.min() >= 0 and z.max() <= 1
    np.testing.assert_allclose(reader.predict(images[0]), z[0], atol=1e-6)  # one image: a 17-vector
    assert reader.predict(images[:0]).shape == (0, au.N_AUS)
    big = np.repeat(np.repeat(images[:2], 2, axis=1), 2, axis=2)  # any size: the face box is resampled
    assert reader.predict(big).shape == (2, au.N_AUS)
    with pytest.raises(ValueError, match="uint8"):
        reader.predict(images[:2].astype(np.float32) / 255)
    with pytest.raises(ValueError, match="N x H x W x 3"):
        reader.predict(images[:2, :, :, :1])
    with pytest.raises(ValueError, match="square"):
        reader.predict(images[:2, :, :40])
    with pytest.raises(ValueError, match="too small"):
        reader.predict(np.zeros((1, 8, 8, 3), np.uint8))


def test_bad_configuration_and_compare():
    with pytest.raises(ValueError, match="size"):
        aureader.fit(8, 10, cache=False)
    with pytest.raises(ValueError, match="n must be"):
        aureader.fit(48, 0, cache=False)
    with pytest.raises(ValueError, match="seed"):
        aureader.fit(48, 10, seed=-1, cache=False)
    with pytest.raises(ValueError, match="alpha"):
        aureader.fit(48, 10, alpha=0, cache=False)
    with pytest.raises(ValueError, match="same shape"):
        aureader.compare(np.zeros((3, au.N_AUS)), np.zeros((2, au.N_AUS)))
    a = np.random.default_rng(0).random((50, au.N_AUS))
    table = aureader.compare(a, a)
    np.testing.assert_allclose(table["r"], 1.0)
    np.testing.assert_allclose(table["mae"], 0.0)
    assert np.isnan(aureader.compare(np.zeros((5, au.N_AUS)), a[:5])["r"]).all()  # constant: no r


def test_renders_are_deterministic_and_reserved():
    a_img, a_z = aureader.renders(3, 32, seed=1)
    b_img, b_z = aureader.renders(3, 32, seed=1)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_z, b_z)
    c_img, _ = aureader.renders(3, 32, seed=1, held_out=True)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (3, 32, 32, 3) and a_img.dtype == np.uint8
    assert a_z.min() >= 0 and a_z.max() <= 1
    # The reader's identities lie far above the pools (MiE-X) and the lab's subjects.
    assert aureader.RESERVED_BASE > lab.IDENTITY_BASE + 100_000 * 1000
    assert aureader.RESERVED_BASE > max(lab.POOL_SIZES.values())


def test_check_edits_and_steering_against_hand_made_editors():
    rng = np.random.default_rng(0)
    n = 200
    source, requested, other = rng.random((n, au.N_AUS)), rng.random((n, au.N_AUS)), rng.random((n, au.N_AUS))
    noise = lambda: rng.normal(0, 0.05, source.shape)  # a reader with some error  # noqa: E731
    read_input = source + noise()
    perfect = aureader.check_edits(requested + noise(), read_input, requested)
    idle = aureader.check_edits(read_input, read_input, requested)  # returns its input
    assert list(perfect["AU"]) == ["all"] + list(au.LABELS)
    assert (perfect["r"] > 0.9).all()
    assert (perfect["mae"] < idle["mae"]).all()
    np.testing.assert_allclose(idle["mae"], idle["mae_unedited"])
    assert perfect["mae"][0] == pytest.approx(perfect["mae"][1:].mean())  # pooled = mean of per-AU

    # Steering: the same faces edited with two requests.
    follows = aureader.check_steering(requested + noise(), other + noise(), requested, other)
    assert list(follows["AU"]) == ["all"] + list(au.LABELS) and (follows["steer"] > 0.9).all()
    j = au.index(12)  # by hand: a plain Pearson r per AU
    ra, rb = requested + 0.1 * np.sin(requested), other
    by_hand = np.corrcoef(ra[:, j] - rb[:, j], requested[:, j] - other[:, j])[0, 1]
    assert aureader.check_steering(ra, rb, requested, other)["steer"][1 + j] == pytest.approx(by_hand)
    assert aureader.check_steering(read_input, read_input, requested, other)["steer"].isna().all()  # idle
    # A vandal paints every face the same whatever was asked: its reading leaves the source AUs,
    # so (edit - input) correlates with (requested - source), but steering sees nothing.
    vandal = np.full(source.shape, 0.5)
    fooled = np.corrcoef((vandal - read_input).ravel(), (requested - source).ravel())[0, 1]
    assert fooled > 0.5
    vandal_steer = aureader.check_steering(vandal + noise(), vandal + noise(), requested, other)["steer"]
    assert abs(vandal_steer[0]) < 0.1
    with pytest.raises(ValueError, match="check_edits: expected 3 N x 17"):
        aureader.check_edits(source, source[:5], requested)
    with pytest.raises(ValueError, match="check_steering: expected 4 N x 17"):
        aureader.check_steering(source, source, requested, source[:, :3])
