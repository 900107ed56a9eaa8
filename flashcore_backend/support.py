"""What the FlashCore kernels can run, and a plain-language reason for everything they can't.

vLLM asks twice. ``FlashCoreBackend.validate_configuration`` answers at backend selection with
what the selector knows (dtype, head size, KV-cache dtype, sliding window, sinks, ...); vLLM
raises with those reasons when FLASHCORE was chosen explicitly. Some features only reach the
attention implementation's constructor (ALiBi slopes, logit soft-capping, the attention type of
a layer built with a backend passed in), so ``FlashCoreImpl.__init__`` refuses those with
``impl_reasons``. Every reason starts with "FLASHCORE:" because vLLM's own message names the
backend by its enum slot (CUSTOM).
"""

import torch
from flashcore_kernels import checks

from .vllm_api import AttentionType

SUPPORTED_DTYPES = [torch.float16, torch.bfloat16, torch.float32]
SUPPORTED_HEAD_SIZES = list(range(checks.MIN_HEAD_DIM, checks.MAX_HEAD_DIM + 1,
                                  checks.HEAD_DIM_MULTIPLE))
# "float16"/"bfloat16" only when equal to the model dtype: the kernels read the cache in the
# query's dtype (no conversion on load). "fp8"/"fp8_e4m3": float8_e4m3fn with the layer's
# per-tensor K/V scales, quantised on write and dequantised on load.
FP8_KV_CACHE_DTYPES = ["fp8", "fp8_e4m3"]
FP8_DTYPE = torch.float8_e4m3fn  # what vLLM's "fp8" / "fp8_e4m3" KV cache holds on CUDA
SUPPORTED_KV_CACHE_DTYPES = ["auto", "float16", "bfloat16", *FP8_KV_CACHE_DTYPES]
PAGE_SIZE_MULTIPLE = 16  # vLLM's block_size; the kernels' KV tiles are 16-token multiples
MIN_COMPUTE_CAPABILITY = 80  # Ampere and newer (bf16 tensor cores); measured on H100 (90)

