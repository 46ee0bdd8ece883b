"""The face model against FACS: AU directions on the 68 landmarks, linearity, monotonicity,
determinism, identity diversity, micro-expression visibility, photo warping and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mielib import au, face

SIZE = 128
IDS = [("emotionet", 0), ("emotionet", 7), ("emotionet", 23), ("celeba", 3), ("celeba", 11)]


def z_of(**kw) -> np.ndarray:
    z = np.zeros(au.N_AUS, np.float32)
    for name, v in kw.items():
        z[au.index(name)] = v
    return z


@pytest.fixture(scope="module")
def faces():
    return [face.identity(i, pool) for pool, i in IDS] + [face.astronaut()]


def axes(L):
    """Face-aligned unit axes: `right` along the eye line (image-left eye to image-right eye), `down`."""
    r, l = L[36:42].mean(0), L[42:48].mean(0)
    iod = np.linalg.norm(l - r)
    right = (l - r) / iod
    return right, np.array([-right[1], right[0]]), iod


def moves(f, code):
    """Displacement of every landmark at intensity 1, in IOD units along (right, down)."""
    L = face.landmarks(f, None, SIZE)
    right, down, iod = axes(L)
    d = face.displacements(f, SIZE)[au.index(code)]
    return d @ right / iod, d @ down / iod


# Landmarks on the image-left half move "out" in -right; on the image-right half in +right.
def outward(dx, i, j):
    return -dx[i], dx[j]


def test_au_directions_follow_facs(faces):
    for f in faces:
        dx, dy = moves(f, 1)  # inner brow raiser: inner brows up, more than the outer ends
        assert dy[21] < -0.1 and dy[22] < -0.1, f.name
        assert -dy[21] > -dy[17] + 0.08 and -dy[22] > -dy[26] + 0.08, f.name
        dx, dy = moves(f, 2)  # outer brow raiser: outer ends up, more than the inner ends
        assert dy[17] < -0.1 and dy[26] < -0.1, f.name
        assert -dy[17] > -dy[21] + 0.08 and -dy[26] > -dy[22] + 0.08, f.name
        dx, dy = moves(f, 4)  # brow lowerer: all brow points down, inner ends drawn together
        assert (dy[17:27] > 0.02).all(), f.name
        assert dx[22] - dx[21] < -0.08, f.name
        dx, dy = moves(f, 5)  # upper lid raiser
        assert (dy[[37, 38, 43, 44]] < -0.05).all(), f.name
        dx, dy = moves(f, 6)  # cheek raiser: lower lids and cheeks up
        assert (dy[[40, 41, 46, 47]] < -0.02).all() and (dy[[2, 3, 13, 14]] < -0.01).all(), f.name
        dx, dy = moves(f, 7)  # lid tightener: lower lids up, upper lids down a little: the eye narrows
        assert (dy[[40, 41, 46, 47]] < -0.04).all() and (dy[[37, 38, 43, 44]] > 0).all(), f.name
        dx, dy = moves(f, 9)  # nose wrinkler: nostrils up, inner brows down
        assert (dy[31:36] < -0.05).all() and dy[21] > 0.02 and dy[22] > 0.02, f.name
        dx, dy = moves(f, 10)  # upper lip raiser: upper lip up, more than the lower lip
        assert dy[51] < -0.08 and dy[51] < dy[57] - 0.08, f.name
        dx, dy = moves(f, 12)  # lip corner puller: corners up and out
        assert dy[48] < -0.1 and dy[54] < -0.1, f.name
        assert min(outward(dx, 48, 54)) > 0.07, f.name
        dx, dy = moves(f, 14)  # dimpler: corners pulled in
        assert max(outward(dx, 48, 54)) < -0.04, f.name
        dx, dy = moves(f, 15)  # lip corner depressor: corners down
        assert dy[48] > 0.07 and dy[54] > 0.07, f.name
        dx, dy = moves(f, 17)  # chin raiser: chin and lower lip pushed up
        assert dy[8] < -0.05 and dy[57] < -0.05, f.name
        dx, dy = moves(f, 20)  # lip stretcher: corners out, mostly horizontally
        out = outward(dx, 48, 54)
        assert min(out) > 0.08 and min(out) > 3 * max(abs(dy[48]), abs(dy[54])), f.name
        dx, dy = moves(f, 23)  # lip tightener: mouth narrower, both lips thinner
        assert max(outward(dx, 48, 54)) < -0.03, f.name
        L0, L1 = face.landmarks(f, None, SIZE), face.landmarks(f, z_of(AU23=1.0), SIZE)
        down = axes(L0)[1]
        for outer, inner in ((51, 62), (57, 66)):
            before, after = abs((L0[inner] - L0[outer]) @ down), abs((L1[inner] - L1[outer]) @ down)
            assert after < 0.75 * before, (f.name, outer)
        dx, dy = moves(f, 25)  # lips part: inner lips separate
        assert dy[66] - dy[62] > 0.08, f.name
        dx, dy = moves(f, 26)  # jaw drop: jaw and lower lip down, mouth opens
        assert dy[8] > 0.2 and dy[57] > 0.15 and dy[66] - dy[62] > 0.15, f.name
        assert dy[8] > dy[4] > dy[1] >= 0, f.name
        # blink: the upper lid comes down onto the lower lid
        L1 = face.landmarks(f, z_of(AU45=1.0), SIZE)
        iod = axes(face.landmarks(f, None, SIZE))[2]
        for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
            assert np.linalg.norm(L1[up] - L1[lo]) < 0.01 * iod, (f.name, up)


def test_landmarks_linear_monotone_and_additive(faces):
    rng = np.random.default_rng(0)
    for f in faces[:3] + faces[-1:]:
        L0 = face.landmarks(f, None, SIZE)
        D = face.displacements(f, SIZE)
        for k in range(au.N_AUS):
            z = np.zeros(au.N_AUS)
            steps = []
            for t in (0.1, 0.3, 0.5, 0.7, 1.0):
                z[k] = t
                steps.append(np.linalg.norm(face.landmarks(f, z, SIZE) - L0, axis=1).max())
            assert np.all(np.diff(steps) > 0), (f.name, au.LABELS[k], steps)
            z[k] = 1.0
            np.testing.assert_allclose(face.landmarks(f, z, SIZE) - L0, D[k], atol=1e-4)
        z1, z2 = rng.uniform(0, 0.5, au.N_AUS), rng.uniform(0, 0.5, au.N_AUS)
        combo = face.landmarks(f, z1 + z2, SIZE) - L0
        parts = (face.landmarks(f, z1, SIZE) - L0) + (face.landmarks(f, z2, SIZE) - L0)
        np.testing.assert_allclose(combo, parts, atol=1e-4)  # float32 AU vectors
    # displacements scale with the image: the same face at twice the size moves twice as far
    f = faces[0]
    np.testing.assert_allclose(face.displacements(f, 256), 2 * face.displacements(f, 128), rtol=1e-9, atol=1e-9)


def test_pixels_change_smoothly_and_monotonically_with_intensity(faces):
    for f in (faces[0], faces[3], faces[-1]):
        base = face.render(f, None, 96).astype(float)
        for k in range(au.N_AUS):  # no jump away from the neutral face: a vanishing AU changes nothing
            z = np.zeros(au.N_AUS)
            z[k] = 1e-5
            assert np.abs(face.render(f, z, 96) - base).max() <= 1, (f.name, au.LABELS[k])
        for code in (4, 12, 26):
            amounts = []
            for t in (0.1, 0.25, 0.5, 0.75, 1.0):
                amounts.append(np.abs(face.render(f, z_of(**{f"AU{code}": t}), 96) - base).mean())
            assert np.all(np.diff(amounts) > 0), (f.name, code, amounts)


def test_zero_aus_is_the_neutral_face_and_rendering_is_deterministic():
    f = face.identity(5, "celeba")
    a = face.render(f, None)
    b = face.render(f, np.zeros(au.N_AUS))
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    z = z_of(AU04=0.6, AU07=0.3, AU23=0.4)
    c = face.render(f, z)
    face.clear_cache()
    g = face.identity(5, "celeba")
    assert g.params == f.params
    assert np.array_equal(face.render(g, z), c)
    assert np.array_equal(face.render(g, None), a)
    assert not np.array_equal(c, a)


def test_sizes_and_batch():
    f = face.identity(2)
    for size in (32, 64, 200):
        img = face.render(f, z_of(AU12=0.5), size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    Z = np.stack([z_of(), z_of(AU12=0.5), z_of(AU26=0.8)])
    batch = face.render_batch(f, Z, 64)
    assert batch.shape == (3, 64, 64, 3)
    for n in range(3):
        assert np.array_equal(batch[n], face.render(f, Z[n], 64))
    mixed = face.render_batch([face.identity(1), face.identity(1, "celeba")], Z[:2], 64)
    assert np.array_equal(mixed[1], face.render(face.identity(1, "celeba"), Z[1], 64))


def test_micro_intensity_is_subtle_but_visible(faces):
    for f in faces:
        base = face.render(f, None).astype(float)
        for code in (1, 4, 6, 12, 14, 15, 17, 25):
            micro = np.abs(face.render(f, z_of(**{f"AU{code}": 0.2})) - base)
            macro = np.abs(face.render(f, z_of(**{f"AU{code}": 0.8})) - base)
            amplified = np.clip(micro * 5, 0, 255)
            # visible: a patch of pixels changes by >= 40 grey levels once amplified five-fold
            assert (amplified.max(-1) >= 40).sum() >= 8, (f.name, code)
            # subtle: small mean change, confined to a small part of the image
            assert micro.mean() < 1.2 and (micro.max(-1) > 8).mean() < 0.04, (f.name, code, micro.mean())
            assert macro.mean() > 2 * micro.mean(), (f.name, code)


def test_appearance_cues_darken_the_skin_where_facs_says(faces):
    f = faces[3]
    L = face.landmarks(f, None, SIZE)
    right, down, iod = axes(L)
    base = face.render(f, None).astype(float).mean(-1)

    def darker(code, centre, radius):
        img = face.render(f, z_of(**{f"AU{code}": 1.0})).astype(float).mean(-1)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        near = np.hypot(xx - centre[0], yy - centre[1]) < radius * iod
        return (base - img)[near].max()

    mid_brow = (L[21] + L[22]) / 2
    assert darker(1, mid_brow - down * 0.35 * iod, 0.2) > 10       # forehead wrinkles
    assert darker(4, mid_brow, 0.15) > 10                           # furrows between the brows
    assert darker(6, L[36] - right * 0.12 * iod, 0.1) > 10          # crow's feet
    assert darker(9, (L[27] + L[28]) / 2, 0.15) > 10                # nose wrinkles
    assert darker(14, L[54] + right * 0.05 * iod, 0.12) > 10       # dimple
    assert darker(26, (L[62] + L[66]) / 2 + down * 0.1 * iod, 0.1) > 40  # dark mouth interior


def test_ten_thousand_identities_are_distinct_and_pools_differ():
    n, size = 10_000, 16
    thumbs = np.empty((n, size * size * 3), np.float32)
    for i in range(n):
        thumbs[i] = face.render(face.identity(i), None, size).ravel()
    face.clear_cache()
    # Nearest-neighbour RMS pixel distance in a 96-d PCA projection: projections never increase
    # distances, so every pair is at least this far apart in pixels too.
    X = thumbs - thumbs.mean(0)
    _, _, vt = np.linalg.svd(X[:: 4], full_matrices=False)
    Y = X @ vt[:96].T
    sq = (Y ** 2).sum(1)
    nearest = np.full(n, np.inf)
    for a in range(0, n, 2000):
        d2 = sq[a:a + 2000, None] + sq[None] - 2 * Y[a:a + 2000] @ Y.T
        d2[np.arange(len(d2)), np.arange(a, a + len(d2))] = np.inf
        nearest[a:a + 2000] = d2.min(1)
    rms = np.sqrt(np.maximum(nearest, 0) / thumbs.shape[1])
    # 8 grey levels RMS (3 % contrast over the whole thumbnail) is far above a just-noticeable
    # difference (about 1 %): no two of the 10,000 faces could pass for the same person.
    assert rms.min() > 8.0, f"closest identities differ by only {rms.min():.2f} grey levels RMS"
    # Same index in the other pool is another person.
    for i in range(20):
        a = face.render(face.identity(i, "emotionet"), None, size).astype(float)
        b = face.render(face.identity(i, "celeba"), None, size).astype(float)
        assert np.sqrt(((a - b) ** 2).mean()) > 8.0
    # The pools are distributed differently: parameters and pixels.
    em = [face.identity(i, "emotionet").params for i in range(400)]
    ce = [face.identity(i, "celeba").params for i in range(400)]
    mean = lambda ps, k: np.mean([abs(p[k]) for p in ps])  # noqa: E731
    assert mean(ce, "age") < mean(em, "age") - 5
    assert mean(ce, "yaw") < 0.6 * mean(em, "yaw")
    assert mean(ce, "lipstick") > 2 * mean(em, "lipstick")
    assert mean(ce, "exposure") > mean(em, "exposure")
    from sklearn.linear_model import LogisticRegression

    ce_px = np.stack([face.render(face.identity(i, "celeba"), None, size).ravel() for i in range(400)])
    Xp = np.vstack([thumbs[:400], ce_px]).astype(np.float32) / 255
    yp = np.repeat([0, 1], 400)
    order = np.random.default_rng(0).permutation(800)
    train, test = order[:560], order[560:]
    clf = LogisticRegression(max_iter=400, C=0.5).fit(Xp[train], yp[train])
    assert clf.score(Xp[test], yp[test]) > 0.8


def test_astronaut_photo_warps_with_the_aus():
    f = face.astronaut()
    assert f.kind == "photo"
    base = face.render(f, None, 256)
    assert base.shape == (256, 256, 3)
    smile = face.render(f, z_of(AU12=1.0), 256)
    L0 = face.landmarks(f, None, 256)
    L1 = face.landmarks(f, z_of(AU12=1.0), 256)
    right, down, iod = axes(L0)
    for j, sgn in ((48, -1), (54, 1)):
        d = L1[j] - L0[j]
        assert d @ down < -0.05 * iod and sgn * (d @ right) > 0.05 * iod
        est = _track(base, smile, L0[j], int(0.1 * iod), int(0.3 * iod))
        assert np.linalg.norm(est - d) < max(0.35 * np.linalg.norm(d), 2.0), (j, est, d)
    # away from the face nothing moves
    assert np.array_equal(base[:20, :20], smile[:20, :20])


def test_procedural_warp_tracks_the_landmarks():
    f = face.identity(4, "celeba")
    base = face.render(f, None, 256)
    z = z_of(AU26=1.0)
    img = face.render(f, z, 256)
    L0, L1 = face.landmarks(f, None, 256), face.landmarks(f, z, 256)
    iod = axes(L0)[2]
    d = L1[8] - L0[8]  # the chin
    est = _track(base, img, L0[8] - (0, 0.1 * iod), int(0.12 * iod), int(0.4 * iod))
    assert np.linalg.norm(est - d) < max(0.25 * np.linalg.norm(d), 2.0), (est, d)


def test_warp_sends_deformed_landmarks_back_to_their_neutral_position():
    # A photo whose colours encode their own coordinates: the warped image then shows, at each
    # pixel, where it was sampled from. At a deformed landmark it must read the neutral one.
    pts = face.read_landmarks(face.ASTRONAUT_LANDMARKS)
    yy, xx = np.mgrid[0:512, 0:512]
    ramp = np.stack([xx // 2, yy // 2, np.zeros_like(xx)], -1).astype(np.uint8)
    f = face.photo(ramp, pts, name="ramp")
    crop = face._photo_crop(f)
    for code, idx in ((5, [37, 38, 43, 44]), (26, [7, 8, 9, 57]), (2, [17, 18, 25, 26])):
        z = z_of(**{f"AU{code}": 1.0})
        img = face.render(f, z, 256).astype(float)
        L0, L1 = face.landmarks(f, None, 256), face.landmarks(f, z, 256)
        for j in idx:
            x, y = L1[j]
            x0, y0 = int(x), int(y)
            fx, fy = x - x0, y - y0
            v = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
                 + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)
            src = (v[:2] * 2 + 0.5 - crop[:2]) * 256 / crop[2] - 0.5  # back to output pixels
            moved = np.linalg.norm(L1[j] - L0[j])
            assert moved > 3
            assert np.linalg.norm(src - L0[j]) < 2.5, (code, j, src, L0[j])


def _track(a, b, centre, r, reach):
    """Displacement of the patch of `a` around `centre` to its best match in `b` (SSD search)."""
    a, b = a.astype(float), b.astype(float)
    cx, cy = int(round(centre[0])), int(round(centre[1]))
    patch = a[cy - r:cy + r + 1, cx - r:cx + r + 1]
    best, arg = np.inf, (0, 0)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            cand = b[cy + dy - r:cy + dy + r + 1, cx + dx - r:cx + dx + r + 1]
            e = ((cand - patch) ** 2).sum()
            if e < best:
                best, arg = e, (dx, dy)
    return np.array(arg, float)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_au_vectors_get_clear_errors():
    f = face.identity(0)
    with pytest.raises(ValueError, match="17 entries"):
        face.render(f, np.zeros(16))
    with pytest.raises(ValueError, match=r"AU12 = 1\.5"):
        face.render(f, z_of(AU12=1.5))
    bad = z_of()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="AU01"):
        face.landmarks(f, bad)
    with pytest.raises(ValueError, match="-0.2"):
        face.render_batch(f, np.stack([z_of(), z_of(AU26=-0.2)]))
    with pytest.raises(ValueError, match="2 faces but 3"):
        face.render_batch([f, f], np.zeros((3, au.N_AUS)))
    with pytest.raises(ValueError, match="unknown identity pool"):
        face.identity(0, "ffhq")
    with pytest.raises(ValueError, match="size"):
        face.render(f, None, 8)


def test_bad_landmarks_get_clear_errors(tmp_path):
    from skimage import data

    img = data.astronaut()
    pts = face.read_landmarks(face.ASTRONAUT_LANDMARKS)
    with pytest.raises(ValueError, match=r"photo 'me'.*68 landmarks.*\(67, 2\)"):
        face.photo(img, pts[:67], name="me")
    nan = pts.copy()
    nan[30, 1] = np.nan
    with pytest.raises(ValueError, match="landmark 30.*NaN"):
        face.photo(img, nan, name="me")
    out = pts.copy()
    out[8] = (200, 600)
    with pytest.raises(ValueError, match="landmark 8 .*outside the 512 x 512 image"):
        face.photo(img, out, name="me")
    with pytest.raises(ValueError, match="degenerate"):
        face.photo(img, np.tile(pts.mean(0), (68, 1)), name="me")
    flipped = pts * (1, -1) + (0, 511)  # upside down
    with pytest.raises(ValueError, match="inverted"):
        face.photo(img, flipped, name="me")
    mirrored = pts * (-1, 1) + (511, 0)  # eyes swapped left/right
    with pytest.raises(ValueError, match="inverted"):
        face.photo(img, mirrored, name="me")
    with pytest.raises(ValueError, match="uint8"):
        face.photo(img.astype(float), pts)
    # landmark files
    missing = tmp_path / "none.csv"
    with pytest.raises(ValueError, match="none.csv.*missing"):
        face.read_landmarks(missing)
    p = tmp_path / "cols.csv"
    p.write_text("a,b\n" + "1,2\n" * 68)
    with pytest.raises(ValueError, match="cols.csv.*'x' and 'y'"):
        face.read_landmarks(p)
    p = tmp_path / "short.csv"
    p.write_text("x,y\n" + "1,2\n" * 60)
    with pytest.raises(ValueError, match="short.csv.*68 rows.*60"):
        face.read_landmarks(p)
    p = tmp_path / "text.csv"
    p.write_text("x,y\n" + "1,2\n" * 67 + "one,2\n")
    with pytest.raises(ValueError, match="text.csv.*non-numeric"):
        face.read_landmarks(p)


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_writes_png_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "face.png"
    rc = face.cli(["--identity", "7", "--au", "AU12=0.3", "--au", "AU6=0.2", "--size", "96", "--out", str(out)])
    assert rc == 0
    img = np.asarray(Image.open(out))
    z = z_of(AU12=0.3, AU06=0.2)
    assert np.array_equal(img, face.render(face.identity(7), z, 96))
    rc = face.cli(["--photo", "astronaut", "--au", "AU26=0.5", "--size", "64", "--out", str(tmp_path / "a.png")])
    assert rc == 0 and (tmp_path / "a.png").is_file()
    capsys.readouterr()
    assert face.cli(["--au", "AU11=0.3", "--out", str(tmp_path / "x.png")]) == 2
    assert "error:" in capsys.readouterr().err
    assert face.cli(["--au", "AU12=1.7", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "AU12" in err
    assert face.cli(["--au", "AU12", "--out", str(tmp_path / "x.png")]) == 2
    assert face.cli(["--photo", str(tmp_path / "nope.png"), "--landmarks", str(tmp_path / "nope.csv")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_rejects_a_repeated_au_and_writes_the_format_its_suffix_names(tmp_path, capsys):
    assert face.cli(["--au", "AU12=0.3", "--au", "AU12=0.5", "--size", "32", "--out", str(tmp_path / "x.png")]) == 2
    assert "--au AU12=0.5: AU12 is already set by --au AU12=0.3" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    for name, fmt in (("x.jpg", "JPEG"), ("x.JPEG", "JPEG"), ("x.png", "PNG"), ("x.bmp", "BMP")):
        assert face.cli(["--au", "AU12=0.3", "--size", "32", "--out", str(tmp_path / name)]) == 0
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt
    assert face.cli(["--size", "32", "--out", str(tmp_path / "x.gifx")]) == 2
    assert "the suffix names the format" in capsys.readouterr().err and not (tmp_path / "x.gifx").exists()
