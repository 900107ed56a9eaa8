"""No-GPU fallback of generate.py: FlashCore's kernels under the Triton interpreter on a small
mixed batch (decodes, an extend over a cached prefix, a fresh prefill; GQA and MQA; fp16 and
bf16; permuted pages), against the float64 reference. Prints an error table; about 10-30 s on
two CPU cores.

Run it as a script (generate.py starts it in a subprocess): TRITON_INTERPRET must be set before
triton or flashcore_kernels is imported, which this file does first.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402

# (label, num_q_heads, num_kv_heads, head_dim, page_size, dtype, seq_lens, query_lens)
CASES = [
    ("GQA 2:1 mixed, fp16", 4, 2, 64, 16, torch.float16, (37, 64, 100, 70, 48), (1, 1, 1, 5, 48)),
    ("GQA 2:1 mixed, bf16", 4, 2, 64, 16, torch.bfloat16, (37, 64, 100, 70, 48), (1, 1, 1, 5, 48)),
    ("MQA 8:1 decode, fp16", 8, 1, 64, 16, torch.float16, (1, 17, 130), (1, 1, 1)),
    ("MHA head 128 chunk, fp16", 2, 2, 128, 32, torch.float16, (9, 80), (1, 24)),
    ("GQA 7:1 long, fp16", 14, 2, 64, 16, torch.float16, (300, 513, 200), (1, 1, 33)),
]
# Errors beyond these (rounding of the exact result is ~1e-3 fp16, ~8e-3 bf16) mean a bug.
LIMITS = {torch.float16: 5e-3, torch.bfloat16: 3e-2}


def check(label, hq, hkv, d, page, dtype, seq_lens, query_lens):
    import flashcore_kernels as fk

    spec = batches.BatchSpec(seq_lens, query_lens, label)
    inp = batches.make_inputs(spec, hq, hkv, d, page, dtype, "cpu", seed=1)
    cache = inp.kv_cache()
    fk.write_kv_cache(inp.key, inp.value, cache, inp.slot_mapping)
    out = torch.full_like(inp.query, float("nan"))
    fk.paged_attention(inp.query, cache, inp.query_start_loc, inp.seq_lens, inp.block_table,
                       max_query_len=spec.max_query_len, out=out)
    ref = fk.paged_attention_reference(inp.query, cache, inp.query_start_loc, inp.seq_lens,
                                       inp.block_table)
    err = (out.double() - ref).abs()
    worst = err.max().item() if not torch.isnan(err).any() else float("nan")
    return {"case": label, "tokens": spec.num_tokens, "seqs": spec.num_reqs,
            "max_abs_err": worst, "mean_abs_err": err.mean().item(), "limit": LIMITS[dtype],
            "ok": worst <= LIMITS[dtype]}


def main() -> int:
    print("No CUDA GPU: checking FlashCore's kernels under the Triton interpreter (CPU) against "
          "the float64 reference, on small batches with randomly permuted pages.", flush=True)
    rows, start = [], time.perf_counter()
    for case in CASES:
        t = time.perf_counter()
        row = check(*case)
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        print(f"  {row['case']:<26} {row['seconds']:5.1f}s", flush=True)
    print(f"\n{'case':<26} {'seqs':>4} {'tokens':>6} {'max abs err':>12} {'mean abs err':>13} "
          f"{'limit':>7}  result")
    for r in rows:
        print(f"{r['case']:<26} {r['seqs']:>4} {r['tokens']:>6} {r['max_abs_err']:>12.2e} "
              f"{r['mean_abs_err']:>13.2e} {r['limit']:>7.0e}  {'ok' if r['ok'] else 'FAIL'}")
    print(f"\n{sum(r['ok'] for r in rows)}/{len(rows)} cases within limits in "
          f"{time.perf_counter() - start:.1f}s. No throughput numbers: those need a CUDA GPU.")
    if len(sys.argv) > 1:  # a JSON path from generate.py
        import json
        Path(sys.argv[1]).write_text(json.dumps({"mode": "cpu-interpreter-check", "cases": rows}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
