"""Launcher for attention over a paged KV cache: one ragged batch of decodes, extends and
prefills in at most three launches (decode, split merge, prefill), grids from shapes alone."""

import math
from dataclasses import dataclass

import torch

from . import checks, config, hopper_prefill
from .decode import decode_kernel, merge_splits_kernel
from .decode_plan import SPLIT_BITS, DecodePlan
from .prefill import prefill_grid, prefill_kernel

LOG2_E = 1.4426950408889634


@dataclass
class SplitKVWorkspace:
    """Scratch for split-KV decode partials; allocate once, reuse for every call."""

    partial_out: torch.Tensor  # [rows, num_q_heads, head_dim] float32
    partial_lse: torch.Tensor  # [rows, num_q_heads] float32

    @classmethod
    def allocate(cls, max_num_seqs: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                 cache_dtype: torch.dtype, device: torch.device) -> "SplitKVWorkspace":
        """Enough rows for any batch of up to ``max_num_seqs`` sequences, planned or not, over a
        KV cache of ``cache_dtype``."""
        device = torch.device(device)
        queries_per_kv = num_q_heads // num_kv_heads
        rows = max(config.split_kv_rows(max_num_seqs, num_kv_heads, device, queries_per_kv,
                                        head_dim, cache_dtype),
                   DecodePlan.capacity_for(max_num_seqs, num_kv_heads,
                                           config.decode_wave(device, queries_per_kv, head_dim,
                                                              cache_dtype)))
        return cls.with_rows(rows, num_q_heads, head_dim, device)

    @classmethod
    def with_rows(cls, rows: int, num_q_heads: int, head_dim: int,
                  device: torch.device) -> "SplitKVWorkspace":
        return cls(torch.empty(rows, num_q_heads, head_dim, dtype=torch.float32, device=device),
                   torch.empty(rows, num_q_heads, dtype=torch.float32, device=device))

    def fits(self, rows: int, num_q_heads: int, head_dim: int) -> bool:
        return (self.partial_out.shape[0] >= rows and self.partial_out.shape[1] == num_q_heads
                and self.partial_out.shape[2] == head_dim)


