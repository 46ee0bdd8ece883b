"""Throughput on a CUDA GPU, for the README's CUDA section: training samples/s of ApexME, Branches
and DTSCNN at 128 px with mixed precision (frames and flow input), the MiE-X build with the face
model, one unit of MiE-X Table 1 at the `paper` preset end to end, and from the rates the hours
notebook 04 needs at the `paper` preset (estimate_paper.py's count of sample passes).

    python benchmarks/bench_gpu.py --json gpu.json     # on a CUDA machine (.venv-cuda/bin/python)
    python benchmarks/bench_gpu.py --cpu-dry-run       # the same code at toy sizes on the CPU (a test runs it)

Training uses `train.fit` on in-memory tensors of each view's shape (bench_train.mielib_loop),
so a rate is the model's and the loop's, not the disk's (benchmarks/bench_loader.py measures the
loader). The Table 1 unit is row 1 (ApexME trained on CompMiE, no pre-training), fold 1 of repeat
1: the lab's frames rendered at 128 px, key frames, 80 epochs, the test fold after each, its record
written to a throwaway results folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MIELIB_RESULTS", tempfile.mkdtemp(prefix="bench_gpu_results_"))  # never reuse cached units

import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from bench_miex import measure as measure_miex  # noqa: E402
from bench_train import mielib_loop  # noqa: E402
from estimate_paper import table1_passes  # noqa: E402
from mielib import cudaci, models, presets, runtime  # noqa: E402

#: Sizes of a real run and of the CPU dry run.
SIZES = {"gpu": {"size": 128, "batch": 32, "steps": 40, "preset": "paper", "miex_ids": 500, "dtscnn_frames": 10},
         "dry": {"size": 32, "batch": 4, "steps": 2, "preset": "smoke", "miex_ids": 2, "dtscnn_frames": 4}}
#: The authors' figure (MiE-X supplement, Section 5): about 10 hours per classifier on one 2080 Ti.
AUTHORS_HOURS = 10


def inputs(model: str, input: str, n: int, size: int, frames: int) -> tuple[list[torch.Tensor], dict]:
    """Random tensors shaped as `model`'s view of `input` (models.view_for), and its build options."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.rand(n, *shape, generator=g)  # noqa: E731
    view = models.view_for(model, input)
    if view in ("apex", "flow"):
        return [rand(3, size, size)], {}
    if view in ("onset_apex", "onset_flow"):
        return [rand(3, size, size), rand(3, size, size)], {}
    # DTSCNN as notebook 05 builds it: frame differences of RGB stacks, or 2-channel flow stacks.
    scales = presets.resolve(SIZES["gpu"]["preset"] if size >= 128 else "smoke")["dtscnn_scales"]
    kw = {"scales": list(scales), "frame_size": size, "input_mode": "flow" if input == "flow" else "diff"}
    return [rand(2 if input == "flow" else 3, frames, size, size)], kw


def train_rates(device: torch.device, s: dict) -> list[dict]:
    """Samples/s of `train.fit` for each model and input at size `s["size"]` (AMP on CUDA)."""
    rows = []
    for model in models.NAMES:
        for input in models.INPUT_KINDS:
            n = s["steps"] * s["batch"]
            xs, kw = inputs(model, input, n, s["size"], s["dtscnn_frames"])
            data = TensorDataset(*xs, torch.arange(n) % 3)
            if device.type == "cuda":  # first-call costs (kernels, cuDNN autotuning) out of the measurement
                warm = TensorDataset(*(x[: 2 * s["batch"]] for x in data.tensors))
                mielib_loop(models.build(model, 3, seed=0, **kw), warm, s["batch"], device, seed=0)
            wall, _ = mielib_loop(models.build(model, 3, seed=0, **kw), data, s["batch"], device, seed=0)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            rows.append({"model": model, "input": input, "samples_per_s": round(n / wall, 3),
                         "peak_gib": None if peak is None else round(peak, 2)})
            print(f"train {model:9s} {input:6s} {s['size']} px: {n / wall:8.1f} samples/s"
                  + (f" (peak GPU memory {peak:.1f} GiB)" if peak is not None else ""), flush=True)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
    return rows


