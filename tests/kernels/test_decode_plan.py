"""The decode plan: split counts from each sequence's own length, pieces longest first, and
paged attention through a plan against the float64 reference."""

import importlib

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels import DecodePlan, config
from flashcore_kernels.decode_plan import unpack_slot

from ..accuracy import assert_matches_reference
from ..paged_batch import make_batch


def planned(batch, num_kv_heads, wave, max_num_seqs=None, **options):
    """A plan for ``batch`` made on its device, for a GPU that runs ``wave`` decode programs at
    once (the interpreter's own is small); ``options``: ``update``'s."""
    plan = DecodePlan.allocate(max_num_seqs or len(batch.kv_lens), num_kv_heads, wave,
                               batch.query.device)
    plan.update(batch.cu_seqlens_q, batch.seq_lens, len(batch.kv_lens), **options)
    return plan


def rows_of(plan, num_seqs):
    """What each row of the planned decode grid runs: [(sequence, split, count, partial row)]
    of its slots r and 2 * rows - 1 - r, slots of -1 left out."""
    rows = plan.grid_rows(num_seqs)
    slots = plan.pieces[:2 * rows].tolist()
    assert all(slot == -1 or slot >= 0 for slot in slots)
    return [[unpack_slot(slots[s]) for s in (r, 2 * rows - 1 - r) if slots[s] >= 0]
            for r in range(rows)]


