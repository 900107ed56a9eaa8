"""How fast the bytes a decode must read can be read at all: the floor under the small-batch
decode targets.

    python benchmarks/read_floor.py --shapes 1x8192,1x32768,8x8192,8x32768 \\
        --backends FLASHCORE,FLASH_ATTN

For each decode shape (batch x context, Llama-3-8B attention unless ``--geometry``), the bytes a
perfect kernel moves (``batches.attention_bytes``) are read from one contiguous buffer by
``stream_sum``, a kernel that does nothing else: each program sums its slice of the buffer in
wide loads and writes one float. It runs at several program counts and load widths, and the
fastest counts as the stream. An empty kernel gives the cost of one launch inside a CUDA graph,
and a short context (1x128, say) a backend's own fixed cost. The backends run their decode on
the same shape in the same process. Everything is timed by CUDA-graph replay, as the sweeps are,
over the same buffers each replay: where they fit in L2 (60 MiB on an H200), part of each read
may come from there, for the stream and the backends alike.

``--page-orders random,in_order`` runs each shape with its pages scattered (the default, as
the sweeps run) and with each sequence's pages one after the other: what scattered pages cost
each backend.

A decode reads the same bytes through a page table and writes its output after them, usually
with a second kernel to merge KV splits, so it cannot run faster than the stream:
``backend time / stream time`` bounds how much faster than that backend any decode can be.

The paged read (``paged_max``) reads what the decode kernel reads, the way it reads it: each
program one KV head of one sequence (or a split of it) through the block table, with the
decode's own address arithmetic (``tile.kv_token_offsets``) and unmasked full tiles, and
nothing else (a running maximum, no products, no softmax, one float stored). Swept over tiles
and split counts, its fastest time is the floor of a Triton decode that loads K/V this way:
``backend time / paged read`` below 1 for another backend is a gap no change to our kernel's
arithmetic can close.
"""

import argparse
import itertools
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402

from flashcore_kernels import config, tile  # noqa: E402

PROGRAMS_PER_SM = (1, 2, 4, 8)
# Tiles of the paged read (block_n x warps x stages) swept by default: the decode's own
# (64 x 4 x 4) and its neighbours.
PAGED_TILES = "32x4x4,64x4x3,64x4x4,64x4x5,64x8x4,128x4x3,128x8x3,128x8x4"
BLOCKS = (2048, 8192)  # elements a program loads per step


@triton.jit
def stream_sum(x, out, numel, per_program, BLOCK: tl.constexpr):
    """Program p sums x[p * per_program : (p + 1) * per_program] (per_program a multiple of
    BLOCK), the last slices cut at ``numel``."""
    first = tl.program_id(0).to(tl.int64) * per_program
    acc = tl.zeros([BLOCK], tl.float32)
    for offset in tl.range(0, per_program, BLOCK):
        idx = first + offset + tl.arange(0, BLOCK)
        acc += tl.load(x + idx, mask=idx < numel, other=0.0).to(tl.float32)
    tl.store(out + tl.program_id(0), tl.sum(acc))


@triton.jit
def paged_max(cache, block_table, seq_lens, out, tokens_per_split, stride_page, stride_kvh,
              stride_slot, stride_bt, NUM_KV_HEADS: tl.constexpr, PAGE_SIZE: tl.constexpr,
              BLOCK_N: tl.constexpr, ROW: tl.constexpr):
    """Program (sequence x KV head, split) reads its KV head's rows of tokens
    [split * tokens_per_split, + tokens_per_split) of its sequence through the block table, as
    the decode kernel does (``tile.kv_token_offsets``), and keeps only their maximum. ROW: the
    elements of a token's K and V rows, which sit side by side in the cache. Full tiles load
    unmasked (the decode's wide asynchronous copies), the last one masked."""
    seq = tl.program_id(0) // NUM_KV_HEADS
    kv_head = tl.program_id(0) % NUM_KV_HEADS
    seq_len = tl.load(seq_lens + seq)
    start = tl.program_id(1) * tokens_per_split
    end = tl.minimum(seq_len, start + tokens_per_split)
    full_end = tl.maximum(start, start + (end - start) // BLOCK_N * BLOCK_N)
    table = block_table + seq.to(tl.int64) * stride_bt
    rows = cache + kv_head.to(tl.int64) * stride_kvh
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, ROW)
    acc = tl.full([BLOCK_N, ROW], float("-inf"), cache.dtype.element_ty)
    for tile_start in range(start, full_end, BLOCK_N):
        offsets = tile.kv_token_offsets(table, tile_start + offs_n, None, stride_page,
                                        stride_slot, PAGE_SIZE)
        acc = tl.maximum(acc, tl.load(rows + offsets[:, None] + offs_d[None, :])).to(acc.dtype)
    for tile_start in range(full_end, end, BLOCK_N):
        valid = tile_start + offs_n < end
        offsets = tile.kv_token_offsets(table, tile_start + offs_n, valid, stride_page,
                                        stride_slot, PAGE_SIZE)
        x = tl.load(rows + offsets[:, None] + offs_d[None, :], mask=valid[:, None],
                    other=float("-inf"))
        acc = tl.maximum(acc, x).to(acc.dtype)
    tl.store(out + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1),
             tl.max(tl.max(acc, 1), 0).to(tl.float32))


