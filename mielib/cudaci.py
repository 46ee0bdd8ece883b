"""CUDA CI: `make ci-cuda` (and `.ci/run-cuda`) through `python -m mielib cuda-ci check|install|run`.

On a machine with an NVIDIA GPU it installs the lock into .venv-cuda with PyPI's CUDA build of
torch, runs the test suite with the CUDA tests required, and runs every notebook in the smoke
preset on the GPU, checking from the records they write that training ran there. Without a GPU it
stops at once with one paragraph saying why. No notebook imports this module.

The top of this file imports the standard library only: `check` and `install` run under the
system Python, before any environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The exit status when there is no usable GPU: scripts can tell it from a failed test (1).
NO_GPU = 3
#: What `run` hands pytest: every test but the notebooks' (step 3 runs them, checking the GPU
#: was used) and the browser's (JupyterLab in Chromium: no GPU work; the CPU CI runs it).
PYTEST_MARKERS = "not notebook and not browser"
#: pip variables that point an install at other wheels (a CPU machine's local wheel folder or
#: index would hand back the CPU build of the pinned torch): `install` drops them by default.
PIP_SOURCES = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT")


# ---------------------------------------------------------------------------------------------
# Is there a GPU?

def nvidia_smi_problem(run=subprocess.run) -> str | None:
    """None when `nvidia-smi -L` lists a GPU; else what is wrong, in a few words."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "nvidia-smi was not found on PATH (no NVIDIA driver installed)"
    try:
        done = run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi could not run ({exc})"
    gpus = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
    if done.returncode != 0 or not gpus:
        said = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()[0]
        return f"`nvidia-smi -L` listed no GPU (exit {done.returncode}: {said})"
    return None


def torch_problem() -> str | None:
    """None when this Python's torch is a CUDA build that sees a GPU; else what is wrong."""
    try:
        import torch
    except ImportError:
        return f"{sys.executable} has no torch installed"
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} in {sys.executable} is a CPU-only build (torch.version.cuda is None); "
                "it was installed from a CPU wheel")
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU: "
                "torch.cuda.is_available() is False (is the driver older than this CUDA build?)")
    return None


def refusal(problem: str, *, torch_checked: bool = False) -> str:
    """The one paragraph printed when there is no usable GPU."""
    checked = "whether `nvidia-smi -L` lists a GPU" + (
        f" and whether torch in {sys.executable} sees it (torch.cuda.is_available())" if torch_checked else "")
    return (f"make ci-cuda: stopped, there is no usable NVIDIA GPU here: {problem}. Checked: {checked}. "
            "This target needs a machine with an NVIDIA GPU and its driver: it installs PyPI's CUDA build of "
            "torch into .venv-cuda, requires the CUDA tests to pass and runs every notebook on the GPU. "
            "On a machine without one, `make test` runs the CPU test suite.")


def check(*, with_torch: bool = False) -> str | None:
    """The refusal paragraph when there is no usable GPU, else None."""
    problem = nvidia_smi_problem()
    if problem is None and with_torch:
        problem = torch_problem()
    return None if problem is None else refusal(problem, torch_checked=with_torch)


# ---------------------------------------------------------------------------------------------
# The CUDA environment

def pip_environment(env: dict | None = None, *, keep_config: bool = False) -> dict:
    """The environment for the CUDA venv's pip: without pip's config files and PIP_* wheel
    sources (unless `keep_config`), so pip's default index serves the pinned torch, whose
    Linux x86-64 wheel there is the CUDA build."""
    env = dict(os.environ if env is None else env)
    if not keep_config:
        env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no config file at all
        for name in PIP_SOURCES:
            env.pop(name, None)
    return env


