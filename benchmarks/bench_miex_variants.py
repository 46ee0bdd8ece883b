"""How much of a MiE-X variant the frame store saves: notebook 06's seven AU-source combinations.

Builds every non-empty subset of (mie, mae, exp) (Fig. 5's AU combinations) twice into a
temporary data folder (MIELIB_DATA): once with the frame store off (every frame rendered), once
with it on, variant after variant in the same order. Prints per variant the samples, the frames
taken from the store and those rendered, and the seconds; then the store's hit rate and the
total times. Checks that each variant's frames and manifest are byte-identical both ways.

    python benchmarks/bench_miex_variants.py [--ids 150] [--size 128] [--workers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mielib import miex  # noqa: E402

SOURCES = ("mie", "mae", "exp")


def _digest(root: Path) -> str:
    """One hash of a build's frames and manifest (build.json records times, so it is left out)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "build.json":
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run(variants: list[tuple], root: Path, share: bool, opts: dict) -> list[dict]:
    rows = []
    for src in variants:
        t0 = time.perf_counter()
        d = miex.build(root / "_".join(src), sources=src, share_frames=share, progress=False, **opts)
        s = d.summary()
        rows.append({"sources": "+".join(src), "samples": s["samples"], "frames_reused": s["frames_reused"],
                     "frames_rendered": s["frames_rendered"], "seconds": round(time.perf_counter() - t0, 1),
                     "digest": _digest(d.root)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=150, help="identities per variant (default 150)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=miex.default_workers())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = [c for r in (1, 2, 3) for c in itertools.combinations(SOURCES, r)]
    opts = dict(identities=args.ids, size=args.size, seed=args.seed, workers=args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="bench_miex_variants_"))
    os.environ["MIELIB_DATA"] = str(tmp / "data")  # an empty frame store
    try:
        t0 = time.perf_counter()
        miex.plan(identities=args.ids, seed=args.seed)  # the simulated lab's caches, outside the timings
        warm = time.perf_counter() - t0
        plain = run(variants, tmp / "plain", False, opts)
        shared = run(variants, tmp / "shared", True, opts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = all(a.pop("digest") == b.pop("digest") for a, b in zip(plain, shared))
    print(f"{len(variants)} AU-source variants, {args.ids} identities, {args.size} px, seed {args.seed}, "
          f"{args.workers} worker(s); lab caches built first in {warm:.1f} s")
    print(f"{'sources':<12}{'samples':>9}{'reused':>9}{'rendered':>10}{'s (store)':>11}{'s (none)':>10}")
    for a, b in zip(shared, plain):
        print(f"{a['sources']:<12}{a['samples']:>9}{a['frames_reused']:>9}{a['frames_rendered']:>10}"
              f"{a['seconds']:>11.1f}{b['seconds']:>10.1f}")
    reused = sum(r["frames_reused"] for r in shared)
    total = reused + sum(r["frames_rendered"] for r in shared)
    t_shared, t_plain = sum(r["seconds"] for r in shared), sum(r["seconds"] for r in plain)
    print(f"hit rate: {reused}/{total} frames = {reused / total:.1%}; total {t_shared:.1f} s with the store vs "
          f"{t_plain:.1f} s without ({t_plain / t_shared:.2f}x); byte-identical: {same}; "
          f"1-min load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({"shared": shared, "plain": plain, "hit_rate": reused / total, "identical": same}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
