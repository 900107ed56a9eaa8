"""Scatter this step's keys and values into the paged KV cache."""

import torch
import triton
import triton.language as tl

from . import checks, config


@triton.jit
def write_kv_cache_kernel(
    key,  # [num_tokens, NUM_KV_HEADS, HEAD_DIM]
    value,  # [num_tokens, NUM_KV_HEADS, HEAD_DIM]
    kv_cache,  # [num_pages, NUM_KV_HEADS, PAGE_SIZE, 2 * HEAD_DIM]: K in [..., :D], V in [..., D:]
    slot_mapping,  # [num_tokens] int64: page * PAGE_SIZE + offset, or -1 for padding
    k_scale, v_scale,  # [1] float32 fp8 quantisation scales, or None
    stride_kt, stride_kh,
    stride_vt, stride_vh,
    stride_page, stride_head, stride_slot,
    NUM_KV_HEADS: tl.constexpr,
    NUM_KV_HEADS_P: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_P: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping + token)
    if slot < 0:
        return
    offs_h = tl.arange(0, NUM_KV_HEADS_P)
    offs_d = tl.arange(0, HEAD_DIM_P)
    mask = (offs_h < NUM_KV_HEADS)[:, None] & (offs_d < HEAD_DIM)[None, :]
    k = tl.load(key + token * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask)
    v = tl.load(value + token * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
    dst = kv_cache + (slot // PAGE_SIZE) * stride_page + (slot % PAGE_SIZE) * stride_slot
    dst += offs_h[:, None] * stride_head + offs_d[None, :]
    tl.store(dst, quantize(k, k_scale, kv_cache.dtype.element_ty), mask=mask)
    tl.store(dst + HEAD_DIM, quantize(v, v_scale, kv_cache.dtype.element_ty), mask=mask)


FP8_E4M3_MAX = tl.constexpr(448.0)  # largest finite float8_e4m3fn


@triton.jit
def quantize(x, scale, dtype):
    """Cast to the cache dtype; for fp8, divide by the per-tensor scale and saturate (a plain
    cast of an out-of-range value would give NaN)."""
    if scale is None:
        return x.to(dtype)
    else:
        y = x.to(tl.float32) / tl.load(scale)
        return tl.clamp(y, -FP8_E4M3_MAX, FP8_E4M3_MAX).to(dtype)


def write_kv_cache(key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                   slot_mapping: torch.Tensor, k_scale: torch.Tensor | None = None,
                   v_scale: torch.Tensor | None = None) -> None:
    """Write ``key``/``value`` rows into ``kv_cache`` at ``slot_mapping``; slot -1 is skipped.

    Args:
        key, value: ``[num_tokens, num_kv_heads, head_dim]``, may be strided views (for example
            of a fused QKV tensor) as long as the last dimension is contiguous.
        kv_cache: logical ``[num_pages, num_kv_heads, page_size, 2 * head_dim]`` with any stride
            order (vLLM 0.26's packed layout); K goes to ``[..., :head_dim]``, V to the rest.
        slot_mapping: int64 ``[>= num_tokens]``; only the first ``num_tokens`` entries are read.
        k_scale, v_scale: float32 ``[1]`` scales, required with a float8_e4m3fn cache: the
            cache holds ``clamp(key / k_scale)`` (saturating at the fp8 range).
    """
    num_tokens, num_kv_heads, head_dim = checks.kv_rows(key, value)
    checks.packed_cache(kv_cache, num_kv_heads, head_dim, key.device, checks.cache_dtypes(key.dtype))
    checks.fp8_scales(kv_cache.dtype, k_scale, v_scale, key.device)
    checks.tensor("slot_mapping", slot_mapping, key.device, dtypes=(torch.int64,), ndim=1)
    if slot_mapping.shape[0] < num_tokens:
        raise ValueError(f"slot_mapping has {slot_mapping.shape[0]} entries for {num_tokens} tokens")
    if num_tokens == 0:
        return
    write_kv_cache_kernel[(num_tokens,)](
        key, value, kv_cache, slot_mapping, k_scale, v_scale,
        key.stride(0), key.stride(1),
        value.stride(0), value.stride(1),
        kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads,
        NUM_KV_HEADS_P=config.next_power_of_2(num_kv_heads),
        PAGE_SIZE=kv_cache.shape[2],
        HEAD_DIM=head_dim,
        HEAD_DIM_P=config.padded_head_dim(head_dim),
    )