def paged_attention(query: torch.Tensor, kv_cache: torch.Tensor, cu_seqlens_q: torch.Tensor,
                    seq_lens: torch.Tensor, block_table: torch.Tensor, *, max_query_len: int,
                    max_seq_len: int | None = None, softmax_scale: float | None = None,
                    causal: bool = True, sliding_window: int | None = None,
                    logits_soft_cap: float | None = None,
                    alibi_slopes: torch.Tensor | None = None, sinks: torch.Tensor | None = None,
                    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
                    out: torch.Tensor | None = None, workspace: SplitKVWorkspace | None = None,
                    num_kv_splits: int | None = None, decode_plan: DecodePlan | None = None,
                    check_lengths: bool = True) -> torch.Tensor:
    """Attention of a ragged batch of queries over a paged KV cache.

    Args:
        query: ``[num_tokens, num_q_heads, head_dim]``, fp16/bf16/fp32, last dim contiguous;
            sequence ``i`` owns tokens ``cu_seqlens_q[i]:cu_seqlens_q[i + 1]``.
        kv_cache: logical ``[num_pages, num_kv_heads, page_size, 2 * head_dim]`` (K then V in the
            last dim), any stride order; the query's dtype, or float8_e4m3fn with scales.
        cu_seqlens_q: int32 ``[num_seqs + 1]`` query offsets.
        seq_lens: int32 ``[num_seqs]`` KV lengths including this step's tokens; a query of
            length q sits at positions ``seq_len - q .. seq_len - 1`` (bottom-right causal).
        block_table: int32 ``[num_seqs, max_pages_per_seq]`` physical page of each logical page.
        max_query_len: host-side upper bound on query lengths; 1 means a decode-only batch.
        max_seq_len: host-side upper bound on ``seq_lens``, or None; with it the launcher may
            give a batch of short prefills to the kernel that is faster for them
            (``config.short_prefills_on_triton``). Either kernel is right for any batch.
        sliding_window: each query sees only its last ``sliding_window`` positions (causal).
        logits_soft_cap: logits become ``cap * tanh(logits / cap)`` before the softmax.
        alibi_slopes: float32 ``[num_q_heads]``; adds ``slope * (key_pos - query_pos)``.
        sinks: ``[num_q_heads]`` per-head sink logits that join the softmax denominator.
        k_scale, v_scale: float32 ``[1]`` dequantisation scales of an fp8 cache.
        out: ``[num_tokens, num_q_heads, head_dim]`` written in place; allocated when None.
        workspace: split-KV scratch (see ``SplitKVWorkspace.allocate``); allocated when None.
        num_kv_splits: override the split-KV heuristic (a power of two).
        decode_plan: a ``DecodePlan`` made for this batch (``decode_plan.update``, given the
            step of ``config.planned_decode_tiles``): decodes are split by their own lengths
            and run longest piece first. Without one every decode
            gets the split count of ``config.num_kv_splits``, which suits a batch of like
            lengths only. The workspace must hold ``decode_plan.capacity(num_seqs)`` rows.
        check_lengths: check per-sequence lengths and page ids first; this reads the metadata
            on the host, so callers that must not synchronise (CUDA graphs) pass False.
    """
    num_tokens, num_q_heads, head_dim = checks.rows("query", query)
    num_kv_heads = kv_cache.shape[1] if isinstance(kv_cache, torch.Tensor) and kv_cache.dim() == 4 else 0
    checks.packed_cache(kv_cache, num_kv_heads, head_dim, query.device, checks.cache_dtypes(query.dtype))
    return attention_over_pages(
        query, kv_cache[..., :head_dim], kv_cache[..., head_dim:], cu_seqlens_q, seq_lens,
        block_table, max_query_len=max_query_len, max_seq_len=max_seq_len,
        softmax_scale=softmax_scale, causal=causal,
        sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, alibi_slopes=alibi_slopes,
        sinks=sinks, k_scale=k_scale, v_scale=v_scale, out=out, workspace=workspace,
        num_kv_splits=num_kv_splits, decode_plan=decode_plan, check_lengths=check_lengths)


