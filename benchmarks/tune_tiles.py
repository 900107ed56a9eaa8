"""Sweep the kernels' tile sizes on the GPU, overriding the heuristics of flashcore_kernels.config,
and print the rate of each candidate: how the numbers in config.py's comments were measured. The
prefill sweep starts with the Gluon kernel of Hopper GPUs (hopper_prefill.py) where it serves the
geometry, then sweeps the Triton kernel's tiles.

    python benchmarks/tune_tiles.py [--suite prefill|decode] [--geometry llama3-8b]
    python benchmarks/tune_tiles.py --suite prefill --geometry mha-d64 --lengths 1024,4096 \\
        --block-m 64,128 --block-n 64,128 --warps 4,8 --stages 2,3 --lookahead 0,1
    python benchmarks/tune_tiles.py --suite decode --kv-cache-dtype fp8 --block-n 64,128
    python benchmarks/tune_tiles.py --suite decode --geometry mqa --block-m 32,64 --block-n 64,128
    python benchmarks/tune_tiles.py --suite decode --geometry mqa --decode-shapes 64x8192 \\
        --block-n 64 --warps 4 --stages 3 --lookahead 0,1 --splits 0,2,4
    python benchmarks/tune_tiles.py --suite decode --geometry gqa-d256 --maxnreg 0,128

bf16, page 16, random page order, CUDA-graph replay timing; a geometry from geometry.py.
"""

import argparse
import dataclasses
import itertools
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402

from flashcore_kernels import config, hopper_prefill  # noqa: E402
from flashcore_kernels.checks import Variant  # noqa: E402

DECODE_SHAPES = ((1, 8192), (8, 2048), (64, 8192), (256, 8192))  # batch x context


HEURISTIC_SPLITS = config.num_kv_splits
HOPPER_PREFILL = hopper_prefill.supports
RULES = {"prefill": config.prefill_tiles, "decode": config.decode_tiles}


def with_splits(count):
    """config.num_kv_splits fixed to ``count`` (None or 0: the heuristic)."""
    return (lambda *_: count) if count else HEURISTIC_SPLITS


def sweep(suite, g, cases, grid):
    print(f"{suite}, {g}: " + " / ".join(c.label for c in cases)
          + (" (TFLOP/s)" if suite == "prefill" else " (TB/s)"))
    # Decode rows default to the group size; a larger block_m pads the group (wgmma needs 64 rows).
    blocks_m = grid["block_m"] or ((64, 128) if suite == "prefill" else (None,))
    # No rule of config.decode_tiles looks ahead (tiles-h200/tune_decode_lookahead.txt): off
    # for decode unless asked for.
    lookaheads = grid["lookahead"] or ((False, True) if suite == "prefill" else (False,))
    splits = grid["splits"] if suite == "decode" else (None,)
    if suite == "prefill":
        # The Gluon kernel first, where it serves this geometry; then prefill.py's tile grid.
        hopper_prefill.supports = HOPPER_PREFILL
        os.environ["FLASHCORE_HOPPER_PREFILL"] = "1"  # even if the caller turned it off
        if HOPPER_PREFILL(torch.device("cuda"), torch.bfloat16, torch.bfloat16, g.head_dim,
                          g.num_q_heads // g.num_kv_heads, Variant()):
            values = " ".join(f"{harness.kernel_rate(c, g, suite):7.2f}" for c in cases)
            print(f"  hopper_prefill.py: {values}", flush=True)
        hopper_prefill.supports = lambda *_: False
    for block_m, block_n, warps, stages, lookahead, split, maxnreg in itertools.product(
            blocks_m, grid["block_n"], grid["warps"], grid["stages"], lookaheads, splits,
            grid["maxnreg"]):
        def tiles(hd, qpk, *args, bm=block_m, bn=block_n, w=warps, s=stages, la=lookahead,
                  regs=maxnreg, **kwargs):
            # The rule's tile with the swept values in place; what is not swept (fp16 products
            # over an fp8 cache) stays the rule's.
            rows = max(16, 1 << (qpk - 1).bit_length())
            return dataclasses.replace(RULES[suite](hd, qpk, *args, **kwargs),
                                       block_m=max(bm or rows, rows), block_n=bn, num_warps=w,
                                       num_stages=s, lookahead=la, maxnreg=regs or None)

        setattr(config, f"{suite}_tiles", tiles)
        config.num_kv_splits = with_splits(split)
        try:
            # A forced split count holds only without a plan, which splits by length.
            values = " ".join(f"{harness.kernel_rate(c, g, suite, planned=not split):7.2f}"
                              for c in cases)
        except Exception as e:  # a tile that does not fit shared memory, for example
            values = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
        ahead = f" lookahead={int(lookahead)}" if suite == "prefill" or lookahead else ""
        ahead += f" splits={split}" if split else ""
        ahead += f" maxnreg={maxnreg}" if maxnreg else ""
        print(f"  block_m={block_m} block_n={block_n} warps={warps} stages={stages}{ahead}: {values}",
              flush=True)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=["prefill", "decode"], action="append")
    p.add_argument("--geometry", default="llama3-8b")
    p.add_argument("--lengths", type=ints, default=(4096, 16384), help="prefill sequence lengths")
    p.add_argument("--block-m", type=ints,
                   help="query rows per program (default: prefill 64,128; decode the group size)")
    p.add_argument("--block-n", type=ints, default=(32, 64, 128))
    p.add_argument("--warps", type=ints, default=(2, 4, 8))
    p.add_argument("--stages", type=ints, default=(2, 3, 4))
    p.add_argument("--lookahead", type=ints,
                   help="read the block table one tile ahead (1) or not (0); default: prefill "
                        "both, decode 0")
    p.add_argument("--splits", type=ints, default=(0,),
                   help="decode: split-KV counts to try (0: config.num_kv_splits' choice)")
    p.add_argument("--maxnreg", type=ints, default=(0,),
                   help="registers a thread may take, to try (0: the compiler's choice)")
    p.add_argument("--decode-shapes", type=batches.parse_shapes, default=DECODE_SHAPES,
                   help="decode batches as BATCHxCONTEXT,... (default 1x8192,8x2048,64x8192,256x8192)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8"],
                   help="decode over an fp8 KV cache (GB/s then count one byte per element)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    g = geometry.get(args.geometry)
    grid = {"block_m": args.block_m, "block_n": args.block_n, "warps": args.warps,
            "stages": args.stages,
            "lookahead": tuple(bool(v) for v in args.lookahead) if args.lookahead else None,
            "splits": args.splits, "maxnreg": args.maxnreg}
    variant = batches.Variant(kv_cache_dtype=args.kv_cache_dtype)
    for suite in args.suite or ["prefill", "decode"]:
        cases = ([batches.prefill_batch(1, n) for n in args.lengths] if suite == "prefill"
                 else [batches.decode_batch(b, c, variant) for b, c in args.decode_shapes])
        sweep(suite, g, cases, grid)


if __name__ == "__main__":
    main()