def _stamp(lock: Path) -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", lock):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def install(venv: Path, lock: Path, *, index_url: str | None = None, keep_config: bool = False) -> int:
    """Create `venv` and install the lock with a CUDA build of torch; 0 when torch is one."""
    venv, lock = Path(venv), Path(lock)
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if python.exists() and stamp.is_file() and stamp.read_text().strip() == _stamp(lock):
        print(f"cuda-ci: {venv} is up to date with {lock.name} and pyproject.toml", flush=True)
    else:
        env = pip_environment(keep_config=keep_config)
        source = ["--index-url", index_url] if index_url else []
        where = index_url or ("pip's configuration" if keep_config else "pip's default index (local pip config ignored)")
        print(f"cuda-ci: installing {lock.name} into {venv} from {where}", flush=True)
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "--quiet", *source, "-c", str(lock), "--upgrade", "pip"],
                 [str(python), "-m", "pip", "install", "--quiet", *source, "-c", str(lock), "-e", ".[test]"]]
        for cmd in steps:
            if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
                print(f"cuda-ci: failed: {' '.join(cmd)}", file=sys.stderr)
                return 1
        stamp.write_text(_stamp(lock) + "\n")
    probe = subprocess.run([str(python), "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                           capture_output=True, text=True)
    version, _, cuda = probe.stdout.strip().partition(" ")
    if probe.returncode != 0 or cuda in ("", "None"):
        stamp.unlink(missing_ok=True)
        print(f"cuda-ci: {venv} got torch {version or '?'} without CUDA (torch.version.cuda is {cuda or '?'}): pip "
              "took a CPU wheel. Give the index to install from with `make ci-cuda CUDA_INDEX_URL=...`, or remove the "
              "local wheel source from pip's configuration.", file=sys.stderr)
        return 1
    print(f"cuda-ci: torch {version}, CUDA {cuda}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Did the notebooks train on the GPU?

def gpu_evidence(results: Path) -> tuple[str, list[str]]:
    """What a notebook's results folder says about where it trained: (a summary, problems).

    Every experiment record (`experiments.FORMAT`) must name a CUDA device with mixed precision
    (`train.History`'s `device` and `amp`); every GANimation checkpoint a CUDA device."""
    results = Path(results)
    records = [p for p in results.rglob("*.json") if not p.name.startswith(".")] if results.is_dir() else []
    checkpoints = sorted(results.rglob("ganimation-*.pt")) if results.is_dir() else []
    problems, devices, n_records = [], set(), 0
    for path in sorted(records):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not str(rec.get("format", "")).startswith("mielib.result/") or "device" not in rec:
            continue
        n_records += 1
        devices.add(str(rec["device"]))
        if not str(rec["device"]).startswith("cuda") or rec.get("amp") is not True:
            problems.append(f"{path.relative_to(results)}: trained on {rec['device']}, amp {rec.get('amp')}")
    for path in checkpoints:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        devices.add(str(state.get("device")))
        if not str(state.get("device")).startswith("cuda"):
            problems.append(f"{path.relative_to(results)}: GANimation trained on {state.get('device')}")
    if not n_records and not checkpoints:
        return "trains nothing (no GPU work to check)", problems
    parts = [f"{n_records} training record(s)"] * bool(n_records) + [f"{len(checkpoints)} GANimation checkpoint(s)"] * bool(checkpoints)
    return f"{' and '.join(parts)} on {', '.join(sorted(devices))}", problems


def run_notebooks(out: Path, only: set[str] | None = None) -> list[dict]:
    """Every notebook (or those numbered in `only`) in the smoke preset with MIELIB_DEVICE=cuda,
    each with its own results folder under `out`; one summary line each, printed as it ends."""
    from mielib import notebooks

    rows = []
    books = [p for p in notebooks.available() if only is None or p.name[:2] in only]
    os.environ["MIELIB_DEVICE"] = "cuda"  # the kernels and their worker processes inherit it
    for path in books:
        results = out / "results" / path.stem
        os.environ["MIELIB_RESULTS"] = str(results)
        start = time.perf_counter()
        error = None
        try:
            notebooks.run(path, preset="smoke", out_dir=out / "notebooks", figures=out / "figures", progress=False)
        except Exception as exc:  # papermill's error names the failing cell
            error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        seconds = time.perf_counter() - start
        evidence, problems = gpu_evidence(results)
        ok = error is None and not problems
        line = (f"{path.stem:<26} {seconds:7.1f} s  {'ok  ' if ok else 'FAIL'}  "
                + (f"failed: {error}" if error else evidence))
        print(line, flush=True)
        for problem in problems:
            print(f"    not on the GPU: {problem}", flush=True)
        rows.append({"notebook": path.stem, "seconds": round(seconds, 1), "ok": ok, "error": error,
                     "evidence": evidence, "problems": problems})
    return rows


def run(out: Path, *, tests: bool = True, only: set[str] | None = None) -> int:
    """Step 2 of 2, inside the CUDA venv: the tests with CUDA required, then the notebooks."""
    message = check(with_torch=True)
    if message:
        print(message, file=sys.stderr)
        return NO_GPU
    import torch

    started = time.perf_counter()
    gpu = torch.cuda.get_device_name(0)
    print(f"cuda-ci: {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    test_status, test_seconds = None, 0.0
    if tests:
        print(f"cuda-ci: pytest -m '{PYTEST_MARKERS}' with MIELIB_REQUIRE_CUDA=1", flush=True)
        t0 = time.perf_counter()
        env = {**os.environ, "MIELIB_REQUIRE_CUDA": "1", "MIELIB_RESULTS": str(out / "test-results")}
        test_status = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", PYTEST_MARKERS], cwd=ROOT,
                                     env=env).returncode
        test_seconds = time.perf_counter() - t0
    print(f"cuda-ci: notebooks in the smoke preset on {gpu} (MIELIB_DEVICE=cuda)", flush=True)
    t0 = time.perf_counter()
    rows = run_notebooks(out, only)
    nb_seconds = time.perf_counter() - t0
    failed = [r["notebook"] for r in rows if not r["ok"]]
    total = time.perf_counter() - started
    summary = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "tests_status": test_status,
               "tests_seconds": round(test_seconds, 1), "notebooks_seconds": round(nb_seconds, 1),
               "seconds": round(total, 1), "notebooks": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    passed = test_status in (None, 0) and not failed
    print(f"cuda-ci: {'passed' if passed else 'FAILED'} in {total:.0f} s on {gpu} (tests {test_seconds:.0f} s"
          + ("" if test_status in (None, 0) else f", pytest exit {test_status}") + f"; notebooks {nb_seconds:.0f} s"
          + (f", failed: {', '.join(failed)}" if failed else "") + f"); details in {out / 'summary.json'}", flush=True)
    return 0 if passed else 1


# ---------------------------------------------------------------------------------------------
# Command line: python -m mielib cuda-ci check|install|run

def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mielib cuda-ci",
        description="The CUDA CI behind `make ci-cuda`: check for an NVIDIA GPU, install .venv-cuda with a CUDA "
                    f"build of torch, then run the tests and the notebooks on the GPU. Exit {NO_GPU} (with a "
                    "message) where there is no usable GPU, 1 when something failed.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="stop unless `nvidia-smi -L` lists a GPU (standard library only)",
                   description="Check that `nvidia-smi -L` lists an NVIDIA GPU; without one print why and exit "
                               f"{NO_GPU}. Needs only the standard library, so the system Python runs it.")
    ins = sub.add_parser("install", help="create the CUDA venv from the lock, with PyPI's CUDA build of torch",
                         description="Create a venv and install the lock (pip install -c LOCK -e .[test]) from pip's "
                                     "default index, ignoring pip's config files and PIP_* wheel sources, so a "
                                     "machine's local CPU wheels are not used; then check torch is a CUDA build.")
    ins.add_argument("--venv", default=".venv-cuda", help="the venv to create or update (default .venv-cuda)")
    ins.add_argument("--lock", default="requirements/lock.txt", help="the lock file (default requirements/lock.txt)")
    ins.add_argument("--index-url", default=None, help="install from this index instead of pip's default")
    ins.add_argument("--keep-pip-config", action="store_true",
                     help="keep pip's configuration and PIP_* variables (your own index or wheel folder)")
    run_ = sub.add_parser("run", help="inside the CUDA venv: tests with CUDA required, then every notebook on the GPU",
                          description="Check torch sees the GPU, run pytest with MIELIB_REQUIRE_CUDA=1 (CUDA tests "
                                      "fail instead of skipping), then every notebook in the smoke preset with "
                                      "MIELIB_DEVICE=cuda, checking each training record names a CUDA device with "
                                      "mixed precision; one line per notebook with its wall time.")
    run_.add_argument("--out", default=str(ROOT / "build" / "ci-cuda"),
                      help="folder for executed notebooks, figures, results and summary.json (default build/ci-cuda)")
    run_.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 03,04 (default: all)")
    run_.add_argument("--skip-tests", action="store_true", help="run the notebooks only")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.action == "check":
        message = check()
        if message:
            print(message, file=sys.stderr)
            return NO_GPU
        print("cuda-ci: " + subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
        return 0
    if args.action == "install":
        message = check()
        if message:
            print(message, file=sys.stderr)
            return NO_GPU
        return install(Path(args.venv), Path(args.lock), index_url=args.index_url, keep_config=args.keep_pip_config)
    only = {w.strip().zfill(2) for w in args.only.split(",") if w.strip()} if args.only else None
    return run(Path(args.out), tests=not args.skip_tests, only=only)
