"""Training-loop overhead: mielib's `train.fit` against a bare PyTorch loop on the same model,
batch size and in-memory data. Prints samples/s of both and their ratio (target: >= 0.9).

    python benchmarks/bench_train.py                 # ApexME (ResNet-18), 64 px, batch 32
    python benchmarks/bench_train.py --steps 48 --reps 7 --device cuda
    python benchmarks/bench_train.py --input flow --size 32   # ApexME on onset->apex optical flow of lab clips

Both loops run the same number of optimiser steps per repetition; repetitions alternate
between the two (so load on a shared machine hits both alike) and the median is reported.
On CUDA the bare loop uses the same mixed precision as mielib (autocast + GradScaler), so the
ratio measures loop overhead only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from mielib import runtime, train  # noqa: E402


def build_model(name: str, n_classes: int) -> nn.Module:
    try:
        from mielib import models
    except ImportError:  # models.py not there yet: a ResNet-ish stand-in
        models = None
    if models is not None:
        return models.build(name, n_classes, seed=0)
    with train.seeded(0):
        blocks = []
        c = 3
        for width in (64, 128, 256, 512):
            blocks += [nn.Conv2d(c, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes))
    net.n_classes = n_classes
    return net


def _lab_flows(n: int, size: int) -> torch.Tensor:
    """`n` onset->apex flows of composite clips (cycled), 3 x size x size, from 128-px lab frames."""
    from mielib import datasets, paper

    clips = paper.megc3(datasets.load("composite", "sim", None, seed=0, size=128))
    clips.clips = clips.clips[: min(n, len(clips))]
    kf = paper.load_keyframes(clips, size, flow=True)
    flows = torch.from_numpy(np.stack([c.frames.flow for c in kf]).astype(np.float32))
    return flows[torch.arange(n) % len(flows)]


def bare_loop(model: nn.Module, data: TensorDataset, batch: int, device: torch.device,
              amp: bool) -> tuple[float, float]:
    """The loop a person writes by hand; returns (wall, CPU) seconds for one pass over `data`."""
    loader = DataLoader(data, batch_size=batch, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = nn.CrossEntropyLoss()
    model.to(device).train()
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def mielib_loop(model: nn.Module, data: TensorDataset, batch: int, device: torch.device,
                seed: int) -> tuple[float, float]:
    """`train.fit` for one epoch, progress bar on (sent to a buffer); returns (wall, CPU) seconds."""
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):
        train.fit(model, data, epochs=1, seed=seed, batch_size=batch, device=str(device), progress=True)
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="apexme", help="apexme (one ResNet-18 on single frames; the only choice)")
    parser.add_argument("--size", type=int, default=64, help="frame size in pixels (default 64)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32, the paper's)")
    parser.add_argument("--steps", type=int, default=16, help="optimiser steps per repetition (default 16)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions of each loop (default 5)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--input", default="frames", choices=("frames", "flow"),
                        help="frames: random 3-channel frames; flow: the onset->apex optical flow of composite "
                             "clips from the simulated lab (mielib.flow), as the small preset trains on")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    device = runtime.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    n = args.steps * args.batch
    if args.input == "flow":
        data = TensorDataset(_lab_flows(n, args.size), torch.randint(0, 3, (n,), generator=g))
    else:
        data = TensorDataset(torch.randn(n, 3, args.size, args.size, generator=g), torch.randint(0, 3, (n,), generator=g))
    if args.model != "apexme":
        raise SystemExit("error: this benchmark feeds single frames, so only --model apexme applies")
    initial = build_model(args.model, 3)

    def fresh() -> nn.Module:
        return copy.deepcopy(initial)

    # Warm-up: first-call costs (allocator, kernels, lazy imports) out of the measurement.
    warm = TensorDataset(data.tensors[0][: 2 * args.batch], data.tensors[1][: 2 * args.batch])
    bare_loop(fresh(), warm, args.batch, device, amp)
    mielib_loop(fresh(), warm, args.batch, device, seed=0)

    bare, ours = [], []  # (wall, cpu) seconds per repetition
    for rep in range(args.reps):
        # Alternate which loop goes first, so drift in machine load favours neither.
        order = (("bare", "mielib") if rep % 2 == 0 else ("mielib", "bare"))
        for which in order:
            if which == "bare":
                bare.append(bare_loop(fresh(), data, args.batch, device, amp))
            else:
                ours.append(mielib_loop(fresh(), data, args.batch, device, seed=rep))
    med = statistics.median
    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)"),
        "model": args.model, "input": args.input, "size": args.size, "batch": args.batch, "steps": args.steps, "reps": args.reps,
        "amp": amp,
        "mielib_samples_per_s": med(n / w for w, _ in ours),
        "bare_samples_per_s": med(n / w for w, _ in bare),
        # Each repetition's pair ran back to back: the median of per-pair ratios resists load drift.
        "ratio": med(b[0] / o[0] for b, o in zip(bare, ours)),
        # On a shared CPU, CPU seconds are steadier than wall seconds; on CUDA they mean little.
        "ratio_cpu_time": med(b[1] / o[1] for b, o in zip(bare, ours)),
    }
    print(f"device {result['device']}, {args.model} on {args.input} {args.size}px, batch {args.batch}, {args.steps} steps x "
          f"{args.reps} interleaved reps (median)")
    print(f"mielib train.fit: {result['mielib_samples_per_s']:8.1f} samples/s  (all: "
          f"{', '.join(f'{n / w:.1f}' for w, _ in ours)})")
    print(f"bare PyTorch    : {result['bare_samples_per_s']:8.1f} samples/s  (all: "
          f"{', '.join(f'{n / w:.1f}' for w, _ in bare)})")
    print(f"ratio mielib/bare: {result['ratio']:.3f} wall-clock, {result['ratio_cpu_time']:.3f} CPU time "
          "(medians of per-repetition ratios)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
