"""``do_kv_cache_update`` + ``forward`` through the impl (and through vLLM's own ``Attention``
layer) against the float64 reference, on the test session's device: the CPU with the kernels
under Triton's interpreter, or a CUDA GPU with the kernels compiled (tests/conftest.py).

Every case: pages randomly permuted with page 0 unused, a KV cache allocated the way vLLM
allocates it for FLASHCORE (shape + stride order), the whole cache random (so a read of a wrong
slot shows), query/key/value as strided views of one fused QKV tensor, output poisoned with NaN.
The tolerance is the kernel tests' table (``flashcore_kernels.reference.TOLERANCE``, fp16 4e-3:
three times torch SDPA's own fp16 error measured on an H100, DESIGN.md section 5).
"""

import pytest
import torch

pytest.importorskip("vllm")

from vllm.config import CUDAGraphMode, set_current_vllm_config  # noqa: E402
from vllm.forward_context import set_forward_context  # noqa: E402
from vllm.v1.attention.backends.triton_attn import TritonAttentionBackend  # noqa: E402
from vllm.v1.attention.backends.utils import set_kv_cache_layout  # noqa: E402

import flashcore_backend.impl as impl_module  # noqa: E402
from flashcore_backend.backend import FlashCoreBackend  # noqa: E402
from flashcore_backend.impl import FlashCoreImpl  # noqa: E402
from flashcore_backend.metadata import FlashCoreMetadataBuilder  # noqa: E402
from flashcore_kernels.reference import TOLERANCE, paged_attention_reference  # noqa: E402

from .vllm_batch import (BatchSpec, Geometry, allocate_kv_cache, kv_cache_spec,  # noqa: E402
                         make_common_metadata)

LAYER = "model.layers.0.self_attn.attn"


class Step:
    """One attention step of one layer: inputs, the cache before/after, and the reference."""

    def __init__(self, g: Geometry, vllm_config, spec: BatchSpec, *, device, seed=0, pad_tokens=0,
                 pad_reqs=0, max_pages=None):
        self.g, self.spec, self.device = g, spec, device
        self.common, num_pages = make_common_metadata(spec, g, device=device, seed=seed,
                                                      pad_tokens=pad_tokens, pad_reqs=pad_reqs,
                                                      max_pages=max_pages)
        torch.manual_seed(seed)  # data drawn on the CPU, then moved: the same on every device
        self.kv_cache = allocate_kv_cache(num_pages, g, vllm_config, device=device)
        tokens = spec.num_tokens + pad_tokens
        q_width, kv_width = g.num_q_heads * g.head_size, g.num_kv_heads * g.head_size
        self.qkv = torch.randn(tokens, q_width + 2 * kv_width).to(g.dtype).to(device)
        self.query, key, value = self.qkv.split([q_width, kv_width, kv_width], dim=-1)  # 2D views
        self.key = key.view(tokens, g.num_kv_heads, g.head_size)  # strided 3D views, as vLLM's
        self.value = value.view(tokens, g.num_kv_heads, g.head_size)
        self.scale = g.head_size ** -0.5

    def expected_cache(self) -> torch.Tensor:
        """The cache after the write, built by plain indexing (slot -1 rows skipped)."""
        cache = self.kv_cache.clone()
        d = self.g.head_size
        for t, slot in enumerate(self.common.slot_mapping.tolist()):
            if slot >= 0:
                page, offset = divmod(slot, self.g.block_size)
                cache[page, :, offset, :d] = self.key[t]
                cache[page, :, offset, d:] = self.value[t]
        return cache

    def reference(self, cache) -> torch.Tensor:
        real = self.spec.num_tokens
        q = self.query[:real].reshape(real, self.g.num_q_heads, self.g.head_size)
        c = self.common
        return paged_attention_reference(q, cache, c.query_start_loc, c.seq_lens,
                                         c.block_table_tensor, softmax_scale=self.scale)

    def check(self, output, expected_cache):
        real = self.spec.num_tokens
        out = output[:real].reshape(real, self.g.num_q_heads, self.g.head_size)
        assert not torch.isnan(out).any(), "rows of real tokens left unwritten (NaN)"
        err = (out.double() - self.reference(expected_cache)).abs().max().item()
        assert err <= TOLERANCE[self.g.dtype], f"max-abs error {err:.2e}"
        return err


def make_impl(g: Geometry) -> FlashCoreImpl:
    return FlashCoreImpl(g.num_q_heads, g.head_size, g.head_size ** -0.5, g.num_kv_heads, None,
                         None, "auto")


def make_builder(vllm_config, g, device) -> FlashCoreMetadataBuilder:
    with set_current_vllm_config(vllm_config):
        return FlashCoreMetadataBuilder(kv_cache_spec(g), [LAYER], vllm_config, device)


