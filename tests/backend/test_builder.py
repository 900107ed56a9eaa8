"""The metadata builder on real ``CommonAttentionMetadata``: it plans without touching tensors."""

import dataclasses

import pytest
import torch

pytest.importorskip("vllm")

from vllm.config import CUDAGraphMode, set_current_vllm_config  # noqa: E402
from vllm.v1.attention.backend import AttentionCGSupport  # noqa: E402

from flashcore_backend.backend import FlashCoreBackend  # noqa: E402
from flashcore_kernels import DecodePlan  # noqa: E402
from flashcore_kernels.decode_plan import unpack_slot  # noqa: E402
from flashcore_backend.metadata import FlashCoreMetadata, FlashCoreMetadataBuilder  # noqa: E402

from .vllm_batch import (BatchSpec, Geometry, kv_cache_spec, make_common_metadata,  # noqa: E402
                         no_tensor_ops)

G = Geometry()
BATCHES = {
    "decode_only": BatchSpec(seq_lens=[17, 5, 40, 1], query_lens=[1, 1, 1, 1]),
    "prefill_only": BatchSpec(seq_lens=[20, 33], query_lens=[20, 33]),
    "mixed": BatchSpec(seq_lens=[9, 40, 18, 64], query_lens=[1, 1, 6, 30]),  # decodes first
    "lone_decode": BatchSpec(seq_lens=[70], query_lens=[1]),  # runs without the plan: none made
}


def make_builder(vllm_config, device, g=G) -> FlashCoreMetadataBuilder:
    with set_current_vllm_config(vllm_config):
        return FlashCoreMetadataBuilder(kv_cache_spec(g), ["model.layers.0.self_attn.attn"],
                                        vllm_config, device)


def test_builder_class_and_cudagraph_support():
    assert FlashCoreBackend.get_builder_cls() is FlashCoreMetadataBuilder
    assert FlashCoreMetadataBuilder._cudagraph_support == AttentionCGSupport.ALWAYS
    assert FlashCoreMetadataBuilder.reorder_batch_threshold is None  # any batch order works


