"""One backend's attention on one batch, a few times, for a profiler to read its kernels.

    ncu --clock-control none --kernel-name regex:prefill_kernel --launch-skip 3 --launch-count 1 \\
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \\
        python benchmarks/profile_kernels.py --backend FLASHCORE_KERNEL --prefill 4096
    ncu ... --kernel-name regex:flash ... --backend FLASH_ATTN --prefill 4096
    ncu ... --kernel-name regex:hopper_prefill ... --prefill 16x512   # 16 sequences of 512

Runs ``forward`` ``--repeats`` times after the first call (which compiles), on the inputs
``harness`` gives every backend; ``--launch-skip`` then passes over the warm-up launches.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="FLASHCORE_KERNEL", choices=harness.ALL_BACKENDS)
    p.add_argument("--geometry", default="llama3-8b")
    shape = p.add_mutually_exclusive_group(required=True)
    shape.add_argument("--prefill", metavar="[SEQSx]TOKENS",
                       help="causal sequences of TOKENS each, one unless SEQS is given: 4096, 16x512")
    shape.add_argument("--decode", metavar="BATCHxCONTEXT", help="e.g. 8x8192")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    if args.prefill:
        seqs, _, tokens = args.prefill.lower().rpartition("x")
        spec = batches.prefill_batch(int(seqs or 1), int(tokens))
    else:
        batch, context = (int(v) for v in args.decode.lower().split("x"))
        spec = batches.decode_batch(batch, context)
    g = geometry.get(args.geometry)
    inp = harness.prepare(spec, g)
    runner = harness.make_runner(args.backend, inp, g, harness.free_memory(inp.qkv.device))
    if hasattr(runner, "update"):
        runner.update()
    for _ in range(1 + args.repeats):
        runner.forward()
    torch.cuda.synchronize()
    print(f"{args.backend}: {spec.label} [{g.name}], {1 + args.repeats} forward calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
