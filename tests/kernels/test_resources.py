"""Every launch configuration in config.py compiles for the GPU it is tuned for (Hopper, sm_90)
and fits its shared memory: the kernels are compiled for that architecture, no GPU needed, so a
tile change that cannot launch fails here, in CI, rather than on a user's GPU."""

import json
import os
import subprocess
import sys


def test_tiles_fit_hopper_shared_memory():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # real compiler
    proc = subprocess.run([sys.executable, "-m", "flashcore_kernels.resources", "--arch", "90"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    # prefill, decode, decode-split x bf16, fp32, bf16 over fp8 x the head sizes of each tile rule
    assert len(rows) == 27, rows  # 3 kernels x 3 dtype pairs x 3 head sizes
    too_big = [r for r in rows if r["shared"] > r["limit"]]
    assert not too_big, too_big
