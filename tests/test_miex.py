"""The MiE-X builder: sample counts (footnote 4), the knobs of Figs. 6-7 and Table 3, fold exclusion
(Section 5.1), atomic and resumable writes, determinism, loading and the command line.

Builds use a few identities at 32-48 px so the file runs in well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mielib import au, miex, protocols, sources


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a build except build.json (which records times), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "build.json"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("miex") / "a"
    return miex.build(out, identities=3, size=32, seed=1, progress=False)


# ---------------------------------------------------------------------------------------------
# The plan

def test_paper_layout_is_nine_samples_per_identity_one_per_class_and_source():
    p = miex.plan(identities=4, seed=0)
    df = p.manifest
    assert len(df) == 4 * 9
    for _, g in df.groupby("identity"):
        assert sorted(zip(g["class"], g["source"])) == sorted((c, s) for c in au.MEGC3 for s in sources.SOURCES)
    assert df["identity"].nunique() == 4
    # identities are a seeded random choice, nested as their number grows (Fig. 6b)
    more = miex.plan(identities=8, seed=0).manifest
    assert list(dict.fromkeys(more["identity"]))[:4] == list(dict.fromkeys(df["identity"]))
    assert list(dict.fromkeys(miex.plan(identities=4, seed=1).manifest["identity"])) != list(dict.fromkeys(df["identity"]))


def test_triplets_come_from_their_source_with_their_provenance():
    p = miex.plan(identities=20, seed=0)
    df = p.manifest
    comp = {c.key: c for c in sources.load_clips("mie")}
    for _, row in df[df["source"] == "mie"].iterrows():
        c = comp[row["provenance"]]
        assert c.label3 == row["class"]
        np.testing.assert_array_equal(row[list(miex.ZA)].to_numpy(np.float32), c.readout[c.apex])
        np.testing.assert_array_equal(row[list(miex.ZO)].to_numpy(np.float32), c.readout[c.onset])
    exp = df[df["source"] == "exp"]
    assert (exp[list(miex.ZO)].to_numpy() == 0).all()
    assert all(p.startswith("exp/") for p in exp["provenance"])
    assert df[df["source"] == "mae"]["provenance"].str.startswith("ckplus/").all()


def test_samples_and_triplets_knobs_of_fig6():
    p = miex.plan(identities=7, samples=60, triplets=12, sources="mae,exp", seed=0)
    df = p.manifest
    assert len(df) == 60 and set(df["source"]) == {"mae", "exp"}
    assert (df.groupby(["source", "class"]).size() == 10).all()
    assert df["identity"].nunique() == 7
    distinct = df.drop_duplicates(subset=["source", "class", *miex.ZO, *miex.ZA])
    assert len(distinct) <= 12
    with pytest.raises(ValueError, match="multiple of 6"):
        miex.plan(identities=7, samples=61, sources="mae,exp")


def test_alpha_beta_mu_nu_table_and_dataset_options_reach_the_sources():
    df = miex.plan(identities=30, sources="exp", mu=0.5, nu=0.7, table="du2014", seed=0).manifest
    za = df[list(miex.ZA)].to_numpy()
    assert za[za > 0].min() >= 0.5 and za.max() <= 0.7
    assert set(df.loc[df["class"] == "negative", "emotion"]) <= set(au.expert_emotions("negative", "du2014"))
    df = miex.plan(identities=30, sources="mae", alpha=0.5, beta=0.7, mae_dataset="oulu", seed=0).manifest
    assert df["provenance"].str.startswith("oulu/").all()
    oulu = {c.key: c for c in sources.load_clips("mae", "oulu")}
    for row in df.itertuples():
        c = oulu[row.provenance]
        za = np.array([getattr(row, f"za_{a}") for a in au.LABELS], np.float32)
        rows = [t for t in range(int(0.5 * c.n_frames), int(0.7 * c.n_frames) + 1)
                if np.array_equal(c.readout[t], za)]
        assert rows, row.provenance


def test_frontal_option_picks_faces_with_small_head_turns():
    from mielib import face

    frontal = miex.plan(identities=200, frontal=True, sources="exp", pool="celeba").manifest["identity"].unique()
    anyone = miex.plan(identities=200, sources="exp", pool="celeba").manifest["identity"].unique()
    yaw = lambda ids: np.mean([abs(face.identity(int(i), "celeba").params["yaw"]) for i in ids])  # noqa: E731
    assert yaw(frontal) < 0.75 * yaw(anyone)


def test_pose_scores_ignore_in_plane_motion_and_grow_with_a_head_turn():
    from mielib import face

    base = face.landmarks(face.identity(3, "celeba"), None, 128)
    theta = np.radians(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (base - 64) @ rot.T * 1.3 + 70  # rotated in the image plane, scaled, shifted
    turned = base.copy()
    mid = base[:, 0].mean()
    turned[:, 0] = mid + (base[:, 0] - mid) * np.where(base[:, 0] < mid, 0.7, 1.0)  # one side foreshortened
    pool = np.stack([face.landmarks(face.identity(i, "celeba"), None, 128) for i in range(40)])
    s = miex.pose_scores(np.concatenate([pool, [base, moved, turned]]))
    assert s[-2] == pytest.approx(s[-3], abs=1e-6)
    assert s[-1] > s[-3] + 0.05
    with pytest.raises(ValueError, match="68 x 2"):
        miex.pose_scores(np.zeros((2, 5, 2)))


def test_video_variant_has_ten_frames_from_onset_to_apex(tmp_path):
    p = miex.plan(identities=1, video=True, seed=0)
    assert (p.manifest["n_frames"] == 10).all()
    for k, row in p.manifest.iterrows():
        path = p.videos[k]
        np.testing.assert_array_equal(path[0], row[list(miex.ZO)].to_numpy(np.float32))
        np.testing.assert_array_equal(path[-1], row[list(miex.ZA)].to_numpy(np.float32))
        if row["source"] == "exp":
            np.testing.assert_allclose(path[3], path[-1] * 3 / 9, atol=1e-6)
    from mielib import views

    d = miex.build(tmp_path / "v", identities=1, size=24, video=True, sources="exp", progress=False)
    assert len(d) == 3 and all(c.n_frames == 10 for c in d)
    assert len(list((tmp_path / "v" / "frames").rglob("*.png"))) == 30
    frames, label = views.Stack(d, n_frames=10, until="apex", size=24)[1]
    assert frames.shape == (3, 10, 24, 24) and not bool((frames[:, 0] == frames[:, -1]).all())


def test_bad_options_get_clear_errors():
    with pytest.raises(ValueError, match="unknown MiE-X option"):
        miex.configure(identites=3)
    with pytest.raises(ValueError, match="sources must be"):
        miex.configure(sources="mie,macro")
    with pytest.raises(ValueError, match="needs gan_checkpoint"):
        miex.configure(generator="ganimation")
    with pytest.raises(ValueError, match="celeba pool has 5000"):
        miex.plan(identities=5001, pool="celeba")


# ---------------------------------------------------------------------------------------------
# Fold exclusion (Section 5.1)

def test_fold_exclusion_leaves_no_test_subject_au_in_training():
    composite = sources.load_clips("mie")
    folds = protocols.kfold(composite.to_frame(), 3, seed=0)
    df = miex.plan(identities=150, seed=0).manifest
    subject_of = {c.key: protocols.subject_key(c.dataset, c.subject) for c in composite}
    for fold in folds:
        test = set(fold.test_subjects)
        kept = miex.exclude(df, test)
        mie = kept[kept["source"] == "mie"]
        assert not any(subject_of[p] in test for p in mie["provenance"])  # nothing leaks
        # what was dropped is exactly the z_MiE samples of test subjects; z_MaE and z_exp stay
        leaked = df[(df["source"] == "mie") & df["provenance"].map(lambda p: subject_of.get(p) in test)]
        assert kept.attrs["excluded"] == len(leaked) > 0
        assert len(kept) == len(df) - len(leaked)
        assert (kept["source"] == "exp").sum() == (df["source"] == "exp").sum()
    # clip keys work too
    one = df.loc[df["source"] == "mie", "provenance"].iloc[0]
    assert one not in set(miex.exclude(df, [one])["provenance"])


def test_exclusion_on_a_loaded_build_keeps_clips_and_manifest_in_step(small):
    test = {small.manifest.loc[small.manifest["source"] == "mie", "provenance"].iloc[0].rsplit("/", 1)[0]}
    kept = small.exclude(test)
    assert len(kept) == len(kept.manifest) == len(small) - kept.info["excluded"]
    assert [c.meta["sample"] for c in kept] == kept.manifest["sample"].tolist()


# ---------------------------------------------------------------------------------------------
# Build, load, resume, folder checks

def test_build_writes_frames_manifest_and_loads_as_a_clipset(small):
    from mielib import views

    root = small.root
    df = pd.read_csv(root / "manifest.csv")
    assert len(df) == 27 and len(small) == 27
    for col in ("identity", "pool", "class", "source", "emotion", "provenance", "onset", "apex", "generator", "seed",
                *miex.ZO, *miex.ZA):
        assert col in df.columns
    assert all((root / p).is_file() for p in pd.concat([df["onset"], df["apex"]]))
    info = json.loads((root / "build.json").read_text())
    assert info["status"] == "complete" and info["config"]["identities"] == 3 and "mielib_commit" in info
    assert info["summary"]["by_source_class"]["mie"] == {"negative": 3, "positive": 3, "surprise": 3}
    assert not (root / "journal.txt").exists()
    onset, apex, label = views.OnsetApex(small, size=32)[0]
    assert onset.shape == (3, 32, 32) and au.MEGC3[label] == small[0].label3
    # exp samples: neutral onset, so onset frames of one identity's exp samples are identical
    exp = df[(df["source"] == "exp") & (df["identity"] == df["identity"].iloc[0])]
    assert len({(root / p).read_bytes() for p in exp["onset"]}) == 1
    assert (root / exp["onset"].iloc[0]).read_bytes() != (root / exp["apex"].iloc[0]).read_bytes()
    mem = miex.load(root, memory=True)
    np.testing.assert_array_equal(mem[5].frames[1], small[5].frames[1])
    assert len(list(root.glob("frames_*.npy"))) == 1


def test_same_seed_same_bytes_with_one_or_two_workers(tmp_path, small):
    b = miex.build(tmp_path / "b", identities=3, size=32, seed=1, progress=False)
    assert _files(b.root) == {k: v for k, v in _files(small.root).items() if not k.startswith("frames_")}
    # more identities than one chunk, so two worker processes share the rendering
    one = miex.build(tmp_path / "w1", identities=miex.CHUNK + 2, size=24, sources="exp", progress=False, workers=1)
    two = miex.build(tmp_path / "w2", identities=miex.CHUNK + 2, size=24, sources="exp", progress=False, workers=2)
    assert len(_files(one.root)) == 2 * 3 * (miex.CHUNK + 2) + 1 and _files(one.root) == _files(two.root)
    c = miex.plan(identities=3, size=32, seed=2).manifest
    assert not c[list(miex.ZA)].equals(pd.read_csv(small.root / "manifest.csv")[list(miex.ZA)])


def test_interrupted_build_leaves_no_manifest_and_resumes_to_the_same_bytes(tmp_path, monkeypatch, small):
    monkeypatch.setenv("MIELIB_DATA", str(tmp_path / "data"))  # an empty frame store: every frame is rendered
    out = tmp_path / "c"
    real = miex._FaceRenderer.render
    calls = {"n": 0}

    def flaky(self, spec, zs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, spec, zs)

    monkeypatch.setattr(miex._FaceRenderer, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        miex.build(out, identities=3, size=32, seed=1, progress=False)
    assert not (out / "manifest.csv").exists()
    assert json.loads((out / "build.json").read_text())["status"] == "building"
    assert (out / "journal.txt").read_text().split() == ["0"]
    with pytest.raises(ValueError, match="not finished"):
        miex.load(out)
    # a torn frame from the killed identity is redone, a finished identity is not
    first = miex.plan(identities=3, size=32, seed=1).manifest
    victim = out / first["apex"].iloc[9]
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(b"\x89PNG\r\n\x1a\n half a frame")
    monkeypatch.setattr(miex._FaceRenderer, "render", real)
    done = miex.build(out, identities=3, size=32, seed=1, progress=False)
    assert done.summary()["identities_reused_last_run"] == 1
    assert done.summary()["frames_written_last_run"] == 36
    assert _files(out) == {k: v for k, v in _files(small.root).items() if not k.startswith("frames_")}


def _frame_ids(manifest: pd.DataFrame) -> list[tuple[int, bytes]]:
    """(identity, AU vector) of every frame file: what decides a frame's pixels within one size."""
    zo, za = manifest[list(miex.ZO)].to_numpy(np.float32), manifest[list(miex.ZA)].to_numpy(np.float32)
    return [(i, z.tobytes()) for i, a, b in zip(manifest["identity"], zo, za) for z in (a, b)]


