"""Result files: environment header, JSON, markdown tables with FLASHCORE-vs-built-in ratios."""

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OURS = ("FLASHCORE", "FLASHCORE_KERNEL")
BUILTINS = ("FLASH_ATTN", "TRITON_ATTN", "FLASHINFER", "TORCH_SDPA")


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "unknown")
    except Exception:
        return None


def flashcore_settings() -> dict:
    """Our own switches (FLASHCORE_HOPPER_PREFILL, ...) as set for this run: which kernels
    FLASHCORE ran."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("FLASHCORE_")}


def environment() -> dict:
    import torch

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "cwd": os.getcwd(), "python": platform.python_version(), "torch": torch.__version__,
        "triton": _version("triton"), "vllm": _version("vllm"), "flashinfer": _version("flashinfer"),
        "cuda": torch.version.cuda, "host": platform.node(),
        "flashcore_settings": flashcore_settings(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, sm_count=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}")
    else:
        env["device"] = "cpu (no CUDA GPU)"
    return env


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)


def by_backend(case: dict) -> dict:
    return {r["backend"]: r for r in case.get("results", [])}


def ours(case: dict):
    """Our row: the vLLM backend if it ran, else the raw kernel (marked with '*')."""
    res = by_backend(case)
    for i, name in enumerate(OURS):
        if res.get(name, {}).get("status") == "ok":
            return res[name], "*" if i else ""
    return None, ""


def _fmt(metric: str, rec: dict | None) -> str:
    if not rec or rec.get("status") != "ok":
        return "-" if not rec else rec["status"][:4]
    if metric == "gbps":
        return f"{rec['gbps']:.0f}"
    if metric == "tflops":
        return f"{rec['tflops']:.1f}"
    return f"{rec['ms'] * 1e3:.1f}"


UNIT = {"gbps": "GB/s", "tflops": "TFLOP/s", "ms": "us"}


def table_rows(cases: list[dict], metric: str, builtins=BUILTINS) -> tuple[list[str], list[list[str]]]:
    """One row per case: ours, each built-in, and speed ratios (their time / our time)."""
    header = ["case", "geometry", f"FLASHCORE {UNIT[metric]}"]
    header += [f"{b} {UNIT[metric]}" for b in builtins] + [f"x vs {b}" for b in builtins]
    if metric == "gbps":
        header.append("% copy BW")
    rows = []
    for case in cases:
        if case.get("skipped"):
            rows.append([case["label"], case["geometry"], f"skipped: {case['skipped']}"])
            continue
        res = by_backend(case)
        mine, mark = ours(case)
        row = [case["label"], case["geometry"], _fmt(metric, mine) + mark]
        row += [_fmt(metric, res.get(b)) for b in builtins]
        for b in builtins:
            other = res.get(b)
            ok = mine and other and other.get("status") == "ok"
            row.append(f"{other['ms'] / mine['ms']:.2f}" if ok else "-")
        if metric == "gbps":
            row.append(f"{mine['pct_copy_bw']:.0f}" if mine and "pct_copy_bw" in mine else "-")
        rows.append(row)
    return header, rows


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *[r + [""] * (len(header) - len(r)) for r in rows])]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def failures(cases: list[dict]) -> list[str]:
    """One line per backend that was skipped or failed, with the first reason seen."""
    seen = {}
    for case in cases:
        for r in case.get("results", []):
            if r["status"] != "ok" and r["backend"] not in seen:
                seen[r["backend"]] = f"{r['backend']} {r['status']} ({case['label']}): {r.get('reason', '')}"
    return list(seen.values())


def markdown_report(payload: dict, headline: dict) -> str:
    env = payload["environment"]
    out = [f"# FlashCore attention benchmarks: {payload['name']}", "",
           f"- device: {env.get('device')} (SMs {env.get('sm_count', '-')}, "
           f"{env.get('memory_gib', '-')} GiB)",
           f"- torch {env['torch']}, triton {env['triton']}, vllm {env['vllm']}, "
           f"flashinfer {env['flashinfer']}, CUDA {env['cuda']}",
           f"- date {env['date']}", f"- command: `{env['command']}`",
           "- FlashCore settings: " + (" ".join(f"{k}={v}" for k, v in
                                                env.get("flashcore_settings", {}).items())
                                       or "defaults"),
           f"- timer: {payload.get('timer')}; copy bandwidth {payload.get('copy_gbps') or 0:.0f} GB/s "
           "(read + write)", "",
           "Ratios are speed ratios: the built-in backend's time / FLASHCORE's time (>1: FLASHCORE "
           "is faster). `*` marks cases where only the raw kernel ran.", ""]
    for suite, cases in payload["suites"].items():
        out += [f"## {suite}", "", markdown_table(*table_rows(cases, headline[suite])), ""]
    notes = failures([c for cases in payload["suites"].values() for c in cases])
    if notes:
        out += ["## Skipped or failed backends", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
