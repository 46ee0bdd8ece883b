"""Presets: one name (`smoke`, `small`, `paper`) that sets every size in every notebook.

Notebooks take `preset` as a papermill parameter and call `presets.resolve(preset)`, so no
notebook contains an `if smoke:` branch. Each module reads only its own keys.
"""

from __future__ import annotations

from types import MappingProxyType

# One row per knob; columns are the presets. Keep the comment: it is what a user reads.
_TABLE = {
    # knob:                 (smoke, small, paper)   # meaning
    "image_size":           (48, 64, 128),          # pixels per side of rendered/loaded frames
    "explorer_identities":  (4, 6, 6),              # rows of the explorer's static identity x AU grid
    "miex_identities":      (6, 400, 5000),         # identities in MiE-X (paper: 5,000)
    "identity_pool":        (200, 5000, 5000),      # size of the simulated EmotioNet-like pool
    "epochs_real":          (1, 12, 80),            # epochs on real (or stand-in) data; paper: 80
    "epochs_miex":          (1, 4, 30),             # epochs on MiE-X; paper: 30
    "repeats":              (1, 3, 3),              # repeats of each cross-validation; paper: 3
    "batch_size":           (32, 32, 32),           # paper: 32
    "gan_iterations":       (10, 1500, 60000),      # GANimation critic iterations (generator steps: 1 in 5)
    "clips_per_dataset":    (24, None, None),       # cap on clips per stand-in when training (None: all)
}

PRESETS = ("smoke", "small", "paper")


def resolve(name: str) -> MappingProxyType:
    """All sizes of a preset, as a read-only mapping with attribute-free keys.

    >>> resolve("smoke")["image_size"]
    48
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    col = PRESETS.index(name)
    return MappingProxyType({"name": name, **{k: v[col] for k, v in _TABLE.items()}})
