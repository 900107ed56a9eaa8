"""Engines for the end-to-end tests: each job (engine_job.py) in its own process, several at a
time, and the checks every test makes of a finished job.

A job is a dict: ``name``, ``backend`` (FLASHCORE gets ``VLLM_ATTENTION_BACKEND=FLASHCORE`` in
the engine's environment, as a user would set it; the others ``attention_backend=`` in
``llm_kwargs``), ``model``, ``llm_kwargs``, ``sampling``, ``prompts``, optional ``env`` (added
to the engine's environment) and ``timeout_s``, and options that engine_job.py reads.
"""

import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .compare import Comparison

ENGINE_JOB = Path(__file__).with_name("engine_job.py")
REPO = Path(__file__).parents[2]
JOB_TIMEOUT_S = 600
# The first line of a Python traceback or of a CUDA error in an engine's log.
FIRST_ERROR = re.compile(r"Traceback \(most recent call last\)|CUDA error|Error: ")


class JobRunner:
    """Runs named jobs, ``parallel`` engines at a time; ``write_model(model, folder)`` turns a
    job's ``model`` entry into a model folder (written once per entry)."""

    def __init__(self, jobs, workdir: Path, write_model, parallel: int = 1):
        self.jobs, self.workdir, self.write_model = jobs, workdir, write_model
        self.pool = ThreadPoolExecutor(max_workers=parallel)
        self.futures = {}
        self.model_dirs = {}

    def model_dir(self, model) -> str:
        key = tuple(model)
        if key not in self.model_dirs:
            self.model_dirs[key] = self.write_model(model, self.workdir / "models" / key[-1])
        return self.model_dirs[key]

    def start(self, names):
        for name in names:
            if name not in self.futures:
                job = dict(self.jobs[name], model=self.model_dir(self.jobs[name]["model"]))
                self.futures[name] = self.pool.submit(self._run, job)

    def result(self, name) -> dict:
        self.start([name])
        return self.futures[name].result()

    def _run(self, job, attempt=0) -> dict:
        safe = job["name"].replace("/", "__")
        job_path, out_path = self.workdir / f"{safe}.job.json", self.workdir / f"{safe}.out.json"
        log_path = self.workdir / f"{safe}.log"
        job_path.write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items()
               if k not in ("VLLM_ATTENTION_BACKEND", "TRITON_INTERPRET")}
        env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc() ships a function
        if job["backend"] == "FLASHCORE":
            env["VLLM_ATTENTION_BACKEND"] = "FLASHCORE"
        env.update(job.get("env", {}))
        with open(log_path, "w") as log:
            # A process group of its own: on a timeout the engine core and its workers stop
            # with the job (an engine whose worker died can hang instead of exiting).
            proc = subprocess.Popen([sys.executable, str(ENGINE_JOB), str(job_path),
                                     str(out_path)], env=env, cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                returncode = proc.wait(timeout=job.get("timeout_s", JOB_TIMEOUT_S))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                returncode = "timeout"
        log_text = log_path.read_text(errors="replace")
        result = json.loads(out_path.read_text()) if out_path.exists() else {"ok": False}
        result.setdefault("name", job["name"])
        result.setdefault("error", f"exit {returncode}")
        result["log"], result["log_path"] = log_text, str(log_path)
        result["flashcore_logged"] = "Using the FlashCore (FLASHCORE)" in log_text
        if (not result["ok"] and attempt == 0 and not job.get("expect_failure")
                and "address already in use" in log_text.lower()):  # port race between engines
            return self._run(job, attempt=1)
        return result


def first_error(log_text: str, lines: int = 40) -> str:
    """The log from its first error on, ``lines`` long: a worker's crash is often followed by
    screens of shutdown tracebacks that the tail alone would show."""
    found = FIRST_ERROR.search(log_text)
    if not found:
        return ""
    start = log_text.rfind("\n", 0, found.start()) + 1
    return "\n".join(log_text[start:].splitlines()[:lines])


def failure(result) -> str:
    """What a failed job's assertion says: its error, the log's first error and its tail, and
    where the whole log is (under pytest's --basetemp)."""
    log = result.get("log", "")
    return (f"{result.get('name')}: {result.get('error')} (log: {result.get('log_path')})\n"
            f"--- first error ---\n{first_error(log)}\n--- tail ---\n{log[-3000:]}")


def ok(result) -> dict:
    assert result["ok"], failure(result)
    return result


def flashcore_ok(result) -> dict:
    ok(result)
    assert result["backend_config"].endswith("CUSTOM"), result["backend_config"]
    assert result["attention_impls"] == ["FlashCoreImpl"], result["attention_impls"]
    return result


def assert_close(c: Comparison, calibration: Comparison | None):
    """FLASHCORE vs FLASH_ATTN within the larger of a floor and TRITON_ATTN's distance."""
    limit = c.limits(calibration)
    assert c.prompt_max_diff <= limit["prompt_max_diff"], (c, limit)
    assert c.prompt_top5_overlap >= limit["prompt_top5_overlap"], (c, limit)
    assert c.sample_max_diff <= limit["sample_max_diff"], (c, limit)
    assert not c.unexplained_divergences, (
        f"outputs diverge where FLASH_ATTN had no near-tie (limit {limit['near_tie']:.3f}): "
        f"{c.unexplained_divergences}")
