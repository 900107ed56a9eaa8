"""benchmarks/ab_prefill.py loads a version of ``kernels/hopper_prefill.py`` from any file as a
module of the installed package (``harness.load_version``), so its relative imports resolve and
its kernel is its own."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ab_prefill  # noqa: E402
import harness  # noqa: E402

from flashcore_kernels import hopper_prefill  # noqa: E402


def test_a_version_from_a_file_is_a_separate_module(tmp_path):
    copy = tmp_path / "older.py"
    copy.write_text((ROOT / "kernels" / "hopper_prefill.py").read_text())
    version = harness.load_version("older", str(copy))
    assert version.__name__ == "flashcore_kernels.ab_older"
    assert version.launch is not hopper_prefill.launch
    assert version.hopper_prefill_kernel is not hopper_prefill.hopper_prefill_kernel
    assert version.HEAD_DIMS == hopper_prefill.HEAD_DIMS  # same config module


def test_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(ab_prefill.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["ab_prefill.py", "--version", "x=kernels/hopper_prefill.py"])
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        ab_prefill.main()


def test_shapes_take_an_optional_cached_prefix():
    assert ab_prefill.shapes("16x512,8x256+2048") == [(16, 512, 0), (8, 256, 2048)]
    spec = ab_prefill.batch(8, 256, 2048)
    assert spec.query_lens == (256,) * 8 and spec.seq_lens == (2304,) * 8
    assert ab_prefill.batch(2, 512, 0).seq_lens == (512, 512)
    assert ab_prefill.label(8, 256, 2048) == "8 x 256 +2048"
