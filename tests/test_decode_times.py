"""benchmarks/decode_times.py: what ``--merge-heads`` and ``--splits`` fix, and its shapes'
geometries."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import decode_times  # noqa: E402

from flashcore_kernels import config  # noqa: E402


def test_zero_keeps_the_rule_and_a_count_is_held_to_the_heads_there_are():
    assert decode_times.fixed_merge_heads(0) is config.merge_heads
    fixed = decode_times.fixed_merge_heads(8)
    assert fixed(32, 64) == 8 and fixed(5, 2) == 8 and fixed(3, 2) == 4


def test_zero_keeps_the_split_rule_and_a_count_is_used_as_given():
    assert decode_times.with_splits(0) is config.num_kv_splits
    fixed = decode_times.with_splits(4)
    assert fixed(64, 8, "cuda", 4) == 4 and fixed(1, 1, "cuda", 32) == 4


def test_every_geometry_named_exists():
    for name in decode_times.SHAPES:
        assert decode_times.geometry.get(name).name == name


def test_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(decode_times.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        decode_times.main([])
