"""The tiles config.py picks for a GPU, run against the float64 reference on any machine.

Under the interpreter config.py picks small tiles of its own (so that CPU tests cross several KV
tiles and query blocks), which leaves the GPU tile rules unrun in CI. Here each GPU rule runs once
under the interpreter, on lengths that end inside a tile, so that a rule whose block sizes break
a shape (a query block that does not divide a tile, a mask missed at a partial step) fails on the
CPU before a GPU runs it. fp16: the interpreter's bf16 dot is not exact.
"""

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels import config

from ..accuracy import assert_matches_reference
from ..paged_batch import make_batch
from .test_paged_attention import check
from .test_variants import fp8_cache_like, heads_tensor

HOPPER = config.HOPPER_SHARED_MEMORY  # shared memory per block (227 KB)
AMPERE_CONSUMER = 101376  # sm_86 / sm_89 (99 KB)

# (scenario, query lengths, KV lengths, query heads, KV heads, head size, KV splits or None,
#  shared memory per block)
RULES = [
    ("prefill tiles, head 64, 1:1", [130, 1], [200, 90], 2, 2, 64, None, HOPPER),
    ("prefill tiles, head 128, 4:1", [140, 1], [300, 60], 8, 2, 128, None, HOPPER),
    ("prefill tiles, head 256, 2:1", [140, 1], [260, 70], 4, 2, 256, None, HOPPER),
    ("decode tiles, head 128, 4:1, whole sequences", [1, 1], [300, 75], 8, 2, 128, 1, HOPPER),
    ("decode tiles, head 128, 4:1, 4 splits", [1, 1], [300, 75], 8, 2, 128, 4, HOPPER),
    ("decode tiles, head 256, 2:1, 2 splits", [1, 1], [300, 75], 4, 2, 256, 2, HOPPER),
    ("decode tiles, MQA 32:1, 8 splits", [1, 1], [700, 260], 32, 1, 128, 8, HOPPER),
    ("decode tiles, MQA 32:1, 16 splits", [1, 1], [700, 260], 32, 1, 128, 16, HOPPER),
    ("prefill tiles, head 128, 4:1, 99 KB", [140, 1], [300, 60], 8, 2, 128, None, AMPERE_CONSUMER),
    ("prefill tiles, head 256, 2:1, 99 KB", [140, 1], [260, 70], 4, 2, 256, None, AMPERE_CONSUMER),
    ("decode tiles, head 128, 4:1, 99 KB", [1, 1], [300, 75], 8, 2, 128, 1, AMPERE_CONSUMER),
]


def gpu_rules(monkeypatch, shared_memory=HOPPER):
    """Make the launcher pick the tiles of a GPU with ``shared_memory`` bytes per block."""
    monkeypatch.setattr(config, "interpreting", lambda: False)
    monkeypatch.setattr(config, "shared_memory_per_block", lambda device: shared_memory)


@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
def test_gpu_tile_rules_match_reference(device, monkeypatch, rule):
    scenario, q_lens, kv_lens, num_q_heads, num_kv_heads, head_dim, splits, shared_memory = rule
    gpu_rules(monkeypatch, shared_memory)
    batch = make_batch(q_lens, kv_lens, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads,
                       head_dim=head_dim, device=device, seed=len(scenario))
    qpk = num_q_heads // num_kv_heads
    dtype = batch.query.dtype
    tiles = (config.prefill_tiles(head_dim, qpk, dtype, shared_memory) if splits is None
             else config.decode_tiles(head_dim, qpk, splits, dtype, dtype, shared_memory))
    assert tiles.block_n >= 32, tiles  # a GPU rule, not the interpreter's 16-token steps
    kwargs = {} if splits is None else {"num_kv_splits": splits}
    check(scenario, batch, **kwargs)


# head size, splits -> (block_n, warps, registers held to) of the fp8 rule
FP8_DECODE_TILES = {(128, 1): (128, 4, None), (128, 4): (64, 4, 128),
                    (64, 1): (64, 2, 128), (64, 4): (128, 4, 128)}


