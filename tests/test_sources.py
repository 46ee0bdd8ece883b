"""The three AU sources (MiE-X Section 4.2) and the triplet pools, against what the paper says.

Statistical checks use many draws and tolerances of about 4.5 standard errors: a wrong rate or
range fails them, a right one passes (seeds are fixed, so the outcome is reproducible).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mielib import au, sources
from mielib.clip import ArrayFrames, Clip, ClipSet

import dataset_fixtures as fx


def _clip(key: str, label: str | None, label3: str | None, readout, *, onset=0, apex=None, dataset="casme2",
          failed=()) -> Clip:
    readout = None if readout is None else np.asarray(readout, np.float32)
    n = len(readout) if readout is not None else 6
    subject, clip_id = key.split("/")
    return Clip(dataset=dataset, subject=subject, clip_id=clip_id, frames=ArrayFrames(np.zeros((n, 4, 4, 3), np.uint8)),
                fps=30.0, onset=onset, apex=apex if apex is not None else n // 2, offset=n - 1, label=label,
                label3=label3, readout=readout, meta={"failed_frames": np.array(failed, dtype=np.int64)})


def _ramp(n: int, scale: float = 0.04) -> np.ndarray:
    """A readout whose row t holds t * scale in every AU (so a row tells which frame it was)."""
    return np.repeat((np.arange(n) * scale)[:, None], au.N_AUS, axis=1)


# ---------------------------------------------------------------------------------------------
# z_MiE

def test_mie_reads_the_onset_and_apex_rows_of_the_lab_readout_not_the_hidden_truth():
    from mielib import lab

    clips = lab.load("composite", seed=0)
    t = sources.mie(clips)
    assert len(t) + len(t.skipped) == len(clips)
    by_key = {c.key: c for c in clips}
    truth_gap = []
    for i in range(len(t)):
        c = by_key[t.provenance[i]]
        np.testing.assert_array_equal(t.z_onset[i], c.readout[c.onset])
        np.testing.assert_array_equal(t.z_apex[i], c.readout[c.apex])
        assert t.label[i] == c.label3 and t.emotion[i] == c.label
        truth_gap.append(np.abs(lab.true_aus(c)[c.apex] - t.z_apex[i]).max())
    # the readout is not the truth: it differs clearly on most clips
    assert np.mean(np.array(truth_gap) > 0.01) > 0.8
    assert set(t.label) == set(au.MEGC3)
    for s in t.skipped:  # every clip left out says why (here: face tracking failed on onset/apex)
        assert "failed" in s.reason and s.item in by_key


def test_mie_missing_readout_raises_naming_the_clip_and_the_locating_rule_or_is_reported():
    clips = ClipSet("toy", [_clip("sub01/EP01", "happiness", "positive", _ramp(5)),
                            _clip("sub02/EP07", "disgust", "negative", None)])
    with pytest.raises(ValueError, match=r"casme2/sub02/EP07: no AU readout.*openface"):
        sources.mie(clips)
    t = sources.mie(clips, missing="skip")
    assert list(t.provenance) == ["casme2/sub01/EP01"]
    assert [s.item for s in t.skipped] == ["casme2/sub02/EP07"] and "openface" in t.skipped[0].reason


def test_mie_failed_apex_frame_is_skipped_with_reason_or_kept_on_request():
    clips = ClipSet("toy", [_clip("s1/a", "happiness", "positive", _ramp(6), apex=3, failed=[3]),
                            _clip("s1/b", "others", None, _ramp(6)),
                            _clip("s2/c", "surprise", "surprise", _ramp(6), apex=2)])
    t = sources.mie(clips)
    assert list(t.provenance) == ["casme2/s2/c"]
    reasons = {s.item: s.reason for s in t.skipped}
    assert "apex frame 3" in reasons["casme2/s1/a"] and "MEGC" in reasons["casme2/s1/b"]
    kept = sources.mie(clips, failed="keep")
    assert list(kept.provenance) == ["casme2/s1/a", "casme2/s2/c"]
    np.testing.assert_allclose(kept.z_apex[1], 0.08)  # row 2 of the ramp


def test_mie_rejects_a_readout_that_does_not_match_the_clip():
    c = _clip("s1/a", "happiness", "positive", _ramp(6))
    c.frames = ArrayFrames(np.zeros((7, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="6 rows but the clip has 7 frames"):
        sources.mie(ClipSet("toy", [c]))
    bad = _clip("s1/b", "happiness", "positive", _ramp(6) * 40)  # OpenFace's 0..5 scale, not divided
    with pytest.raises(ValueError, match="s1/b AU readout"):
        sources.mie(ClipSet("toy", [bad]))


# ---------------------------------------------------------------------------------------------
# z_MaE

def test_apex_window_follows_the_paper_and_the_authors_rule():
    np.testing.assert_array_equal(sources.apex_window(20), np.arange(6, 11))  # floor(6) .. floor(10)
    np.testing.assert_array_equal(sources.apex_window(7), [2, 3])  # floor(2.1) .. floor(3.5)
    np.testing.assert_array_equal(sources.apex_window(20, 0.25, 0.5, "authors"), np.arange(5, 10))
    np.testing.assert_array_equal(sources.apex_window(3, 0.9, 1.0), [2])  # capped at the last frame
    with pytest.raises(ValueError, match="alpha"):
        sources.apex_window(10, 0.6, 0.5)


def test_mae_onset_is_the_first_row_and_apex_uniform_over_the_window():
    clips = ClipSet("toy", [_clip(f"S{i:03d}/001", "happiness", "positive", _ramp(20), dataset="ckplus")
                            for i in range(3000)])
    t = sources.mae(clips, seed=3)
    np.testing.assert_array_equal(t.z_onset, 0.0)  # row 0 of the ramp
    apex = t.frames[:, 1]
    np.testing.assert_allclose(t.z_apex[:, 0], apex * 0.04, atol=1e-6)  # the apex is that frame's row
    values, counts = np.unique(apex, return_counts=True)
    np.testing.assert_array_equal(values, np.arange(6, 11))
    assert stats.chisquare(counts).pvalue > 1e-3  # each index of the window equally likely
    # the authors' option reaches floor(n * U(0.25, 0.5)) = 5..9
    a = sources.mae(clips, alpha=0.25, beta=0.5, rule="authors", seed=3).frames[:, 1]
    assert set(np.unique(a)) == set(range(5, 10))


def test_mae_unlabelled_sequences_are_reported_and_labels_mapped_to_three_classes():
    from mielib import lab

    ck = lab.load("ckplus", seed=0)
    t = sources.mae(ck, seed=0)
    unlabelled = [c.key for c in ck if c.label is None]
    assert unlabelled and {s.item for s in t.skipped} >= set(unlabelled)
    assert len(t) + len(t.skipped) == len(ck)
    by_key = {c.key: c for c in ck}
    for i in range(0, len(t), 17):
        c = by_key[t.provenance[i]]
        assert t.label[i] == au.to_megc3("ckplus", c.label)
        lo, hi = int(0.3 * c.n_frames), int(0.5 * c.n_frames)
        assert lo <= t.frames[i, 1] <= hi and t.frames[i, 0] == 0
        np.testing.assert_array_equal(t.z_apex[i], c.readout[t.frames[i, 1]])
    assert sources.mae(ck, seed=0).frames.tolist() == t.frames.tolist()  # seeded
    assert sources.mae(ck, seed=1).frames.tolist() != t.frames.tolist()


def test_mae_on_real_ckplus_reads_openface_csvs_and_explains_a_missing_one(tmp_path):
    fx.ckplus(tmp_path / "ckplus")
    with pytest.raises(ValueError, match=r"ckplus/S005/S005_001 \(frames in .*S005/001\): no AU readout.*openface"):
        sources.triplets("mae", data_source="real", data_root=tmp_path)
    aus = np.zeros((5, au.N_AUS))
    aus[:, au.index(9)] = [0.0, 0.5, 1.0, 1.5, 2.0]  # OpenFace's 0..5 scale
    fx.openface_csv(tmp_path / "ckplus" / "openface" / "cohn-kanade-images" / "S005" / "001.csv", aus)
    t = sources.triplets("mae", data_source="real", data_root=tmp_path, seed=0)
    assert list(t.provenance) == ["ckplus/S005/S005_001"] and list(t.label) == ["negative"]  # disgust
    assert t.z_onset[0, au.index(9)] == 0.0
    assert t.frames[0, 1] in (1, 2)  # floor(1.5) .. floor(2.5)
    assert t.z_apex[0, au.index(9)] == pytest.approx(aus[t.frames[0, 1], au.index(9)] / 5)
    assert any("no emotion label" in s.reason for s in t.skipped)  # S010/002


# ---------------------------------------------------------------------------------------------
# z_exp

@pytest.mark.parametrize("table", ["miex", "du2014"])
def test_exp_bernoulli_rates_and_uniform_intensities_match_the_table(table):
    n = 12000
    t = sources.exp(n, table=table, seed=5)
    tab = au.expert_table(table)
    np.testing.assert_array_equal(t.z_onset, 0.0)  # onset: a neutral face
    for label in au.MEGC3:
        sub = t.of(label)
        assert len(sub) == n
        emotions = au.expert_emotions(label, table)
        names, counts = np.unique(sub.emotion, return_counts=True)
        assert set(names) == set(emotions)
        if len(emotions) > 1:  # negative: each negative emotion equally likely
            assert stats.chisquare(counts).pvalue > 1e-3
        for e in emotions:
            z = sub.z_apex[sub.emotion == e]
            rate = (z > 0).mean(axis=0)
            se = np.sqrt(np.maximum(tab[e] * (1 - tab[e]), 1e-12) / len(z))
            assert np.all(np.abs(rate - tab[e]) <= 4.5 * se + 1e-12), (e, rate, tab[e])
    active = t.z_apex[t.z_apex > 0]
    assert active.min() >= sources.MU and active.max() <= sources.NU
    assert stats.kstest(active, "uniform", args=(sources.MU, sources.NU - sources.MU)).pvalue > 1e-3
    assert set(t.provenance) == {f"exp/{e}" for e in t.emotion}


def test_exp_intensity_range_follows_mu_and_nu():
    t = sources.exp(3000, mu=0.5, nu=0.7, seed=1)
    active = t.z_apex[t.z_apex > 0]
    assert stats.kstest(active, "uniform", args=(0.5, 0.2)).pvalue > 1e-3
    with pytest.raises(ValueError, match="mu"):
        sources.exp(10, mu=0.4, nu=0.2)
    with pytest.raises(ValueError, match="unknown expert table"):
        sources.exp(10, table="ekman")


# ---------------------------------------------------------------------------------------------
# Pools of triplets

def test_triplet_pools_have_the_requested_size_and_balanced_classes():
    t = sources.triplets("exp", 10, seed=0)
    assert [int((t.label == c).sum()) for c in au.MEGC3] == [4, 3, 3]
    t = sources.triplets("exp", per_class={"negative": 5, "positive": 0, "surprise": 2}, seed=0)
    assert [int((t.label == c).sum()) for c in au.MEGC3] == [5, 0, 2]
    with pytest.raises(ValueError, match="no natural size"):
        sources.triplets("exp")
    with pytest.raises(ValueError, match="unknown AU source"):
        sources.triplets("micro", 3)


def test_a_class_draws_from_its_own_stream_so_other_counts_do_not_change_it():
    a = sources.triplets("exp", per_class={"negative": 4, "positive": 5, "surprise": 6}, seed=2)
    b = sources.triplets("exp", per_class={"negative": 40, "positive": 5, "surprise": 1}, seed=2)
    np.testing.assert_array_equal(a.of("positive").z_apex, b.of("positive").z_apex)
    np.testing.assert_array_equal(a.of("negative").z_apex, b.of("negative").z_apex[:4])
    c = sources.triplets("exp", per_class={"negative": 4, "positive": 5, "surprise": 6}, seed=3)
    assert not np.array_equal(a.z_apex, c.z_apex)


def test_mie_pool_of_n_draws_clips_of_the_class_with_replacement_and_keeps_provenance():
    clips = ClipSet("toy", [_clip(f"s{i}/c", "happiness", "positive", _ramp(6) + 0.01 * i) for i in range(4)]
                    + [_clip("s9/d", "disgust", "negative", _ramp(6)), _clip("s8/e", "surprise", "surprise", _ramp(6))])
    t = sources.triplets("mie", 30, clips=clips, seed=0)
    pos = t.of("positive")
    assert len(pos) == 10 and set(pos.provenance) <= {f"casme2/s{i}/c" for i in range(4)}
    assert t.n_distinct == 6  # only six clips exist
    for i in range(len(t)):  # the provenance names the clip whose rows the AUs are
        c = next(c for c in clips if c.key == t.provenance[i])
        np.testing.assert_array_equal(t.z_apex[i], c.readout[c.apex])
    d = t.draw(100, np.random.default_rng(0), label="negative")
    assert set(d.provenance) == {"casme2/s9/d"}


def test_perturbation_stays_within_p_and_the_unit_interval():
    base = sources.triplets("exp", 300, seed=4)
    t = sources.triplets("exp", 300, seed=4, perturb=0.05)
    diff = t.z_apex - base.z_apex
    assert np.abs(diff).max() <= 0.05 + 1e-6 and np.abs(diff).max() > 0.04
    assert t.z_apex.min() >= 0.0 and t.z_apex.max() <= 1.0
    np.testing.assert_array_equal(t.z_onset, 0.0)  # z_exp onsets stay neutral
    # clipped, not wrapped: zero AUs stay >= 0 (and about half of them move up)
    zero = base.z_apex == 0
    assert 0.4 < (t.z_apex[zero] > 0).mean() < 0.6
    assert t.n_distinct == 300


def test_video_paths_run_from_onset_to_apex():
    e = sources.triplets("exp", 3, seed=0)
    p = e.path(0)
    assert p.shape == (sources.VIDEO_FRAMES, au.N_AUS)
    np.testing.assert_allclose(p[0], 0.0)
    np.testing.assert_allclose(p[-1], e.z_apex[0])
    np.testing.assert_allclose(p[4], e.z_apex[0] * 4 / 9, atol=1e-6)  # linear: 8 vectors in between
    clips = ClipSet("toy", [_clip("s1/a", "happiness", "positive", _ramp(12), onset=2, apex=8)])
    m = sources.triplets("mie", clips=clips)
    np.testing.assert_allclose(m.path(0, None)[:, 0], np.arange(2, 9) * 0.04, atol=1e-6)  # rows 2..8
    np.testing.assert_allclose(m.path(0, 4)[:, 0], np.array([2, 4, 6, 8]) * 0.04, atol=1e-6)


def test_the_paper_sources_exist_in_the_lab_with_all_three_classes():
    for source, dataset in (("mie", "composite"), ("mae", "ckplus"), ("mae", "oulu"), ("mae", "mmew"), ("mie", "mmew")):
        t = sources.triplets(source, dataset=dataset)
        s = t.summary()
        assert all(s["by_class"][c] > 0 for c in au.MEGC3), (source, dataset, s["by_class"])
    means = sources.mean_aus([sources.triplets("mie"), sources.triplets("mae")])
    assert len(means) == 6 and set(means.columns) >= set(au.LABELS)
