"""tests/e2e/engine_job.py: the functions an engine job runs on the model reach tensor-parallel
workers.

The engine job runs as a script, so its functions cannot be imported by name in vLLM's worker
processes. vLLM 0.26's multiprocessing executor sends a collective_rpc call to its workers as
``pickle.dumps((cloudpickle.dumps(method), args, kwargs, rank))``
(``MultiprocExecutor.collective_rpc``), and each worker runs it with
``vllm.v1.serial_utils.run_method``. This does the same across two processes, with the script
loaded under a name no other process can import.
"""

import pickle
import runpy
import subprocess
import sys
import textwrap

import pytest

cloudpickle = pytest.importorskip("cloudpickle")
pytest.importorskip("vllm")

from tests.e2e.engines import ENGINE_JOB  # noqa: E402

# The worker side: no module of the project is imported before the call arrives.
WORKER = textwrap.dedent("""
    import pickle, sys
    import torch
    from vllm.v1.serial_utils import run_method

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.impl = type("FlashCoreImpl", (), {"num_heads": 16, "num_kv_heads": 4})()

    class Worker:  # what run_method hands the method: an object with get_model()
        def get_model(self):
            return torch.nn.Sequential(Attention(), Attention())

    method, args, kwargs, rank = pickle.loads(sys.stdin.buffer.read())
    rows = run_method(Worker(), method, args, kwargs)
    print(sorted({(r["impl"], r["num_heads"], r["num_kv_heads"]) for r in rows}), len(rows))
""")


def test_a_model_rpc_runs_in_a_worker_that_cannot_import_the_script():
    script = runpy.run_path(str(ENGINE_JOB), run_name="engine_job_script")
    # What apply_model(attention_layers) put on the workers' queue could not be sent at all:
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(script["attention_layers"])
    method = script["model_rpc"](script["attention_layers"])
    message = pickle.dumps((cloudpickle.dumps(method), (), {}, None))
    done = subprocess.run([sys.executable, "-c", WORKER], input=message, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    # (vLLM logs to stdout on import: the answer is the last line)
    assert done.stdout.decode().splitlines()[-1] == "[('FlashCoreImpl', 16, 4)] 2"
