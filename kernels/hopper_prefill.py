"""The prefill kernel's work on Hopper (sm_90), written in Gluon so that the softmax of one KV
tile runs while the tensor cores multiply the previous tile's probabilities by V.

Triton 3.6 waits for each QK^T product right after issuing it, so in ``prefill.py`` the tensor
cores sit idle through every softmax (benchmarks/NOTES.md). Gluon, Triton's lower-level
dialect, leaves those waits to the kernel. Each step j of the loop below:

    issue S_j = Q K_j^T and O += P_{j-1} V_{j-1}      (asynchronous warpgroup products)
    look up the pages of tile j + STAGES - 1           (latency hidden under the products)
    wait for S_j only; softmax of tile j -> P_j        (while P_{j-1} V_{j-1} runs)
    wait for O; rescale it; refill the ring slot both products just released

K/V pages are gathered row by row with cp.async into a ring of STAGES shared-memory slots (a
KV tile spans several pages, so one TMA box cannot hold it). Rows are laid out as in
``prefill.py``: BLOCK_Q query tokens times the ``queries_per_kv`` heads of one KV head, and the
same grid and program order. This kernel serves only plain attention (no sliding window, soft
cap, ALiBi, sinks or fp8 cache) in fp16/bf16 at the head sizes of ``HEAD_DIMS``;
``supports`` says when, and the launcher uses ``prefill.py`` for everything else. Gluon has no
CPU interpreter: this kernel runs only on a GPU, and only when ``config.hopper_prefill_enabled``.
"""

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, warpgroup_mma, warpgroup_mma_wait)

from . import config
from .prefill import locate_q_block, prefill_grid
from .tile import kv_token_offsets

# The head sizes the launcher serves (multiples of 8 up to 256) that have tiles here. The
# layouts below give each warp 16 rows of S and O, so a tile's BLOCK_M is 16 x its warps.
HEAD_DIMS = tuple(d for d in range(8, 257, 8) if config.hopper_prefill_tiles(d) is not None)


def supports(device: torch.device, dtype: torch.dtype, cache_dtype: torch.dtype, head_dim: int,
             queries_per_kv: int, variant) -> bool:
    """Whether this kernel serves a batch (``checks.variant`` describes its optional parts)."""
    tiles = config.hopper_prefill_tiles(head_dim)
    return (config.hopper_prefill_enabled() and device.type == "cuda" and not config.interpreting()
            and config.compute_capability(device) == (9, 0)
            and dtype in (torch.float16, torch.bfloat16) and cache_dtype == dtype
            and tiles is not None and queries_per_kv <= tiles.block_m
            and variant.sliding_window == 0 and variant.soft_cap == 0.0
            and variant.alibi_slopes is None and variant.sinks is None and variant.k_scale is None)


@gluon.jit
def kv_rows(block_table_row, tile, kv_end, stride_page, stride_slot, BLOCK_N: gl.constexpr,
            PAGE_SIZE: gl.constexpr, layout: gl.constexpr):
    """Element offset of each K row of KV tile ``tile``. Positions past the end read the last
    token instead, so every address is a written slot of a page the sequence owns; the mask
    gives those columns no weight."""
    pos = gl.minimum(tile * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(1, layout)), kv_end - 1)
    return kv_token_offsets(block_table_row, pos, None, stride_page, stride_slot, PAGE_SIZE)


@gluon.jit
def copy_kv_tile(k_ring, v_ring, slot, k_cache, v_cache, rows, HEAD_DIM: gl.constexpr,
                 layout: gl.constexpr):
    offsets = rows[:, None] + gl.arange(0, HEAD_DIM, gl.SliceLayout(0, layout))[None, :]
    async_copy.async_copy_global_to_shared(k_ring.index(slot), k_cache + offsets)
    async_copy.async_copy_global_to_shared(v_ring.index(slot), v_cache + offsets)


