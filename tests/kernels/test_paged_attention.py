"""Paged attention against the float64 reference over the shapes vLLM hands over."""

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels import config

from ..accuracy import assert_matches_reference
from ..paged_batch import make_batch


def check(scenario, batch, **kwargs):
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=batch.max_query_len, out=out, **kwargs)
    causal = kwargs.get("causal", True)
    scale = kwargs.get("softmax_scale")
    assert_matches_reference(scenario, out, batch.reference(causal=causal, softmax_scale=scale),
                             batch.sdpa(causal=causal, softmax_scale=scale))
    return out


# Every head size vLLM models use that the kernels serve; page sizes vLLM may pick.
@pytest.mark.parametrize("head_dim", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("page_size", [16, 32, 64, 128])
def test_head_dims_and_page_sizes(device, head_dim, page_size):
    batch = make_batch([1, 12, 1], [150, 40, 3], head_dim=head_dim, page_size=page_size,
                       device=device, seed=head_dim + page_size)
    check(f"head_dim {head_dim}, page {page_size}", batch)


@pytest.mark.parametrize("num_q_heads,num_kv_heads", [(7, 1), (14, 2), (28, 4), (3, 3), (32, 1), (9, 3)])
def test_head_ratios_including_non_powers_of_two(device, num_q_heads, num_kv_heads):
    batch = make_batch([1, 20, 1, 3], [33, 20, 70, 90], num_q_heads=num_q_heads,
                       num_kv_heads=num_kv_heads, device=device)
    check(f"heads {num_q_heads}/{num_kv_heads}", batch)


@pytest.mark.parametrize("length", [1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100])
def test_every_length_prefill_and_decode(device, length):
    """No cliff at small or tile-boundary lengths (the earlier kernel broke at S=32)."""
    batch = make_batch([length, 1], [length, length], device=device, seed=length)
    check(f"length {length}", batch)


@pytest.mark.parametrize("splits", [1, 2, 4, 8, 32])
def test_split_kv_decode_any_split_count(device, splits):
    """Splits past the end of short sequences are empty; the merge must ignore them."""
    batch = make_batch([1] * 4, [1, 17, 64, 200], device=device, seed=splits)
    check(f"decode, {splits} KV splits", batch, num_kv_splits=splits)


def test_every_split_holds_tiles_while_there_are_enough(device):
    """12 of the kernel's tiles in 8 splits: each split gets one or two, where cutting two a
    split left the last two splits empty (their log-sum-exp -inf)."""
    block_n = config.decode_tiles(64, 2, 8, torch.float16, torch.float16,
                                  config.shared_memory_per_block(device)).block_n
    batch = make_batch([1], [12 * block_n], device=device)
    workspace = fk.SplitKVWorkspace.with_rows(8, 4, 64, device)
    check("decode, 12 tiles in 8 KV splits", batch, num_kv_splits=8, workspace=workspace)
    assert workspace.partial_lse[:8].isfinite().all()


@pytest.mark.parametrize("splits", [2, 8, 32, 64])
def test_split_merge_with_a_partial_block_of_heads(device, splits):
    """12 query heads: the merge's blocks of heads (config.merge_heads: 16 at 2 splits, 4 at 8)
    overrun the heads there are, one head at 32 walks the loop, and at 64 the merge takes its
    one-tile form; a prefill in the batch has workspace rows the merge must skip."""
    batch = make_batch([1, 1, 6, 1], [90, 3, 40, 33], num_q_heads=12, num_kv_heads=4,
                       device=device, seed=splits)
    check(f"decode, 12 query heads, {splits} KV splits", batch, num_kv_splits=splits)


def test_mixed_batch_decodes_extends_prefills(device):
    q_lens = [1, 1, 1, 4, 3, 30, 45]
    kv_lens = [7, 130, 64, 4, 90, 30, 120]
    check("mixed batch", make_batch(q_lens, kv_lens, num_q_heads=8, num_kv_heads=2, device=device))


def test_hnd_layout(device):
    check("HND cache layout", make_batch([5, 1], [40, 33], layout="HND", device=device))


def test_large_logits(device):
    """Logits in the hundreds: the running max must keep exp2 finite and exact."""
    batch = make_batch([24, 1], [60, 50], scale=6.0, device=device, seed=7)
    check("large logits", batch, softmax_scale=1.0)


def test_custom_softmax_scale(device):
    check("softmax_scale 0.3", make_batch([9, 1], [20, 20], device=device), softmax_scale=0.3)


def test_padding_sequences_with_no_tokens(device):
    """CUDA-graph padding: trailing sequences with zero query tokens and zero length."""
    batch = make_batch([1, 5, 0, 0], [10, 12, 0, 0], device=device)
    out = check("padded batch", batch)
    assert out.shape[0] == 6


def test_rows_outside_the_batch_are_untouched(device):
    """Only tokens the batch describes are written (vLLM pads num_tokens)."""
    batch = make_batch([3, 1], [3, 9], device=device)
    out = torch.full((batch.query.shape[0] + 4, *batch.query.shape[1:]), 7.0,
                     dtype=batch.query.dtype, device=device)
    padded_query = torch.cat([batch.query, torch.zeros_like(out[:4])])
    fk.paged_attention(padded_query, *batch.args()[1:], max_query_len=3, out=out)
    assert (out[4:] == 7.0).all()


def test_decode_only_batch_launches_no_prefill(device):
    check("decode-only", make_batch([1] * 6, [1, 2, 16, 17, 80, 5], num_q_heads=8,
                                    num_kv_heads=1, device=device))


def test_empty_batch(device):
    batch = make_batch([], [], device=device)
    out = fk.paged_attention(*batch.args(), max_query_len=1)
    assert out.shape[0] == 0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_long_mixed_batch(device, dtype):
    q_lens = [1] * 8 + [512, 1000, 17]
    kv_lens = [4000, 1, 300, 8192, 16, 17, 2048, 100, 2048, 1000, 3000]
    check("gpu long mixed batch", make_batch(q_lens, kv_lens, num_q_heads=32, num_kv_heads=8,
                                             head_dim=128, dtype=dtype, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_long_prefill(device, dtype, head_dim):
    batch = make_batch([2048, 700], [2048, 3000], num_q_heads=16, num_kv_heads=4,
                       head_dim=head_dim, dtype=dtype, device=device)
    check(f"gpu prefill 2k, head_dim {head_dim}", batch)


@pytest.mark.gpu
def test_gpu_int64_page_offsets(device):
    """A cache of more than 2^31 elements, with sequences on its last pages: page * stride
    overflows int32."""
    num_kv_heads, head_dim, page_size = 8, 128, 16
    page_elems = num_kv_heads * page_size * 2 * head_dim
    num_pages = (2**31) // page_elems + 64
    kv_cache = torch.empty(num_pages, page_size, num_kv_heads, 2 * head_dim, dtype=torch.float16,
                           device=device).permute(0, 2, 1, 3)
    small = make_batch([7, 1], [300, 500], num_q_heads=32, num_kv_heads=num_kv_heads,
                       head_dim=head_dim, page_size=page_size, device=device)
    high_pages = small.block_table + (num_pages - small.kv_cache.shape[0])
    kv_cache[num_pages - small.kv_cache.shape[0]:] = small.kv_cache
    out = fk.paged_attention(small.query, kv_cache, small.cu_seqlens_q, small.seq_lens, high_pages,
                             max_query_len=7)
    assert_matches_reference("int64 page offsets (>2^31 elements)", out, small.reference())
    del kv_cache
    torch.cuda.empty_cache()


def test_many_sequences(device):
    """Hundreds of sequences, most of them decodes: each prefill program must find its own
    sequence among them (``prefill.find_seq``)."""
    q_lens = [1] * 250 + [5, 1, 17, 2, 1, 9] * 2
    kv_lens = [3] * 250 + [20, 9, 40, 2, 33, 9] * 2
    batch = make_batch(q_lens, kv_lens, num_q_heads=4, num_kv_heads=2, device=device, seed=3)
    check("262 sequences", batch)
