"""Compile, without a GPU, the KV loop a Gluon prefill kernel would run on Hopper, and show what
the hardware would execute: shared memory, registers, spills, ptxas's wgmma warnings and the order
of matrix products, waits and exp2 in the loop's SASS.

    python benchmarks/gluon_prefill_probe.py [BLOCK_M BLOCK_N STAGES WARPS]   (default 128 128 3 8)

The Triton kernels in flashcore_kernels cannot overlap the softmax with the tensor cores: Triton
3.6 waits for each QK^T product right after issuing it (benchmarks/NOTES.md). Gluon, Triton's
lower-level dialect, leaves the waits to the kernel. The loop below uses FA3's order within one
program: issue S_j = Q K_j^T and O += P_{j-1} V_{j-1}, wait for S_j only, compute the softmax of
tile j while the second product runs, then wait for it and rescale O. K/V pages are gathered with
cp.async into a ring of STAGES shared-memory buffers.

This is a probe, not a kernel of the package: one sequence, one head, no causal mask, lengths a
multiple of BLOCK_N, and it has not run on a GPU.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, warpgroup_mma, warpgroup_mma_wait)

HEAD_DIM, PAGE_SIZE = 128, 16


@gluon.jit
def copy_kv_tile(k_ring, v_ring, stage, k_cache, v_cache, block_table, tile, stride_page,
                 stride_slot, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                 PAGE_SIZE: gl.constexpr, layout: gl.constexpr):
    """Start the copy of KV tile ``tile`` into ring slot ``stage``, one commit group."""
    offs_n = tile * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, layout))
    page = gl.load(block_table + offs_n // PAGE_SIZE)
    rows = page.to(gl.int64) * stride_page + (offs_n % PAGE_SIZE).to(gl.int64) * stride_slot
    offsets = rows[:, None] + offs_d[None, :]
    async_copy.async_copy_global_to_shared(k_ring.index(stage), k_cache + offsets)
    async_copy.async_copy_global_to_shared(v_ring.index(stage), v_cache + offsets)
    async_copy.commit_group()


@gluon.jit
def attend_overlapped(out, query, k_cache, v_cache, block_table, num_tiles, qk_scale, stride_page,
                      stride_slot, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                      HEAD_DIM: gl.constexpr, PAGE_SIZE: gl.constexpr, STAGES: gl.constexpr,
                      num_warps: gl.constexpr):
    copy_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16)

    q_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_M, HEAD_DIM], smem_layout)
    k_ring = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    v_ring = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    # The first step multiplies a zero P by the last slot's V: zero it, not stale bits (0 * NaN).
    v_ring.index(STAGES - 1).store(gl.zeros([BLOCK_N, HEAD_DIM], gl.bfloat16, copy_layout))

    offs_m = gl.arange(0, BLOCK_M, gl.SliceLayout(1, copy_layout))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, copy_layout))
    async_copy.async_copy_global_to_shared(q_smem, query + offs_m[:, None] * HEAD_DIM + offs_d[None, :])
    async_copy.commit_group()
    for tile in gl.static_range(STAGES - 1):
        copy_kv_tile(k_ring, v_ring, tile, k_cache, v_cache, block_table, tile, stride_page,
                     stride_slot, BLOCK_N, HEAD_DIM, PAGE_SIZE, copy_layout)

    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([BLOCK_M], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    p = gl.zeros([BLOCK_M, BLOCK_N], gl.bfloat16, p_layout)  # P_{-1}: no weight
    for j in range(num_tiles):
        async_copy.wait_group(STAGES - 2)  # tile j has landed (tiles up to j + STAGES - 2 issued)
        fence_async_shared()
        stage = j % STAGES
        prev = (j + STAGES - 1) % STAGES
        # S_j goes into the registers of S_{j-1}, which the last softmax has read: no other
        # instruction defines an in-flight product's registers, so ptxas keeps wgmma async.
        s_token = warpgroup_mma(q_smem, k_ring.index(stage).permute((1, 0)), s, use_acc=False,
                                is_async=True)
        acc_token = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s_token, ))
        # The softmax of tile j, under P_{j-1} V_{j-1}.
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        p_f32 = gl.exp2(s * qk_scale - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        l_i = l_i * alpha + gl.sum(p_f32, 1)
        p = gl.convert_layout(p_f32.to(gl.bfloat16), p_layout)
        m_i = m_new
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc_token, ))
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        # Both products are done with slot ``prev``: refill it (past the end, the last tile again).
        copy_kv_tile(k_ring, v_ring, prev, k_cache, v_cache, block_table,
                     gl.minimum(j + STAGES - 1, num_tiles - 1), stride_page, stride_slot, BLOCK_N,
                     HEAD_DIM, PAGE_SIZE, copy_layout)
    acc = warpgroup_mma(p, v_ring.index((num_tiles - 1) % STAGES), acc)
    async_copy.wait_group(0)
    acc = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
    offs_om = gl.arange(0, BLOCK_M, gl.SliceLayout(1, o_layout))
    offs_od = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, o_layout))
    gl.store(out + offs_om[:, None] * HEAD_DIM + offs_od[None, :], acc.to(gl.bfloat16))


def compile_for_sm90(block_m: int, block_n: int, stages: int, warps: int):
    signature = dict(out="*bf16", query="*bf16", k_cache="*bf16", v_cache="*bf16",
                     block_table="*i32", num_tiles="i32", qk_scale="fp32", stride_page="i32",
                     stride_slot="i32", BLOCK_M="constexpr", BLOCK_N="constexpr",
                     HEAD_DIM="constexpr", PAGE_SIZE="constexpr", STAGES="constexpr",
                     num_warps="constexpr")
    constants = dict(BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=HEAD_DIM, PAGE_SIZE=PAGE_SIZE,
                     STAGES=stages, num_warps=warps)
    names = list(signature)
    # What the launcher would see: 16-byte aligned pointers and strides (as resources.py assumes).
    aligned = ("out", "query", "k_cache", "v_cache", "block_table", "stride_page", "stride_slot")
    attrs = {(names.index(n), ): [["tt.divisibility", 16]] for n in aligned}
    source = gluon._runtime.GluonASTSource(fn=attend_overlapped, signature=signature,
                                           constexprs=constants, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))


def loop_order(sass: str) -> str:
    """The products, waits and exp2 of the innermost backward-branching loop, in order."""
    ins = [(int(a, 16), text) for a, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    index = {a: i for i, (a, _) in enumerate(ins)}
    for i, (a, text) in enumerate(ins):
        target = re.search(r"BRA\s.*?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < a:
            runs = []
            for _, op in ins[index[int(target.group(1), 16)]:i + 1]:
                op = op.split(None, 1)[1] if op.startswith("@") else op
                if re.match(r"(HGMMA|WARPGROUP\.DEPBAR|MUFU\.EX2|LDGSTS|DEPBAR|BAR\.SYNC)", op):
                    name = op if "DEPBAR" in op else op.split()[0]
                    if runs and runs[-1][0] == name:
                        runs[-1][1] += 1
                    else:
                        runs.append([name, 1])
            return " | ".join(f"{name} x{n}" for name, n in runs)
    return "(no loop found)"


def main():
    block_m, block_n, stages, warps = (int(v) for v in (sys.argv[1:5] or (128, 128, 3, 8)))
    compiled = compile_for_sm90(block_m, block_n, stages, warps)
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "gluon_prefill_probe"
    work.mkdir(exist_ok=True)
    (work / "k.ptx").write_text(compiled.asm["ptx"])
    (work / "k.cubin").write_bytes(compiled.asm["cubin"])
    ptxas = subprocess.run([tools / "ptxas", "-arch=sm_90a", "-v", work / "k.ptx", "-o", work / "x.cubin"],
                           capture_output=True, text=True).stderr
    sass = subprocess.run([tools / "cuobjdump", "-sass", work / "k.cubin"], capture_output=True,
                          text=True).stdout
    print(f"BLOCK_M {block_m} BLOCK_N {block_n} stages {stages} warps {warps}: "
          f"{compiled.metadata.shared} bytes of shared memory")
    print("\n".join(line for line in ptxas.splitlines() if re.search(r"C75\d\d|Used|spill", line)))
    print("loop:", loop_order(sass))


if __name__ == "__main__":
    main()
