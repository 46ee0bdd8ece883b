"""Units of work as submitit jobs (Slurm, or processes on this machine) behind the
`concurrent.futures.Executor` that `experiments.run` takes.

Built by `experiments.executor("submitit", ...)`, which the results notebooks pass to
`cross_validate`. Each job writes its unit's record itself, so a notebook that stops waiting
loses nothing: a re-run finds the records of the jobs that finished meanwhile.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import mielib

#: Where jobs may run: "slurm", or submitit's "local" (one process per job on this machine)
#: and "debug" (in this process, one at a time). None: Slurm when the machine has it, else local.
CLUSTERS = ("slurm", "local", "debug")
#: Options shared by every cluster (submitit translates them: timeout_min -> sbatch --time, ...).
GENERIC = ("timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node", "nodes", "tasks_per_node", "name",
           "stderr_to_stdout")
#: submitit's own defaults (Slurm 5 min, local 2 min) would kill almost any training unit.
TIMEOUT_MIN = 240
#: States in which a Slurm job has started: from then on its future cannot be cancelled.
STARTED = ("RUNNING", "COMPLETING", "COMPLETED", "FINISHED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError("running units with submitit needs the submitit package: pip install submitit "
                          "(or `make setup`, which installs the lock)") from None
    return submitit


def option_names() -> list[str]:
    """The option names `executor` accepts: the generic ones, then Slurm's own (`partition`, `qos`,
    `account`, ...; also written `slurm_partition`), then the local cluster's (`local_setup`)."""
    submitit = _submitit()
    slurm = sorted(submitit.SlurmExecutor._valid_parameters() - set(GENERIC))
    local = sorted(submitit.LocalExecutor._valid_parameters())
    return ["cluster", *GENERIC, *slurm, *(f"slurm_{k}" for k in slurm), *(f"local_{k}" for k in local)]


def _parameters(opts: Mapping[str, Any]) -> dict[str, Any]:
    """`opts` as AutoExecutor.update_parameters names them; ValueError names an unknown option."""
    submitit = _submitit()
    slurm = submitit.SlurmExecutor._valid_parameters()
    local = submitit.LocalExecutor._valid_parameters()
    out, unknown = {}, []
    for name, value in opts.items():
        if name in GENERIC:
            out[name] = value
        elif name in slurm:
            out[f"slurm_{name}"] = value  # a Slurm-only option; the local cluster ignores it
        elif (name.startswith("slurm_") and name[6:] in slurm) or (name.startswith("local_") and name[6:] in local):
            out[name] = value
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown submitit option(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(option_names())}")
    return out


