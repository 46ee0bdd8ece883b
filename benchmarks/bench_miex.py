"""How long the MiE-X build takes with the face-model generator, and how big it is.

Builds a subset (default 500 identities = 4,500 samples, 9,000 frames at 128 px) into a
temporary folder, times it, and extrapolates to the paper's 5,000 identities (45,000 samples);
`--full` builds the paper size itself. The target: the paper-size build in <= 10 minutes with
2 worker processes on a 2-core machine.

    python benchmarks/bench_miex.py [--ids 500] [--workers 2] [--size 128] [--full] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mielib import miex  # noqa: E402

PAPER_IDENTITIES = 5000


def measure(ids: int, workers: int, size: int, out: Path) -> dict:
    t0 = time.perf_counter()
    plan = miex.plan(identities=ids, size=size)
    t_plan = time.perf_counter() - t0
    t1 = time.perf_counter()
    cpu0 = _cpu()
    data = miex.build(out, identities=ids, size=size, workers=workers, progress=False)
    t_total = time.perf_counter() - t1
    cpu = _cpu() - cpu0
    summary = data.summary()
    return {"identities": ids, "samples": summary["samples"], "frames": summary["frames"], "size": size,
            "workers": workers, "plan_s": round(t_plan, 2), "build_s": round(t_total, 2),
            "render_s": round(t_total - t_plan, 2), "bytes": summary["bytes"],
            "frames_per_s": round(summary["frames"] / max(t_total - t_plan, 1e-9), 1),
            "samples_planned": len(plan.manifest), "cpu_s": round(cpu, 2),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def _cpu() -> float:
    """CPU seconds of this process and its finished worker processes (user + system)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=500, help="identities in the measured subset (default 500)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--full", action="store_true", help="build the paper size (5,000 identities) itself")
    parser.add_argument("--keep", default=None, help="build into this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    ids = PAPER_IDENTITIES if args.full else args.ids
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_miex_"))
    try:
        r = measure(ids, args.workers, args.size, root / "miex")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    scale = PAPER_IDENTITIES / ids
    # the plan (loading AU sources, drawing triplets) scales weakly; rendering scales linearly
    r["paper_estimate_s"] = round(r["plan_s"] + r["render_s"] * scale, 1)
    r["paper_estimate_bytes"] = int(r["bytes"] * scale)
    r["cpu_count"] = os.cpu_count()
    # on a machine shared with other work, wall time overstates; CPU time / workers does not
    r["paper_estimate_cpu_bound_s"] = round(r["plan_s"] + (r["cpu_s"] - r["plan_s"]) * scale / r["workers"], 1)
    print(json.dumps(r, indent=1))
    print(f"{r['samples']} samples / {r['frames']} frames at {r['size']} px with {r['workers']} worker(s): "
          f"{r['build_s']:.1f} s ({r['frames_per_s']:.0f} frames/s); paper size (45,000 samples) "
          f"{'measured' if args.full else 'estimated'}: {r['paper_estimate_s'] / 60:.1f} min, "
          f"{r['paper_estimate_bytes'] / 2**30:.2f} GB (from CPU time / workers, ignoring other load: "
          f"{r['paper_estimate_cpu_bound_s'] / 60:.1f} min; 1-min load average {r['load_average_1min']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
