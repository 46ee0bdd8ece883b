"""The training loop: fit a classifier, score its test predictions after every epoch, and pick
the epoch to report (last, best-on-test as a labelled oracle, or validation-selected).

Used by `experiments.cross_validate`, hence by the results notebooks 04-09 (MiE-X Tables 1-3,
Figs. 5-7). Settings follow the MiE-X supplement: Adam, lr 1e-4, batch 32, 80 epochs on real
data and 30 on MiE-X (from the preset). The paper mentions no augmentation, so it is off by
default; nothing is ever augmented at test time.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mielib import metrics, runtime

SELECTIONS = ("last", "best_oracle", "val_selected")
METRICS = ("uf1", "uar", "accuracy")


# ---------------------------------------------------------------------------------------------
# Seeding and devices

@contextmanager
def seeded(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run a block with torch's RNGs seeded from `seed`, restoring the caller's RNGs afterwards.

    On CPU it also turns on `torch.use_deterministic_algorithms(True, warn_only=True)` for the
    block (and restores the previous setting), so a CPU run is repeatable bit for bit. Dropout
    and random initialisation inside the block draw from these RNGs.
    """
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        previous = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled())
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from several parts (base seed, repeat, fold, stage name).

    Independent of the order units run in, so parallel and serial runs draw the same numbers.
    """
    words = [int(p) % 2**63 if isinstance(p, (int, np.integer))
             else int.from_bytes(hashlib.sha256(str(p).encode("utf-8")).digest()[:8], "little") for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1)


# ---------------------------------------------------------------------------------------------
# Batches

def _split_batch(batch) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(model inputs, labels) of a batch: (x, y), (x1, x2, y) or ((x1, x2), y)."""
    if isinstance(batch, dict):
        if "label" not in batch or "inputs" not in batch:
            raise TypeError(f"a dict batch needs 'inputs' and 'label' keys, got {sorted(batch)}")
        xs, y = batch["inputs"], batch["label"]
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        xs, y = batch[:-1], batch[-1]
        if len(xs) == 1:
            xs = xs[0]
    else:
        raise TypeError("a dataset item must be (inputs..., label); got "
                        f"{type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}")
    if isinstance(xs, torch.Tensor):
        xs = (xs,)
    return tuple(xs), y


def _targets(batch, device: torch.device) -> dict[str, torch.Tensor]:
    """A dict batch's other training targets (every key but 'inputs' and 'label'), on `device`:
    what a model's own `criterion` reads besides the class (AU-GACN: the clip's AU labels)."""
    if not isinstance(batch, dict):
        return {}
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k not in ("inputs", "label")}


def _to(xs: tuple[torch.Tensor, ...], device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, ...]:
    xs = tuple(x.to(device, non_blocking=True) for x in xs)
    if channels_last:
        xs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in xs)
    return xs


