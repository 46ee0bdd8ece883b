"""Every notebook runs headlessly under papermill in the smoke preset, and is committed clean."""

import json

import papermill
import pytest

from mielib import notebooks

BOOKS = notebooks.available()
STANDARD_PARAMETERS = ("preset", "data_source", "data_root", "seed")


def test_there_are_notebooks():
    assert BOOKS, "no numbered notebooks found in notebooks/"


@pytest.mark.parametrize("path", BOOKS, ids=[p.stem for p in BOOKS])
def test_committed_without_outputs_and_with_parameters(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert not cell.get("outputs"), f"{path.name}: a code cell has outputs; clear them before committing"
        assert cell.get("execution_count") is None, f"{path.name}: a code cell has an execution count"
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), f"{path.name}: first code cell is not tagged 'parameters'"
    src = "".join(first["source"])
    for name in STANDARD_PARAMETERS:
        assert f"{name} =" in src, f"{path.name}: parameters cell lacks {name}"
    # papermill must parse every parameter (a comment it cannot parse silently drops the override)
    parsed = papermill.inspect_notebook(str(path))
    assert set(STANDARD_PARAMETERS) <= set(parsed), f"{path.name}: papermill parses only {sorted(parsed)}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", BOOKS, ids=[p.stem for p in BOOKS])
def test_runs_in_smoke_preset(path, tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    monkeypatch.setenv("MIELIB_FIGURES", str(figures))
    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "results"))
    out = notebooks.run(path, preset="smoke", out_dir=tmp_path, progress=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    manifest = (figures / "manifest.csv").read_text()
    assert path.stem in manifest, f"{path.name} saved no figure or table through its session"
    assert ",smoke,sim," in manifest
