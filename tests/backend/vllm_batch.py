"""Real vLLM objects for backend tests: configs built from a local config.json (no downloads,
no tokenizer), ``CommonAttentionMetadata`` for a ``BatchSpec``, and a paged KV cache laid out the
way vLLM lays it out for a backend. Everything takes the test session's ``device``
(tests/conftest.py): the CPU under Triton's interpreter, or a CUDA GPU with compiled kernels.
Random data is drawn on the CPU from seeded generators and then moved, so both devices see the
same values. Import only after ``pytest.importorskip("vllm")``.
"""

import contextlib
from dataclasses import dataclass

import torch
from transformers import LlamaConfig
from vllm.config import (CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig,
                         set_current_vllm_config)
from vllm.v1.attention.backend import CommonAttentionMetadata
from vllm.v1.kv_cache_interface import FullAttentionSpec

from flashcore_backend.backend import FlashCoreBackend

TORCH_TO_HF_DTYPE = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


@dataclass(frozen=True)
class Geometry:
    num_q_heads: int = 4
    num_kv_heads: int = 2
    head_size: int = 32
    block_size: int = 16
    dtype: torch.dtype = torch.float16
    max_num_seqs: int = 8
    max_model_len: int = 256


def write_model_dir(path, g: Geometry, num_layers: int = 1) -> str:
    """A Llama config.json with the geometry's attention shape (no weights: never loaded)."""
    LlamaConfig(
        hidden_size=g.num_q_heads * g.head_size, intermediate_size=64,
        num_attention_heads=g.num_q_heads, num_key_value_heads=g.num_kv_heads,
        head_dim=g.head_size, num_hidden_layers=num_layers, vocab_size=128,
        max_position_embeddings=g.max_model_len, torch_dtype=TORCH_TO_HF_DTYPE[g.dtype],
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(path)
    return str(path)


def make_vllm_config(model_dir: str, g: Geometry, *, device: torch.device) -> VllmConfig:
    model_config = ModelConfig(model=model_dir, skip_tokenizer_init=True,
                               dtype=TORCH_TO_HF_DTYPE[g.dtype], max_model_len=g.max_model_len)
    return VllmConfig(
        model_config=model_config, device_config=DeviceConfig(device=torch.device(device).type),
        cache_config=CacheConfig(block_size=g.block_size),
        scheduler_config=SchedulerConfig(max_num_seqs=g.max_num_seqs,
                                         max_num_batched_tokens=g.max_model_len,
                                         max_model_len=g.max_model_len, is_encoder_decoder=False))


def kv_cache_spec(g: Geometry) -> FullAttentionSpec:
    return FullAttentionSpec(block_size=g.block_size, num_kv_heads=g.num_kv_heads,
                             head_size=g.head_size, dtype=g.dtype)


@dataclass
class BatchSpec:
    """Sequence i has ``seq_lens[i]`` KV tokens in all, the last ``query_lens[i]`` new this step."""

    seq_lens: list[int]
    query_lens: list[int]

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)


def make_common_metadata(spec: BatchSpec, g: Geometry, *, device: torch.device, seed: int = 0,
                         pad_tokens: int = 0, pad_reqs: int = 0, max_pages: int | None = None,
                         extra_pages: int = 2) -> tuple[CommonAttentionMetadata, int]:
    """Metadata as vLLM's runner builds it, with each sequence's pages drawn from a random
    permutation and page 0 never used. Padding as under full CUDA graphs: ``pad_tokens`` extra
    tokens (slot -1, in no sequence) after the real ones, ``pad_reqs`` extra requests with no
    tokens and seq_len 0. Tensors are on ``device``, except ``query_start_loc_cpu`` (a separate
    CPU copy, as vLLM keeps it). Returns (metadata, num_pages)."""
    gen = torch.Generator().manual_seed(seed)
    pages_per_seq = [-(-s // g.block_size) for s in spec.seq_lens]
    num_pages = sum(pages_per_seq) + extra_pages + 1
    perm = (torch.randperm(num_pages - 1, generator=gen) + 1).tolist()
    num_reqs = len(spec.seq_lens) + pad_reqs
    block_table = torch.zeros(num_reqs, max_pages or max(pages_per_seq), dtype=torch.int32)
    slots = []
    for i, (seq_len, q_len) in enumerate(zip(spec.seq_lens, spec.query_lens)):
        pages, perm = perm[:pages_per_seq[i]], perm[pages_per_seq[i]:]
        block_table[i, :len(pages)] = torch.tensor(pages, dtype=torch.int32)
        for pos in range(seq_len - q_len, seq_len):
            slots.append(pages[pos // g.block_size] * g.block_size + pos % g.block_size)
    slot_mapping = torch.tensor(slots + [-1] * pad_tokens, dtype=torch.int64)
    q_lens, seq_lens = spec.query_lens + [0] * pad_reqs, spec.seq_lens + [0] * pad_reqs
    query_start_loc_cpu = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    metadata = CommonAttentionMetadata(
        query_start_loc=query_start_loc_cpu.to(device, copy=True),
        query_start_loc_cpu=query_start_loc_cpu,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32).to(device), num_reqs=num_reqs,
        num_actual_tokens=spec.num_tokens + pad_tokens, max_query_len=max(spec.query_lens),
        max_seq_len=max(spec.seq_lens), block_table_tensor=block_table.to(device),
        slot_mapping=slot_mapping.to(device))
    return metadata, num_pages


def allocate_kv_cache(num_pages: int, g: Geometry, vllm_config: VllmConfig, *,
                      device: torch.device, backend=FlashCoreBackend) -> torch.Tensor:
    """The layer's cache tensor on ``device`` as vLLM 0.26 makes it (v1/worker/gpu/attn_utils.py,
    ``_reshape_attention_kv_cache``): memory in stride order, viewed back in the logical order.
    Random contents from the CPU's global generator (seed it first)."""
    shape = backend.get_kv_cache_shape(num_pages, g.block_size, g.num_kv_heads, g.head_size)
    with set_current_vllm_config(vllm_config):
        order = backend.get_kv_cache_stride_order()
    raw = torch.randn([shape[i] for i in order]).to(g.dtype).to(device)
    return raw.permute(*[order.index(i) for i in range(len(order))])


@contextlib.contextmanager
def no_tensor_ops():
    """Fails if any tensor operation (allocation, copy, host read) runs inside the block."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    recorder = Recorder()
    with recorder:
        yield
    assert not recorder.ops, f"tensor operations ran: {recorder.ops}"
