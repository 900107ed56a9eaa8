"""What the decode plan costs a batch of equal lengths, taken apart (benchmarks/NOTES.md).

    python benchmarks/plan_cost.py                # both parts
    python benchmarks/plan_cost.py --part order   # only the pieces' order
    python benchmarks/plan_cost.py --part grid --geometry mqa --cases 64x8192,256x2048

Our launchers alone (harness.KernelRunner), Llama-3-8B heads unless ``--geometry`` names others,
bf16, page 16, random page order, CUDA-graph replay, microseconds, best of ``--reps``:

- ``grid``: the launch without a plan ("static"), the planned launch ("planned", on the plan's
  ``grid_rows``: a wave's worth of rows, fewer where the batch's pieces cannot fill it, or
  one per sequence, the empty ones first), and the
  plan made for a grid of exactly its pieces ("exact", which no engine can launch: they are
  counted on the device; at these equal lengths the same split counts, checked). Each also
  with the merge launch left out ("-nomerge": the decode kernel alone, whose output is then
  wrong at more than one split: timed only). Every
  launch's output is first checked against the launch without a plan.
- ``order``: the planned decode kernel alone with the plan's pieces in the plan's order (a
  sequence's splits side by side, "seq-major") and rewritten in the order of the launch
  without a plan (split k of every sequence, then split k + 1: "split-major").
"""

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import geometry  # noqa: E402
import harness  # noqa: E402

GRID_CASES = ((64, 512), (256, 512), (64, 8192), (64, 32768), (8, 8192), (32, 8192), (128, 2048))
ORDER_CASES = ((8, 8192), (32, 8192), (16, 8192), (8, 32768), (32, 2048))


@contextlib.contextmanager
def merge_left_out():
    """The launcher's merge launch replaced by nothing, so that only the decode kernel runs."""
    launcher = sys.modules["flashcore_kernels.paged_attention"]
    merge = launcher.merge_splits_kernel

    class NoLaunch:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    launcher.merge_splits_kernel = NoLaunch()
    try:
        yield
    finally:
        launcher.merge_splits_kernel = merge


def all_times(runners: dict, device, reps: int) -> dict:
    """{name: [graph-replayed time in us of each round]} of each runner's forward, the runners
    alternating."""
    times = {name: [] for name in runners}
    for _ in range(reps):
        for name, runner in runners.items():
            times[name].append(1e3 * harness.time_ms(runner.forward, device, "graph", 25, 100))
    return times


def best_times(runners: dict, device, reps: int) -> dict:
    """{name: best graph-replayed time in us} of each runner's forward, the runners alternating."""
    return {name: min(t) for name, t in all_times(runners, device, reps).items()}


def assert_same_outputs(runners: dict, reference: str) -> None:
    """Every runner's output is the ``reference`` runner's, within rounding: the launches run the
    same batch."""
    runners[reference].forward()
    expected = runners[reference].output.float()
    for name, runner in runners.items():
        runner.forward()
        error = (runner.output.float() - expected).abs().max().item()
        assert error < 1e-2, (name, error)


def plan_on_rows(fk, cu_seqlens_q, seq_lens, num_seqs: int, num_kv_heads: int, rows: int,
                 wave: int, tile_tokens: int = 1):
    """The engine's plan of a batch (for a decode kernel stepping ``tile_tokens`` at a time)
    made for, and launched on, a grid of ``rows`` rows of programs instead of the plan's own
    ``grid_rows``: its pieces fit those rows, and how many empty rows the launch carries is then
    the caller's. The rows' slots, two a row, must hold every piece."""
    plan = fk.DecodePlan.allocate(num_seqs, num_kv_heads, wave, cu_seqlens_q.device)
    if rows > plan.grid_rows(num_seqs):
        raise ValueError(f"{rows} rows: the plan holds {plan.grid_rows(num_seqs)}")
    # The launcher sizes the grid, and the plan its layout, by grid_rows().
    plan.grid_rows = lambda _num_seqs: rows
    plan.update(cu_seqlens_q, seq_lens, num_seqs, tile_tokens=tile_tokens)
    pieces = int(plan.seq_splits[:num_seqs].sum())
    if pieces > 2 * rows:
        raise ValueError(f"{rows} rows cannot hold the plan's {pieces} pieces")
    return plan


def unlike_counts(label: str, plan, num_seqs: int, splits: int) -> str | None:
    """Why a case is not compared: the plan's split counts are not the launch's ``splits`` for
    every sequence (None where they are)."""
    planned = plan.seq_splits[:num_seqs].tolist()
    if planned == [splits] * num_seqs:
        return None
    return (f"{label} not compared, the plan splits {sorted(set(planned))}, the launch without "
            f"it {splits}")


