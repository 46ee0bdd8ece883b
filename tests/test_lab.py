"""Tests of the simulated lab (mielib.lab, mielib.readout): sizes and compositions exactly as
the real datasets', the composite built by the MEGC rules, dynamics, determinism, readout error,
capture quirks, the reference result and the cache."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter

import numpy as np
import pytest

from mielib import au, lab, readout


@pytest.fixture(scope="module", autouse=True)
def data_folder(tmp_path_factory):
    """One private data folder for this module: the lab is generated once (a few seconds)."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("lab_data")
    mp.setenv("MIELIB_DATA", str(folder))
    lab._MEMO.clear()
    lab._FRAME_FILES.clear()
    yield folder
    lab._MEMO.clear()
    lab._FRAME_FILES.clear()
    mp.undo()


# (name, options) -> clips, subjects, label counts; the table and datasets.md
EXPECTED = {
    ("casme2", ()): (255, 26, {"others": 99, "disgust": 63, "happiness": 32, "repression": 27, "surprise": 25,
                               "sadness": 7, "fear": 2}),
    ("samm", ()): (159, 29, {"anger": 57, "others": 26, "happiness": 26, "surprise": 15, "contempt": 12,
                             "disgust": 9, "fear": 8, "sadness": 6}),
    ("smic", ()): (164, 16, {"negative": 70, "positive": 51, "surprise": 43}),
    ("ckplus", ()): (593, 123, {"anger": 45, "contempt": 18, "disgust": 59, "fear": 25, "happiness": 69,
                                "sadness": 28, "surprise": 83, None: 266}),
    ("mmew", (("part", "micro"),)): (300, 36, None),
    ("mmew", (("part", "micro"), ("selection", "miex"))): (234, 36, None),
    ("mmew", (("part", "macro"),)): (900, 36, {e: 150 for e in lab.MMEW_MIEX_CLASSES}),
    ("casme", ()): (195, 19, None),
    ("oulu", ()): (480, 80, {e: 80 for e in ("anger", "disgust", "fear", "happiness", "sadness", "surprise")}),
}


@pytest.mark.parametrize("name,options", list(EXPECTED))
def test_stand_in_sizes_subjects_and_classes(name, options):
    clips, subjects, classes = EXPECTED[(name, options)]
    cs = lab.load(name, **dict(options))
    assert len(cs) == clips
    assert len(cs.subjects) == subjects
    if classes is not None:
        assert Counter(c.label for c in cs) == classes
    assert len({c.key for c in cs}) == len(cs), "clip keys must be unique"
    for c in cs:
        if c.label is not None:
            assert au.canonical_emotion(c.label) == c.label
        assert c.label3 == (au.to_megc3(c.dataset, c.label) if c.label is not None else None)
    assert cs.source == "sim"


def test_mmew_micro_and_casme_classes():
    micro = lab.load("mmew")
    assert Counter(c.label for c in micro) == lab.MMEW_MICRO_COUNTS
    miex = lab.load("mmew", selection="miex")
    assert {c.label for c in miex} == set(lab.MMEW_MIEX_CLASSES)
    assert len(miex.skipped) == 66 and all("not one of the six" in s.reason for s in miex.skipped)
    assert sum(lab.load("casme").to_frame()["label"].value_counts()) == 195
    assert lab.load("casme")[0].fps == 60


