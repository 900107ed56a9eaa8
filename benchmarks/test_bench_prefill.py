"""Prefill: one causal sequence of 512..16k tokens (head dims 64, 128, 256) and several
sequences per batch. Judged by TFLOP/s, counting 4 * num_q_heads * head_dim * the unmasked
(query, key) pairs (bottom-right causal: a sequence of n tokens has n(n+1)/2).

Run explicitly: `pytest benchmarks/test_bench_prefill.py [--bench-quick]` (options in conftest.py).
"""

SUITE = "prefill"


def test_prefill(bench_case, backend, bench_run):
    bench_run(bench_case, backend)
