"""CUDA: the same work agrees on CPU and GPU, mixed precision trains, GANimation's gradient
penalty survives AMP, CUDA weights load on a CPU; and, on any machine, `make ci-cuda` refuses
clearly without a GPU and the data-loading settings for a GPU are what the trainer uses.

Tests marked `cuda` skip without a GPU and fail without one under MIELIB_REQUIRE_CUDA=1
(tests/conftest.py; `make ci-cuda` sets it).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from mielib import cudaci, ganimation as gn, models, runtime, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()


def _data(n: int, size: int, inputs: int = 1, seed: int = 0, channels: int = 3) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, channels, size, size, generator=g) for _ in range(inputs)]
    return TensorDataset(*xs, torch.arange(n) % 3)


def _fake_nvidia_smi(folder: Path, output: str, status: int) -> str:
    """A PATH with a stand-in `nvidia-smi` in front: `-L` prints `output` and exits `status`."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    exe.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


# --- without a GPU: the refusal -----------------------------------------------------------------

def test_ci_cuda_refuses_without_a_gpu_in_one_clear_paragraph(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi anywhere
    assert cudaci.cli(["check"]) == cudaci.NO_GPU
    message = capsys.readouterr().err
    assert "nvidia-smi was not found" in message and "NVIDIA GPU and its driver" in message
    assert "`make test` runs the CPU test suite" in message and message.count("\n") == 1

    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "bin", "No devices were found", 6))
    assert cudaci.cli(["install", "--venv", str(tmp_path / "venv")]) == cudaci.NO_GPU
    message = capsys.readouterr().err
    assert "`nvidia-smi -L` listed no GPU (exit 6: No devices were found)" in message
    assert not (tmp_path / "venv").exists()  # it stopped before installing anything


def test_make_ci_cuda_stops_at_once_without_a_gpu(tmp_path):
    path = _fake_nvidia_smi(tmp_path / "bin", "No devices were found", 6)
    had_venv = (REPO / ".venv-cuda").exists()
    done = subprocess.run(["make", "--no-print-directory", "ci-cuda", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": path})
    assert done.returncode != 0
    assert "make ci-cuda: stopped, there is no usable NVIDIA GPU here" in done.stderr
    assert "cuda-ci install" not in done.stdout  # the first step stopped make
    assert (REPO / ".venv-cuda").exists() == had_venv


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal when torch sees no GPU")
def test_run_refuses_when_torch_sees_no_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "bin", "GPU 0: Stand-in (UUID: GPU-0)", 0))
    assert cudaci.cli(["run", "--out", str(tmp_path / "out"), "--skip-tests"]) == cudaci.NO_GPU
    message = capsys.readouterr().err
    assert "torch.cuda.is_available()" in message and "`make test`" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_CUDA, reason="checks that a cuda test fails rather than skips without a GPU")
