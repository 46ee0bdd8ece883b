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
import numpy as np
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


# ---------------------------------------------------------------------------------------------
# The analyses' figures (notebooks 06-09), drawn with seaborn in the style above

QUOTED_STYLE = {"marker": "D", "s": 28, "facecolors": "white", "edgecolors": "tab:orange", "linewidths": 1.2,
                "zorder": 5}


def _references(ax, references, metric: str, horizontal: bool = True) -> None:
    """Dotted majority-class and dashed linear-reference lines (`references`: name -> scores)."""
    styles = {"majority": ("0.5", ":", "most frequent class"), "linear": ("tab:green", "--", "logistic regression")}
    for name, sc in (references or {}).items():
        color, ls, label = styles.get(name, ("0.3", "-.", name))
        ax.axhline(100 * sc[metric.lower()], color=color, ls=ls, lw=1, label=label, zorder=0)


def bars(ax, data: pd.DataFrame, *, y: str, order, quoted=None, brackets=(), references=None, colors=None):
    """Bars of the mean over repeats (± std), each repeat a point, the paper's quoted values as
    open diamonds (labelled), and significance brackets `(group_a, group_b, stars)` above.

    `data`: one row per (group, repeat) with a `group` column and the metric column `y` (%);
    `quoted`: group -> value (%), drawn only where given.
    """
    import seaborn as sns

    from matplotlib.lines import Line2D

    order = [str(g) for g in order]
    data = data.assign(group=data["group"].astype(str))  # categories would make seaborn dodge by hue
    palette = colors or dict(zip(order, sns.color_palette("Blues", len(order) + 2)[2:]))
    sns.barplot(data=data, x="group", y=y, order=order, hue="group", hue_order=order, palette=palette, dodge=False,
                errorbar="sd", capsize=0.25, err_kws={"linewidth": 1}, legend=False, ax=ax)
    sns.stripplot(data=data, x="group", y=y, order=order, color="0.15", size=3, jitter=0.15, dodge=False,
                  legend=False, ax=ax)
    ax.add_line(Line2D([], [], ls="", marker="o", ms=3, color="0.15", label="repeats"))  # legend entry only
    if quoted:
        xs = [order.index(g) for g in quoted if g in order]
        ax.scatter(xs, [quoted[g] for g in quoted if g in order], label="paper (quoted)", **QUOTED_STYLE)
    _references(ax, references, y)
    top = data.groupby("group", observed=True)[y].max().reindex(order)
    span = float(np.nanmax(top.to_numpy())) if len(top) else 1.0
    step = 0.06 * max(span, 1.0)
    levels: list[float] = []
    for a, b, mark in brackets:
        i, j = sorted((order.index(a), order.index(b)))
        h = float(np.nanmax(top.iloc[i:j + 1].to_numpy())) + step
        while any(abs(h - lv) < 0.9 * step for lv in levels):  # stack brackets that would overlap
            h += step
        levels.append(h)
        ax.plot([i, i, j, j], [h - step / 3, h, h, h - step / 3], color="0.2", lw=0.8)
        ax.text((i + j) / 2, h, mark, ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("")
    ax.set_ylabel(f"{y} (%)")
    ax.tick_params(axis="x", rotation=35)
    for lab in ax.get_xticklabels():
        lab.set_ha("right")
    handles, labels = ax.get_legend_handles_labels()
    return handles, labels


def curve(ax, data: pd.DataFrame, *, x: str, y: str, quoted=None, references=None, label: str = "ours"):
    """Mean over repeats with a ± std band against `x`, each repeat a point, and the paper's
    quoted values (x -> %) as open diamonds. `data`: one row per (x value, repeat)."""
    import seaborn as sns

    sns.lineplot(data=data, x=x, y=y, errorbar="sd", marker="o", markersize=5, color="tab:blue", label=label, ax=ax)
    sns.scatterplot(data=data, x=x, y=y, color="0.15", s=9, ax=ax, label="repeats", zorder=4, legend=False)
    if quoted:
        ax.scatter(list(quoted), list(quoted.values()), label="paper (quoted)", **QUOTED_STYLE)
    _references(ax, references, y)
    ax.set_ylabel(f"{y} (%)")
    ax.grid(axis="y", color="0.92")
    return ax.get_legend_handles_labels()
