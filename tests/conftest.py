"""Shared test set-up.

- The `cuda` marker: tests that need a CUDA GPU skip without one, except under
  MIELIB_REQUIRE_CUDA=1 (`make ci-cuda` sets it), where a missing GPU fails them, so a CUDA CI
  cannot pass by skipping its CUDA tests.
- `one_torch_thread`: a module that trains small networks on the CPU runs with one torch thread.
"""

import os

import pytest


def cuda_required() -> bool:
    return os.environ.get("MIELIB_REQUIRE_CUDA", "").strip().lower() not in ("", "0", "false", "no")


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is None:
        return
    import torch

    if torch.cuda.is_available():
        return
    why = "needs a CUDA GPU (torch.cuda.is_available() is False)"
    if cuda_required():
        pytest.fail(f"{why}, and MIELIB_REQUIRE_CUDA=1 requires the CUDA tests to run", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def one_torch_thread():
    # Small convolutions on a shared 2-core box: torch's second thread mostly spin-waits (tens of
    # times slower under load). Results do not depend on it.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