def attention_over_pages(query, k_cache, v_cache, cu_seqlens_q, seq_lens, block_table, *,
                         max_query_len, max_seq_len=None, softmax_scale=None, causal=True,
                         sliding_window=None, logits_soft_cap=None, alibi_slopes=None, sinks=None,
                         k_scale=None, v_scale=None, out=None, workspace=None, num_kv_splits=None,
                         decode_plan=None, check_lengths=True) -> torch.Tensor:
    """``paged_attention`` with K and V given apart, each ``[num_pages, num_kv_heads, page_size,
    head_dim]`` with the same strides (both halves of a packed cache, or two dense tensors)."""
    num_tokens, num_q_heads, head_dim = checks.rows("query", query)
    device = query.device
    cache_dtypes = checks.cache_dtypes(query.dtype)
    checks.tensor("k_cache", k_cache, device, cache_dtypes, ndim=4)
    checks.tensor("v_cache", v_cache, device, (k_cache.dtype,), ndim=4)
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride():
        raise ValueError("k_cache and v_cache must have the same shape and strides")
    checks.last_dim_contiguous("k_cache", k_cache)
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"the KV cache has head_dim {k_cache.shape[3]}, the query {head_dim}")
    num_pages, num_kv_heads, page_size = k_cache.shape[:3]
    checks.heads(num_q_heads, num_kv_heads)
    num_seqs = checks.batch(cu_seqlens_q, seq_lens, block_table, device)
    if out is None:
        out = torch.empty_like(query)
    elif checks.rows("out", out, device, (query.dtype,)) != tuple(query.shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, query has {tuple(query.shape)}")
    if max_query_len < 1 and num_tokens > 0:
        raise ValueError(f"max_query_len must be at least 1, got {max_query_len}")
    queries_per_kv = num_q_heads // num_kv_heads
    splits = num_kv_splits or config.num_kv_splits(num_seqs, num_kv_heads, device, queries_per_kv,
                                                   head_dim, k_cache.dtype)
    if splits & (splits - 1) or not 1 <= splits <= config.MAX_KV_SPLITS:
        raise ValueError(f"num_kv_splits must be a power of two up to {config.MAX_KV_SPLITS}, got {splits}")
    if decode_plan is not None:
        _check_plan(decode_plan, num_seqs, num_kv_heads, device)
        if not decode_plan.applies_to(num_seqs):
            decode_plan = None
    variant = checks.variant(num_q_heads, device, k_cache.dtype, causal, sliding_window,
                             logits_soft_cap, alibi_slopes, sinks, k_scale, v_scale)
    if check_lengths:
        checks.lengths(cu_seqlens_q, seq_lens, block_table, num_tokens, page_size, num_pages,
                       max_query_len, max_seq_len)
    if num_tokens == 0 or num_seqs == 0:
        return out

    scale = (softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)) * LOG2_E
    common = dict(
        query=query, out=out, k_cache=k_cache, v_cache=v_cache, block_table=block_table,
        cu_seqlens_q=cu_seqlens_q, seq_lens=seq_lens, qk_scale=scale,
        queries_per_kv=queries_per_kv, fp32_dot=_needs_fp32_dot(query.dtype),
        variant=variant)
    _launch_decode(**common, num_seqs=num_seqs, num_splits=splits, workspace=workspace,
                   plan=decode_plan)
    if max_query_len > 1:
        _launch_prefill(**common, num_seqs=num_seqs, causal=causal, max_query_len=max_query_len,
                        max_seq_len=max_seq_len)
    return out


def _needs_fp32_dot(dtype: torch.dtype) -> bool:
    # fp32 inputs: IEEE dot instead of TF32. bf16 under the interpreter: its bf16 dot is wrong.
    return dtype == torch.float32 or (dtype == torch.bfloat16 and config.interpreting())


def _check_plan(plan: DecodePlan, num_seqs: int, num_kv_heads: int, device) -> None:
    if plan.pieces.device != device:
        raise ValueError(f"decode_plan is on {plan.pieces.device}, the query on {device}")
    if plan.num_kv_heads != num_kv_heads:
        raise ValueError(f"decode_plan was made for {plan.num_kv_heads} KV heads, the cache has "
                         f"{num_kv_heads}")
    if plan.seq_splits.shape[0] < num_seqs:
        raise ValueError(f"decode_plan holds {plan.seq_splits.shape[0]} sequences, the batch "
                         f"has {num_seqs}")


