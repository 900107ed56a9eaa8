"""Triton device functions shared by the prefill and decode kernels.

Both kernels hold a tile of query rows (``BLOCK_M`` rows, each one query token of one query
head) and stream the key/value tokens of one sequence from the paged cache through
``attend_kv_range``, which keeps the online-softmax state in float32:

    m_i  [BLOCK_M]              running max of the scaled logits, in log2 units
    l_i  [BLOCK_M]              running sum of exp2(logit - m_i)
    acc  [BLOCK_M, HEAD_DIM_P]  running sum of exp2(logit - m_i) * v
"""

import triton
import triton.language as tl


@triton.jit
def kv_token_offsets(
    block_table_row,  # [max_pages_per_seq] int32, physical page of each logical page
    kv_pos,  # [BLOCK_N] logical token positions in the sequence
    kv_valid,  # [BLOCK_N] bool, or None when every position is in range
    stride_page,
    stride_slot,
    PAGE_SIZE: tl.constexpr,
):
    """Element offset of each token's K row (the V row sits HEAD_DIM further on)."""
    if kv_valid is None:
        page = tl.load(block_table_row + kv_pos // PAGE_SIZE)
    else:
        page = tl.load(block_table_row + kv_pos // PAGE_SIZE, mask=kv_valid, other=0)
    # int64: page index times page stride overflows int32 in caches over 2^31 elements.
    return page.to(tl.int64) * stride_page + (kv_pos % PAGE_SIZE).to(tl.int64) * stride_slot


@triton.jit
def kv_tiles(seq_len, kv_first, block_n):
    """The KV range a decode reads in steps of ``block_n`` tokens: where its first step starts
    (the step that holds ``kv_first``, the window's first token, or 0) and how many steps reach
    ``seq_len``. The decode kernel shares these steps out among a decode's splits; the decode
    plan counts them, so that no split it makes gets none."""
    kv_lo = kv_first // block_n * block_n
    return kv_lo, tl.cdiv(seq_len - kv_lo, block_n)


@triton.jit
def load_or_zero(ptrs, mask):
    """``tl.load`` with zeros where ``mask`` is False; ``mask`` None loads everything."""
    if mask is None:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def load_kv(ptrs, mask, dtype):
    """A K or V tile in ``dtype``. An fp8 (e4m3) cache converts exactly: every e4m3 value is a
    normal fp16 and bf16 number. To bf16 it goes through float32, which keeps the split decode
    kernel at 128 registers (a direct conversion takes it to 168). Its per-tensor scales are
    applied outside the loop (``qk_scale`` and the output), never per element."""
    x = load_or_zero(ptrs, mask)
    if x.dtype.is_fp8() and dtype != tl.float16:
        x = x.to(tl.float32)
    return x.to(dtype)


@triton.jit
def fp8_cache_query(q, qk_scale):
    """The query and ``qk_scale`` for products over an fp8 (e4m3) cache, which run in fp16: e4m3
    becomes fp16 in one instruction per two elements on sm_89 and later, bf16 in three to four
    (through fp16 and float32), and converting every K and V element is most of a decode step's
    instructions. A bf16 query does not fit fp16's range, so it enters scaled: its largest
    element to about 2^13, which keeps every element above 2^-27 of the largest to fp16's 11
    bits (more than bf16's 8) and the rest within 2^-38 of it. The scale comes back in
    ``qk_scale``; an all-zero tile takes 2^24 rather than an infinite one."""
    if q.dtype == tl.bfloat16:
        wide = q.to(tl.float32)
        largest = tl.max(tl.max(tl.abs(wide), 1), 0)
        scale = tl.minimum(tl.exp2(13.0 - tl.floor(tl.log2(largest))), 16777216.0)
        q = (wide * scale).to(tl.float16)
        qk_scale = qk_scale / scale
    return q, qk_scale


@triton.jit
def attend_kv_range(
    acc, m_i, l_i,
    q,  # [BLOCK_M, HEAD_DIM_P] query tile, already in the dot dtype
    q_pos,  # [BLOCK_M] absolute position of each row's query token
    k_cache,  # pointer to K of this KV head: kv_cache[0, kv_head, 0, 0]
    v_cache,  # pointer to V of this KV head: kv_cache[0, kv_head, 0, HEAD_DIM]
    block_table_row,  # [max_pages_per_seq] int32
    kv_start, kv_end,  # token range [kv_start, kv_end); kv_start need not be tile-aligned
    # when MASKED (the start of a sliding window): tokens before it are never loaded
    qk_scale,  # softmax_scale * log2(e), times the K scale of an fp8 cache
    stride_page, stride_slot,
    alibi_slope,  # [BLOCK_M] ALiBi slope of each row's head times log2(e), or None
    MASKED: tl.constexpr,  # False only when every token in range is visible to every row
    LOOKAHEAD: tl.constexpr,  # unmasked runs: look up the next tile's pages one step ahead
    CAUSAL: tl.constexpr,
    SLIDING_WINDOW: tl.constexpr,  # a query sees its last SLIDING_WINDOW positions; 0 = all
    SOFT_CAP: tl.constexpr,  # logits become SOFT_CAP * tanh(logits / SOFT_CAP); 0 = off
    PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_P: tl.constexpr,  # HEAD_DIM rounded up to a power of two
    FP32_DOT: tl.constexpr,  # dot in IEEE float32 (fp32 inputs; bf16 under the interpreter)
):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_P)
    if MASKED:
        loop_start = kv_start // BLOCK_N * BLOCK_N
    else:
        loop_start = kv_start
    if LOOKAHEAD and not MASKED:
        # Each step reads the block table for the next tile and carries its row offsets over.
        # A lookup in the step that loads the tile makes the compiler wait for every copy in
        # flight (the K/V addresses depend on a load it also pipelines) before each step; carried,
        # the K/V copies run num_stages - 1 tiles ahead. The lookup past the end is clamped to
        # the last token, so it stays inside the block table.
        last_pos = tl.maximum(kv_end - 1, 0)
        next_rows = kv_token_offsets(block_table_row, tl.minimum(loop_start + offs_n, last_pos),
                                     None, stride_page, stride_slot, PAGE_SIZE)
    for start_n in range(loop_start, kv_end, BLOCK_N):
        kv_pos = start_n + offs_n
        # Masks only where needed: an unmasked load of whole 16-byte vectors is what lets the
        # compiler issue wide asynchronous copies and pipeline them.
        if MASKED:
            # Masked-off tokens are not even loaded: pages before a sliding window may have been
            # handed to other sequences, and 0 * NaN from a stale V would poison the sum.
            kv_valid = (kv_pos >= kv_start) & (kv_pos < kv_end)
            rows = kv_token_offsets(block_table_row, kv_pos, kv_valid, stride_page, stride_slot, PAGE_SIZE)
            if HEAD_DIM_P != HEAD_DIM:
                kv_mask = kv_valid[:, None] & (offs_d < HEAD_DIM)[None, :]
            else:
                kv_mask = kv_valid[:, None]
        else:
            if LOOKAHEAD:
                rows = next_rows
                next_rows = kv_token_offsets(block_table_row, tl.minimum(kv_pos + BLOCK_N, last_pos),
                                             None, stride_page, stride_slot, PAGE_SIZE)
            else:
                rows = kv_token_offsets(block_table_row, kv_pos, None, stride_page, stride_slot,
                                        PAGE_SIZE)
            if HEAD_DIM_P != HEAD_DIM:
                kv_mask = (offs_d < HEAD_DIM)[None, :]
            else:
                kv_mask = None
        kv_offsets = rows[:, None] + offs_d[None, :]  # [BLOCK_N, HEAD_DIM_P]
        k = load_kv(k_cache + kv_offsets, kv_mask, q.dtype)
        if FP32_DOT:
            s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))

        # Plain attention keeps the scale for the exponent, where it folds into one FMA;
        # soft-capping and ALiBi need the scaled logits themselves (log2 units).
        if SOFT_CAP > 0.0 or alibi_slope is not None:
            if SOFT_CAP > 0.0:
                cap = SOFT_CAP * 1.4426950408889634  # in log2 units
                s = cap * tanh(s * (qk_scale / cap))
            else:
                s = s * qk_scale
            if alibi_slope is not None:
                s += alibi_slope[:, None] * (kv_pos[None, :] - q_pos[:, None]).to(tl.float32)
            exp_scale = 1.0
        else:
            exp_scale = qk_scale
        if MASKED:
            visible = kv_valid[None, :]
            if CAUSAL:
                visible = visible & (kv_pos[None, :] <= q_pos[:, None])
            if SLIDING_WINDOW > 0:
                visible = visible & (kv_pos[None, :] > q_pos[:, None] - SLIDING_WINDOW)
            s = tl.where(visible, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1) * exp_scale)
        # A row that has seen no visible token yet keeps m = -inf; subtract 0 instead so
        # exp2 gives 0 rather than NaN from (-inf) - (-inf).
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s * exp_scale - m_ref[:, None])
        alpha = tl.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]

        v = load_kv(v_cache + kv_offsets, kv_mask, q.dtype)
        if FP32_DOT:
            acc = tl.dot(p, v.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def tanh(x):
    # 1 - 2 / (e^(2x) + 1): exact limits at +-inf, and the interpreter has no libdevice.
    return 1.0 - 2.0 / (tl.exp2(x * 2.8853900817779268) + 1.0)


@triton.jit
def initial_softmax_state(sinks, q_head, row_valid, BLOCK_M: tl.constexpr, HEAD_DIM_P: tl.constexpr):
    """(acc, m_i, l_i) before any KV token. An attention sink is a per-head logit that joins the
    softmax denominator with no value: it starts the state as a token of weight exp(sink)."""
    acc = tl.zeros([BLOCK_M, HEAD_DIM_P], tl.float32)
    if sinks is None:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
    else:
        sink = tl.load(sinks + q_head, mask=row_valid, other=0.0).to(tl.float32)
        m_i = sink * 1.4426950408889634
        l_i = tl.full([BLOCK_M], 1.0, tl.float32)
    return acc, m_i, l_i


@triton.jit
def alibi_slopes_log2(alibi_slopes, q_head, row_valid):
    """Per-row ALiBi slope in log2 units."""
    return tl.load(alibi_slopes + q_head, mask=row_valid, other=0.0).to(tl.float32) * 1.4426950408889634