def test_variants_take_shared_frames_from_the_store_and_give_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_DATA", str(tmp_path / "data"))
    opts = dict(identities=2, size=32, seed=3, progress=False, workers=1)
    mae = miex.build(tmp_path / "mae", sources="mae", **opts)
    assert (mae.summary()["frames_reused"], mae.summary()["frames_rendered"]) == (0, 12)
    every = miex.build(tmp_path / "all", **opts)
    # its z_MaE samples are the mae variant's: same identity, class and AU triplet (plan())
    had = set(_frame_ids(mae.manifest))
    expected = sum(f in had for f in _frame_ids(every.manifest))
    s = every.summary()
    assert s["frames_reused"] == expected >= 12
    assert s["frames_rendered"] == s["frames_written_last_run"] - expected == s["frames"] - expected
    assert "from the frame store" in miex.format_summary(s)
    plain = miex.build(tmp_path / "plain", share_frames=False, **opts)
    assert plain.summary()["frames_reused"] == 0 and plain.summary()["frames_rendered"] == plain.summary()["frames"]
    assert _files(every.root) == _files(plain.root)  # frames and manifest, byte for byte
    assert (every.root / every.manifest["apex"].iloc[0]).stat().st_nlink == 2  # linked, not copied
    # a build.json from before the frame store still loads and prints
    old = {k: v for k, v in s.items() if k not in ("frames_reused", "frames_rendered")}
    assert "written now)" in miex.format_summary(old)


