"""Test-wide setup: pick the device, and run Triton kernels on the CPU when there is no GPU.

TRITON_INTERPRET must be set before any module defining a Triton kernel is imported, which is
why it is set here, at collection time, rather than in a fixture.
"""

import os


def _one_gpu_per_xdist_worker() -> None:
    """With pytest-xdist (``-n N``) and CUDA_VISIBLE_DEVICES listing several GPUs, give each
    worker one of them, round robin, so the GPU suite spreads over the host. Must run before
    CUDA is initialised, which is when the variable is read."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if worker.startswith("gw") and len(gpus) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker[2:]) % len(gpus)]


_one_gpu_per_xdist_worker()

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from . import accuracy  # noqa: E402


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


def pytest_sessionfinish(session):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers print no terminal summary
        accuracy.summary_table()


def pytest_terminal_summary(terminalreporter):
    table = accuracy.summary_table()
    if table:
        terminalreporter.write_sep("-", "max-abs error vs float64 reference")
        terminalreporter.write_line(table)


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda") if HAS_CUDA else torch.device("cpu")
