"""The comparison every correctness test goes through, with the tolerance table of
``flashcore_kernels.reference.TOLERANCE`` (its comment says where the numbers come from).

Every comparison also checks that each row that should be written holds no NaN (outputs are
poisoned with NaN before each call).
"""

import json
import os

import torch

from flashcore_kernels.reference import TOLERANCE


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
        # Under pytest-xdist each worker process writes its own file.
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        path = os.environ["FLASHCORE_ERROR_TABLE"] + (f".{worker}" if worker else "")
        with open(path, "w") as f:
            json.dump(list(worst.values()), f, indent=1)
    lines = [f"{'scenario':44} {'dtype':9} {'flashcore':>10} {'sdpa':>10} {'tolerance':>10}"]
    for (scenario, dtype), r in sorted(worst.items()):
        sdpa = f"{r['sdpa']:.2e}" if "sdpa" in r else "-"
        lines.append(f"{scenario[:44]:44} {dtype:9} {r['flashcore']:10.2e} {sdpa:>10} {r['tolerance']:10.0e}")
    return "\n".join(lines)
