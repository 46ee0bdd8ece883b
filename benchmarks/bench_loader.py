"""Does data loading keep the device busy? The data loader's share of `train.fit`'s step time
for ApexME and Branches at 128 px, reading a small MiE-X build's PNG frames from disk or the same
samples' key frames from memory (`paper.load_keyframes`, what notebooks 04-09 train on), with
0 or more loader workers, on whatever device is present.

    python benchmarks/bench_loader.py                           # 8 measured steps per setting
    python benchmarks/bench_loader.py --steps 3 --warmup 1 --threads 1   # a CPU-sized run (a few minutes)
    python benchmarks/bench_loader.py --workers 0,2,4 --json loader.json

For each setting it runs `train.fit` for one epoch of warm-up + measured steps, with the loader
fit builds itself (`train._loader`: pinned memory on CUDA) wrapped to time each wait for the next
batch. Reported: the share of the measured steps' wall time spent waiting for batches (on CUDA,
with fp16 loss scaling syncing every step, that is about the GPU's idle share due to data),
training samples/s, and the loader alone (batches drawn with no model), the most samples/s it
could feed a device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MIELIB_DATA", tempfile.mkdtemp(prefix="bench_loader_"))  # a throwaway build
from mielib import miex, models, paper, runtime, train, views  # noqa: E402


class TimedLoader:
    """A DataLoader whose iteration records when each batch was asked for and how long it took."""

    def __init__(self, loader):
        self.loader, self.asked, self.waits, self.end = loader, [], [], None
        self.asked_cpu, self.waits_cpu, self.end_cpu = [], [], None  # this process's CPU time, the same way

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            self.asked.append(time.perf_counter())
            self.asked_cpu.append(time.process_time())
            try:
                batch = next(it)
            except StopIteration:  # asked after the last step's work: the epoch's end
                self.end, self.end_cpu = self.asked.pop(), self.asked_cpu.pop()
                return
            self.waits.append(time.perf_counter() - self.asked[-1])
            self.waits_cpu.append(time.process_time() - self.asked_cpu[-1])
            yield batch


def train_share(model_name: str, dataset, batch: int, device: torch.device, workers: int, warmup: int) -> dict:
    """One epoch of `train.fit` (its own loader, timed); the loader's share of the steps after `warmup`."""
    timed = []
    real_loader = train._loader

    def loader(*args, **kwargs):
        timed.append(TimedLoader(real_loader(*args, **kwargs)))
        return timed[-1]

    net = models.build(model_name, 3, seed=0)
    with mock.patch.object(train, "_loader", loader):
        history = train.fit(net, dataset, epochs=1, seed=0, batch_size=batch, device=str(device), num_workers=workers,
                            progress=False)
    t = timed[0]
    # Each step asks for its batch, then trains on it; with AMP's loss scaling on CUDA every step
    # ends in a device sync, so the next ask comes when the device has finished.
    # On a CPU shared with other jobs wall time swings with their load; CPU time does not (with
    # workers the loading happens in other processes, so the CPU-time share is about 0).
    wall, cpu = t.end - t.asked[warmup], t.end_cpu - t.asked_cpu[warmup]
    waited, waited_cpu = sum(t.waits[warmup:]), sum(t.waits_cpu[warmup:])
    steps = len(t.waits) - warmup
    return {"steps": steps, "wait_s": round(waited, 3), "wall_s": round(wall, 3), "loader_share": round(waited / wall, 4),
            "loader_share_cpu_time": round(waited_cpu / cpu, 4), "train_samples_per_s": round(steps * batch / wall, 1),
            "amp": history.amp}


def loader_alone(dataset, batch: int, device: torch.device, workers: int, batches: int) -> tuple[float, float]:
    """The training loader with no model (after its first batch), copies to the device included:
    samples/s, and this process's CPU milliseconds per sample (the whole cost of loading when
    there are no workers)."""
    loader = train._loader(dataset, batch, device, workers, torch.Generator().manual_seed(0))
    it, drawn = iter(loader), 0
    next(it)
    start, cpu = time.perf_counter(), time.process_time()
    while drawn < batches:
        try:
            xs, _ = train._split_batch(next(it))
        except StopIteration:
            it = iter(loader)
            continue
        train._to(xs, device)
        drawn += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n = batches * batch
    return round(n / (time.perf_counter() - start), 1), round(1000 * (time.process_time() - cpu) / n, 3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128, the paper's)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32, the paper's)")
    parser.add_argument("--steps", type=int, default=8, help="measured optimiser steps per setting (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="steps before measuring (worker start, autotuning)")
    parser.add_argument("--workers", default=None,
                        help="comma-separated loader worker counts (default: 0 and train.loader_workers on this device)")
    parser.add_argument("--models", default="apexme,branches", help="comma-separated models (default apexme,branches)")
    parser.add_argument("--loader-batches", type=int, default=40, help="batches drawn for the loader-alone rate")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice; on a loaded 2-core machine 1 is far faster)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    device = runtime.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else sorted({0, train.loader_workers(torch.device("cuda"))}))
    n = (args.steps + args.warmup) * args.batch
    identities = -(-n // 9)  # nine samples per identity
    t0 = time.perf_counter()
    mx = miex.dataset(identities=identities, size=args.size, seed=0, data_seed=0, workers=2, progress=False)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    keyframes = paper.load_keyframes(mx, args.size)
    keyframes_s = time.perf_counter() - t0
    where = f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                           f" ({torch.get_num_threads()} threads, {os.cpu_count()} cores)")
    print(f"device {where}; MiE-X build of {len(mx)} samples at {args.size} px: {build_s:.1f} s; key frames into "
          f"memory: {keyframes_s:.1f} s; batch {args.batch}, {args.steps} measured steps after {args.warmup}", flush=True)
    rows = []
    for name in args.models.split(","):
        view = getattr(views, {"apex": "Apex", "onset_apex": "OnsetApex"}[models.INPUTS[name]])
        for source, clips in (("png", mx), ("memory", keyframes)):
            data = torch.utils.data.Subset(view(clips, size=args.size), range(n))
            for w in workers:
                rate, cpu_ms = loader_alone(data, args.batch, device, w, args.loader_batches)
                row = {"model": name, "frames": source, "workers": w,
                       **train_share(name, data, args.batch, device, w, args.warmup),
                       "loader_alone_samples_per_s": rate, "loader_alone_cpu_ms_per_sample": cpu_ms}
                rows.append(row)
                print(f"{name:9s} {source:6s} workers {w}: loader share {100 * row['loader_share']:5.1f}% of step wall "
                      f"time ({100 * row['loader_share_cpu_time']:.1f}% of its CPU time), training "
                      f"{row['train_samples_per_s']:7.1f} samples/s; loader alone {rate:8.1f} samples/s, "
                      f"{cpu_ms:.2f} ms CPU per sample in this process", flush=True)
    result = {"device": where, "size": args.size, "batch": args.batch, "samples": len(mx), "build_s": round(build_s, 1),
              "keyframes_s": round(keyframes_s, 1), "load_average_1min": round(os.getloadavg()[0], 2), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
