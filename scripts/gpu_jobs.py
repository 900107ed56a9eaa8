"""Run a list of GPU jobs side by side on the GPUs of one host, each job on GPUs of its own.

    python3 scripts/gpu_jobs.py scripts/gpu_jobs.txt [--logs DIR] [--deadline SECONDS]

Each line of the job file is ``NUM_GPUS NAME COMMAND`` (``#`` starts a comment). Jobs start in
file order as soon as enough GPUs are free, with CUDA_VISIBLE_DEVICES set to theirs; a job that
needs more GPUs than the host has is skipped. Output goes to ``DIR/NAME.log``; jobs still running
at the deadline are stopped. At the end: the tail of every log, then one line per job.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def read_jobs(path: Path) -> list[tuple[int, str, str]]:
    jobs = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            gpus, name, command = line.split(None, 2)
            jobs.append((int(gpus), name, command))
    return jobs


def host_gpus() -> list[str]:
    """The GPUs to share out: CUDA_VISIBLE_DEVICES when set, else every GPU NVML sees (asked of
    NVML so that this process starts no CUDA context)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    import pynvml

    pynvml.nvmlInit()
    try:
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def run(jobs, logs: Path, deadline_s: float, gpus: list[str], tail_chars: int = 700) -> int:
    logs.mkdir(parents=True, exist_ok=True)
    num_gpus = len(gpus)
    free, running, finished = list(gpus), {}, []
    start = time.time()
    clock = lambda: f"[{time.time() - start:6.0f}s]"
    print(f"{num_gpus} GPUs, {len(jobs)} jobs, deadline {deadline_s:.0f}s", flush=True)
    while jobs or running:
        for name, (proc, gpus, began) in list(running.items()):
            if proc.poll() is not None:
                free += gpus
                finished.append((name, proc.returncode, time.time() - began, gpus))
                print(f"{clock()} done {name} rc={proc.returncode}", flush=True)
                del running[name]
        while jobs and (jobs[0][0] <= len(free) or jobs[0][0] > num_gpus):
            n, name, command = jobs.pop(0)
            if n > num_gpus:
                finished.append((name, f"skipped: needs {n} GPUs", 0.0, []))
                continue
            gpus, free = free[:n], free[n:]
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(gpus))
            with open(logs / f"{name}.log", "w") as log:
                proc = subprocess.Popen(["bash", "-c", command], env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            running[name] = (proc, gpus, time.time())
            print(f"{clock()} start {name} on GPUs {gpus}: {command[:120]}", flush=True)
        if time.time() - start > deadline_s:
            for name, (proc, gpus, began) in running.items():
                os.killpg(proc.pid, signal.SIGKILL)  # the job's whole process group
                finished.append((name, "stopped at the deadline", time.time() - began, gpus))
            finished += [(name, "not started", 0.0, []) for _, name, _ in jobs]
            running, jobs = {}, []
            break
        time.sleep(1)
    for name, *_ in finished:
        log = logs / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        print(f"\n==== {name}\n{text[-tail_chars:]}")
    print("\njob                          result                     seconds  GPUs")
    for name, rc, seconds, gpus in finished:
        print(f"{name:<28} {str(rc):<26} {seconds:7.0f}  {gpus}")
    return 0 if all(rc == 0 for _, rc, _, _ in finished) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("jobs", type=Path)
    p.add_argument("--logs", type=Path, default=Path("gpu-logs"))
    p.add_argument("--deadline", type=float, default=3600.0, help="seconds")
    p.add_argument("--tail", type=int, default=700, help="characters of each log to print")
    args = p.parse_args()
    return run(read_jobs(args.jobs), args.logs, args.deadline, host_gpus(), args.tail)


if __name__ == "__main__":
    sys.exit(main())
