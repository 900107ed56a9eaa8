"""Bad input raises a ValueError or TypeError naming the argument, before any launch."""

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels import checks, config

from ..paged_batch import make_batch


@pytest.fixture
def batch(device):
    return make_batch([3, 1], [10, 20], device=device)


def call(batch, **overrides):
    args = dict(zip(["query", "kv_cache", "cu_seqlens_q", "seq_lens", "block_table"], batch.args()))
    args["max_query_len"] = batch.max_query_len
    args.update(overrides)
    return fk.paged_attention(**args)


def test_wrong_device(batch):
    with pytest.raises(ValueError, match="kv_cache is on meta"):
        call(batch, kv_cache=batch.kv_cache.to("meta"))
    with pytest.raises(ValueError, match="block_table is on meta"):
        call(batch, block_table=batch.block_table.to("meta"))


def test_wrong_dtype(batch):
    with pytest.raises(TypeError, match="query has dtype torch.float64"):
        call(batch, query=batch.query.double())
    with pytest.raises(TypeError, match="kv_cache has dtype torch.float32"):
        call(batch, kv_cache=batch.kv_cache.float())
    with pytest.raises(TypeError, match="seq_lens has dtype torch.int64"):
        call(batch, seq_lens=batch.seq_lens.long())
    with pytest.raises(TypeError, match="query must be a torch.Tensor"):
        call(batch, query=[1.0])


def test_unsupported_head_dim(device):
    batch = make_batch([2], [2], head_dim=12, device=device)
    with pytest.raises(ValueError, match="head_dim 12 is not supported"):
        call(batch)


def test_last_dim_not_contiguous(batch):
    strided = batch.query.transpose(1, 2).contiguous().transpose(1, 2)
    with pytest.raises(ValueError, match="query must have a contiguous last dimension"):
        call(batch, query=strided)


def test_block_table_too_short(batch):
    with pytest.raises(ValueError, match="sequence 1: seq_len 20 needs 2 pages of 16, but block_table has 1"):
        call(batch, block_table=batch.block_table[:, :1])


def test_query_longer_than_sequence(batch):
    with pytest.raises(ValueError, match="sequence 0: query length 3 is longer than its sequence length 2"):
        call(batch, seq_lens=torch.tensor([2, 20], dtype=torch.int32, device=batch.query.device))


def test_length_bounds_below_the_lengths(batch):
    """A max_query_len below a query's length would skip its prefill: refused, as a max_seq_len
    below a sequence's length is."""
    with pytest.raises(ValueError, match="max_query_len is 1, but a query has 3 tokens"):
        call(batch, max_query_len=1)
    with pytest.raises(ValueError, match="max_seq_len is 19, but seq_lens holds 20"):
        call(batch, max_seq_len=19)


def test_page_id_out_of_range(batch):
    bad = batch.block_table.clone()
    bad[1, 1] = batch.kv_cache.shape[0]
    with pytest.raises(ValueError, match="page ids outside"):
        call(batch, block_table=bad)


def test_mismatched_output(batch):
    with pytest.raises(ValueError, match="out has shape"):
        call(batch, out=batch.query[:1])


def test_bad_split_count(batch):
    with pytest.raises(ValueError, match="num_kv_splits must be a power of two"):
        call(batch, num_kv_splits=3)


def test_workspace_too_small(batch):
    # One row, not allocate's count: that sizes for the GPU's wave, which can cover this batch.
    ws = fk.SplitKVWorkspace.with_rows(1, 4, 64, batch.query.device)
    with pytest.raises(ValueError, match="workspace too small"):
        call(batch, workspace=ws, num_kv_splits=64)


def test_fp8_cache_needs_ada_or_newer(monkeypatch):
    """Triton compiles no float8 e4m3 before compute capability 8.9: say so before any launch."""
    monkeypatch.setattr(config, "compute_capability", lambda device: (8, 6))
    with pytest.raises(ValueError, match=r"fp8 KV cache needs compute capability 8\.9 .* 8\.6"):
        checks.fp8_scales(torch.float8_e4m3fn, None, None, torch.device("cuda"))