def grid_case(fk, config, g, batch: int, context: int, device, reps: int) -> str:
    num_kv_heads = g.num_kv_heads
    queries_per_kv = g.num_q_heads // num_kv_heads
    inp = harness.prepare(batches.decode_batch(batch, context), g, device=device)
    try:
        kernel = (queries_per_kv, g.head_dim, inp.cache_dtype)  # what the wave depends on
        splits = config.num_kv_splits(batch, num_kv_heads, device, *kernel)
        pieces = splits * batch
        runners = {"static": harness.KernelRunner(inp, planned=False),
                   "planned": harness.KernelRunner(inp, planned=True),
                   "exact": harness.KernelRunner(inp, planned=False)}
        runners["exact"].decode_plan = plan_on_rows(fk, inp.query_start_loc, inp.seq_lens,
                                                    batch, num_kv_heads, pieces,
                                                    config.decode_wave(device, *kernel),
                                                    runners["planned"].tile_tokens)
        unlike = unlike_counts(f"{batch}x{context}:", runners["planned"].decode_plan, batch,
                               splits)
        if unlike:  # the parts compare only at like counts
            return unlike
        assert runners["exact"].decode_plan.seq_splits[:batch].tolist() == [splits] * batch
        assert_same_outputs(runners, "static")
        times = best_times(runners, device, reps)
        with merge_left_out():
            times.update({f"{name}-nomerge": t
                          for name, t in best_times(runners, device, reps).items()})
        planned_rows = runners["planned"].decode_plan.grid_rows(batch)
    finally:
        harness.release(inp)
    return (f"{batch}x{context} splits {splits}, rows: planned {planned_rows} exact {pieces}: "
            + " ".join(f"{name} {t:.1f}" for name, t in times.items()))


def order_case(fk, config, g, batch: int, context: int, device, reps: int) -> str:
    num_kv_heads = g.num_kv_heads
    inp = harness.prepare(batches.decode_batch(batch, context), g, device=device)
    try:
        splits = config.num_kv_splits(batch, num_kv_heads, device, g.queries_per_kv, g.head_dim,
                                      inp.cache_dtype)
        runners = {"static": harness.KernelRunner(inp, planned=False),
                   "seq-major": harness.KernelRunner(inp, planned=True),
                   "split-major": harness.KernelRunner(inp, planned=True)}
        plan = runners["split-major"].decode_plan
        unlike = unlike_counts(f"{batch}x{context}: order", plan, batch, splits)
        if unlike:  # (the rewrite below lists `splits` a sequence)
            return unlike
        # Into the plan's own slots; the merge is left out, so any distinct partial rows do.
        split_major = [fk.decode_plan.pack_slot(seq, k, splits, seq * splits + k)
                       for k in range(splits) for seq in range(batch)]
        slots = (plan.pieces >= 0).nonzero().flatten()
        assert len(slots) == len(split_major)
        plan.pieces[slots] = torch.tensor(split_major, dtype=torch.int64, device=device)
        with merge_left_out():
            times = best_times(runners, device, reps)
    finally:
        harness.release(inp)
    return f"{batch}x{context} splits {splits}: " + " ".join(
        f"{name} {t:.1f}" for name, t in times.items())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("grid", "order", "both"), default="both")
    p.add_argument("--reps", type=int, default=2, help="timings of each launch, alternating")
    p.add_argument("--geometry", default="llama3-8b", choices=sorted(geometry.GEOMETRIES),
                   help="the attention heads (benchmarks/geometry.py)")
    p.add_argument("--cases", type=batches.parse_shapes, metavar="BxC,...",
                   help="batch x context of every part (default: each part's own cases)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    import flashcore_kernels as fk
    from flashcore_kernels import config

    device = torch.device("cuda")
    g = geometry.get(args.geometry)
    print(f"{torch.cuda.get_device_name(device)}, {g.name}, wave "
          f"{config.decode_wave(device, g.queries_per_kv, g.head_dim, torch.bfloat16)}", flush=True)
    if args.part in ("grid", "both"):
        for batch, context in args.cases or GRID_CASES:
            print(grid_case(fk, config, g, batch, context, device, args.reps), flush=True)
    if args.part in ("order", "both"):
        for batch, context in args.cases or ORDER_CASES:
            print(order_case(fk, config, g, batch, context, device, args.reps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
