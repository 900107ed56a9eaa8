"""Sliding window, logit soft-capping, ALiBi, attention sinks and the fp8 KV cache, against the
float64 reference given the same options."""

import pytest
import torch

import flashcore_kernels as fk

from ..accuracy import assert_matches_reference, max_abs_error
from ..paged_batch import make_batch

# Decodes (split and not), an extend over a cached prefix, and a prefill longer than the window.
Q_LENS, KV_LENS = [1, 1, 30, 5, 70], [100, 3, 70, 60, 70]


def heads_tensor(values, device):
    return torch.tensor(values, dtype=torch.float32, device=device)


def run(scenario, batch, splits=None, **options):
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=batch.max_query_len, out=out,
                       num_kv_splits=splits, **options)
    assert_matches_reference(scenario, out, batch.reference(**options))
    return out


@pytest.mark.parametrize("window", [1, 7, 16, 40, 1000])
@pytest.mark.parametrize("splits", [None, 4])
def test_sliding_window(device, window, splits):
    batch = make_batch(Q_LENS, KV_LENS, device=device, seed=window)
    run(f"sliding window {window}", batch, splits, sliding_window=window)


def test_sliding_window_decode_skips_pages_outside_the_window(device):
    """Pages wholly before the window are never read: poison them with NaN."""
    batch = make_batch([1, 1], [200, 90], device=device)
    window = 33
    ref = batch.reference(sliding_window=window)  # before poisoning: the reference reads every page
    for i, seq_len in enumerate(batch.kv_lens):
        first_needed = max(seq_len - window, 0) // 16  # page of the first visible token
        batch.kv_cache[batch.block_table[i, :first_needed].long()] = float("nan")
    for splits in (1, 4):
        out = batch.poisoned_out()
        fk.paged_attention(*batch.args(), max_query_len=1, out=out, num_kv_splits=splits,
                           sliding_window=window)
        assert_matches_reference("sliding window skips pages", out, ref)


@pytest.mark.parametrize("cap", [1.0, 5.0, 30.0])
def test_logits_soft_cap(device, cap):
    batch = make_batch(Q_LENS, KV_LENS, device=device, scale=2.0, seed=int(cap))
    run(f"soft cap {cap}", batch, logits_soft_cap=cap)


@pytest.mark.parametrize("splits", [None, 4])
def test_alibi(device, splits):
    batch = make_batch(Q_LENS, KV_LENS, num_q_heads=8, num_kv_heads=2, device=device)
    slopes = heads_tensor([2 ** (-(i + 1)) for i in range(8)], device)
    run("alibi", batch, splits, alibi_slopes=slopes)


@pytest.mark.parametrize("splits", [None, 1, 4])
def test_sinks(device, splits):
    batch = make_batch(Q_LENS, KV_LENS, device=device)
    run("sinks", batch, splits, sinks=heads_tensor([1.0, -2.0, 3.0, 8.0], device))


def test_everything_together(device):
    batch = make_batch(Q_LENS, KV_LENS, num_q_heads=8, num_kv_heads=2, device=device, scale=2.0)
    run("window + cap + alibi + sinks", batch, 4, sliding_window=20, logits_soft_cap=4.0,
        alibi_slopes=heads_tensor([0.1 * i for i in range(8)], device),
        sinks=heads_tensor([0.5] * 8, device))


def fp8_cache_like(batch, k_scale, v_scale):
    """The batch's cache quantised by torch (round to nearest even, saturating)."""
    head_dim = batch.query.shape[2]
    k = (batch.kv_cache[..., :head_dim].float() / k_scale).clamp(-448, 448)
    v = (batch.kv_cache[..., head_dim:].float() / v_scale).clamp(-448, 448)
    return torch.cat([k, v], dim=-1).to(torch.float8_e4m3fn)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fp8_kv_cache(device, dtype):
    """The kernels' error is measured against the reference over the same fp8 values; the
    quantisation error itself (fp8 values against the exact ones) is recorded beside it."""
    batch = make_batch(Q_LENS, KV_LENS, dtype=dtype, device=device)
    k_scale, v_scale = heads_tensor([0.02], device), heads_tensor([0.015], device)
    cache = fp8_cache_like(batch, k_scale, v_scale)
    out = batch.poisoned_out()
    args = (batch.query, cache, batch.cu_seqlens_q, batch.seq_lens, batch.block_table)
    fk.paged_attention(*args, max_query_len=batch.max_query_len, out=out, k_scale=k_scale,
                       v_scale=v_scale)
    ref_fp8 = fk.paged_attention_reference(*args, k_scale=k_scale, v_scale=v_scale)
    assert_matches_reference("fp8 kv cache (vs fp8 reference)", out, ref_fp8)
    quantisation = max_abs_error(ref_fp8.to(dtype), batch.reference())
    # e4m3 keeps 3 mantissa bits (relative step 2^-3, error up to 2^-4 per element); outputs
    # of unit-variance data move by a few hundredths, at most about a tenth.
    assert quantisation < 0.2, f"fp8 quantisation error {quantisation:.3f}"
    print(f"fp8 quantisation error alone ({dtype}): {quantisation:.3e}")


