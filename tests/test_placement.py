"""benchmarks/placement.py: the probing copy of the decode kernel computes what the kernel does
and records every program once; the summary counts programs an SM as they ran."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import placement  # noqa: E402

import flashcore_kernels as fk  # noqa: E402
from flashcore_kernels.decode_plan import pack_slot, unpack_slot  # noqa: E402

from .paged_batch import make_batch  # noqa: E402

DECODE_SOURCE = (ROOT / "kernels" / "decode.py").read_text()


def test_the_probe_adds_an_argument_and_three_stores_to_decode_kernel_alone():
    source = placement.probe_source(DECODE_SOURCE)
    head, kernel, rest = split_at_decode_kernel(source)
    old_head, _, old_rest = split_at_decode_kernel(DECODE_SOURCE)
    assert "    probe, probe_counter, PROBE_REPLAYS: tl.constexpr,\n):\n" in kernel
    assert kernel.count("tl.store(record") == 3
    assert head.endswith(old_head) and rest == old_rest  # (and one import first)


def split_at_decode_kernel(source: str) -> tuple[str, str, str]:
    start, end = source.index("def decode_kernel("), source.index("def decode_piece(")
    return source[:start], source[start:end], source[end:]


def test_the_probe_refuses_a_kernel_it_does_not_recognise():
    with pytest.raises(ValueError, match="no longer starts and ends"):
        placement.probe_source(DECODE_SOURCE.replace("FP16_PRODUCTS: tl.constexpr,", ""))


def test_placement_counts_real_programs_an_sm():
    # SM 0 runs programs 0 and 2, SM 1 programs 1 and 3; program 3 has no piece.
    records = torch.tensor([[0, 0, 4000], [1, 0, 2000], [0, 1000, 5000], [1, 500, 900]])
    found = placement.placement(records, [True, True, True, False])
    assert found["loads"] == {1: 1, 2: 1}
    assert found["light_sms"] == [1]
    assert found["mean_us"] == {1: 2.0, 2: 4.0}
    assert found["span_us"] == 5.0


def test_spans_group_by_where_the_lighter_sms_were():
    # Two SMs, three programs: SM 1 holds one program in the first two launches, SM 0 in the last.
    def launch(sms, span):
        return [[sm, 0, 1000 * span] for sm in sms]
    launches = torch.tensor([launch([0, 1, 0], 5), launch([0, 1, 0], 7), launch([1, 0, 1], 6)])
    assert placement.spans_by_placement(launches, [True] * 3) == {(1,): [5.0, 7.0], (0,): [6.0]}


class FakePlan:
    def __init__(self, slots):
        self.pieces = torch.tensor(slots, dtype=torch.int64)


def test_real_programs_follow_a_rows_two_slots():
    # 3 rows, 6 slots: row 0 runs slots 0 and 5, row 1 slots 1 and 4, row 2 slots 2 and 3.
    plan = FakePlan([-1, pack_slot(0, 0, 1, 0), -1, -1, -1, pack_slot(1, 0, 1, 1)])
    assert placement.real_programs(plan, 3, 2) == [True, True, True, True, False, False]


def test_pieces_first_orders_by_sequence_then_split():
    slots = [-1, -1, pack_slot(1, 0, 2, 2), pack_slot(0, 1, 2, 1), pack_slot(0, 0, 2, 0),
             pack_slot(1, 1, 2, 3), -1, -1]
    plan = FakePlan(slots)
    placement.pieces_first(plan, unpack_slot)
    found = plan.pieces.tolist()
    assert [unpack_slot(s)[:2] for s in found[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert found[4:] == [-1] * 4


def test_empty_rows_in_middle_turns_the_first_slots_by_half():
    pieces = [pack_slot(seq, 0, 1, seq) for seq in range(4)]
    plan = FakePlan([-1, -1] + pieces + [-1] * 6)  # 6 rows, the empty ones first
    placement.empty_rows_in_middle(plan, 6)
    assert plan.pieces.tolist() == pieces[1:] + [-1, -1] + pieces[:1] + [-1] * 6
    assert placement.real_programs(plan, 6, 1) == [True] * 3 + [False] * 2 + [True]


def test_empty_rows_in_middle_refuses_rows_of_two_pieces():
    plan = FakePlan([pack_slot(0, 0, 1, 0), -1, -1, pack_slot(1, 0, 1, 1)])  # row 0: two
    with pytest.raises(ValueError, match="two pieces"):
        placement.empty_rows_in_middle(plan, 2)


def test_shifts_parse_as_counts():
    assert placement.batches.parse_counts("0,4,132") == [0, 4, 132]
    with pytest.raises(ValueError):
        placement.batches.parse_counts("4,")


def test_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(placement.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        placement.main([])


@pytest.mark.gpu
@pytest.mark.parametrize("planned", [False, True])
def test_the_probed_kernel_computes_what_the_kernel_does(device, planned):
    batch = make_batch([1, 1, 1], [300, 1000, 90], device=device)
    plan = None
    if planned:
        plan = fk.DecodePlan.allocate(3, batch.kv_cache.shape[1], 16, device)
        plan.update(batch.cu_seqlens_q, batch.seq_lens, 3)
    call = dict(max_query_len=1, decode_plan=plan)
    expected = fk.paged_attention(*batch.args(), **call)
    probed = placement.ProbedDecode(1024, device)
    launcher = sys.modules["flashcore_kernels.paged_attention"]
    kernel = launcher.decode_kernel
    launcher.decode_kernel = probed
    try:
        out = fk.paged_attention(*batch.args(), **call)
    finally:
        launcher.decode_kernel = kernel
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    records = probed.records()
    assert records.shape == (1, probed.programs, placement.PROBE_WORDS) and probed.programs > 0
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    assert ((records[..., 0] >= 0) & (records[..., 0] < sms)).all()
    assert (records[..., 1] > 0).all() and (records[..., 2] >= records[..., 1]).all()


@pytest.mark.gpu
def test_each_replay_keeps_its_own_records(device):
    """Five launches through a probe that keeps three: the last three come back, oldest first,
    each with every program's record."""
    batch = make_batch([1, 1], [300, 90], device=device)
    probed = placement.ProbedDecode(1024, device, replays=3)
    launcher = sys.modules["flashcore_kernels.paged_attention"]
    kernel = launcher.decode_kernel
    launcher.decode_kernel = probed
    try:
        for _ in range(5):
            fk.paged_attention(*batch.args(), max_query_len=1, num_kv_splits=2)
    finally:
        launcher.decode_kernel = kernel
    records = probed.records()
    assert records.shape == (3, probed.programs, placement.PROBE_WORDS)
    starts = records[:, :, 1]
    assert (starts > 0).all()
    assert starts[1].min() >= records[0, :, 2].max() and starts[2].min() >= records[1, :, 2].max()


@pytest.mark.gpu
def test_a_shift_leaves_the_probed_launch_as_it_was(device):
    """An idle kernel before each probed launch (``--shifts``) changes neither the output nor
    the records."""
    batch = make_batch([1, 1], [300, 90], device=device)
    expected = fk.paged_attention(*batch.args(), max_query_len=1, num_kv_splits=2)
    probed = placement.ProbedDecode(1024, device, replays=2)
    probed.shift = 5
    launcher = sys.modules["flashcore_kernels.paged_attention"]
    kernel = launcher.decode_kernel
    launcher.decode_kernel = probed
    try:
        out = fk.paged_attention(*batch.args(), max_query_len=1, num_kv_splits=2)
    finally:
        launcher.decode_kernel = kernel
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    records = probed.records()
    assert records.shape == (1, probed.programs, placement.PROBE_WORDS)
    assert (records[..., 1] > 0).all() and (records[..., 2] >= records[..., 1]).all()
