"""The simulated lab's AU readout: a stand-in for OpenFace that turns the AUs a face really shows
into per-frame AU estimates with realistic error.

Used by `lab` (every clip's `Clip.readout` and the identity pools' readouts), so z_MiE and z_MaE
in notebooks 01-11 are extracted from readouts, never copied from the simulator's hidden truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import au

# Detection floors on the [0, 1] scale: intensities below the floor read as (nearly) zero.
# Subtle or small-area AUs (lid tightener, dimpler, lip stretcher/tightener, upper-lid raiser)
# are the ones OpenFace misses most on micro-expressions; large mouth and blink AUs the least.
FLOORS = {
    1: 0.075, 2: 0.09, 4: 0.075, 5: 0.15, 6: 0.09, 7: 0.135, 9: 0.105, 10: 0.105, 12: 0.06,
    14: 0.15, 15: 0.135, 17: 0.105, 20: 0.165, 23: 0.165, 25: 0.06, 26: 0.09, 45: 0.06,
}

# Cross-talk: a reading of AU `b` leaks into AU `a` by `weight` (row a, column b), because the
# detector's per-AU regressors share appearance features (brow raisers, cheek raiser and smile,
# nose wrinkler and upper-lip raiser, lips part and jaw drop ...).
CROSSTALK = {
    (2, 1): 0.35, (1, 2): 0.30, (12, 6): 0.25, (6, 12): 0.35, (7, 4): 0.20, (9, 4): 0.10,
    (10, 9): 0.30, (9, 10): 0.20, (26, 25): 0.30, (25, 26): 0.45, (17, 15): 0.20,
    (15, 17): 0.15, (14, 23): 0.15, (12, 14): 0.20, (25, 20): 0.15, (6, 7): 0.20,
    (1, 5): 0.10, (45, 7): 0.15, (4, 9): 0.15,
}


@dataclass(frozen=True)
class ReadoutModel:
    """The error model of one "OpenFace build": fixed for a lab seed.

    `read()` adds the per-clip and per-frame parts (clip gain, identity offsets, jitter, failed
    frames) from the generator it is given.
    """

    floor: np.ndarray  # (17,) detection floors
    gain: np.ndarray  # (17,) systematic multiplicative gain error of this build
    crosstalk: np.ndarray  # (17, 17) reading = truth @ crosstalk.T (identity plus leaks)
    clip_gain_sd: float = 0.15  # log-sd of a per-clip gain (face size, pose, lighting)
    jitter: float = 0.04  # per-frame noise sd (AR(1), rho below)
    rho: float = 0.6  # temporal correlation of the jitter (the detector's features drift)
    fail_rate: float = 0.008  # share of frames where face tracking fails: all zeros
    softness: float = 0.02  # width of the soft floor (a detector has no hard threshold)

    def read(self, true_aus: np.ndarray, *, offset: np.ndarray, quality: float = 1.0,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Readout of a clip (or of T single images): T x 17 in [0, 1], and the failed-frame mask.

        `offset` is the identity-dependent reading of this person's neutral face
        (`person_offset`); `quality` scales jitter and failures for a dataset's capture
        (low resolution, grayscale, noise make OpenFace less reliable).
        """
        x = np.atleast_2d(au.validate(true_aus, where="true AUs").astype(np.float64))
        t = len(x)
        gain = np.exp(rng.normal(0.0, self.clip_gain_sd, au.N_AUS))
        sd = self.jitter * quality
        noise = np.empty((t, au.N_AUS))
        noise[0] = rng.normal(0.0, sd, au.N_AUS)
        innov = rng.normal(0.0, sd * np.sqrt(1 - self.rho**2), (t, au.N_AUS))
        for i in range(1, t):
            noise[i] = self.rho * noise[i - 1] + innov[i]
        failed = rng.random(t) < self.fail_rate * quality
        return self._finish(x, gain, offset, noise, failed), failed

    def read_images(self, true_aus: np.ndarray, *, offsets: np.ndarray, quality: float = 1.0,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Readouts of N independent images (N x 17): each its own gain, offset and noise."""
        x = np.atleast_2d(au.validate(true_aus, where="true AUs").astype(np.float64))
        n = len(x)
        gain = np.exp(rng.normal(0.0, self.clip_gain_sd, (n, au.N_AUS)))
        noise = rng.normal(0.0, self.jitter * quality, (n, au.N_AUS))
        failed = rng.random(n) < self.fail_rate * quality
        return self._finish(x, gain, offsets, noise, failed), failed

    def _finish(self, x, gain, offset, noise, failed) -> np.ndarray:
        v = (x @ self.crosstalk.T) * self.gain * gain - self.floor
        # soft floor, shifted so that a zero input reads zero
        s = self.softness
        y = s * (np.logaddexp(0.0, v / s) - np.logaddexp(0.0, -self.floor / s))
        y = np.maximum(y, 0.0) + offset + noise
        y[failed] = 0.0
        y = np.clip(y, 0.0, 1.0)
        # OpenFace prints two decimals on its 0..5 scale: 0.002 steps on ours
        return (np.round(y * 500.0) / 500.0).astype(np.float32)


def model(seed: int) -> ReadoutModel:
    """The readout model of a lab seed: floors and cross-talk as documented, build gain drawn."""
    rng = np.random.default_rng([seed, 0x0F])
    floor = np.array([FLOORS[c] for c in au.CODES])
    # systematic gain error: most AUs under-read a little, some over-read (log-sd 0.2)
    gain = np.exp(rng.normal(-0.05, 0.2, au.N_AUS))
    ct = np.eye(au.N_AUS)
    for (a, b), w in CROSSTALK.items():
        ct[au.index(a), au.index(b)] = w
    return ReadoutModel(floor=floor, gain=gain, crosstalk=ct)


def person_offset(rng: np.random.Generator) -> np.ndarray:
    """What the detector reads on a person's neutral face: 1-4 AUs at 0.02-0.2 (17,).

    Heavy brows read as AU4, narrow eyes as AU7/AU45, parted lips as AU25 and so on; the offset
    is a property of the face, so it is the same in every clip of that person.
    """
    off = np.zeros(au.N_AUS)
    likely = [au.index(c) for c in (4, 7, 45, 25, 1, 2, 6, 14, 17, 10, 15, 26)]
    k = rng.integers(1, 5)
    idx = rng.choice(likely, size=k, replace=False)
    off[idx] = rng.uniform(0.02, 0.2, k)
    return off
