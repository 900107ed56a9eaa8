"""Time our decode launcher alone (decode kernel and split merge) at several shapes, with the
rules of flashcore_kernels.config, in microseconds: how a change to the decode kernels is
compared with the version before it, one process per version, alternating.

    python benchmarks/decode_times.py --label new
    python benchmarks/decode_times.py --geometries mqa --shapes 64x8192 --merge-heads 0,1,2,4,8
    python benchmarks/decode_times.py --geometries llama3-8b --shapes 64x32768 --splits 0,1,2,4

bf16, page 16, random page order, CUDA-graph replay (``harness.kernel_ms``). ``--merge-heads``
fixes ``config.merge_heads`` (query heads per merge program) to each value in turn, and
``--splits`` ``config.num_kv_splits`` (KV splits per sequence, a power of two), 0 being the rule
itself. At 64 splits the merge takes its one-tile form, one head a program
(``config.merge_one_tile``), whatever ``--merge-heads`` says. Either option other than 0 times
the launch without a decode plan (``flashcore_kernels.DecodePlan``), which sets split counts
and the merge's tiles itself; with both at 0, the planned launch an engine makes.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402
from tune_tiles import with_splits  # noqa: E402

from flashcore_kernels import config  # noqa: E402

# Split counts from 1 to 64 (config.num_kv_splits) over the three head layouts.
SHAPES = {
    "llama3-8b": [(1, 8192), (1, 32768), (4, 8192), (8, 8192), (32, 8192)],
    "mqa": [(1, 8192), (8, 2048), (64, 8192), (128, 4096)],
    "gqa-7to1": [(1, 8192), (4, 8192), (16, 8192)],
}
MERGE_HEADS = config.merge_heads


def decode_us(g: geometry.Geometry, batch: int, context: int, planned: bool = True) -> float:
    return 1e3 * harness.kernel_ms(batches.decode_batch(batch, context), g, planned)


def fixed_merge_heads(heads: int):
    """config.merge_heads fixed to ``heads`` (at most the heads there are; 0: the rule)."""
    if not heads:
        return MERGE_HEADS
    return lambda num_q_heads, num_splits: min(heads, config.next_power_of_2(num_q_heads))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--geometries", default=",".join(SHAPES))
    p.add_argument("--shapes", type=batches.parse_shapes, default=None,
                   help="BATCHxCONTEXT,... for every geometry (default: each one's list here)")
    p.add_argument("--merge-heads", default="0", help="comma list; 0 = config's rule")
    p.add_argument("--splits", default="0", help="comma list of powers of two; 0 = config's rule")
    p.add_argument("--label", default="", help="printed at the start of each line")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    for name in args.geometries.split(","):
        g = geometry.get(name)
        for heads in (int(v) for v in args.merge_heads.split(",")):
            for splits in (int(v) for v in args.splits.split(",")):
                config.merge_heads = fixed_merge_heads(heads)
                config.num_kv_splits = with_splits(splits)
                planned = not (heads or splits)
                cells = [f"{b}x{c} {decode_us(g, b, c, planned):7.2f}"
                         for b, c in args.shapes or SHAPES[name]]
                print(f"{args.label} {name:10s} merge_heads={heads} splits={splits}: "
                      + "  ".join(cells), flush=True)
    config.merge_heads, config.num_kv_splits = MERGE_HEADS, with_splits(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
