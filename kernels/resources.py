"""Compile the attention kernels for a GPU architecture, no GPU needed, and report the shared
memory each launch configuration of ``config.py`` asks for: a tile choice that does not fit is
found here, on any machine, instead of as an OutOfResources error on a user's GPU.

    python -m flashcore_kernels.resources [--arch 90]

Prints one JSON object per (kernel, dtype, head_dim) with ``shared`` bytes and the limit.
Compilation needs the real Triton compiler, so this runs with TRITON_INTERPRET unset (it
re-executes itself without it when the variable is set).
"""

import argparse
import json
import os
import subprocess
import sys

import torch

from .checks import FP8_MIN_ARCH
from .config import HOPPER_SHARED_MEMORY

# Largest dynamic shared memory per block (bytes), by compute capability.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: HOPPER_SHARED_MEMORY}
DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float8_e4m3fn": "fp8e4nv"}
# (model dtype, KV-cache dtype): 16-bit, float32 (four-byte tiles), bf16 over an fp8 cache.
DTYPE_PAIRS = ((torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
               (torch.bfloat16, torch.float8_e4m3fn))
# The largest head of each tile rule in config.py (rules change above 64 and above 128; within
# one rule, shared memory grows with the padded head size).
HEAD_DIMS = (64, 128, 256)
# The largest group: decode tiles grow with it (prefill tiles do not).
QUERIES_PER_KV = 32
OPTIONAL = ("alibi_slopes", "sinks", "k_scale", "v_scale")  # None unless passed as pointers


def _signature(kernel, pointers: dict, constants: dict):
    """Argument types, constants, and the specialisation a real launch gets: pointers and
    strides divisible by 16 (as every supported head size makes them), which is what lets the
    compiler pipeline K/V loads through shared memory, so the most shared memory it can ask."""
    sig, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in pointers:
            sig[name] = pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in OPTIONAL or name in constants:
            sig[name] = "constexpr"
            constexprs[(i,)] = constants.get(name)
        elif name == "qk_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("stride_") and name not in kernel.do_not_specialize:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, constexprs, attrs


def shared_bytes(kind: str, dtype: torch.dtype, kv_dtype: torch.dtype, head_dim: int,
                 queries_per_kv: int, arch: int) -> int:
    """Shared memory of the ``kind`` kernel ("prefill", "decode", "decode-split") compiled for
    ``arch`` with the tiles config.py picks for this shape."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import config
    from .decode import decode_kernel
    from .prefill import prefill_kernel

    ty = "*" + DTYPES[str(dtype).removeprefix("torch.")]
    kv_ty = "*" + DTYPES[str(kv_dtype).removeprefix("torch.")]
    pointers = dict(out=ty, query=ty, k_cache=kv_ty, v_cache=kv_ty, block_table="*i32",
                    cu_seqlens_q="*i32", seq_lens="*i32", partial_out="*fp32",
                    partial_lse="*fp32")
    if kv_dtype != dtype:  # an fp8 cache comes with its per-tensor scales
        pointers.update(k_scale="*fp32", v_scale="*fp32")
    constants = dict(QUERIES_PER_KV=queries_per_kv, PAGE_SIZE=16, HEAD_DIM=head_dim,
                     HEAD_DIM_P=config.padded_head_dim(head_dim), SLIDING_WINDOW=0,
                     SOFT_CAP=0.0, FP32_DOT=dtype == torch.float32)
    if kind == "prefill":
        kernel = prefill_kernel
        tiles = config.prefill_tiles(head_dim, queries_per_kv, dtype, SHARED_LIMIT[arch])
        constants.update(BLOCK_Q=tiles.block_m // queries_per_kv, CAUSAL=True,
                         LOOKAHEAD=tiles.lookahead)
    else:  # "decode" (whole sequences) or "decode-split" (split-KV, other pipeline depth)
        kernel = decode_kernel
        splits = 8 if kind == "decode-split" else 1
        tiles = config.decode_tiles(head_dim, queries_per_kv, splits, dtype, kv_dtype,
                                    SHARED_LIMIT[arch])
        constants.update(NUM_SPLITS=splits, LOOKAHEAD=tiles.lookahead)
    constants.update(BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n)
    sig, constexprs, attrs = _signature(kernel, pointers, constants)
    compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32),
                              options=dict(num_warps=tiles.num_warps, num_stages=tiles.num_stages))
    return compiled.metadata.shared


def report(arch: int):
    name = lambda t: str(t).removeprefix("torch.")
    for kind in ("prefill", "decode", "decode-split"):
        for dtype, kv_dtype in DTYPE_PAIRS:
            if kv_dtype == torch.float8_e4m3fn and arch < FP8_MIN_ARCH:
                continue  # Triton has no e4m3 before Ada
            for head_dim in HEAD_DIMS:
                shared = shared_bytes(kind, dtype, kv_dtype, head_dim, QUERIES_PER_KV, arch)
                yield {"kernel": kind, "dtype": name(dtype), "kv_cache": name(kv_dtype),
                       "head_dim": head_dim, "arch": arch, "shared": shared,
                       "limit": SHARED_LIMIT[arch]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, choices=sorted(SHARED_LIMIT))
    args = p.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.run([sys.executable, "-m", __spec__.name, *sys.argv[1:]], env=env).returncode
    for row in report(args.arch):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
