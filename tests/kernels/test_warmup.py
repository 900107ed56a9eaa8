"""warm_up: launches the cache write and the attention kernels on a three-sequence batch made
from the caller's views, leaving the inputs untouched."""

import pytest
import torch

from flashcore_kernels import config, warm_up, warmup
from flashcore_kernels.warmup import paged_cache_like


@pytest.mark.parametrize("stride_order", [(0, 2, 1, 3), (0, 1, 2, 3)])
def test_warm_up_runs_on_views_of_a_fused_qkv(device, stride_order):
    num_q_heads, num_kv_heads, head_dim, tokens = 4, 2, 64, 5
    qkv = torch.randn(tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, device=device)
    q, k, v = qkv.split([num_q_heads * head_dim, num_kv_heads * head_dim,
                         num_kv_heads * head_dim], dim=1)
    before = qkv.clone()
    out = torch.full((tokens, num_q_heads, head_dim), float("nan"), device=device)
    assert warm_up(q.view(tokens, num_q_heads, head_dim), k.view(tokens, num_kv_heads, head_dim),
                   v.view(tokens, num_kv_heads, head_dim), out, page_size=16,
                   cache_dtype=torch.float32, stride_order=stride_order, sliding_window=8)
    assert torch.equal(qkv, before)
    assert torch.isfinite(out).all()  # the five rows it used were written


def test_warm_up_needs_five_rows(device):
    q = torch.zeros(4, 4, 64, device=device)
    kv = torch.zeros(4, 2, 64, device=device)
    assert not warm_up(q, kv, kv, torch.empty_like(q), page_size=16, cache_dtype=torch.float32)


def test_warm_up_also_launches_what_short_prefills_take(device, monkeypatch):
    """The second launch gives the launcher the batch's max_seq_len, and at head 64 the launcher
    sends such a batch of short prefills to the Triton prefill kernel, so on Hopper both
    prefill kernels compile before the first request."""
    seen, launch = [], warmup.paged_attention

    def recording(*args, **kwargs):
        seen.append(kwargs["max_seq_len"])
        return launch(*args, **kwargs)

    monkeypatch.setattr(warmup, "paged_attention", recording)
    q = torch.randn(5, 4, 64, device=device)
    kv = torch.randn(5, 2, 64, device=device)
    assert warm_up(q, kv, kv, torch.empty_like(q), page_size=16, cache_dtype=torch.float32)
    assert seen == [None, max(warmup._SEQ_LENS)]
    assert config.short_prefills_on_triton(64, sum(warmup._QUERY_LENS), max(warmup._QUERY_LENS),
                                           max(warmup._SEQ_LENS))


def test_paged_cache_like_has_the_layout_asked_for(device):
    cache = paged_cache_like(3, 2, 16, 64, torch.float16, (0, 2, 1, 3), device)
    assert cache.shape == (3, 2, 16, 128)
    assert cache.stride() == (16 * 2 * 128, 128, 2 * 128, 1)  # pages, then slots, then heads
