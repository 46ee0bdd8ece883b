"""Time the simulated lab: `lab.build` from an empty cache, without and with frames, and loads.

    python benchmarks/bench_lab.py                 # annotations, trajectories, readouts only
    python benchmarks/bench_lab.py --frames        # also render every frame (size 128)
    python benchmarks/bench_lab.py --frames --estimate 40   # render 40 clips per stand-in and extrapolate

Each run uses a fresh temporary data folder (MIELIB_DATA), so nothing is reused from earlier runs.
The issue's budget: a whole build within 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", action="store_true", help="also render every frame into the cache")
    parser.add_argument("--estimate", type=int, default=0, metavar="K",
                        help="with --frames: render only K clips (and K*20 pool images) per stand-in, extrapolate")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_lab_") as tmp:
        os.environ["MIELIB_DATA"] = tmp
        from mielib import lab, runtime

        out = {"seed": args.seed, "size": args.size, "cpus": os.cpu_count(), "commit": runtime.commit()}
        t0 = time.perf_counter()
        parts = lab.build(args.seed)
        out["build_no_frames_s"] = time.perf_counter() - t0
        out["build_parts_s"] = {k: round(v, 2) for k, v in parts.items()}
        lab._MEMO.clear()
        t0 = time.perf_counter()
        for name in lab.STANDINS:
            lab.load(name, seed=args.seed)
        out["load_all_from_cache_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = lab.reference_result(args.seed)
        out["reference_result_s"] = time.perf_counter() - t0
        out["reference_uf1"], out["reference_uar"] = r["uf1"], r["uar"]
        out["frames_total"] = {n: int(lab._tables(n, args.seed)["starts"][-1]) for n in lab._BUILD_ORDER}
        out["pool_images_total"] = sum(lab.POOL_SIZES.values())
        t0 = time.perf_counter()
        c = lab.load("casme2", seed=args.seed, size=args.size)[0]
        c.frames[c.apex]
        out["first_lazy_frame_s"] = time.perf_counter() - t0

        if args.frames and not args.estimate:
            t0 = time.perf_counter()
            parts = lab.build(args.seed, args.size, frames=True, progress=True)
            out["build_frames_s"] = time.perf_counter() - t0
            out["build_frames_parts_s"] = {k: round(v, 1) for k, v in parts.items() if k.startswith("frames")}
            out["frames_cache_mb"] = sum(p.stat().st_size for p in Path(tmp).rglob("*.npz")) / 2**20
        elif args.frames:
            estimate, rendered = 0.0, 0
            for name in lab._BUILD_ORDER:
                data, spec = lab._tables(name, args.seed), lab.SPECS[name]
                k = min(args.estimate, len(data["rows"]))
                t0 = time.perf_counter()
                n_frames = 0
                for i in range(k):
                    z = data["true_aus"][data["starts"][i]:data["starts"][i + 1]]
                    frames = lab._ClipRenderer(args.seed, spec, i, data["rows"][i], z, args.size).stored_all()
                    lab._write_frames(lab._frames_path(args.seed, args.size, name, i), frames)
                    n_frames += len(frames)
                dt = time.perf_counter() - t0
                per_frame = dt / max(n_frames, 1)
                estimate += per_frame * out["frames_total"][name]
                rendered += n_frames
                out[f"ms_per_frame_{name}"] = 1000 * per_frame
            for name in lab.POOLS:
                renderer = lab._PoolRenderer(name, args.seed, args.size, lab._pool_tables(name, args.seed))
                k = args.estimate * 20
                t0 = time.perf_counter()
                for i in range(k):
                    renderer.stored(i)
                per_image = (time.perf_counter() - t0) / k
                estimate += per_image * lab.POOL_SIZES[name]
                out[f"ms_per_image_pool_{name}"] = 1000 * per_image
            out["build_frames_estimated_s"] = estimate
            out["frames_rendered_for_estimate"] = rendered
            mb = sum(p.stat().st_size for p in Path(tmp).rglob("frames*/**/*.npz")) / 2**20
            out["frames_cache_mb_estimated"] = mb / max(rendered, 1) * (sum(out["frames_total"].values())
                                                                       + out["pool_images_total"])
    for k, v in out.items():
        print(f"{k:<32} {v:.2f}" if isinstance(v, float) else f"{k:<32} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
