"""A per-batch plan for the decode kernel: how many splits each sequence's KV range gets, and the
order in which the pieces run, made on the device from the batch's own lengths.

A split count fixed from shapes alone (``config.num_kv_splits``) is right for a batch whose
sequences are alike, and badly wrong for one whose are not: beside 69 sequences of 1k tokens,
a sequence of 32k is one program per KV head at one split, streaming 16 MB alone long after the
rest have finished (H200: 891 us, FlashAttention-3 114 us;
benchmarks/results/tiles-h200/ab_decode_plan.txt). The plan gives each decode a share of the
GPU's wave of programs in proportion to its length, cut in pieces of one length for all: the
shortest at which the pieces fit the grid's rows (below), with no row holding more than one
piece's length, and at least a wave row's fair share of the batch's tokens,

    splits = ceil(length / piece length), 1 to 64,

and no more than the decode kernel's tiles in the length (a split with none would only launch a
program that reads nothing and add a partial to the merge: MQA 8 x 512 on an H200, 32 splits
of 8 tiles, 9.5 -> 8.4 us at 8; benchmarks/results/tiles-h200/ab_decode_plan.txt, run 18).

So the rows end together, and the one that ends the launch is as short as the lengths allow.
At equal lengths that is the most splits that fit the rows, which at the decode grid's batch
sizes is ``config.num_kv_splits``'s count. The plan lists the pieces (sequence, split) longest
first, so the longest work starts first and the short work fills in behind it.
``plan_kernel`` writes the plan in one program; the decode kernel's programs each read their
pieces from it, and the merge reads where each sequence's partials are.

An earlier rule gave each decode the largest power of two within its share of the wave
(length * wave / (total length * KV heads)), which rounded a long decode's share down by up to
half and a short one's to one piece: beside seven 1k decodes a 32k one got 32 splits, and the
launch ran 39 rows of 1k tokens where it now runs 66 of 631 or fewer. Against that rule on one
H200 (benchmarks/results/tiles-h200/ab_decode_plan.txt, run 7), batches of spread lengths run
1.05-1.12x faster; a long decode's many partials then loop through the merge's tile (sized for
like lengths), which cost 1 x 32k + 7 x 1k and 1 x 128k + 31 x 2k 2-4%, and batches of 3 or 12
like lengths lose 4-6% with their 22 and 5 splits.

The decode grid has ``grid_rows`` rows of programs (one program per KV head in a row): a wave's
worth, or all the pieces the batch can have if fewer (a large group's wave holds more rows than a
few sequences' 64 pieces each), and at least one per sequence. The plan has twice as many slots:
row r runs the pieces in slots r and 2 * rows - 1 - r. Pieces never outnumber the slots: a piece
past the rows shares one with another, both of decodes too short to split. When the pieces fit in
the rows, as at equal lengths, they fill the last rows and the empty rows come first: a grid whose
programs past the last piece come last ran 1-2% slower than one of exactly the pieces, and one
whose few empty rows come first mostly did not (H200, benchmarks/results/tiles-h200/plan_cost.txt).
When they do not (unequal lengths), the k pieces too many make k rows of two: the 2k shortest
pieces, the longest of them with the shortest, in the first rows, so that they start first (last, a
row of two short pieces started when the wave freed up and finished well after the rest: H200, 1 x
32k + 69 x 1k, 118 -> 148 us). A slot also holds its piece's row of the split-KV partials, its
index in the longest-first list, so that a sequence's partials stay side by side for the merge
wherever its pieces run.

A plan holds only device tensors and is rewritten in place, so a CUDA graph captured with one
replays correctly with any later plan made into the same tensors.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import config
from .tile import kv_tiles

# A piece packs (sequence, split, split count - 1) into the low 31 bits of an int64 slot, 6 bits
# for each count, so sequences up to 2^19 (vLLM's max_num_seqs is some hundreds); its row of
# the partials goes in the high 32 bits, so that one load brings both.
SPLIT_BITS = 6
_SEQ_SHIFT = 2 * SPLIT_BITS
MAX_PLANNED_SEQS = 1 << (31 - _SEQ_SHIFT)


@dataclass
class DecodePlan:
    """The plan's tensors, sized for batches of up to ``max_num_seqs`` sequences."""

    pieces: torch.Tensor  # [capacity] int64 slots: packed pieces and their partial rows, or -1
    seq_splits: torch.Tensor  # [max_num_seqs] int32 splits of each sequence (0: not a decode)
    seq_first_piece: torch.Tensor  # [max_num_seqs] int32 partial row of its first piece
    num_kv_heads: int
    wave: int  # decode programs the GPU runs at once (config.decode_wave)

    @classmethod
    def allocate(cls, max_num_seqs: int, num_kv_heads: int, wave: int,
                 device: torch.device) -> "DecodePlan":
        """``wave``: decode programs the GPU runs at once (``config.decode_wave`` of the decode
        kernel's group, head size and KV-cache dtype), the programs the plan fills."""
        if not 1 <= max_num_seqs <= MAX_PLANNED_SEQS:
            raise ValueError(f"a decode plan holds 1 to {MAX_PLANNED_SEQS} sequences, "
                             f"got {max_num_seqs}")
        device = torch.device(device)
        int32 = dict(dtype=torch.int32, device=device)
        return cls(torch.full((cls.capacity_for(max_num_seqs, num_kv_heads, wave),), -1,
                              dtype=torch.int64, device=device),
                   torch.zeros(max_num_seqs, **int32), torch.zeros(max_num_seqs, **int32),
                   num_kv_heads, wave)

    @staticmethod
    def grid_rows_for(num_seqs: int, num_kv_heads: int, wave: int) -> int:
        """Rows of programs of the decode grid for a batch of ``num_seqs``: a wave's worth, or
        one per sequence if more, so that a batch of like lengths fits one piece a row. Never
        more than the batch's pieces can fill (config.MAX_KV_SPLITS a sequence): MQA's wave is
        264 rows on an H200, and 3 sequences of 8k left 72 of them empty, 0.4 us of 11.5
        (tiles-h200/plan_cost.txt, run F)."""
        wave_rows = -(-wave // num_kv_heads)
        return max(min(wave_rows, num_seqs * config.MAX_KV_SPLITS), num_seqs)

    @classmethod
    def capacity_for(cls, num_seqs: int, num_kv_heads: int, wave: int) -> int:
        """Slots (and split-KV workspace rows) of a batch of ``num_seqs``: two a grid row. The
        pieces outnumber the rows only by rows of two unsplit decodes, so by at most half the
        sequences."""
        return 2 * cls.grid_rows_for(num_seqs, num_kv_heads, wave)

    def grid_rows(self, num_seqs: int) -> int:
        return self.grid_rows_for(num_seqs, self.num_kv_heads, self.wave)

    def capacity(self, num_seqs: int) -> int:
        return 2 * self.grid_rows(num_seqs)

    @staticmethod
    def applies_to(num_seqs: int) -> bool:
        """Whether a batch of ``num_seqs`` runs through the plan. A lone sequence does not: the
        plan would give it the whole wave, the shape rule's count or (where the wave is no power
        of two times the KV heads, as at head 64's six programs an SM) less than twice it, and
        the launch without a plan skips the piece lookup and takes the one-tile merge (1 x 8k
        12.9 -> 11.5 us on an H200, benchmarks/NOTES.md)."""
        return num_seqs > 1

    def update(self, cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, num_seqs: int,
               sliding_window: int | None = None, tile_tokens: int = 1) -> None:
        """Plan the batch of the first ``num_seqs`` sequences (decodes are those with one query
        token), whose layers see only their last ``sliding_window`` tokens if given (a decode's
        work is then the window, not its length), for a decode kernel that steps through KV
        ``tile_tokens`` at a time (its tile's ``block_n``: ``config.planned_decode_tiles``).
        One launch; reads nothing on the host."""
        if tile_tokens < 1:
            raise ValueError(f"tile_tokens must be at least 1, got {tile_tokens}")
        if num_seqs > self.seq_splits.shape[0] or self.capacity(num_seqs) > self.pieces.shape[0]:
            raise ValueError(f"the plan holds {self.seq_splits.shape[0]} sequences, the batch "
                             f"has {num_seqs}")
        if num_seqs == 0:
            return
        plan_kernel[(1,)](
            self.pieces, self.seq_splits, self.seq_first_piece, cu_seqlens_q, seq_lens, num_seqs,
            self.grid_rows(num_seqs), self.wave, self.num_kv_heads, tile_tokens,
            SLIDING_WINDOW=sliding_window or 0, BLOCK_SEQS=max(2, config.next_power_of_2(num_seqs)),
            MAX_SPLITS=config.MAX_KV_SPLITS, SPLIT_BITS=SPLIT_BITS, FILL_BLOCK=1024)

    def warm_up(self, sliding_window: int | None = None) -> None:
        """Compile ``plan_kernel`` for every batch this plan can hold (one variant per power of
        two of sequences), so that none compiles while an engine serves: CUDA-graph capture
        plans only the batch sizes it captures, and an engine without graphs plans whatever
        comes. The batches have no decodes, so the plan is left empty."""
        if config.interpreting():
            return  # nothing compiles under the interpreter
        max_num_seqs = self.seq_splits.shape[0]
        # Tensors of their own, not views at an offset: a pointer's 16-byte alignment is
        # specialised on, and an engine's are aligned.
        int32 = dict(dtype=torch.int32, device=self.pieces.device)
        no_queries = torch.zeros(max_num_seqs + 1, **int32)
        lengths = torch.zeros(max_num_seqs, **int32)
        num_seqs = 2  # (the smallest batch the plan applies to, and the smallest block)
        while True:
            self.update(no_queries, lengths, min(num_seqs, max_num_seqs), sliding_window)
            if num_seqs >= max_num_seqs:
                return
            num_seqs *= 2


# The batch's sizes are not specialised on (a multiple of 16 or not would compile a variant of
# its own), so that warm_up's launches compile every variant an engine's batches launch.
@triton.jit(do_not_specialize=["num_seqs", "grid_rows", "tile_tokens"])
def plan_kernel(
    pieces,  # [2 * grid_rows] int64 slots, written: packed pieces with their rows, or -1
    seq_splits,  # [num_seqs] int32, written
    seq_first_piece,  # [num_seqs] int32, written
    cu_seqlens_q,  # [num_seqs + 1] int32
    seq_lens,  # [num_seqs] int32
    num_seqs, grid_rows, wave, num_kv_heads,
    tile_tokens,  # KV tokens of one step of the decode kernel (its BLOCK_N)
    SLIDING_WINDOW: tl.constexpr,  # tokens a decode reads at most; 0 = all
    BLOCK_SEQS: tl.constexpr,  # num_seqs rounded up to a power of two
    MAX_SPLITS: tl.constexpr,  # (config.MAX_KV_SPLITS)
    SPLIT_BITS: tl.constexpr,
    FILL_BLOCK: tl.constexpr,
):
    seq = tl.arange(0, BLOCK_SEQS)
    valid = seq < num_seqs
    query_len = (tl.load(cu_seqlens_q + seq + 1, mask=valid, other=0)
                 - tl.load(cu_seqlens_q + seq, mask=valid, other=0))
    is_decode = valid & (query_len == 1)
    seq_len = tl.where(is_decode, tl.load(seq_lens + seq, mask=valid, other=0), 0).to(tl.int64)
    length = seq_len
    if SLIDING_WINDOW > 0:
        length = tl.minimum(length, SLIDING_WINDOW)
    # The piece length: the shortest at which the pieces fit the grid's rows with no row
    # holding more than it, two pieces sharing a row only if each is at most half of it, and
    # no shorter than a wave row's fair share of the batch (shorter pieces would only make a
    # second wave). The rows' loads are then even, and the longest row, which ends the launch,
    # as short as the lengths allow. Found by bisection: fewer pieces fit as it grows, and more
    # of them are short enough to pair. Both counts come from one sum (pieces in the high
    # half), one block-wide reduction a step.
    lo = tl.maximum((tl.sum(length, 0) * num_kv_heads + wave - 1) // wave, 1)
    hi = tl.maximum(tl.max(length, 0), lo)
    while lo < hi:
        mid = (lo + hi) // 2
        counts = tl.sum((tl.minimum((length + mid - 1) // mid, MAX_SPLITS) << 32)
                        | (is_decode & (2 * length <= mid)).to(tl.int64), 0)
        fits = (counts >> 32) - grid_rows <= (counts & 0xFFFFFFFF) // 2
        hi = tl.where(fits, mid, hi)
        lo = tl.where(fits, lo, mid + 1)
    piece_length = lo
    splits = tl.minimum((length + piece_length - 1) // piece_length, MAX_SPLITS)
    # No more splits than the decode kernel's tiles (the module's docstring), counted as it
    # counts them: from the tile that holds the window's first token.
    _, tiles = kv_tiles(seq_len, seq_len - length, tile_tokens)
    splits = tl.minimum(splits, tiles)
    splits = tl.where(is_decode, tl.maximum(splits, 1), 0)
    # Longest piece first: sort keys of (a piece's tokens, split count, sequence), the sequence
    # reversed so that equal pieces keep the batch's order.
    piece_tokens = tl.where(is_decode, (length + splits - 1) // tl.maximum(splits, 1), 0)
    key = (piece_tokens << 28) | (splits << 20) | (BLOCK_SEQS - 1 - seq)
    key = tl.sort(key, 0, descending=True)
    by_len = (BLOCK_SEQS - 1 - (key & 0xFFFFF)).to(tl.int32)
    splits = ((key >> 20) & 0xFF).to(tl.int32)
    # A piece's index in this order is its row of the partials: a sequence's side by side.
    num_pieces = tl.sum(splits, 0)
    first = tl.cumsum(splits, 0) - splits
    listed = by_len < num_seqs
    tl.store(seq_splits + by_len, splits, mask=listed)
    tl.store(seq_first_piece + by_len, first, mask=listed)
    # Its slot (the module's docstring): with k = pieces - rows > 0, pieces rows - k .. rows - 1
    # are the first of the first k rows' two, pieces rows .. on the second (slot 2 rows - 1 - r
    # of row r, so piece rows - k + j runs with piece pieces - 1 - j); the longer ones follow
    # one a row. With k <= 0 the pieces take the last rows.
    pairs = tl.maximum(num_pieces - grid_rows, 0)
    empty_rows = tl.maximum(grid_rows - num_pieces, 0)
    packed = (by_len << (2 * SPLIT_BITS)) | (splits - 1)
    for split in range(0, tl.max(splits, 0)):
        index = first + split
        slot = tl.where(index < grid_rows - pairs, empty_rows + pairs + index,
                        tl.where(index < grid_rows, index - (grid_rows - pairs),
                                 index + grid_rows - pairs))
        tl.store(pieces + slot, (index.to(tl.int64) << 32) | (packed | (split << SPLIT_BITS)),
                 mask=listed & (split < splits))
    # Every other slot the grid reads holds -1 (its program has nothing to run there).
    for start in range(0, 2 * grid_rows, FILL_BLOCK):
        offs = start + tl.arange(0, FILL_BLOCK)
        taken = ((offs >= empty_rows) & (offs < grid_rows)) | (offs >= 2 * grid_rows - pairs)
        tl.store(pieces + offs, tl.full([FILL_BLOCK], -1, tl.int64),
                 mask=~taken & (offs < 2 * grid_rows))


def pack_slot(seq: int, split: int, num_splits: int, partial_row: int) -> int:
    """A slot as ``plan_kernel`` writes it, made on the host."""
    return (partial_row << 32) | (seq << _SEQ_SHIFT) | (split << SPLIT_BITS) | (num_splits - 1)


def unpack_slot(slot: int) -> tuple[int, int, int, int]:
    """``unpack_piece`` on the host: (sequence, split, split count, partial row) of a slot read
    back from ``DecodePlan.pieces`` (not -1)."""
    packed, mask = slot & 0x7FFFFFFF, (1 << SPLIT_BITS) - 1
    return packed >> _SEQ_SHIFT, (packed >> SPLIT_BITS) & mask, (packed & mask) + 1, slot >> 32


@triton.jit
def unpack_piece(slot, SPLIT_BITS: tl.constexpr):
    """(sequence, split, split count, partial row) of a slot's piece."""
    mask = (1 << SPLIT_BITS) - 1
    packed = (slot & 0x7FFFFFFF).to(tl.int32)
    return (packed >> (2 * SPLIT_BITS), (packed >> SPLIT_BITS) & mask, (packed & mask) + 1,
            (slot >> 32).to(tl.int32))
