"""Notebook 11's (EIDNet) cost at a preset, projected from a few timed units rather than run:
the data loading, each MacroNet, one Phase I and one Phase II unit of every task, every task's
reference levels and one t-SNE panel, each timed in CPU seconds with one torch thread (what one
worker of the notebook's pool spends) and wall seconds.

    python benchmarks/bench_eidnet.py                  # the small preset, flow input
    python benchmarks/bench_eidnet.py --cold           # from an empty data cache (a temporary MIELIB_DATA)
    python benchmarks/bench_eidnet.py --input frames --tasks composite   # does EIDNet learn from frames?

Projection: a task's Phase I (Phase II) cost is the timed unit's CPU seconds per training clip
times the training clips summed over its folds; the MacroNets run first, then Phase I with the
reference units, then Phase II, each stage spread over `--workers` processes (its CPU sum over
the workers, or its longest unit if longer); data loading and Fig. 4 (two t-SNE panels per
class) run in the notebook's own process. Records go to a temporary results folder.
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--input", default=None, help="frames or flow (default: the preset's)")
    parser.add_argument("--workers", type=int, default=2, help="the notebook's worker processes (default 2)")
    parser.add_argument("--cold", action="store_true", help="time the data loading from an empty data cache")
    parser.add_argument("--tasks", default="casme2,smic,composite",
                        help="tasks to time (comma-separated); the projection needs all three")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the timings and the projection here")
    args = parser.parse_args(argv)
    os.environ["MIELIB_RESULTS"] = tempfile.mkdtemp(prefix="mielib_bench_eidnet_")
    if args.cold:
        os.environ["MIELIB_DATA"] = tempfile.mkdtemp(prefix="mielib_bench_eidnet_data_")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from mielib import au, datasets, eidnet, experiments, paper, presets, protocols

    P, seed = presets.resolve(args.preset), args.seed
    size, input_ = P["train_size"], args.input or P["input"]
    load_size = max(size, P["flow_size"]) if input_ == "flow" else size
    settings = eidnet.Settings.from_preset(P)
    timed: dict[str, dict] = {}

    def clock(name, f):
        wall, cpu = time.perf_counter(), time.process_time()
        out = f()
        timed[name] = {"wall": round(time.perf_counter() - wall, 1), "cpu": round(time.process_time() - cpu, 1)}
        print(f"{name:28s} {timed[name]['cpu']:7.1f} s CPU {timed[name]['wall']:7.1f} s wall", flush=True)
        return out

    def prepare():
        # As notebook 11 does.
        def load(name, **kw):
            return paper.cap(datasets.load(name, "sim", None, seed=seed, size=load_size, **kw), P["clips_per_dataset"],
                             seed=seed)

        ckplus = load("ckplus", selection="labelled")
        macro = {"casme2": eidnet.in_classes(ckplus, eidnet.CASME2_CLASSES, "label", "ckplus-casme2"),
                 "megc3": eidnet.in_classes(ckplus, au.MEGC3, "label3", "ckplus-megc3")}
        spec = {"casme2": (eidnet.in_classes(load("casme2"), eidnet.CASME2_CLASSES, "label", "casme2-5"),
                           eidnet.CASME2_CLASSES, "label", "casme2", P["eidnet_table1_folds"]),
                "smic": (load("smic"), au.MEGC3, "label3", "megc3", P["eidnet_table1_folds"]),
                "composite": (load("composite"), au.MEGC3, "label3", "megc3", P["eidnet_table2_folds"])}
        folds = {n: protocols.split(c, "loso") if k is None else protocols.kfold(c.to_frame(), k, seed=seed, label=a)
                 for n, (c, _, a, _, k) in spec.items()}
        loaded = eidnet.load_frames({**{n: s[0] for n, s in spec.items()}, **{f"ckplus-{k}": v for k, v in macro.items()}},
                                    size, input=input_)
        return [eidnet.task(n, loaded[n], cl, a, folds[n], loaded[f"ckplus-{sp}"], input=input_, size=size,
                            load_size=load_size, source=c) for n, (c, cl, a, sp, _) in spec.items()]

    tasks = clock("data", prepare)
    chosen = args.tasks.split(",")
    tasks = [t for t in tasks if t.name in chosen]
    work = eidnet.Work({t.name: t for t in tasks}, settings, device="cpu")
    kw = dict(preset=P["name"], data_source="sim", seed=seed, settings=settings)
    stage = {"macro": [], "I": [], "II": []}
    for t in tasks:
        unit = eidnet.macro_unit_of(t, P["name"], "sim", seed, settings)
        if not unit.path.is_file():
            clock(f"MacroNet ({t.name})", lambda: experiments.run([unit], work, progress=False))
            stage["macro"].append(timed[f"MacroNet ({t.name})"]["cpu"])
        n_train = [len(f.train) for f in t.folds]
        for phase in eidnet.PHASES:
            unit = eidnet.units(t, phase, **kw)[0]
            rec = clock(f"{t.name} Phase {phase} fold 0", lambda: experiments.run([unit], work, progress=False)[0])
            y, pred = np.asarray(rec["test"]["y_true"]), np.asarray(rec["test"]["y_pred"])
            print(f"  UF1 {rec['metrics']['last']['uf1']:.2f} on {len(y)} test clips; "
                  f"{100 * np.mean(pred == np.bincount(y).argmax()):.0f}% answered as their most frequent class",
                  flush=True)
            per_clip = timed[f"{t.name} Phase {phase} fold 0"]["cpu"] / n_train[0]
            stage[phase] += [per_clip * n for n in n_train]
        ref = eidnet.reference_unit(t, P["name"], "sim", seed, P["image_size"])
        clock(f"references ({t.name})", lambda: experiments.run([ref], work, progress=False))
        stage["I"].append(timed[f"references ({t.name})"]["cpu"])
    n_panel = min(P["eidnet_tsne_samples"], 200) * 2
    x = np.random.default_rng(0).normal(size=(n_panel, eidnet.EMBEDDING))
    clock(f"t-SNE, {n_panel} points", lambda: eidnet.tsne(x, seed=seed))

    if len(tasks) < 3:
        return
    w = max(1, args.workers)
    walls = {k: max(sum(v) / w, max(v, default=0.0)) for k, v in stage.items()}
    serial = timed["data"]["cpu"] + 2 * len(au.MEGC3) * timed[f"t-SNE, {n_panel} points"]["cpu"]
    total = serial + sum(walls.values())
    units = {k: len(v) for k, v in stage.items()}
    print(f"\nprojected notebook 11 ({P['name']}, {input_}, {w} workers, CPU-bound): "
          f"data and Fig. 4 {serial / 60:.1f} min + MacroNets {walls['macro'] / 60:.1f} + Phase I and references "
          f"{walls['I'] / 60:.1f} ({units['I']} units) + Phase II {walls['II'] / 60:.1f} ({units['II']} units) "
          f"= {total / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps({"timed": timed, "stages_cpu": {k: sum(v) for k, v in stage.items()},
                                               "projected_minutes": round(total / 60, 1)}, indent=1))


if __name__ == "__main__":
    main()
