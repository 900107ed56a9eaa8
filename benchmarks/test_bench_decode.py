"""Decode: batch 1..256 x context 512..32k, Llama-3-8B heads (32/8, head 128, bf16, page 16),
plus 7:1 and MQA cases. Judged by GB/s of attention bytes (K+V of every context token of
every KV head, plus query and output) and by percent of the copy bandwidth measured in the
same session.

Run explicitly: `pytest benchmarks/test_bench_decode.py [--bench-quick]` (options in conftest.py).
"""

SUITE = "decode"


def test_decode(bench_case, backend, bench_run):
    bench_run(bench_case, backend)