def _launch_decode(*, query, out, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale,
                   queries_per_kv, fp32_dot, variant, num_seqs, num_splits, workspace, plan):
    num_q_heads, head_dim = query.shape[1], query.shape[2]
    num_kv_heads = k_cache.shape[1]
    # With a plan, num_splits still picks the tiles: the count a batch of like lengths gets.
    tiles = config.decode_tiles(head_dim, queries_per_kv, num_splits, query.dtype, k_cache.dtype,
                                config.shared_memory_per_block(query.device),
                                planned=plan is not None)
    if plan is not None:
        rows = plan.capacity(num_seqs)
        grid = (plan.grid_rows(num_seqs) * num_kv_heads, 1)
    else:
        rows = num_seqs * num_splits
        grid = (num_seqs * num_kv_heads, num_splits)
    writes_partials = plan is not None or num_splits > 1  # and so a merge follows
    if writes_partials:
        if workspace is None:
            workspace = SplitKVWorkspace.with_rows(rows, num_q_heads, head_dim, query.device)
        elif not workspace.fits(rows, num_q_heads, head_dim):
            raise ValueError(f"workspace too small: {num_seqs} sequences need "
                             f"{rows} rows of [{num_q_heads}, {head_dim}], it has "
                             f"{tuple(workspace.partial_out.shape)}")
        partial_out, partial_lse = workspace.partial_out, workspace.partial_lse
    else:
        partial_out = partial_lse = out  # never touched with a single split
    head_dim_p = config.padded_head_dim(head_dim)
    decode_kernel[grid](
        out, partial_out, partial_lse, query, k_cache, v_cache, block_table, cu_seqlens_q,
        seq_lens, plan.pieces if plan is not None else None, qk_scale, variant.alibi_slopes,
        variant.sinks, variant.k_scale, variant.v_scale, num_q_heads,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_table.stride(0),
        QUERIES_PER_KV=queries_per_kv, NUM_KV_HEADS=num_kv_heads,
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n,
        PAGE_SIZE=k_cache.shape[2], HEAD_DIM=head_dim, HEAD_DIM_P=head_dim_p,
        NUM_SPLITS=num_splits if plan is None else 0, SPLIT_BITS=SPLIT_BITS,
        SLIDING_WINDOW=variant.sliding_window,
        SOFT_CAP=variant.soft_cap, FP32_DOT=fp32_dot and not tiles.fp16_products,
        LOOKAHEAD=tiles.lookahead, FP16_PRODUCTS=tiles.fp16_products, **tiles.launch_options())
    if not writes_partials:
        return
    if plan is not None:
        rows, heads = config.planned_merge_tile(num_q_heads, num_splits)
        one_tile, plan_tensors = False, (plan.seq_splits, plan.seq_first_piece)
    else:
        rows = num_splits
        one_tile = config.merge_one_tile(num_splits)
        heads = 1 if one_tile else config.merge_heads(num_q_heads, num_splits)
        plan_tensors = (None, None)
    merge_splits_kernel[(num_seqs, -(-num_q_heads // heads))](
        out, partial_out, partial_lse, cu_seqlens_q, *plan_tensors, num_q_heads,
        out.stride(0), out.stride(1), HEAD_DIM=head_dim, HEAD_DIM_P=head_dim_p,
        NUM_SPLITS=rows, BLOCK_H=heads, ONE_TILE=one_tile)


def _launch_prefill(*, query, out, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale,
                    queries_per_kv, fp32_dot, variant, num_seqs, causal, max_query_len,
                    max_seq_len):
    num_tokens, head_dim = query.shape[0], query.shape[2]
    if (hopper_prefill.supports(query.device, query.dtype, k_cache.dtype, head_dim,
                                queries_per_kv, variant)
            and not config.short_prefills_on_triton(head_dim, num_tokens, max_query_len,
                                                    max_seq_len)):
        hopper_prefill.launch(query=query, out=out, k_cache=k_cache, v_cache=v_cache,
                              block_table=block_table, cu_seqlens_q=cu_seqlens_q,
                              seq_lens=seq_lens, qk_scale=qk_scale, queries_per_kv=queries_per_kv,
                              num_seqs=num_seqs, causal=causal)
        return
    tiles = config.prefill_tiles(head_dim, queries_per_kv, query.dtype,
                                 config.shared_memory_per_block(query.device))
    block_q = tiles.block_m // queries_per_kv
    grid = prefill_grid(num_tokens, num_seqs, k_cache.shape[1], block_q)
    prefill_kernel[grid](
        out, query, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, qk_scale,
        variant.alibi_slopes, variant.sinks, variant.k_scale, variant.v_scale, num_seqs,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_table.stride(0),
        QUERIES_PER_KV=queries_per_kv, BLOCK_M=tiles.block_m, BLOCK_Q=block_q,
        BLOCK_N=tiles.block_n, PAGE_SIZE=k_cache.shape[2], HEAD_DIM=head_dim,
        HEAD_DIM_P=config.padded_head_dim(head_dim), CAUSAL=causal,
        SLIDING_WINDOW=variant.sliding_window, SOFT_CAP=variant.soft_cap, FP32_DOT=fp32_dot,
        LOOKAHEAD=tiles.lookahead, **tiles.launch_options())