def test_subject_and_clip_ids_look_real():
    patterns = {
        "casme2": (r"sub\d\d", r"EP\d\d(_\d+)?f?"),
        "samm": (r"0[0-3]\d", r"0[0-3]\d_[1-7]_\d+"),
        "smic": (r"s\d{1,2}", r"s\d{1,2}_(ne|po|sur)_\d\d"),
        "ckplus": (r"S\d{3}", r"S\d{3}_\d{3}"),
        "mmew": (r"S\d\d", r"S\d\d-0[1-7]-\d{3}"),
        "casme": (r"sub\d\d", r"EP\d\d_\d"),
        "oulu": (r"P0\d\d", r"P0\d\d_(Anger|Disgust|Fear|Happiness|Sadness|Surprise)"),
    }
    for name, (subj, clip) in patterns.items():
        for c in lab.load(name):
            assert re.fullmatch(subj, c.subject), (name, c.subject)
            assert re.fullmatch(clip, c.clip_id), (name, c.clip_id)
            assert c.clip_id.startswith(c.subject) or name in ("casme2", "casme")
    assert lab.load("samm").subjects == list(lab.SAMM_SUBJECTS)
    assert set(lab.load("smic").subjects) == {f"s{i}" for i in (1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 18, 19, 20)}


def test_composite_is_built_from_the_three_stand_ins():
    comp = lab.load("composite")
    assert len(comp) == 442 and len(comp.subjects) == 68
    assert Counter(c.label3 for c in comp) == {"negative": 250, "positive": 109, "surprise": 83}
    expected = {"smic": (164, 16, {"negative": 70, "positive": 51, "surprise": 43}),
                "casme2": (145, 24, {"negative": 88, "positive": 32, "surprise": 25}),
                "samm": (133, 28, {"negative": 92, "positive": 26, "surprise": 15})}
    for db, (n, n_subjects, classes) in expected.items():
        part = [c for c in comp if c.dataset == db]
        assert len(part) == n and len({c.subject for c in part}) == n_subjects
        assert Counter(c.label3 for c in part) == classes
        source = {c.key: c for c in lab.load(db)}
        for c in part:  # same clips, same keys, same readouts as the stand-in it came from
            s = source[c.key]
            assert (c.label, c.n_frames, c.apex) == (s.label, s.n_frames, s.apex)
            np.testing.assert_array_equal(c.readout, s.readout)
    subjects = {c.subject for c in comp if c.dataset == "casme2"}
    assert subjects == {f"sub{i:02d}" for i in range(1, 27)} - {"sub10", "sub18"}
    assert {c.subject for c in comp if c.dataset == "samm"} == set(lab.SAMM_SUBJECTS) - {"025"}
    keys = {c.key for c in comp}
    unlisted = {"casme2/sub04/EP12_01f", "casme2/sub05/EP09_05f"}
    assert not keys & unlisted
    casme2 = {c.key: c for c in lab.load("casme2")}
    assert all(casme2[k].label == "disgust" for k in unlisted)
    reasons = {s.item: s.reason for s in comp.skipped}
    assert all("official MEGC 2019 list" in reasons[k] for k in unlisted)
    assert len(comp.skipped) == (255 - 145) + (159 - 133)
    assert sum("dropped by the MEGC 2019 rules" in r for r in reasons.values()) == 108 + 26


def test_micro_expression_timing_and_annotation():
    fps = {"casme2": 200, "samm": 200, "smic": 100, "casme": 60, "mmew": 90}
    for name, rate in fps.items():
        for c in lab.load(name):
            assert c.fps == rate
            assert c.n_frames / c.fps < lab.MICRO_MAX_S, c.key
            assert 0 <= c.onset <= c.apex <= c.offset < c.n_frames
            if not c.meta["apex_annotated"]:
                assert c.apex == (c.n_frames - 1) // 2
    casme2 = lab.load("casme2")
    assert sum(not c.meta["apex_annotated"] for c in casme2) == lab.CASME2_UNANNOTATED_APEX
    for c in casme2:  # coded AUs: those that clearly move at the true apex
        codes = [int(x) for x in c.aus.split("+")]
        peak = lab.true_aus(c)[c.meta["true_apex"]]
        assert all(peak[au.index(k)] > 0 for k in codes)
    assert all(c.aus is None for c in lab.load("smic"))  # SMIC has no AU annotation
    assert all(not c.meta["apex_annotated"] for c in lab.load("smic"))
    # durations spread over a realistic range, not one length
    n = np.array([c.n_frames for c in casme2])
    assert n.min() < 50 and n.max() > 80


