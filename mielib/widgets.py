"""The AU-to-face explorer: AU sliders, emotion presets, and onset | apex | amplified difference.

notebooks/02_synthesis_explorer.ipynb shows `explorer()` in JupyterLab and saves
`grid_figure()` (a MiE-X Fig. 4-style sample grid). Both render with mielib.face.

DOM hooks (CSS classes, for the browser test and for anyone styling the widget):
`mielib-explorer` (the whole widget), `mielib-onset`, `mielib-apex`, `mielib-diff` (the three
<img>), `mielib-au` plus `mielib-au-AU12` etc. (each AU slider), `mielib-identity`,
`mielib-gain`, `mielib-table`, `mielib-intensity`, `mielib-emotion-<emotion>` (each preset
button), `mielib-random`, `mielib-reset` and `mielib-description` (the AU vector line).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import time
from typing import Sequence

import ipywidgets as W
import numpy as np
from PIL import Image

from mielib import au, face, sources

MICRO = 0.2  # preset micro intensity: MiE-X Sec. 5.3 finds MiE AUs at about 10-30% of a macro-expression's
MACRO = 0.8  # preset intensity for a macro-expression
DEFAULT_GAIN = 10.0  # amplification of |apex - onset|: micro-expression changes are mostly under ~40 grey levels
POOLS = face.POOLS  # the identity pools ("emotionet", "celeba")
ASTRONAUT = "astronaut"
GRID_EMOTIONS = ("happiness", "anger", "disgust", "surprise")  # one column pair each in grid_figure
# Re-render while a slider is dragged only when one refresh (render + PNG) is this fast.
CONTINUOUS_UPDATE_SECONDS = 0.05

# Colour map for the difference image, as a 256-entry lookup table (no plotting backend needed).
_DIFF_LUT: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Pure functions: identities, difference images, random micro-expressions, the static grid


def default_identities(n: int = 6) -> list[str]:
    """`n` identity specs for the explorer and the grid: procedural faces from both pools
    (alternating), then the astronaut photo last. E.g. ["emotionet:0", "celeba:0", "astronaut"]."""
    if n < 1:
        raise ValueError(f"need at least one identity, got n={n}")
    specs = [f"{POOLS[i % 2]}:{i // 2}" for i in range(n - 1)]
    return specs + [ASTRONAUT]


def load_identity(spec: str):
    """The face.Face behind an identity spec: "astronaut", or "POOL:INDEX" such as "celeba:3"."""
    text = str(spec).strip().lower()
    if text in (ASTRONAUT, "astronaut (photo)"):
        return face.astronaut()
    pool, sep, number = text.partition(":")
    if not sep or pool not in POOLS or not number.strip().isdigit():
        raise ValueError(f"unknown identity {spec!r}; use 'astronaut' or 'POOL:INDEX' with POOL one of "
                         f"{', '.join(POOLS)} (e.g. 'emotionet:0')")
    return face.identity(int(number), pool=pool)


def identity_label(spec: str) -> str:
    """What a person reads for a spec: "astronaut (photo)", "emotionet #0"."""
    text = str(spec).strip().lower()
    if text in (ASTRONAUT, "astronaut (photo)"):
        return "astronaut (photo)"
    pool, _, number = text.partition(":")
    return f"{pool} #{number.strip()}"


def difference(onset: np.ndarray, apex: np.ndarray, gain: float = DEFAULT_GAIN) -> np.ndarray:
    """|apex - onset| (largest over RGB) times `gain`, coloured with magma; HxWx3 uint8.

    This is where a micro-expression lives: the apex differs from the onset by a few grey levels,
    so the difference is amplified to be visible.
    """
    onset, apex = np.asarray(onset), np.asarray(apex)
    if onset.shape != apex.shape or onset.ndim != 3 or onset.shape[-1] != 3:
        raise ValueError(f"onset and apex must be two HxWx3 images of one size, got {onset.shape} and {apex.shape}")
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a positive number, got {gain!r}")
    diff = np.abs(apex.astype(np.int16) - onset.astype(np.int16)).max(axis=-1)
    level = np.clip(diff * float(gain), 0, 255).astype(np.uint8)
    return _diff_lut()[level]


def _diff_lut() -> np.ndarray:
    global _DIFF_LUT
    if _DIFF_LUT is None:
        import matplotlib

        rgba = matplotlib.colormaps["magma"](np.linspace(0.0, 1.0, 256))
        _DIFF_LUT = (rgba[:, :3] * 255).round().astype(np.uint8)
    return _DIFF_LUT


def draw_micro(rng: np.random.Generator, table: str = "miex") -> tuple[str, np.ndarray]:
    """A random micro-expression apex, drawn as MiE-X's z_exp is (`mielib.sources.exp`): a 3-class
    label, one of its expert-table emotions, each AU on with P(AU | emotion) at U(0.1, 0.3).

    Returns (emotion, z). The Bernoulli draw may switch no AU on (a neutral apex), as in z_exp.
    """
    label = au.MEGC3[int(rng.integers(len(au.MEGC3)))]
    triplet = sources.exp({label: 1}, table=table, seed=rng)
    return str(triplet.emotion[0]), au.validate(triplet.z_apex[0], where=f"random {label} micro-expression")


def grid_frames(identities: Sequence[str], zs, size: int = 96, gain: float = DEFAULT_GAIN):
    """Render every identity at every AU vector.

    Returns (onset, apex, diff): onset is N x H x W x 3 (z = 0), apex and diff are
    N x K x H x W x 3 for the K vectors in `zs` (K x 17).
    """
    zs = au.validate(np.atleast_2d(zs), where="grid AU vectors")
    faces = [load_identity(s) for s in identities]
    n, k = len(faces), len(zs)
    if n == 0 or k == 0:
        raise ValueError(f"the grid needs identities and AU vectors, got {n} identities and {k} vectors")
    onset = face.render_batch(faces, np.zeros((n, au.N_AUS), np.float32), size)
    apex = face.render_batch([f for f in faces for _ in range(k)], np.tile(zs, (n, 1)), size)
    apex = np.asarray(apex).reshape(n, k, *onset.shape[1:])
    diff = np.stack([[difference(onset[i], apex[i, j], gain) for j in range(k)] for i in range(n)])
    return np.asarray(onset), apex, diff


def grid_figure(identities: Sequence[str], emotions: Sequence[str] = GRID_EMOTIONS,
                intensity: float = MICRO, table: str = "miex", size: int = 96, gain: float = DEFAULT_GAIN):
    """MiE-X Fig. 4-style grid: rows are identities; columns are the onset, then for each emotion
    its apex (expert-table AUs at `intensity`) and the amplified |apex - onset|.

    Returns a matplotlib Figure (made without pyplot, so nothing accumulates in a session).
    """
    from matplotlib.figure import Figure

    zs = np.stack([au.expert_apex(e, intensity, table) for e in emotions])
    onset, apex, diff = grid_frames(identities, zs, size=size, gain=gain)
    n, k = apex.shape[:2]
    cols = 1 + 2 * k
    fig = Figure(figsize=(0.95 * cols, 0.95 * n + 0.9))
    axes = fig.subplots(n, cols, squeeze=False)
    for i, spec in enumerate(identities):
        panels = [onset[i]] + [img for j in range(k) for img in (apex[i, j], diff[i, j])]
        for c, img in enumerate(panels):
            ax = axes[i, c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
        axes[i, 0].set_ylabel(identity_label(spec), fontsize=7)
    axes[0, 0].set_title("onset", fontsize=7)
    for j, emotion in enumerate(emotions):
        megc = next((c for c in au.MEGC3 if au.canonical_emotion(emotion) in au.expert_emotions(c, table)), "other")
        axes[0, 1 + 2 * j].set_title(f"{emotion} ({megc})\napex", fontsize=7)
        axes[0, 2 + 2 * j].set_title(f"|apex-onset| x{gain:g}", fontsize=7)
    height = fig.get_figheight()
    fig.suptitle(f"Micro-expression apexes at intensity {intensity:g} ({table} expert table)", fontsize=9,
                 y=1 - 0.06 / height)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.04, top=1 - 0.55 / height, wspace=0.04, hspace=0.04)
    return fig


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an HxWx3 uint8 image as PNG (fast compression: the explorer re-encodes per change)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The interactive explorer


class Explorer(W.VBox):
    """AU sliders driving a face: onset (neutral) | apex | amplified difference, side by side.

    Build it with `explorer()`. Python can drive it too: `set_z`, `apply_emotion`,
    `random_micro`, `reset`; `z` and `frames()` read the current state.
    """

    def __init__(self, size: int = 160, identities: Sequence[str] | None = None, table: str = "miex",
                 seed: int = 0, gain: float = DEFAULT_GAIN):
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        au.expert_table(table)  # fail early on an unknown table name
        specs = list(identities) if identities is not None else default_identities(6)
        self.size = int(size)
        self.rng = np.random.default_rng(seed)  # the random-micro button's own generator
        self._faces = {spec: load_identity(spec) for spec in specs}  # fail early on a bad spec
        self._quiet = 0
        self._apex = self._onset = None
        self._note = ""
        self.render_seconds = float("nan")

        self.sliders: dict[str, W.FloatSlider] = {}
        for code, label in zip(au.CODES, au.LABELS):
            s = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, readout_format=".2f",
                              description=f"{label} {au.NAMES[code]}", tooltip=au.NAMES[code],
                              style={"description_width": "14em"}, layout=W.Layout(width="31em"))
            s.add_class("mielib-au")
            s.add_class(f"mielib-au-{label}")
            s.observe(self._on_au, names="value")
            self.sliders[label] = s

        self.identity = W.Dropdown(options=[(identity_label(s), s) for s in specs], value=specs[0],
                                   description="identity")
        self.identity.add_class("mielib-identity")
        self.identity.observe(self._on_identity, names="value")
        self.gain = W.FloatSlider(value=gain, min=1.0, max=20.0, step=0.5, description="diff gain",
                                  readout_format=".1f")
        self.gain.add_class("mielib-gain")
        self.gain.observe(self._on_gain, names="value")
        self.table = W.Dropdown(options=list(au.EXPERT_TABLES), value=table, description="expert table")
        self.table.add_class("mielib-table")
        self.table.observe(self._on_table, names="value")
        self.intensity = W.ToggleButtons(options=[(f"micro {MICRO:g}", MICRO), (f"macro {MACRO:g}", MACRO)],
                                         value=MICRO, description="intensity")
        self.intensity.add_class("mielib-intensity")
        self.emotion_buttons = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.random_button = W.Button(description="random micro-expression", icon="random",
                                      tooltip=f"drawn as MiE-X's z_exp: expert-table AUs at U({sources.MU}, {sources.NU})",
                                      layout=W.Layout(width="auto"))
        self.random_button.add_class("mielib-random")
        self.random_button.on_click(lambda _: self.random_micro())
        self.reset_button = W.Button(description="reset", icon="undo")
        self.reset_button.add_class("mielib-reset")
        self.reset_button.on_click(lambda _: self.reset())
        self.description = W.HTML()
        self.description.add_class("mielib-description")

        self.onset_image, self.apex_image, self.diff_image = (
            W.Image(format="png", width=self.size, height=self.size) for _ in range(3))
        self.onset_image.add_class("mielib-onset")
        self.apex_image.add_class("mielib-apex")
        self.diff_image.add_class("mielib-diff")
        self._diff_caption = W.HTML()
        panels = W.HBox([
            W.VBox([W.HTML("<b>onset</b> (neutral)"), self.onset_image]),
            W.VBox([W.HTML("<b>apex</b> (the AU sliders)"), self.apex_image]),
            W.VBox([self._diff_caption, self.diff_image]),
        ])
        self._build_emotion_buttons()
        right = W.VBox([self.identity, panels, self.gain, self.description, self.table, self.intensity,
                        self.emotion_buttons, W.HBox([self.random_button, self.reset_button])],
                       layout=W.Layout(margin="0 0 0 1em"))
        super().__init__([W.HBox([W.VBox(list(self.sliders.values())), right])])
        self.add_class("mielib-explorer")

        self._load_onset()
        self._refresh()  # the first refresh pays one-off costs (imports, caches); time the second
        start = time.perf_counter()
        self._refresh()
        self.render_seconds = time.perf_counter() - start
        # Dragging sends a value per mouse move; only worth re-rendering on each if it is fast.
        continuous = self.render_seconds < CONTINUOUS_UPDATE_SECONDS
        for s in self.sliders.values():
            s.continuous_update = continuous
        self.gain.continuous_update = continuous

    # -- state ---------------------------------------------------------------------------------
    @property
    def z(self) -> np.ndarray:
        """The current AU vector (17,), in mielib.au.CODES order."""
        return au.validate([self.sliders[label].value for label in au.LABELS], where="explorer sliders")

    def frames(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The images on screen: (onset, apex, difference), each HxWx3 uint8."""
        return self._onset, self._apex, difference(self._onset, self._apex, self.gain.value)

    def set_z(self, z, note: str = "") -> None:
        """Move all 17 sliders at once (one re-render, not 17)."""
        z = au.validate(z, where="explorer AU vector")
        with self._batch():
            for label, value in zip(au.LABELS, z):
                self.sliders[label].value = round(float(value), 2)  # the sliders' 0.01 step
        self._note = note
        self._refresh()

    def apply_emotion(self, emotion: str, intensity: float | None = None) -> np.ndarray:
        """Set the sliders to the expert table's apex for `emotion` (intensity: the toggle's)."""
        intensity = self.intensity.value if intensity is None else intensity
        z = au.expert_apex(emotion, intensity, self.table.value)
        self.set_z(z, note=f"{emotion} at {intensity:g} ({self.table.value} table)")
        return self.z

    def random_micro(self) -> tuple[str, np.ndarray]:
        """Draw a random micro-expression with the widget's generator and show it."""
        emotion, z = draw_micro(self.rng, self.table.value)
        self.set_z(z, note=f"random {emotion} micro-expression" + ("" if z.any() else " (no AU drawn active)"))
        return emotion, self.z

    def reset(self) -> None:
        """All AUs back to 0 (the apex equals the onset)."""
        self.set_z(np.zeros(au.N_AUS), note="")

    # -- rendering -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _batch(self):
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _load_onset(self) -> None:
        self._face = self._faces[self.identity.value]
        self._onset = face.render(self._face, np.zeros(au.N_AUS, np.float32), self.size)
        self.onset_image.value = png_bytes(self._onset)

    def _refresh(self) -> None:
        self._apex = face.render(self._face, self.z, self.size)
        self.apex_image.value = png_bytes(self._apex)
        self._show_diff()
        text = html.escape(au.describe(self.z))
        note = f" &mdash; {html.escape(self._note)}" if self._note else ""
        self.description.value = f"AUs: <code>{text}</code>{note}"

    def _show_diff(self) -> None:
        self.diff_image.value = png_bytes(difference(self._onset, self._apex, self.gain.value))
        self._diff_caption.value = f"<b>|apex &minus; onset|</b> &times;{self.gain.value:g}"

    def _build_emotion_buttons(self) -> None:
        buttons = []
        for emotion in au.expert_table(self.table.value):
            b = W.Button(description=emotion, layout=W.Layout(width="auto"),
                         tooltip=f"{emotion}: expert-table AUs at the chosen intensity")
            b.add_class(f"mielib-emotion-{emotion}")
            b.on_click(lambda _, e=emotion: self.apply_emotion(e))
            buttons.append(b)
        self.emotion_buttons.children = buttons

    # -- observers -----------------------------------------------------------------------------
    def _on_au(self, change) -> None:
        if not self._quiet:
            self._note = ""
            self._refresh()

    def _on_identity(self, change) -> None:
        self._load_onset()
        self._refresh()

    def _on_gain(self, change) -> None:
        self._show_diff()

    def _on_table(self, change) -> None:
        self._build_emotion_buttons()

    # -- static fallback -----------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        """Add a PNG of onset | apex | difference, so a notebook run headlessly (papermill,
        nbconvert, a static viewer) still shows the faces where no widget manager is present."""
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        strip = np.concatenate(self.frames(), axis=1)
        bundle["image/png"] = base64.b64encode(png_bytes(strip)).decode("ascii")
        bundle["text/plain"] = f"mielib explorer: {identity_label(self.identity.value)}, {au.describe(self.z)}"
        return bundle


def explorer(size: int = 160, identities: Sequence[str] | None = None, table: str = "miex",
             seed: int = 0, gain: float = DEFAULT_GAIN) -> Explorer:
    """The AU-to-face explorer widget (display it as a notebook cell's last expression).

    size: pixels per side of each face; identities: specs for the picker (default
    `default_identities(6)`, procedural faces from both pools plus the astronaut photo);
    table: the expert table behind the emotion presets ("miex" or "du2014"); seed: the random
    micro-expression button's generator; gain: initial amplification of the difference image.
    """
    return Explorer(size=size, identities=identities, table=table, seed=seed, gain=gain)
