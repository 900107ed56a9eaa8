"""benchmarks/read_floor.py: the stream that bounds a decode from below must read every byte it
is credited with, or the floor it reports would be too low."""

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import read_floor  # noqa: E402


@pytest.mark.parametrize("programs, block", [(3, 16), (4, 32), (7, 64)])
def test_stream_reads_every_element_once(device, programs, block):
    x = torch.randn(1000, dtype=torch.bfloat16, device=device)
    out = torch.empty(programs, dtype=torch.float32, device=device)
    per_program = read_floor.stream(x, out, programs, block)
    assert per_program % block == 0 and programs * per_program >= x.numel()
    padded = torch.zeros(programs * per_program, device=device)
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


@pytest.mark.parametrize("splits, block_n", [(1, 16), (3, 16), (2, 32)])
def test_paged_read_reads_every_token_of_each_head_through_the_block_table(device, splits,
                                                                         block_n):
    # Three sequences, one not a multiple of the tile, pages in random order: each program's
    # maximum must be that of exactly its head's K and V rows of its tokens.
    spec = read_floor.batches.BatchSpec(seq_lens=(40, 64, 7), query_lens=(1, 1, 1))
    # (float16: the interpreter cannot fill a bfloat16 tile; the GPU runs bfloat16.)
    inp = read_floor.batches.make_inputs(spec, num_q_heads=4, num_kv_heads=2, head_dim=16,
                                         dtype=torch.float16, device=device)
    cache = inp.kv_cache()
    out = torch.full((3 * 2 * splits,), float("nan"), device=device)
    read_floor.paged_read(inp, cache, out, splits, read_floor.config.TileConfig(1, block_n, 4, 2))
    tokens_per_split = math.ceil(math.ceil(64 / splits) / block_n) * block_n
    expected = []
    for seq, length in enumerate(spec.seq_lens):
        for head in range(2):
            for split in range(splits):
                first = split * tokens_per_split
                tokens = range(first, min(length, first + tokens_per_split))
                rows = [cache[inp.block_table[seq, t // 16], head, t % 16] for t in tokens]
                expected.append(torch.stack(rows).float().max() if rows else float("-inf"))
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32, device=device))


def test_paged_tiles_parse_and_refuse_a_malformed_one():
    assert read_floor.parse_tiles("64x4x4,128x8x3") == [(64, 4, 4), (128, 8, 3)]
    assert read_floor.parse_tiles("") == []
    with pytest.raises(read_floor.argparse.ArgumentTypeError, match="'64x4' is not"):
        read_floor.parse_tiles("64x4")
