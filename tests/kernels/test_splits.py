"""How ``config.num_kv_splits`` and the decode plan spread a decode batch over an H100/H200-sized
GPU (no attention kernel runs)."""

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels import config

SMS = 132
CUDA = torch.device("cuda")  # only named: the GPU's SM count is patched in


@pytest.fixture(autouse=True)
def hopper(monkeypatch):
    monkeypatch.setattr(config, "multiprocessor_count", lambda device: SMS)
    monkeypatch.setattr(config, "shared_memory_per_block", lambda device: config.HOPPER_SHARED_MEMORY)


BF16, FP8 = torch.bfloat16, torch.float8_e4m3fn


@pytest.mark.parametrize("head_dim, cache_dtype", [(128, BF16), (64, BF16), (64, FP8), (256, BF16)])
@pytest.mark.parametrize("queries_per_kv", [1, 4, 7, 32])
@pytest.mark.parametrize("num_kv_heads", [1, 4, 8])
def test_split_count_fills_one_wave_and_no_more(queries_per_kv, num_kv_heads, head_dim,
                                                cache_dtype):
    wave = config.decode_programs_per_sm(queries_per_kv, head_dim, cache_dtype) * SMS
    for num_seqs in range(1, 300):
        splits = config.num_kv_splits(num_seqs, num_kv_heads, CUDA, queries_per_kv, head_dim,
                                      cache_dtype)
        programs = num_seqs * num_kv_heads
        assert splits & (splits - 1) == 0 and 1 <= splits <= config.MAX_KV_SPLITS
        assert programs * splits <= max(wave, programs)  # one wave, or no split at all
        if splits < config.MAX_KV_SPLITS:
            assert 2 * programs * splits > wave  # twice as many would start a second wave


# The counts measured best on an H200 (benchmarks/results/tiles-h200/tune_splits.txt).
@pytest.mark.parametrize("name, num_seqs, num_kv_heads, queries_per_kv, splits", [
    ("llama 1x8k", 1, 8, 4, 64),
    ("llama 8x8k", 8, 8, 4, 8),
    ("llama 32x8k", 32, 8, 4, 2),
    ("llama 64x8k", 64, 8, 4, 1),
    ("gqa 7:1 4x8k", 4, 4, 7, 32),
    ("mqa 64x8k", 64, 1, 32, 4),
    ("mqa 128x4k", 128, 1, 32, 2),
    ("mqa 256x2k", 256, 1, 32, 1),
])
def test_split_count_is_the_measured_best(name, num_seqs, num_kv_heads, queries_per_kv, splits):
    assert config.num_kv_splits(num_seqs, num_kv_heads, CUDA, queries_per_kv, 128, BF16) == splits


@pytest.mark.parametrize("queries_per_kv, head_dim, cache_dtype, programs", [
    (4, 128, BF16, 4),
    (4, 256, BF16, 4),  # (its tile is held to the four's registers)
    (1, 64, BF16, 6),
    (3, 64, torch.float16, 6),
    (16, 64, BF16, 6),
    (3, 64, FP8, 4),  # the fp8 split tile is held to the four's registers
    (3, 64, torch.float32, 4),
    (32, 64, BF16, 2),  # MQA's 128-token tile
])
def test_programs_per_sm_follow_the_decode_kernel(queries_per_kv, head_dim, cache_dtype,
                                                   programs):
    """What the wave counts on; that the compiled kernels fit it is
    test_resources.py::test_decode_kernels_fit_the_programs_an_sm_the_wave_counts_on."""
    assert config.decode_programs_per_sm(queries_per_kv, head_dim, cache_dtype) == programs


def test_the_plan_gives_head_64_a_third_split_at_8_by_8k(device):
    """Six programs an SM at head 64 (32 KV heads): 8 decodes of 8k fill a wave of 792 with 3
    splits each, where a count of four gave 2 (planned 8 x 8k 0.992x -> 1.101x FA3 on an H200,
    tiles-h200/ab_decode_heads.txt run 3). The launch without a plan keeps a power of two."""
    wave = config.decode_wave(CUDA, 1, 64, BF16)
    assert wave == 6 * SMS
    plan = fk.DecodePlan.allocate(8, 32, wave, device)
    int32 = dict(dtype=torch.int32, device=device)
    plan.update(torch.arange(9, **int32), torch.full((8,), 8192, **int32), 8)
    assert plan.seq_splits.tolist() == [3] * 8
    assert config.num_kv_splits(8, 32, CUDA, 1, 64, BF16) == 2


@pytest.mark.parametrize("num_q_heads", [1, 7, 12, 32, 64])
def test_merge_heads_are_a_power_of_two_within_the_partials_budget(num_q_heads):
    # Whether the merge's programs cover every head is checked on its output, by the 12-head
    # decodes of test_paged_attention.py.
    for splits in (2, 4, 8, 16, 32, 64):
        heads = config.merge_heads(num_q_heads, splits)
        assert heads & (heads - 1) == 0 and heads <= config.next_power_of_2(num_q_heads)
        assert heads * splits <= config.MERGE_PARTIALS or heads == 1


def test_large_groups_count_four_programs_per_sm_where_the_compact_tile_serves_them(monkeypatch):
    # Below Hopper's shared memory MQA gets the 64-token compact tile (config.decode_tiles), not
    # the 128-token one that leaves room for only two programs per SM.
    monkeypatch.setattr(config, "shared_memory_per_block", lambda device: 101376)
    monkeypatch.setattr(config, "interpreting", lambda: False)  # the GPU rule, not the CPU's
    assert config.decode_tiles(128, 32, 4, shared_memory=101376).block_n == 64
    assert config.num_kv_splits(64, 1, CUDA, 32, 128, BF16) == 8
