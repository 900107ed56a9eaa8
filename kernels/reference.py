"""The oracle: plain float64 PyTorch attention that reads K/V through the block table.

Slow and obvious on purpose. Every kernel test compares against it; it never goes near a GPU
fast path, so a bug in the kernels cannot hide in it.
"""

import math

import torch

# Max-abs error against this reference that a correct kernel stays within, by dtype. Measured on
# an H100 (random inputs, causal GQA prefill): torch SDPA's own max-abs error is 1.0e-3 to 1.3e-3
# in fp16 and 0.8e-2 to 1.0e-2 in bf16; rounding the exact result to the dtype alone costs about
# 1e-3 (fp16) and 8e-3 (bf16). We allow three times SDPA's worst error: room for another fp32
# accumulation order and for P rounded to fp16/bf16 before P @ V, yet an order of magnitude under
# the 0.007..1.046 errors that indexing, masking or softmax-state bugs produce. fp32 runs its dot
# products in IEEE fp32 (no TF32). Under Triton's CPU interpreter, fp32 -> bf16 conversion
# truncates instead of rounding to nearest, so bf16 errors there are about twice the GPU's.
TOLERANCE = {
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
    torch.float32: 2e-5,
}


def gather_kv(kv_cache: torch.Tensor, block_table_row: torch.Tensor, seq_len: int,
              k_scale=None, v_scale=None):
    """K and V of one sequence, ``[seq_len, num_kv_heads, head_dim]`` each, in float64; an fp8
    cache is dequantised with its per-tensor scales."""
    page_size, head_dim = kv_cache.shape[2], kv_cache.shape[3] // 2
    pos = torch.arange(seq_len, device=kv_cache.device)
    pages = block_table_row.long()[pos // page_size]
    rows = kv_cache[pages, :, pos % page_size, :].double()  # [seq_len, num_kv_heads, 2 * head_dim]
    k, v = rows[..., :head_dim], rows[..., head_dim:]
    if k_scale is not None:
        k, v = k * float(k_scale), v * float(v_scale)
    return k, v


def attention_one_seq(q, k, v, *, causal: bool, softmax_scale: float, sliding_window=None,
                      logits_soft_cap=None, alibi_slopes=None, sinks=None):
    """``q [q_len, Hq, D]``, ``k/v [seq_len, Hkv, D]`` float64; queries are the last q_len
    positions of the sequence (bottom-right causal alignment)."""
    q_len, num_q_heads, _ = q.shape
    seq_len, num_kv_heads, _ = k.shape
    group = num_q_heads // num_kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * softmax_scale
    if logits_soft_cap:
        scores = logits_soft_cap * torch.tanh(scores / logits_soft_cap)
    q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)[None, :, None]
    k_pos = torch.arange(seq_len, device=q.device)[None, None, :]
    if alibi_slopes is not None:
        scores = scores + alibi_slopes.double().view(-1, 1, 1) * (k_pos - q_pos)
    if causal:
        scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
    if sliding_window:
        scores = scores.masked_fill(k_pos <= q_pos - sliding_window, float("-inf"))
    if sinks is not None:
        # The sink is one more logit per head in the softmax; its "value" is zero.
        sink = sinks.double().view(-1, 1, 1).expand(-1, q_len, 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v)


def paged_attention_reference(query, kv_cache, cu_seqlens_q, seq_lens, block_table, *,
                              softmax_scale=None, causal=True, sliding_window=None,
                              logits_soft_cap=None, alibi_slopes=None, sinks=None, k_scale=None,
                              v_scale=None) -> torch.Tensor:
    """float64 ``[num_tokens, num_q_heads, head_dim]``; same arguments as ``paged_attention``.
    Rows of tokens that belong to no sequence are left NaN."""
    head_dim = query.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    out = torch.full(query.shape, float("nan"), dtype=torch.float64, device=query.device)
    cu = cu_seqlens_q.tolist()
    for i, seq_len in enumerate(seq_lens[: len(cu) - 1].tolist()):
        if cu[i + 1] == cu[i]:
            continue
        k, v = gather_kv(kv_cache, block_table[i], seq_len, k_scale, v_scale)
        out[cu[i]:cu[i + 1]] = attention_one_seq(
            query[cu[i]:cu[i + 1]].double(), k, v, causal=causal, softmax_scale=scale,
            sliding_window=sliding_window, logits_soft_cap=logits_soft_cap,
            alibi_slopes=alibi_slopes, sinks=sinks)
    return out
