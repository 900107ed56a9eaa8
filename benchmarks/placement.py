"""Where a decode launch's programs run, and how long each takes: the SM of every program and
its start and end (the GPU's global timer), for the decode grids of one batch of equal lengths.

    python benchmarks/placement.py --cases 64x8192,64x32768,32x32768 --json /tmp/placement.json

Llama-3-8B heads, bf16, page 16, random page order, CUDA-graph replay. The launches, on the same
inputs in one process:

- ``static``: without a plan (``config.num_kv_splits``'s count for every decode);
- ``planned``: the engine's launch, the plan on its grid of a wave's rows, the empty rows first;
- ``last``: the same plan with its pieces moved to the first rows, in the order of the launch
  without a plan (sequence, then split), the empty rows last;
- ``middle``: the engine's plan with its rows turned by half, the empty rows in the middle;
- ``exact``: the plan made for a grid of exactly its pieces (``plan_cost.plan_on_rows``).

Each is timed (us, every one of ``--reps`` alternating rounds), then timed once more with a copy
of the decode kernel that writes each program's SM id (``%smid``) at its start and its start
and end times (``%globaltimer``, ns) at its end, a record for each of the last 256 replays; the
copy is made from ``kernels/decode.py`` as it is (``probe_source``). Per launch it prints the
probed time, the last replay's placement (the programs an SM, real ones being those with a
piece; the SMs with fewer than the most; the mean time a program takes on SMs of each load),
and the replays grouped by where their lighter SMs were, with each group's spans (first start
to last end): whether a replay's time follows its placement. The probed launch carries one
more small kernel (the replay count) and its stores: where they change a kernel's register
count enough to fit fewer programs an SM, it runs slower than the timed one, so compare the
two times before reading the placement. ``--captures N`` probes each launch in N graphs captured
one after the other, ``--shifts K,...`` after an idle kernel of K programs (each K in turn):
whether a launch keeps its placement from one graph to the next, and whether the launch before
it moves where its programs go.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402
import plan_cost  # noqa: E402

PROBE_WORDS = 3  # int64 words a program writes: SM id, start, end


def probe_source(decode_source: str) -> str:
    """``kernels/decode.py``'s text with probe arguments added to ``decode_kernel``: each program
    stores its SM id and start time first thing and its end time last, in the records of the
    launch that ``probe_counter`` counts (``ProbedDecode``), ``PROBE_REPLAYS`` launches kept.
    Nothing is held from start to end (the record's address is found again), so that the probe
    takes no register the loop would miss."""
    signature_end = "    FP16_PRODUCTS: tl.constexpr,"
    body_end = "            SOFT_CAP, FP32_DOT, LOOKAHEAD, FP16_PRODUCTS)\n"
    next_function = "\n\n@triton.jit\ndef decode_piece("
    if (decode_source.count(signature_end) != 1
            or decode_source.count(body_end + next_function) != 1):
        raise ValueError("decode.py's decode_kernel no longer starts and ends as probe_source "
                         "expects")
    record = ("    programs = tl.num_programs(0) * tl.num_programs(1)\n"
              "    launch = tl.load(probe_counter) % PROBE_REPLAYS\n"
              f"    record = probe + {PROBE_WORDS} * (launch * programs + tl.program_id(0)\n"
              "                                     + tl.program_id(1) * tl.num_programs(0))\n")
    head, rest = decode_source.split(signature_end)
    signature_close = rest.index("\n):\n") + len("\n):\n")
    arguments = "\n    probe, probe_counter, PROBE_REPLAYS: tl.constexpr,\n):\n"
    rest = (rest[:signature_close].replace("\n):\n", arguments) + record
            + "    tl.store(record, smid().to(tl.int64))\n"
            + "    tl.store(record + 1, globaltimer())\n" + rest[signature_close:])
    rest = rest.replace(body_end + next_function,
                        body_end + record + "    tl.store(record + 2, globaltimer())\n"
                        + next_function)
    return ("from triton.language.extra.cuda.utils import globaltimer, smid\n"
            + head + signature_end + rest)


@triton.jit
def idle_kernel(unused):
    """Does nothing: launched with K programs before a probed decode (``--shifts``), to see
    whether the launch before a decode moves where the block scheduler puts its programs (it did
    not, K = 1 to 132: results/tiles-h200/placement.txt, run 5)."""
    pass


class ProbedDecode:
    """Stands in for the launcher's ``decode_kernel``: counts its launches on the device (an
    increment before each, so a CUDA graph's replays count too) and launches the probing copy,
    which keeps the records of the last ``replays`` launches of up to ``max_programs``
    programs."""

    def __init__(self, max_programs: int, device, replays: int = 256):
        import flashcore_kernels

        source = probe_source(Path(flashcore_kernels.__file__).with_name("decode.py").read_text())
        path = Path(tempfile.mkdtemp()) / "decode_probe.py"
        path.write_text(source)
        self.kernel = harness.load_version("probe", str(path)).decode_kernel
        # Allocated here, not while a graph is captured (they would live in the graph's pool).
        self.probe = torch.zeros(replays * max_programs * PROBE_WORDS, dtype=torch.int64,
                                 device=device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.replays, self.max_programs, self.programs = replays, max_programs, 0
        self.shift = 0  # programs of idle_kernel launched before each decode (0: none)

    def __getitem__(self, grid):
        programs = grid[0] * (grid[1] if len(grid) > 1 else 1)
        if programs > self.max_programs:
            raise ValueError(f"{programs} programs, the probe holds {self.max_programs}")
        self.programs = programs
        launch = self.kernel[grid]

        def probed(*args, **kwargs):
            self.counter.add_(1)
            if self.shift:
                idle_kernel[(self.shift,)](self.counter)
            launch(*args, **kwargs, probe=self.probe, probe_counter=self.counter,
                   PROBE_REPLAYS=self.replays)
        return probed

    def reset(self) -> None:
        self.counter.zero_()

    def records(self) -> torch.Tensor:
        """[launches, programs, PROBE_WORDS] of the last launches since ``reset`` (at most
        ``replays``), oldest first, on the host."""
        launched = int(self.counter.item())
        kept = torch.arange(max(1, launched - self.replays + 1), launched + 1) % self.replays
        per_launch = self.probe[:self.replays * self.programs * PROBE_WORDS]
        return per_launch.view(self.replays, self.programs, PROBE_WORDS)[kept].cpu()


def placement(records: torch.Tensor, real: list[bool]) -> dict:
    """What one launch's ``records`` say: the real programs an SM ({load: SMs}), the SMs with
    fewer than the most, the mean time (us) of a real program on SMs of each load, and the
    launch's span (us) from its first start to its last end."""
    sm, start, end = records[:, 0], records[:, 1], records[:, 2]
    real = torch.tensor(real, dtype=torch.bool)
    load = torch.bincount(sm[real], minlength=int(sm.max()) + 1)
    us = (end - start).double() / 1e3
    mean_us = {}
    for count in load.unique().tolist():
        on = real & (load[sm] == count)
        if on.any():
            mean_us[count] = round(float(us[on].mean()), 1)
    return dict(loads={int(c): int((load == c).sum()) for c in load.unique()},
                light_sms=(load < load.max()).nonzero().flatten().tolist(),
                mean_us=mean_us, span_us=round(float(end.max() - start.min()) / 1e3, 1))


def spans_by_placement(launches: torch.Tensor, real: list[bool]) -> dict:
    """Each launch's span (us) grouped by where its lighter SMs were: {lighter SMs: [spans]},
    so that whether a launch's time follows its placement shows across the replays."""
    found = {}
    for records in launches:
        seen = placement(records, real)
        found.setdefault(tuple(seen["light_sms"]), []).append(seen["span_us"])
    return found


def real_programs(plan, rows: int, num_kv_heads: int) -> list[bool]:
    """Whether each program of a planned grid of ``rows`` rows runs a piece (decode.py: row r
    runs slots r and 2 * rows - 1 - r)."""
    slots = plan.pieces.tolist()
    return [r for row in range(rows)
            for r in [slots[row] >= 0 or slots[2 * rows - 1 - row] >= 0] * num_kv_heads]


def pieces_first(plan, unpack_slot) -> None:
    """The plan's pieces moved to its first slots, one a row, in the order of the launch
    without a plan (sequence, then split): the empty rows last."""
    slots = sorted((s for s in plan.pieces.tolist() if s >= 0),
                   key=lambda s: unpack_slot(s)[:2])
    moved = torch.full_like(plan.pieces, -1)
    moved[:len(slots)] = torch.tensor(slots, dtype=torch.int64)
    plan.pieces.copy_(moved)


def empty_rows_in_middle(plan, rows: int) -> None:
    """The plan's first ``rows`` slots turned by half of them, so that the empty rows of a
    batch of like lengths (first in the engine's plan) come in the middle of the grid."""
    if (plan.pieces[rows:2 * rows] >= 0).any():
        raise ValueError("a row holds two pieces; the rows cannot be turned")
    plan.pieces[:rows] = torch.roll(plan.pieces[:rows].clone(), rows // 2)


def probe(runner, probed: ProbedDecode, real: list[bool], device, shift: int = 0) -> dict:
    """``runner``'s launch timed in a graph of its own with the probing kernel, after an idle
    kernel of ``shift`` programs: the probed time, the last replay's placement, and every
    kept replay's span grouped by where its lighter SMs were."""
    probed.reset()
    probed.shift = shift
    try:
        probed_us = 1e3 * harness.time_ms(runner.forward, device, "graph", 25, 100)
    finally:
        probed.shift = 0
    launches = probed.records()
    return dict(shift=shift, probed_us=round(probed_us, 1), **placement(launches[-1], real),
                placements=[dict(light_sms=list(light), spans_us=spans)
                            for light, spans in spans_by_placement(launches, real).items()])


def run_case(batch: int, context: int, g, device, reps: int, probed: ProbedDecode,
             captures: int = 1, shifts=(0,)) -> dict:
    import flashcore_kernels as fk
    from flashcore_kernels import config
    from flashcore_kernels.decode_plan import unpack_slot

    launcher = sys.modules["flashcore_kernels.paged_attention"]
    inp = harness.prepare(batches.decode_batch(batch, context), g, device=device)
    try:
        kernel = (g.queries_per_kv, g.head_dim, inp.cache_dtype)
        splits = config.num_kv_splits(batch, g.num_kv_heads, device, *kernel)
        runners = {"static": harness.KernelRunner(inp, planned=False),
                   "planned": harness.KernelRunner(inp, planned=True),
                   "last": harness.KernelRunner(inp, planned=True),
                   "middle": harness.KernelRunner(inp, planned=True),
                   "exact": harness.KernelRunner(inp, planned=False)}
        rows = runners["planned"].decode_plan.grid_rows(batch)
        runners["exact"].decode_plan = plan_cost.plan_on_rows(
            fk, inp.query_start_loc, inp.seq_lens, batch, g.num_kv_heads, splits * batch,
            config.decode_wave(device, *kernel), runners["planned"].tile_tokens)
        pieces_first(runners["last"].decode_plan, unpack_slot)
        empty_rows_in_middle(runners["middle"].decode_plan, rows)
        every = [True] * (batch * g.num_kv_heads * splits)
        real = {name: every for name in ("static", "exact")}
        real.update({name: real_programs(runners[name].decode_plan, rows, g.num_kv_heads)
                     for name in ("planned", "last", "middle")})
        plan_cost.assert_same_outputs(runners, "static")
        times = plan_cost.all_times(runners, device, reps)
        found = {}
        kernel_in_place = launcher.decode_kernel
        launcher.decode_kernel = probed
        try:
            for name, runner in runners.items():
                seen = [probe(runner, probed, real[name], device, shift)
                        for shift in shifts for _ in range(captures)]
                found[name] = dict(us=[round(t, 1) for t in times[name]], **seen[-1],
                                   captures=[dict(shift=c["shift"], probed_us=c["probed_us"],
                                                  light_sms=c["light_sms"]) for c in seen])
        finally:
            launcher.decode_kernel = kernel_in_place
    finally:
        harness.release(inp)
    return dict(rows=rows, splits=splits, launches=found)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=batches.parse_shapes, default="64x8192,64x32768",
                   metavar="BxC,...", help="batch x context, equal lengths")
    p.add_argument("--reps", type=int, default=3, help="timings of each launch, alternating")
    p.add_argument("--captures", type=int, default=1,
                   help="probed graphs of each launch (each captured anew, so placed anew)")
    p.add_argument("--shifts", type=batches.parse_counts, default=[0],
                   metavar="K,...", help="probe each launch after an idle kernel of K programs "
                   "(0: none), to see whether that moves where its programs go")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    device = torch.device("cuda")
    g = geometry.get("llama3-8b")
    probed = ProbedDecode(4096, device)
    print(torch.cuda.get_device_name(device), flush=True)
    found = {}
    for batch, context in args.cases:
        case = found[f"{batch}x{context}"] = run_case(
            batch, context, g, device, args.reps, probed, args.captures, args.shifts)
        print(f"{batch}x{context}: {case['rows']} rows planned, {case['splits']} splits",
              flush=True)
        for name, launch in case["launches"].items():
            print(f"  {name}: {'/'.join(map(str, launch['us']))} us, probed {launch['probed_us']}; "
                  f"last replay: span {launch['span_us']}, programs an SM {launch['loads']}, us a "
                  f"program {launch['mean_us']}, lighter SMs {launch['light_sms']}", flush=True)
            if len(launch["captures"]) > 1:
                for capture in launch["captures"]:
                    print(f"    capture, shift {capture['shift']}: probed "
                          f"{capture['probed_us']} us, lighter SMs "
                          f"{capture['light_sms']}", flush=True)
            for seen in sorted(launch["placements"], key=lambda p: -len(p["spans_us"])):
                spans = sorted(seen["spans_us"])
                print(f"    {len(spans)} replays, span {spans[0]}/{spans[len(spans) // 2]}/"
                      f"{spans[-1]} us (min/median/max), lighter SMs {seen['light_sms']}",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
