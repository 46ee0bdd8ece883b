"""`python -m mielib notebooks` without running a notebook: papermill is replaced by a fake that
saves a table through a session (as notebook 00 does) and optionally fails after it."""

from pathlib import Path

import pandas as pd
import papermill
import pytest

import dataset_fixtures as fx
from mielib import notebooks, session


@pytest.fixture
def gallery(tmp_path, monkeypatch):
    """A committed gallery in a temporary folder, and a fake papermill recording its runs."""
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "datasets_summary.csv").write_text("# committed\n")
    (figures / "manifest.csv").write_text("output,notebook,preset,data_source,seed,commit,created\n"
                                          "datasets_summary.csv,00_datasets,small,sim,0,abc,2024\n")
    monkeypatch.setattr(notebooks, "FIGURES", figures)
    monkeypatch.setattr(notebooks, "STAGING", tmp_path / "staging")
    monkeypatch.delenv("MIELIB_FIGURES", raising=False)
    runs = {"calls": [], "fail": False}

    def execute(input_path, output_path, parameters, **kwargs):
        runs["calls"].append(parameters)
        p = parameters
        s = session.start(Path(input_path).stem, p["preset"], p["data_source"], p["seed"], p["data_root"])
        s.save_table(pd.DataFrame({"dataset": [], "samples": []}), "datasets_summary")
        if runs["fail"]:
            raise RuntimeError("cell 4 raised FileNotFoundError")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    return figures, runs


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_real_data_root_is_checked_before_anything_runs(gallery, tmp_path, capsys):
    figures, runs = gallery
    before = _snapshot(figures)
    args = ["--data-source", "real", "--only", "00", "--preset", "smoke"]
    assert notebooks.cli(args + ["--data-root", str(tmp_path / "nonexistent")]) == 2
    assert "nonexistent does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert notebooks.cli(args + ["--data-root", str(tmp_path / "empty")]) == 2
    assert "holds none of the known datasets (casme2, samm" in capsys.readouterr().err
    assert notebooks.cli(args) == 2
    assert runs["calls"] == [] and _snapshot(figures) == before


def test_other_data_source_or_preset_writes_its_own_folder(gallery, tmp_path):
    figures, runs = gallery
    before = _snapshot(figures)
    assert notebooks.cli(["--only", "00", "--preset", "smoke"]) == 0
    root = fx.casme2(tmp_path / "data" / "casme2").parent
    assert notebooks.cli(["--only", "00", "--preset", "smoke", "--data-source", "real", "--data-root", str(root)]) == 0
    assert notebooks.cli(["--only", "04", "--input", "frames"]) == 0  # another input than small's (flow)
    after = _snapshot(figures)
    assert {k: v for k, v in after.items() if "/" not in k} == before  # the committed gallery is untouched
    for run in ("sim-smoke", "real-smoke"):
        assert f"{run}/datasets_summary.csv" in after
        manifest = after[f"{run}/manifest.csv"].decode()
        assert ",00_datasets," in manifest and "datasets_summary.tex" in manifest
    assert ",real," in after["real-smoke/manifest.csv"].decode()
    assert "sim-small-frames/manifest.csv" in after
    assert not any(notebooks.STAGING.iterdir())  # staging folders are removed


def test_the_gallery_run_updates_the_gallery_and_its_manifest(gallery):
    figures, _ = gallery
    assert notebooks.cli(["--only", "00"]) == 0
    assert (figures / "datasets_summary.csv").read_text().startswith("# data: simulated lab")
    manifest = pd.read_csv(figures / "manifest.csv", dtype=str)
    assert sorted(manifest["output"]) == ["datasets_summary.csv", "datasets_summary.tex"]
    assert not [p for p in figures.iterdir() if p.is_dir()]


def test_a_failing_notebook_leaves_no_half_updated_outputs(gallery, capsys):
    figures, runs = gallery
    runs["fail"] = True
    before = _snapshot(figures)
    assert notebooks.cli(["--only", "00"]) == 1
    err = capsys.readouterr().err
    assert "00_datasets.ipynb failed; its outputs in" in err and "cell 4 raised" in err
    assert _snapshot(figures) == before  # the table it saved before failing never reached figures/
    assert not any(notebooks.STAGING.iterdir())


def test_mielib_figures_takes_precedence(gallery, tmp_path, monkeypatch):
    figures, _ = gallery
    before = _snapshot(figures)
    monkeypatch.setenv("MIELIB_FIGURES", str(tmp_path / "elsewhere"))
    assert notebooks.cli(["--only", "00", "--preset", "smoke"]) == 0
    assert (tmp_path / "elsewhere" / "datasets_summary.csv").is_file()
    assert ",smoke,sim," in (tmp_path / "elsewhere" / "manifest.csv").read_text()
    assert _snapshot(figures) == before
    import os
    assert os.environ["MIELIB_FIGURES"] == str(tmp_path / "elsewhere")  # restored after the run


@pytest.mark.parametrize("only", [",", " , ", ""])
def test_an_empty_selection_is_refused(gallery, only, capsys):
    _, runs = gallery
    assert notebooks.cli(["--only", only]) == 2
    assert "names no notebook" in capsys.readouterr().err and runs["calls"] == []


def test_extra_parameters_reach_the_notebooks_that_declare_them(gallery, capsys):
    _, runs = gallery
    # 05 declares `workers` and `imagenet_weights`, 04 neither: each notebook gets only its own names.
    assert notebooks.cli(["--only", "04,05", "--preset", "smoke", "-p", "workers", "3",
                          "--param", 'imagenet_weights={"path": "w.pt", "ok": true}']) == 0
    p04, p05 = runs["calls"]
    assert "workers" not in p04 and "imagenet_weights" not in p04
    assert p05["workers"] == 3 and p05["imagenet_weights"] == {"path": "w.pt", "ok": True}  # JSON when it parses
    assert p05["preset"] == "smoke"
    assert "workers=3" in capsys.readouterr().out
    assert notebooks.cli(["--only", "05", "--preset", "smoke", "-p", "imagenet_weights", "resnet18.pt"]) == 0
    assert runs["calls"][-1]["imagenet_weights"] == "resnet18.pt"  # else text


@pytest.mark.parametrize("args, message", [
    (["-p", "executor", "submitit"], "no notebook run here has a parameter named executor"),
    (["-p", "seed", "1"], "use --seed"),
    (["-p", "workers"], "give a parameter's name and value"),
    (["-p", "workers", "2", "3"], "give a parameter's name and value"),
])
def test_extra_parameters_are_checked_before_anything_runs(gallery, args, message, capsys):
    _, runs = gallery
    assert notebooks.cli(["--only", "05", "--preset", "smoke", *args]) == 2
    assert message in capsys.readouterr().err and runs["calls"] == []
