"""benchmarks/read_floor.py: the stream that bounds a decode from below must read every byte it
is credited with, or the floor it reports would be too low."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import read_floor  # noqa: E402


@pytest.mark.parametrize("programs, block", [(3, 16), (4, 32), (7, 64)])
def test_stream_reads_every_element_once(programs, block):
    x = torch.randn(1000, dtype=torch.bfloat16)
    out = torch.empty(programs, dtype=torch.float32)
    per_program = read_floor.stream(x, out, programs, block)
    assert per_program % block == 0 and programs * per_program >= x.numel()
    padded = torch.zeros(programs * per_program)
    padded[:x.numel()] = x.float()
    torch.testing.assert_close(out, padded.view(programs, per_program).sum(1), rtol=1e-5,
                               atol=1e-4)
    torch.testing.assert_close(out.sum(), x.float().sum(), rtol=1e-5, atol=1e-3)


def test_shapes_parse_batch_by_context():
    assert read_floor.batches.parse_shapes("1x8192,8x32768") == [(1, 8192), (8, 32768)]


def test_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(read_floor.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        read_floor.main([])


def test_refuses_an_unknown_page_order(capsys):
    with pytest.raises(SystemExit) as exit_info:
        read_floor.main(["--page-orders", "random,sorted"])
    assert exit_info.value.code == 2  # argparse's usage error, before the GPU check
    assert "'sorted' is not one of random, in_order" in capsys.readouterr().err