@gluon.jit
def kv_step(j, s, p, acc, m_i, l_i, q_smem, k_ring, v_ring, k_cache, v_cache, block_table_row,
            q_pos, kv_end, num_tiles, qk_scale, stride_page, stride_slot,
            MASKED: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
            PAGE_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
            copy_layout: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr,
            p_layout: gl.constexpr):
    """Step j: the softmax of tile j under the product of tile j - 1's probabilities and V."""
    async_copy.wait_group(STAGES - 2)  # tile j has landed (tiles up to j + STAGES - 2 issued)
    fence_async_shared()
    slot = j % STAGES
    prev = (j + STAGES - 1) % STAGES
    # S_j goes into the registers of S_{j-1}, which the last softmax has read: while a product
    # is in flight no other instruction may define its registers, or ptxas serialises them.
    s_token = warpgroup_mma(q_smem, k_ring.index(slot).permute((1, 0)), s, use_acc=False,
                            is_async=True)
    acc_token = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
    p_in_flight = p  # read from registers by the PV product until its wait
    refill = j + STAGES - 1
    rows = kv_rows(block_table_row, refill, kv_end, stride_page, stride_slot, BLOCK_N, PAGE_SIZE,
                   copy_layout)
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s_token, ))

    if MASKED:
        kv_pos = j * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(0, s_layout))
        visible = kv_pos[None, :] < kv_end
        if CAUSAL:
            visible = visible & (kv_pos[None, :] <= q_pos[:, None])
        s = gl.where(visible, s, float("-inf"))
    # Every row sees KV position 0, in tile 0, so m_new is finite from the first step on.
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p_f32 = gl.exp2(s * qk_scale - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p_f32, 1)
    p = gl.convert_layout(p_f32.to(k_ring.dtype), p_layout)

    acc, p_in_flight = warpgroup_mma_wait(num_outstanding=0, deps=(acc_token, p_in_flight))
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    # Both products are done with slot ``prev`` (the compiler adds the barrier that makes that
    # true for every warpgroup before the copy): refill it. Empty groups past the last tile
    # keep wait_group's count.
    if refill < num_tiles:
        copy_kv_tile(k_ring, v_ring, prev, k_cache, v_cache, rows, HEAD_DIM, copy_layout)
    async_copy.commit_group()
    return s, p, acc, m_new, l_i


