"""Host time of one ``paged_attention`` and one ``write_kv_cache`` call up to their kernel
launches, on any machine.

    python benchmarks/host_overhead.py [--calls 5000] [--repeats 5]

vLLM runs attention outside CUDA graphs for mixed batches (piecewise graphs) and in eager mode,
so every layer of such a step pays the launcher's Python: checks, tile and split choices, grid.
Here the launches themselves are stubbed out (what Triton's own launch path costs needs a GPU),
the tensors are CPU tensors shaped like a Llama-3-8B step (64 sequences, 32/8 heads, head 128),
and the time is the mean over ``--calls`` calls, the lowest of ``--repeats`` such means (the
others carry whatever else the machine was doing), for a decode-only batch and a mixed one.
"""

import argparse
import importlib
import time
from unittest import mock

import torch

import flashcore_kernels as fk
from flashcore_kernels import config

launcher = importlib.import_module("flashcore_kernels.paged_attention")
cache_writer = importlib.import_module("flashcore_kernels.cache_write")


class NoLaunch:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def step_inputs(num_seqs=64, num_q_heads=32, num_kv_heads=8, head_dim=128, page_size=16,
                pages_per_seq=64):
    num_pages = num_seqs * pages_per_seq + 1
    query = torch.randn(num_seqs, num_q_heads, head_dim, dtype=torch.bfloat16)
    cache = torch.randn(num_pages, page_size, num_kv_heads, 2 * head_dim,
                        dtype=torch.bfloat16).permute(0, 2, 1, 3)  # vLLM's NHD layout
    cu_seqlens_q = torch.arange(num_seqs + 1, dtype=torch.int32)
    seq_lens = torch.full((num_seqs,), page_size * pages_per_seq, dtype=torch.int32)
    block_table = torch.arange(1, num_pages, dtype=torch.int32).view(num_seqs, pages_per_seq)
    workspace = fk.SplitKVWorkspace.allocate(256, num_q_heads, num_kv_heads, head_dim,
                                             torch.bfloat16, torch.device("cpu"))
    return (query, cache, cu_seqlens_q, seq_lens, block_table), workspace


def mean_us(call, calls, repeats):
    for _ in range(calls // 10):  # warm caches (lru_cache'd device queries)
        call()
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return min(means)


def attention_call(args, workspace, max_query_len):
    kwargs = dict(max_query_len=max_query_len, out=torch.empty_like(args[0]), workspace=workspace,
                  check_lengths=False, softmax_scale=0.088)
    return lambda: fk.paged_attention(*args, **kwargs)


def cache_write_call(args):
    query, cache = args[0], args[1]
    num_tokens, num_kv_heads, head_dim = query.shape[0], cache.shape[1], query.shape[2]
    key = torch.randn(num_tokens, num_kv_heads, head_dim, dtype=query.dtype)
    slots = torch.arange(num_tokens, dtype=torch.int64)
    return lambda: fk.write_kv_cache(key, key, cache, slots)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    options = p.parse_args()
    args, workspace = step_inputs()
    stubs = {name: NoLaunch() for name in ("decode_kernel", "merge_splits_kernel", "prefill_kernel")}
    # The GPU launch path, not the interpreter's (config picks the interpreter's tiles there).
    cases = (("paged_attention, decode-only batch", attention_call(args, workspace, 1)),
             ("paged_attention, mixed batch", attention_call(args, workspace, 5)),
             ("write_kv_cache", cache_write_call(args)))
    with (mock.patch.multiple(launcher, **stubs),
          mock.patch.object(cache_writer, "write_kv_cache_kernel", NoLaunch()),
          mock.patch.object(config, "interpreting", lambda: False)):
        for label, call in cases:
            print(f"{label}: {mean_us(call, options.calls, options.repeats):.1f} us a call "
                  "before its launches")


if __name__ == "__main__":
    main()
