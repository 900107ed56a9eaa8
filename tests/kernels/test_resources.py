"""Every launch configuration in config.py compiles for the GPU it is tuned for (Hopper, sm_90),
and the compact ones for GPUs with less shared memory (sm_86), and fits that shared memory. The
kernels are compiled for the architecture with no GPU needed, so a tile change that cannot launch
fails here, in CI, rather than on a user's GPU."""

import json
import os
import subprocess
import sys

import pytest


# prefill, decode, decode-split x bf16, fp32 (and bf16 over fp8 where the architecture has
# fp8) x the head sizes of each tile rule; on sm_90 also the Gluon prefill kernel, fp16 and bf16
# at heads 64, 128 and 256
@pytest.mark.parametrize("arch, configs", [(90, 3 * 3 * 3 + 2 * 3), (86, 3 * 2 * 3)])
def test_tiles_fit_shared_memory(arch, configs):
    """Hopper's tiles, and the compact ones of GPUs with 99 KB of shared memory per block."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # real compiler
    proc = subprocess.run([sys.executable, "-m", "flashcore_kernels.resources", "--arch", str(arch)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == configs, rows
    too_big = [r for r in rows if r["shared"] > r["limit"]]
    assert not too_big, too_big
