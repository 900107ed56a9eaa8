"""Argument checks shared by the launchers: bad input raises before anything is launched.

Shape, dtype, device and stride checks read only tensor metadata. ``lengths`` is the one check
that reads tensor values (and so waits for the GPU); launchers run it unless told not to.
"""

from dataclasses import dataclass

import torch

from . import config

ATTENTION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
METADATA_DTYPES = (torch.int32,)
FP8_CACHE_DTYPES = (torch.float8_e4m3fn,)
FP8_MIN_CAPABILITY = (8, 9)  # Ada: Triton compiles float8 e4m3 from here on
FP8_MIN_ARCH = 10 * FP8_MIN_CAPABILITY[0] + FP8_MIN_CAPABILITY[1]  # the same, as sm_89
MIN_HEAD_DIM, MAX_HEAD_DIM, HEAD_DIM_MULTIPLE = 16, 256, 8


def tensor(name, t, device=None, dtypes=None, ndim=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, but the query is on {device}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} has dtype {t.dtype}, expected one of: {names}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")


def last_dim_contiguous(name, t) -> None:
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dimension, got strides {t.stride()}")


def head_dim(name, size) -> None:
    if not (MIN_HEAD_DIM <= size <= MAX_HEAD_DIM and size % HEAD_DIM_MULTIPLE == 0):
        raise ValueError(f"{name}: head_dim {size} is not supported (need a multiple of "
                         f"{HEAD_DIM_MULTIPLE} from {MIN_HEAD_DIM} to {MAX_HEAD_DIM})")


def heads(num_q_heads, num_kv_heads) -> None:
    if num_kv_heads < 1 or num_q_heads % num_kv_heads != 0:
        raise ValueError(f"num_q_heads ({num_q_heads}) must be a multiple of num_kv_heads "
                         f"({num_kv_heads})")


def rows(name, t, device=None, dtypes=ATTENTION_DTYPES):
    """A ``[num_tokens, num_heads, head_dim]`` tensor such as the query or the output."""
    tensor(name, t, device, dtypes, ndim=3)
    last_dim_contiguous(name, t)
    head_dim(name, t.shape[2])
    return tuple(t.shape)


def kv_rows(key, value):
    num_tokens, num_kv_heads, size = rows("key", key)
    rows("value", value, key.device, (key.dtype,))
    if tuple(value.shape) != tuple(key.shape):
        raise ValueError(f"value has shape {tuple(value.shape)}, key has {tuple(key.shape)}")
    return num_tokens, num_kv_heads, size


def packed_cache(kv_cache, num_kv_heads, size, device, dtypes=ATTENTION_DTYPES) -> None:
    """vLLM 0.26's packed cache: logical ``[num_pages, num_kv_heads, page_size, 2 * head_dim]``."""
    tensor("kv_cache", kv_cache, device, dtypes, ndim=4)
    last_dim_contiguous("kv_cache", kv_cache)
    expected = (num_kv_heads, 2 * size)
    if (kv_cache.shape[1], kv_cache.shape[3]) != expected:
        raise ValueError(f"kv_cache has shape {tuple(kv_cache.shape)}, expected [num_pages, "
                         f"{num_kv_heads}, page_size, {2 * size}] (num_kv_heads, 2 * head_dim)")


def batch(cu_seqlens_q, seq_lens, block_table, device) -> int:
    """Ragged-batch metadata; returns num_seqs."""
    tensor("cu_seqlens_q", cu_seqlens_q, device, METADATA_DTYPES, ndim=1)
    num_seqs = cu_seqlens_q.shape[0] - 1
    if num_seqs < 0:
        raise ValueError("cu_seqlens_q must hold num_seqs + 1 offsets, got an empty tensor")
    tensor("seq_lens", seq_lens, device, METADATA_DTYPES, ndim=1)
    tensor("block_table", block_table, device, METADATA_DTYPES, ndim=2)
    if seq_lens.shape[0] < num_seqs or block_table.shape[0] < num_seqs:
        raise ValueError(f"cu_seqlens_q describes {num_seqs} sequences, but seq_lens has "
                         f"{seq_lens.shape[0]} and block_table {block_table.shape[0]} rows")
    if block_table.shape[1] > 1 and block_table.stride(1) != 1:
        raise ValueError(f"block_table rows must be contiguous, got strides {block_table.stride()}")
    return num_seqs


