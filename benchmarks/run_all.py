"""Sweep the attention benchmark grids without pytest; write JSON + markdown, print a table.

    python benchmarks/run_all.py --quick                       # decode + prefill, ~3-5 min
    python benchmarks/run_all.py --suites decode,prefill,mixed  # full grids
    python benchmarks/run_all.py --quick --backends FLASHCORE,FLASH_ATTN

Results go to benchmarks/results/<name>.json and <name>.md, rewritten after every case, so a
run cut short still leaves what it measured. A backend that fails or cannot run a case is
recorded with its reason and the sweep goes on. Without a CUDA GPU this says so and exits.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import geometry  # noqa: E402
import grids  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", default="decode,prefill",
                   help=f"comma list of: {', '.join(grids.SUITES)}")
    p.add_argument("--quick", action="store_true", help="the small grids (DESIGN.md section 6 cases)")
    p.add_argument("--backends", default=",".join(harness.ALL_BACKENDS),
                   help=f"comma list from {', '.join(harness.ALL_BACKENDS)}")
    p.add_argument("--geometries", default=None, help="only cases of these geometries (comma list)")
    p.add_argument("--timer", choices=("events", "graph"), default="events",
                   help="events: do_bench with CUDA events; graph: CUDA-graph replays")
    p.add_argument("--warmup-ms", type=int, default=25)
    p.add_argument("--rep-ms", type=int, default=100, help="time spent timing each backend")
    p.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--no-check", action="store_true", help="skip the float64 reference check")
    p.add_argument("--flashinfer-head-dims", default="128",
                   help="head dims FlashInfer runs (each new one costs a JIT compile); 'all' for all")
    p.add_argument("--time-budget", type=float, default=400.0,
                   help="seconds; cases left when it runs out are recorded as skipped")
    p.add_argument("--name", default=None, help="results file stem (default: sweep[-quick])")
    p.add_argument("--out-dir", type=Path, default=report.RESULTS_DIR)
    return p.parse_args(argv)


def backends_for(args, g: geometry.Geometry) -> list[str]:
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.flashinfer_head_dims != "all":
        dims = {int(d) for d in args.flashinfer_head_dims.split(",")}
        if g.head_dim not in dims:
            names = [b for b in names if b != "FLASHINFER"]
    return names


def selected_cases(args):
    wanted = set(args.geometries.split(",")) if args.geometries else None
    for suite in [s.strip() for s in args.suites.split(",") if s.strip()]:
        if suite not in grids.SUITES:
            raise SystemExit(f"unknown suite {suite!r}; choose from {', '.join(grids.SUITES)}")
        for gname, spec in grids.SUITES[suite](args.quick):
            if wanted is None or gname in wanted:
                yield suite, geometry.get(gname), spec


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("No CUDA GPU found: the attention sweep needs one. On a CPU, run "
              "`python benchmarks/generate.py` (it checks the kernels under the Triton interpreter).")
        return 2
    name = args.name or ("sweep-quick" if args.quick else "sweep")
    dtype = getattr(torch, args.dtype)
    cases = list(selected_cases(args))
    start = time.perf_counter()
    print(f"{len(cases)} cases; measuring copy bandwidth ...", flush=True)
    copy_gbps = harness.copy_bandwidth_gbps(torch.device("cuda"))
    print(f"copy bandwidth {copy_gbps:.0f} GB/s (read + write)", flush=True)
    payload = {"name": name, "environment": report.environment(), "timer": args.timer,
               "copy_gbps": copy_gbps, "args": vars(args) | {"out_dir": str(args.out_dir)},
               "suites": {}}
    for i, (suite, g, spec) in enumerate(cases):
        elapsed = time.perf_counter() - start
        print(f"[{i + 1}/{len(cases)} {elapsed:5.0f}s] {suite}: {spec.label} [{g.name}]", flush=True)
        if elapsed > args.time_budget:
            case = {"label": spec.label, "geometry": g.name, "results": [],
                    "skipped": f"time budget of {args.time_budget:.0f}s spent"}
        else:
            case = harness.run_case(spec, g, backends_for(args, g), page_size=args.page_size,
                                    dtype=dtype, timer=args.timer, warmup_ms=args.warmup_ms,
                                    rep_ms=args.rep_ms, check=not args.no_check,
                                    copy_gbps=copy_gbps, log=lambda s: print(s, flush=True))
        case["suite"] = suite
        payload["suites"].setdefault(suite, []).append(case)
        save(payload, args.out_dir, name)
    payload["wall_s"] = time.perf_counter() - start
    save(payload, args.out_dir, name)
    print_summary(payload)
    print(f"\nwrote {args.out_dir / (name + '.json')} and .md in {payload['wall_s']:.0f}s")
    return 0


def save(payload, out_dir: Path, name: str) -> None:
    report.write_json(out_dir / f"{name}.json", payload)
    (out_dir / f"{name}.md").write_text(report.markdown_report(payload, grids.HEADLINE))


def print_summary(payload) -> None:
    env = payload["environment"]
    print(f"\n{env.get('device')} | torch {env['torch']} triton {env['triton']} vllm {env['vllm']} "
          f"| copy {payload['copy_gbps']:.0f} GB/s | x = their time / FLASHCORE time")
    for suite, cases in payload["suites"].items():
        print(f"\n== {suite} ==")
        print(report.text_table(*report.table_rows(cases, grids.HEADLINE[suite])))
    notes = report.failures([c for cs in payload["suites"].values() for c in cs])
    if notes:
        print("\nskipped/failed: " + "\n  ".join(n[:200] for n in notes))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