def expected_splits(q_lens, kv_lens, num_kv_heads, wave, tiles=None):
    """plan_kernel's split counts, found by counting up from the fair share where the kernel
    bisects: the shortest piece length, at least a wave row's share of the decodes' tokens, at
    which the pieces fit the grid's rows, rows of two taking only decodes of at most half of it;
    then each at most its decode's ``tiles`` of the decode kernel, if given."""
    decodes = [kv for q, kv in zip(q_lens, kv_lens) if q == 1]
    rows = DecodePlan.grid_rows_for(len(q_lens), num_kv_heads, wave)
    piece = max(1, -(-sum(decodes) * num_kv_heads // wave))
    count = lambda kv: min(config.MAX_KV_SPLITS, -(-kv // piece))  # noqa: E731
    while sum(map(count, decodes)) - rows > sum(2 * kv <= piece for kv in decodes) // 2:
        piece += 1
    tiles = tiles or kv_lens  # (a tile of one token: never fewer tiles than pieces)
    return [min(count(kv), t) if q == 1 else 0 for q, kv, t in zip(q_lens, kv_lens, tiles)]


@pytest.mark.parametrize("q_lens, kv_lens, num_kv_heads, wave", [
    ([1] * 4, [100] * 4, 2, 64),  # alike: 8 each
    ([1] * 8, [4096] + [64] * 7, 8, 528),  # one long among short ones
    ([1, 5, 1, 0, 1], [300, 20, 7, 0, 1000], 2, 96),  # a prefill and a padding row
    ([1] * 70, [32768] + [1024] * 69, 8, 528),  # an H100's wave
    ([1], [8192], 8, 528),  # one sequence: the most splits
])
def test_plan_splits_by_length_and_lists_every_piece_longest_first(device, q_lens, kv_lens,
                                                                   num_kv_heads, wave):
    q_lens = [max(q, 0) for q in q_lens]
    batch = make_batch([max(q, 1) for q in q_lens], [max(kv, 1) for kv in kv_lens],
                       num_kv_heads=num_kv_heads, num_q_heads=num_kv_heads, device=device)
    batch.cu_seqlens_q = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).to(
        torch.int32).to(device)  # (query length 0: vLLM's padding)
    batch.seq_lens = torch.tensor(kv_lens, dtype=torch.int32, device=device)
    plan = planned(batch, num_kv_heads, wave)
    splits = expected_splits(q_lens, kv_lens, num_kv_heads, wave)
    assert plan.seq_splits[:len(kv_lens)].tolist() == splits
    grid = rows_of(plan, len(kv_lens))
    pieces = sorted((piece for row in grid for piece in row), key=lambda piece: piece[3])
    # Every split of every decode exactly once, in partial rows 0, 1, ... with a sequence's
    # splits side by side and in order from its first row.
    assert [row for *_, row in pieces] == list(range(len(pieces)))
    assert sorted(p[:3] for p in pieces) == sorted(
        (s, k, n) for s, n in enumerate(splits) for k in range(n))
    first = plan.seq_first_piece[:len(kv_lens)].tolist()
    for s, n in enumerate(splits):
        if n:
            assert pieces[first[s]:first[s] + n] == [(s, k, n, first[s] + k) for k in range(n)]
    piece_len = lambda piece: -(-kv_lens[piece[0]] // piece[2])  # noqa: E731
    assert [piece_len(p) for p in pieces] == sorted(map(piece_len, pieces), reverse=True)
    # The grid: rows of two first (as many as the pieces outnumber the rows), each two of the
    # shortest; else the empty rows first. Then a piece a row, longest first.
    pairs = max(len(pieces) - len(grid), 0)
    assert [len(row) for row in grid] == (
        [2] * pairs + [1] * (len(grid) - pairs) if pairs
        else [0] * (len(grid) - len(pieces)) + [1] * len(pieces))
    shortest = sorted(map(piece_len, pieces))[:2 * pairs]
    assert sorted(piece_len(p) for row in grid[:pairs] for p in row) == shortest
    singles = [piece_len(row[0]) for row in grid if len(row) == 1]
    assert singles == sorted(singles, reverse=True)


def test_a_window_caps_what_each_decode_counts_for(device):
    """With a window of 100 the three decodes read 100, 100 and 40 tokens: the two long ones
    share alike, whatever their lengths."""
    batch = make_batch([1, 1, 1], [5000, 300, 40], num_q_heads=2, num_kv_heads=2, device=device)
    plan = DecodePlan.allocate(3, 2, 48, batch.query.device)
    plan.update(batch.cu_seqlens_q, batch.seq_lens, 3, sliding_window=100)
    assert plan.seq_splits[:3].tolist() == expected_splits([1, 1, 1], [100, 100, 40], 2, 48)


def test_no_decode_gets_more_splits_than_the_decode_kernel_has_tiles(device):
    """A wave of 64 rows cuts 40, 48 and 300 tokens in pieces of 7: 6, 7 and 43, where 16-token
    tiles give them 3, 3 and 19 (more would be splits with nothing to read). Under a window of
    90, a decode's tiles start at the tile that holds the window's first token: at 5000 tokens
    that is 4896, so 7 tiles, one more than the window's 90 tokens fill."""
    batch = make_batch([1] * 3, [40, 48, 300], num_q_heads=4, num_kv_heads=1, device=device)
    assert planned(batch, 1, 64).seq_splits[:3].tolist() == [6, 7, 43]
    plan = planned(batch, 1, 64, tile_tokens=16)
    assert plan.seq_splits[:3].tolist() == expected_splits([1] * 3, [40, 48, 300], 1, 64,
                                                           tiles=[3, 3, 19]) == [3, 3, 19]
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=1, out=out, decode_plan=plan)
    assert_matches_reference("planned decode, splits [3, 3, 19]", out, batch.reference(),
                             batch.sdpa())
    window = make_batch([1, 1], [5000, 90], num_q_heads=4, num_kv_heads=1, device=device)
    plan = planned(window, 1, 64, sliding_window=90, tile_tokens=16)
    assert plan.seq_splits[:2].tolist() == expected_splits([1, 1], [90, 90], 1, 64,
                                                           tiles=[7, 6]) == [7, 6]
    with pytest.raises(ValueError, match="tile_tokens"):
        plan.update(window.cu_seqlens_q, window.seq_lens, 2, tile_tokens=0)


def test_one_long_decode_beside_short_ones_fills_the_wave(device):
    """An H200's wave of Llama-3-8B decodes is 66 rows of 8 KV heads. 32k tokens beside seven
    1k: a wave row's share is 606 tokens (55 + 7 x 2 pieces, 3 too many to fit the rows), 631
    the first length that fits: 52 pieces of 631 or 630 tokens, and each 1k decode in two, so
    that no row waits on a 1k piece (a power of two within each share, 32 and 1, ran 39 rows of
    1k)."""
    kv_lens = [32768] + [1024] * 7
    batch = make_batch([1] * 8, kv_lens, num_q_heads=8, num_kv_heads=8, device=device)
    plan = planned(batch, 8, wave=528)
    assert plan.seq_splits[:8].tolist() == [52] + [2] * 7
    assert [len(row) for row in rows_of(plan, 8)] == [1] * 66


@pytest.mark.parametrize("num_seqs", [2, 3, 5, 8, 14, 32, 64, 100, 256])
def test_alike_lengths_take_the_most_splits_that_fit_the_rows(device, monkeypatch, num_seqs):
    """At equal lengths every row runs one piece: the count is the most that fits the rows, 64
    at most; at the decode grid's batches of two or more (benchmarks/grids.py), the shape rule's
    count (an H200's wave). A batch of 2 gets 33, not 32."""
    monkeypatch.setattr(config, "multiprocessor_count", lambda device: 132)
    monkeypatch.setattr(config, "shared_memory_per_block", lambda device: config.HOPPER_SHARED_MEMORY)
    cuda = torch.device("cuda")
    batch = make_batch([1] * num_seqs, [8192] * num_seqs, num_q_heads=8, num_kv_heads=8,
                       device=device)
    plan = planned(batch, 8, wave=config.decode_wave(cuda, 4, 128, torch.bfloat16))
    fits = min(config.MAX_KV_SPLITS, plan.grid_rows(num_seqs) // num_seqs)
    assert plan.seq_splits[:num_seqs].tolist() == [fits] * num_seqs
    if num_seqs in (8, 32, 64, 256):
        assert fits == config.num_kv_splits(num_seqs, 8, cuda, 4, 128, torch.bfloat16)


@pytest.mark.parametrize("q_lens, kv_lens, wave", [
    ([1] * 6, [700, 33, 64, 1, 129, 250], 48),
    ([1, 9, 1, 1], [400, 9, 17, 90], 32),  # a prefill's rows: the merge passes them over
    ([1] * 3, [2000, 16, 40], 200),  # the long one in many splits
    ([1, 1], [1500, 10], 300),  # a wave of more rows (150) than 2 x 64 pieces: 128 rows
])
def test_planned_decode_matches_the_reference(device, q_lens, kv_lens, wave):
    batch = make_batch(q_lens, kv_lens, num_q_heads=6, num_kv_heads=2, device=device,
                       seed=len(q_lens) + wave)
    plan = planned(batch, 2, wave, max_num_seqs=len(q_lens) + 3)
    workspace = fk.SplitKVWorkspace.with_rows(plan.capacity(len(q_lens)), 6, 64, device)
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=batch.max_query_len, out=out,
                       workspace=workspace, decode_plan=plan)
    splits = plan.seq_splits[:len(q_lens)].tolist()
    assert max(splits) > 1 and 1 in splits  # both the merge and the direct store ran
    assert_matches_reference(f"planned decode, splits {splits}", out, batch.reference(),
                             batch.sdpa())


def test_the_grid_has_no_more_rows_than_the_batch_can_have_pieces(device):
    """MQA's wave on an H200 is 264 programs of one KV head: 264 rows. Three decodes have at
    most 3 x 64 pieces, so their grid is 192 rows, each running one piece (a wave's rows would
    leave 72 programs that only return); five fill the wave's rows."""
    plan = DecodePlan.allocate(8, 1, 264, device)
    assert plan.grid_rows(3) == 3 * config.MAX_KV_SPLITS and plan.grid_rows(5) == 264
    cu_seqlens_q = torch.arange(4, dtype=torch.int32, device=device)
    plan.update(cu_seqlens_q, torch.full((3,), 8192, dtype=torch.int32, device=device), 3)
    assert plan.seq_splits[:3].tolist() == [config.MAX_KV_SPLITS] * 3
    assert [len(row) for row in rows_of(plan, 3)] == [1] * 192


def test_rows_run_a_second_piece_when_the_pieces_outnumber_the_rows(device):
    """A wave of 12 programs over 2 KV heads is 6 rows. The long decode's 3 pieces of 1000
    tokens and the five short ones make 8, so rows 0 and 1 each run two short pieces (slots 11
    and 10 are their second): leaving those out leaves decodes unwritten."""
    q_lens, kv_lens = [1] * 6, [3000] + [10] * 5
    batch = make_batch(q_lens, kv_lens, num_q_heads=6, num_kv_heads=2, device=device, seed=6)
    plan = planned(batch, 2, wave=12)
    assert plan.seq_splits[:6].tolist() == [3, 1, 1, 1, 1, 1] and plan.grid_rows(6) == 6
    assert [len(row) for row in rows_of(plan, 6)] == [2, 2, 1, 1, 1, 1]
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=1, out=out, decode_plan=plan)
    assert_matches_reference("planned decode, two pieces a row", out, batch.reference(),
                             batch.sdpa())


def test_a_lone_sequence_takes_the_launch_without_a_plan(device, monkeypatch):
    """The plan's count for one sequence is the shape rule's, or below twice it where the wave
    is no power of two times the KV heads (here 6 programs an SM at head 64: 12 splits, the rule
    8), so the launcher drops the plan there: same output as without one, and no piece lookup."""
    launcher = importlib.import_module("flashcore_kernels.paged_attention")  # (the module)
    batch = make_batch([1], [300], num_q_heads=4, num_kv_heads=2, device=device)
    group_head_cache = (2, batch.query.shape[2], batch.query.dtype)  # what the wave depends on
    plan = planned(batch, 2, config.decode_wave(device, *group_head_cache))
    rule = config.num_kv_splits(1, 2, device, *group_head_cache)
    assert rule <= plan.seq_splits[0].item() < 2 * rule
    seen, launch = [], launcher._launch_decode

    def recording(**kwargs):
        seen.append(kwargs["plan"])
        return launch(**kwargs)

    monkeypatch.setattr(launcher, "_launch_decode", recording)
    with_plan = fk.paged_attention(*batch.args(), max_query_len=1, decode_plan=plan)
    assert seen == [None]
    assert torch.equal(with_plan, fk.paged_attention(*batch.args(), max_query_len=1))


def test_planned_decode_with_sinks_and_a_window(device):
    batch = make_batch([1] * 4, [300, 20, 75, 5], num_q_heads=4, num_kv_heads=2, device=device)
    plan = planned(batch, 2, 40)
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0], device=device)
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=1, out=out, decode_plan=plan,
                       sliding_window=50, sinks=sinks)
    assert_matches_reference("planned decode, window 50, sinks", out,
                             batch.reference(sliding_window=50, sinks=sinks))


