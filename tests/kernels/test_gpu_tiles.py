"""The tiles config.py picks for a GPU, run against the float64 reference on any machine.

Under the interpreter config.py picks small tiles of its own (so that CPU tests cross several KV
tiles and query blocks), which leaves the GPU tile rules unrun in CI. Here each GPU rule runs once
under the interpreter, on lengths that end inside a tile, so that a rule whose block sizes break
a shape (a query block that does not divide a tile, a mask missed at a partial step) fails on the
CPU before a GPU runs it. fp16: the interpreter's bf16 dot is not exact.
"""

import pytest
from flashcore_kernels import config

from ..paged_batch import make_batch
from .test_paged_attention import check

# (scenario, query lengths, KV lengths, query heads, KV heads, head size, KV splits or None)
RULES = [
    ("prefill tiles, head 64, 1:1", [130, 1], [200, 90], 2, 2, 64, None),
    ("prefill tiles, head 128, 4:1", [140, 1], [300, 60], 8, 2, 128, None),
    ("prefill tiles, head 256, 2:1", [140, 1], [260, 70], 4, 2, 256, None),
    ("decode tiles, head 128, 4:1, whole sequences", [1, 1], [300, 75], 8, 2, 128, 1),
    ("decode tiles, head 128, 4:1, 4 splits", [1, 1], [300, 75], 8, 2, 128, 4),
    ("decode tiles, head 256, 2:1, 2 splits", [1, 1], [300, 75], 4, 2, 256, 2),
    ("decode tiles, MQA 32:1, 8 splits", [1, 1], [700, 260], 32, 1, 128, 8),
    ("decode tiles, MQA 32:1, 16 splits", [1, 1], [700, 260], 32, 1, 128, 16),
]


@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
def test_gpu_tile_rules_match_reference(device, monkeypatch, rule):
    scenario, q_lens, kv_lens, num_q_heads, num_kv_heads, head_dim, splits = rule
    monkeypatch.setattr(config, "interpreting", lambda: False)  # the GPU's tile rules
    batch = make_batch(q_lens, kv_lens, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads,
                       head_dim=head_dim, device=device, seed=len(scenario))
    qpk = num_q_heads // num_kv_heads
    tiles = (config.prefill_tiles(head_dim, qpk, batch.query.dtype) if splits is None
             else config.decode_tiles(head_dim, qpk, splits, batch.query.dtype))
    assert tiles.block_n >= 32, tiles  # a GPU rule, not the interpreter's 16-token steps
    kwargs = {} if splits is None else {"num_kv_splits": splits}
    check(scenario, batch, **kwargs)
