"""benchmarks/batches.py: the block tables of ``make_inputs`` in both page orders."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import batches  # noqa: E402

SPEC = batches.decode_batch(3, 40)  # 3 pages a sequence at page 16


def inputs(order):
    return batches.make_inputs(SPEC, 4, 2, 16, page_size=16, device="cpu", page_order=order)


def test_in_order_gives_each_sequence_consecutive_pages():
    assert inputs("in_order").block_table.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_random_order_uses_every_page_but_the_null_one_once():
    table = inputs("random").block_table
    assert sorted(table.flatten().tolist()) == list(range(1, 10))
    assert table.flatten().tolist() != list(range(1, 10))  # (seed 0 does scatter them)


def test_both_orders_draw_the_same_tokens_and_write_where_their_table_says():
    scattered, in_order = inputs("random"), inputs("in_order")
    assert torch.equal(scattered.qkv, in_order.qkv)
    for inp in (scattered, in_order):
        last_page = inp.block_table[:, 39 // 16].long()
        assert inp.slot_mapping.tolist() == (last_page * 16 + 39 % 16).tolist()


def test_an_unknown_order_is_refused():
    with pytest.raises(ValueError, match="page_order must be one of"):
        inputs("sorted")


def test_uneven_grid_is_the_same_every_run_and_its_lengths_unequal():
    import grids  # noqa: E402 (benchmarks/ is on the path above)

    first, again = grids.uneven(), grids.uneven()
    assert [spec for _, spec in first] == [spec for _, spec in again]
    for _, spec in first:
        assert spec.is_decode_only and not spec.is_uniform
    assert len({spec.label for _, spec in first}) == len(first)