def executor(*, workers: int = 2, folder: str | os.PathLike, options: Mapping[str, Any] | None = None,
             poll_s: float = 0.5) -> "SubmititExecutor":
    """A submitit engine as a `concurrent.futures.Executor`: one job per submitted call.

    - `options`: `cluster` ("slurm", "local", "debug"; default: Slurm when `srun` exists, else
      local), the generic sizes (`timeout_min`, default 240; `mem_gb`, `cpus_per_task`,
      `gpus_per_node`, ...) and Slurm's own options (`partition`, `qos`, `account`, `constraint`,
      ...). Slurm-only options are ignored off Slurm, so one dict serves both.
    - `workers`: how many jobs run at once on the local and debug clusters (each with
      cores/workers torch threads); on Slurm the scheduler decides, and each job uses
      `cpus_per_task` threads when given.
    - On the local cluster submitit shows a job only the GPUs `gpus_per_node` asks for (none
      unless given).
    - Logs and job files go to `folder` (a successful job's pickles are removed once read).
    """
    submitit = _submitit()
    opts = dict(options or {})
    cluster = opts.pop("cluster", None)
    if cluster is not None and cluster not in CLUSTERS:
        raise ValueError(f"unknown submitit cluster {cluster!r}; use one of {', '.join(CLUSTERS)} "
                         "(or leave it out: Slurm when the machine has it, else local)")
    params = _parameters(opts)
    params.setdefault("timeout_min", TIMEOUT_MIN)
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    try:
        engine = submitit.AutoExecutor(folder=Path(folder), cluster=cluster)
    except RuntimeError as exc:  # cluster="slurm" where there is no srun
        raise RuntimeError(f"submitit cannot use the {cluster or 'detected'} cluster here ({exc}); "
                           "pass cluster 'local' to run the jobs on this machine") from None
    try:
        engine.update_parameters(**params)
    except (AssertionError, NameError, ValueError) as exc:  # submitit's own checks: types, GPUs
        raise ValueError(f"submitit refused the options {params}: {exc}") from None
    if engine.cluster == "slurm":
        limit, threads = None, params.get("cpus_per_task")
    elif engine.cluster == "local":
        limit, threads = workers, max(1, (os.cpu_count() or 1) // workers)
    else:  # debug: jobs run in this process, whose torch threads are the caller's business
        limit, threads = 1, None
    return SubmititExecutor(engine, max_running=limit, threads=threads, poll_s=poll_s)


def _in_job(fn: Callable, origin: str, threads: int | None, *args, **kwargs):
    """What a job runs: `fn(*args, **kwargs)`, once the job is known to use the caller's mielib."""
    here = str(Path(mielib.__file__).resolve().parent)
    if here != origin:
        # Its records would carry another copy's code under the same cache keys.
        raise RuntimeError(f"this job imported mielib from {here}, but the session that submitted it uses {origin}; "
                           "make the job's Python import the same copy (put its parent folder on PYTHONPATH, or "
                           "`pip install -e` it in the job's environment)")
    if threads:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
        else:
            os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when the work imports it
    return fn(*args, **kwargs)


class SubmititExecutor(cf.Executor):
    """`submit` returns a `concurrent.futures.Future` whose outcome is the submitit job's.

    One background thread submits the jobs (at most `max_running` at a time when set) and polls
    them. A future can be cancelled while its job waits (in our queue or Slurm's): the job is
    then cancelled too; a running job runs to its end, as in a process pool.
    """

    def __init__(self, engine, *, max_running: int | None = None, threads: int | None = None,
                 poll_s: float = 0.5):
        self.engine = engine
        self.max_running = max_running
        self.threads = threads
        self.poll_s = poll_s
        self._origin = str(Path(mielib.__file__).resolve().parent)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: collections.deque = collections.deque()  # (future, fn, args, kwargs) not yet submitted
        self._jobs: dict[cf.Future, Any] = {}  # future -> its submitit job
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def cluster(self) -> str:
        return self.engine.cluster

    @property
    def folder(self) -> Path:
        return Path(self.engine.folder)

    def __repr__(self) -> str:
        return f"SubmititExecutor(cluster={self.cluster!r}, folder='{self.folder}', max_running={self.max_running})"

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a submitit executor after shutdown()")
            self._queue.append((fut, fn, args, kwargs))
            if self._thread is None:
                # A daemon: a session that exits does not wait for cluster jobs, which store
                # their records themselves.
                self._thread = threading.Thread(target=self._loop, name="mielib-submitit", daemon=True)
                self._thread.start()
        self._wake.set()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                for fut, *_ in self._queue:
                    fut.cancel()
                for fut in self._jobs:
                    fut.cancel()  # refused by the futures of jobs that have started
            thread = self._thread
        self._wake.set()
        if wait and thread is not None:
            thread.join()

    # -- the background thread

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            with self._lock:
                self._closed = True
                futures = [f for f, *_ in self._queue] + list(self._jobs)
                self._queue.clear()
                self._jobs.clear()
            for fut in futures:
                if fut.running() or fut.set_running_or_notify_cancel():
                    try:
                        fut.set_exception(RuntimeError(f"the submitit polling thread failed: {exc!r}"))
                    except cf.InvalidStateError:
                        pass  # finished meanwhile
            raise

    def _serve(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                tracked = list(self._jobs.items())
            for fut, job in tracked:
                if self._poll(fut, job):
                    with self._lock:
                        del self._jobs[fut]
            self._start_queued()
            with self._lock:
                idle = not self._jobs and not self._queue
                if idle and self._closed:
                    return
            self._wake.wait(None if idle else self.poll_s)

    def _start_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queue or (self.max_running and len(self._jobs) >= self.max_running):
                    return
                fut, fn, args, kwargs = self._queue.popleft()
            if fut.cancelled():
                fut.set_running_or_notify_cancel()  # wakes as_completed/wait on it
                continue
            try:
                job = self.engine.submit(_in_job, fn, self._origin, self.threads, *args, **kwargs)
            except Exception as exc:  # pickling, sbatch refusing the options, ...
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(exc)
                continue
            with self._lock:
                self._jobs[fut] = job

    def _poll(self, fut: cf.Future, job) -> bool:
        """Pass a finished job's outcome to its future; True when the job needs no more polling."""
        if fut.cancelled():
            _cancel(job)
            fut.set_running_or_notify_cancel()
            return True
        try:
            done = job.done()  # the debug cluster runs the job right here
        except Exception as exc:
            if fut.running() or fut.set_running_or_notify_cancel():
                fut.set_exception(exc)
            return True
        if not done:
            if not fut.running() and _started(job) and not fut.set_running_or_notify_cancel():
                _cancel(job)  # cancelled between the two checks
                return True
            return False
        if not (fut.running() or fut.set_running_or_notify_cancel()):
            return True  # cancelled as it finished; its record is stored all the same
        try:
            result = job.result()
        except Exception as exc:
            fut.set_exception(exc)
            return True
        fut.set_result(result)
        for path in (job.paths.submitted_pickle, job.paths.result_pickle):
            path.unlink(missing_ok=True)  # the record holds the result; keep only the logs
        return True


def _started(job) -> bool:
    try:
        return str(job.state).upper() in STARTED
    except Exception:  # state comes from sacct, which may be briefly unavailable
        return False


def _cancel(job) -> None:
    try:
        job.cancel(check=False)
    except Exception as exc:  # scancel missing or failing: say so, the job may still run
        warnings.warn(f"could not cancel submitit job {job.job_id}: {exc}", stacklevel=2)
