"""Selection through the installed entry point, in fresh interpreters (as vLLM's processes are).

vLLM only logs a plugin that fails to import, so a broken entry point would fail silently:
these tests go through ``vllm.plugins.load_general_plugins`` and check what vLLM resolves.
"""

import json
import os
import pickle
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from .vllm_batch import Geometry, write_model_dir  # noqa: E402

PROBE = Path(__file__).with_name("selection_probe.py")


def run_python(args, env_update, timeout=240) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_ATTENTION_BACKEND", "VLLM_PLUGINS")}
    env.update(env_update)
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def probe(model_dir, env_update) -> dict:
    out = run_python([str(PROBE), model_dir], env_update)
    line = next(line for line in out.splitlines() if line.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("llama"), Geometry())


def test_entry_point_is_installed():
    eps = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert eps.get("flashcore") == "flashcore_backend.plugin:register", (
        "reinstall: .venv/bin/pip install --no-deps -e .")


def test_env_var_selects_flashcore_and_explicit_choices_win(model_dir):
    r = probe(model_dir, {"VLLM_ATTENTION_BACKEND": "FLASHCORE"})
    assert r["enum_is_custom"] and r["enum_name"] == "CUSTOM"
    assert r["class"] == "flashcore_backend.backend.FlashCoreBackend"
    assert r["class_name"] == "FLASHCORE"
    assert r["default"] == "CUSTOM"  # VLLM_ATTENTION_BACKEND=FLASHCORE
    assert r["kwarg_flashcore"] == r["cli_flashcore"] == r["cli_custom"] == "CUSTOM"
    assert r["cli_lowercase"] == "CUSTOM"
    # An explicit choice, "auto" included, beats the environment variable.
    assert r["kwarg_triton"] == r["config_dict_triton"] == "TRITON_ATTN"
    assert r["kwarg_auto"] is None
    # An unknown name is an error that names the variable and the valid choices ...
    assert "VLLM_ATTENTION_BACKEND='NOT_A_BACKEND'" in r["unknown_env"]
    assert "FLASHCORE" in r["unknown_env"] and "no error" not in r["unknown_env"]
    # ... unless an explicit choice makes the variable irrelevant (then only a warning).
    assert r["unknown_env_explicit"] == "CUSTOM"


def test_without_env_var_the_default_stays_automatic(model_dir):
    r = probe(model_dir, {})
    assert r["default"] is None  # vLLM's automatic selection, untouched
    assert r["kwarg_flashcore"] == r["cli_flashcore"] == r["cli_custom"] == "CUSTOM"
    assert r["class"] == "flashcore_backend.backend.FlashCoreBackend"


def test_register_is_light_and_idempotent():
    code = (
        "import sys\n"
        "from flashcore_backend.plugin import register\n"
        "register(); register()\n"
        "from vllm.v1.attention.backends.registry import AttentionBackendEnum as E\n"
        "assert E['FLASHCORE'] is E.CUSTOM\n"
        "assert E.CUSTOM.get_path() == 'flashcore_backend.backend.FlashCoreBackend'\n"
        "heavy = [m for m in ('flashcore_kernels', 'vllm.config', 'vllm.engine.arg_utils',\n"
        "                     'flashcore_backend.backend') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n")
    out = run_python(["-c", code], {})
    assert "HEAVY []" in out, out[-2000:]


def test_alias_pickles_as_custom_into_a_process_without_the_plugin():
    """Configs reach spawned engine processes pickled. FLASHCORE is the CUSTOM member, which
    pickles by value (None) and so unpickles even where no plugin has run yet."""
    from flashcore_backend.plugin import register
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    register()
    payload = pickle.dumps(AttentionBackendEnum["FLASHCORE"]).hex()
    code = ("import pickle, sys\n"
            f"m = pickle.loads(bytes.fromhex('{payload}'))\n"
            "from vllm.v1.attention.backends.registry import AttentionBackendEnum as E\n"
            "assert m is E.CUSTOM, m\n"
            "assert 'FLASHCORE' not in E.__members__  # no plugin ran in this process\n"
            "print('UNPICKLED', m.name)\n")
    out = run_python(["-c", code], {"VLLM_PLUGINS": ""})
    assert "UNPICKLED CUSTOM" in out