def lengths(cu_seqlens_q, seq_lens, block_table, num_tokens, page_size, num_pages,
            max_query_len, max_seq_len=None) -> None:
    """Per-sequence consistency of the metadata, and the host-side bounds against it (a
    max_query_len below a query's length would skip its prefill). Reads tensor values:
    synchronises with the GPU."""
    num_seqs = cu_seqlens_q.shape[0] - 1
    cu = cu_seqlens_q.cpu().long()
    q_lens = cu[1:] - cu[:-1]
    kv_lens = seq_lens[:num_seqs].cpu().long()
    if num_seqs and (cu[0] < 0 or (q_lens < 0).any() or cu[-1] > num_tokens):
        raise ValueError(f"cu_seqlens_q must be non-decreasing offsets within the {num_tokens} "
                         f"query tokens, got {cu.tolist()}")
    if num_seqs and int(q_lens.max()) > max_query_len:
        raise ValueError(f"max_query_len is {max_query_len}, but a query has "
                         f"{int(q_lens.max())} tokens")
    if num_seqs and max_seq_len is not None and int(kv_lens.max()) > max_seq_len:
        raise ValueError(f"max_seq_len is {max_seq_len}, but seq_lens holds {int(kv_lens.max())}")
    longer = (q_lens > kv_lens).nonzero().flatten()
    if len(longer):
        i = int(longer[0])
        raise ValueError(f"sequence {i}: query length {int(q_lens[i])} is longer than its "
                         f"sequence length {int(kv_lens[i])} (seq_lens must include the new tokens)")
    pages_needed = (kv_lens + page_size - 1) // page_size
    short = (pages_needed > block_table.shape[1]).nonzero().flatten()
    if len(short):
        i = int(short[0])
        raise ValueError(f"sequence {i}: seq_len {int(kv_lens[i])} needs {int(pages_needed[i])} "
                         f"pages of {page_size}, but block_table has {block_table.shape[1]} columns")
    used = torch.arange(block_table.shape[1])[None, :] < pages_needed[:, None]
    pages = block_table[:num_seqs].cpu().long()[used]
    if len(pages) and (pages.min() < 0 or pages.max() >= num_pages):
        raise ValueError(f"block_table holds page ids outside [0, {num_pages}) for pages in use")


def cache_dtypes(query_dtype):
    """A cache holds the query's dtype, or fp8 (dequantised with per-tensor scales)."""
    return (query_dtype, *FP8_CACHE_DTYPES)


@dataclass(frozen=True)
class Variant:
    """The optional parts of the attention, checked, in the form the kernels take."""

    sliding_window: int = 0  # 0: no window
    soft_cap: float = 0.0  # 0: no soft-capping
    alibi_slopes: torch.Tensor | None = None
    sinks: torch.Tensor | None = None
    k_scale: torch.Tensor | None = None
    v_scale: torch.Tensor | None = None


def variant(num_q_heads, device, cache_dtype, causal, sliding_window, logits_soft_cap,
            alibi_slopes, sinks, k_scale, v_scale) -> Variant:
    if sliding_window is not None and sliding_window != 0:
        if not isinstance(sliding_window, int) or sliding_window < 1:
            raise ValueError(f"sliding_window must be a positive int, got {sliding_window!r}")
        if not causal:
            raise ValueError("sliding_window needs causal=True (a window before each query)")
    if logits_soft_cap is not None and logits_soft_cap != 0 and not logits_soft_cap > 0:
        raise ValueError(f"logits_soft_cap must be positive, got {logits_soft_cap!r}")
    for name, t in (("alibi_slopes", alibi_slopes), ("sinks", sinks)):
        if t is not None:
            tensor(name, t, device, ATTENTION_DTYPES, ndim=1)
            if t.shape[0] != num_q_heads or t.stride(0) != 1:
                raise ValueError(f"{name} must be contiguous with one entry per query head "
                                 f"({num_q_heads}), got shape {tuple(t.shape)}")
    fp8_scales(cache_dtype, k_scale, v_scale, device)
    return Variant(sliding_window or 0, float(logits_soft_cap or 0.0), alibi_slopes, sinks,
                   k_scale, v_scale)


def fp8_scales(cache_dtype, k_scale, v_scale, device) -> None:
    """Per-tensor scales come with an fp8 cache, and only with one; the GPU must have fp8."""
    fp8 = cache_dtype in FP8_CACHE_DTYPES
    if fp8 and torch.device(device).type == "cuda":
        capability = config.compute_capability(torch.device(device))
        if capability < FP8_MIN_CAPABILITY:
            raise ValueError(f"an fp8 KV cache needs compute capability "
                             f"{'.'.join(map(str, FP8_MIN_CAPABILITY))} or newer (Triton has no "
                             f"float8 e4m3 before Ada); this GPU is {'.'.join(map(str, capability))}")
    if fp8 != (k_scale is not None) or (k_scale is None) != (v_scale is None):
        raise ValueError(f"k_scale and v_scale are required with an fp8 KV cache and only then "
                         f"(cache dtype {cache_dtype}, k_scale {'set' if k_scale is not None else 'None'}, "
                         f"v_scale {'set' if v_scale is not None else 'None'})")
    for name, t in (("k_scale", k_scale), ("v_scale", v_scale)):
        if t is not None:
            tensor(name, t, device, (torch.float32,))
            if t.numel() != 1:
                raise ValueError(f"{name} must hold one per-tensor scale, got shape {tuple(t.shape)}")
