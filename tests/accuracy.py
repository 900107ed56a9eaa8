"""The tolerance table and the comparison every correctness test goes through.

Tolerances are max-abs errors against the float64 reference, one number per dtype. They come from
measuring torch SDPA on an H100 (random inputs, causal GQA prefill, DESIGN.md section 5): its own
max-abs error is 1.0e-3 to 1.3e-3 in fp16 and 0.8e-2 to 1.0e-2 in bf16, and merely rounding the
exact result to the dtype costs about 1e-3 (fp16) and 8e-3 (bf16). We allow three times SDPA's
worst error: room for a different (still fp32) accumulation order and for P rounded to fp16/bf16
before P @ V, and still an order of magnitude below the 0.007..1.046 errors that indexing,
masking or softmax-state bugs produce. fp32 runs the dot products in IEEE fp32 (no TF32).
Every comparison also checks that each row that should be written holds no NaN (outputs are
poisoned with NaN before each call).
"""

import json
import os

import torch

TOLERANCE = {
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
    torch.float32: 2e-5,
}

_RESULTS: list[dict] = []


def max_abs_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out.double() - ref).abs().max().item() if out.numel() else 0.0


def assert_matches_reference(scenario: str, out: torch.Tensor, ref: torch.Tensor,
                             sdpa_out: torch.Tensor | None = None) -> float:
    """``ref`` is the float64 reference; ``sdpa_out`` optionally torch SDPA on the same inputs,
    recorded beside ours for the error table."""
    assert not torch.isnan(out).any(), f"{scenario}: output has unwritten (NaN) entries"
    err = max_abs_error(out, ref)
    tol = TOLERANCE[out.dtype]
    entry = {"scenario": scenario, "dtype": str(out.dtype).removeprefix("torch."),
             "device": str(out.device.type), "flashcore": err, "tolerance": tol}
    if sdpa_out is not None:
        entry["sdpa"] = max_abs_error(sdpa_out, ref)
    _RESULTS.append(entry)
    assert err <= tol, f"{scenario}: max-abs error {err:.3e} exceeds the {out.dtype} tolerance {tol:.0e}"
    return err


def summary_table() -> str:
    """Worst error per scenario and dtype; also written to $FLASHCORE_ERROR_TABLE as JSON."""
    worst: dict[tuple, dict] = {}
    for r in _RESULTS:
        key = (r["scenario"], r["dtype"])
        if key not in worst or r["flashcore"] > worst[key]["flashcore"]:
            worst[key] = r
    if not worst:
        return ""
    if os.environ.get("FLASHCORE_ERROR_TABLE"):
        with open(os.environ["FLASHCORE_ERROR_TABLE"], "w") as f:
            json.dump(list(worst.values()), f, indent=1)
    lines = [f"{'scenario':44} {'dtype':9} {'flashcore':>10} {'sdpa':>10} {'tolerance':>10}"]
    for (scenario, dtype), r in sorted(worst.items()):
        sdpa = f"{r['sdpa']:.2e}" if "sdpa" in r else "-"
        lines.append(f"{scenario[:44]:44} {dtype:9} {r['flashcore']:10.2e} {sdpa:>10} {r['tolerance']:10.0e}")
    return "\n".join(lines)
