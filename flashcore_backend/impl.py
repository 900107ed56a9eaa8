"""Per-layer attention: write this step's K/V into the paged cache, then attend over it.

Thin by design: ``forward`` unpacks the metadata the builder planned and calls one launcher.
No math, no allocation, no host reads of device memory (``check_lengths=False``), so it runs
unchanged inside a captured CUDA graph.
"""

import torch
from flashcore_kernels import paged_attention, warm_up, write_kv_cache

from . import support
from .vllm_api import AttentionImpl, AttentionType, get_current_vllm_config_or_none, init_logger

logger = init_logger("vllm.flashcore_backend")


class FlashCoreImpl(AttentionImpl):
    # Decode context parallelism needs the softmax LSE of each decode; the kernels don't return it.
    supports_dcp: bool = False

    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int | None = None,
                 alibi_slopes: list[float] | None = None, sliding_window: int | None = None,
                 kv_cache_dtype: str = "auto", logits_soft_cap: float | None = None,
                 attn_type: str = AttentionType.DECODER,
                 kv_sharing_target_layer_name: str | None = None, **extra) -> None:
        reasons = support.impl_reasons(head_size=head_size, kv_cache_dtype=kv_cache_dtype,
                                       attn_type=attn_type, extra=extra)
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
        self.fp8_cache = kv_cache_dtype in support.FP8_KV_CACHE_DTYPES
        self.attn_type = attn_type
        # vLLM's sliding_window W lets a query see itself and the W - 1 tokens before it, the
        # kernels' convention too; None and 0 mean no window / no soft cap in vLLM.
        self.sliding_window = sliding_window or None
        self.logits_soft_cap = logits_soft_cap or None
        # Moved to the layer's device on first use (the impl is built before the device is set).
        self.alibi_slopes = (torch.tensor(alibi_slopes, dtype=torch.float32)
                             if alibi_slopes is not None else None)
        self.sinks = extra.get("sinks")
        if self.sinks is not None and self.sinks.shape[0] != num_heads:
            raise ValueError(f"FLASHCORE: sinks has {self.sinks.shape[0]} entries for "
                             f"{num_heads} query heads")
        # A layer sharing another layer's KV cache gets no do_kv_cache_update call from vLLM
        # and reads the shared (aliased) cache tensor in forward: nothing to do here.
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name
        self._warm_up_layout = self._cache_layout()
        logger.info_once("Using the FlashCore (FLASHCORE) Triton attention backend.")

    @staticmethod
    def _cache_layout() -> tuple[int, tuple[int, ...]] | None:
        """(page size, physical stride order) of the KV cache vLLM will allocate, read from the
        config being built (the impl is made inside the model's construction); None outside."""
        config = get_current_vllm_config_or_none()
        if config is None or not config.cache_config.block_size:
            return None
        from .backend import FlashCoreBackend  # (the backend module imports this one)

        return config.cache_config.block_size, FlashCoreBackend.get_kv_cache_stride_order()

    def do_kv_cache_update(self, layer, key: torch.Tensor, value: torch.Tensor,
                           kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Scatter ``key``/``value`` (``[num_tokens, num_kv_heads, head_size]``, possibly strided
        views of the fused QKV tensor) into ``kv_cache`` at ``slot_mapping`` (-1: padding)."""
        if kv_cache.numel() == 0:  # placeholder before the cache is bound
            return
        num_tokens = slot_mapping.shape[0]  # key/value may be padded past it (CUDA graphs)
        key = key[:num_tokens].view(-1, self.num_kv_heads, self.head_size)
        value = value[:num_tokens].view(-1, self.num_kv_heads, self.head_size)
        if self.fp8_cache:
            write_kv_cache(key, value, kv_cache.view(support.FP8_DTYPE), slot_mapping,
                           k_scale=layer._k_scale, v_scale=layer._v_scale)
        else:
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
        if attn_metadata is None:  # memory-profiling run, during vLLM's start-up
            if self._warm_up_layout is not None:
                self._warm_up(layer, query, key, value, output)
            return output.fill_(0)
        num_tokens = attn_metadata.num_actual_tokens
        if self.fp8_cache:
            kv_cache = kv_cache.view(support.FP8_DTYPE)
        paged_attention(
            query[:num_tokens].view(-1, self.num_heads, self.head_size), kv_cache,
            attn_metadata.query_start_loc, attn_metadata.seq_lens, attn_metadata.block_table,
            max_query_len=attn_metadata.max_query_len, max_seq_len=attn_metadata.max_seq_len,
            out=output[:num_tokens].view(-1, self.num_heads, self.head_size),
            workspace=attn_metadata.workspace, decode_plan=attn_metadata.decode_plan,
            check_lengths=False,
            **self._attention_options(layer, query.device))
        return output

    def _attention_options(self, layer, device: torch.device) -> dict:
        options = dict(softmax_scale=self.scale, sliding_window=self.sliding_window,
                       logits_soft_cap=self.logits_soft_cap,
                       alibi_slopes=self._alibi_slopes_on(device), sinks=self.sinks)
        if self.fp8_cache:
            options.update(k_scale=layer._k_scale, v_scale=layer._v_scale)
        return options

    def _warm_up(self, layer, query, key, value, output) -> None:
        """Compile this layer's kernels now: vLLM's start-up runs no mixed batch through
        attention, so the prefill kernel and the cache write would otherwise compile inside the
        first steps that serve requests. Once per layer; the compiled kernels are shared by all
        layers of the same shape and options."""
        page_size, stride_order = self._warm_up_layout
        self._warm_up_layout = None
        if key is None or value is None or query.device.type != "cuda":
            return  # (the CPU interpreter compiles nothing)
        try:
            warm_up(query.view(-1, self.num_heads, self.head_size),
                    key.view(-1, self.num_kv_heads, self.head_size),
                    value.view(-1, self.num_kv_heads, self.head_size),
                    output.view(-1, self.num_heads, self.head_size), page_size=page_size,
                    cache_dtype=support.kernel_cache_dtype(self.kv_cache_dtype, query.dtype),
                    stride_order=stride_order, **self._attention_options(layer, query.device))
        except Exception as err:  # only a head start: a real step makes the same launches and
            # raises there if they are wrong
            logger.warning("FLASHCORE: compiling the kernels at start-up failed (%s: %s); they "
                           "compile on first use instead", type(err).__name__, err)

    def _alibi_slopes_on(self, device: torch.device) -> torch.Tensor | None:
        """The slopes on ``device``: moved on the first call (the profiling run, before any
        graph capture) and kept, so later calls allocate nothing."""
        if self.alibi_slopes is not None and self.alibi_slopes.device != device:
            self.alibi_slopes = self.alibi_slopes.to(device)
        return self.alibi_slopes
