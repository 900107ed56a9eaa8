"""Time versions of the Hopper prefill kernel against each other in one process, interleaved, with
the Triton prefill kernel beside them as a control: how a change to ``kernels/hopper_prefill.py``
is measured before it lands (benchmarks/NOTES.md).

    git show HEAD:kernels/hopper_prefill.py > /tmp/head.py
    python benchmarks/ab_prefill.py --version head=/tmp/head.py \\
        --version new=kernels/hopper_prefill.py --geometry llama3-8b --shapes 1x4096,16x512

Each version is a file loaded as a module of the installed package (``harness.load_version``,
so its relative imports resolve), and its ``launch`` replaces ``hopper_prefill.launch`` while it
is timed; the tiles come from ``config.hopper_prefill_tiles`` for all of them, and every version
serves every shape (``config.short_prefills_on_triton`` is set aside). Every round times every
version at every shape (sequences x new tokens, causal, over an optional cached prefix); the
table gives each version's median over the rounds in TFLOP/s (bf16, page 16, random page order,
CUDA-graph replay), and the spread (max - min) over the rounds, so drift shows up beside the
difference.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402

from flashcore_kernels import config, hopper_prefill  # noqa: E402
from flashcore_kernels.checks import Variant  # noqa: E402

TRITON = "triton"  # the control: prefill.py, which serves when hopper_prefill.supports says no


def tflops(spec, g, version) -> float:
    """One launch of the launcher with ``version`` (a module, or TRITON) serving the prefill."""
    supports, launch = hopper_prefill.supports, hopper_prefill.launch
    on_triton = config.short_prefills_on_triton
    if version == TRITON:
        hopper_prefill.supports = lambda *_: False
    else:
        hopper_prefill.launch = version.launch
        config.short_prefills_on_triton = lambda *_: False
    try:
        return harness.kernel_rate(spec, g, "prefill")
    finally:
        hopper_prefill.supports, hopper_prefill.launch = supports, launch
        config.short_prefills_on_triton = on_triton


def shapes(text: str) -> list[tuple[int, int, int]]:
    """SEQSxTOKENS[+CACHED],...: SEQS prompts of TOKENS new tokens each, over CACHED cached
    tokens each (0 when left out)."""
    out = []
    for shape in text.split(","):
        sizes, _, cached = shape.partition("+")
        seqs, tokens = sizes.split("x")
        out.append((int(seqs), int(tokens), int(cached or 0)))
    return out


def batch(seqs: int, tokens: int, cached: int):
    if cached:
        return batches.mixed_batch(0, 0, tokens, cached, num_chunks=seqs)
    return batches.prefill_batch(seqs, tokens)


def label(seqs: int, tokens: int, cached: int) -> str:
    return f"{seqs} x {tokens}" + (f" +{cached}" if cached else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="append", required=True, metavar="NAME=FILE",
                   help="a version of kernels/hopper_prefill.py (repeat for each)")
    p.add_argument("--geometry", default="llama3-8b")
    p.add_argument("--shapes", type=shapes, default=shapes("1x1024,1x4096,1x16384"),
                   help="prefill batches as SEQSxTOKENS[+CACHED],... (default "
                        "1x1024,1x4096,1x16384; 8x256+2048: 8 prompts of 256 new tokens over "
                        "2048 cached)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    g = geometry.get(args.geometry)
    if not hopper_prefill.supports(torch.device("cuda"), torch.bfloat16, torch.bfloat16,
                                   g.head_dim, g.queries_per_kv, Variant()):
        sys.exit(f"hopper_prefill.py does not serve {g} on this GPU")
    versions = {name: harness.load_version(name, path)
                for name, path in (v.split("=", 1) for v in args.version)}
    versions[TRITON] = TRITON
    rates = {(name, shape): [] for name in versions for shape in args.shapes}
    for _ in range(args.rounds):
        for shape in args.shapes:
            for name, version in versions.items():
                rates[name, shape].append(tflops(batch(*shape), g, version))
    print(f"{g.name} ({g.num_q_heads}/{g.num_kv_heads} heads, head {g.head_dim}), "
          f"{torch.cuda.get_device_name()}, TFLOP/s, median (spread) of {args.rounds} rounds")
    print("| version | " + " | ".join(label(*shape) for shape in args.shapes) + " |")
    print("|---|" + "---|" * len(args.shapes))
    for name in versions:
        cells = [f"{statistics.median(r):.1f} ({max(r) - min(r):.1f})"
                 for r in (rates[name, shape] for shape in args.shapes)]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
