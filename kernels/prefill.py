"""Attention for every sequence whose query is longer than one token (prefills and extends).

One program owns BLOCK_Q consecutive query tokens of one sequence and all ``queries_per_kv``
query heads that share one KV head, packed into BLOCK_M = BLOCK_Q * queries_per_kv rows, so
each K/V tile it loads from the paged cache serves every query head of the group.

The grid is ``(num_tokens // BLOCK_Q + num_seqs, num_kv_heads)``: an upper bound on the query
blocks of any batch of that many tokens and sequences, computed from shapes alone (CUDA-graph
safe). Sequence ``i`` owns the program ids ``[start(i), start(i + 1))`` with
``start(i) = cu_seqlens_q[i] // BLOCK_Q + i``; programs past a sequence's last block exit.
"""

import triton
import triton.language as tl

from .tile import alibi_slopes_log2, attend_kv_range, initial_softmax_state


@triton.jit
def find_seq(cu_seqlens_q, num_seqs, q_block_id, BLOCK_Q: tl.constexpr):
    """Binary search for the sequence whose query blocks include program ``q_block_id``."""
    first = tl.load(cu_seqlens_q)
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        mid_start = (tl.load(cu_seqlens_q + mid) - first) // BLOCK_Q + mid
        if mid_start <= q_block_id:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def prefill_grid(num_tokens: int, num_seqs: int, num_kv_heads: int, block_q: int) -> tuple:
    """The launch grid whose program ids ``locate_q_block`` maps to query blocks (module
    docstring): an upper bound on the query blocks of any batch of these shapes."""
    return (num_tokens // block_q + num_seqs, num_kv_heads)


@triton.jit
def locate_q_block(cu_seqlens_q, num_seqs, q_block_id, BLOCK_Q: tl.constexpr):
    """The sequence query block ``q_block_id`` belongs to, the sequence's first token and query
    length, and which of its query blocks that is. Causal blocks late in a sequence do the most
    work: the kernels number the blocks down from the first program id, so the heavy blocks
    start first and the light ones fill the tail of the grid."""
    seq = find_seq(cu_seqlens_q, num_seqs, q_block_id, BLOCK_Q)
    first_token = tl.load(cu_seqlens_q + seq)
    q_len = tl.load(cu_seqlens_q + seq + 1) - first_token
    q_block = q_block_id - ((first_token - tl.load(cu_seqlens_q)) // BLOCK_Q + seq)
    return seq, first_token, q_len, q_block


@triton.jit
def visible_kv(context_len, seq_len, q_len, q_block, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
               CAUSAL: tl.constexpr):
    """The KV positions query block ``q_block`` attends to, [0, kv_end), and how many of them,
    full_end (a whole number of BLOCK_N tiles), every row of the block sees. Causal attention is
    aligned bottom-right: the block's first query sits at position context_len +
    q_block * BLOCK_Q."""
    if CAUSAL:
        kv_end = context_len + tl.minimum((q_block + 1) * BLOCK_Q, q_len)
        full_end = (context_len + q_block * BLOCK_Q + 1) // BLOCK_N * BLOCK_N
    else:
        kv_end = seq_len
        full_end = seq_len // BLOCK_N * BLOCK_N
    return kv_end, full_end


# Not specialised on value (Triton compiles a variant for an integer equal to 1 or divisible by
# 16): num_seqs changes every batch, the block table's row stride between an engine and
# warm_up's table. One compiled kernel then serves every batch, and warm_up compiles it.
@triton.jit(do_not_specialize=["num_seqs", "stride_bt"])
def prefill_kernel(
    out,  # [num_tokens, num_q_heads, HEAD_DIM]
    query,  # [num_tokens, num_q_heads, HEAD_DIM]
    k_cache,  # [num_pages, num_kv_heads, PAGE_SIZE, HEAD_DIM] (view into the packed cache)
    v_cache,  # [num_pages, num_kv_heads, PAGE_SIZE, HEAD_DIM] (same strides as k_cache)
    block_table,  # [num_seqs, max_pages_per_seq] int32
    cu_seqlens_q,  # [num_seqs + 1] int32
    seq_lens,  # [num_seqs] int32, KV length including this step's tokens
    qk_scale,  # softmax_scale * log2(e)
    alibi_slopes,  # [num_q_heads] float32, or None
    sinks,  # [num_q_heads] attention-sink logits, or None
    k_scale, v_scale,  # [1] float32 fp8 dequantisation scales, or None
    num_seqs,
    stride_qt, stride_qh,
    stride_ot, stride_oh,
    stride_page, stride_kvh, stride_slot,
    stride_bt,
    QUERIES_PER_KV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,  # BLOCK_M // QUERIES_PER_KV
    BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_P: tl.constexpr,
    CAUSAL: tl.constexpr,
    SLIDING_WINDOW: tl.constexpr,
    SOFT_CAP: tl.constexpr,
    FP32_DOT: tl.constexpr,
    LOOKAHEAD: tl.constexpr,  # see attend_kv_range (config.TileConfig.lookahead)
):
    kv_head = tl.program_id(1)
    q_block_id = tl.num_programs(0) - 1 - tl.program_id(0)
    seq, first_token, q_len, q_block = locate_q_block(cu_seqlens_q, num_seqs, q_block_id, BLOCK_Q)
    # Single-token queries belong to the decode kernel.
    if q_len <= 1 or q_block * BLOCK_Q >= q_len:
        return
    seq_len = tl.load(seq_lens + seq)
    context_len = seq_len - q_len  # tokens already in the cache before this step

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_P)
    q_idx = q_block * BLOCK_Q + offs_m // QUERIES_PER_KV  # query index within the sequence
    q_head = kv_head * QUERIES_PER_KV + offs_m % QUERIES_PER_KV
    row_valid = (offs_m < BLOCK_Q * QUERIES_PER_KV) & (q_idx < q_len)
    q_pos = context_len + q_idx  # bottom-right aligned causal position
    token = (first_token + q_idx).to(tl.int64)
    io_mask = row_valid[:, None] & (offs_d < HEAD_DIM)[None, :]

    q = tl.load(query + token[:, None] * stride_qt + q_head[:, None] * stride_qh + offs_d[None, :],
                mask=io_mask, other=0.0)
    if FP32_DOT:
        q = q.to(tl.float32)

    # KV tiles in three runs: [kv_lo, full_lo) masked (the sliding window's edge),
    # [full_lo, full_hi) visible to every row (no masks), [full_hi, kv_end) masked (the diagonal).
    first_pos = context_len + q_block * BLOCK_Q
    kv_end, full_hi = visible_kv(context_len, seq_len, q_len, q_block, BLOCK_Q, BLOCK_N, CAUSAL)
    if SLIDING_WINDOW > 0:  # causal only (the launcher checks)
        kv_lo = tl.maximum(first_pos - SLIDING_WINDOW + 1, 0)  # first token any row can see
        full_lo = tl.minimum(tl.cdiv(tl.maximum(kv_end - SLIDING_WINDOW, 0), BLOCK_N) * BLOCK_N, kv_end)
        full_hi = tl.maximum(full_hi, full_lo)
    else:
        kv_lo = 0
        full_lo = 0

    k_cache += kv_head.to(tl.int64) * stride_kvh
    v_cache += kv_head.to(tl.int64) * stride_kvh
    block_table_row = block_table + seq.to(tl.int64) * stride_bt
    if alibi_slopes is not None:
        slope = alibi_slopes_log2(alibi_slopes, q_head, row_valid)
    else:
        slope = None  # (a jit function cannot return None: decided here, at compile time)
    if k_scale is not None:  # fp8 cache: q.(s_k k) = s_k (q.k), and sum p (s_v v) = s_v sum p v
        qk_scale = qk_scale * tl.load(k_scale)
        v_scale = tl.load(v_scale)
    acc, m_i, l_i = initial_softmax_state(sinks, q_head, row_valid, BLOCK_M, HEAD_DIM_P)
    if SLIDING_WINDOW > 0:
        acc, m_i, l_i = attend_kv_range(
            acc, m_i, l_i, q, q_pos, k_cache, v_cache, block_table_row, kv_lo, full_lo, qk_scale,
            stride_page, stride_slot, slope, MASKED=True, LOOKAHEAD=False, CAUSAL=CAUSAL,
            SLIDING_WINDOW=SLIDING_WINDOW, SOFT_CAP=SOFT_CAP, PAGE_SIZE=PAGE_SIZE, BLOCK_N=BLOCK_N,
            HEAD_DIM=HEAD_DIM, HEAD_DIM_P=HEAD_DIM_P, FP32_DOT=FP32_DOT)
    acc, m_i, l_i = attend_kv_range(
        acc, m_i, l_i, q, q_pos, k_cache, v_cache, block_table_row, full_lo, full_hi, qk_scale,
        stride_page, stride_slot, slope, MASKED=False, LOOKAHEAD=LOOKAHEAD, CAUSAL=CAUSAL,
        SLIDING_WINDOW=SLIDING_WINDOW, SOFT_CAP=SOFT_CAP, PAGE_SIZE=PAGE_SIZE, BLOCK_N=BLOCK_N,
        HEAD_DIM=HEAD_DIM, HEAD_DIM_P=HEAD_DIM_P, FP32_DOT=FP32_DOT)
    acc, m_i, l_i = attend_kv_range(
        acc, m_i, l_i, q, q_pos, k_cache, v_cache, block_table_row, full_hi, kv_end, qk_scale,
        stride_page, stride_slot, slope, MASKED=True, LOOKAHEAD=False, CAUSAL=CAUSAL,
        SLIDING_WINDOW=SLIDING_WINDOW, SOFT_CAP=SOFT_CAP, PAGE_SIZE=PAGE_SIZE, BLOCK_N=BLOCK_N,
        HEAD_DIM=HEAD_DIM, HEAD_DIM_P=HEAD_DIM_P, FP32_DOT=FP32_DOT)

    # With a sink, l_i >= 1; without one every row has at least one visible token.
    acc = acc / l_i[:, None]
    if v_scale is not None:
        acc = acc * v_scale
    tl.store(out + token[:, None] * stride_ot + q_head[:, None] * stride_oh + offs_d[None, :],
             acc.to(out.dtype.element_ty), mask=io_mask)
