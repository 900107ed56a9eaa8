#!/usr/bin/env bash
# Install FlashCore with vLLM 0.26.0 and the test tools into .venv (created if missing), then run
# the whole test suite. Without a GPU, kernels run under Triton's CPU interpreter and GPU-only
# tests are skipped. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[vllm,test]"
set +e
.venv/bin/python -m pytest -q -ra "$@"
status=$?
# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
[ "$status" -eq 5 ] && echo "pytest collected no tests" >&2
exit "$status"
