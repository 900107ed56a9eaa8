"""Decode with and without a decode plan (kernels/decode_plan.py), beside FLASH_ATTN, on the
same inputs in one process: batches of unequal lengths (grids.uneven) and of equal ones.

    python benchmarks/ab_decode_plan.py
    python benchmarks/ab_decode_plan.py --cases "1x32768+69x1024,64x8192"
    python benchmarks/ab_decode_plan.py --geometry mqa --fp8 --cases "64x8192"

Llama-3-8B heads unless ``--geometry`` names others, bf16 (an e4m3 cache with ``--fp8``), page
16, random page order, CUDA-graph replay; "unplanned" gives every decode config.num_kv_splits's
count, "planned" is the launch the engine makes (plan made once, outside the timing, as the
builder does before a step), and with ``--planned-maxnreg N`` "planned@N" the same with its
decode kernel held to N registers a thread (in place of its tiles' cap; 255 lifts it), with
``--plan-waves W,...`` "wave W" the same with a plan that fills W programs in place of the GPU's
wave (``config.decode_wave``; its grid then has ceil(W / KV heads) rows). Each
launcher is timed twice, alternating. Also prints the plan's own time (one launch a step, not a
layer), the split counts it chose, and each output's largest error against the float64
reference.

    python benchmarks/ab_decode_plan.py --geometry gqa-7to1 --planned-maxnreg 255
    python benchmarks/ab_decode_plan.py --plan-waves 512,384 --cases 64x8192,3x8192
"""

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import grids  # noqa: E402
import harness  # noqa: E402

from flashcore_kernels import config  # noqa: E402

EQUAL = ((1, 512), (1, 8192), (1, 32768), (3, 8192), (8, 512), (8, 2048), (8, 8192), (12, 8192),
         (32, 8192), (64, 512), (256, 512), (128, 2048), (256, 2048), (64, 8192), (256, 8192),
         (64, 32768), (128, 32768))


def cases(variant: batches.Variant = batches.Variant()) -> dict:
    """The cases by label ("64x8192", "1x32768+69x1024"), each run with ``variant``."""
    found = {spec.label.removeprefix("decode "): dataclasses.replace(spec, variant=variant)
             for _, spec in grids.uneven()}
    found.update({f"{b}x{c}": batches.decode_batch(b, c, variant) for b, c in EQUAL})
    return found


def add_case_options(p: argparse.ArgumentParser) -> None:
    """The options that pick the cases, shared with ab_decode.py."""
    p.add_argument("--geometry", default="llama3-8b", choices=sorted(geometry.GEOMETRIES),
                   help="the attention heads (benchmarks/geometry.py)")
    p.add_argument("--fp8", action="store_true", help="an e4m3 KV cache (vLLM's 'fp8')")


def chosen_cases(p: argparse.ArgumentParser, args) -> tuple:
    """(geometry, {label: spec}) of the options (``args.cases``: a comma list of labels, all
    when empty); an unknown label is a usage error."""
    known = cases(grids.FP8 if args.fp8 else batches.Variant())
    labels = [c for c in args.cases.split(",") if c] or list(known)
    unknown = [c for c in labels if c not in known]
    if unknown:
        p.error(f"unknown cases {unknown}; choose from {', '.join(known)}")
    return geometry.get(args.geometry), {label: known[label] for label in labels}


def us(fn, device) -> float:
    return 1e3 * harness.time_ms(fn, device, "graph", 25, 100)


def flash_attn_us(label: str, inp: batches.Inputs, g: geometry.Geometry) -> float:
    """FLASH_ATTN's time on the case, in us (NaN, and why, where it did not run)."""
    fa = harness.measure_backend("FLASH_ATTN", inp, g, timer="graph", check=False)
    if fa["status"] != "ok":
        print(f"{label}: FLASH_ATTN {fa['status']}: {fa.get('reason')}", flush=True)
        return float("nan")
    return 1e3 * fa["ms"]


