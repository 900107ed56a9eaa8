"""Decode batches of unequal lengths, Llama-3-8B heads, bf16, page 16: contexts drawn evenly
from a range, and one or a few long contexts beside many short ones. Judged by GB/s of the KV
bytes a perfect kernel reads.

Run explicitly: `pytest benchmarks/test_bench_uneven.py [--bench-quick]` (options in conftest.py).
"""

SUITE = "uneven"


def test_uneven(bench_case, backend, bench_run):
    bench_run(bench_case, backend)
