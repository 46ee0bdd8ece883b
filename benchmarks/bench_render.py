"""Face-model rendering speed: frames/s for identity + AUs -> uint8 image (single process).

(a) one cached identity, new AU vector every frame (the explorer, a clip of one subject);
(b) the MiE-X builder's pattern: a new identity every N frames, frames alternating onset (neutral)
    and apex (random AUs), identity set-up included; optionally with PNG encoding, which gives
    the projected time for MiE-X's 5,000 identities x 18 frames (PNG compress_level=1: about
    half the encoding time of Pillow's default level 6 for 13% larger files).

    python benchmarks/bench_render.py [--size 128] [--frames 600] [--png]

Numbers quoted in the README come from this script; it prints wall-clock and CPU time, since a
shared machine's load changes the first but hardly the second.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mielib import au, face  # noqa: E402


def random_aus(rng: np.random.Generator, n: int) -> np.ndarray:
    """n AU vectors with 1-5 active AUs each, at micro (0.1-0.3) or macro (0.5-1) intensity."""
    Z = np.zeros((n, au.N_AUS), np.float32)
    for z in Z:
        k = rng.integers(1, 6)
        idx = rng.choice(au.N_AUS, k, replace=False)
        z[idx] = rng.uniform(0.1, 0.3, k) if rng.random() < 0.5 else rng.uniform(0.5, 1.0, k)
    return Z


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bench_cached(size: int, frames: int, rng) -> tuple[float, float]:
    f = face.identity(1)
    face.render(f, None, size)
    face.render(f, random_aus(rng, 1)[0], size)  # build mesh and shading once
    Z = random_aus(rng, frames)

    def run():
        for z in Z:
            face.render(f, z, size)
    return timed(run)


def bench_miex(size: int, frames: int, per_identity: int, png: bool, rng, start: int) -> tuple[float, float]:
    Z = random_aus(rng, frames)
    from PIL import Image

    def run():
        for n in range(frames):
            if n % per_identity == 0:
                f = face.identity(start + n // per_identity)
            img = face.render(f, None if n % 2 == 0 else Z[n], size)  # onset, apex, onset, ...
            if png:
                Image.fromarray(img).save(io.BytesIO(), format="PNG", compress_level=1)
    return timed(run)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--png", action="store_true", help="also time the MiE-X pattern with PNG encoding")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    face.render(face.identity(0), random_aus(rng, 1)[0], args.size)  # imports and caches warm
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"face.render at {args.size}x{args.size}, {args.frames} frames per pattern, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'pattern':<52} {'frames/s (wall)':>16} {'ms/frame CPU':>13}")
    rows = [("(a) cached identity, new AUs each frame", bench_cached(args.size, args.frames, rng))]
    for k in (9, 18):
        rows.append((f"(b) MiE-X: new identity every {k} frames", bench_miex(args.size, args.frames, k, False, rng, 1000 * k)))
    if args.png:
        rows.append(("(b) MiE-X: new identity every 18 frames, + PNG", bench_miex(args.size, args.frames, 18, True, rng, 50_000)))
    for name, (wall, cpu) in rows:
        print(f"{name:<52} {args.frames / wall:>16.0f} {1000 * cpu / args.frames:>13.2f}")
    if args.png:
        wall, cpu = rows[-1][1]
        total = 5000 * 18
        print(f"projected MiE-X build (5,000 identities x 18 frames, PNG): {total * wall / args.frames / 60:.1f} min "
              f"wall here, {total * cpu / args.frames / 60:.1f} min of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
