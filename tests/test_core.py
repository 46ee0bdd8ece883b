"""Presets, atomic storage, figure saving and the manifest."""

import os

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from mielib import presets, session, store


def test_presets_resolve_and_reject_unknown():
    smoke, paper = presets.resolve("smoke"), presets.resolve("paper")
    assert paper["miex_identities"] == 5000 and paper["image_size"] == 128
    assert paper["epochs_real"] == 80 and paper["epochs_miex"] == 30 and paper["repeats"] == 3
    assert smoke["image_size"] < paper["image_size"]
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        presets.resolve("tiny")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(RuntimeError):
        with store.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    store.write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")


def test_key_is_order_independent_and_sensitive():
    assert store.key({"a": 1, "b": 2}) == store.key({"b": 2, "a": 1})
    assert store.key({"a": 1}) != store.key({"a": 2})


def test_session_saves_stamped_figure_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("MIELIB_FIGURES", str(tmp_path))
    s = session.start("99_test", preset="smoke", data_source="sim", seed=3)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    s.savefig(fig, "demo")
    s.save_table(pd.DataFrame({"x": [0.5]}), "demo_table")
    names = sorted(os.listdir(tmp_path))
    assert names == ["demo.pdf", "demo.png", "demo_table.csv", "demo_table.tex", "manifest.csv"]
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert set(manifest["output"]) == {"demo.pdf", "demo.png", "demo_table.csv", "demo_table.tex"}
    assert (manifest["notebook"] == "99_test").all() and (manifest["preset"] == "smoke").all()
    assert (manifest["data_source"] == "sim").all()
    assert "simulated lab" in (tmp_path / "demo_table.csv").read_text().splitlines()[0]
    # saving again replaces the rows rather than duplicating them
    s.savefig(fig, "demo")
    assert len(pd.read_csv(tmp_path / "manifest.csv")) == 4


def test_session_rejects_bad_data_source():
    with pytest.raises(ValueError, match="unknown data_source"):
        session.start("x", data_source="kaggle")
    with pytest.raises(ValueError, match="needs data_root"):
        session.start("x", data_source="real")


def test_commit_is_dirty_for_code_changes_but_not_for_regenerated_figures(tmp_path, monkeypatch):
    import subprocess

    from mielib import runtime

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "table.csv").write_text("a\n1\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(runtime, "ROOT", tmp_path)

    def commit():
        runtime.commit.cache_clear()  # one answer per process otherwise
        return runtime.commit()

    clean = commit()
    assert len(clean) == 12 and not clean.endswith("+dirty")
    (tmp_path / "figures" / "table.csv").write_text("a\n2\n")  # a notebook rewrote a committed figure
    assert commit() == clean
    (tmp_path / "code.py").write_text("x = 2  # edited\n")
    assert commit() == clean + "+dirty"
    runtime.commit.cache_clear()