def test_micro_apex_intensities_are_subtle():
    comp = lab.load("composite")
    apex = np.array([lab.true_aus(c)[c.meta["true_apex"]].max() for c in comp])
    assert np.quantile(apex, 0.98) <= 0.42  # capped at MICRO_CAP; a tic or a resting AU can add a little
    assert 0.08 < np.median(apex) < 0.3
    assert np.quantile(apex, 0.05) >= 0.02


def test_macro_sequences_rise_from_micro_like_early_frames_to_a_strong_peak():
    comp = lab.load("composite")
    micro = np.median([lab.true_aus(c)[c.meta["true_apex"]].max() for c in comp])
    for name, kw, (lo, hi), fps in [("ckplus", {}, (10, 60), 30), ("oulu", {}, (9, 30), 25),
                                    ("mmew", {"part": "macro"}, (27, 54), 90)]:
        cs = lab.load(name, **kw)
        windows = {w: [] for w in ((0.1, 0.3), (0.3, 0.5), (0.5, 0.7))}
        peak = []
        for c in cs:
            z = lab.true_aus(c)
            assert lo <= c.n_frames <= hi and c.fps == fps
            assert c.apex == c.offset == c.n_frames - 1 and c.onset == 0
            for (a, b), values in windows.items():
                values.append(z[int(a * c.n_frames):int(b * c.n_frames) + 1].max(1).mean())
            peak.append(z[-1].max())
            assert z[0].max() < 0.3  # starts near neutral
        gap = {w: abs(np.median(v) - micro) for w, v in windows.items()}
        assert gap[(0.3, 0.5)] < 0.06 and gap[(0.3, 0.5)] == min(gap.values())  # MiE-X's alpha, beta
        assert np.median(windows[(0.1, 0.3)]) < np.median(windows[(0.3, 0.5)]) < np.median(windows[(0.5, 0.7)])
        assert np.median(peak) > 0.6
    ck = lab.load("ckplus")
    assert all(c.aus for c in ck)  # FACS codes of the peak frame
    assert sum(c.meta["labelled"] for c in ck) == 327


def test_each_emotion_shows_its_own_aus():
    comp = lab.load("composite")
    diffs = {k: np.mean([lab.true_aus(c)[c.meta["true_apex"]] for c in comp if c.label3 == k], axis=0)
             for k in au.MEGC3}
    i = au.index
    assert diffs["positive"][i(12)] > diffs["negative"][i(12)]
    assert diffs["surprise"][i(2)] > max(diffs["negative"][i(2)], diffs["positive"][i(2)])
    assert diffs["negative"][i(4)] > diffs["positive"][i(4)]
    assert diffs["negative"][i(7)] > diffs["positive"][i(7)] * 0.9


def test_same_seed_same_lab_other_seed_differs():
    a, b, c = lab._generate("smic", 3), lab._generate("smic", 3), lab._generate("smic", 4)
    assert a["rows"] == b["rows"]
    for k in ("true_aus", "readout", "failed", "starts"):
        np.testing.assert_array_equal(a[k], b[k])
    assert [r["clip_id"] for r in a["rows"]] == [r["clip_id"] for r in c["rows"]]  # keys are stable
    assert a["rows"] != c["rows"]
    assert len(a["readout"]) != len(c["readout"]) or not np.array_equal(a["readout"], c["readout"])


