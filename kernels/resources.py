"""Compile the attention kernels for a GPU architecture, no GPU needed, and report the shared
memory each launch configuration of ``config.py`` asks for: a tile choice that does not fit is
found here, on any machine, instead of as an OutOfResources error on a user's GPU.

    python -m flashcore_kernels.resources [--arch 90]
    python -m flashcore_kernels.resources --loops      # the Hopper prefill kernel's KV loops
    python -m flashcore_kernels.resources --decode-registers   # decode registers by group

Prints one JSON object per (kernel, dtype, head_dim) with ``shared`` bytes and the limit. With
``--loops``, for the Gluon prefill kernel of Hopper (``hopper_prefill.py``): its registers and
spills (ptxas), the register counts its partitions set (setmaxnreg) and, for each innermost loop
of its SASS that runs tensor-core products, the order of products, waits and exp2, which shows
what each consumer issues before it waits. With ``--decode-registers``, the decode kernel's
registers, spills and programs an SM, with and without a decode plan, for several group sizes
and heads, beside the programs an SM that the split rule and the plan's wave count on.
Compilation needs the real Triton compiler, so this runs with TRITON_INTERPRET unset (it
re-executes itself without it when the variable is set).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .checks import FP8_MIN_ARCH
from .config import HOPPER_SHARED_MEMORY, REGISTERS_PER_SM, THREADS_PER_WARP

# Largest dynamic shared memory per block (bytes), by compute capability.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: HOPPER_SHARED_MEMORY}
# Shared memory of one SM, and what the hardware keeps of it for each resident block (bytes).
SM_SHARED = {80: 167936, 86: 102400, 89: 102400, 90: 233472}
BLOCK_RESERVED_SHARED = 1024
DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float8_e4m3fn": "fp8e4nv"}
# (model dtype, KV-cache dtype): 16-bit, float32 (four-byte tiles), bf16 over an fp8 cache.
DTYPE_PAIRS = ((torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
               (torch.bfloat16, torch.float8_e4m3fn))
# The largest head of each tile rule in config.py (rules change above 64 and above 128; within
# one rule, shared memory grows with the padded head size).
HEAD_DIMS = (64, 128, 256)
# The largest group: decode tiles grow with it (prefill tiles do not).
QUERIES_PER_KV = 32
OPTIONAL = ("pieces", "seq_splits", "seq_first_piece", "alibi_slopes", "sinks", "k_scale",
            "v_scale")  # None unless passed as pointers


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


def compile_kernel(kind: str, dtype: torch.dtype, kv_dtype: torch.dtype, head_dim: int,
                   queries_per_kv: int, arch: int, planned: bool = False):
    """The ``kind`` kernel ("prefill", "decode", "decode-split", or "hopper-prefill", the Gluon
    kernel of sm_90) compiled for ``arch`` with the tiles its launcher picks for this shape;
    ``planned``: the decode kernel as a decode plan launches it (its pieces, its own tiles)."""
    from . import config, hopper_prefill
    from .decode import decode_kernel
    from .decode_plan import SPLIT_BITS
    from .prefill import prefill_kernel

    ty = "*" + DTYPES[str(dtype).removeprefix("torch.")]
    kv_ty = "*" + DTYPES[str(kv_dtype).removeprefix("torch.")]
    pointers = dict(out=ty, query=ty, k_cache=kv_ty, v_cache=kv_ty, block_table="*i32",
                    cu_seqlens_q="*i32", seq_lens="*i32", partial_out="*fp32",
                    partial_lse="*fp32")
    if kv_dtype != dtype:  # an fp8 cache comes with its per-tensor scales
        pointers.update(k_scale="*fp32", v_scale="*fp32")
    if kind == "hopper-prefill":
        kernel = hopper_prefill.hopper_prefill_kernel
        constants = hopper_prefill.launch_options(head_dim, queries_per_kv)
        options = {name: constants.pop(name) for name in ("num_warps", "maxnreg")}
        constants.update(PAGE_SIZE=16, CAUSAL=True)
        return _compile(kernel, pointers, constants, arch, options, gluon=True)
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
                                    SHARED_LIMIT[arch], planned=planned)
        if planned:  # the split count comes with each piece, at run time
            pointers.update(pieces="*i64")
        constants.update(NUM_SPLITS=0 if planned else splits, SPLIT_BITS=SPLIT_BITS,
                         LOOKAHEAD=tiles.lookahead,
                         FP16_PRODUCTS=tiles.fp16_products,
                         NUM_KV_HEADS=8)  # Llama-3-8B's; only the program ids depend on it
    constants.update(BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n)
    return _compile(kernel, pointers, constants, arch, tiles.launch_options())


def _compile(kernel, pointers: dict, constants: dict, arch: int, options: dict,
             gluon: bool = False):
    """A Triton (or, ``gluon``, Gluon) kernel compiled for ``arch`` with a real launch's
    specialisation (``_signature``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.experimental.gluon._runtime import GluonASTSource

    sig, constexprs, attrs = _signature(kernel, pointers, constants)
    source = (GluonASTSource if gluon else ASTSource)(fn=kernel, signature=sig,
                                                      constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def shared_bytes(kind: str, dtype: torch.dtype, kv_dtype: torch.dtype, head_dim: int,
                 queries_per_kv: int, arch: int) -> int:
    """Shared memory of ``compile_kernel``'s kernel."""
    return compile_kernel(kind, dtype, kv_dtype, head_dim, queries_per_kv, arch).metadata.shared


def _nvidia_tool(name: str) -> Path:
    import triton
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def registers_and_spills(compiled, arch: int) -> tuple[int, int]:
    """Registers per thread and spilled bytes (stores) that ptxas reports for the kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        log = subprocess.run([_nvidia_tool("ptxas"), f"-arch=sm_{arch}a", "-v", ptx,
                              "-o", Path(tmp) / "kernel.cubin"],
                             capture_output=True, text=True, check=True).stderr
    return (int(re.search(r"Used (\d+) registers", log).group(1)),
            int(re.search(r"(\d+) bytes spill stores", log).group(1)))


# The instructions that show a loop's overlap: tensor-core products, their waits, exp2.
_LOOP_OPS = re.compile(r"HGMMA|WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x\d+|MUFU\.EX2")


def sass(compiled) -> str:
    """The kernel's SASS listing (cuobjdump)."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        return subprocess.run([_nvidia_tool("cuobjdump"), "-sass", cubin], capture_output=True,
                              text=True, check=True).stdout


def product_loops(listing: str) -> list[list[str]]:
    """For each innermost loop of the SASS ``listing`` that runs tensor-core products, its
    products, waits and exp2 in order, a run of one instruction collapsed: ``["HGMMA x16",
    "WARPGROUP.DEPBAR.LE gsb0, 0x1", "MUFU.EX2 x65", "WARPGROUP.DEPBAR.LE gsb0, 0x0"]``. Loops
    that hold another such loop (a warp-specialised program's dispatch, an mbarrier's retry
    path branching back over a whole loop) are left out. A retry path that branches back over
    products outside any loop (the last PV product, behind its wait) is listed like a loop;
    it does not start with the step's products, which is how a caller tells it apart."""
    code = [(int(addr, 16), op)
            for addr, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", listing)]
    index = {addr: i for i, (addr, _) in enumerate(code)}
    loops = []
    for end, (addr, op) in enumerate(code):
        branch = re.search(r"BRA\s.*?0x([0-9a-f]+)", op)
        if not branch or int(branch.group(1), 16) >= addr:
            continue  # only backward branches close a loop
        start = index[int(branch.group(1), 16)]
        runs = []
        for _, body_op in code[start:end + 1]:
            body_op = body_op.split(None, 1)[1] if body_op.startswith("@") else body_op  # predicate
            match = _LOOP_OPS.match(body_op)
            if not match:
                continue
            name = " ".join(match.group(0).split())
            if runs and runs[-1][0] == name:
                runs[-1][1] += 1
            else:
                runs.append([name, 1])
        if any(name == "HGMMA" for name, _ in runs):
            loops.append((start, end, [name if count == 1 else f"{name} x{count}"
                                       for name, count in runs]))
    return [ops for start, end, ops in loops
            if not any(start <= s and e <= end and (s, e) != (start, end) for s, e, _ in loops)]


def loads_between_branches(listing: str) -> list[int]:
    """Global loads (LDG) of the SASS ``listing`` before its first branch or exit, between the
    first and the second, and so on: which loads a program issues together before a check
    decides whether it goes on."""
    counts = [0]
    for op in re.findall(r"/\*[0-9a-f]{4,}\*/\s+([^;]*);", listing):
        op = op.split(None, 1)[1] if op.startswith("@") else op  # (a predicate)
        if op.startswith("LDG"):
            counts[-1] += 1
        elif op.startswith(("BRA", "EXIT")):
            counts.append(0)
    return counts


def compile_planned_merge(dtype: torch.dtype, head_dim: int, arch: int):
    """The split merge (decode.merge_splits_kernel) as a decode plan launches it, compiled for
    ``arch``, at Llama-3-8B's heads and the split rule's count at 8 x 2k (8 splits)."""
    from . import config
    from .decode import merge_splits_kernel

    pointers = dict(out="*" + DTYPES[str(dtype).removeprefix("torch.")], partial_out="*fp32",
                    partial_lse="*fp32", cu_seqlens_q="*i32", seq_splits="*i32",
                    seq_first_piece="*i32")
    rows, heads = config.planned_merge_tile(num_q_heads=32, num_splits=8)
    constants = dict(HEAD_DIM=head_dim, HEAD_DIM_P=config.padded_head_dim(head_dim),
                     NUM_SPLITS=rows, BLOCK_H=heads, ONE_TILE=False)
    return _compile(merge_splits_kernel, pointers, constants, arch, dict(num_warps=4))


def partition_registers(listing: str) -> list[int]:
    """The register counts that warp-specialised partitions set for themselves (setmaxnreg), read
    off the SASS ``listing``."""
    return sorted({int(count, 16) for count in
                   re.findall(r"USETMAXREG\.\w+(?:\.\w+)*\s+(?:UP\d+,\s*)?0x([0-9a-f]+)",
                              listing)})


def programs_per_sm(compiled, registers: int, arch: int) -> dict:
    """How many of the kernel's programs one SM holds, by registers (a warp's are allocated in
    multiples of 256: a thread's count rounded up to 8) and by shared memory."""
    warp_registers = -(-registers // 8) * 8 * THREADS_PER_WARP
    by_shared = SM_SHARED[arch] // (compiled.metadata.shared + BLOCK_RESERVED_SHARED)
    return {"by_registers": REGISTERS_PER_SM // (warp_registers * compiled.metadata.num_warps),
            "by_shared": by_shared}


# The decode kernel's groups (query heads a KV head) and heads that decode_registers_report
# compiles: Llama-3-8B's group and its neighbours, GQA 7:1, Llama-3-70B's 8, MQA, at head 128;
# heads 64 (SmolLM2's group of 3) and 256.
DECODE_SHAPES = ((128, 1), (128, 2), (128, 4), (128, 7), (128, 8), (128, 16), (128, 32),
                 (64, 3), (64, 4), (256, 2))


def decode_registers_report(arch: int = 90, shapes=DECODE_SHAPES,
                            cache_dtype: torch.dtype = torch.bfloat16):
    """For each (head size, group) of ``shapes``, bf16 queries over a ``cache_dtype`` cache, at
    one split and at several, the decode kernel without a plan and with one: registers, spills,
    and programs an SM, beside the count the split rule and the plan's wave assume
    (``config.decode_programs_per_sm``)."""
    from . import config
    for head_dim, queries_per_kv in shapes:
        for kind in ("decode", "decode-split"):
            for planned in (False, True):
                compiled = compile_kernel(kind, torch.bfloat16, cache_dtype, head_dim,
                                          queries_per_kv, arch, planned)
                registers, spills = registers_and_spills(compiled, arch)
                yield {"kernel": kind, "planned": planned, "head_dim": head_dim,
                       "queries_per_kv": queries_per_kv, "registers": registers,
                       "spill_bytes": spills, "shared": compiled.metadata.shared,
                       **programs_per_sm(compiled, registers, arch),
                       "wave_counts": config.decode_programs_per_sm(
                           queries_per_kv, head_dim, cache_dtype, SHARED_LIMIT[arch])}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def report(arch: int):
    for kind in ("prefill", "decode", "decode-split"):
        for dtype, kv_dtype in DTYPE_PAIRS:
            if kv_dtype == torch.float8_e4m3fn and arch < FP8_MIN_ARCH:
                continue  # Triton has no e4m3 before Ada
            for head_dim in HEAD_DIMS:
                shared = shared_bytes(kind, dtype, kv_dtype, head_dim, QUERIES_PER_KV, arch)
                yield {"kernel": kind, "dtype": _name(dtype), "kv_cache": _name(kv_dtype),
                       "head_dim": head_dim, "arch": arch, "shared": shared,
                       "limit": SHARED_LIMIT[arch]}
    if arch == 90:
        for dtype, head_dim in _hopper_prefill_cases():
            shared = shared_bytes("hopper-prefill", dtype, dtype, head_dim, QUERIES_PER_KV, arch)
            yield {"kernel": "hopper-prefill", "dtype": _name(dtype), "kv_cache": _name(dtype),
                   "head_dim": head_dim, "arch": arch, "shared": shared,
                   "limit": SHARED_LIMIT[arch]}


def _hopper_prefill_cases():
    from .hopper_prefill import HEAD_DIMS as HOPPER_HEAD_DIMS
    return [(dtype, head_dim) for dtype in (torch.float16, torch.bfloat16)
            for head_dim in HOPPER_HEAD_DIMS]


def loops_report():
    """Registers, spills and product loops of the Hopper prefill kernel, causal, for a group of
    one and of four query heads per KV head."""
    for dtype, head_dim in _hopper_prefill_cases():
        for queries_per_kv in (1, 4):
            compiled = compile_kernel("hopper-prefill", dtype, dtype, head_dim, queries_per_kv, 90)
            registers, spills = registers_and_spills(compiled, 90)
            listing = sass(compiled)
            yield {"kernel": "hopper-prefill", "dtype": _name(dtype), "head_dim": head_dim,
                   "queries_per_kv": queries_per_kv, "registers": registers,
                   "spill_bytes": spills, "partition_registers": partition_registers(listing),
                   "loops": product_loops(listing)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, choices=sorted(SHARED_LIMIT))
    p.add_argument("--loops", action="store_true",
                   help="the Hopper prefill kernel's registers, spills and KV loops (sm_90)")
    p.add_argument("--decode-registers", action="store_true",
                   help="the decode kernel's registers and programs an SM, with and without a "
                        "plan, by group size")
    args = p.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.run([sys.executable, "-m", __spec__.name, *sys.argv[1:]], env=env).returncode
    if args.loops:
        rows = loops_report()
    elif args.decode_registers:
        rows = decode_registers_report(args.arch)
    else:
        rows = report(args.arch)
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
