"""The top of every notebook: `session = mielib.session.start(notebook, preset, data_source, seed)`.

A session resolves the preset, seeds everything once, and stamps every figure and table it
saves with the notebook, preset, data source and commit (see figures/manifest.csv).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mielib import plots, presets, runtime

DATA_SOURCES = ("sim", "real")


@dataclass
class Session:
    notebook: str
    preset: dict
    data_source: str
    seed: int
    data_root: str | None = None
    outputs: list[Path] = field(default_factory=list)

    @property
    def stamp(self) -> dict:
        return {"notebook": self.notebook, "preset": self.preset["name"],
                "data_source": self.data_source, "seed": self.seed}

    @property
    def label(self) -> str:
        """One line to print under every result: which data and preset produced it."""
        return plots.stamp_text(self.data_source, self.preset["name"])

    def savefig(self, fig, name: str) -> list[Path]:
        paths = plots.savefig(fig, name, stamp=self.stamp)
        self.outputs += paths
        return paths

    def save_table(self, df, name: str, caption: str | None = None) -> list[Path]:
        paths = plots.save_table(df, name, stamp=self.stamp, caption=caption)
        self.outputs += paths
        return paths

    def device(self):
        return runtime.device("auto")


def start(notebook: str, preset: str = "small", data_source: str = "sim", seed: int = 0,
          data_root: str | None = None) -> Session:
    """Resolve the preset, seed everything, set the figure style; print what the run uses."""
    if data_source not in DATA_SOURCES:
        raise ValueError(f"unknown data_source {data_source!r}; use 'sim' (the simulated lab) or 'real' "
                         "(set data_root to the folder holding your licensed datasets)")
    if data_source == "real" and not data_root:
        raise ValueError("data_source='real' needs data_root: the folder holding your licensed datasets "
                         "(see the README section 'Real data')")
    resolved = dict(presets.resolve(preset))
    runtime.seed_everything(seed)
    plots.style()
    session = Session(notebook, resolved, data_source, seed, data_root)
    print(f"{notebook}: {session.label}; seed {seed}; mielib commit {runtime.commit()}")
    return session
