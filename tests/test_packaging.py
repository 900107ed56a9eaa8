"""The folder kernels/ installs under the import name flashcore_kernels, so it cannot collide with
the PyPI package `kernels`; check a normal (wheel-style) and an editable install."""

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = textwrap.dedent("""
    import kernels, flashcore_kernels, flashcore_backend
    assert kernels.MARKER == "pypi kernels", kernels.__file__
    assert hasattr(flashcore_kernels, "paged_attention"), flashcore_kernels.__file__
    print(flashcore_kernels.__file__)
""")


def fake_pypi_kernels(tmp_path: Path) -> Path:
    """A stand-in for the PyPI package `kernels` on the path, which must keep its name."""
    site = tmp_path / "other_site"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text('MARKER = "pypi kernels"\n')
    return site


def run_probe(tmp_path, python, extra_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, extra_path)))
    return subprocess.run([str(python), "-c", PROBE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def pip(*args, python=sys.executable):
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    *args], check=True, capture_output=True, timeout=300)


def test_normal_install_beside_pypi_kernels(tmp_path):
    target = tmp_path / "site"
    pip("--target", str(target), str(ROOT))
    result = run_probe(tmp_path, sys.executable, [fake_pypi_kernels(tmp_path), target])
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout


def test_editable_install_beside_pypi_kernels(tmp_path):
    """The README's test command installs the project editable into the test environment."""
    # Building in the source tree leaves a flashcore.egg-info there too: look at every copy.
    urls = [d.read_text("direct_url.json") or "{}" for d in importlib.metadata.distributions(name="flashcore")]
    if not any(json.loads(url).get("dir_info", {}).get("editable") for url in urls):
        pytest.skip("flashcore is not installed editable in this environment")
    result = run_probe(tmp_path, sys.executable, [fake_pypi_kernels(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert str(ROOT / "kernels") in result.stdout