@pytest.mark.parametrize("head_dim, splits", list(FP8_DECODE_TILES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_fp8_decode_tiles_match_reference(device, monkeypatch, dtype, head_dim, splits):
    """The fp8 cache's own rules: at head 128, 128-token steps for whole sequences and the
    split tile's registers held for its occupancy; at head 64, 2 warps and 64-token steps for
    whole sequences, 128-token steps split, both held; fp16 products for all."""
    gpu_rules(monkeypatch)
    tiles = config.decode_tiles(head_dim, 4, splits, dtype, torch.float8_e4m3fn)
    assert tiles.fp16_products, tiles
    assert (tiles.block_n, tiles.num_warps, tiles.maxnreg) == FP8_DECODE_TILES[head_dim, splits]
    batch = make_batch([1, 1], [300, 75], num_q_heads=8, num_kv_heads=2, head_dim=head_dim,
                       dtype=dtype, device=device)
    k_scale, v_scale = heads_tensor([0.02], device), heads_tensor([0.015], device)
    cache = fp8_cache_like(batch, k_scale, v_scale)
    args = (batch.query, cache, batch.cu_seqlens_q, batch.seq_lens, batch.block_table)
    out = batch.poisoned_out()
    fk.paged_attention(*args, max_query_len=1, out=out, k_scale=k_scale, v_scale=v_scale,
                       num_kv_splits=splits)
    ref_fp8 = fk.paged_attention_reference(*args, k_scale=k_scale, v_scale=v_scale)
    assert_matches_reference("fp8 decode tiles (vs fp8 reference)", out, ref_fp8)


def launcher_tiles(monkeypatch) -> list:
    """The decode tiles the launcher picks from here on: the plan must reach the rule."""
    chosen, rule = [], config.decode_tiles

    def recorded(*args, **kwargs):
        chosen.append(rule(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(config, "decode_tiles", recorded)
    return chosen


@pytest.mark.parametrize("head_dim, planned_tile", [(128, (128, 208)), (64, (64, 128))])
def test_gpu_fp8_planned_decode_tile_matches_reference(device, monkeypatch, head_dim,
                                                       planned_tile):
    """With a decode plan the whole-sequence fp8 tile at head 128 holds its registers to 208
    (the launch without a plan leaves them to ptxas); head 64's holds them to 128 either way.
    The planned kernel under that rule is right."""
    gpu_rules(monkeypatch)
    fp8 = torch.float8_e4m3fn
    unplanned = config.decode_tiles(head_dim, 4, 1, torch.bfloat16, fp8)
    assert unplanned.maxnreg == (None if head_dim == 128 else 128), unplanned
    chosen = launcher_tiles(monkeypatch)
    batch = make_batch([1, 1], [300, 75], num_q_heads=8, num_kv_heads=2, head_dim=head_dim,
                       dtype=torch.float16, device=device)
    plan = fk.DecodePlan.allocate(2, 2, 4, device)  # a wave of 4: a row a sequence, one split each
    plan.update(batch.cu_seqlens_q, batch.seq_lens, 2)
    assert plan.seq_splits[:2].tolist() == [1, 1]
    k_scale, v_scale = heads_tensor([0.02], device), heads_tensor([0.015], device)
    cache = fp8_cache_like(batch, k_scale, v_scale)
    args = (batch.query, cache, batch.cu_seqlens_q, batch.seq_lens, batch.block_table)
    out = batch.poisoned_out()
    fk.paged_attention(*args, max_query_len=1, out=out, k_scale=k_scale, v_scale=v_scale,
                       num_kv_splits=1, decode_plan=plan)
    assert [(t.block_n, t.maxnreg) for t in chosen] == [planned_tile]
    ref_fp8 = fk.paged_attention_reference(*args, k_scale=k_scale, v_scale=v_scale)
    assert_matches_reference("planned fp8 decode tile (vs fp8 reference)", out, ref_fp8)


@pytest.mark.parametrize("wave, splits", [(4, [1, 1]), (8, [3, 1])])
def test_gpu_planned_decode_tiles_hold_the_registers_the_wave_counts(device, monkeypatch, wave,
                                                                     splits):
    """With a decode plan the small-group tiles hold the kernel to the 128 registers a thread of
    the four programs an SM that the plan's wave counts on (ptxas gave GQA 7:1 158 at one
    split); without a plan they leave it to ptxas. The planned kernel under that rule is right,
    at one split a sequence and at several."""
    gpu_rules(monkeypatch)
    for num_kv_splits in (1, 4):
        assert config.decode_tiles(128, 7, num_kv_splits).maxnreg is None
    assert config.decode_tiles(128, 32, 1, planned=True).maxnreg is None  # MQA: its own tile
    chosen = launcher_tiles(monkeypatch)
    batch = make_batch([1, 1], [300, 75], num_q_heads=14, num_kv_heads=2, head_dim=128,
                       dtype=torch.float16, device=device)
    plan = fk.DecodePlan.allocate(2, 2, wave, device)
    plan.update(batch.cu_seqlens_q, batch.seq_lens, 2)
    assert plan.seq_splits[:2].tolist() == splits
    args = (batch.query, batch.kv_cache, batch.cu_seqlens_q, batch.seq_lens, batch.block_table)
    out = batch.poisoned_out()
    fk.paged_attention(*args, max_query_len=1, out=out, num_kv_splits=1, decode_plan=plan)
    assert [(t.block_n, t.maxnreg) for t in chosen] == [(64, 128)]
    assert_matches_reference(f"planned decode tile, GQA 7:1, splits {splits}", out,
                             fk.paged_attention_reference(*args))


def test_fp8_decode_rules_leave_float32_queries_their_products(monkeypatch):
    """fp16 products, and the split tile's register cap that comes with them, are for 16-bit
    queries; a float32 query over an fp8 cache keeps the bf16-cache tiles' float32 products."""
    gpu_rules(monkeypatch)
    for splits in (1, 4):
        tiles = config.decode_tiles(128, 4, splits, torch.float32, torch.float8_e4m3fn)
        assert not tiles.fp16_products and tiles.maxnreg is None, tiles


def test_decode_with_lookahead_matches_reference(device, monkeypatch):
    """No decode rule reads the block table ahead yet, but tune_tiles.py can ask for it."""
    monkeypatch.setattr(config, "decode_tiles",
                        lambda *_, **__: config.TileConfig(16, 16, 4, 2, lookahead=True))
    batch = make_batch([1, 1, 1], [300, 75, 16], num_q_heads=8, num_kv_heads=2, head_dim=64,
                       device=device)
    for splits in (1, 4):
        check(f"decode with lookahead, {splits} splits", batch, num_kv_splits=splits)
