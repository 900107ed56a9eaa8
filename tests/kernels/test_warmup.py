"""warm_up: launches the cache write and the attention kernels on a three-sequence batch made
from the caller's views, leaving the inputs untouched."""

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels import config, warm_up, warmup
from flashcore_kernels.decode import decode_kernel, merge_splits_kernel
from flashcore_kernels.decode_plan import plan_kernel
from flashcore_kernels.warmup import paged_cache_like

from ..paged_batch import make_batch


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
    prefill kernels compile before the first request. (On a GPU the decode launches at every
    split count follow those two.)"""
    seen, launch = [], warmup.paged_attention

    def recording(*args, **kwargs):
        seen.append(kwargs.get("max_seq_len"))
        return launch(*args, **kwargs)

    monkeypatch.setattr(warmup, "paged_attention", recording)
    q = torch.randn(5, 4, 64, device=device)
    kv = torch.randn(5, 2, 64, device=device)
    assert warm_up(q, kv, kv, torch.empty_like(q), page_size=16, cache_dtype=torch.float32)
    assert seen[:2] == [None, max(warmup._SEQ_LENS)]
    assert config.short_prefills_on_triton(64, sum(warmup._QUERY_LENS), max(warmup._QUERY_LENS),
                                           max(warmup._SEQ_LENS))


def test_warm_up_launches_the_decode_at_every_split_count(device, monkeypatch):
    """The split count is a compile-time constant of the decode and merge kernels: every count
    the shape rule can give is launched with a plan, and a lone sequence's without (on a GPU
    only), as an engine launches them."""
    seen = []

    def recording(*args, num_kv_splits=None, decode_plan=None, **kwargs):
        seen.append((num_kv_splits, decode_plan is not None))

    monkeypatch.setattr(warmup, "paged_attention", recording)
    monkeypatch.setattr(config, "interpreting", lambda: False)
    q = torch.randn(5, 4, 64, device=device)
    kv = torch.randn(5, 2, 64, device=device)
    assert warm_up(q, kv, kv, torch.empty_like(q), page_size=16, cache_dtype=torch.float32)
    counts = [1, 2, 4, 8, 16, 32, config.MAX_KV_SPLITS]
    lone = config.num_kv_splits(1, 2, q.device, 2, 64, torch.float32)
    assert seen[2:] == [(n, True) for n in counts] + [(lone, False)]


@pytest.mark.gpu
def test_after_warm_up_no_decode_batch_compiles_a_kernel():
    """Decode batches of any size, planned as an engine plans them, launch only variants that
    warm_up and the plan's own warm_up compiled: Triton's caches do not grow."""
    device = torch.device("cuda")
    num_q_heads, num_kv_heads, head_dim, max_num_seqs = 32, 8, 128, 64
    q = torch.randn(5, num_q_heads, head_dim, dtype=torch.bfloat16, device=device)
    kv = torch.randn(5, num_kv_heads, head_dim, dtype=torch.bfloat16, device=device)
    assert warm_up(q, kv, kv, torch.empty_like(q), page_size=16, cache_dtype=torch.bfloat16)
    wave = config.decode_wave(device, num_q_heads // num_kv_heads, head_dim, torch.bfloat16)
    plan = fk.DecodePlan.allocate(max_num_seqs, num_kv_heads, wave, device)
    plan.warm_up()
    workspace = fk.SplitKVWorkspace.allocate(max_num_seqs, num_q_heads, num_kv_heads, head_dim,
                                             torch.bfloat16, device)
    caches = [kernel.device_caches[torch.cuda.current_device()][0]
              for kernel in (decode_kernel, merge_splits_kernel, plan_kernel)]
    compiled = [len(cache) for cache in caches]
    for num_seqs in (1, 2, 3, 7, 16, 33, 64):
        batch = make_batch([1] * num_seqs, [50 + 37 * i for i in range(num_seqs)],
                           num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                           dtype=torch.bfloat16, device=device, seed=num_seqs)
        plan.update(batch.cu_seqlens_q, batch.seq_lens, num_seqs)
        fk.paged_attention(*batch.args(), max_query_len=1, workspace=workspace,
                           decode_plan=plan, check_lengths=False)
    torch.cuda.synchronize()
    assert [len(cache) for cache in caches] == compiled


def test_paged_cache_like_has_the_layout_asked_for(device):
    cache = paged_cache_like(3, 2, 16, 64, torch.float16, (0, 2, 1, 3), device)
    assert cache.shape == (3, 2, 16, 128)
    assert cache.stride() == (16 * 2 * 128, 128, 2 * 128, 1)  # pages, then slots, then heads
