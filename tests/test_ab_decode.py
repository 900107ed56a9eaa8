"""benchmarks/ab_decode.py runs versions of ``kernels/decode.py`` side by side: each loaded from
its own file, its decode and merge kernels serving the launcher only inside ``serving``."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ab_decode  # noqa: E402
import ab_decode_plan  # noqa: E402
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402

from flashcore_kernels import decode  # noqa: E402
from flashcore_kernels.reference import TOLERANCE  # noqa: E402

# Where the merge stores a sequence's output (merge_splits_kernel's last line).
MERGE_STORE = "merged.to(out.dtype.element_ty), mask=mask)"


def version_of(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return harness.load_version(name, str(path))


def split_batch(device, dtype=torch.float16) -> batches.Inputs:
    """A batch the plan splits (a long decode beside short ones, on any wave), so the merge
    runs; tiny heads, so the interpreter is quick."""
    g = geometry.get("tiny")
    spec = batches.uneven_decode_batch([300, 20, 45], "one long, two short")
    return batches.make_inputs(spec, g.num_q_heads, g.num_kv_heads, g.head_dim, dtype=dtype,
                               device=device)


def planned_runner(device, dtype=torch.float16) -> harness.KernelRunner:
    runner = harness.KernelRunner(split_batch(device, dtype), planned=True)
    runner.update()  # the batch's own K/V into the cache, as a step writes them first
    assert max(runner.decode_plan.seq_splits[:3].tolist()) > 1
    return runner


def test_serving_puts_a_versions_kernels_in_the_launcher_and_back(tmp_path):
    version = version_of(tmp_path, "copy", (ROOT / "kernels" / "decode.py").read_text())
    assert version.decode_kernel is not decode.decode_kernel
    with pytest.raises(RuntimeError):
        with ab_decode.serving(version):
            assert ab_decode.LAUNCHER.decode_kernel is version.decode_kernel
            assert ab_decode.LAUNCHER.merge_splits_kernel is version.merge_splits_kernel
            raise RuntimeError("a failed timing puts the kernels back too")
    assert ab_decode.LAUNCHER.decode_kernel is decode.decode_kernel
    assert ab_decode.LAUNCHER.merge_splits_kernel is decode.merge_splits_kernel


def test_the_version_serving_is_the_one_that_runs(tmp_path, device):
    """A copy of the kernels is within the tolerance; a copy whose merge doubles its output is
    not, so the error ab_decode reports is the version's own."""
    text = (ROOT / "kernels" / "decode.py").read_text()
    assert text.count(MERGE_STORE) == 1
    same = version_of(tmp_path, "same", text)
    doubled = version_of(tmp_path, "doubled", text.replace(MERGE_STORE, "2 * " + MERGE_STORE))
    runner = planned_runner(device)
    assert ab_decode.reference_error(runner, same) <= TOLERANCE[torch.float16]
    assert ab_decode.reference_error(runner, doubled) > 0.1


def test_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(ab_decode.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        ab_decode.main(["--version", "x=kernels/decode.py", "--cases", "8x8192"])


def test_case_options_pick_the_heads_and_the_cache(monkeypatch, capsys):
    """``--geometry`` and ``--fp8`` reach every case, the uneven ones too; an unknown label is
    refused by name before any GPU is asked for."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="")
    ab_decode_plan.add_case_options(parser)
    args = parser.parse_args(["--geometry", "mqa", "--fp8", "--cases", "1x32768+7x1024,64x8192"])
    g, chosen = ab_decode_plan.chosen_cases(parser, args)
    assert g.name == "mqa" and list(chosen) == ["1x32768+7x1024", "64x8192"]
    assert all(spec.variant.fp8 for spec in chosen.values())
    assert chosen["64x8192"].seq_lens == (8192,) * 64
    _, every = ab_decode_plan.chosen_cases(parser, parser.parse_args([]))
    assert not any(spec.variant.fp8 for spec in every.values()) and "3x8192" in every
    monkeypatch.setattr(ab_decode.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        ab_decode.main(["--version", "x=kernels/decode.py", "--cases", "8x8192,8x9999"])
    assert "unknown cases ['8x9999']" in capsys.readouterr().err
