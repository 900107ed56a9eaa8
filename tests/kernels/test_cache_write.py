"""write_kv_cache: every token lands in its slot, padding (-1) is skipped, nothing else moves."""

import pytest
import torch

import flashcore_kernels as fk


def empty_cache(num_pages, page_size, num_kv_heads, head_dim, dtype, device, layout):
    shape = (num_pages, page_size, num_kv_heads, 2 * head_dim) if layout == "NHD" else \
        (num_pages, num_kv_heads, page_size, 2 * head_dim)
    cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    return cache.permute(0, 2, 1, 3) if layout == "NHD" else cache


@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("num_kv_heads,head_dim", [(2, 64), (3, 80), (1, 256)])
def test_write_then_read_back(device, layout, dtype, num_kv_heads, head_dim):
    num_pages, page_size, num_tokens = 6, 16, 40
    cache = empty_cache(num_pages, page_size, num_kv_heads, head_dim, dtype, device, layout)
    slots = torch.randperm(num_pages * page_size)[:num_tokens].to(device)
    slots[::7] = -1  # padding tokens
    key = torch.randn(num_tokens, num_kv_heads, head_dim).to(dtype).to(device)
    value = torch.randn(num_tokens, num_kv_heads, head_dim).to(dtype).to(device)
    fk.write_kv_cache(key, value, cache, slots)

    written = slots >= 0
    pages, offsets = slots[written] // page_size, slots[written] % page_size
    stored = cache[pages, :, offsets]  # [n, num_kv_heads, 2 * head_dim]
    assert torch.equal(stored[..., :head_dim], key[written])
    assert torch.equal(stored[..., head_dim:], value[written])
    untouched = torch.ones(num_pages * page_size, dtype=torch.bool, device=device)
    untouched[slots[written]] = False
    rest = cache.permute(0, 2, 1, 3).reshape(num_pages * page_size, -1)[untouched]
    assert torch.isnan(rest).all()


def test_strided_views_of_fused_qkv(device):
    """vLLM hands key and value over as column slices of one [tokens, (Hq + 2 Hkv) * D] tensor."""
    num_q_heads, num_kv_heads, head_dim, num_tokens = 4, 2, 64, 9
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim).half().to(device)
    q_size, kv_size = num_q_heads * head_dim, num_kv_heads * head_dim
    key = qkv[:, q_size:q_size + kv_size].view(num_tokens, num_kv_heads, head_dim)
    value = qkv[:, q_size + kv_size:].view(num_tokens, num_kv_heads, head_dim)
    assert not key.is_contiguous()
    cache = empty_cache(2, 16, num_kv_heads, head_dim, torch.float16, device, "NHD")
    slots = torch.arange(3, 3 + num_tokens, device=device)
    fk.write_kv_cache(key, value, cache, slots)
    stored = cache[0, :, 3:3 + num_tokens].transpose(0, 1)
    assert torch.equal(stored[..., :head_dim], key) and torch.equal(stored[..., head_dim:], value)


def test_longer_slot_mapping_reads_only_num_tokens(device):
    cache = empty_cache(2, 16, 1, 64, torch.float16, device, "NHD")
    key = torch.randn(2, 1, 64).half().to(device)
    slots = torch.tensor([0, 1, 2, 3], device=device)
    fk.write_kv_cache(key, key, cache, slots)
    assert torch.isnan(cache[0, :, 2:]).all() and not torch.isnan(cache[0, :, :2]).any()


def test_rejects_bad_arguments(device):
    cache = empty_cache(2, 16, 2, 64, torch.float16, device, "NHD")
    key = torch.randn(3, 2, 64).half().to(device)
    slots = torch.arange(3, device=device)
    with pytest.raises(TypeError, match="slot_mapping has dtype torch.int32"):
        fk.write_kv_cache(key, key, cache, slots.int())
    with pytest.raises(ValueError, match="slot_mapping has 2 entries for 3 tokens"):
        fk.write_kv_cache(key, key, cache, slots[:2])
    with pytest.raises(ValueError, match="kv_cache has shape"):
        fk.write_kv_cache(key[:, :1], key[:, :1], cache, slots)
    with pytest.raises(ValueError, match="value has shape"):
        fk.write_kv_cache(key, key[:2], cache, slots)
    with pytest.raises(ValueError, match="kv_cache is on meta"):
        fk.write_kv_cache(key, key, cache.to("meta"), slots)