_CACHE_DTYPE_TO_TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def kernel_cache_dtype(kv_cache_dtype: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels read a ``kv_cache_dtype`` cache of a ``dtype`` model in."""
    return FP8_DTYPE if kv_cache_dtype in FP8_KV_CACHE_DTYPES else dtype


def head_size_reason(head_size: int) -> str | None:
    if head_size in SUPPORTED_HEAD_SIZES:
        return None
    return (f"FLASHCORE: head size {head_size} is not supported (multiples of "
            f"{checks.HEAD_DIM_MULTIPLE} from {checks.MIN_HEAD_DIM} to {checks.MAX_HEAD_DIM})")


def dtype_reason(dtype: torch.dtype) -> str | None:
    if dtype in SUPPORTED_DTYPES:
        return None
    return f"FLASHCORE: model dtype {dtype} is not supported (float16, bfloat16, float32)"


def kv_cache_dtype_reason(kv_cache_dtype: str | None, dtype: torch.dtype | None) -> str | None:
    if kv_cache_dtype is None or kv_cache_dtype == "auto":
        return None
    if kv_cache_dtype in FP8_KV_CACHE_DTYPES:
        return None
    if kv_cache_dtype.startswith("fp8"):
        return (f"FLASHCORE: fp8 KV cache format {kv_cache_dtype!r} is not supported (only "
                "e4m3 with per-tensor scales: --kv-cache-dtype fp8)")
    if kv_cache_dtype not in SUPPORTED_KV_CACHE_DTYPES:
        return (f"FLASHCORE: quantized KV cache (kv_cache_dtype={kv_cache_dtype!r}) is not "
                "supported; use --kv-cache-dtype auto")
    if dtype is not None and _CACHE_DTYPE_TO_TORCH[kv_cache_dtype] != dtype:
        return (f"FLASHCORE: kv_cache_dtype={kv_cache_dtype!r} differs from the model dtype "
                f"{dtype}; the kernels read the cache in the model dtype, use 'auto'")
    return None


def block_size_reason(block_size: int | None) -> str | None:
    if block_size is None or block_size % PAGE_SIZE_MULTIPLE == 0:
        return None
    return (f"FLASHCORE: block size {block_size} is not supported (a multiple of "
            f"{PAGE_SIZE_MULTIPLE})")


def attn_type_reason(attn_type: str) -> str | None:
    if attn_type == AttentionType.DECODER:
        return None
    return (f"FLASHCORE: attention type {str(getattr(attn_type, 'value', attn_type))!r} is not "
            "supported (decoder self-attention only: no encoder, encoder-only or cross-attention)")


def capability_reason(device_capability) -> str | None:
    if device_capability is None or device_capability.to_int() >= MIN_COMPUTE_CAPABILITY:
        return None
    return (f"FLASHCORE: compute capability {device_capability.as_version_str()} is not "
            f"supported (needs {MIN_COMPUTE_CAPABILITY // 10}.{MIN_COMPUTE_CAPABILITY % 10} or newer)")


def fp8_capability_reason(kv_cache_dtype: str | None, device_capability) -> str | None:
    if (kv_cache_dtype not in FP8_KV_CACHE_DTYPES or device_capability is None
            or device_capability.to_int() >= checks.FP8_MIN_ARCH):
        return None
    return (f"FLASHCORE: an fp8 KV cache needs compute capability "
            f"{'.'.join(map(str, checks.FP8_MIN_CAPABILITY))} or newer "
            f"(Triton has no float8 e4m3 before Ada); this GPU is "
            f"{device_capability.as_version_str()}")


# Feature flags of vLLM's selector config that the kernels do not implement.
FLAG_REASONS = {
    "use_mla": "FLASHCORE: multi-head latent attention (MLA) is not supported",
    "use_sparse": "FLASHCORE: sparse attention is not supported",
    "use_mm_prefix": "FLASHCORE: bidirectional multimodal prefix attention is not supported",
    "use_per_head_quant_scales": "FLASHCORE: per-head KV quantization scales are not supported",
    "use_non_causal": "FLASHCORE: non-causal (bidirectional) decoder attention is not supported",
    "use_batch_invariant": ("FLASHCORE: batch-invariant mode is not supported (the split-KV "
                            "decode count depends on the batch size)"),
    "use_pcp": "FLASHCORE: prefill context parallelism is not supported",
}
# Flags of features the kernels implement (the layer passes their parameters to the impl), and
# KV connectors, which copy whole pages of the standard layout.
SUPPORTED_FLAGS = {"has_sink", "has_sliding_window", "use_kv_connector"}


def selection_reasons(*, head_size, dtype, kv_cache_dtype, block_size, attn_type,
                      device_capability, **flags) -> list[str]:
    """Reasons the kernels can't run a layer, from what vLLM's backend selector knows."""
    reasons = [head_size_reason(head_size), dtype_reason(dtype),
               kv_cache_dtype_reason(kv_cache_dtype, dtype), block_size_reason(block_size),
               attn_type_reason(attn_type), capability_reason(device_capability),
               fp8_capability_reason(kv_cache_dtype, device_capability)]
    for name, value in flags.items():
        if value and name in FLAG_REASONS:
            reasons.append(FLAG_REASONS[name])
        elif value and name not in SUPPORTED_FLAGS:
            reasons.append(f"FLASHCORE: unknown feature {name}={value!r} requested")
    return [r for r in reasons if r]


def impl_reasons(*, head_size, kv_cache_dtype, attn_type, extra) -> list[str]:
    """Reasons from the attention layer's constructor arguments (some never reach selection)."""
    reasons = [head_size_reason(head_size), kv_cache_dtype_reason(kv_cache_dtype, None),
               attn_type_reason(attn_type)]
    if extra.get("use_alibi_sqrt"):
        reasons.append("FLASHCORE: square-root ALiBi (use_alibi_sqrt) is not supported")
    if extra.get("chunk_lookback", -1) > -1:
        reasons.append("FLASHCORE: chunked local attention (chunk_lookback) is not supported")
    known = {"sinks", "use_alibi_sqrt", "chunk_lookback"}
    for name, value in extra.items():
        if name not in known and value not in (None, False):
            reasons.append(f"FLASHCORE: unsupported attention argument {name}={value!r}")
    return [r for r in reasons if r]
