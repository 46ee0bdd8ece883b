"""Optical flow cost: one onset->apex pair at 128 px, and the flows of whole sets (the composite
stand-in and a MiE-X build) computed cold and then read from the cache, as notebooks 04-05 do.

    python benchmarks/bench_flow.py              # composite + MiE-X of 150 identities (notebook 04's small preset)
    python benchmarks/bench_flow.py --ids 40     # notebook 05's

Runs in a private data folder, so the caches start empty. Prints wall and CPU seconds; the
rendering of the lab's frames (which a real dataset reads from disk) is timed separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=150, help="MiE-X identities (x 9 samples; default 150)")
    parser.add_argument("--size", type=int, default=32, help="training size the flows are resized to (default 32)")
    parser.add_argument("--load", type=int, default=128, help="size the frames are read at (default 128)")
    args = parser.parse_args(argv)
    os.environ["MIELIB_DATA"] = tempfile.mkdtemp(prefix="mielib_bench_flow_")
    import numpy as np

    from mielib import datasets, flow, miex, paper

    comp = paper.megc3(datasets.load("composite", "sim", None, seed=0, size=args.load))
    c = comp[0]
    pair = (np.asarray(c.frames[c.onset]), np.asarray(c.frames[c.apex]))
    _, w, _ = timed(lambda: [flow.compute(*pair, args.size) for _ in range(50)])
    print(f"one pair at {args.load} px -> {args.size} px: {1000 * w / 50:.1f} ms")

    def report(name, clips, what):
        pairs, w, cpu = timed(lambda: [(np.asarray(x.frames[x.onset]), np.asarray(x.frames[x.apex])) for x in clips])
        print(f"{name}: {len(clips)} samples, {what}: {w:.1f} s wall ({cpu:.1f} s CPU)")
        _, w, cpu = timed(lambda: flow.for_pairs(pairs, args.size))
        print(f"{name}: flows cold {w:.1f} s wall ({cpu:.1f} s CPU)")
        _, w, _ = timed(lambda: flow.for_pairs(pairs, args.size))
        print(f"{name}: flows from the cache {w:.2f} s")

    report("composite", comp, f"rendering onset+apex frames at {args.load} px")
    mx, w, _ = timed(lambda: miex.dataset(identities=args.ids, size=args.load, seed=0, data_seed=0, progress=False))
    print(f"MiE-X: {len(mx)} samples built at {args.load} px in {w:.1f} s")
    report("MiE-X", mx, "reading onset+apex PNGs")


if __name__ == "__main__":
    main()
