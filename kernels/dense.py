"""Attention on plain contiguous tensors, for users outside vLLM, on the same kernels.

Contiguous K/V ``[batch, seq, heads, D]`` are handed to the paged kernels as a cache of
one-token pages ``[batch * seq, heads, 1, D]`` whose block table is ``arange``: no copy.
"""

import torch

from . import checks
from .paged_attention import attention_over_pages


def _one_token_pages(name, t, query):
    checks.tensor(name, t, query.device, (query.dtype,), ndim=4)
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got strides {t.stride()}")
    if t.shape[3] != query.shape[-1]:
        raise ValueError(f"{name} has head_dim {t.shape[3]}, the query has {query.shape[-1]}")
    return t.view(t.shape[0] * t.shape[1], t.shape[2], 1, t.shape[3])


def _attend(query_rows, k, v, cu_seqlens_q, seq_lens, max_query_len, *, causal, softmax_scale, out):
    if k.shape != v.shape:
        raise ValueError(f"v has shape {tuple(v.shape)}, k has {tuple(k.shape)}")
    k_pages = _one_token_pages("k", k, query_rows)
    v_pages = _one_token_pages("v", v, query_rows)
    batch, max_kv = k.shape[0], k.shape[1]
    block_table = torch.arange(batch * max_kv, dtype=torch.int32, device=k.device).view(batch, max_kv)
    return attention_over_pages(
        query_rows, k_pages, v_pages, cu_seqlens_q, seq_lens, block_table,
        max_query_len=max_query_len, softmax_scale=softmax_scale, causal=causal, out=out)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
              softmax_scale: float | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Prefill attention: ``q [batch, seq_q, num_q_heads, D]``, ``k/v [batch, seq_kv,
    num_kv_heads, D]``, all contiguous, same dtype. With ``causal`` and ``seq_q < seq_kv`` the
    queries are the last ``seq_q`` positions (bottom-right alignment). Returns ``q``'s shape."""
    checks.tensor("q", q, dtypes=checks.ATTENTION_DTYPES, ndim=4)
    batch, seq_q, num_q_heads, head_dim = q.shape
    if k.dim() == 4 and k.shape[0] != batch:
        raise ValueError(f"k has batch {k.shape[0]}, q has {batch}")
    if k.dim() == 4 and seq_q > k.shape[1]:
        raise ValueError(f"q has {seq_q} positions but k only {k.shape[1]}")
    if out is not None:
        checks.tensor("out", out, q.device, (q.dtype,), ndim=4)
        if out.shape != q.shape or not out.is_contiguous():
            raise ValueError(f"out must be contiguous with q's shape {tuple(q.shape)}")
        out = out.view(batch * seq_q, num_q_heads, head_dim)
    query_rows = q.reshape(batch * seq_q, num_q_heads, head_dim)
    cu_seqlens_q = torch.arange(0, batch + 1, dtype=torch.int32, device=q.device) * seq_q
    seq_lens = torch.full((batch,), k.shape[1] if k.dim() == 4 else 0, dtype=torch.int32, device=q.device)
    result = _attend(query_rows, k, v, cu_seqlens_q, seq_lens, seq_q, causal=causal,
                     softmax_scale=softmax_scale, out=out)
    return result.view(batch, seq_q, num_q_heads, head_dim)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     cache_seqlens: torch.Tensor, *, softmax_scale: float | None = None,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """One new token per sequence against a contiguous cache: ``q [batch, num_q_heads, D]``,
    ``k_cache/v_cache [batch, max_seq_len, num_kv_heads, D]``, ``cache_seqlens`` int32 ``[batch]``
    (valid entries per sequence, the new token's K/V included). Returns ``[batch, num_q_heads, D]``."""
    checks.rows("q", q)
    batch = q.shape[0]
    cu_seqlens_q = torch.arange(0, batch + 1, dtype=torch.int32, device=q.device)
    return _attend(q, k_cache, v_cache, cu_seqlens_q, cache_seqlens, 1, causal=True,
                   softmax_scale=softmax_scale, out=out)