def test_workspace_is_allocated_once_for_the_largest_batch(make_config, device):
    builder = make_builder(make_config(G), device)
    ws = builder.workspace
    assert ws.partial_out.shape[1:] == (G.num_q_heads, G.head_size)
    assert ws.partial_out.dtype == torch.float32
    assert ws.partial_out.device.type == ws.partial_lse.device.type == device.type
    from flashcore_kernels import config

    for num_seqs in range(1, G.max_num_seqs + 1):
        splits = config.num_kv_splits(num_seqs, G.num_kv_heads, device,
                                      G.num_q_heads // G.num_kv_heads, G.head_size, G.dtype)
        assert ws.fits(num_seqs * splits, G.num_q_heads, G.head_size)


@pytest.mark.parametrize("name", list(BATCHES))
def test_build_passes_vllm_tensors_through_without_tensor_ops(make_config, device, name,
                                                              monkeypatch):
    spec = BATCHES[name]
    builder = make_builder(make_config(G), device)
    common, _ = make_common_metadata(spec, G, device=device)
    # The plan is one kernel launch (test_build_plans_the_batch runs it); under the CPU
    # interpreter a launch copies its tensors, so here it only records what it was given.
    planned = []
    monkeypatch.setattr(DecodePlan, "update", lambda plan, *args: planned.append((plan, args)))
    with no_tensor_ops():  # no allocation, no copy, no host read (.item/.cpu) of any kind
        md = builder.build(0, common)
    num_seqs = len(spec.seq_lens)
    assert planned == ([(builder.decode_plan, (common.query_start_loc, common.seq_lens,
                                               num_seqs, None, builder.tile_tokens(num_seqs)))]
                       if num_seqs > 1 else [])
    assert md.decode_plan is builder.decode_plan
    assert isinstance(md, FlashCoreMetadata)
    assert md.num_actual_tokens == spec.num_tokens
    assert md.max_query_len == max(spec.query_lens)
    assert md.max_seq_len == max(spec.seq_lens)
    assert md.query_start_loc is common.query_start_loc
    assert md.seq_lens is common.seq_lens
    assert md.block_table is common.block_table_tensor
    assert md.slot_mapping is common.slot_mapping
    assert md.workspace is builder.workspace
    assert builder.build(0, common, fast_build=True).workspace is builder.workspace


def test_build_plans_the_batch(make_config, device):
    """Each decode gets its splits, the long one the most, and a slot for each piece; the
    prefills get none."""
    builder = make_builder(make_config(G), device)
    spec = BatchSpec(seq_lens=[900, 40, 18, 64, 1], query_lens=[1, 1, 6, 30, 1])
    common, _ = make_common_metadata(spec, G, device=device)
    plan = builder.build(0, common).decode_plan
    splits = plan.seq_splits[:5].tolist()
    assert splits[2] == splits[3] == 0 and min(splits[0], splits[1], splits[4]) >= 1
    assert splits[0] > splits[1]  # the long decode in more pieces
    pieces = [unpack_slot(slot)[0] for slot in plan.pieces.tolist() if slot >= 0]
    assert sorted(pieces) == [0] * splits[0] + [1] * splits[1] + [4] * splits[4]


@pytest.mark.parametrize("kv_cache_dtype", ["auto", "fp8"])
def test_the_plan_cuts_pieces_in_the_decode_kernels_steps(tmp_path, registered, device,
                                                           monkeypatch, kv_cache_dtype):
    """The plan gets the tile the launcher picks for the batch, from the dtype the kernels read
    the cache in (an fp8 cache's spec holds uint8): at 8 sequences of 2 KV heads on a GPU of 4
    SMs, one split, Hopper's rules step 128 tokens over fp8 and 64 over fp16."""
    from flashcore_kernels import config

    from .vllm_batch import make_vllm_config, write_model_dir

    monkeypatch.setattr(config, "interpreting", lambda: False)  # (Hopper's rules, not the CPU's)
    monkeypatch.setattr(config, "multiprocessor_count", lambda device: 4)
    monkeypatch.setattr(config, "shared_memory_per_block",
                        lambda device: config.HOPPER_SHARED_MEMORY)
    vllm_config = make_vllm_config(write_model_dir(tmp_path, G), G, device=device)
    vllm_config.cache_config.cache_dtype = kv_cache_dtype
    fp8 = kv_cache_dtype == "fp8"
    spec = dataclasses.replace(kv_cache_spec(G), dtype=torch.uint8) if fp8 else kv_cache_spec(G)
    with set_current_vllm_config(vllm_config):
        builder = FlashCoreMetadataBuilder(spec, ["model.layers.0.self_attn.attn"], vllm_config,
                                           device)
    num_seqs = G.max_num_seqs
    splits = config.num_kv_splits(num_seqs, G.num_kv_heads, device,
                                  G.num_q_heads // G.num_kv_heads, G.head_size, spec.dtype)
    tiles = config.decode_tiles(G.head_size, G.num_q_heads // G.num_kv_heads, splits, G.dtype,
                                torch.float8_e4m3fn if fp8 else G.dtype, planned=True)
    assert builder.tile_tokens(num_seqs) == tiles.block_n == (128 if fp8 else 64)


def test_build_refuses_what_the_kernels_cannot_do(make_config, device):
    builder = make_builder(make_config(G), device)
    common, _ = make_common_metadata(BATCHES["mixed"], G, device=device)
    with pytest.raises(NotImplementedError, match="cascade"):
        builder.build(16, common)
    with pytest.raises(NotImplementedError, match="causal"):
        builder.build(0, common.replace(causal=False))
    with pytest.raises(NotImplementedError, match="causal"):
        builder.build(0, common.replace(causal=torch.ones(4, dtype=torch.bool, device=device)))


def test_update_block_table_swaps_only_the_pages(make_config, device):
    builder = make_builder(make_config(G), device)
    common, _ = make_common_metadata(BATCHES["mixed"], G, device=device)
    md = builder.build(0, common)
    table, slots = common.block_table_tensor.flip(0), common.slot_mapping.flip(0)
    md2 = builder.update_block_table(md, table, slots)
    assert md2.block_table is table and md2.slot_mapping is slots and md.block_table is not table
    assert md2.query_start_loc is md.query_start_loc and md2.workspace is md.workspace


def capture_decode_shaped_batch(num_tokens):
    """What vLLM's V2 runner captures for a FULL graph of ``num_tokens`` tokens when
    num_tokens <= max_num_seqs (InputBatch.make_dummy): one token per request."""
    return BatchSpec(seq_lens=[1] * num_tokens, query_lens=[1] * num_tokens)


@pytest.mark.parametrize("mode, launches_prefill", [
    (CUDAGraphMode.FULL, True),  # FULL graphs replay mixed batches
    (CUDAGraphMode.FULL_AND_PIECEWISE, False),  # FULL graphs replay uniform decodes only
    (CUDAGraphMode.FULL_DECODE_ONLY, False),
])
def test_capture_launches_prefill_exactly_when_the_graph_can_replay_mixed_batches(
        make_config, device, mode, launches_prefill):
    vllm_config = make_config(G)
    builder = make_builder(vllm_config, device)
    common, _ = make_common_metadata(capture_decode_shaped_batch(8), G, device=device)
    saved = vllm_config.compilation_config.cudagraph_mode
    vllm_config.compilation_config.cudagraph_mode = mode
    try:
        md = builder.build_for_cudagraph_capture(common)
    finally:
        vllm_config.compilation_config.cudagraph_mode = saved
    assert md.max_query_len == (8 if launches_prefill else 1)
    assert dataclasses.replace(md, max_query_len=1) == builder.build(0, common)
