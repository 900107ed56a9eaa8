"""The table generate.py --compare prints: one row per backend, ratios against the first one."""


def _p(r: dict, key: str, q: str, scale: float = 1.0) -> str:
    v = r.get("latency", {}).get(key, {}).get(q)
    return f"{v * scale:.2f}" if v is not None else "-"


def table(rows: dict, order: list[str]) -> str:
    """``rows``: backend -> generate.py results (or {"error": ...}). The ratio columns are
    the first backend's throughput / this backend's (>1: the first backend is faster)."""
    base = rows.get(order[0], {})
    header = ["backend", "req/s", "in tok/s", "out tok/s", "total tok/s", f"{order[0]} x (out)",
              f"{order[0]} x (total)", "e2e p50 s", "e2e p99 s", "TTFT p50 s", "TPOT p50 ms",
              "start s"]
    lines = []
    for name in order:
        r = rows.get(name, {})
        if "error" in r or "output_tok_per_s" not in r:
            lines.append([name, f"failed: {r.get('error', 'no result')}"])
            continue
        ratio = lambda k: (f"{base[k] / r[k]:.2f}" if base.get(k) and r.get(k) else "-")
        lines.append([name, f"{r['requests_per_s']:.2f}", f"{r['input_tok_per_s']:.0f}",
                      f"{r['output_tok_per_s']:.0f}", f"{r['total_tok_per_s']:.0f}",
                      ratio("output_tok_per_s"), ratio("total_tok_per_s"),
                      _p(r, "e2e_s", "p50"), _p(r, "e2e_s", "p99"), _p(r, "ttft_s", "p50"),
                      _p(r, "tpot_s", "p50", 1e3), f"{r['startup_s']:.0f}"])
    widths = [max(len(str(row[i])) for row in [header] + lines if i < len(row))
              for i in range(len(header))]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths))
    first = next((r for r in rows.values() if "num_requests" in r), {})
    title = (f"{first.get('num_requests', '?')} requests, {first.get('input_tokens', '?')} tokens in, "
             f"{first.get('output_tokens', '?')} out; model {first.get('model', '?')}")
    return "\n".join([title, fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines])


def main(argv=None) -> int:
    """``python benchmarks/compare.py A.json B.json ...``: one table from generate.py --json files
    written by separate runs (e.g. one backend per GPU at the same time) or by ``--compare`` (its
    file holds every backend it ran); the first backend is the base."""
    import json
    import sys

    paths = (sys.argv[1:] if argv is None else argv)
    rows = {}
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        rows.update(r["backends"] if "backends" in r else {r["backend"]: r})
    print(table(rows, list(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