def table1_unit(s: dict) -> dict:
    """Row 1 of MiE-X Table 1 for ApexME, fold 1 of repeat 1, at preset `s["preset"]`, end to end."""
    from mielib import datasets, paper, protocols

    P = presets.resolve(s["preset"])
    size, input = P["train_size"], P["input"]
    load = max(size, P["flow_size"]) if input == "flow" else size
    t0 = time.perf_counter()
    composite = paper.megc3(datasets.load("composite", "sim", None, seed=0, size=load))
    composite = paper.load_keyframes(paper.cap(composite, P["clips_per_dataset"], seed=0), size, flow=input == "flow")
    folds = protocols.split(composite, "kfold3", seed=0)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    (rec,) = paper.run_table1_row(paper.TABLE1[0], "apexme", composite=composite, folds=folds[:1], sets={}, size=size,
                                  epochs_real=P["table1_epochs_real"], epochs_miex=P["table1_epochs_miex"], preset=P,
                                  data_source="sim", seed=0, repeats=1, progress=False, input=input)
    train_s = time.perf_counter() - t0
    row = {"preset": P["name"], "row": 1, "model": "apexme", "input": input, "size": size,
           "epochs": rec["epochs"], "n_train": rec["n_train"], "device": rec["device"], "amp": rec["amp"],
           "data_s": round(data_s, 1), "train_s": round(train_s, 1), "fit_s": rec["train_seconds"]}
    print(f"Table 1 unit (preset {P['name']}, row 1, ApexME, {input} {size} px, {rec['epochs']} epochs on "
          f"{rec['n_train']} clips, on {rec['device']}): data {data_s:.1f} s, training and testing {train_s:.1f} s",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every part at toy sizes on the CPU (checks the script; its numbers mean nothing)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: train, miex, table1")
    parser.add_argument("--steps", type=int, help="optimiser steps per training measurement (default 40; dry run 2)")
    parser.add_argument("--miex-workers", type=int, default=os.cpu_count(),
                        help="processes for the MiE-X build (default: every core)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("bench_gpu.py: torch sees no CUDA GPU (torch.cuda.is_available() is False), and these numbers are "
              "a GPU's. Run it on a machine with an NVIDIA GPU (.venv-cuda/bin/python, as `make ci-cuda` installs "
              "it), or add --cpu-dry-run to run the same code at toy sizes on the CPU.", file=sys.stderr)
        return cudaci.NO_GPU
    s = dict(SIZES["dry" if args.cpu_dry_run else "gpu"])
    if args.steps:
        s["steps"] = args.steps
    device = torch.device("cpu") if args.cpu_dry_run else runtime.device("cuda")
    if args.cpu_dry_run:
        torch.set_num_threads(1)  # toy sizes: a second thread only spin-waits, badly so on a loaded machine
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    skip = {w.strip() for w in args.skip.split(",") if w.strip()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU dry run ({torch.get_num_threads()} threads)"
    out = {"device": where, "torch": torch.__version__, "cuda": torch.version.cuda, "sizes": s}
    print(f"bench_gpu on {where}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    if "train" not in skip:
        out["train"] = train_rates(device, s)
    if "miex" not in skip:
        with tempfile.TemporaryDirectory(prefix="bench_gpu_miex_") as tmp:
            workers = 1 if args.cpu_dry_run else args.miex_workers
            out["miex"] = measure_miex(s["miex_ids"], workers, s["size"], Path(tmp) / "miex")
        m = out["miex"]
        print(f"MiE-X build, face model, {m['samples']} samples at {m['size']} px with {workers} workers: "
              f"{m['build_s']:.1f} s ({m['frames_per_s']:.0f} frames/s; 45,000 samples in about "
              f"{m['render_s'] * 5000 / s['miex_ids'] / 60 + m['plan_s'] / 60:.1f} min)", flush=True)
    if "table1" not in skip:
        out["table1_unit"] = table1_unit(s)
    if "train" not in skip:
        passes, text = table1_passes(s["preset"])
        print(text)
        rate = {r["model"]: r["samples_per_s"] for r in out["train"] if r["input"] == presets.resolve(s["preset"])["input"]}
        out["notebook04_hours"] = {m: round(passes / rate[m] / 3600, 2) for m in ("apexme", "branches")}
        print("notebook 04 at preset " + s["preset"] + ": " + ", ".join(
            f"{m} {h:.1f} h" for m, h in out["notebook04_hours"].items())
            + f" of training at these rates (the authors: about {AUTHORS_HOURS} h per classifier on one 2080 Ti)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