def test_cuda_tests_fail_instead_of_skipping_under_mielib_require_cuda():
    test = f"{Path(__file__).name}::test_models_run_on_cuda_with_autocast"
    env = {**os.environ, "MIELIB_REQUIRE_CUDA": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          cwd=Path(__file__).parent, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout
    assert "MIELIB_REQUIRE_CUDA=1 requires the CUDA tests to run" in done.stdout


def test_the_cuda_venv_ignores_local_cpu_wheel_sources():
    env = {"PIP_FIND_LINKS": "/opt/wheels", "PIP_EXTRA_INDEX_URL": "file:///opt/simple", "PATH": "/bin",
           "PIP_CERT": "/etc/ssl/certs/ca.crt"}
    clean = cudaci.pip_environment(env)
    assert clean["PIP_CONFIG_FILE"] == os.devnull and "PIP_FIND_LINKS" not in clean
    assert "PIP_EXTRA_INDEX_URL" not in clean and clean["PIP_CERT"] == env["PIP_CERT"]
    assert cudaci.pip_environment(env, keep_config=True) == env


def test_gpu_evidence_reads_where_each_record_trained(tmp_path):
    def record(path, device, amp):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": "mielib.result/1", "device": device, "amp": amp}))

    assert cudaci.gpu_evidence(tmp_path / "none") == ("trains nothing (no GPU work to check)", [])
    record(tmp_path / "a" / "1.json", "cuda", True)
    record(tmp_path / "a" / "2.json", "cuda", True)
    assert cudaci.gpu_evidence(tmp_path) == ("2 training record(s) on cuda", [])
    record(tmp_path / "b" / "3.json", "cpu", False)
    summary, problems = cudaci.gpu_evidence(tmp_path)
    assert summary == "3 training record(s) on cpu, cuda" and problems == [f"b{os.sep}3.json: trained on cpu, amp False"]


def test_bench_gpu_runs_every_part_in_a_cpu_dry_run(tmp_path):
    script = REPO / "benchmarks" / "bench_gpu.py"
    env = {**os.environ, "MIELIB_RESULTS": str(tmp_path / "results")}
    if not HAS_CUDA:  # without the flag it refuses: its numbers are a GPU's
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == cudaci.NO_GPU and "--cpu-dry-run" in done.stderr
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(script), "--cpu-dry-run", "--json", str(out)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {(r["model"], r["input"]) for r in result["train"]} == {
        (m, i) for m in models.NAMES for i in ("frames", "flow")}
    assert all(r["samples_per_s"] > 0 for r in result["train"])
    assert result["miex"]["samples"] == 18 and result["table1_unit"]["device"] == "cpu"
    assert set(result["notebook04_hours"]) == {"apexme", "branches"} and "notebook 04 at preset smoke" in done.stdout


# --- the device and data-loading settings (any machine) -------------------------------------------

def test_mielib_device_pins_auto(monkeypatch):
    monkeypatch.setenv("MIELIB_DEVICE", "cpu")
    assert runtime.device("auto") == torch.device("cpu")
    monkeypatch.setenv("MIELIB_DEVICE", "tpu9")
    with pytest.raises(ValueError, match="from MIELIB_DEVICE"):
        runtime.device("auto")
    assert runtime.device("cpu") == torch.device("cpu")  # an explicit device ignores it
    if not HAS_CUDA:
        monkeypatch.setenv("MIELIB_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match=r"'cuda' \(from MIELIB_DEVICE\) requested but torch sees no CUDA GPU"):
            runtime.device("auto")


def test_gpu_loader_settings(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("MIELIB_LOADER_WORKERS", raising=False)
    assert train.loader_workers(cpu) == 0 and train.loader_workers(cuda) == 2 and train.loader_workers(cuda, 0) == 0
    monkeypatch.setenv("MIELIB_LOADER_WORKERS", "5")
    assert train.loader_workers(cuda) == 5 and train.loader_workers(cpu) == 0
    monkeypatch.setenv("MIELIB_LOADER_WORKERS", "many")
    with pytest.raises(ValueError, match="MIELIB_LOADER_WORKERS"):
        train.loader_workers(cuda)
    loader = train._loader(_data(8, 4), 4, cuda, 2, torch.Generator())
    assert loader.pin_memory and loader.persistent_workers and loader.num_workers == 2
    assert not train._loader(_data(8, 4), 4, cpu, 0).pin_memory
    apexme, dtscnn = models.build("apexme", 3), models.build("dtscnn", 3, scales=(2, 4))
    assert train.use_channels_last(apexme, cuda) and train.use_channels_last(models.build("branches", 3), cuda)
    assert not train.use_channels_last(dtscnn, cuda)  # 3D convolutions keep their layout
    assert not train.use_channels_last(apexme, cpu) and train.use_channels_last(apexme, cpu, True)


def test_channels_last_and_loader_workers_change_no_result_on_cpu():
    data, test = _data(16, 32), _data(6, 32, seed=1)

    def fit(**kw):
        net = models.build("apexme", 3, seed=0, dropout=0.0)
        h = train.fit(net, data, test=test, epochs=1, seed=0, batch_size=8, device="cpu", progress=False, **kw)
        return np.array(h.train_loss), h.test_probs

    plain = fit()
    workers = fit(num_workers=2)
    assert np.array_equal(plain[0], workers[0]) and np.array_equal(plain[1], workers[1])
    nhwc = fit(channels_last=True)  # the layout CUDA runs use; other kernels, the same values up to rounding
    assert np.allclose(nhwc[0], plain[0], rtol=1e-5) and np.abs(nhwc[1] - plain[1]).max() < 1e-4


# --- on a GPU ------------------------------------------------------------------------------------

@pytest.fixture
def strict_fp32():
    """Full float32 on the GPU: no TF32 (10-bit mantissa in convolutions and matmuls), no cuDNN
    autotuning; deterministic cuDNN algorithms."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved


@pytest.mark.cuda
def test_cpu_and_cuda_agree_in_fp32(strict_fp32):
    """The same unit of work on both devices in float32. Tolerances: with TF32 off the devices
    differ only in summation order (cuDNN's and oneDNN's convolution algorithms, the reductions
    in batch norm), about 1e-6 relative per layer; through ResNet-18 that leaves ~1e-5 on the
    logits and ~1e-4 on gradient directions. One epoch of Adam (lr 1e-4) then moves each weight
    by at most 1e-4 per step, whatever the gradient's size, so a gradient within rounding of zero
    may step either way: the trained model's probabilities are compared at 5e-3."""
    x, y = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3
    out = {}
    for dev in ("cpu", "cuda"):
        net = models.build("apexme", 3, seed=0, dropout=0.0).to(dev)
        loss = torch.nn.functional.cross_entropy(net(x.to(dev)), y.to(dev))
        loss.backward()
        out[dev] = (loss.item(), torch.cat([p.grad.flatten() for p in net.parameters()]).cpu())
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-5)
    g_cpu, g_cuda = out["cpu"][1], out["cuda"][1]
    assert (g_cuda - g_cpu).norm() / g_cpu.norm() < 1e-4

    data, test = _data(24, 64), _data(12, 64, seed=1)
    runs = {}
    for dev in ("cpu", "cuda"):  # CUDA with its defaults otherwise: channels-last, loader workers, pinned memory
        net = models.build("apexme", 3, seed=0, dropout=0.0)
        runs[dev] = train.fit(net, data, test=test, epochs=1, seed=0, batch_size=8, device=dev, amp=False,
                              progress=False)
    assert runs["cuda"].device.startswith("cuda") and not runs["cuda"].amp
    assert np.allclose(runs["cuda"].train_loss, runs["cpu"].train_loss, rtol=1e-4)
    assert np.abs(runs["cuda"].test_probs - runs["cpu"].test_probs).max() < 5e-3


@pytest.mark.cuda
@pytest.mark.parametrize("name, inputs", [("apexme", 1), ("branches", 2)], ids=["apexme", "branches"])
def test_amp_training_gives_finite_losses(name, inputs):
    # 128 px, the paper's size; frames and flow (3 channels each) take the same networks.
    net = models.build(name, 3, seed=0)
    h = train.fit(net, _data(64, 128, inputs), test=_data(16, 128, inputs, seed=1), epochs=2, seed=0,
                  batch_size=16, device="cuda", progress=False)
    assert h.amp and h.device.startswith("cuda")
    assert np.isfinite(h.train_loss).all() and np.isfinite(h.test_probs).all()
    assert np.allclose(h.test_probs.sum(1), 1, atol=1e-4)
    dts = models.build("dtscnn", 3, seed=0, scales=(4, 8), frame_size=64, input_mode="flow")
    stacks = TensorDataset(torch.randn(32, 2, 6, 64, 64), torch.arange(32) % 3)
    h = train.fit(dts, stacks, epochs=1, seed=0, batch_size=8, device="cuda", progress=False)
    assert h.amp and np.isfinite(h.train_loss).all()


@pytest.mark.cuda
def test_gradient_penalty_under_amp(tmp_path):
    torch.manual_seed(0)
    critic = gn.Critic(size=32, width=8).cuda()
    real, fake = torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1, torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1
    alpha = torch.rand(4, 1, 1, 1, device="cuda")
    plain = gn.gradient_penalty(critic, real, fake, alpha)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype):
            gp = gn.gradient_penalty(critic, real.to(dtype), fake.to(dtype), alpha)
        # Computed in float32 with autocast off: inputs rounded to dtype, the rest as without AMP.
        assert gp.dtype == torch.float32 and torch.isfinite(gp)
        assert gp.item() == pytest.approx(plain.item(), rel=5e-2, abs=1e-3)
        critic.zero_grad()
        torch.amp.GradScaler("cuda").scale(gp).backward()
        assert all(torch.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)
    # A few full GANimation iterations on the GPU (critic with penalty, generator every 2nd).
    rng = np.random.default_rng(0)
    images, aus = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), rng.random((8, 17))
    result = gn.train(images, aus, iterations=6, seed=0, size=32, batch_size=4, width=8, residual_blocks=1,
                      critic_steps=2, log_every=1, device="cuda", progress=False, checkpoint_dir=tmp_path)
    losses = result.history[["d_adv", "d_gp", "d_au"]].to_numpy()
    assert np.isfinite(losses).all() and result.gan.device.type == "cuda"


