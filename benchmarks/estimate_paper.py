"""The `paper` preset's training cost for notebook 04 (MiE-X Table 1), counted, not run: sample
passes (training samples x epochs, plus one test pass per epoch) per model, from the real set
sizes, the folds' exclusions and the preset's epochs; then hours at a samples/s you measured.

    python benchmarks/estimate_paper.py                          # counts only
    python benchmarks/estimate_paper.py --rate apexme=900 --rate branches=450   # hours at these samples/s

Branches costs about twice ApexME per sample (two ResNet-18s). The rates are training samples
per second at 128 px on your machine (benchmarks/bench_gpu.py measures them on a GPU and prints these hours).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def table1_passes(preset: str = "paper") -> tuple[float, str]:
    """Sample passes per model for notebook 04 at `preset`, and a line saying what they count."""
    from mielib import datasets, paper, presets, protocols

    P = presets.resolve(preset)
    load = lambda name, **kw: paper.megc3(datasets.load(name, "sim", None, seed=0, size=32, **kw))
    comp = load("composite")
    sets = {"ckplus": load("ckplus", selection="labelled"), "smic": load("smic"), "casme": load("casme"),
            "samm": load("samm"), "mmew": load("mmew", part="micro", selection="miex")}
    folds = protocols.split(comp, "kfold3", seed=0)
    repeats, e_real, e_miex = P["table1_repeats"], P["table1_epochs_real"], P["table1_epochs_miex"]
    n_miex = 9 * P["table1_miex_identities"]
    passes = 0
    for f in folds:
        train, test = len(f.train), len(f.test)
        ck = len(protocols.exclude_subjects(sets["ckplus"].to_frame(), f.test_subjects))
        per_epoch = {1: train, 2: train + ck, 8: train, 9: train + ck}
        rows = sum(e_real * (n + test / 3) for n in per_epoch.values())  # a test pass costs about 1/3 of a training pass
        for name in ("smic", "casme", "samm", "mmew"):
            pre = len(protocols.exclude_subjects(sets[name].to_frame(), f.test_subjects))
            rows += e_real * pre + e_real * (train + test / 3)
        rows += e_miex * (n_miex + test / 3)  # one MiE-X pre-training, shared by rows 7-9 (row 7 tests each epoch)
        passes += rows * repeats
    return passes, (f"preset {P['name']}: Table 1 per model: {passes / 1e6:.2f} M sample passes "
                    f"({len(folds)} folds x {repeats} repeats, {e_real} epochs on real data, {e_miex} on "
                    f"{n_miex:,} MiE-X samples)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--rate", action="append", default=[], metavar="MODEL=SAMPLES_PER_S",
                        help="measured training throughput per model, e.g. apexme=900")
    args = parser.parse_args(argv)
    os.environ.setdefault("MIELIB_DATA", tempfile.mkdtemp(prefix="mielib_estimate_"))
    passes, text = table1_passes(args.preset)
    print(text)
    for item in args.rate:
        model, rate = item.split("=")
        print(f"  {model}: {passes / float(rate) / 3600:.1f} h at {float(rate):g} samples/s")


if __name__ == "__main__":
    main()
