"""Compare two engines' outputs on the same prompts (results of engine_job.py): prompt logprobs,
greedy outputs, first divergence and whether it was a near-tie for the reference engine.

Logprob entries are ``[token_id, logprob, rank]``; vLLM returns the top-k plus the chosen token.
"""

import math
from dataclasses import dataclass, field

# Floors of the limits. bf16 logits alone are quantised to 1/16 at magnitude 8..16, so two
# correct backends differ by several hundredths of a nat; an attention bug (wrong page, mask or
# softmax state) moves logprobs by whole nats and breaks top-k agreement.
FLOORS = {"prompt_max_diff": 0.25, "sample_max_diff": 0.25, "prompt_top5_overlap": 0.8,
          "near_tie": 0.15}


@dataclass
class Divergence:
    request: int
    position: int
    gap: float | None  # reference's logprob(top-1) - logprob(our token); None if not returned

    def explained(self, limit: float) -> bool:
        return self.gap is not None and self.gap <= limit


@dataclass
class Comparison:
    label: str
    n_requests: int = 0
    identical: int = 0
    prompt_max_diff: float = 0.0  # max |d logprob| of the actual prompt token
    prompt_mean_diff: float = 0.0
    prompt_top5_overlap: float = 1.0  # mean fraction of shared top-5 ids per prompt position
    sample_max_diff: float = 0.0  # max |d logprob| of shared top-k ids, up to the divergence
    first_divergence: list = field(default_factory=list)  # per request, None if identical
    divergences: list = field(default_factory=list)
    near_tie: float = FLOORS["near_tie"]

    @property
    def unexplained_divergences(self) -> list:
        return [d for d in self.divergences if not d.explained(self.near_tie)]

    def limits(self, calibration: "Comparison | None") -> dict:
        """Floors, or a multiple of a second correct backend's distance when that is larger."""
        lim = dict(FLOORS)
        if calibration is not None:
            lim["prompt_max_diff"] = max(lim["prompt_max_diff"], 4 * calibration.prompt_max_diff)
            lim["sample_max_diff"] = max(lim["sample_max_diff"], 4 * calibration.sample_max_diff)
            lim["prompt_top5_overlap"] = min(lim["prompt_top5_overlap"],
                                             calibration.prompt_top5_overlap - 0.1)
        lim["near_tie"] = self.near_tie
        return lim


def near_tie_limit(calibration: "Comparison | None") -> float:
    if calibration is None:
        return FLOORS["near_tie"]
    return max(FLOORS["near_tie"], 2 * calibration.sample_max_diff)


def as_dict(entries) -> dict[int, tuple[float, int]]:
    return {int(tid): (lp, rank) for tid, lp, rank in entries or []}


def top_ids(d: dict, k: int) -> set[int]:
    return {tid for tid, (_, rank) in d.items() if rank is not None and rank <= k}


def compare_prompt(ours, ref, prompt_ids, acc):
    for pos, (a, b) in enumerate(zip(ours, ref)):
        if a is None or b is None:  # position 0 has no logprob
            continue
        a, b = as_dict(a), as_dict(b)
        token = prompt_ids[pos]
        if token in a and token in b:
            acc["diffs"].append(abs(a[token][0] - b[token][0]))
        ta, tb = top_ids(a, 5), top_ids(b, 5)
        if tb:
            acc["overlaps"].append(len(ta & tb) / len(tb))


def compare_samples(ours, ref, i, comparison):
    a_ids, b_ids = ours["output_ids"], ref["output_ids"]
    div = next((p for p, (x, y) in enumerate(zip(a_ids, b_ids)) if x != y), None)
    if div is None and len(a_ids) != len(b_ids):
        div = min(len(a_ids), len(b_ids))
    comparison.first_divergence.append(div)
    last = div if div is not None else len(a_ids) - 1
    for pos in range(min(last + 1, len(ours["sample_logprobs"]), len(ref["sample_logprobs"]))):
        a, b = as_dict(ours["sample_logprobs"][pos]), as_dict(ref["sample_logprobs"][pos])
        for tid in a.keys() & b.keys():
            comparison.sample_max_diff = max(comparison.sample_max_diff, abs(a[tid][0] - b[tid][0]))
    if div is None:
        comparison.identical += 1
    elif div < min(len(a_ids), len(b_ids)) and div < len(ref["sample_logprobs"]):
        b = as_dict(ref["sample_logprobs"][div])
        best = max(lp for lp, _ in b.values())
        ours_lp = b.get(a_ids[div], (None,))[0]
        comparison.divergences.append(
            Divergence(i, div, None if ours_lp is None else best - ours_lp))


def compare_runs(ours: dict, ref: dict, label: str,
                 calibration: Comparison | None = None) -> Comparison:
    """``ours`` against ``ref``; ``calibration`` (a second correct backend against the same
    ``ref``) widens the near-tie limit for divergences."""
    c = Comparison(label, n_requests=len(ref["requests"]), near_tie=near_tie_limit(calibration))
    acc = {"diffs": [], "overlaps": []}
    assert len(ours["requests"]) == len(ref["requests"])
    for i, (a, b) in enumerate(zip(ours["requests"], ref["requests"])):
        assert a["prompt_ids"] == b["prompt_ids"], f"request {i}: different prompts"
        compare_prompt(a["prompt_logprobs"], b["prompt_logprobs"], a["prompt_ids"], acc)
        compare_samples(a, b, i, c)
    if acc["diffs"]:
        c.prompt_max_diff = max(acc["diffs"])
        c.prompt_mean_diff = sum(acc["diffs"]) / len(acc["diffs"])
    if acc["overlaps"]:
        c.prompt_top5_overlap = sum(acc["overlaps"]) / len(acc["overlaps"])
    return c


def fmt(x, spec=".3f"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_table(title: str, comparisons, timings=None, per_request=False) -> None:
    rows = [c for c in comparisons if c is not None]
    print(f"\n== {title}")
    print(f"{'backend':28} {'identical':>9} {'prompt max|d|':>13} {'mean|d|':>8} "
          f"{'top5 ovl':>8} {'sample max|d|':>13} {'diverged (gap <= tie)':>22}")
    for c in rows:
        diverged = len(c.divergences)
        explained = diverged - len(c.unexplained_divergences)
        print(f"{c.label[:28]:28} {c.identical:>4}/{c.n_requests:<4} {fmt(c.prompt_max_diff):>13} "
              f"{fmt(c.prompt_mean_diff, '.4f'):>8} {fmt(c.prompt_top5_overlap):>8} "
              f"{fmt(c.sample_max_diff):>13} {f'{diverged} ({explained} <= {c.near_tie:.2f})':>22}")
    if timings:
        print("   (engines run FLASHCORE_E2E_PARALLEL at a time on one GPU, so these times are "
              "not a speed comparison; benchmarks/ measures speed)")
    for name, r in (timings or {}).items():
        if r and r.get("ok"):
            print(f"   {name}: engine start {r['init_s']} s, generate {r['gen_s']} s")
        elif r:
            print(f"   {name}: FAILED {r.get('error', '')[:200]}")
    if per_request:
        for c in rows:
            cells = [f"{i}:{'=' if d is None else d}" for i, d in enumerate(c.first_divergence)]
            print(f"   {c.label} first divergence per request: {' '.join(cells)}")
            for d in c.divergences:
                print(f"      request {d.request} pos {d.position}: reference gap {fmt(d.gap)}")
