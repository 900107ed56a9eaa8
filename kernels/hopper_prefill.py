"""The prefill kernel's work on Hopper (sm_90), written in Gluon with warp specialisation, so
that the tensor cores work for one warpgroup while another runs its softmax.

Triton 3.6 runs ``prefill.py``'s loop in lockstep: every warp issues QK^T, waits for it, runs
the softmax, then the PV product, so the tensor cores sit idle through every softmax
(benchmarks/NOTES.md). Gluon, Triton's lower-level dialect, lets a program split its warps into
partitions that run different code. Each program here has three warpgroups:

    loader       gathers the K and V pages of tile t into ring slot t % STAGES (cp.async),
                 each once both consumers have released it
    consumer 0   rows [0, BLOCK_M/2) of the program's query tile
    consumer 1   rows [BLOCK_M/2, BLOCK_M)

Each step j, a consumer waits for tile j, then for its turn, issues S_j = Q K_j^T and
O += P_{j-1} V_{j-1}, hands the turn to the other consumer, and runs the softmax of tile j. The
turns make the tensor cores run consumer 0's products, then consumer 1's, and so on, so each
softmax runs under the other consumer's products (FlashAttention-3's "ping-pong").

Three kinds of mbarrier keep the order: ``k_ready`` / ``v_ready`` (a slot's K or V copies have
landed: one cp.async arrival per loader thread), ``k_free`` / ``v_free`` (both consumers are done
with a slot's K or V) and ``turn``. K and V are released apart because they are read a step
apart: K_j by the QK^T product of step j, V_j by the PV product of step j + 1. So the loader
refills a K slot a step earlier than a shared release would let it, and a ring of two slots
already keeps one tile in flight (head 256 has room for no more).

Rows are laid out as in ``prefill.py``: BLOCK_Q query tokens times the ``queries_per_kv`` heads
of one KV head, with the same grid and program order. This kernel serves only plain attention
(no sliding window, soft cap, ALiBi, sinks or fp8 cache) in fp16/bf16 at the head sizes of
``HEAD_DIMS``; ``supports`` says when, and the launcher uses ``prefill.py`` for everything
else. Gluon has no CPU interpreter: this kernel runs only on a GPU.
"""

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, mbarrier, warpgroup_mma, warpgroup_mma_wait)

from . import config
from .prefill import locate_q_block, prefill_grid, visible_kv
from .tile import kv_token_offsets

# The head sizes the launcher serves (multiples of 8 up to 256) that have tiles here.
HEAD_DIMS = tuple(d for d in range(8, 257, 8) if config.hopper_prefill_tiles(d) is not None)

# Registers a thread, by partition. A program of three warpgroups may hold 168 a thread
# (65536 / 384, rounded down to a multiple of 8): 2 x 232 + 40 = 3 x 168. A consumer holds
# S, O and P twice (the one in flight and the next; 16-bit, two to a register): at head 128
# with 128-token KV tiles 64 + 64 + 2 x 32 registers, at head 256 with 64-token tiles
# 32 + 128 + 2 x 16. The loader only addresses. ptxas spills nothing at this split; at
# 240 / 24 the loader spills 52 bytes (head 128).
CONSUMER_REGISTERS = 232
LOADER_REGISTERS = 40
PROGRAM_REGISTERS = (2 * CONSUMER_REGISTERS + LOADER_REGISTERS) // 3
WARPGROUP = gl.constexpr(4)  # warps


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
def row_offsets(first_token, q_len, q_block, kv_head, stride_t, stride_h, FIRST_ROW: gl.constexpr,
                ROWS: gl.constexpr, QUERIES_PER_KV: gl.constexpr, BLOCK_Q: gl.constexpr,
                HEAD_DIM: gl.constexpr, layout: gl.constexpr):
    """Offsets of the program's rows [FIRST_ROW, FIRST_ROW + ROWS) in a [num_tokens,
    num_q_heads, HEAD_DIM] tensor (the query or the output), in ``layout``, and which rows hold
    a token of the sequence."""
    offs_m = FIRST_ROW + gl.arange(0, ROWS, gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, layout))
    q_idx = q_block * BLOCK_Q + offs_m // QUERIES_PER_KV
    q_head = kv_head * QUERIES_PER_KV + offs_m % QUERIES_PER_KV
    row_valid = (offs_m < BLOCK_Q * QUERIES_PER_KV) & (q_idx < q_len)
    token = (first_token + q_idx).to(gl.int64)
    offsets = token[:, None] * stride_t + q_head[:, None] * stride_h + offs_d[None, :]
    return offsets, row_valid


