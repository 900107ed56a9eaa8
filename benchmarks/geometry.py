"""Model geometries for benchmarks: attention shapes, and Llama config.json files for vLLM.

A geometry names the attention shape (heads, KV heads, head_dim) plus the rest of a Llama
config, so the same name drives the kernel harness and the end-to-end runs with dummy weights.
Writing config.json locally means vLLM never downloads anything.
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Geometry:
    name: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int

    @property
    def queries_per_kv(self) -> int:
        return self.num_q_heads // self.num_kv_heads


GEOMETRIES = {
    g.name: g
    for g in (
        # Llama-3-8B: 32 query heads, 8 KV heads (4:1), head 128.
        Geometry("llama3-8b", 32, 8, 128, 4096, 14336, 32, 128256),
        # Qwen2-7B-like 7:1 grouping (28 query heads, 4 KV heads): a non-power-of-two group.
        Geometry("gqa-7to1", 28, 4, 128, 3584, 18944, 28, 152064),
        # Multi-query attention: every query head shares one KV head.
        Geometry("mqa", 32, 1, 128, 4096, 14336, 32, 128256),
        # Llama-3-70B attention per GPU at tensor parallel 8 is 8:1; here on one GPU, 64/8.
        Geometry("llama3-70b", 64, 8, 128, 8192, 28672, 80, 128256),
        # Head dims other than 128, for prefill sweeps (MHA, 1:1).
        Geometry("mha-d64", 32, 32, 64, 2048, 8192, 24, 32000),
        Geometry("gqa-d256", 16, 8, 256, 4096, 14336, 28, 256000),
        # SmolLM2-135M's shape: 9 query heads, 3 KV heads, head 64.
        Geometry("smollm2-135m", 9, 3, 64, 576, 1536, 30, 49152),
        # Small enough for the Triton interpreter on a CPU.
        Geometry("tiny", 4, 2, 64, 256, 512, 2, 1024),
    )
}


def get(name: str) -> Geometry:
    try:
        return GEOMETRIES[name]
    except KeyError:
        raise SystemExit(f"unknown geometry {name!r}; choose from: {', '.join(GEOMETRIES)}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("FLASHCORE_BENCH_CACHE", Path.home() / ".cache" / "flashcore-bench"))


def llama_config(g: Geometry, num_layers: int | None = None, max_position: int = 131072,
                 dtype: str = "bfloat16") -> dict:
    """A Llama config.json dict for this geometry (what transformers.LlamaConfig writes)."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=g.hidden_size, intermediate_size=g.intermediate_size,
        num_attention_heads=g.num_q_heads, num_key_value_heads=g.num_kv_heads,
        head_dim=g.head_dim, num_hidden_layers=num_layers or g.num_layers,
        vocab_size=g.vocab_size, max_position_embeddings=max_position,
        rope_theta=500000.0, tie_word_embeddings=False, torch_dtype=dtype,
        architectures=["LlamaForCausalLM"], bos_token_id=1, eos_token_id=2)
    return cfg.to_dict()


def write_model_dir(g: Geometry, num_layers: int | None = None, cache_dir: Path | None = None,
                    max_position: int = 131072, dtype: str = "bfloat16") -> Path:
    """Write ``config.json`` for ``g`` into a cache folder (reused when identical); returns it."""
    layers = num_layers or g.num_layers
    root = Path(cache_dir or default_cache_dir())
    path = root / f"{g.name}-L{layers}-{dtype}"
    path.mkdir(parents=True, exist_ok=True)
    config = llama_config(g, layers, max_position, dtype)
    target = path / "config.json"
    text = json.dumps(config, indent=2, sort_keys=True)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    (path / "geometry.json").write_text(json.dumps(asdict(g) | {"num_layers": layers}, indent=2))
    return path
