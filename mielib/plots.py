"""One figure style and one way to save figures and tables (PNG+PDF, CSV+LaTeX) with a manifest.

Every notebook saves through `Session.savefig` / `Session.save_table` (mielib.session), which
call these functions with the run's stamp; figures/manifest.csv then names the notebook,
preset, data source and commit behind each output.
"""

from __future__ import annotations

import datetime as _dt
import io
from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower().startswith("qt"):  # headless machines: never need a display
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from mielib import runtime, store

MANIFEST_COLUMNS = ("output", "notebook", "preset", "data_source", "seed", "commit", "created")


def style() -> None:
    """The one figure style: sizes in inches, small serif-free fonts, no top/right spines."""
    plt.rcParams.update({
        "figure.figsize": (6.0, 3.6),
        "figure.dpi": 110,
        "savefig.dpi": 200,
        "savefig.bbox": "tight",
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "image.cmap": "viridis",
    })


def stamp_text(data_source: str, preset: str) -> str:
    source = {"sim": "simulated lab (not evidence about the papers)", "real": "real data"}.get(data_source, data_source)
    return f"data: {source} | preset: {preset}"


def savefig(fig, name: str, *, stamp: dict, folder: Path | None = None) -> list[Path]:
    """Save `fig` as figures/<name>.png and .pdf, stamped, and record it in the manifest."""
    folder = Path(folder or runtime.folder("figures"))
    # Below the axes, outside the plot area: the tight bounding box grows to include it.
    fig.text(0.995, -0.01, stamp_text(stamp["data_source"], stamp["preset"]),
             ha="right", va="top", fontsize=6, color="0.4")
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        # PDFs embed a creation date by default; drop it so re-runs give identical files.
        meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
        fig.savefig(buf, format=ext, metadata=meta)
        path = folder / f"{name}.{ext}"
        store.write_bytes(path, buf.getvalue())
        paths.append(path)
    _record(folder, [p.name for p in paths], stamp)
    return paths


def save_table(df: pd.DataFrame, name: str, *, stamp: dict, folder: Path | None = None,
               caption: str | None = None, float_format: str = "{:.3f}") -> list[Path]:
    """Save a table as figures/<name>.csv and .tex, with the data source in both."""
    folder = Path(folder or runtime.folder("figures"))
    note = stamp_text(stamp["data_source"], stamp["preset"])
    csv_path, tex_path = folder / f"{name}.csv", folder / f"{name}.tex"
    store.write_text(csv_path, f"# {note}\n" + df.to_csv(index=False))
    latex = df.to_latex(index=False, float_format=float_format.format, escape=True)
    cap = (caption + " " if caption else "") + f"({note})"
    store.write_text(tex_path, f"% {note}\n\\begin{{table}}\n\\centering\n\\caption{{{_tex_escape(cap)}}}\n"
                     f"{latex}\\end{{table}}\n")
    _record(folder, [csv_path.name, tex_path.name], stamp)
    return [csv_path, tex_path]


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def _record(folder: Path, outputs: list[str], stamp: dict) -> None:
    """Upsert manifest rows (one per output file); written atomically."""
    path = folder / "manifest.csv"
    old = pd.read_csv(path, dtype=str) if path.exists() else pd.DataFrame(columns=MANIFEST_COLUMNS)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = pd.DataFrame([{"output": o, "notebook": stamp["notebook"], "preset": stamp["preset"],
                         "data_source": stamp["data_source"], "seed": str(stamp["seed"]),
                         "commit": runtime.commit(), "created": now} for o in outputs])
    rows = pd.concat([old[~old["output"].isin(outputs)], new], ignore_index=True)
    store.write_text(path, rows.sort_values("output").to_csv(index=False, columns=list(MANIFEST_COLUMNS)))
