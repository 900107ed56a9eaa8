"""The benchmark grids, shared by the pytest suites and run_all.py.

Each entry is ``(geometry name, BatchSpec)``. ``quick`` grids hold the cases DESIGN.md section 6
measured for the built-in backends plus one case per other geometry, so one H100 run can put
our numbers beside that bar in a few minutes.
"""

import random

from batches import Variant, decode_batch, mixed_batch, prefill_batch, uneven_decode_batch

DECODE_BATCHES = (1, 8, 32, 64, 128, 256)
DECODE_CONTEXTS = (512, 2048, 8192, 32768)
PREFILL_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)


def decode(quick: bool = False):
    if quick:
        grid = [("llama3-8b", decode_batch(b, c))
                for b, c in ((1, 8192), (1, 32768), (8, 2048), (8, 32768), (64, 8192), (256, 8192))]
    else:
        grid = [("llama3-8b", decode_batch(b, c)) for b in DECODE_BATCHES for c in DECODE_CONTEXTS]
    others = ((1, 32768), (64, 8192)) if quick else ((1, 8192), (1, 32768), (64, 8192), (256, 2048))
    for name in ("gqa-7to1", "mqa", "mha-d64", "gqa-d256"):
        grid += [(name, decode_batch(b, c)) for b, c in others]
    return grid


def prefill(quick: bool = False):
    lengths = (1024, 4096, 16384) if quick else PREFILL_LENGTHS
    grid = [("llama3-8b", prefill_batch(1, n)) for n in lengths]
    for name in ("mha-d64", "gqa-d256"):
        grid += [(name, prefill_batch(1, n)) for n in ((4096,) if quick else (1024, 4096, 16384))]
    several = ((4, 2048),) if quick else ((4, 2048), (8, 1024), (16, 512), (2, 8192))
    grid += [("llama3-8b", prefill_batch(s, n)) for s, n in several]
    if not quick:  # on the Triton kernel at head 64 (config.short_prefills_on_triton)
        grid += [("mha-d64", prefill_batch(s, n)) for s, n in ((8, 1024), (16, 512))]
    grid += [("gqa-7to1", prefill_batch(1, 4096))]
    return grid


def mixed(quick: bool = False):
    # What vLLM's scheduler hands over with chunked prefill on: the running decodes first,
    # then one (or a few) prefill chunks, often continuing a prompt whose start is cached.
    grid = [("llama3-8b", mixed_batch(64, 2048, chunk=2048, cached=4096)),
            ("llama3-8b", mixed_batch(128, 1024, chunk=512, cached=0)),
            ("llama3-8b", mixed_batch(32, 8192, chunk=1024, cached=2048, num_chunks=2))]
    if not quick:
        grid += [("llama3-8b", mixed_batch(8, 32768, chunk=4096, cached=0)),
                 ("llama3-8b", mixed_batch(200, 2048, chunk=256, cached=1024, num_chunks=4)),
                 ("gqa-7to1", mixed_batch(64, 2048, chunk=2048, cached=4096)),
                 ("mqa", mixed_batch(64, 2048, chunk=2048, cached=4096))]
    return grid


def uneven(quick: bool = False):
    """Decode batches of unequal lengths: contexts drawn evenly from a range (one seeded
    generator, drawn in this order, so every run and both grid sizes get the same lengths), and
    one or a few long contexts beside many short ones, where a split count fixed from shapes
    leaves the long ones streaming alone (the decode plan, kernels/decode_plan.py)."""
    gen = random.Random(0)
    spread = [(n, low, high, [gen.randint(low, high) for _ in range(n)])
              for n, low, high in ((128, 256, 32768), (256, 64, 8192), (96, 1024, 16384),
                                   (32, 256, 32768), (8, 256, 32768))]
    skewed = [([32768] + [1024] * 69, "1x32768+69x1024"), ([32768] + [1024] * 7, "1x32768+7x1024"),
              ([32768] * 4 + [2048] * 124, "4x32768+124x2048"),
              ([131072] + [2048] * 31, "1x131072+31x2048")]
    grid = [uneven_decode_batch(lengths, f"{n}x({low}..{high})")
            for n, low, high, lengths in spread]
    grid += [uneven_decode_batch(lengths, label) for lengths, label in skewed]
    if quick:
        grid = grid[:1] + grid[2:3] + grid[5:7]
    return [("llama3-8b", spec) for spec in grid]


FP8 = Variant(kv_cache_dtype="fp8")
WINDOW = Variant(sliding_window=4096)


def variants(quick: bool = False):
    # Decode with an fp8 (e4m3) KV cache, and with a 4k sliding window over contexts 8x
    # longer, where skipping the pages outside the window is most of the win.
    cases = [(8, 8192, FP8), (64, 8192, FP8), (8, 32768, WINDOW)]
    if not quick:
        cases.append((64, 32768, WINDOW))
    return [("llama3-8b", decode_batch(b, c, v)) for b, c, v in cases]


SUITES = {"decode": decode, "uneven": uneven, "prefill": prefill, "mixed": mixed,
          "variants": variants}

# The number each suite is judged by (see README.md): KV bandwidth, FLOP rate, or time.
HEADLINE = {"decode": "gbps", "uneven": "gbps", "prefill": "tflops", "mixed": "ms",
            "variants": "gbps"}
