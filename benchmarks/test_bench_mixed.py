"""Mixed batches as vLLM's scheduler builds them with chunked prefill: decodes first, then
prefill chunks over a cached prefix (e.g. 64 decodes at 2k context + a 2k chunk with 4k
cached). Judged by time per layer call; GB/s and TFLOP/s are in extra_info.

Run explicitly: `pytest benchmarks/test_bench_mixed.py [--bench-quick]` (options in conftest.py).
"""

SUITE = "mixed"


def test_mixed(bench_case, backend, bench_run):
    bench_run(bench_case, backend)