def test_a_plan_for_other_heads_or_too_few_sequences_is_refused(device):
    batch = make_batch([1, 1, 1], [10, 20, 30], num_q_heads=4, num_kv_heads=2, device=device)
    with pytest.raises(ValueError, match="made for 4 KV heads"):
        fk.paged_attention(*batch.args(), max_query_len=1,
                           decode_plan=DecodePlan.allocate(3, 4, 16, device))
    with pytest.raises(ValueError, match="holds 2 sequences"):
        fk.paged_attention(*batch.args(), max_query_len=1,
                           decode_plan=DecodePlan.allocate(2, 2, 16, device))


def test_warm_up_leaves_the_plan_empty_and_ready(device, monkeypatch):
    monkeypatch.setattr(config, "interpreting", lambda: False)  # (it skips the interpreter)
    plan = DecodePlan.allocate(5, 2, 40, device)
    plan.pieces.fill_(7)  # what warm_up's launches must overwrite
    plan.seq_splits.fill_(7)
    plan.warm_up(sliding_window=64)
    assert plan.pieces.tolist() == [-1] * plan.pieces.shape[0]
    assert plan.seq_splits.tolist() == [0] * 5
    batch = make_batch([1, 1, 1], [300, 20, 75], num_q_heads=2, num_kv_heads=2, device=device)
    plan.update(batch.cu_seqlens_q, batch.seq_lens, 3)
    assert plan.seq_splits[:3].tolist() == expected_splits([1] * 3, [300, 20, 75], 2, 40)


@pytest.mark.gpu
def test_after_warm_up_no_batch_compiles_the_plan_kernel():
    """Every batch size, multiple of 16 or not, with or without decodes, launches a variant that
    warm_up compiled (Triton's own cache of compiled kernels does not grow)."""
    from flashcore_kernels.decode_plan import plan_kernel

    device = torch.device("cuda")
    plan = DecodePlan.allocate(40, 8, config.decode_wave(device, 4, 128, torch.bfloat16), device)
    plan.warm_up()
    compiled = plan_kernel.device_caches[torch.cuda.current_device()][0]
    variants = len(compiled)
    for num_seqs in range(1, 41):
        q_lens = [1] * num_seqs if num_seqs % 2 else [1] * (num_seqs - 1) + [7]
        cu_seqlens_q = torch.tensor([0] + q_lens, device=device).cumsum(0).to(torch.int32)
        seq_lens = torch.arange(100, 100 + 50 * num_seqs, 50, dtype=torch.int32, device=device)
        plan.update(cu_seqlens_q, seq_lens, num_seqs, tile_tokens=(64, 128)[num_seqs % 2])
    torch.cuda.synchronize()
    assert len(compiled) == variants