def test_a_torn_store_entry_is_rendered_again_not_linked(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_DATA", str(tmp_path / "data"))
    opts = dict(identities=1, size=32, sources="exp", seed=0, progress=False)
    a = miex.build(tmp_path / "a", **opts)
    # the neutral onset, shared by the three z_exp samples
    neutral = miex._store_path(miex.frame_store(), f"emotionet:{a.manifest['identity'][0]}", 32,
                               np.zeros(au.N_AUS, np.float32).tobytes())
    whole = neutral.read_bytes()
    neutral.unlink()  # a new file: the build's links keep the good one
    neutral.write_bytes(whole[:len(whole) // 2])
    assert not miex._complete(neutral)
    b = miex.build(tmp_path / "b", **opts)
    assert (b.summary()["frames_reused"], b.summary()["frames_rendered"]) == (3, 3)
    assert miex._complete(neutral) and neutral.read_bytes() == whole
    assert _files(b.root) == _files(a.root)


def test_foreign_or_different_folders_are_refused_not_overwritten(tmp_path, small):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a MiE-X build"):
        miex.build(foreign, identities=1, size=32, progress=False)
    assert (foreign / "holiday.jpg").read_bytes() == b"x"
    with pytest.raises(ValueError, match=r"another configuration \(identities: 3 there vs 4 now"):
        miex.build(small.root, identities=4, size=32, seed=1, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "build.json").write_text("{ not json")
    with pytest.raises(ValueError, match="unreadable"):
        miex.build(broken, identities=1, size=32, progress=False)
    again = miex.build(small.root, identities=3, size=32, seed=1, progress=False)  # finished: reused as is
    assert len(again) == 27


def test_ganimation_generator_edits_the_pool_images(tmp_path):
    from mielib import ganimation

    gan = ganimation.GAN(ganimation.Generator(width=4, residual_blocks=1),
                         {"size": 32, "width": 4, "residual_blocks": 1}, device="cpu")
    ckpt = gan.save(tmp_path / "g.pt")
    d = miex.build(tmp_path / "g", identities=1, size=32, generator="ganimation", gan_checkpoint=ckpt,
                   sources="exp", progress=False)
    assert len(d) == 3 and set(d.manifest["generator"]) == {"ganimation"}
    assert d[0].frames[0].shape == (32, 32, 3)


def test_command_line_builds_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    assert miex.cli(["build", "--out", str(out), "--ids", "1", "--size", "32", "--sources", "exp",
                     "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "samples by AU source x class" in text and "z_exp" in text and "frames: 6" in text
    assert miex.cli(["info", str(out)]) == 0
    assert '"identities": 1' in capsys.readouterr().out
    assert miex.cli(["build", "--out", str(out), "--ids", "0", "--quiet"]) == 2
    assert "error: identities must be an integer >= 1" in capsys.readouterr().err
    assert miex.cli(["build", "--out", str(out), "--ids", "2", "--size", "32", "--sources", "exp", "--quiet"]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_real_identity_pool_photos_are_warped_by_their_landmarks(tmp_path):
    from PIL import Image
    from skimage import data

    from mielib import face

    pool = tmp_path / "emotionet"
    (pool / "landmarks").mkdir(parents=True)
    marks = face.read_landmarks(face.ASTRONAUT_LANDMARKS)
    for name in ("a", "b"):
        Image.fromarray(data.astronaut()).save(pool / f"{name}.png")
    np.save(pool / "landmarks" / "a.npy", marks)
    with pytest.raises(ValueError, match=r"pool has 1 \(1 image\(s\) skipped, e.g. b.png: no landmarks"):
        miex.plan(identities=2, sources="exp", data_source="real", data_root=tmp_path)
    assert miex.plan(identities=1, sources="exp", data_source="real", data_root=tmp_path).skipped["pool"][0]["item"] == "b.png"
    np.save(pool / "landmarks" / "b.npy", marks)
    d = miex.build(tmp_path / "out", identities=2, size=32, sources="exp", data_source="real",
                   data_root=tmp_path, progress=False)
    assert set(d.manifest["identity_name"]) == {"emotionet/a.png", "emotionet/b.png"}
    assert d.info["data_source"] == "real"
    onset, apex = d[0].frames[0], d[0].frames[1]
    assert onset.shape == (32, 32, 3) and not np.array_equal(onset, apex)


def test_inputs_are_checked_before_writing_and_a_failed_start_is_reusable(tmp_path, capsys):
    out = tmp_path / "D"
    args = ["build", "--out", str(out), "--ids", "1", "--size", "32", "--sources", "exp", "--workers", "1", "--quiet"]
    assert miex.cli(args + ["--generator", "ganimation", "--gan-checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert not out.exists()  # nothing written for a build that cannot start
    # A folder left by a failed start of an older version (build.json "building", no frame) ...
    out.mkdir()
    (out / "frames").mkdir()
    (out / "journal.txt").write_text("")
    (out / "build.json").write_text(json.dumps({"format": miex.FORMAT, "status": "building",
                                                "config": {"generator": "ganimation", "gan_checkpoint": "/missing.pt"}}))
    assert miex.cli(args) == 0  # ... is reused by the corrected command
    assert json.loads((out / "build.json").read_text())["status"] == "complete"
    # A finished build of another configuration is still protected.
    assert miex.cli(args[:3] + ["--ids", "2"] + args[5:]) == 2
    assert "another configuration" in capsys.readouterr().err