@contextlib.contextmanager
def planned_register_cap(maxnreg: int):
    """Within the block, the planned decode kernel's tiles hold it to ``maxnreg`` registers a
    thread, in place of any cap of their own (a compiler option: the kernel compiles anew; 255,
    the most a thread can have, times it uncapped)."""
    rule = config.decode_tiles

    def capped(*args, planned=False, **kwargs):
        tiles = rule(*args, planned=planned, **kwargs)
        return dataclasses.replace(tiles, maxnreg=maxnreg) if planned else tiles

    config.decode_tiles = capped
    try:
        yield
    finally:
        config.decode_tiles = rule


def launches(inp: batches.Inputs, maxnreg: int | None, waves=()) -> dict:
    """{name: (runner, forward)}: without a plan, with one, with one under ``maxnreg``, and with
    one filling each of ``waves``."""
    found = {}
    for name, planned in (("unplanned", False), ("planned", True)):
        runner = harness.KernelRunner(inp, planned=planned)
        found[name] = (runner, runner.forward)
    for wave in waves:
        runner = harness.KernelRunner(inp, wave=wave)
        found[f"wave {wave}"] = (runner, runner.forward)
    if maxnreg:
        runner = harness.KernelRunner(inp, planned=True)

        def capped_forward():
            with planned_register_cap(maxnreg):
                runner.forward()

        found[f"planned@{maxnreg}"] = (runner, capped_forward)
    return found


def run_case(label: str, spec: batches.BatchSpec, g: geometry.Geometry, device,
             maxnreg: int | None = None, waves=()) -> str:
    inp = harness.prepare(spec, g, device=device)
    try:
        nbytes = batches.attention_bytes(spec, g.num_q_heads, g.num_kv_heads, g.head_dim,
                                         inp.query.element_size())
        fa_us = flash_attn_us(label, inp, g)
        runners = launches(inp, maxnreg, waves)
        errors = {}
        for name, (runner, forward) in runners.items():
            forward()
            errors[name] = batches.reference_error(inp, runner.cache, runner.output)
        times = {name: [] for name in runners}
        for _ in range(2):
            for name, (_, forward) in runners.items():
                times[name].append(us(forward, device))
        planned = runners["planned"][0]
        plan_us = us(planned.plan, device)
        splits = {name: runner.decode_plan.seq_splits[:spec.num_reqs].tolist()
                  for name, (runner, _) in runners.items() if runner.decode_plan is not None}
    finally:
        harness.release(inp)
    best = {name: min(t) for name, t in times.items()}
    rate = lambda t: nbytes / t / 1e6  # noqa: E731 (TB/s from us)
    cells = [f"FA3 {fa_us:.1f} us ({rate(fa_us):.2f} TB/s)"]
    cells += [f"{name} " + "/".join(f"{t:.1f}" for t in times[name])
              + f" ({rate(best[name]):.2f}; FA3/it {fa_us / best[name]:.3f})" for name in times]
    cells += [f"planned/unplanned {best['unplanned'] / best['planned']:.3f}"]
    cells += [f"{name}/planned {best['planned'] / best[name]:.3f}" for name in best
              if name.startswith(("planned@", "wave "))]
    cells += [f"plan {plan_us:.1f} us, splits "
              + ", ".join(f"{name} {min(s)}..{max(s)}" for name, s in splits.items()),
              "err " + " ".join(f"{name} {e:.1e}" for name, e in errors.items())]
    return f"{label}: " + " | ".join(cells)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="", help="comma list of labels (default: all)")
    p.add_argument("--planned-maxnreg", type=int, metavar="N",
                   help="also time the planned launch with its kernel held to N registers")
    p.add_argument("--plan-waves", type=batches.parse_counts, default=[],
                   metavar="W,...", help="also time plans that fill W programs (not the wave)")
    add_case_options(p)
    args = p.parse_args(argv)
    g, chosen = chosen_cases(p, args)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, {g.name}{' fp8' if args.fp8 else ''}",
          flush=True)
    for label, spec in chosen.items():
        print(run_case(label, spec, g, device, args.planned_maxnreg, args.plan_waves), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
