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
"""

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402

PROGRAMS_PER_SM = (1, 2, 4, 8)
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
    sms = torch.cuda.get_device_properties(device).multi_processor_count
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
    del x
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
    print("| shape | pages | MB | stream us (TB/s; programs x block) | "
          + " | ".join(f"{b} us (TB/s)" for b in backends)
          + " | " + " | ".join(f"{b} / stream" for b in backends) + " |")
    print("|---" * (4 + 2 * len(backends)) + "|")
    for batch, context in args.shapes:
        spec = batches.decode_batch(batch, context)
        times = {}  # page order -> each backend's us
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
            harness.release(inp)
        # The stream reads one contiguous buffer: the same floor for every page order.
        floor, how = stream_us(nbytes, device)
        for order, order_times in times.items():
            cells = [f"{batch} x {context}", order, f"{nbytes / 1e6:.1f}",
                     f"{floor:.1f} ({nbytes / floor / 1e6:.2f}; {how})"]
            cells += [f"{us:.1f} ({nbytes / us / 1e6:.2f})" for us in order_times]
            cells += [f"{us / floor:.2f}" for us in order_times]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
