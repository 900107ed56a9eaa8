"""tests/e2e/engines.py: what a failed engine's assertion shows of its log."""

from tests.e2e.engines import failure, first_error

CRASH = "\n".join([
    "INFO 11-28 [core.py] warming up",
    "(Worker_TP1 pid=7) Traceback (most recent call last):",
    '(Worker_TP1 pid=7)   File "gpu_model_runner.py", line 9, in execute_model',
    "(Worker_TP1 pid=7) torch.AcceleratorError: CUDA error: an illegal memory access was encountered",
] + ["(Worker_TP1 pid=7) shutdown frame"] * 200)


def test_the_first_error_is_shown_where_the_tail_has_only_the_shutdown():
    result = {"name": "tp2/FLASHCORE", "ok": False, "error": "exit timeout", "log": CRASH,
              "log_path": "/tmp/tp2__FLASHCORE.log"}
    message = failure(result)
    assert "execute_model" not in CRASH[-3000:]  # the tail alone would hide where it crashed
    assert "tp2/FLASHCORE: exit timeout (log: /tmp/tp2__FLASHCORE.log)" in message
    assert "in execute_model" in message and "illegal memory access" in message
    assert first_error(CRASH).startswith("(Worker_TP1 pid=7) Traceback")
    assert len(first_error(CRASH, lines=5).splitlines()) == 5


def test_a_log_without_an_error_gives_no_first_error():
    assert first_error("INFO all fine\nJOB x ok=False\n") == ""
