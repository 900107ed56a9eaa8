"""Sweep the kernels' tile sizes on the GPU, overriding the heuristics of flashcore_kernels.config,
and print the rate of each candidate: how the numbers in config.py's comments were measured.

    python benchmarks/tune_tiles.py [--suite prefill|decode] [--head-dim 128]

Llama-3-8B heads (32 query / 8 KV), bf16, page 16, random page order, CUDA-graph replay timing.
"""

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import harness  # noqa: E402

from flashcore_kernels import config  # noqa: E402

PREFILL_CASES = [batches.prefill_batch(1, 4096), batches.prefill_batch(1, 16384)]
DECODE_CASES = [batches.decode_batch(b, c) for b, c in ((1, 8192), (8, 2048), (64, 8192), (256, 8192))]


def rate(spec, head_dim, suite) -> float:
    """TFLOP/s (prefill) or TB/s of KV read (decode) of one launch of our kernels."""
    inp = batches.make_inputs(spec, 32, 8, head_dim)
    runner = harness.KernelRunner(inp)
    ms = harness.time_ms(runner.forward, inp.qkv.device, "graph", 25, 100)
    if suite == "prefill":
        return batches.attention_flops(spec, 32, head_dim) / ms / 1e9
    return batches.attention_bytes(spec, 32, 8, head_dim, inp.query.element_size()) / ms / 1e9


def sweep(suite, head_dim):
    cases = PREFILL_CASES if suite == "prefill" else DECODE_CASES
    print(f"{suite}, head_dim {head_dim}: " + " / ".join(c.label for c in cases)
          + (" (TFLOP/s)" if suite == "prefill" else " (TB/s)"))
    blocks_m = (64, 128) if suite == "prefill" else (None,)
    for block_m, block_n, warps, stages in itertools.product(
            blocks_m, (32, 64, 128), (2, 4, 8), (2, 3, 4)):
        def tiles(hd, qpk, *_, bm=block_m, bn=block_n, w=warps, s=stages):
            return config.TileConfig(bm or max(16, 1 << (qpk - 1).bit_length()), bn, w, s)

        setattr(config, f"{suite}_tiles", tiles)
        try:
            values = " ".join(f"{rate(c, head_dim, suite):7.2f}" for c in cases)
        except Exception as e:  # a tile that does not fit shared memory, for example
            values = f"failed: {type(e).__name__}"
        print(f"  block_m={block_m} block_n={block_n} warps={warps} stages={stages}: {values}",
              flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=["prefill", "decode"], action="append")
    p.add_argument("--head-dim", type=int, default=128)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    for suite in args.suite or ["prefill", "decode"]:
        sweep(suite, args.head_dim)


if __name__ == "__main__":
    main()