# As in prefill.py: num_seqs changes every batch, the block table's row stride between an engine
# and warm_up's table; one compiled kernel serves every batch.
@gluon.jit(do_not_specialize=["num_seqs", "stride_bt"])
def hopper_prefill_kernel(
    out, query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale, num_seqs,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_page, stride_kvh, stride_slot, stride_bt,
    QUERIES_PER_KV: gl.constexpr,
    BLOCK_M: gl.constexpr,
    BLOCK_Q: gl.constexpr,  # BLOCK_M // QUERIES_PER_KV
    BLOCK_N: gl.constexpr,
    PAGE_SIZE: gl.constexpr,
    HEAD_DIM: gl.constexpr,
    CAUSAL: gl.constexpr,
    STAGES: gl.constexpr,
):
    num_warps: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = query.dtype.element_ty
    # Global loads: 8 contiguous 16-bit elements (16 bytes) per thread and row.
    copy_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    # Warpgroup products: each warpgroup owns 64 consecutive rows of S and O.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16)

    kv_head = gl.program_id(1)
    seq, first_token, q_len, q_block = locate_q_block(cu_seqlens_q, num_seqs, BLOCK_Q)
    if q_len <= 1 or q_block * BLOCK_Q >= q_len:
        return
    seq_len = gl.load(seq_lens + seq)
    context_len = seq_len - q_len

    if CAUSAL:
        kv_end = context_len + gl.minimum((q_block + 1) * BLOCK_Q, q_len)
        num_full = (context_len + q_block * BLOCK_Q + 1) // BLOCK_N  # tiles every row sees whole
    else:
        kv_end = seq_len
        num_full = seq_len // BLOCK_N
    num_tiles = gl.cdiv(kv_end, BLOCK_N)
    k_cache += kv_head.to(gl.int64) * stride_kvh
    v_cache += kv_head.to(gl.int64) * stride_kvh
    block_table_row = block_table + seq.to(gl.int64) * stride_bt

    # The query tile, zeros in rows past the sequence's end.
    q_offsets, q_valid = row_offsets(first_token, q_len, q_block, kv_head, stride_qt, stride_qh,
                                     QUERIES_PER_KV, BLOCK_M, BLOCK_Q, HEAD_DIM, copy_layout)
    q = gl.load(query + q_offsets, mask=q_valid[:, None], other=0.0)
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], smem_layout, q)
    k_ring = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    v_ring = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    # Step 0 multiplies a zero P by the last slot's V: zeros there, not stale bits (0 * NaN).
    v_ring.index(STAGES - 1).store(gl.zeros([BLOCK_N, HEAD_DIM], dtype, copy_layout))
    for tile in gl.static_range(STAGES - 1):
        if tile < num_tiles:
            rows = kv_rows(block_table_row, tile, kv_end, stride_page, stride_slot, BLOCK_N,
                           PAGE_SIZE, copy_layout)
            copy_kv_tile(k_ring, v_ring, tile, k_cache, v_cache, rows, HEAD_DIM, copy_layout)
        async_copy.commit_group()

    offs_m = gl.arange(0, BLOCK_M, gl.SliceLayout(1, s_layout))
    q_pos = context_len + q_block * BLOCK_Q + offs_m // QUERIES_PER_KV  # bottom-right causal
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([BLOCK_M], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    p = gl.zeros([BLOCK_M, BLOCK_N], dtype, p_layout)  # P_{-1}: no weight
    for j in range(0, num_full):
        s, p, acc, m_i, l_i = kv_step(
            j, s, p, acc, m_i, l_i, q_smem, k_ring, v_ring, k_cache, v_cache, block_table_row,
            q_pos, kv_end, num_tiles, qk_scale, stride_page, stride_slot, False, CAUSAL, BLOCK_N,
            PAGE_SIZE, HEAD_DIM, STAGES, copy_layout, s_layout, o_layout, p_layout)
    for j in range(num_full, num_tiles):  # the diagonal (causal) or the ragged end
        s, p, acc, m_i, l_i = kv_step(
            j, s, p, acc, m_i, l_i, q_smem, k_ring, v_ring, k_cache, v_cache, block_table_row,
            q_pos, kv_end, num_tiles, qk_scale, stride_page, stride_slot, True, CAUSAL, BLOCK_N,
            PAGE_SIZE, HEAD_DIM, STAGES, copy_layout, s_layout, o_layout, p_layout)
    acc = warpgroup_mma(p, v_ring.index((num_tiles - 1) % STAGES), acc)
    async_copy.wait_group(0)

    acc = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
    out_offsets, out_valid = row_offsets(first_token, q_len, q_block, kv_head, stride_ot,
                                         stride_oh, QUERIES_PER_KV, BLOCK_M, BLOCK_Q, HEAD_DIM,
                                         o_layout)
    gl.store(out + out_offsets, acc.to(dtype), mask=out_valid[:, None])


@gluon.jit
def row_offsets(first_token, q_len, q_block, kv_head, stride_t, stride_h,
                QUERIES_PER_KV: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_Q: gl.constexpr,
                HEAD_DIM: gl.constexpr, layout: gl.constexpr):
    """Offsets of the program's rows in a [num_tokens, num_q_heads, HEAD_DIM] tensor (the query
    or the output), in ``layout``, and which rows hold a token of the sequence."""
    offs_m = gl.arange(0, BLOCK_M, gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, layout))
    q_idx = q_block * BLOCK_Q + offs_m // QUERIES_PER_KV
    q_head = kv_head * QUERIES_PER_KV + offs_m % QUERIES_PER_KV
    row_valid = (offs_m < BLOCK_Q * QUERIES_PER_KV) & (q_idx < q_len)
    token = (first_token + q_idx).to(gl.int64)
    offsets = token[:, None] * stride_t + q_head[:, None] * stride_h + offs_d[None, :]
    return offsets, row_valid


def launch(*, query, out, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale,
           queries_per_kv, num_seqs, causal):
    num_tokens, head_dim = query.shape[0], query.shape[2]
    tiles = config.hopper_prefill_tiles(head_dim)
    block_q = tiles.block_m // queries_per_kv
    grid = prefill_grid(num_tokens, num_seqs, k_cache.shape[1], block_q)
    hopper_prefill_kernel[grid](
        out, query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale, num_seqs,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_table.stride(0),
        QUERIES_PER_KV=queries_per_kv, BLOCK_M=tiles.block_m, BLOCK_Q=block_q,
        BLOCK_N=tiles.block_n, PAGE_SIZE=k_cache.shape[2], HEAD_DIM=head_dim, CAUSAL=causal,
        STAGES=tiles.num_stages, num_warps=tiles.num_warps)
