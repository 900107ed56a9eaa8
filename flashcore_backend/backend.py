"""The FLASHCORE attention backend: what vLLM asks of a backend class before it builds anything.

The four-class split follows vLLM's TRITON_ATTN: this class (capabilities, KV-cache layout),
``FlashCoreMetadata`` and its builder (per-batch planning, ``metadata.py``) and
``FlashCoreImpl`` (per-layer run, ``impl.py``).
"""

from typing import ClassVar

import torch

from . import support
from .impl import FlashCoreImpl
from .metadata import FlashCoreMetadataBuilder
from .vllm_api import AttentionBackend, MultipleOf, get_kv_cache_layout

BACKEND_NAME = "FLASHCORE"


class FlashCoreBackend(AttentionBackend):
    supported_dtypes: ClassVar[list[torch.dtype]] = support.SUPPORTED_DTYPES
    supported_kv_cache_dtypes: ClassVar[list[str]] = support.SUPPORTED_KV_CACHE_DTYPES

    # The layer calls impl.do_kv_cache_update (write_kv_cache) before impl.forward.
    forward_includes_kv_cache_update: bool = False

    @staticmethod
    def get_name() -> str:
        # Attention.__init__ looks this up as AttentionBackendEnum[name]; the plugin makes
        # FLASHCORE an alias of the CUSTOM member so that it resolves.
        return BACKEND_NAME

    @staticmethod
    def get_impl_cls() -> type[FlashCoreImpl]:
        return FlashCoreImpl

    @staticmethod
    def get_builder_cls() -> type[FlashCoreMetadataBuilder]:
        return FlashCoreMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes() -> list[int | MultipleOf]:
        return [MultipleOf(support.PAGE_SIZE_MULTIPLE)]

    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return support.SUPPORTED_HEAD_SIZES

    @staticmethod
    def get_kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_size: int,
                           cache_dtype_str: str = "auto") -> tuple[int, ...]:
        reason = (support.block_size_reason(block_size)
                  or support.kv_cache_dtype_reason(cache_dtype_str, None))
        if reason:
            raise ValueError(reason)
        # vLLM 0.26's packed layout: K in [..., :head_size], V in [..., head_size:].
        return (num_blocks, num_kv_heads, block_size, 2 * head_size)

    @staticmethod
    def get_kv_cache_stride_order(include_num_layers_dimension: bool = False) -> tuple[int, ...]:
        """Physical order of the logical ``(num_blocks, num_kv_heads, block_size, 2 * head_size)``
        cache, the same convention as TRITON_ATTN and FLASH_ATTN. The kernels take strides, so
        either layout works; NHD (the default) keeps one token's heads together for the write.
        Reads the current vLLM config (KV-connector layouts), so call it inside
        ``set_current_vllm_config``."""
        layout = get_kv_cache_layout()
        if layout == "NHD":
            # (num_blocks, [num_layers,] block_size, num_kv_heads, 2 * head_size)
            return (1, 0, 3, 2, 4) if include_num_layers_dimension else (0, 2, 1, 3)
        if layout == "HND":
            # (num_blocks, num_kv_heads, [num_layers,] block_size, 2 * head_size)
            return (1, 2, 0, 3, 4) if include_num_layers_dimension else (0, 1, 2, 3)
        raise ValueError(f"FLASHCORE: unknown KV cache layout {layout!r}")

    @classmethod
    def validate_configuration(cls, head_size: int, dtype: torch.dtype, kv_cache_dtype,
                               block_size: int | None, use_mla: bool, has_sink: bool,
                               use_sparse: bool, use_mm_prefix: bool,
                               use_per_head_quant_scales: bool, device_capability,
                               attn_type: str, **flags) -> list[str]:
        """Every reason the FlashCore kernels can't run this layer; empty when they can.
        ``flags`` are the selector's remaining booleans (sliding window, non-causal, ...)."""
        return support.selection_reasons(
            head_size=head_size, dtype=dtype, kv_cache_dtype=kv_cache_dtype,
            block_size=block_size, attn_type=attn_type, device_capability=device_capability,
            use_mla=use_mla, has_sink=has_sink, use_sparse=use_sparse,
            use_mm_prefix=use_mm_prefix, use_per_head_quant_scales=use_per_head_quant_scales,
            **flags)

    # The generic checks vLLM may call one by one, answered the same way.
    @classmethod
    def supports_block_size(cls, block_size: int | None) -> bool:
        return support.block_size_reason(block_size) is None

    @classmethod
    def supports_kv_cache_dtype(cls, kv_cache_dtype) -> bool:
        return support.kv_cache_dtype_reason(kv_cache_dtype, None) is None

    @classmethod
    def supports_attn_type(cls, attn_type: str) -> bool:
        return support.attn_type_reason(attn_type) is None

    @classmethod
    def supports_sink(cls) -> bool:
        return True

    @classmethod
    def supports_sliding_window(cls) -> bool:
        return True

    @classmethod
    def supports_compute_capability(cls, capability) -> bool:
        return support.capability_reason(capability) is None
