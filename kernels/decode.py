"""Attention for single-token queries (decodes), with the KV range split across programs.

A decode reads the whole KV history of its sequence to produce one token, so a small batch
launches too few programs to keep the GPU's memory system busy. Each program attends one query
token (all query heads of one KV head, packed as rows) to one contiguous slice of the
sequence's KV tokens, a sequence's KV heads neighbouring programs. A slice that is the whole
sequence writes the output directly; otherwise the program writes a normalised partial output
and its log-sum-exp, and ``merge_splits_kernel`` combines the slices.

Without a plan the grid is ``(num_seqs * num_kv_heads, NUM_SPLITS)``, every decode in
NUM_SPLITS slices (chosen from shapes only). With a decode plan (``decode_plan.py``) it is
``DecodePlan.grid_rows`` rows of ``num_kv_heads`` programs, each row running the pieces of its
two slots of the plan, each split count the sequence's own. Either way each program reads
lengths (and its pieces) on the device, so the launch stays valid for any lengths when a CUDA
graph replays it.
"""

import triton
import triton.language as tl

from .decode_plan import unpack_piece
from .tile import (alibi_slopes_log2, attend_kv_range, fp8_cache_query, initial_softmax_state,
                   kv_tiles)


# The block table's row stride differs between an engine and warm_up's table: not specialised on
# its value, so that the kernel warm_up compiles is the one the engine launches.
@triton.jit(do_not_specialize=["stride_bt"])
def decode_kernel(
    out,  # [num_tokens, num_q_heads, HEAD_DIM]
    partial_out,  # [partial rows, num_q_heads, HEAD_DIM] float32: a row per (sequence, split)
    partial_lse,  # [partial rows, num_q_heads] float32, log2 units
    query,  # [num_tokens, num_q_heads, HEAD_DIM]
    k_cache,  # [num_pages, num_kv_heads, PAGE_SIZE, HEAD_DIM] (view into the packed cache)
    v_cache,  # [num_pages, num_kv_heads, PAGE_SIZE, HEAD_DIM] (same strides as k_cache)
    block_table,  # [num_seqs, max_pages_per_seq] int32
    cu_seqlens_q,  # [num_seqs + 1] int32
    seq_lens,  # [num_seqs] int32
    pieces,  # [capacity] int64 slots of a DecodePlan, or None: NUM_SPLITS for all
    qk_scale,  # softmax_scale * log2(e)
    alibi_slopes,  # [num_q_heads] float32, or None
    sinks,  # [num_q_heads] attention-sink logits, or None
    k_scale, v_scale,  # [1] float32 fp8 dequantisation scales, or None
    num_q_heads,
    stride_qt, stride_qh,
    stride_ot, stride_oh,
    stride_page, stride_kvh, stride_slot,
    stride_bt,
    QUERIES_PER_KV: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    BLOCK_M: tl.constexpr,  # QUERIES_PER_KV rounded up to a power of two, at least 16
    BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_P: tl.constexpr,
    NUM_SPLITS: tl.constexpr,  # without a plan; unused with one (0: one variant per tile)
    SPLIT_BITS: tl.constexpr,  # of a packed piece (decode_plan)
    SLIDING_WINDOW: tl.constexpr,
    SOFT_CAP: tl.constexpr,
    FP32_DOT: tl.constexpr,
    LOOKAHEAD: tl.constexpr,  # see attend_kv_range (config.TileConfig.lookahead)
    FP16_PRODUCTS: tl.constexpr,  # fp8 cache: products in fp16 (config.TileConfig.fp16_products)
):
    # A sequence's KV heads are neighbouring programs, so they run side by side: each page holds
    # every head's slice of its tokens, and they read each page together (H200, Llama 256 x 8k,
    # one split: 1902 -> 1872 us against neighbouring sequences; fewer DRAM row openings and
    # page translations are the likely reason, not profiled). The head count is a constexpr:
    # dividing by a runtime one made the split decodes of 8 KV heads 20-25% slower
    # (results/tiles-h200/ab_decode_order.txt).
    kv_head = tl.program_id(0) % NUM_KV_HEADS
    if pieces is not None:  # a planned batch: this row of programs runs up to two pieces
        row = tl.program_id(0) // NUM_KV_HEADS
        pair = 2 * (tl.num_programs(0) // NUM_KV_HEADS) - 1 - row  # (decode_plan: the slots)
        slot_row = tl.load(pieces + row)
        slot_pair = tl.load(pieces + pair)  # loaded with the first: one round trip, not two
        for i in tl.static_range(2):
            slot = slot_row if i == 0 else slot_pair
            if slot >= 0:  # (-1: nothing in this slot)
                seq, split, num_splits, partial_row = unpack_piece(slot, SPLIT_BITS)
                decode_piece(
                    seq, split, num_splits, partial_row, kv_head, out, partial_out, partial_lse,
                    query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale,
                    alibi_slopes, sinks, k_scale, v_scale, num_q_heads, stride_qt, stride_qh,
                    stride_ot, stride_oh, stride_page, stride_kvh, stride_slot, stride_bt,
                    QUERIES_PER_KV, BLOCK_M, BLOCK_N, PAGE_SIZE, HEAD_DIM, HEAD_DIM_P,
                    SLIDING_WINDOW, SOFT_CAP, FP32_DOT, LOOKAHEAD, FP16_PRODUCTS)
    else:
        seq = tl.program_id(0) // NUM_KV_HEADS
        split = tl.program_id(1)
        decode_piece(
            seq, split, NUM_SPLITS, seq * NUM_SPLITS + split, kv_head, out, partial_out,
            partial_lse, query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale,
            alibi_slopes, sinks, k_scale, v_scale, num_q_heads, stride_qt, stride_qh, stride_ot,
            stride_oh, stride_page, stride_kvh, stride_slot, stride_bt,
            QUERIES_PER_KV, BLOCK_M, BLOCK_N, PAGE_SIZE, HEAD_DIM, HEAD_DIM_P, SLIDING_WINDOW,
            SOFT_CAP, FP32_DOT, LOOKAHEAD, FP16_PRODUCTS)


@triton.jit
def decode_piece(
    seq, split, num_splits,  # this piece: split `split` of sequence `seq`'s `num_splits`
    partial_row,  # its row of the partials (if num_splits > 1)
    kv_head,
    out, partial_out, partial_lse, query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens,
    qk_scale, alibi_slopes, sinks, k_scale, v_scale, num_q_heads, stride_qt, stride_qh,
    stride_ot, stride_oh, stride_page, stride_kvh, stride_slot, stride_bt,
    QUERIES_PER_KV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_P: tl.constexpr,
    SLIDING_WINDOW: tl.constexpr, SOFT_CAP: tl.constexpr, FP32_DOT: tl.constexpr,
    LOOKAHEAD: tl.constexpr, FP16_PRODUCTS: tl.constexpr,
):
    """One program's work on one piece of a decode: attend its query heads of ``kv_head`` to
    its slice of the sequence's KV range, and store the output, or the partial of the slice
    and its log-sum-exp in ``partial_row``. The other arguments are the decode kernel's."""
    token = tl.load(cu_seqlens_q + seq)
    seq_len = tl.load(seq_lens + seq)
    # Not a decode: longer queries go to the prefill kernel, padding has none. The check reads
    # the length too (never negative), so that its load goes out with the query offsets': the
    # compiler moves a load used only past the check to after it, and a program's loads before
    # its first KV copy, one round trip after another, are its fixed cost (sm_90 SASS).
    if (tl.load(cu_seqlens_q + seq + 1) - token != 1) | (seq_len < 0):
        return

    # With a sliding window the splits share only the window: pages before it are never read.
    if SLIDING_WINDOW > 0:
        kv_first = tl.maximum(seq_len - SLIDING_WINDOW, 0)
    else:
        kv_first = 0
    kv_lo, tiles = kv_tiles(seq_len, kv_first, BLOCK_N)
    # The range's tiles shared out as evenly as whole tiles go: split k starts at tile
    # ceil(k * tiles / splits), so every split holds floor or ceil(tiles / splits) tiles and none
    # is empty while splits <= tiles (the decode plan never counts more). Cutting ceil(tiles /
    # splits) a split left the last splits empty: 8 tiles in 7 splits were 4 of 2 tiles and 3
    # programs with nothing to read (H200, Llama 3 x 8k in 22 splits: 33.3 -> 32.7 us;
    # benchmarks/results/tiles-h200/ab_decode.txt, run 4).
    kv_start = kv_lo + tl.cdiv(split * tiles, num_splits) * BLOCK_N
    kv_end = kv_lo + tl.cdiv((split + 1) * tiles, num_splits) * BLOCK_N
    kv_end = tl.maximum(kv_start, tl.minimum(seq_len, kv_end))
    kv_start = tl.maximum(kv_start, kv_first)  # split 0 starts at the window's first token
    full_end = kv_start + (kv_end - kv_start) // BLOCK_N * BLOCK_N

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_P)
    q_head = kv_head * QUERIES_PER_KV + offs_m
    row_valid = offs_m < QUERIES_PER_KV
    io_mask = row_valid[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(query + token.to(tl.int64) * stride_qt + q_head[:, None] * stride_qh + offs_d[None, :],
                mask=io_mask, other=0.0)
    if FP32_DOT:
        q = q.to(tl.float32)
    q_pos = tl.zeros([BLOCK_M], tl.int32) + (seq_len - 1)  # every earlier token is causal-visible

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
        if FP16_PRODUCTS:
            q, qk_scale = fp8_cache_query(q, qk_scale)
    acc, m_i, l_i = initial_softmax_state(sinks, q_head, row_valid, BLOCK_M, HEAD_DIM_P)
    if sinks is not None:  # the sink joins the softmax once, in split 0
        m_i = tl.where(split == 0, m_i, float("-inf"))
        l_i = tl.where(split == 0, l_i, 0.0)
    # Only the window's first tile needs a mask, but masking the whole split is simpler and
    # costs little in a memory-bound loop.
    acc, m_i, l_i = attend_kv_range(
        acc, m_i, l_i, q, q_pos, k_cache, v_cache, block_table_row, kv_start, full_end, qk_scale,
        stride_page, stride_slot, slope, MASKED=SLIDING_WINDOW > 0, LOOKAHEAD=LOOKAHEAD, CAUSAL=False,
        SLIDING_WINDOW=SLIDING_WINDOW, SOFT_CAP=SOFT_CAP, PAGE_SIZE=PAGE_SIZE, BLOCK_N=BLOCK_N,
        HEAD_DIM=HEAD_DIM, HEAD_DIM_P=HEAD_DIM_P, FP32_DOT=FP32_DOT)
    acc, m_i, l_i = attend_kv_range(
        acc, m_i, l_i, q, q_pos, k_cache, v_cache, block_table_row, full_end, kv_end, qk_scale,
        stride_page, stride_slot, slope, MASKED=True, LOOKAHEAD=False, CAUSAL=False,
        SLIDING_WINDOW=SLIDING_WINDOW, SOFT_CAP=SOFT_CAP, PAGE_SIZE=PAGE_SIZE, BLOCK_N=BLOCK_N,
        HEAD_DIM=HEAD_DIM, HEAD_DIM_P=HEAD_DIM_P, FP32_DOT=FP32_DOT)

    # A split with no tile (more splits than tiles: a short decode without a plan) saw nothing:
    # l = 0, weight 0 in the merge.
    empty = l_i == 0.0
    l_i = tl.where(empty, 1.0, l_i)
    acc = acc / l_i[:, None]
    if v_scale is not None:
        acc = acc * v_scale
    if num_splits == 1:  # (decided at compile time without a plan)
        tl.store(out + token.to(tl.int64) * stride_ot + q_head[:, None] * stride_oh + offs_d[None, :],
                 acc.to(out.dtype.element_ty), mask=io_mask)
    else:
        row = partial_row.to(tl.int64) * num_q_heads + q_head
        tl.store(partial_out + row[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=io_mask)
        tl.store(partial_lse + row, tl.where(empty, float("-inf"), m_i + tl.log2(l_i)), mask=row_valid)


@triton.jit
def merge_splits_kernel(
    out,  # [num_tokens, num_q_heads, HEAD_DIM]
    partial_out,  # [partial rows, num_q_heads, HEAD_DIM] float32
    partial_lse,  # [partial rows, num_q_heads] float32, log2 units
    cu_seqlens_q,  # [num_seqs + 1] int32
    seq_splits,  # [num_seqs] int32 split count of each sequence (DecodePlan), or None
    seq_first_piece,  # [num_seqs] int32 partial row of its first split (DecodePlan), or None
    num_q_heads,
    stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_P: tl.constexpr,
    NUM_SPLITS: tl.constexpr,  # without a plan: every sequence's count; with one: tile rows
    BLOCK_H: tl.constexpr,  # query heads per program (config.merge_heads / planned_merge_tile)
    ONE_TILE: tl.constexpr,  # all splits of one head (BLOCK_H 1) as one tile (config.merge_one_tile)
):
    """Combines one sequence's split partials for BLOCK_H query heads: the softmax-weighted sum
    of the splits' outputs, each weighted by exp2(its lse - the largest lse).

    ONE_TILE: every split's partial of one head comes in as one [NUM_SPLITS, HEAD_DIM] tile and
    the sums run across threads (at the most splits, few sequences). Otherwise each thread
    walks the splits for its own elements in an unrolled loop, so nothing crosses threads and the
    programs are fewer (at few splits, many sequences and heads, where the cross-thread sums of
    the tile cost more than the loads). With a plan (``seq_splits``), see ``merge_planned``."""
    seq = tl.program_id(0)
    offs_d = tl.arange(0, HEAD_DIM_P)
    d_valid = offs_d < HEAD_DIM
    # Whether this sequence is a decode decides the store only: an early return would hold the
    # partials' loads back until this round trip is over. Every sequence of the batch has rows
    # in the workspace; a prefill's were never written, and its merge is not stored. (Loaded
    # before the partials: at 1 x 8k, 64 splits, 0.1 us faster than after them; H200.)
    token = tl.load(cu_seqlens_q + seq)
    is_decode = tl.load(cu_seqlens_q + seq + 1) - token == 1
    if seq_splits is not None:
        num_splits = tl.load(seq_splits + seq)
        first_row = tl.load(seq_first_piece + seq)
        # One split stored its output itself; none: not a decode. The check reads the first
        # row too (never negative), so that its load goes out with the split count's: the
        # compiler moves a load used only past the check to after it, and the partials' loads
        # then wait for two round trips to the plan, not one (sm_90 SASS).
        if (num_splits < 2) | (first_row < 0):
            return
        q_head = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        merged = merge_planned(partial_out, partial_lse, num_splits, first_row, q_head,
                               num_q_heads, offs_d, d_valid, HEAD_DIM, HEAD_DIM_P, NUM_SPLITS,
                               BLOCK_H)
        mask = (q_head < num_q_heads)[:, None] & d_valid[None, :]
        q_head = q_head[:, None]
    elif ONE_TILE:
        q_head = tl.program_id(1)
        offs_s = tl.arange(0, NUM_SPLITS)
        row = (seq * NUM_SPLITS + offs_s).to(tl.int64) * num_q_heads + q_head
        lse = tl.load(partial_lse + row)
        partial = tl.load(partial_out + row[:, None] * HEAD_DIM + offs_d[None, :],
                          mask=d_valid[None, :], other=0.0)
        weight = tl.exp2(lse - tl.max(lse, 0))  # split 0 is never empty: the max is finite
        merged = tl.sum(weight[:, None] * partial, 0) / tl.sum(weight, 0)
        mask = d_valid
    else:
        q_head = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        head_valid = q_head < num_q_heads
        mask = head_valid[:, None] & d_valid[None, :]
        # Two passes over the lse: the largest first, then each split's weight against it, so
        # the exponentials do not wait on each other. Split 0 is never empty (it holds the
        # range's first token, and the sink if any): the largest is finite and an empty split
        # (lse -inf) weighs 0. The second pass's lse loads hit L1.
        row = (seq * NUM_SPLITS).to(tl.int64) * num_q_heads + q_head
        lse_max = tl.load(partial_lse + row, mask=head_valid, other=0.0)
        for split in tl.static_range(1, NUM_SPLITS):
            lse = tl.load(partial_lse + row + split * num_q_heads, mask=head_valid,
                          other=float("-inf"))
            lse_max = tl.maximum(lse_max, lse)
        acc = tl.zeros([BLOCK_H, HEAD_DIM_P], tl.float32)
        l_i = tl.zeros([BLOCK_H], tl.float32)
        for split in tl.static_range(NUM_SPLITS):
            split_row = row + split * num_q_heads
            lse = tl.load(partial_lse + split_row, mask=head_valid, other=float("-inf"))
            partial = tl.load(partial_out + split_row[:, None] * HEAD_DIM + offs_d[None, :],
                              mask=mask, other=0.0)
            weight = tl.exp2(lse - lse_max)
            acc += weight[:, None] * partial
            l_i += weight
        merged = acc / l_i[:, None]
        q_head = q_head[:, None]
    mask = mask & is_decode
    tl.store(out + token.to(tl.int64) * stride_ot + q_head * stride_oh + offs_d,
             merged.to(out.dtype.element_ty), mask=mask)


@triton.jit
def merge_planned(partial_out, partial_lse, num_splits, first_row, q_head, num_q_heads, offs_d,
                  d_valid, HEAD_DIM: tl.constexpr, HEAD_DIM_P: tl.constexpr,
                  SPLIT_ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    """The merge of a planned sequence of ``num_splits`` splits, whose partials start at row
    ``first_row``: they come in tiles of SPLIT_ROWS splits x BLOCK_H heads
    (config.planned_merge_tile; one tile holds every split of a batch of like lengths, and of
    most the plan splits further), each folded into a running softmax, so a sequence split more
    than the tile holds costs a loop."""
    first = first_row.to(tl.int64)
    head_valid = q_head < num_q_heads
    offs_s = tl.arange(0, SPLIT_ROWS)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM_P], tl.float32)
    for start in range(0, num_splits, SPLIT_ROWS):
        split = start + offs_s
        valid = head_valid[:, None] & (split < num_splits)[None, :]
        row = (first + split)[None, :] * num_q_heads + q_head[:, None]  # [BLOCK_H, SPLIT_ROWS]
        lse = tl.load(partial_lse + row, mask=valid, other=float("-inf"))
        partial = tl.load(partial_out + row[:, :, None] * HEAD_DIM + offs_d[None, None, :],
                          mask=valid[:, :, None] & d_valid[None, None, :], other=0.0)
        m_new = tl.maximum(m_i, tl.max(lse, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # heads with nothing to merge
        weight = tl.exp2(lse - m_ref[:, None])
        alpha = tl.exp2(m_i - m_ref)
        acc = acc * alpha[:, None] + tl.sum(weight[:, :, None] * partial, 1)
        l_i = l_i * alpha + tl.sum(weight, 1)
        m_i = m_new
    return acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
