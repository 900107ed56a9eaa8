"""The offline generation script (README's main job) end to end on a GPU: a fresh process, as a
user runs it, with FLASHCORE chosen by its default (the environment switch), on a small
dummy-weight geometry so that it needs no model download."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
pytest.importorskip("vllm")

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "generate.py"


def test_generate_script_runs_flashcore(tmp_path):
    result = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_ATTENTION_BACKEND", "TRITON_INTERPRET")}
    env["FLASHCORE_BENCH_CACHE"] = str(tmp_path / "models")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--geometry", "smollm2-135m", "--num-layers", "2",
         "--synthetic", "8", "--input-len", "40", "--output-len", "8", "--json", str(result)],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    r = json.loads(result.read_text())
    assert r["configured_backend"] == "CUSTOM", r  # FLASHCORE is vLLM's CUSTOM member
    assert (r["num_requests"], r["input_tokens"], r["output_tokens"]) == (8, 320, 64), r