@pytest.mark.parametrize("splits", [1, 4])
@pytest.mark.parametrize("query_scale", [3e5, 1e-3, 0.0])
def test_fp8_kv_cache_keeps_bf16_query_range(device, query_scale, splits):
    """Over an fp8 cache decodes run their products in fp16
    (``TileConfig.fp16_products``), whose range bf16 queries exceed: a query of 3e5 (fp16 tops
    out at 65504) must stay finite, one of 1e-3 (fp16 subnormals from 6e-5) precise, and an
    all-zero one give every token the same weight; the softmax scale keeps the logits of unit
    size. Whole-sequence and split decodes have their own tiles."""
    batch = make_batch(Q_LENS, KV_LENS, dtype=torch.bfloat16, device=device)
    query = (batch.query.float() * query_scale).to(torch.bfloat16)
    k_scale, v_scale = heads_tensor([0.02], device), heads_tensor([0.015], device)
    cache = fp8_cache_like(batch, k_scale, v_scale)
    out = batch.poisoned_out()
    args = (query, cache, batch.cu_seqlens_q, batch.seq_lens, batch.block_table)
    scale = 1.0 / ((query_scale or 1.0) * query.shape[2] ** 0.5)
    fk.paged_attention(*args, max_query_len=batch.max_query_len, out=out, k_scale=k_scale,
                       v_scale=v_scale, softmax_scale=scale, num_kv_splits=splits)
    ref = fk.paged_attention_reference(*args, k_scale=k_scale, v_scale=v_scale,
                                       softmax_scale=scale)
    assert_matches_reference(f"fp8 kv cache, query x {query_scale:g}", out, ref)


@pytest.mark.gpu
def test_fp8_cache_write_matches_torch_quantisation(device):
    """GPU only: Triton's CPU interpreter drops the carry when fp32 -> fp8 rounds up across a
    power of two (-127.6 becomes -64 rather than -128; triton 3.6), the GPU converts exactly."""
    num_tokens, head_dim = 64, 128
    key = torch.randn(num_tokens, 2, head_dim, dtype=torch.bfloat16, device=device) * 3
    value = torch.randn(num_tokens, 2, head_dim, dtype=torch.bfloat16, device=device) * 3
    k_scale, v_scale = heads_tensor([0.02], device), heads_tensor([0.015], device)
    cache = torch.zeros(4, 16, 2, 2 * head_dim, dtype=torch.float8_e4m3fn, device=device).permute(0, 2, 1, 3)
    slots = torch.randperm(64, device=device)
    fk.write_kv_cache(key, value, cache, slots, k_scale=k_scale, v_scale=v_scale)
    stored = cache[slots // 16, :, slots % 16].float()
    expect_k = (key.float() / k_scale).clamp(-448, 448).to(torch.float8_e4m3fn).float()
    expect_v = (value.float() / v_scale).clamp(-448, 448).to(torch.float8_e4m3fn).float()
    assert torch.equal(stored[..., :head_dim], expect_k) and torch.equal(stored[..., head_dim:], expect_v)


def test_fp8_cache_write_saturates(device):
    cache = torch.zeros(2, 1, 16, 128, dtype=torch.float8_e4m3fn, device=device)
    big = torch.full((1, 1, 64), 1e4, dtype=torch.float16, device=device)
    one = heads_tensor([1.0], device)
    fk.write_kv_cache(big, -big, cache, torch.tensor([3], device=device), k_scale=one, v_scale=one)
    assert (cache[0, 0, 3, :64].float() == 448).all() and (cache[0, 0, 3, 64:].float() == -448).all()


def test_variant_arguments_are_checked(device):
    batch = make_batch([3], [9], device=device)
    call = dict(max_query_len=3)
    with pytest.raises(ValueError, match="sliding_window needs causal=True"):
        fk.paged_attention(*batch.args(), causal=False, sliding_window=4, **call)
    with pytest.raises(ValueError, match="sliding_window must be a positive int"):
        fk.paged_attention(*batch.args(), sliding_window=-2, **call)
    with pytest.raises(ValueError, match="logits_soft_cap must be positive"):
        fk.paged_attention(*batch.args(), logits_soft_cap=-1.0, **call)
    with pytest.raises(ValueError, match="sinks must be contiguous with one entry per query head"):
        fk.paged_attention(*batch.args(), sinks=heads_tensor([1.0], device), **call)
    with pytest.raises(ValueError, match="k_scale and v_scale are required with an fp8 KV cache"):
        fk.paged_attention(*batch.args(), k_scale=heads_tensor([1.0], device), **call)
    with pytest.raises(ValueError, match="k_scale and v_scale are required"):
        fk.paged_attention(batch.query, batch.kv_cache.to(torch.float8_e4m3fn), *batch.args()[2:], **call)