def run_impl(step: Step, builder, impl, *, output_3d=False, metadata=None):
    """vLLM's order: the cache update, then forward writing the preallocated output."""
    expected = step.expected_cache()
    impl.do_kv_cache_update(None, step.key, step.value, step.kv_cache, step.common.slot_mapping)
    assert torch.equal(step.kv_cache, expected), "the cache write differs from plain indexing"
    metadata = metadata or builder.build(0, step.common)
    g, tokens = step.g, step.query.shape[0]
    output = torch.full((tokens, g.num_q_heads * g.head_size), float("nan"), dtype=g.dtype,
                        device=step.device)
    query = step.query
    if output_3d:
        output = output.view(tokens, g.num_q_heads, g.head_size)
        query = query.view(tokens, g.num_q_heads, g.head_size)
    returned = impl.forward(None, query, step.key, step.value, step.kv_cache, metadata, output)
    assert returned is output
    return output, expected


CASES = {
    # name: (geometry, batch); decodes first, as vLLM orders them
    "decode_only": (Geometry(), BatchSpec([17, 5, 40, 1], [1, 1, 1, 1])),
    "prefill_only": (Geometry(), BatchSpec([20, 33], [20, 33])),
    "mixed_chunked_prefill": (Geometry(), BatchSpec([9, 40, 18, 64], [1, 1, 6, 30])),
    "mqa_7_to_1_head64": (Geometry(num_q_heads=7, num_kv_heads=1, head_size=64),
                          BatchSpec([33, 21], [1, 12])),
    "gqa_head128_page32": (Geometry(num_q_heads=4, num_kv_heads=1, head_size=128, block_size=32),
                           BatchSpec([70, 3, 40], [1, 3, 17])),
    "mha_head80": (Geometry(num_q_heads=2, num_kv_heads=2, head_size=80), BatchSpec([25], [25])),
    # The heads one rank holds under tensor parallelism: Llama-3-8B's 32/8 at TP 2 and TP 4.
    "tp2_rank_16_to_4_head128": (Geometry(num_q_heads=16, num_kv_heads=4, head_size=128),
                                 BatchSpec([50, 9, 30], [1, 9, 12])),
    "tp4_rank_8_to_2_head128": (Geometry(num_q_heads=8, num_kv_heads=2, head_size=128),
                                BatchSpec([50, 9, 30], [1, 9, 12])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_impl_matches_reference(make_config, device, name):
    g, spec = CASES[name]
    vllm_config = make_config(g)
    step = Step(g, vllm_config, spec, device=device, seed=len(name))
    output, expected = run_impl(step, make_builder(vllm_config, g, device), make_impl(g))
    step.check(output, expected)


def test_forward_hands_over_both_length_bounds(make_config, device, monkeypatch):
    """The launcher picks the prefill kernel from vLLM's host-side max_query_len and
    max_seq_len (``config.short_prefills_on_triton``): forward passes both on."""
    seen, paged_attention = [], impl_module.paged_attention

    def recording(*args, **kwargs):
        seen.append((kwargs["max_query_len"], kwargs["max_seq_len"]))
        return paged_attention(*args, **kwargs)

    g, spec = CASES["mixed_chunked_prefill"]
    vllm_config = make_config(g)
    step = Step(g, vllm_config, spec, device=device)
    monkeypatch.setattr(impl_module, "paged_attention", recording)
    output, expected = run_impl(step, make_builder(vllm_config, g, device), make_impl(g))
    step.check(output, expected)
    assert seen == [(max(spec.query_lens), max(spec.seq_lens))]


def test_padded_tokens_and_3d_output(make_config, device):
    """Full-CUDA-graph padding: extra tokens with slot -1 and no sequence, num_actual_tokens
    counting them. Nothing is written for them, in the cache or the output."""
    g = Geometry()
    vllm_config = make_config(g)
    step = Step(g, vllm_config, BatchSpec([12, 30], [1, 7]), device=device, seed=3, pad_tokens=5,
                pad_reqs=2)
    output, expected = run_impl(step, make_builder(vllm_config, g, device), make_impl(g),
                                output_3d=True)
    step.check(output, expected)
    assert torch.isnan(output[step.spec.num_tokens:]).all()


def test_profiling_run_zeroes_the_output_and_fused_output_quant_is_refused(device):
    g = Geometry()
    impl = make_impl(g)
    output = torch.full((6, g.num_q_heads * g.head_size), float("nan"), dtype=g.dtype,
                        device=device)
    q = torch.randn(6, g.num_q_heads * g.head_size).to(g.dtype).to(device)
    no_cache = torch.empty(0, device=device)
    assert impl.forward(None, q, None, None, no_cache, None, output) is output
    assert (output == 0).all()
    with pytest.raises(NotImplementedError, match="output quantization"):
        impl.forward(None, q, None, None, no_cache, None, output,
                     output_scale=torch.ones(1, device=device))
    impl.do_kv_cache_update(None, q, q, torch.tensor([], device=device),
                            torch.zeros(6, dtype=torch.long, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("head_size", [32, 64])
def test_profiling_run_compiles_what_serving_steps_launch(make_config, device, head_size):
    """vLLM's start-up runs no mixed batch through attention; the impl's profiling-run call
    compiles the cache write and the prefill kernels then (warm_up), so the first step that
    serves requests, with other lengths, sequence count and block table, compiles none of them.
    At head 64 on Hopper that step is a batch of short prefills, which the Triton prefill
    kernel takes (config.short_prefills_on_triton)."""
    if device.type != "cuda":
        pytest.skip("the CPU interpreter compiles nothing")
    import triton

    g = Geometry(head_size=head_size)
    vllm_config = make_config(g)
    with set_current_vllm_config(vllm_config):  # as the model's construction builds the impl
        impl = make_impl(g)
    profile = Step(g, vllm_config, BatchSpec([64], [64]), device=device)
    output = torch.empty(64, g.num_q_heads * g.head_size, dtype=g.dtype, device=device)
    impl.forward(None, profile.query, profile.key, profile.value, torch.empty(0, device=device),
                 None, output)
    assert (output == 0).all()
    compiled = []
    hook = lambda *, fn, **_: compiled.append(fn.name)
    triton.knobs.runtime.jit_post_compile_hook = hook
    try:
        step = Step(g, vllm_config, BatchSpec([9, 40, 18, 64, 33], [1, 1, 6, 30, 33]),
                    device=device, seed=5, max_pages=40)
        output, expected = run_impl(step, make_builder(vllm_config, g, device), impl)
    finally:
        triton.knobs.runtime.jit_post_compile_hook = None
    step.check(output, expected)
    kernels = {"prefill_kernel", "hopper_prefill_kernel", "write_kv_cache_kernel"}
    assert not kernels & set(compiled), compiled


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_declared_layout_is_what_the_kernels_read(make_config, device, layout):
    """get_kv_cache_shape + get_kv_cache_stride_order give TRITON_ATTN's convention, and a
    cache allocated that way (as vLLM's runner does) is read and written correctly."""
    g = Geometry()
    vllm_config = make_config(g)
    set_kv_cache_layout(layout)
    try:
        with set_current_vllm_config(vllm_config):
            for layers in (False, True):
                assert (FlashCoreBackend.get_kv_cache_stride_order(layers)
                        == TritonAttentionBackend.get_kv_cache_stride_order(layers))
        assert (FlashCoreBackend.get_kv_cache_shape(10, 16, 2, 32)
                == TritonAttentionBackend.get_kv_cache_shape(10, 16, 2, 32) == (10, 2, 16, 64))
        step = Step(g, vllm_config, BatchSpec([9, 40, 18], [1, 1, 6]), device=device, seed=11)
    finally:
        set_kv_cache_layout(None)
    physical = (0, 2, 1, 3) if layout == "NHD" else (0, 1, 2, 3)
    assert step.kv_cache.permute(*physical).is_contiguous()
    output, expected = run_impl(step, make_builder(vllm_config, g, device), make_impl(g))
    step.check(output, expected)


def test_through_vllm_attention_layer(make_config, device):
    """vLLM's own Attention layer drives our impl (on CUDA through the ``torch.ops.vllm`` custom
    ops, without a GPU by direct call): it looks up AttentionBackendEnum[get_name()], calls
    do_kv_cache_update, then forward."""
    from vllm.model_executor.layers.attention import Attention

    g = Geometry()
    vllm_config = make_config(g)
    name = "model.layers.7.self_attn.attn"
    step = Step(g, vllm_config, BatchSpec([9, 40, 18], [1, 1, 6]), device=device, seed=5)
    expected = step.expected_cache()
    with set_current_vllm_config(vllm_config):
        layer = Attention(g.num_q_heads, g.head_size, step.scale, g.num_kv_heads,
                          cache_config=vllm_config.cache_config, prefix=name,
                          attn_backend=FlashCoreBackend)
        assert isinstance(layer.impl, FlashCoreImpl) and layer.backend.name == "CUSTOM"
        layer.kv_cache = step.kv_cache
        metadata = make_builder(vllm_config, g, device).build(0, step.common)
        with set_forward_context({name: metadata}, vllm_config,
                                 slot_mapping={name: step.common.slot_mapping}):
            output = layer(step.query, step.key.flatten(1), step.value.flatten(1))
    assert torch.equal(step.kv_cache, expected)
    step.check(output, expected)


def refill(buffers, step: Step, builder) -> None:
    """The runner's in-place update of the persistent metadata buffers for the next step, and
    its build of that step's metadata, which rewrites the decode plan in place (the metadata
    object itself is not what a replay reads)."""
    for name in ("query_start_loc", "seq_lens", "block_table_tensor", "slot_mapping"):
        getattr(buffers, name).copy_(getattr(step.common, name))
    builder.build(0, buffers.replace(max_query_len=step.common.max_query_len,
                                     max_seq_len=step.common.max_seq_len))


def replay_simulated(step: Step, buffers, captured, builder, impl):
    """Without a GPU: refill the buffers, then run with the captured metadata object."""
    refill(buffers, step, builder)
    return run_impl(step, builder, impl, metadata=captured)


def replay_in_cuda_graph(step: Step, buffers, captured, builder, impl):
    """On CUDA: capture the cache update and forward into a real CUDA graph while the persistent
    buffers (metadata, QKV, cache, output) hold the dummy capture batch, then refill them in
    place with ``step``'s batch and replay the graph."""
    g, tokens = step.g, step.query.shape[0]
    qkv, cache_before = step.qkv.clone(), step.kv_cache.clone()
    output = torch.full((tokens, g.num_q_heads * g.head_size), float("nan"), dtype=g.dtype,
                        device=step.device)

    def attention_step():
        impl.do_kv_cache_update(None, step.key, step.value, step.kv_cache, captured.slot_mapping)
        returned = impl.forward(None, step.query, step.key, step.value, step.kv_cache, captured,
                                output)
        assert returned is output

    dummy = torch.randn(step.qkv.shape, generator=torch.Generator().manual_seed(1))
    step.qkv.copy_(dummy.to(g.dtype).to(step.device))
    # Warm-up on a side stream, as before any capture: Triton compiles and loads its kernels
    # here, outside the graph.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        attention_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        attention_step()
    torch.cuda.synchronize()

    refill(buffers, step, builder)  # the replay's step, written into the captured addresses
    step.qkv.copy_(qkv)
    step.kv_cache.copy_(cache_before)
    output.fill_(float("nan"))
    expected = step.expected_cache()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(step.kv_cache, expected), "the cache write differs from plain indexing"
    return output, expected


def test_full_graph_capture_then_mixed_replay(make_config, device):
    """A FULL graph captured for mixed batches, replayed on a mixed batch: metadata from
    build_for_cudagraph_capture on vLLM's dummy capture batch (8 requests x 1 token), then the
    same persistent buffers refilled in place with a mixed batch (a chunked prefill among
    decodes, requests padded to 8). On CUDA the cache update and forward are captured in a real
    ``torch.cuda.CUDAGraph`` and replayed; on the CPU the replay is simulated by running forward
    with the captured metadata object."""
    g = Geometry()
    vllm_config = make_config(g)
    builder = make_builder(vllm_config, g, device)
    replay = Step(g, vllm_config, BatchSpec([20, 9, 40], [5, 1, 2]), device=device, seed=7,
                  pad_tokens=0, pad_reqs=5, max_pages=4)
    # extra_pages=0: the dummy batch's pages (1..8) lie inside the replay's 9-page cache, so a
    # warm-up run on the capture values touches only memory the cache owns.
    capture, _ = make_common_metadata(BatchSpec([1] * 8, [1] * 8), g, device=device,
                                      max_pages=4, extra_pages=0)
    assert capture.num_actual_tokens == replay.query.shape[0] == 8
    assert int(capture.block_table_tensor.max()) < replay.kv_cache.shape[0]
    buffers = replay.common.replace(
        query_start_loc=capture.query_start_loc.clone(), seq_lens=capture.seq_lens.clone(),
        block_table_tensor=capture.block_table_tensor.clone(),
        slot_mapping=capture.slot_mapping.clone(), max_query_len=1)

    saved = vllm_config.compilation_config.cudagraph_mode
    try:
        for mode, replays_mixed in [(CUDAGraphMode.FULL, True),
                                    (CUDAGraphMode.FULL_AND_PIECEWISE, False)]:
            vllm_config.compilation_config.cudagraph_mode = mode
            captured = builder.build_for_cudagraph_capture(buffers)
            if replays_mixed:
                if device.type == "cuda":
                    output, expected = replay_in_cuda_graph(replay, buffers, captured, builder,
                                                            make_impl(g))
                else:
                    output, expected = replay_simulated(replay, buffers, captured, builder,
                                                        make_impl(g))
                replay.check(output, expected)
            else:
                # Such a graph is only replayed for uniform decodes; given a prefill it would
                # skip it, which is why FULL mixed capture must take the other branch.
                assert captured.max_query_len == 1
    finally:
        vllm_config.compilation_config.cudagraph_mode = saved
