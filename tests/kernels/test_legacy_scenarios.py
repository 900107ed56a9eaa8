"""The earlier kernel's 15-case validation, reproduced: KV cache, GQA and causal scenarios.

That kernel passed plain prefill but failed every case that read a KV cache (max-abs errors up to
1.046 in fp16) and broke at S=32. Here every case must be within the rounding tolerance.
"""

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels.reference import attention_one_seq

from ..accuracy import assert_matches_reference
from ..paged_batch import make_batch

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def run_checked(scenario, batch, causal=True, **kwargs):
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=batch.max_query_len, out=out, causal=causal, **kwargs)
    assert_matches_reference(scenario, out, batch.reference(causal=causal), batch.sdpa(causal=causal))
    return out


class CacheWalk:
    """Sequences that grow step by step: each step writes its new K/V with ``write_kv_cache`` into
    a NaN-poisoned paged cache, then attends. Any read of a slot not yet written gives NaN."""

    def __init__(self, num_seqs, max_len, *, num_q_heads=4, num_kv_heads=2, head_dim=64,
                 page_size=16, dtype=torch.float16, device="cpu", seed=0):
        self.gen = torch.Generator().manual_seed(seed)
        self.shape = (num_q_heads, num_kv_heads, head_dim)
        self.dtype, self.device, self.page_size = dtype, device, page_size
        pages_per_seq = -(-max_len // page_size)
        num_pages = num_seqs * pages_per_seq + 1
        perm = torch.randperm(num_pages - 1, generator=self.gen) + 1  # page 0 never used
        self.block_table = perm.view(num_seqs, pages_per_seq).to(torch.int32).to(device)
        self.kv_cache = torch.full((num_pages, page_size, num_kv_heads, 2 * head_dim), float("nan"),
                                   dtype=dtype, device=device).permute(0, 2, 1, 3)
        self.keys = [torch.empty(0, num_kv_heads, head_dim, dtype=dtype) for _ in range(num_seqs)]
        self.values = [torch.empty(0, num_kv_heads, head_dim, dtype=dtype) for _ in range(num_seqs)]

    def _randn(self, *shape):
        return torch.randn(*shape, generator=self.gen).to(self.dtype)

    def step(self, scenario, q_lens):
        """Append ``q_lens[i]`` tokens to sequence i, attend, and check against float64."""
        num_q_heads, num_kv_heads, head_dim = self.shape
        slots, seq_lens = [], []
        new_k = self._randn(sum(q_lens), num_kv_heads, head_dim)
        new_v = self._randn(sum(q_lens), num_kv_heads, head_dim)
        query = self._randn(sum(q_lens), num_q_heads, head_dim)
        start = 0
        for i, q_len in enumerate(q_lens):
            old = self.keys[i].shape[0]
            self.keys[i] = torch.cat([self.keys[i], new_k[start:start + q_len]])
            self.values[i] = torch.cat([self.values[i], new_v[start:start + q_len]])
            pos = torch.arange(old, old + q_len)
            pages = self.block_table[i].cpu().long()[pos // self.page_size]
            slots.append(pages * self.page_size + pos % self.page_size)
            seq_lens.append(old + q_len)
            start += q_len
        dev = self.device
        fk.write_kv_cache(new_k.to(dev), new_v.to(dev), self.kv_cache, torch.cat(slots).to(dev))
        cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32).to(dev)
        out = torch.full_like(query, float("nan")).to(dev)
        fk.paged_attention(query.to(dev), self.kv_cache, cu, torch.tensor(seq_lens, dtype=torch.int32, device=dev),
                           self.block_table, max_query_len=max(q_lens), out=out)
        ref = torch.cat([
            attention_one_seq(query[int(cu[i]):int(cu[i + 1])].double(), self.keys[i].double(),
                              self.values[i].double(), causal=True, softmax_scale=head_dim ** -0.5)
            for i in range(len(q_lens))]).to(dev)
        assert_matches_reference(scenario, out, ref)


# --- KV cache ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_kv_cache_prefill_then_decode_steps(device, dtype):
    walk = CacheWalk(2, 64, dtype=dtype, device=device)
    walk.step("kv_cache prefill", [37, 20])
    for step in range(5):
        walk.step("kv_cache decode step", [1, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_kv_cache_first_call_empty_cache(device, dtype):
    CacheWalk(1, 48, dtype=dtype, device=device).step("kv_cache first call, empty cache", [48])


@pytest.mark.parametrize("dtype", DTYPES)
def test_kv_cache_single_decode_step(device, dtype):
    walk = CacheWalk(3, 80, dtype=dtype, device=device, seed=1)
    walk.step("kv_cache prefill", [50, 7, 79])
    walk.step("kv_cache single decode step", [1, 1, 1])


@pytest.mark.parametrize("seq_len", [32, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_kv_cache_seq_len(device, dtype, seq_len):
    walk = CacheWalk(1, seq_len + 2, dtype=dtype, device=device, seed=seq_len)
    walk.step(f"kv_cache S={seq_len} prefill", [seq_len])
    walk.step(f"kv_cache S={seq_len} decode", [1])
    walk.step(f"kv_cache S={seq_len} extend", [1])


# --- GQA -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_gqa_matches_repeated_kv_heads(device, dtype):
    """GQA over 2 KV heads equals plain MHA over the same heads repeated 4 times."""
    gqa = make_batch([9, 1], [30, 21], num_q_heads=8, num_kv_heads=2, dtype=dtype, device=device)
    mha_cache = gqa.kv_cache.repeat_interleave(4, dim=1)
    out_gqa = run_checked("gqa 4:1 vs repeated kv", gqa)
    out_mha = torch.full_like(out_gqa, float("nan"))
    fk.paged_attention(gqa.query, mha_cache, gqa.cu_seqlens_q, gqa.seq_lens, gqa.block_table,
                       max_query_len=gqa.max_query_len, out=out_mha)
    # Not bitwise: MHA packs 4x more tokens per tile, so tiles (and summation order) differ.
    assert_matches_reference("gqa 4:1 vs repeated kv (mha run)", out_mha, gqa.reference())


@pytest.mark.parametrize("ratio", [1, 2, 4, 8, 16, 32])
def test_gqa_ratios(device, ratio):
    batch = make_batch([5, 1, 17], [5, 40, 33], num_q_heads=ratio * 2, num_kv_heads=2,
                       device=device, seed=ratio)
    run_checked(f"gqa ratio {ratio}:1", batch)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gqa_with_cache(device, dtype):
    walk = CacheWalk(2, 70, num_q_heads=16, num_kv_heads=2, dtype=dtype, device=device, seed=3)
    walk.step("gqa 8:1 with cache, prefill", [33, 60])
    walk.step("gqa 8:1 with cache, decode", [1, 1])


def test_gqa_cache_bytes_saved(device):
    """A 4:1 GQA cache takes a quarter of the bytes of the MHA cache and gives the same output."""
    gqa = make_batch([4], [64], num_q_heads=8, num_kv_heads=2, device=device)
    mha_cache = gqa.kv_cache.repeat_interleave(4, dim=1).contiguous()
    gqa_bytes = gqa.kv_cache.untyped_storage().nbytes()
    assert mha_cache.untyped_storage().nbytes() == 4 * gqa_bytes
    run_checked("gqa cache bytes", gqa)
    out_mha = fk.paged_attention(gqa.query, mha_cache, gqa.cu_seqlens_q, gqa.seq_lens,
                                 gqa.block_table, max_query_len=gqa.max_query_len)
    assert_matches_reference("gqa cache bytes (mha run)", out_mha, gqa.reference())


def test_gqa_rejects_bad_head_counts(device):
    batch = make_batch([3], [3], num_q_heads=6, num_kv_heads=4, device=device)
    with pytest.raises(ValueError, match="num_q_heads .6. must be a multiple of num_kv_heads .4."):
        fk.paged_attention(*batch.args(), max_query_len=3)
    with pytest.raises(ValueError, match="kv_cache has shape"):
        fk.paged_attention(batch.query, batch.kv_cache[..., :64], *batch.args()[2:], max_query_len=3)


# --- Causal --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_matches_reference(device, dtype):
    run_checked("causal prefill", make_batch([40, 17], [40, 17], dtype=dtype, device=device))


def test_causal_mask_structure(device):
    """V = one-hot of the key position makes the output the attention weights themselves: exactly
    zero above the bottom-right diagonal, positive on and below it."""
    q_len, seq_len, head_dim = 20, 50, 64
    batch = make_batch([q_len], [seq_len], num_q_heads=2, num_kv_heads=1, head_dim=head_dim,
                       dtype=torch.float32, device=device)
    pos = torch.arange(seq_len, device=device)
    pages = batch.block_table[0].long()[pos // 16]
    batch.kv_cache[pages, :, pos % 16, head_dim:] = torch.eye(seq_len, head_dim, device=device)[:, None, :]
    weights = run_checked("causal mask structure", batch)[:, :, :seq_len]
    q_pos = torch.arange(seq_len - q_len, seq_len, device=device)
    visible = (pos[None, :] <= q_pos[:, None])[:, None, :].expand_as(weights)
    assert (weights[~visible] == 0).all()
    assert (weights[visible] > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_with_cache(device, dtype):
    """Chunked prefill: queries start after cached context (bottom-right alignment)."""
    run_checked("causal with cached prefix", make_batch([16, 9, 1], [70, 9, 45], dtype=dtype, device=device))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_causal_matches_reference(device, dtype):
    run_checked("non-causal", make_batch([33, 7], [33, 40], dtype=dtype, device=device), causal=False)
