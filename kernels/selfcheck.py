"""Run the kernels on a small mixed batch against the float64 reference and print the errors.

    python -m flashcore_kernels.selfcheck

On a machine without a CUDA GPU the kernels run on the CPU under Triton's interpreter: the check
re-runs itself with TRITON_INTERPRET=1 (it must be set before any kernel is defined), and says so.
"""

import os
import subprocess
import sys
import time

import torch

from . import paged_attention, write_kv_cache
from .reference import TOLERANCE, paged_attention_reference

# (queries this step, tokens in all): decodes, a short extend, a chunked prefill, a fresh prefill.
BATCH = [(1, 77), (1, 300), (1, 5), (4, 64), (48, 160), (96, 96)]


def run_case(dtype, device, num_q_heads=8, num_kv_heads=2, head_dim=128, page_size=16):
    gen = torch.Generator().manual_seed(0)
    q_lens, kv_lens = [q for q, _ in BATCH], [kv for _, kv in BATCH]
    pages = [-(-kv // page_size) for kv in kv_lens]
    num_pages = sum(pages) + 1
    perm = (torch.randperm(num_pages - 1, generator=gen) + 1).tolist()
    block_table = torch.zeros(len(BATCH), max(pages), dtype=torch.int32)
    slots = []
    for i, (n, kv) in enumerate(zip(pages, kv_lens)):
        block_table[i, :n] = torch.tensor(perm[:n])
        perm = perm[n:]
        pos = torch.arange(kv)
        slots.append(block_table[i].long()[pos // page_size] * page_size + pos % page_size)
    # Every token's K/V goes in through the cache-write kernel; the cache starts as NaN.
    kv_cache = torch.full((num_pages, page_size, num_kv_heads, 2 * head_dim), float("nan"),
                          dtype=dtype, device=device).permute(0, 2, 1, 3)
    total = sum(kv_lens)
    key, value = (torch.randn(total, num_kv_heads, head_dim, generator=gen).to(dtype).to(device)
                  for _ in range(2))
    write_kv_cache(key, value, kv_cache, torch.cat(slots).to(device))
    query = torch.randn(sum(q_lens), num_q_heads, head_dim, generator=gen).to(dtype).to(device)
    cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32).to(device)
    seq_lens = torch.tensor(kv_lens, dtype=torch.int32, device=device)
    args = (query, kv_cache, cu, seq_lens, block_table.to(device))
    start = time.perf_counter()
    out = paged_attention(*args, max_query_len=max(q_lens))
    elapsed = time.perf_counter() - start
    err = (out.double() - paged_attention_reference(*args)).abs().max().item()
    return err, elapsed


def main() -> int:
    gpu = torch.cuda.is_available()
    if not gpu and os.environ.get("TRITON_INTERPRET") != "1":
        env = dict(os.environ, TRITON_INTERPRET="1")
        return subprocess.run([sys.executable, "-m", "flashcore_kernels.selfcheck"], env=env).returncode
    device = torch.device("cuda" if gpu else "cpu")
    where = torch.cuda.get_device_name() if gpu else "CPU, Triton interpreter (no CUDA GPU found)"
    print(f"FlashCore kernel self-check on {where}")
    print(f"batch (query tokens, kv tokens) per sequence: {BATCH}; 8 query / 2 KV heads, head 128, page 16")
    dtypes = [torch.float16, torch.bfloat16] + ([] if gpu else [torch.float32])
    failed = False
    print(f"{'dtype':10} {'max-abs error':>14} {'tolerance':>10} {'time':>9}  result")
    for dtype in dtypes:
        err, elapsed = run_case(dtype, device)
        ok = err <= TOLERANCE[dtype]
        failed |= not ok
        print(f"{str(dtype).removeprefix('torch.'):10} {err:14.2e} {TOLERANCE[dtype]:10.0e} "
              f"{elapsed:8.2f}s  {'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
