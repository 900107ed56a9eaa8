"""What FLASHCORE declares it can run, and the reason vLLM gets for everything it can't."""

import pytest
import torch

pytest.importorskip("vllm")

from vllm.platforms.interface import DeviceCapability  # noqa: E402
from vllm.v1.attention.backend import AttentionType, MultipleOf  # noqa: E402
from vllm.v1.attention.backends.registry import AttentionBackendEnum  # noqa: E402
from vllm.v1.attention.selector import AttentionSelectorConfig  # noqa: E402

from flashcore_backend.backend import FlashCoreBackend  # noqa: E402
from flashcore_backend.impl import FlashCoreImpl  # noqa: E402

H100 = DeviceCapability(9, 0)
SUPPORTED = AttentionSelectorConfig(head_size=128, dtype=torch.bfloat16, kv_cache_dtype="auto",
                                    block_size=16)


def reasons(device_capability=H100, **changes) -> list[str]:
    config = SUPPORTED._replace(**changes)
    return FlashCoreBackend.validate_configuration(device_capability=device_capability,
                                                   **config._asdict())


@pytest.mark.parametrize("head_size", [16, 64, 80, 96, 112, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_supported_configurations_have_no_reasons(head_size, dtype):
    assert reasons(head_size=head_size, dtype=dtype) == []
    assert reasons(head_size=head_size, dtype=dtype, block_size=None, kv_cache_dtype=None) == []


def test_declared_capabilities():
    assert FlashCoreBackend.get_name() == "FLASHCORE"
    assert FlashCoreBackend.forward_includes_kv_cache_update is False
    assert FlashCoreBackend.supported_dtypes == [torch.float16, torch.bfloat16, torch.float32]
    assert FlashCoreBackend.supported_kv_cache_dtypes == ["auto", "float16", "bfloat16", "fp8",
                                                          "fp8_e4m3"]
    assert FlashCoreBackend.get_supported_head_sizes() == list(range(16, 257, 8))
    [size] = FlashCoreBackend.get_supported_kernel_block_sizes()
    assert isinstance(size, MultipleOf) and size.base == 16
    assert FlashCoreBackend.supports_block_size(32) and not FlashCoreBackend.supports_block_size(8)
    assert not FlashCoreBackend.is_mla() and FlashCoreBackend.supports_sink()
    assert FlashCoreBackend.supports_sliding_window()


@pytest.mark.parametrize("change", [dict(kv_cache_dtype="fp8"), dict(kv_cache_dtype="fp8_e4m3"),
                                    dict(has_sink=True), dict(has_sliding_window=True)])
def test_supported_features_have_no_reasons(change):
    assert reasons(**change) == []


UNSUPPORTED = [
    (dict(head_size=72 + 1), "head size 73"),
    (dict(head_size=512), "head size 512"),
    (dict(head_size=8), "head size 8"),
    (dict(dtype=torch.float64), "model dtype torch.float64"),
    (dict(kv_cache_dtype="fp8_e5m2"), "fp8 KV cache format 'fp8_e5m2'"),
    (dict(kv_cache_dtype="int8_per_token_head"), "quantized KV cache"),
    (dict(kv_cache_dtype="nvfp4"), "quantized KV cache"),
    (dict(kv_cache_dtype="float16"), "differs from the model dtype"),  # model is bf16
    (dict(block_size=8), "block size 8"),
    (dict(block_size=24), "block size 24"),
    (dict(use_mla=True), "MLA"),
    (dict(use_sparse=True), "sparse attention"),
    (dict(use_mm_prefix=True), "multimodal prefix"),
    (dict(use_per_head_quant_scales=True), "per-head KV quantization"),
    (dict(use_non_causal=True), "non-causal"),
    (dict(use_batch_invariant=True), "batch-invariant"),
    (dict(use_pcp=True), "prefill context parallelism"),
    (dict(attn_type=AttentionType.ENCODER_ONLY), "attention type 'encoder_only'"),
    (dict(attn_type=AttentionType.ENCODER), "attention type 'encoder'"),
    (dict(attn_type=AttentionType.ENCODER_DECODER), "attention type 'encoder_decoder'"),
]


@pytest.mark.parametrize("change, expected", UNSUPPORTED, ids=[e for _, e in UNSUPPORTED])
def test_each_unsupported_feature_has_its_own_reason(change, expected):
    found = reasons(**change)
    assert len(found) == 1 and expected in found[0] and found[0].startswith("FLASHCORE: "), found


def test_old_gpus_are_refused():
    [reason] = reasons(device_capability=DeviceCapability(7, 5))
    assert "compute capability 7.5" in reason


def test_fp8_cache_needs_ada_or_newer():
    [reason] = reasons(device_capability=DeviceCapability(8, 6), kv_cache_dtype="fp8")
    assert "fp8 KV cache needs compute capability 8.9" in reason and "8.6" in reason
    assert reasons(device_capability=DeviceCapability(8, 9), kv_cache_dtype="fp8") == []
    assert reasons(device_capability=DeviceCapability(8, 0)) == []


def test_reasons_accumulate_and_kv_connectors_are_fine():
    assert len(reasons(use_non_causal=True, kv_cache_dtype="fp8_e5m2", head_size=300)) == 3
    assert reasons(use_kv_connector=True) == []


def test_selector_contract_through_the_enum(registered):
    """What vllm/platforms/cuda.py does with an explicitly selected backend: resolve the enum
    member's class, call ``validate_configuration(device_capability=..., **selector_config)`` and
    raise with the reasons if there are any. (Importing the CUDA platform needs libcuda, so the
    raise itself is checked by tests/e2e on the GPU.)"""
    backend = AttentionBackendEnum["FLASHCORE"].get_class()
    assert backend is FlashCoreBackend
    assert backend.validate_configuration(device_capability=H100, **SUPPORTED._asdict()) == []
    bad = SUPPORTED._replace(use_non_causal=True, kv_cache_dtype="fp8_e5m2")
    assert backend.validate_configuration(device_capability=H100, **bad._asdict()) == [
        "FLASHCORE: fp8 KV cache format 'fp8_e5m2' is not supported (only e4m3 with per-tensor "
        "scales: --kv-cache-dtype fp8)",
        "FLASHCORE: non-causal (bidirectional) decoder attention is not supported"]


IMPL_REFUSALS = [
    (dict(use_alibi_sqrt=True), "square-root ALiBi"),
    (dict(kv_cache_dtype="fp8_e5m2"), "fp8 KV cache format"),
    (dict(attn_type=AttentionType.ENCODER_DECODER), "attention type"),
    (dict(chunk_lookback=64), "chunk_lookback"),
    (dict(head_size=40 + 1), "head size 41"),
    (dict(some_future_option=3), "some_future_option=3"),
]


@pytest.mark.parametrize("change, expected", IMPL_REFUSALS, ids=[e for _, e in IMPL_REFUSALS])
def test_impl_refuses_what_never_reaches_selection(change, expected):
    """Some options only reach the layer's constructor."""
    args = dict(num_heads=2, head_size=64, scale=0.125, num_kv_heads=2, alibi_slopes=None,
                sliding_window=None, kv_cache_dtype="auto")
    args.update(change)
    with pytest.raises(NotImplementedError, match=expected):
        FlashCoreImpl(**args)


def test_impl_accepts_window_cap_alibi_sinks_fp8():
    impl = FlashCoreImpl(2, 64, 0.125, 1, alibi_slopes=[0.5, 0.25], sliding_window=128,
                         kv_cache_dtype="fp8", logits_soft_cap=30.0, sinks=torch.zeros(2))
    assert impl.sliding_window == 128 and impl.logits_soft_cap == 30.0 and impl.fp8_cache
    assert impl.alibi_slopes.tolist() == [0.5, 0.25] and impl.sinks.shape == (2,)
    with pytest.raises(ValueError, match="sinks has 3 entries for 2 query heads"):
        FlashCoreImpl(2, 64, 0.125, 1, sinks=torch.zeros(3))


def test_impl_accepts_vllm_defaults():
    impl = FlashCoreImpl(8, 128, 0.088, 2, None, None, "auto", None, AttentionType.DECODER, None)
    assert (impl.num_heads, impl.num_kv_heads, impl.head_size) == (8, 2, 128)
    assert FlashCoreImpl(4, 64, 0.125, 4, None, None, "auto", 0.0).num_kv_heads == 4  # cap 0 = off
    assert not impl.supports_dcp and not impl.supports_pcp