def test_readouts_are_not_the_truth_but_follow_it():
    cs = lab.load("casme2")
    truth = np.concatenate([lab.true_aus(c) for c in cs])
    reads = np.concatenate([c.readout for c in cs])
    assert reads.shape == truth.shape and reads.dtype == np.float32
    assert reads.min() >= 0 and reads.max() <= 1
    assert not np.allclose(reads, truth, atol=0.02)
    dt = np.stack([lab.true_aus(c)[c.apex] - lab.true_aus(c)[c.onset] for c in cs])
    dr = np.stack([c.readout[c.apex] - c.readout[c.onset] for c in cs])
    assert 0.3 < np.corrcoef(dt.ravel(), dr.ravel())[0, 1] < 0.95
    macro = lab.load("ckplus")
    mt = np.concatenate([lab.true_aus(c) for c in macro])
    mr = np.concatenate([c.readout for c in macro])
    assert 0.6 < np.corrcoef(mt.ravel(), mr.ravel())[0, 1] < 0.97
    failed = [(c, f) for c in cs for f in c.meta["failed_frames"]]
    assert failed and all(not c.readout[f].any() for c, f in failed)  # OpenFace writes zeros


def test_readout_floor_under_reads_subtle_aus():
    model = readout.model(0)
    z = np.zeros((200, au.N_AUS), dtype=np.float32)
    z[:, au.index(20)] = 0.1  # below AU20's floor
    z[:, au.index(12)] = 0.6
    r, _ = model.read(z, offset=np.zeros(au.N_AUS), rng=np.random.default_rng(0))
    assert np.median(r[:, au.index(20)]) < 0.05
    assert np.median(r[:, au.index(12)]) > 0.3
    with pytest.raises(ValueError, match="AU"):
        model.read(np.ones((3, 16)), offset=np.zeros(au.N_AUS), rng=np.random.default_rng(0))


def test_reference_result_is_hard_but_learnable():
    r = lab.reference_result(0)
    assert (r["samples"], r["subjects"], r["folds"]) == (442, 68, 3)
    assert 0.4 <= r["uf1"] <= 0.65
    assert 0.4 <= r["uar"] <= 0.7
    assert lab.reference_result(0) == r


