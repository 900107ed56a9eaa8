"""How ``config.num_kv_splits`` spreads a decode batch over an H100/H200-sized GPU (no kernel runs)."""

import pytest
import torch

from flashcore_kernels import config

SMS = 132
CUDA = torch.device("cuda")  # only named: the GPU's SM count is patched in


@pytest.fixture(autouse=True)
def hopper(monkeypatch):
    monkeypatch.setattr(config, "multiprocessor_count", lambda device: SMS)
    monkeypatch.setattr(config, "shared_memory_per_block", lambda device: config.HOPPER_SHARED_MEMORY)


@pytest.mark.parametrize("queries_per_kv", [1, 4, 7, 32])
@pytest.mark.parametrize("num_kv_heads", [1, 4, 8])
def test_split_count_fills_one_wave_and_no_more(queries_per_kv, num_kv_heads):
    wave = config.decode_programs_per_sm(queries_per_kv) * SMS
    for num_seqs in range(1, 300):
        splits = config.num_kv_splits(num_seqs, num_kv_heads, CUDA, queries_per_kv)
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
    assert config.num_kv_splits(num_seqs, num_kv_heads, CUDA, queries_per_kv) == splits


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
    assert config.num_kv_splits(64, 1, CUDA, 32) == 8
