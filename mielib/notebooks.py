"""Run the numbered notebooks headlessly with papermill: `python -m mielib notebooks`.

This is what `make figures` calls. Executed copies go to build/notebooks/ (gitignored); the
figures and tables they save go to figures/ with their manifest entries.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mielib import presets, runtime

NOTEBOOKS = runtime.ROOT / "notebooks"


def available() -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def run(path: Path, *, preset: str = "small", data_source: str = "sim", data_root: str | None = None,
        seed: int = 0, out_dir: Path | None = None, progress: bool = True, input: str | None = None) -> Path:
    """Execute one notebook with papermill and return the executed copy's path. `input`
    ("frames" or "flow") overrides the preset's classifier input in the notebooks that train one."""
    import papermill as pm

    out_dir = Path(out_dir or runtime.ROOT / "build" / "notebooks" / preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    pm.execute_notebook(
        str(path), str(out),
        parameters={"preset": preset, "data_source": data_source, "data_root": data_root, "seed": seed,
                    **({"input": input} if input is not None else {})},
        cwd=str(path.parent), progress_bar=progress, kernel_name="python3",
    )
    return out


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mielib notebooks",
        description="Execute the numbered notebooks with papermill; they regenerate figures/.")
    parser.add_argument("--preset", default="small", choices=presets.PRESETS,
                        help="sizes for every notebook (default: small, which made the committed figures)")
    parser.add_argument("--data-source", default="sim", choices=("sim", "real"),
                        help="'sim' = the built-in simulated lab; 'real' = your licensed data under --data-root")
    parser.add_argument("--data-root", default=None, help="folder holding the real datasets (with --data-source real)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", default=None, choices=("frames", "flow"),
                        help="classifier input for notebooks 04-05: 'frames' (the papers' onset/apex frames) or "
                             "'flow' (onset->apex optical flow); default: the preset's (small: flow, paper: frames)")
    parser.add_argument("--only", default=None,
                        help="comma-separated notebook numbers to run, e.g. 00,02 (default: all)")
    args = parser.parse_args(argv)
    books = available()
    if args.only:
        wanted = {w.strip().zfill(2) for w in args.only.split(",") if w.strip()}
        unknown = wanted - {p.name[:2] for p in books}
        if unknown:
            print(f"error: no notebook numbered {', '.join(sorted(unknown))}; have "
                  f"{', '.join(p.name for p in books)}", file=sys.stderr)
            return 2
        books = [p for p in books if p.name[:2] in wanted]
    if args.data_source == "real" and not args.data_root:
        print("error: --data-source real needs --data-root (the folder with your datasets)", file=sys.stderr)
        return 2
    for path in books:
        start = time.perf_counter()
        print(f"== {path.name} (preset {args.preset}, data source {args.data_source})", flush=True)
        takes_input = args.input is not None and '"input = ' in path.read_text(encoding="utf-8")
        run(path, preset=args.preset, data_source=args.data_source, data_root=args.data_root, seed=args.seed,
            input=args.input if takes_input else None)
        print(f"   done in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"figures and tables are in {runtime.folder('figures')} (see manifest.csv)")
    return 0
