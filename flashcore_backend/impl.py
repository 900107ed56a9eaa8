"""Per-layer attention: write this step's K/V into the paged cache, then attend over it.

Thin by design: ``forward`` unpacks the metadata the builder planned and calls one launcher.
No math, no allocation, no host reads of device memory (``check_lengths=False``), so it runs
unchanged inside a captured CUDA graph.
"""

import torch
from flashcore_kernels import paged_attention, write_kv_cache

from . import support
from .vllm_api import AttentionImpl, AttentionType, init_logger

logger = init_logger("vllm.flashcore_backend")


class FlashCoreImpl(AttentionImpl):
    # Decode context parallelism needs the softmax LSE of each decode; the kernels don't return it.
    supports_dcp: bool = False

    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int | None = None,
                 alibi_slopes: list[float] | None = None, sliding_window: int | None = None,
                 kv_cache_dtype: str = "auto", logits_soft_cap: float | None = None,
                 attn_type: str = AttentionType.DECODER,
                 kv_sharing_target_layer_name: str | None = None, **extra) -> None:
        reasons = support.impl_reasons(
            head_size=head_size, kv_cache_dtype=kv_cache_dtype, alibi_slopes=alibi_slopes,
            sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, attn_type=attn_type,
            extra=extra)
        if reasons:
            raise NotImplementedError("; ".join(reasons))
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads or num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"FLASHCORE: num_heads ({num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        self.kv_cache_dtype = kv_cache_dtype
        self.attn_type = attn_type
        # A layer sharing another layer's KV cache gets no do_kv_cache_update call from vLLM
        # and reads the shared (aliased) cache tensor in forward: nothing to do here.
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name
        logger.info_once("Using the FlashCore (FLASHCORE) Triton attention backend.")

    def do_kv_cache_update(self, layer, key: torch.Tensor, value: torch.Tensor,
                           kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Scatter ``key``/``value`` (``[num_tokens, num_kv_heads, head_size]``, possibly strided
        views of the fused QKV tensor) into ``kv_cache`` at ``slot_mapping`` (-1: padding)."""
        if kv_cache.numel() == 0:  # placeholder before the cache is bound
            return
        num_tokens = slot_mapping.shape[0]  # key/value may be padded past it (CUDA graphs)
        key = key[:num_tokens].view(-1, self.num_kv_heads, self.head_size)
        value = value[:num_tokens].view(-1, self.num_kv_heads, self.head_size)
        write_kv_cache(key, value, kv_cache, slot_mapping)

    def forward(self, layer, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, attn_metadata, output: torch.Tensor,
                output_scale: torch.Tensor | None = None,
                output_block_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Write ``output[:num_actual_tokens]`` in place; ``query``/``output`` are
        ``[num_tokens, num_heads, head_size]`` or the same flattened to 2D."""
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("FLASHCORE: fused output quantization (fp8/fp4 attention "
                                      "output) is not supported")
        if attn_metadata is None:  # memory-profiling run
            return output.fill_(0)
        num_tokens = attn_metadata.num_actual_tokens
        paged_attention(
            query[:num_tokens].view(-1, self.num_heads, self.head_size), kv_cache,
            attn_metadata.query_start_loc, attn_metadata.seq_lens, attn_metadata.block_table,
            max_query_len=attn_metadata.max_query_len, softmax_scale=self.scale,
            out=output[:num_tokens].view(-1, self.num_heads, self.head_size),
            workspace=attn_metadata.workspace, check_lengths=False)
        return output