@gluon.jit
def load_kv(kv, k_ring, v_ring, barriers, PAGE_SIZE: gl.constexpr):
    """The loader: every KV tile of the program into the ring, K and V of tile t into slot
    t % STAGES, each once both consumers have released it there; each thread's cp.async
    arrival on ``k_ready`` or ``v_ready`` says its copies have landed."""
    k_cache, v_cache, block_table_row, kv_end, num_tiles, stride_page, stride_slot = kv
    k_ready, v_ready, k_free, v_free, turn = barriers
    STAGES: gl.constexpr = k_ring.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[1]
    HEAD_DIM: gl.constexpr = k_ring.shape[2]
    # 8 contiguous 16-bit elements (16 bytes) per thread and row.
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [gl.num_warps(), 1], [1, 0])
    cols = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, layout))
    for t in range(num_tiles):
        slot = t % STAGES
        released = ((t // STAGES) & 1) ^ 1  # the phase that passes at once in round 0
        rows = kv_rows(block_table_row, t, kv_end, stride_page, stride_slot, BLOCK_N, PAGE_SIZE,
                       layout)
        offsets = rows[:, None] + cols[None, :]
        mbarrier.wait(k_free.index(slot), released)
        async_copy.async_copy_global_to_shared(k_ring.index(slot), k_cache + offsets)
        async_copy.mbarrier_arrive(k_ready.index(slot), increment_count=False)
        mbarrier.wait(v_free.index(slot), released)
        async_copy.async_copy_global_to_shared(v_ring.index(slot), v_cache + offsets)
        async_copy.mbarrier_arrive(v_ready.index(slot), increment_count=False)


@gluon.jit
def kv_step(j, HALF: gl.constexpr, s, p, acc, m_i, l_i, q_smem, k_ring, v_ring, barriers, q_pos,
            kv_end, qk_scale, MASKED: gl.constexpr, CAUSAL: gl.constexpr,
            s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr):
    """One consumer's step j: the products of tiles j (QK^T) and j - 1 (PV) on the tensor
    cores in its turn, then the softmax of tile j."""
    k_ready, v_ready, k_free, v_free, turn = barriers
    STAGES: gl.constexpr = k_ring.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[1]
    slot = j % STAGES
    prev_tile = gl.maximum(j - 1, 0)  # step 0 multiplies P_{-1} = 0 by tile 0's V
    prev = prev_tile % STAGES
    mbarrier.wait(k_ready.index(slot), (j // STAGES) & 1)
    mbarrier.wait(v_ready.index(prev), (prev_tile // STAGES) & 1)
    fence_async_shared()  # the loader's cp.async writes, before the products read the slot
    # Consumer 0's turn j follows consumer 1's turn j - 1 (at j = 0 it passes at once), and
    # consumer 1's turn j follows consumer 0's turn j.
    mbarrier.wait(turn.index(HALF), (j & 1) ^ (1 - HALF))
    # S_j goes into the registers of S_{j-1}, which the last softmax has read: while a product
    # is in flight no other instruction may define its registers, or ptxas serialises them.
    s_token = warpgroup_mma(q_smem, k_ring.index(slot).permute((1, 0)), s, use_acc=False,
                            is_async=True)
    acc_token = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
    mbarrier.arrive(turn.index(1 - HALF))
    p_in_flight = p  # read from registers by the PV product until its wait
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s_token, ))
    mbarrier.arrive(k_free.index(slot))  # this consumer is done with K_j

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
    mbarrier.arrive(v_free.index(prev), pred=j > 0)  # this consumer is done with V_{j-1}
    return s, p, acc, m_new, l_i


@gluon.jit
def attend(rows, kv, HALF: gl.constexpr, q_smem, k_ring, v_ring, barriers,
           QUERIES_PER_KV: gl.constexpr, BLOCK_Q: gl.constexpr, CAUSAL: gl.constexpr):
    """A consumer: its half of the program's rows attends over every KV tile, into ``out``."""
    (out, query, first_token, q_len, q_block, kv_head, context_len, num_full, qk_scale, stride_qt,
     stride_qh, stride_ot, stride_oh) = rows
    k_cache, v_cache, block_table_row, kv_end, num_tiles, stride_page, stride_slot = kv
    ROWS: gl.constexpr = q_smem.shape[1]
    FIRST_ROW: gl.constexpr = HALF * ROWS
    STAGES: gl.constexpr = k_ring.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[1]
    HEAD_DIM: gl.constexpr = k_ring.shape[2]
    load_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [gl.num_warps(), 1], [1, 0])
    # Warpgroup products: each warp owns 16 rows of S and O.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[gl.num_warps(), 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[gl.num_warps(), 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    # This consumer's query rows, zeros in rows past the sequence's end.
    q_smem = q_smem.index(HALF)
    q_offsets, q_valid = row_offsets(first_token, q_len, q_block, kv_head, stride_qt, stride_qh,
                                     FIRST_ROW, ROWS, QUERIES_PER_KV, BLOCK_Q, HEAD_DIM,
                                     load_layout)
    q_smem.store(gl.load(query + q_offsets, mask=q_valid[:, None], other=0.0))
    fence_async_shared()

    offs_m = FIRST_ROW + gl.arange(0, ROWS, gl.SliceLayout(1, s_layout))
    q_pos = context_len + q_block * BLOCK_Q + offs_m // QUERIES_PER_KV  # bottom-right causal
    m_i = gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([ROWS], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    p = gl.zeros([ROWS, BLOCK_N], k_ring.dtype, p_layout)  # P_{-1}: no weight
    for j in range(0, num_full):
        s, p, acc, m_i, l_i = kv_step(j, HALF, s, p, acc, m_i, l_i, q_smem, k_ring, v_ring,
                                      barriers, q_pos, kv_end, qk_scale, False, CAUSAL, s_layout,
                                      o_layout, p_layout)
    for j in range(num_full, num_tiles):  # the diagonal (causal) or the ragged end
        s, p, acc, m_i, l_i = kv_step(j, HALF, s, p, acc, m_i, l_i, q_smem, k_ring, v_ring,
                                      barriers, q_pos, kv_end, qk_scale, True, CAUSAL, s_layout,
                                      o_layout, p_layout)
    # The last PV product, after the last tile's V has landed.
    k_ready, v_ready, k_free, v_free, turn = barriers
    last = num_tiles - 1
    mbarrier.wait(v_ready.index(last % STAGES), (last // STAGES) & 1)
    fence_async_shared()
    acc = warpgroup_mma(p, v_ring.index(last % STAGES), acc)

    acc = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
    # The output goes out through this consumer's query buffer, which no product reads any
    # more: read back in 16-byte chunks of a row, the stores fill whole 32-byte sectors, where
    # the product's layout (two elements a thread in each 8 columns) fills half of each (ncu,
    # 16 x 512: those half sectors were 12% of all the kernel's sectors).
    gl.thread_barrier()  # every warp of this consumer is past its last product
    q_smem.store(acc.to(k_ring.dtype))
    gl.thread_barrier()
    out_offsets, out_valid = row_offsets(first_token, q_len, q_block, kv_head, stride_ot,
                                         stride_oh, FIRST_ROW, ROWS, QUERIES_PER_KV, BLOCK_Q,
                                         HEAD_DIM, load_layout)
    gl.store(out + out_offsets, q_smem.load(load_layout), mask=out_valid[:, None])


# The three partitions. Worker partitions must share one signature, so each takes all of it:
# the program's scalars (``rows``: its query rows, for the consumers; ``kv``: its KV range in
# the cache, for the loader), shared memory, barriers, and the constexprs that the buffers'
# shapes do not give.
@gluon.jit
def first_consumer(rows, kv, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV: gl.constexpr,
                   BLOCK_Q: gl.constexpr, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr):
    attend(rows, kv, 0, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV, BLOCK_Q, CAUSAL)


@gluon.jit
def second_consumer(rows, kv, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV: gl.constexpr,
                    BLOCK_Q: gl.constexpr, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr):
    attend(rows, kv, 1, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV, BLOCK_Q, CAUSAL)


@gluon.jit
def loader(rows, kv, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV: gl.constexpr,
           BLOCK_Q: gl.constexpr, PAGE_SIZE: gl.constexpr, CAUSAL: gl.constexpr):
    load_kv(kv, k_ring, v_ring, barriers, PAGE_SIZE)


# As in prefill.py: num_seqs changes every batch, the block table's row stride between an engine
# and warm_up's table; one compiled kernel serves every batch.
@gluon.jit(do_not_specialize=["num_seqs", "heads_first", "stride_bt"])
def hopper_prefill_kernel(
    out, query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale, num_seqs,
    heads_first,  # 1: the grid is (KV heads, query blocks), see launch
    stride_qt, stride_qh, stride_ot, stride_oh, stride_page, stride_kvh, stride_slot, stride_bt,
    QUERIES_PER_KV: gl.constexpr,
    BLOCK_M: gl.constexpr,
    BLOCK_Q: gl.constexpr,  # BLOCK_M // QUERIES_PER_KV
    BLOCK_N: gl.constexpr,
    PAGE_SIZE: gl.constexpr,
    HEAD_DIM: gl.constexpr,
    CAUSAL: gl.constexpr,
    STAGES: gl.constexpr,
    CONSUMER_REGISTERS: gl.constexpr,
    LOADER_REGISTERS: gl.constexpr,
):
    dtype: gl.constexpr = query.dtype.element_ty
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16)

    # Arithmetic rather than a branch on heads_first: a branch here costs the head-64 consumers
    # a spill. Either way the query blocks are numbered down, heaviest first.
    blocks_first_id = gl.num_programs(0) - 1 - gl.program_id(0)
    heads_first_id = gl.num_programs(1) - 1 - gl.program_id(1)
    kv_head = gl.program_id(1) + heads_first * (gl.program_id(0) - gl.program_id(1))
    q_block_id = blocks_first_id + heads_first * (heads_first_id - blocks_first_id)
    seq, first_token, q_len, q_block = locate_q_block(cu_seqlens_q, num_seqs, q_block_id, BLOCK_Q)
    if q_len <= 1 or q_block * BLOCK_Q >= q_len:
        return
    seq_len = gl.load(seq_lens + seq)
    context_len = seq_len - q_len
    kv_end, full_end = visible_kv(context_len, seq_len, q_len, q_block, BLOCK_Q, BLOCK_N, CAUSAL)
    num_full = full_end // BLOCK_N  # tiles every row sees whole
    num_tiles = gl.cdiv(kv_end, BLOCK_N)

    q_smem = gl.allocate_shared_memory(dtype, [2, BLOCK_M // 2, HEAD_DIM], smem_layout)
    k_ring = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    v_ring = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=WARPGROUP * 32)  # one arrival per loader thread
        mbarrier.init(v_ready.index(i), count=WARPGROUP * 32)
        mbarrier.init(k_free.index(i), count=2)  # one arrival per consumer
        mbarrier.init(v_free.index(i), count=2)
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)

    rows = (out, query, first_token, q_len, q_block, kv_head, context_len, num_full, qk_scale,
            stride_qt, stride_qh, stride_ot, stride_oh)
    kv = (k_cache + kv_head.to(gl.int64) * stride_kvh, v_cache + kv_head.to(gl.int64) * stride_kvh,
          block_table + seq.to(gl.int64) * stride_bt, kv_end, num_tiles, stride_page, stride_slot)
    barriers = (k_ready, v_ready, k_free, v_free, turn)
    # The argument tuples are written out: a tuple assigned to a name would turn its
    # constexprs into tensors. The kernel's own warps run the first consumer.
    gl.warp_specialize([
        (first_consumer, (rows, kv, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV, BLOCK_Q,
                          PAGE_SIZE, CAUSAL)),
        (second_consumer, (rows, kv, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV, BLOCK_Q,
                           PAGE_SIZE, CAUSAL)),
        (loader, (rows, kv, q_smem, k_ring, v_ring, barriers, QUERIES_PER_KV, BLOCK_Q,
                  PAGE_SIZE, CAUSAL)),
    ], [WARPGROUP, WARPGROUP], [CONSUMER_REGISTERS, LOADER_REGISTERS])


def launch_options(head_dim: int, queries_per_kv: int) -> dict:
    """The kernel's constexprs and launch options but the page size and causality."""
    tiles = config.hopper_prefill_tiles(head_dim)
    return dict(QUERIES_PER_KV=queries_per_kv, BLOCK_M=tiles.block_m,
                BLOCK_Q=tiles.block_m // queries_per_kv, BLOCK_N=tiles.block_n,
                HEAD_DIM=head_dim, STAGES=tiles.num_stages,
                CONSUMER_REGISTERS=CONSUMER_REGISTERS, LOADER_REGISTERS=LOADER_REGISTERS,
                num_warps=WARPGROUP, maxnreg=PROGRAM_REGISTERS)


def launch(*, query, out, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale,
           queries_per_kv, num_seqs, causal):
    num_tokens, head_dim = query.shape[0], query.shape[2]
    options = launch_options(head_dim, queries_per_kv)
    num_kv_heads = k_cache.shape[1]
    grid = prefill_grid(num_tokens, num_seqs, num_kv_heads, options["BLOCK_Q"])
    # The first grid axis varies fastest in launch order: KV heads first launches every head's
    # heaviest query block before any head's next one.
    heads_first = config.hopper_prefill_heads_first(
        num_tokens * num_kv_heads * head_dim * 2 * k_cache.element_size(), query.device)
    hopper_prefill_kernel[grid[::-1] if heads_first else grid](
        out, query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale, num_seqs,
        int(heads_first),
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_table.stride(0),
        PAGE_SIZE=k_cache.shape[2], CAUSAL=causal, **options)
