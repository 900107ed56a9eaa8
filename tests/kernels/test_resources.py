"""Every launch configuration in config.py compiles for the GPU it is tuned for (Hopper, sm_90),
and the compact ones for GPUs with less shared memory (sm_86), and fits that shared memory. The
kernels are compiled for the architecture with no GPU needed, so a tile change that cannot launch
fails here, in CI, rather than on a user's GPU. The decode kernel's registers are checked the
same way where a rule sets or counts on them."""

import json
import os
import subprocess
import sys

import pytest


def with_real_compiler(*argv: str) -> str:
    """The output of ``python *argv`` run with Triton's compiler, not its interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


# prefill, decode, decode-split x bf16, fp32 (and bf16 over fp8 where the architecture has
# fp8) x the head sizes of each tile rule; on sm_90 also the Gluon prefill kernel, fp16 and bf16
# at heads 64, 128 and 256
@pytest.mark.parametrize("arch, configs", [(90, 3 * 3 * 3 + 2 * 3), (86, 3 * 2 * 3)])
def test_tiles_fit_shared_memory(arch, configs):
    """Hopper's tiles, and the compact ones of GPUs with 99 KB of shared memory per block."""
    stdout = with_real_compiler("-m", "flashcore_kernels.resources", "--arch", str(arch))
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == configs, rows
    too_big = [r for r in rows if r["shared"] > r["limit"]]
    assert not too_big, too_big


def decode_kernels_fitting_their_wave(shapes, cache_dtype: str) -> list[dict]:
    """``resources.decode_registers_report`` at (head size, group) ``shapes`` over a cache of
    torch's ``cache_dtype``, each variant checked to compile without spills and to fit the
    programs an SM that the split rule and the plan's wave count on."""
    stdout = with_real_compiler(
        "-c", "import json, torch; from flashcore_kernels import resources\n"
        f"for row in resources.decode_registers_report(90, {shapes}, torch.{cache_dtype}):\n"
        "    print(json.dumps(row))")
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert all(r["registers"] > 0 and r["spill_bytes"] == 0 for r in rows), rows
    assert all(r["by_registers"] >= r["wave_counts"] for r in rows), rows
    return rows


def test_decode_kernels_fit_the_programs_an_sm_the_wave_counts_on():
    """``--decode-registers``: the decode kernel with and without a plan, at one split and at
    several, for GQA 7:1 and Llama-3-70B's group of 8 at head 128, where ptxas gave the planned
    kernel 158 and 148 registers (three programs an SM) until its tiles held it to 128, for a
    group of 2 at head 256 (141-157 registers until its tiles held every variant to 128), and at
    head 64 (groups of 1 and 3), where the wave counts six (its 2-warp tile takes 114-128
    registers, eight an SM). Every variant compiles without spills and fits the programs an SM
    that the split rule and the plan's wave count on."""
    shapes = ((128, 7), (128, 8), (256, 2), (64, 1), (64, 3))
    rows = decode_kernels_fitting_their_wave(shapes, "bfloat16")
    variants = [("decode", False), ("decode", True), ("decode-split", False),
                ("decode-split", True)]
    assert [(r["kernel"], r["planned"]) for r in rows] == variants * len(shapes)
    assert {r["wave_counts"] for r in rows if r["head_dim"] == 64} == {6}


def test_fp8_decode_kernels_at_head_64_fit_the_programs_an_sm_the_wave_counts_on():
    """At head 64 an fp8 cache took head 128's fp8 tiles, and the planned whole-sequence kernel
    194-202 registers: two programs an SM where the wave counts four. Its own tiles hold every
    variant to 128, without spills."""
    rows = decode_kernels_fitting_their_wave(((64, 1), (64, 3)), "float8_e4m3fn")
    assert len(rows) == 8 and {r["wave_counts"] for r in rows} == {4}, rows


def test_planned_fp8_decode_kernel_holds_its_register_cap_without_spills():
    """The planned fp8 whole-sequence kernel, left to ptxas, took 255 registers; its tile holds
    it to 208 (config.decode_tiles), which must not cost spills."""
    stdout = with_real_compiler(
        "-c", "import torch; from flashcore_kernels import resources\n"
        "k = resources.compile_kernel('decode', torch.bfloat16, torch.float8_e4m3fn, 128, 4, 90,"
        " planned=True)\n"
        "print(*resources.registers_and_spills(k, 90))")
    registers, spills = map(int, stdout.split())
    assert registers <= 208 and spills == 0, (registers, spills)


def test_fp8_decode_kernels_at_head_256_compile_without_spills():
    """Head 256's 16-bit tile is held to 128 registers; held the same way, the fp8 kernels
    spilled 76-128 bytes, so an fp8 cache there keeps a tile ptxas compiles without spills."""
    stdout = with_real_compiler(
        "-c", "import torch; from flashcore_kernels import resources\n"
        "for kind in ('decode', 'decode-split'):\n"
        "    for planned in (False, True):\n"
        "        k = resources.compile_kernel(kind, torch.bfloat16, torch.float8_e4m3fn, 256, 2,"
        " 90, planned=planned)\n"
        "        print(*resources.registers_and_spills(k, 90))")
    rows = [tuple(map(int, line.split())) for line in stdout.splitlines()]
    assert len(rows) == 4 and all(spills == 0 for _, spills in rows), rows


def test_decode_checks_wait_for_the_loads_after_them_to_be_issued():
    """A program's loads before its first KV copy (or, in the merge, its first partial) are its
    fixed cost, one round trip after another. The decode kernel's check that its sequence is a
    decode must go out with the sequence length's load, and the planned merge's check of the
    split count with the first partial row's: the compiler had moved each load to after its
    check, a round trip more (H200, 8 x 2k 26.0 -> 25.6 us, tiles-h200/ab_decode.txt run 2)."""
    stdout = with_real_compiler(
        "-c", "import torch; from flashcore_kernels import resources as r\n"
        "for planned in (False, True):\n"
        "    for kind in ('decode', 'decode-split'):\n"
        "        k = r.compile_kernel(kind, torch.bfloat16, torch.bfloat16, 128, 4, 90, planned)\n"
        "        print(*r.loads_between_branches(r.sass(k))[:2])\n"
        "print(*r.loads_between_branches(r.sass(r.compile_planned_merge(torch.bfloat16, 128,"
        " 90)))[:1])")
    rows = [list(map(int, line.split())) for line in stdout.splitlines()]
    unplanned, planned, merge = rows[:2], rows[2:4], rows[4]
    # token, next token and length before the check; planned, after the two slots' loads
    assert all(counts[0] >= 3 for counts in unplanned), rows
    assert all(counts[0] == 2 and counts[1] >= 3 for counts in planned), rows
    assert merge[0] >= 2, rows  # the split count and the first partial row
