"""experiments.executor: submitit jobs (on submitit's local cluster: a real engine, no Slurm
needed) give the records a local run gives, a resubmission recomputes only what is missing, and
mistakes in the kind or the options are named."""

import concurrent.futures as cf
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import mielib
from mielib import cluster, experiments

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def jobs(tmp_path, monkeypatch):
    """Where submitit keeps its job files. A job is a fresh Python: PYTHONPATH makes it import this
    checkout's mielib (not another installed copy) and this folder's test modules."""
    root = Path(mielib.__file__).resolve().parent.parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "submitit"


def engine(folder, workers=2, **options):
    return experiments.executor("submitit", workers=workers, folder=folder,
                                slurm={"cluster": "local", "timeout_min": 5, **options})


def stable(value):
    """A record without what differs between two computations of it: when, how long, and on how
    many torch threads (a job gets its own share of the cores)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items()
                if k not in ("created", "seconds", "train_seconds", "torch_threads")}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def cube(unit):
    return {"value": unit.config["x"] ** 3 + unit.fold}


@dataclass
class FailOn:
    fold: int

    def __call__(self, unit):
        if unit.fold == self.fold:
            raise RuntimeError("simulated crash")
        return cube(unit)


def units(n=3):
    return [experiments.Unit("demo", {"x": 2, "preset": "smoke", "data_source": "sim", "seed": 0}, fold=f)
            for f in range(n)]


def test_a_grid_on_submitit_gives_the_local_records(jobs, tmp_path, monkeypatch):
    from test_experiments import CV, Net, Provider, folds

    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "local"))
    local = experiments.cross_validate("cv", folds(), Provider(), Net, repeats=1, **CV)
    monkeypatch.setenv("MIELIB_RESULTS", str(tmp_path / "cluster"))
    ex = engine(jobs)
    try:
        remote = experiments.cross_validate("cv", folds(), Provider(), Net, repeats=1, executor=ex, **CV)
    finally:
        ex.shutdown()
    assert len(remote) == 2 and [stable(r) for r in remote] == [stable(r) for r in local]
    assert len(list((tmp_path / "cluster" / "cv").glob("*.json"))) == 2  # written by the jobs themselves
    assert not list(jobs.glob("*.pkl"))  # a successful job's pickles are removed, its logs kept
    assert len(list(jobs.glob("*_log.out"))) == 2


def test_a_resubmission_recomputes_only_the_missing_unit(jobs):
    us = units()
    with engine(jobs) as ex:
        first = experiments.run(us, cube, executor=ex, progress=False)
    assert [r["value"] for r in first] == [8, 9, 10]
    us[1].path.unlink()
    kept = {u.path: u.path.stat().st_mtime_ns for u in (us[0], us[2])}
    logs = set(jobs.glob("*_log.out"))
    with engine(jobs) as ex:
        again = experiments.run(us, cube, executor=ex, progress=False)
    assert [stable(r) for r in again] == [stable(r) for r in first]
    assert len(set(jobs.glob("*_log.out")) - logs) == 1  # one job, for the deleted unit
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def test_a_failing_unit_reaches_the_caller_with_its_name(jobs):
    us = units(2)
    with engine(jobs) as ex, pytest.raises(Exception, match="simulated crash") as info:
        experiments.run(us, FailOn(1), executor=ex, progress=False)
    notes = getattr(info.value, "__notes__", [])
    assert any(str(us[1]) in n and "re-run to resume" in n for n in notes)
    assert us[0].path.is_file() and not us[1].path.exists()


def test_shutdown_cancels_the_jobs_still_waiting(jobs):
    ex = engine(jobs, workers=1)  # one job at a time: the others wait in the executor's queue
    futures = [ex.submit(time.sleep, 0.5) for _ in range(3)]
    deadline = time.monotonic() + 30
    while not futures[0].running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert futures[0].running()
    ex.shutdown(wait=True, cancel_futures=True)
    assert futures[0].result() is None  # a started job runs to its end, as in a process pool
    assert futures[1].cancelled() and futures[2].cancelled()
    assert len(list(jobs.glob("*_log.out"))) == 1
    list(cf.as_completed(futures, timeout=5))  # cancelled futures are reported, nobody waits forever
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(time.sleep, 0)


def test_options_are_mapped_and_checked(tmp_path):
    assert cluster._parameters({"partition": "gpu", "gpus_per_node": 1, "slurm_qos": "high", "timeout_min": 240}) == {
        "slurm_partition": "gpu", "gpus_per_node": 1, "slurm_qos": "high", "timeout_min": 240}
    # Slurm's own options are accepted (and ignored) off Slurm, so one dict serves a laptop too.
    ex = engine(tmp_path, partition="gpu", cpus_per_task=8, mem_gb=32)
    assert ex.cluster == "local" and ex.max_running == 2
    ex.shutdown()
    with pytest.raises(ValueError, match="'partitoin'.*allowed: cluster, timeout_min.*partition"):
        engine(tmp_path, partitoin="gpu")
    with pytest.raises(ValueError, match="timeout_min"):
        engine(tmp_path, timeout_min="four hours")
    with pytest.raises(ValueError, match="unknown submitit cluster 'kubernetes'"):
        experiments.executor("submitit", folder=tmp_path, slurm={"cluster": "kubernetes"})


def test_unknown_kind_and_missing_submitit_are_explained(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown executor kind 'slurm'.*'local'.*'submitit'"):
        experiments.executor("slurm")
    with pytest.warns(UserWarning, match="ignores the slurm options"):
        experiments.executor("local", workers=1, slurm={"partition": "gpu"}).shutdown()
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install submitit"):
        experiments.executor("submitit", folder=tmp_path)


def test_a_job_refuses_another_copy_of_mielib():
    with pytest.raises(RuntimeError, match="imported mielib from .* uses /elsewhere/mielib"):
        cluster._in_job(cube, "/elsewhere/mielib", None, units(1)[0])
    assert cluster._in_job(cube, str(Path(mielib.__file__).resolve().parent), None, units(1)[0]) == {"value": 8}


class QueuedJob:
    """A stand-in for a Slurm job: pending until the test starts it, then done with 5."""

    def __init__(self, folder, n):
        self.job_id, self.state, self.cancelled, self.finished = str(n), "PENDING", False, False
        self.paths = type("Paths", (), {"submitted_pickle": folder / f"{n}.pkl", "result_pickle": folder / f"{n}_r.pkl"})

    def done(self):
        return self.finished or self.cancelled

    def result(self):
        return 5

    def cancel(self, check=True):
        self.cancelled = True


class Queue:
    cluster, folder = "slurm", "."

    def __init__(self, folder):
        self.jobs, self.tmp = [], folder

    def submit(self, fn, *args, **kwargs):
        self.jobs.append(QueuedJob(self.tmp, len(self.jobs)))
        return self.jobs[-1]


def until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_future_cancels_its_job_while_slurm_has_not_started_it(tmp_path):
    queue = Queue(tmp_path)
    ex = cluster.SubmititExecutor(queue, poll_s=0.01)
    running, waiting = ex.submit(cube, None), ex.submit(cube, None)
    assert until(lambda: len(queue.jobs) == 2)
    queue.jobs[0].state = "RUNNING"
    assert until(running.running)
    assert not running.cancel()  # started: it runs to its end
    assert waiting.cancel() and until(lambda: queue.jobs[1].cancelled)  # still queued: scancel
    queue.jobs[0].finished = True
    assert running.result(timeout=10) == 5
    ex.shutdown()
    assert not queue.jobs[0].cancelled