def test_cache_is_reused_and_written_atomically(data_folder, monkeypatch):
    lab.load("samm")
    path = lab._cache_dir(0) / "samm.npz"
    assert path.exists()
    assert not list(path.parent.glob(".*.tmp"))  # no temporary files left behind
    lab._MEMO.clear()
    monkeypatch.setattr(lab, "_generate", lambda *a: pytest.fail("regenerated a cached stand-in"))
    t0 = time.perf_counter()
    again = lab.load("samm")
    assert time.perf_counter() - t0 < 2.0
    assert len(again) == 159
    monkeypatch.undo()
    # a corrupt cache file (say, a half-copied one) is regenerated, not trusted
    path.write_bytes(b"not an npz")
    lab._MEMO.clear()
    assert len(lab.load("samm")) == 159
    with np.load(path) as f:
        assert "readout" in f.files
    # a run killed while writing leaves no file a later run would trust, and no debris
    monkeypatch.setattr(lab.store.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        lab.load("smic", seed=7)
    monkeypatch.undo()
    assert not (lab._cache_dir(7) / "smic.npz").exists()
    assert not list(lab._cache_dir(7).glob(".*.tmp"))


def test_bad_requests_get_clear_errors():
    with pytest.raises(ValueError, match="unknown stand-in 'casme3'"):
        lab.load("casme3")
    with pytest.raises(ValueError, match="seed"):
        lab.load("smic", seed=-1)
    with pytest.raises(ValueError, match="size"):
        lab.load("smic", size=3)
    with pytest.raises(ValueError, match="part"):
        lab.load("mmew", part="mega")
    with pytest.raises(ValueError, match="part= applies to 'mmew' only"):
        lab.load("smic", part="micro")
    with pytest.raises(ValueError, match="selection"):
        lab.load("samm", selection="miex")
    with pytest.raises(ValueError, match="not a lab clip"):
        lab.true_aus(dataclasses.replace(lab.load("smic")[0], meta={}))
    with pytest.raises(ValueError, match="pool"):
        lab.pool("ffhq")
    with pytest.raises(ValueError, match="n must be"):
        lab.pool("celeba", 6000)


def test_identity_pools():
    emo, celeb = lab.pool("emotionet"), lab.pool("celeba")
    assert len(emo) >= 5000 and len(celeb) >= 5000
    assert emo.readout.shape == (len(emo), au.N_AUS) and emo.true_aus.shape == emo.readout.shape
    np.testing.assert_array_equal(emo.aus, emo.readout)
    # differently distributed: CelebA-like faces smile or rest; EmotioNet-like show more
    share = lambda p, e: np.mean([x == e for x in p.expression])  # noqa: E731
    assert share(celeb, "happiness") > share(emo, "happiness") + 0.1
    assert share(emo, "surprise") + share(emo, "anger") > 2 * (share(celeb, "surprise") + share(celeb, "anger"))
    assert np.corrcoef(emo.true_aus.ravel(), emo.readout.ravel())[0, 1] > 0.6
    small = lab.pool("emotionet", 100)
    np.testing.assert_array_equal(small.readout, emo.readout[:100])
    # lab subjects never use a pool identity
    ids = {c.meta["identity"] for name in ("composite", "ckplus", "oulu", "casme") for c in lab.load(name)}
    assert min(ids) >= lab.IDENTITY_BASE > max(lab.POOL_SIZES.values())


def test_card_reports_generated_numbers():
    df = lab.card(0)
    row = df.set_index("stand-in")
    assert row.loc["composite", "clips"] == 442 and row.loc["composite", "subjects"] == 68
    assert row.loc["ckplus", "labelled"] == 327
    assert row.loc["samm", "grayscale clips"] == 159
    assert "pool emotionet" in row.index


def test_data_card_is_current():
    """data/README.md's generated section must be what card_markdown() prints now."""
    text = (lab.runtime.ROOT / "data" / "README.md").read_text(encoding="utf-8")
    section = text.split(lab.CARD_BEGIN, 1)[1].split(lab.CARD_END, 1)[0]
    assert section.strip() == lab.card_markdown(0).strip(), \
        "the data card is stale: run `python -m mielib lab card --update data/README.md`"


def test_cli(capsys):
    assert lab.cli(["card"]) == 0
    assert "composite" in capsys.readouterr().out
    assert lab.cli(["build", "--seed", "-2"]) == 2
    assert "error:" in capsys.readouterr().err
    assert lab.cli(["frobnicate"]) == 2


# ---------------------------------------------------------------------------------------------
# Rendering (needs mielib.face)

def test_frames_render_lazily_deterministically_with_quirks():
    pytest.importorskip("mielib.face")
    samm = lab.load("samm", size=48)
    c = samm[0]
    f0 = c.frames[c.apex]
    assert f0.shape == (48, 48, 3) and f0.dtype == np.uint8
    assert np.array_equal(f0[..., 0], f0[..., 1]) and np.array_equal(f0[..., 1], f0[..., 2])  # grayscale
    np.testing.assert_array_equal(lab.load("samm", size=48)[0].frames[c.apex], f0)
    lab._MEMO.clear()
    np.testing.assert_array_equal(lab.load("samm", size=48, seed=0)[0].frames[c.apex], f0)
    other = lab.load("samm", size=48, seed=1)[0].frames[c.apex]
    assert not np.array_equal(other, f0)
    colour = lab.load("casme2", size=48)[0].frames[0]
    assert not np.array_equal(colour[..., 0], colour[..., 2])
    # frames of one clip differ (motion, expression, noise) but stay the same face
    onset, apex = c.frames[c.onset].astype(float), f0.astype(float)
    assert 0 < np.abs(onset - apex).mean() < 30


def test_built_frames_are_cached_and_match_lazy_rendering(monkeypatch, data_folder):
    pytest.importorskip("mielib.face")
    clip = lab.load("smic", size=32)[1]
    lazy = [clip.frames[t] for t in range(clip.n_frames)]
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in lazy)
    # build(frames=True)'s unit of work, on two clips
    assert lab._render_clips((0, 32, "smic", [0, 1], str(data_folder))) == 2
    assert lab._render_clips((0, 32, "smic", [0, 1], str(data_folder))) == 0  # resumable: nothing to redo
    path = lab._frames_path(0, 32, "smic", 1)
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    lab._FRAME_FILES.clear()
    monkeypatch.setattr(lab._ClipRenderer, "stored", lambda *a: pytest.fail("rendered a cached frame"))
    cached = lab.load("smic", size=32)[1]
    for t in range(clip.n_frames):
        np.testing.assert_array_equal(cached.frames[t], lazy[t])


