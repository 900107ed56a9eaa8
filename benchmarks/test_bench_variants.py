"""Decode with the layer options models use: an fp8 (e4m3) KV cache (8x8192, 64x8192) and a 4k
sliding window over 32k contexts (8x32768, 64x32768), Llama-3-8B heads, bf16 queries, page 16.
Judged by GB/s of the bytes a perfect kernel moves: one byte per fp8 KV element, and only the
KV tokens inside the window. Backends whose class declares no support are skipped with the reason.

Run explicitly: `pytest benchmarks/test_bench_variants.py [--bench-quick]` (options in conftest.py).
"""

SUITE = "variants"


def test_variants(bench_case, backend, bench_run):
    bench_run(bench_case, backend)
