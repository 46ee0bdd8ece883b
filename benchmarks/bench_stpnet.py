"""Training throughput of AU-GACN's STPNet backbone (and the whole AU-GACN) against ResNet-18 on
single frames of the same size, at the smoke, small and paper input sizes of notebook 10.
Prints one table of samples/s (forward + backward + Adam step), by wall clock and by CPU time.

    python benchmarks/bench_stpnet.py                  # smoke, small and paper sizes, 1 CPU thread
    python benchmarks/bench_stpnet.py --quick          # one short repetition, smoke and small only
    python benchmarks/bench_stpnet.py --device cuda --configs paper --batch 16

Sizes: smoke 3 x 4 x 32^2 (width 16), small 3 x 8 x 32^2 (width 32), paper 3 x 16 x 256^2
(width 64, Table 7; the paper does not give its clip length L, 16 is ours). ResNet-18
(`models.ResNet18`, ApexME's backbone) sees one 3 x S x S frame per sample. On a shared CPU
the CPU-time column is the steadier one. On CUDA the step runs under float16 autocast, as
`train.fit` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from mielib import augacn, models, runtime  # noqa: E402

#: name -> (frames, frame size, STPNet width, batch on CPU)
CONFIGS = {"smoke": (4, 32, 16, 8), "small": (8, 32, 32, 8), "paper": (16, 256, 64, 2)}
#: CASME II's AU vocabulary size (the paper: A = 19).
NODES = tuple(range(1, 20))


class _STPNetScores(nn.Module):
    """STPNet alone, its AU node scores trained with BCE."""

    def __init__(self, width: int):
        super().__init__()
        self.net = augacn.STPNet(3, len(NODES), width)

    def loss(self, x, y, aus):
        return nn.functional.binary_cross_entropy_with_logits(self.net(x)[..., 0], aus)


class _AUGACN(augacn.AUGACN):
    def loss(self, x, y, aus):
        return self.criterion(self(x), y, aus)


class _ResNet(models.ResNet18):
    def loss(self, x, y, aus):
        return nn.functional.cross_entropy(self(x[:, :, 0]), y)  # one frame per sample


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: nn.Module, frames: int, size: int, batch: int, steps: int, reps: int,
            device: torch.device) -> tuple[float, float]:
    """Median (wall, CPU) samples/s of `steps` training steps, over `reps` repetitions."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, frames, size, size, generator=g).to(device)
    y = torch.randint(0, 3, (batch,), generator=g).to(device)
    aus = (torch.rand(batch, len(NODES), generator=g) < 0.15).float().to(device)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = model.loss(x, y, aus)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: kernel selection and allocations out of the measurement
    walls, cpus = [], []
    for _ in range(reps):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        _sync(device)
        walls.append(steps * batch / (time.perf_counter() - wall))
        cpus.append(steps * batch / max(time.process_time() - cpu, 1e-9))
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=None, help="comma-separated among smoke, small, paper "
                        "(default: all; with --quick: smoke,small)")
    parser.add_argument("--quick", action="store_true", help="one repetition of 2 steps (a few seconds)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per repetition (default 2)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, median reported (default 3)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 8, paper size 2 on CPU, 32 on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = runtime.device(args.device)
    names = (args.configs or ("smoke,small" if args.quick else ",".join(CONFIGS))).split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"error: unknown config {', '.join(unknown)}; use {', '.join(CONFIGS)}")
    steps, reps = (2, 1) if args.quick else (args.steps, args.reps)
    where = (f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
             else f"cpu ({torch.get_num_threads()} threads)")
    print(f"{where}; {steps} steps x {reps} reps (median); samples/s of forward + backward + Adam step")
    print(f"{'config':7s} {'input':>16s} {'model':>22s} {'params':>9s} {'batch':>5s} {'wall/s':>9s} {'CPU/s':>9s}")
    rows = []
    for name in names:
        frames, size, width, cpu_batch = CONFIGS[name]
        batch = args.batch or (32 if device.type == "cuda" else cpu_batch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            nets = {f"STPNet (width {width})": _STPNetScores(width),
                    f"AU-GACN (width {width})": _AUGACN(3, NODES, width=width),
                    "ResNet-18 (one frame)": _ResNet(3)}
        for label, net in nets.items():
            wall, cpu = measure(net, frames, size, batch, steps, reps, device)
            params = sum(p.numel() for p in net.parameters())
            rows.append({"config": name, "frames": frames, "size": size, "model": label, "params": params,
                         "batch": batch, "samples_per_s": wall, "samples_per_cpu_s": cpu})
            print(f"{name:7s} {f'3x{frames}x{size}x{size}':>16s} {label:>22s} {params:9d} {batch:5d} {wall:9.1f} {cpu:9.1f}",
                  flush=True)
    return rows


if __name__ == "__main__":
    main()