def test_sensor_noise_sd_scales_with_size_over_native():
    """A camera's noise at the native face size, area-averaged down to `size`: sd x size / native."""
    cap = lab.SPECS["casme2"].capture
    assert cap.native == 300
    assert cap.noise_at(300) == pytest.approx(cap.noise) and cap.noise_at(600) == pytest.approx(cap.noise)
    assert cap.noise_at(150) == pytest.approx(cap.noise / 2) and cap.noise_at(32) == pytest.approx(cap.noise * 32 / 300)
    # measured on stored frames: a flat face stored with and without the noise, at two sizes; a
    # loud camera (sd 20 at 256 px) so that JPEG's own rounding (sd about 1) hardly matters
    loud = dataclasses.replace(cap, noise=20.0, native=256)
    img = np.full((128, 128, 3), 128, np.uint8)
    sds = {}
    for size in (32, 128):
        kw = dict(dx=0, dy=0, angle=0, cast=(1, 1, 1), blur=0, gray=False, jpeg=100, key=[0, size])
        noisy = lab._decode(lab._capture(img, size, noise=loud.noise_at(size), **kw)).astype(float)
        clean = lab._decode(lab._capture(img, size, noise=0.0, **kw)).astype(float)
        sds[size] = (noisy - clean).std()
    assert sds[128] == pytest.approx(20 * 128 / 256, rel=0.1)
    assert sds[32] == pytest.approx(20 * 32 / 256, rel=0.2)  # the old lab gave the full sd at every size


def test_micro_expression_sets_are_registered_and_raw_variant_keeps_head_motion():
    assert all(lab.SPECS[n].capture.registered for n in ("casme2", "samm", "smic", "mmew_micro", "casme"))
    assert not lab.SPECS["ckplus"].capture.registered and not lab.SPECS["oulu"].capture.registered
    cropped, raw = lab.load("casme2", size=32)[3], lab.load("casme2", size=32, variant="raw")[3]
    assert cropped.meta["variant"] == "cropped" and raw.meta["variant"] == "raw"
    mc, mr = cropped.frames.render.motion(), raw.frames.render.motion()
    np.testing.assert_allclose(mc[0], mr[0])  # the crop sits where the first frame's face is
    np.testing.assert_allclose(mc - mc[0], lab.REGISTRATION_RESIDUAL * (mr - mr[0]), atol=1e-9)
    assert np.abs(mr - mr[0]).max() > 0.05
    assert lab.load("ckplus", size=32, variant="raw")[0].meta["variant"] == "raw"
    with pytest.raises(ValueError, match="unknown variant 'aligned'"):
        lab.load("casme2", variant="aligned")


def test_pixel_signal_separates_expression_motion_and_noise():
    pytest.importorskip("mielib.face")
    df = lab.pixel_signal(sizes=(32, 128), n=6).set_index(["variant", "size"])
    assert (df[["expression", "motion", "noise", "identity"]] > 0).all().all()
    # registration removes most of the head motion; noise falls with the frame size
    assert (df.loc["cropped", "motion"] < df.loc["raw", "motion"]).all()
    assert df.loc[("cropped", 32), "noise sd"] < df.loc[("cropped", 128), "noise sd"]
    assert (df["identity"] > 10 * df["expression"]).all()  # people differ far more than their micro-expressions
