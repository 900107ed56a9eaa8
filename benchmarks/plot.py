"""PNG plots from run_all.py / pytest JSON results: FLASHCORE against each built-in backend.

    python benchmarks/plot.py                                # every results/*.json
    python benchmarks/plot.py benchmarks/results/sweep-quick.json

For each suite in each file it writes ``<stem>-<suite>.png`` beside the JSON: the top panel
shows the suite's headline number (decode GB/s, prefill TFLOP/s, mixed time) per case and
backend; the bottom panel shows speed ratios (their time / FLASHCORE's time; above 1 means
FLASHCORE is faster) as grouped bars, with a line at 1.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grids  # noqa: E402
import report  # noqa: E402

COLORS = {"FLASHCORE": "tab:red", "FLASH_ATTN": "tab:blue", "TRITON_ATTN": "tab:green",
          "FLASHINFER": "tab:purple", "TORCH_SDPA": "tab:gray"}
LABELS = {"gbps": "GB/s of attention bytes", "tflops": "TFLOP/s (causal FLOPs)", "ms": "time (us)"}


def series(cases: list[dict], metric: str):
    """Case labels, {backend: values}, {built-in: ratio values} (None where missing)."""
    labels, values, ratios = [], {}, {}
    backends = ["FLASHCORE"] + list(report.BUILTINS)
    for case in cases:
        if case.get("skipped"):
            continue
        labels.append(f"{case['label'].replace('decode ', '').replace('prefill ', '')}\n{case['geometry']}")
        res, (mine, _) = report.by_backend(case), report.ours(case)
        for b in backends:
            rec = mine if b == "FLASHCORE" else res.get(b)
            ok = rec is not None and rec.get("status") == "ok"
            val = (rec["ms"] * 1e3 if metric == "ms" else rec.get(metric)) if ok else None
            values.setdefault(b, []).append(val)
            if b != "FLASHCORE":
                ratios.setdefault(b, []).append(rec["ms"] / mine["ms"] if ok and mine else None)
    return labels, values, ratios


def _bars(ax, labels, data: dict, width_total=0.8):
    import numpy as np

    x = np.arange(len(labels))
    shown = {k: v for k, v in data.items() if any(y is not None for y in v)}
    width = width_total / max(1, len(shown))
    for i, (name, ys) in enumerate(shown.items()):
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, [y if y is not None else 0 for y in ys],
               width, label=name, color=COLORS.get(name))
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.legend(fontsize=7, ncol=min(5, max(1, len(shown))))


def plot_suite(payload: dict, suite: str, cases: list[dict], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = grids.HEADLINE.get(suite, "ms")
    labels, values, ratios = series(cases, metric)
    if not labels:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.55 * len(labels) + 3), 9))
    _bars(top, labels, values)
    top.set_ylabel(LABELS[metric])
    if metric == "gbps" and payload.get("copy_gbps"):
        top.axhline(payload["copy_gbps"], color="gray", ls="--", lw=1)
        top.text(0, payload["copy_gbps"], " copy bandwidth", va="bottom", fontsize=7, color="gray")
    env = payload.get("environment", {})
    top.set_title(f"{suite}: {env.get('device', '?')}, vllm {env.get('vllm')}, "
                  f"triton {env.get('triton')}, {env.get('date', '')[:10]}", fontsize=9)
    _bars(bottom, labels, ratios)
    bottom.axhline(1.0, color="black", lw=1)
    bottom.set_ylabel("speed ratio: their time / FLASHCORE time")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_file(path: Path) -> list[Path]:
    payload = json.loads(path.read_text())
    written = []
    for suite, cases in payload.get("suites", {}).items():
        out = plot_suite(payload, suite, cases, path.with_name(f"{path.stem}-{suite}.png"))
        if out:
            written.append(out)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", type=Path, help="result JSON files (default: results/*.json)")
    args = p.parse_args(argv)
    files = args.files or sorted(report.RESULTS_DIR.glob("*.json"))
    if not files:
        print(f"no result files in {report.RESULTS_DIR}; run benchmarks/run_all.py first")
        return 1
    for f in files:
        for out in plot_file(f):
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