def _flip(xs: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Light train-time augmentation: mirror each sample left-right with probability 1/2.

    The same decision applies to every input of a sample (onset and apex stay aligned).
    """
    n = xs[0].shape[0]
    mask = (torch.rand(n, generator=generator) < 0.5).to(xs[0].device, non_blocking=True)
    out = []
    for x in xs:
        m = mask.view(-1, *([1] * (x.dim() - 1)))
        out.append(torch.where(m, x.flip(-1), x))
    return tuple(out)


def sample_ids(dataset: Dataset) -> list[str]:
    """The ids of a dataset's samples: its `ids` attribute, the keys of its `clips` (views), else
    positions.

    Follows torch Subsets down to their base dataset.
    """
    if isinstance(dataset, Subset):
        base = sample_ids(dataset.dataset)
        return [base[int(i)] for i in dataset.indices]
    ids = getattr(dataset, "ids", None)
    if ids is None and isinstance(getattr(dataset, "clips", None), list):
        ids = [getattr(c, "key", i) for i, c in enumerate(dataset.clips)]  # views: clip keys
    if ids is None:
        return [str(i) for i in range(len(dataset))]
    ids = [str(i) for i in ids]
    if len(ids) != len(dataset):
        raise ValueError(f"{type(dataset).__name__}.ids has {len(ids)} entries but the dataset has {len(dataset)} samples")
    return ids


def loader_workers(device: torch.device, num_workers: int | None = None) -> int:
    """DataLoader worker processes for a training or prediction run on `device`.

    `num_workers` when given; else none on CPU (the cores are busy training, and CPU runs stay
    exactly as they were); on CUDA, MIELIB_LOADER_WORKERS when set, else 2: persistent workers
    prepare the next batches (decoding, resizing, normalising, collating) while the GPU runs the
    current step, and pinned memory lets the copy to the GPU overlap too
    (benchmarks/bench_loader.py measures the loader's share of the step time).
    """
    if num_workers is not None:
        return int(num_workers)
    if torch.device(device).type != "cuda":
        return 0
    text = os.environ.get("MIELIB_LOADER_WORKERS", "").strip()
    if not text:
        return 2
    if not text.isdigit():
        raise ValueError(f"MIELIB_LOADER_WORKERS must be a whole number of worker processes, got {text!r}")
    return int(text)


def use_channels_last(model: nn.Module, device: torch.device, channels_last: bool | None = None) -> bool:
    """Whether to train `model` in channels-last memory format: on CUDA (where cuDNN's fp16
    tensor-core convolutions prefer NHWC) for models whose convolutions are all 2D (ApexME,
    Branches; DTSCNN's 3D convolutions stay as they are), unless `channels_last` says otherwise.
    The layout changes no value, only how the tensors lie in memory."""
    if channels_last is None:
        channels_last = torch.device(device).type == "cuda"
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return bool(channels_last) and bool(convs) and all(isinstance(m, nn.Conv2d) for m in convs)


def _loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int,
            generator: torch.Generator | None = None) -> DataLoader:
    train = generator is not None
    # A final training batch of one sample breaks BatchNorm when features are 1x1; drop just it.
    drop_last = train and len(dataset) % batch_size == 1 and len(dataset) > 1
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=num_workers > 0)


# ---------------------------------------------------------------------------------------------
# Prediction

@torch.inference_mode()
def _predict(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool,
             channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    labels, probs = [], []
    for batch in loader:
        xs, y = _split_batch(batch)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(*_to(xs, device, channels_last))
        probs.append(torch.softmax(logits.float(), dim=1))
        labels.append(torch.as_tensor(y))
    # One device-to-host copy per evaluation, not one per batch.
    return torch.cat(labels).cpu().numpy().astype(np.int64), torch.cat(probs).cpu().numpy()


def predict(model: nn.Module, dataset: Dataset, *, batch_size: int = 32, device: str = "auto",
            amp: bool | None = None, num_workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, class probabilities) of `model` on `dataset`, in the dataset's order.

    Evaluation mode, no augmentation, mixed precision on CUDA unless `amp=False`. Loader
    workers as `loader_workers` (none on CPU).
    """
    dev = runtime.device(device) if isinstance(device, str) else torch.device(device)
    amp = dev.type == "cuda" if amp is None else bool(amp)
    model.to(dev)
    return _predict(model, _loader(dataset, batch_size, dev, loader_workers(dev, num_workers)), dev, amp)


# ---------------------------------------------------------------------------------------------
# History: what one training run records, and how an epoch is picked from it

@dataclass
class History:
    """Everything a training run records, epoch by epoch.

    `test_pred[e]` holds the test predictions after epoch e+1 (likewise `val_pred`); the class
    probabilities are kept for the last epoch only. Epochs in reports are 1-based.
    """

    n_classes: int
    train_loss: list[float] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    test_true: np.ndarray | None = None
    test_pred: list[np.ndarray] = field(default_factory=list)
    test_probs: np.ndarray | None = None
    val_ids: list[str] = field(default_factory=list)
    val_true: np.ndarray | None = None
    val_pred: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    amp: bool = False
    n_train: int = 0

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def select(self, *, criterion: str = "uf1", classes: str = "true") -> dict:
        """Test metrics of the last epoch, the best epoch (oracle) and the validation-selected one."""
        if self.test_true is None or not self.test_pred:
            raise ValueError("select: this run recorded no test predictions (fit was given no test set)")
        return select(self.test_true, self.test_pred, self.n_classes, val_true=self.val_true,
                      val_pred=self.val_pred or None, criterion=criterion, classes=classes)

    def to_record(self, class_names: Sequence[str] | None = None, *, criterion: str = "uf1",
                  classes: str = "true", digits: int = 6) -> dict:
        """A JSON-able dict: metrics, per-sample predictions at the last epoch, per-epoch history."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.n_classes)]
        if len(names) != self.n_classes:
            raise ValueError(f"{len(names)} class names given for a {self.n_classes}-class run")
        rec = {
            "classes": names, "epochs": self.epochs, "device": self.device, "amp": self.amp,
            "train_seconds": round(self.seconds, 3), "n_train": self.n_train,
            "history": {"train_loss": [round(v, digits) for v in self.train_loss],
                        "test_pred": [p.tolist() for p in self.test_pred],
                        "val_pred": [p.tolist() for p in self.val_pred] or None},
            "test": None, "val": None, "metrics": None,
        }
        if self.test_true is not None and self.test_pred:
            rec["test"] = {"ids": list(self.test_ids), "y_true": self.test_true.tolist(),
                           "y_pred": self.test_pred[-1].tolist(),
                           "probs": np.round(self.test_probs, digits).tolist() if self.test_probs is not None else None}
            rec["metrics"] = self.select(criterion=criterion, classes=classes)
        if self.val_true is not None:
            rec["val"] = {"ids": list(self.val_ids), "y_true": self.val_true.tolist()}
        return rec


def _scores(y_true, y_pred, n_classes: int, classes: str) -> dict:
    s = metrics.scores(y_true, y_pred, labels=range(n_classes), classes=classes)
    return {k: s[k] for k in METRICS}


def select(test_true, test_pred: Sequence, n_classes: int, *, val_true=None, val_pred: Sequence | None = None,
           criterion: str = "uf1", classes: str = "true") -> dict:
    """Pick epochs from a per-epoch history of predictions and score the test set there.

    - "last": the last epoch, the paper's default.
    - "best_oracle": each metric at the epoch where it is highest ON THE TEST SET (the paper's
      Table 2 "Best"). An oracle: it looks at the test labels, so it is optimistic; its
      "epoch" maps each metric to the epoch it came from.
    - "val_selected": all metrics at the epoch with the highest validation `criterion`
      (earliest on ties); None without validation predictions.

    Epochs are 1-based. `classes` is passed to `metrics.scores` ("true": MEGC convention).
    """
    if criterion not in METRICS:
        raise ValueError(f"unknown criterion {criterion!r}; use one of {', '.join(METRICS)}")
    if not len(test_pred):
        raise ValueError("select: no epochs in the history")
    per_epoch = [_scores(test_true, p, n_classes, classes) for p in test_pred]
    last = {**per_epoch[-1], "epoch": len(per_epoch)}
    best = {}
    for m in METRICS:
        # np.argmax picks the earliest epoch among ties.
        best[m] = per_epoch[int(np.argmax([s[m] for s in per_epoch]))][m]
    best["epoch"] = {m: int(np.argmax([s[m] for s in per_epoch])) + 1 for m in METRICS}
    out = {"last": last, "best_oracle": best, "val_selected": None}
    if val_pred is not None and len(val_pred):
        if len(val_pred) != len(test_pred):
            raise ValueError(f"select: {len(val_pred)} epochs of validation predictions but {len(test_pred)} of test")
        val = [_scores(val_true, p, n_classes, classes)[criterion] for p in val_pred]
        e = int(np.argmax(val))
        out["val_selected"] = {**per_epoch[e], "epoch": e + 1, "criterion": criterion, "val_score": val[e]}
    return out


# ---------------------------------------------------------------------------------------------
# The loop

def fit(model: nn.Module, train: Dataset, *, epochs: int, seed: int, test: Dataset | None = None,
        val: Dataset | None = None, batch_size: int = 32, lr: float = 1e-4, device: str = "auto",
        amp: bool | None = None, augment: bool = False, num_workers: int | None = None,
        channels_last: bool | None = None, progress: bool = True, desc: str = "train") -> History:
    """Train `model` in place with Adam and cross-entropy; return its History.

    A model with a `criterion(outputs, y, **targets)` method trains on that loss instead, with
    `outputs` what its forward returns in training mode and `targets` the other keys of a dict
    batch (AU-GACN's AU-ME loss reads the clip's AU labels); in evaluation mode its forward
    must return the class logits, as any model's.

    After every epoch the model predicts `test` (and `val`) once, in evaluation mode and without
    augmentation. Shuffling draws from a torch.Generator seeded by `seed`; dropout from torch's
    RNG, seeded from `seed` for the call and restored afterwards (see `seeded`). On CPU two calls
    with the same seed, data and initial weights give identical histories. On CUDA the loop uses
    mixed precision (float16 autocast + GradScaler) unless `amp=False`, channels-last memory
    format for 2D CNNs (`use_channels_last`) and, by default, 2 persistent DataLoader workers
    feeding pinned memory (`loader_workers`); on CPU, no workers and the default layout.

    One progress bar per call, showing `desc`, the epoch and the last epoch's mean loss.
    """
    from tqdm.auto import tqdm

    if epochs < 1:
        raise ValueError(f"fit: epochs must be at least 1, got {epochs}")
    if len(train) == 0:
        raise ValueError("fit: the training set is empty")
    dev = runtime.device(device) if isinstance(device, str) else torch.device(device)
    amp = dev.type == "cuda" if amp is None else bool(amp and dev.type == "cuda")
    n_classes = _n_classes(model)
    history = History(n_classes=n_classes, device=str(dev), amp=amp, n_train=len(train))
    workers = loader_workers(dev, num_workers)
    nhwc = use_channels_last(model, dev, channels_last)
    started = time.perf_counter()

    with seeded(seed, dev):
        shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
        flips = torch.Generator().manual_seed(derive_seed(seed, "augment"))
        train_loader = _loader(train, batch_size, dev, workers, shuffle)
        test_loader = _loader(test, batch_size, dev, workers) if test is not None else None
        val_loader = _loader(val, batch_size, dev, workers) if val is not None else None
        if test is not None:
            history.test_ids = sample_ids(test)
        if val is not None:
            history.val_ids = sample_ids(val)

        model.to(dev)
        if nhwc:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        loss_fn = getattr(model, "criterion", None) or (lambda out, y: nn.functional.cross_entropy(out, y))
        steps = len(train_loader)
        bar = tqdm(total=epochs * steps, desc=desc, unit="batch", disable=not progress, leave=False,
                   dynamic_ncols=True)
        try:
            for epoch in range(1, epochs + 1):
                # Shown from the epoch's first step on; the loss is the previous epoch's mean.
                last = f" loss {history.train_loss[-1]:.3f}" if history.train_loss else ""
                bar.set_postfix_str(f"epoch {epoch}/{epochs}{last}", refresh=False)
                model.train()
                # The loss is summed on the device: no host sync per step.
                total = torch.zeros((), device=dev)
                seen = 0
                for batch in train_loader:
                    xs, y = _split_batch(batch)
                    xs, y = _to(xs, dev, nhwc), y.to(dev, non_blocking=True)
                    targets = _targets(batch, dev)
                    if augment:
                        xs = _flip(xs, flips)
                    with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                        loss = loss_fn(model(*xs), y, **targets)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    total += loss.detach().float() * y.shape[0]
                    seen += y.shape[0]
                    bar.update(1)
                mean_loss = float(total) / max(seen, 1)
                if not np.isfinite(mean_loss):
                    raise FloatingPointError(f"{desc}: training loss became {mean_loss} at epoch {epoch}")
                history.train_loss.append(mean_loss)
                if test_loader is not None:
                    y_true, probs = _predict(model, test_loader, dev, amp, nhwc)
                    history.test_true = y_true
                    history.test_pred.append(probs.argmax(1).astype(np.int64))
                    if epoch == epochs:
                        history.test_probs = probs
                if val_loader is not None:
                    y_true, probs = _predict(model, val_loader, dev, amp, nhwc)
                    history.val_true = y_true
                    history.val_pred.append(probs.argmax(1).astype(np.int64))
            bar.set_postfix_str(f"epoch {epochs}/{epochs} loss {history.train_loss[-1]:.3f}")
        finally:
            bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    history.seconds = time.perf_counter() - started
    return history


def _n_classes(model: nn.Module) -> int:
    """The number of classes a model predicts: its `n_classes`, else its last linear layer's width."""
    n = getattr(model, "n_classes", None)
    if n is None:
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linear:
            raise TypeError(f"{type(model).__name__}: set `n_classes` on the model (no linear layer to read it from)")
        n = linear[-1].out_features
    return int(n)
