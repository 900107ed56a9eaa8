"""Time versions of the decode kernels against each other in one process, interleaved, with
FLASH_ATTN (FA3) beside them as a control: how a change to ``kernels/decode.py`` (the decode
kernel and the split merge) is measured before it lands (benchmarks/NOTES.md).

    git show HEAD:kernels/decode.py > /tmp/head.py
    python benchmarks/ab_decode.py --version head=/tmp/head.py \\
        --version new=kernels/decode.py --cases "8x8192,1x32768+7x1024"

Each version is a file loaded as a module of the installed package (``harness.load_version``);
its ``decode_kernel`` and ``merge_splits_kernel`` serve the launcher while it runs, everything
else (the plan, the tiles, the launch) is the installed package's. The launch is the engine's:
a decode plan made once for the batch, outside the timing (a lone sequence runs without one).
The cases and their options (``--geometry``, ``--fp8``) are ``ab_decode_plan.py``'s (Llama-3-8B
heads, bf16, page 16, random page order, CUDA-graph replay, unless those options say
otherwise). Every round times every version on the case, one after the other, so that a drift
of the machine shows up as spread rather than as a difference; the table gives each version's
median over the rounds in us, the spread (max - min), FA3's time over it, and its largest
error against the float64 reference.
"""

import argparse
import contextlib
import importlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab_decode_plan  # noqa: E402
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402

# The launcher's module (the package's ``paged_attention`` attribute is the function).
LAUNCHER = importlib.import_module("flashcore_kernels.paged_attention")


@contextlib.contextmanager
def serving(version):
    """``version``'s decode and merge kernels in the launcher's place, within the block."""
    kept = LAUNCHER.decode_kernel, LAUNCHER.merge_splits_kernel
    LAUNCHER.decode_kernel, LAUNCHER.merge_splits_kernel = (version.decode_kernel,
                                                            version.merge_splits_kernel)
    try:
        yield
    finally:
        LAUNCHER.decode_kernel, LAUNCHER.merge_splits_kernel = kept


def reference_error(runner: harness.KernelRunner, version) -> float:
    """One forward of ``runner`` with ``version`` serving; its largest error."""
    with serving(version):
        runner.forward()
    return batches.reference_error(runner.inp, runner.cache, runner.output)


def decode_us(runner: harness.KernelRunner, version, device) -> float:
    with serving(version):  # (the graph is captured here, with this version's kernels)
        return ab_decode_plan.us(runner.forward, device)


def run_case(label: str, spec: batches.BatchSpec, g: geometry.Geometry, versions: dict,
             rounds: int, device) -> str:
    inp = harness.prepare(spec, g, device=device)
    try:
        fa_us = ab_decode_plan.flash_attn_us(label, inp, g)
        runner = harness.KernelRunner(inp, planned=True)
        errors = {name: reference_error(runner, version) for name, version in versions.items()}
        times = {name: [] for name in versions}
        for _ in range(rounds):
            for name, version in versions.items():
                times[name].append(decode_us(runner, version, device))
    finally:
        harness.release(inp)
    cells = []
    for name, t in times.items():
        median = statistics.median(t)
        cells.append(f"{median:.1f} ({max(t) - min(t):.1f}), {fa_us / median:.3f}, "
                     f"{errors[name]:.1e}")
    return f"| {label} | {fa_us:.1f} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="append", required=True, metavar="NAME=FILE",
                   help="a version of kernels/decode.py (repeat for each)")
    p.add_argument("--cases", required=True, help="comma list of ab_decode_plan.py's labels")
    p.add_argument("--rounds", type=int, default=3)
    ab_decode_plan.add_case_options(p)
    args = p.parse_args(argv)
    g, chosen = ab_decode_plan.chosen_cases(p, args)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    versions = {name: harness.load_version(name, path)
                for name, path in (v.split("=", 1) for v in args.version)}
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, {g.name}{' fp8' if args.fp8 else ''}; us, "
          f"median (spread) of {args.rounds} rounds, FA3 / it, largest error")
    print("| case | FA3 | " + " | ".join(versions) + " |")
    print("|---|---|" + "---|" * len(versions), flush=True)
    for label, spec in chosen.items():
        print(run_case(label, spec, g, versions, args.rounds, device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