@triton.jit
def empty_kernel(out):
    """Nothing but a launch (the store keeps it from being a no-op)."""
    tl.store(out, 0.0)


def stream(x: torch.Tensor, out: torch.Tensor, programs: int, block: int) -> int:
    """Sum ``x`` in ``programs`` slices of whole blocks into ``out``; returns the slice length.
    Every element is read once: a floor that skipped some would be too low."""
    per_program = triton.cdiv(triton.cdiv(x.numel(), programs), block) * block
    stream_sum[(programs, )](x, out, x.numel(), per_program, BLOCK=block, num_warps=8)
    return per_program


def stream_us(nbytes: int, device) -> tuple[float, str]:
    """The fastest stream over ``nbytes`` of bf16 in us, and its program count and block (NaN
    where the buffer is smaller than one block for each program of a wave)."""
    x = torch.randn(nbytes // 2, dtype=torch.bfloat16, device=device)
    sms = config.multiprocessor_count(device)
    out = torch.empty(max(PROGRAMS_PER_SM) * sms, dtype=torch.float32, device=device)
    best = (float("nan"), "too small")
    for per_sm in PROGRAMS_PER_SM:
        for block in BLOCKS:
            programs = per_sm * sms
            if x.numel() < programs * block:
                continue
            us = 1e3 * harness.time_ms(lambda: stream(x, out, programs, block), device, "graph",
                                       25, 100)
            if not us >= best[0]:  # also replaces the NaN
                best = (us, f"{programs} x {block}")
    return best


def parse_tiles(text: str) -> list[tuple[int, int, int]]:
    """"64x4x4,128x8x3" -> [(64, 4, 4), (128, 8, 3)] (block_n, warps, stages)."""
    tiles = []
    for item in filter(None, text.split(",")):
        values = item.split("x")
        if len(values) != 3 or not all(v.isdigit() for v in values):
            raise argparse.ArgumentTypeError(f"{item!r} is not BLOCK_NxWARPSxSTAGES")
        tiles.append(tuple(int(v) for v in values))
    return tiles


def paged_read(inp: batches.Inputs, cache: torch.Tensor, out: torch.Tensor, splits: int,
               tile: config.TileConfig) -> None:
    """``paged_max`` over every decode of ``inp``: ``splits`` programs a sequence and KV head."""
    num_seqs, row = inp.spec.num_reqs, 2 * inp.head_dim
    tokens_per_split = triton.cdiv(triton.cdiv(inp.spec.max_seq_len, splits), tile.block_n)
    paged_max[(num_seqs * inp.num_kv_heads, splits)](
        cache, inp.block_table, inp.seq_lens, out, tokens_per_split * tile.block_n,
        cache.stride(0), cache.stride(1), cache.stride(2), inp.block_table.stride(0),
        NUM_KV_HEADS=inp.num_kv_heads, PAGE_SIZE=inp.page_size, BLOCK_N=tile.block_n, ROW=row,
        **tile.launch_options())


def paged_read_us(inp: batches.Inputs, tiles, device) -> tuple[float, str]:
    """The fastest ``paged_read`` of ``inp``'s K/V in us over ``tiles`` (block_n, warps, stages)
    and split counts that give 1, 2, 4 or 8 programs an SM, with the tile and count."""
    if inp.head_dim & (inp.head_dim - 1):
        return float("nan"), "head size not a power of two"
    cache = inp.kv_cache()
    sms = config.multiprocessor_count(device)
    heads = inp.spec.num_reqs * inp.num_kv_heads
    split_counts = sorted({min(config.MAX_KV_SPLITS, triton.cdiv(per_sm * sms, heads))
                           for per_sm in PROGRAMS_PER_SM})
    out = torch.empty(heads * max(split_counts), dtype=torch.float32, device=device)
    best = (float("nan"), "none ran")
    for (block_n, warps, stages), splits in itertools.product(tiles, split_counts):
        tile = config.TileConfig(1, block_n, warps, stages)
        us = 1e3 * harness.time_ms(lambda: paged_read(inp, cache, out, splits, tile), device,
                                   "graph", 25, 100)
        if not us >= best[0]:
            best = (us, f"{block_n}/{warps}/{stages}, {splits} split{'s' * (splits > 1)}")
    return best


def launch_us(device) -> float:
    out = torch.empty(1, dtype=torch.float32, device=device)
    return 1e3 * harness.time_ms(lambda: empty_kernel[(1, )](out), device, "graph", 25, 100)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=batches.parse_shapes,
                   default=batches.parse_shapes("1x8192,1x32768,8x8192"))
    p.add_argument("--geometry", default="llama3-8b")
    p.add_argument("--backends", default="FLASHCORE,FLASH_ATTN",
                   help=f"comma list from {', '.join(harness.ALL_BACKENDS)}")
    p.add_argument("--page-orders", default="random",
                   help=f"comma list from {', '.join(batches.PAGE_ORDERS)}")
    p.add_argument("--paged-tiles", type=parse_tiles, default=parse_tiles(PAGED_TILES),
                   help="tiles of the paged read, BLOCK_NxWARPSxSTAGES,... (empty: none; "
                        f"default {PAGED_TILES})")
    args = p.parse_args(argv)
    page_orders = args.page_orders.split(",")
    for order in page_orders:
        if order not in batches.PAGE_ORDERS:
            p.error(f"--page-orders: {order!r} is not one of {', '.join(batches.PAGE_ORDERS)}")
    if not torch.cuda.is_available():
        raise SystemExit("read_floor.py needs a CUDA GPU: it times kernels on one.")
    device = torch.device("cuda")
    g = geometry.get(args.geometry)
    backends = [b for b in args.backends.split(",") if b]

    print(f"{torch.cuda.get_device_name(device)}, {g.name} ({g.num_q_heads}/{g.num_kv_heads} "
          f"heads, head {g.head_dim}), bf16, page 16, CUDA-graph replay; "
          f"one empty launch {launch_us(device):.1f} us")
    print("| shape | pages | MB | stream us (TB/s; programs x block) | paged read us (TB/s; "
          "block_n/warps/stages, splits) | " + " | ".join(f"{b} us (TB/s)" for b in backends)
          + " | " + " | ".join(f"{b} / paged read" for b in backends) + " |")
    print("|---" * (5 + 2 * len(backends)) + "|")
    for batch, context in args.shapes:
        spec = batches.decode_batch(batch, context)
        times = {}  # page order -> each backend's us
        paged = {}  # page order -> the fastest paged read (us, how)
        for order in page_orders:
            inp = harness.prepare(spec, g, device=device, page_order=order)
            nbytes = batches.attention_bytes(spec, g.num_q_heads, g.num_kv_heads, g.head_dim,
                                             inp.query.element_size())
            times[order] = []
            for name in backends:
                rec = harness.measure_backend(name, inp, g, timer="graph", rep_ms=100,
                                              check=False)
                if rec["status"] != "ok":
                    print(f"{name} at {batch} x {context}: {rec['status']}: {rec.get('reason')}")
                times[order].append(1e3 * rec["ms"] if rec["status"] == "ok" else float("nan"))
            paged[order] = (paged_read_us(inp, args.paged_tiles, device) if args.paged_tiles
                            else (float("nan"), "not run"))
            harness.release(inp)
        # The stream reads one contiguous buffer: the same floor for every page order.
        floor, how = stream_us(nbytes, device)
        for order, order_times in times.items():
            paged_us, paged_how = paged[order]
            cells = [f"{batch} x {context}", order, f"{nbytes / 1e6:.1f}",
                     f"{floor:.1f} ({nbytes / floor / 1e6:.2f}; {how})",
                     f"{paged_us:.1f} ({nbytes / paged_us / 1e6:.2f}; {paged_how})"]
            cells += [f"{us:.1f} ({nbytes / us / 1e6:.2f})" for us in order_times]
            cells += [f"{us / paged_us:.3f}" for us in order_times]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
