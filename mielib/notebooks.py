"""Run the numbered notebooks headlessly with papermill: `python -m mielib notebooks`.

This is what `make figures` calls. Executed copies go to build/notebooks/ (gitignored). The
figures and tables they save go to figures/ with their manifest entries when the run is the
committed gallery's (simulated lab, `small` preset); any other data source, preset or input
writes to its own folder `figures/<data source>-<preset>[-<input>]/` with its own manifest, so
the committed gallery is never overwritten. MIELIB_FIGURES, when set, overrides both.

A notebook writes into a staging folder; its outputs are moved into place only when it has run
to the end, so a notebook that fails leaves the outputs as they were.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mielib import presets, runtime

NOTEBOOKS = runtime.ROOT / "notebooks"
#: The committed gallery, and the run that made it.
FIGURES = runtime.ROOT / "figures"
GALLERY_RUN = ("sim", "small")
#: Where a notebook's outputs wait until it finishes (build/ is gitignored).
STAGING = runtime.ROOT / "build" / "staging"
#: Files that notebooks update row by row rather than replace: a staging folder starts from the
#: target's copy, so the rows of other notebooks survive the move back (claims.FILE is claims.csv).
LEDGERS = ("manifest.csv", "claims.csv")
#: Parameters with an option (and an argument of `run`) of their own: -p may not set them.
OWN_OPTIONS = {"preset": "--preset", "data_source": "--data-source", "data_root": "--data-root", "seed": "--seed",
               "input": "--input"}


def available() -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def parameters(path: Path) -> list[str]:
    """The names a notebook's parameters cell assigns: what papermill can set in it."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            src = src if isinstance(src, str) else "".join(src)
            try:
                tree = ast.parse(src)
            except SyntaxError:  # IPython syntax (a magic): fall back to the lines `name = ...`
                return re.findall(r"^([A-Za-z_]\w*)\s*[:=]", src, flags=re.M)
            targets = [t for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                       for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
            return [t.id for t in targets if isinstance(t, ast.Name)]
    return []


def parse_value(text: str):
    """A command-line parameter's value: JSON when it parses (2, true, null, {"a": 1}), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def figures_folder(data_source: str = "sim", preset: str = "small", input: str | None = None) -> Path:
    """Where a run's figures and tables go: MIELIB_FIGURES when set; else figures/ for the
    committed gallery's run (sim, small, the preset's own input); else figures/<data
    source>-<preset>[-<input>]/."""
    if os.environ.get("MIELIB_FIGURES"):
        return runtime.folder("figures")
    default_input = presets.resolve(preset)["input"]
    if (data_source, preset) == GALLERY_RUN and input in (None, default_input):
        return FIGURES
    name = f"{data_source}-{preset}" + (f"-{input}" if input not in (None, default_input) else "")
    return FIGURES / name


def run(path: Path, *, preset: str = "small", data_source: str = "sim", data_root: str | None = None,
        seed: int = 0, out_dir: Path | None = None, progress: bool = True, input: str | None = None,
        figures: Path | None = None, params: dict | None = None) -> Path:
    """Execute one notebook with papermill and return the executed copy's path. `input`
    ("frames" or "flow") overrides the preset's classifier input in the notebooks that train one;
    `params` sets other names of its parameters cell (e.g. {"executor": "submitit"}).

    Outputs go to `figures` (default: `figures_folder(...)`), through a staging folder: if the notebook fails, the
    exception propagates and nothing in the figures folder has changed."""
    import papermill as pm

    fixed = {"preset": preset, "data_source": data_source, "data_root": data_root, "seed": seed,
             **({"input": input} if input is not None else {})}
    clash = sorted(set(params or {}) & set(OWN_OPTIONS))
    if clash:
        raise ValueError(f"params may not set {', '.join(clash)}: pass them as their own arguments")
    out_dir = Path(out_dir or runtime.ROOT / "build" / "notebooks" / preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    target = Path(figures) if figures is not None else figures_folder(data_source, preset, input)
    STAGING.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{path.stem}-", dir=STAGING))
    for ledger in LEDGERS:
        if (target / ledger).is_file():
            shutil.copy2(target / ledger, staging / ledger)
    saved = os.environ.get("MIELIB_FIGURES")
    os.environ["MIELIB_FIGURES"] = str(staging)  # the kernel inherits it: session saves go there
    try:
        pm.execute_notebook(
            str(path), str(out),
            parameters={**fixed, **(params or {})},
            cwd=str(path.parent), progress_bar=progress, kernel_name="python3",
        )
        _move_into_place(staging, target)
    finally:
        if saved is None:
            os.environ.pop("MIELIB_FIGURES", None)
        else:
            os.environ["MIELIB_FIGURES"] = saved
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _move_into_place(staging: Path, target: Path) -> None:
    """Move a finished notebook's new or changed files into `target` (each by an atomic rename
    when on the same disk); files that are byte-for-byte unchanged are left alone."""
    target.mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dst = target / src.relative_to(staging)
        if dst.is_file() and dst.read_bytes() == src.read_bytes():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))


def check_data_root(data_root: str | None) -> Path:
    """The real data root, checked before any notebook runs: it exists and holds at least one
    known dataset (its own root or a subfolder named for it). ValueError explains what is wrong."""
    from mielib import datasets

    if not data_root:
        raise ValueError("--data-source real needs --data-root (the folder with your datasets)")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise ValueError(f"--data-root {data_root} does not exist or is not a folder")
    if not datasets.found(root):
        raise ValueError(
            f"--data-root {data_root} holds none of the known datasets ({', '.join(datasets.KNOWN)}); "
            "give the folder holding one subfolder per dataset (README, 'Real data'), or one dataset's own folder")
    return root


def _params(given: list[list[str]]) -> dict:
    """-p NAME VALUE / --param NAME=VALUE arguments as {name: value}."""
    out = {}
    for tokens in given:
        if len(tokens) == 1 and "=" in tokens[0]:
            tokens = tokens[0].split("=", 1)
        if len(tokens) != 2 or not tokens[0].isidentifier():
            raise ValueError(f"-p {' '.join(tokens)}: give a parameter's name and value, as -p NAME VALUE or "
                             "--param NAME=VALUE")
        name, value = tokens
        if name in OWN_OPTIONS:
            raise ValueError(f"-p {name}: use {OWN_OPTIONS[name]}, the option for it")
        out[name] = parse_value(value)
    return out


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mielib notebooks",
        description="Execute the numbered notebooks with papermill. The default run (simulated lab, preset "
                    "small) regenerates the committed figures/; any other data source, preset or input writes "
                    "to figures/<data source>-<preset>/ with its own manifest. A notebook that fails leaves its "
                    "outputs as they were.")
    parser.add_argument("--preset", default="small", choices=presets.PRESETS,
                        help="sizes for every notebook (default: small, which made the committed figures)")
    parser.add_argument("--data-source", default="sim", choices=("sim", "real"),
                        help="'sim' = the built-in simulated lab; 'real' = your licensed data under --data-root")
    parser.add_argument("--data-root", default=None, help="folder holding the real datasets (with --data-source real)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every notebook (default 0, the committed figures')")
    parser.add_argument("--input", default=None, choices=("frames", "flow"),
                        help="classifier input for notebooks 04-05: 'frames' (the papers' onset/apex frames) or "
                             "'flow' (onset->apex optical flow); default: the preset's (small: flow, paper: frames)")
    parser.add_argument("--only", default=None,
                        help="comma-separated notebook numbers to run, e.g. 00,02 (default: all)")
    parser.add_argument("-p", "--param", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set another name of the notebooks' parameters cell, as papermill's -p NAME VALUE "
                             "(or --param NAME=VALUE); repeatable. VALUE is read as JSON when it parses (2, true, "
                             "{\"partition\": \"gpu\"}), else as text. Each notebook gets the names its "
                             "parameters cell has, e.g. -p executor submitit -p slurm '{\"partition\": \"gpu\"}'")
    args = parser.parse_args(argv)
    try:
        params = _params(args.param)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    books = available()
    if args.only is not None:
        wanted = {w.strip().zfill(2) for w in args.only.split(",") if w.strip()}
        if not wanted:
            print(f"error: --only {args.only!r} names no notebook; give numbers such as 00,02 "
                  f"(have {', '.join(p.name[:2] for p in books)})", file=sys.stderr)
            return 2
        unknown = wanted - {p.name[:2] for p in books}
        if unknown:
            print(f"error: no notebook numbered {', '.join(sorted(unknown))}; have "
                  f"{', '.join(p.name for p in books)}", file=sys.stderr)
            return 2
        books = [p for p in books if p.name[:2] in wanted]
    if args.data_source == "real":
        try:
            check_data_root(args.data_root)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    declared = {path: parameters(path) for path in books} if params else {}
    unused = [name for name in params if not any(name in names for names in declared.values())]
    if unused:
        have = "; ".join(f"{p.name[:2]}: {', '.join(names)}" for p, names in declared.items())
        print(f"error: no notebook run here has a parameter named {', '.join(unused)} ({have})", file=sys.stderr)
        return 2
    target = figures_folder(args.data_source, args.preset, args.input)
    for path in books:
        start = time.perf_counter()
        extra = {k: v for k, v in params.items() if k in declared.get(path, ())}
        shown = "".join(f", {k}={json.dumps(v)}" for k, v in extra.items())
        print(f"== {path.name} (preset {args.preset}, data source {args.data_source}{shown})", flush=True)
        takes_input = args.input is not None and '"input = ' in path.read_text(encoding="utf-8")
        try:
            run(path, preset=args.preset, data_source=args.data_source, data_root=args.data_root, seed=args.seed,
                input=args.input if takes_input else None, figures=target, params=extra)
        except Exception as exc:  # papermill's execution error carries the failing cell's traceback
            print(f"error: {path.name} failed; its outputs in {target} are left as they were.\n{exc}", file=sys.stderr)
            return 1
        print(f"   done in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"figures and tables are in {target} (see manifest.csv)")
    return 0