@pytest.mark.cuda
def test_weights_saved_on_cuda_load_on_cpu(tmp_path, strict_fp32):
    net = models.build("branches", 3, seed=0)
    train.fit(net, _data(16, 64, 2), epochs=1, seed=0, batch_size=8, device="cuda", progress=False)
    assert next(net.parameters()).is_cuda
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)  # as they are: CUDA tensors in channels-last layout
    buf.seek(0)
    cpu = models.build("branches", 3)
    cpu.load_state_dict(torch.load(buf, map_location="cpu", weights_only=True))
    x = [torch.rand(4, 3, 64, 64) for _ in range(2)]
    with torch.no_grad():
        expected = net.eval().float()(*[t.cuda() for t in x]).cpu()
        assert torch.allclose(cpu.eval()(*x), expected, atol=1e-3)
    # A GANimation checkpoint written on the GPU loads, and resumes, on the CPU.
    rng = np.random.default_rng(0)
    images, aus = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), rng.random((8, 17))
    kw = dict(iterations=4, seed=0, size=32, batch_size=4, width=8, residual_blocks=1, progress=False,
              checkpoint_dir=tmp_path)
    gn.Trainer(images, aus, device="cuda", **kw).run(until=2)
    (path,) = tmp_path.glob("ganimation-*.pt")
    assert torch.load(path, map_location="cpu", weights_only=True)["device"].startswith("cuda")
    assert gn.load(path, device="cpu").edit(images[0], aus[1]).shape == (32, 32, 3)
    on_cpu = gn.Trainer(images, aus, device="cpu", **kw)
    assert on_cpu.resumed_from == 2
    result = on_cpu.run()
    assert result.iteration == 4 and np.isfinite(result.history["d_gp"].to_numpy()).all()


@pytest.mark.cuda
def test_models_run_on_cuda_with_autocast():
    for name, args in [("branches", 2), ("apexme", 1)]:
        m = models.build(name, 3, seed=0).cuda()
        x = [torch.rand(2, 3, 64, 64, device="cuda") for _ in range(args)]
        with torch.autocast("cuda", dtype=torch.float16):
            assert m(*x).shape == (2, 3)
        models.new_head(m, 4)
        assert m.head[-1].weight.is_cuda
    d = models.build("dtscnn", 3, scales=(8, 16)).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        assert d(torch.rand(2, 3, 10, 64, 64, device="cuda")).shape == (2, 3)
