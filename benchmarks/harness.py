"""Drive attention backends exactly as vLLM 0.26 does, on identical inputs, and time them.

For each vLLM backend (FLASHCORE, FLASH_ATTN, TRITON_ATTN, FLASHINFER) this builds a real
``Attention`` layer (which builds the backend's Impl and registers the layer in the static
forward context, where FlashInfer's builder looks for it), the backend's metadata builder from
the layer's KV-cache spec, and per step: ``builder.build(0, CommonAttentionMetadata)``, then
``impl.do_kv_cache_update`` and ``impl.forward`` as ``Attention`` calls them. Two extra rows:
``FLASHCORE_KERNEL`` (our launcher called directly, no vLLM) and ``TORCH_SDPA`` (dense
tensors, no paging: a floor, not a competitor).

Timed is ``impl.forward`` (the attention itself); the cache write is timed apart
(``update_ms``) and ``build`` is host time (``build_ms``). GPU times are medians from
``triton.testing.do_bench`` (CUDA events, L2 flushed between runs) or, with timer="graph",
``do_bench_cudagraph`` (CUDA-graph replays, no launch overhead, as vLLM's decode graphs run).

A case's ``Variant`` (``batches.py``) sets the layer's options as a model would: an fp8 KV cache
is ``CacheConfig(cache_dtype="fp8")`` (the layer then gets ``kv_cache_dtype="fp8"`` and default
per-tensor scales of 1.0, and the cache is vLLM's uint8 tensor), a sliding window is
``Attention(per_layer_sliding_window=W)``. Where the layer quantises the query for its backend
(``layer.query_quant``: FLASH_ATTN, and TRITON_ATTN on CUDA, with an fp8 cache), the runner does
so once and times ``forward`` on the fp8 query, as vLLM runs it; their ``max_abs_err`` against the
reference, which takes the bf16 query, includes that rounding. A backend whose class declares
no support for the variant is skipped with the reason.
"""

import contextlib
import dataclasses
import importlib.util
import itertools
import math
import statistics
import time
import traceback

import torch

import batches
import geometry

VLLM_BACKENDS = ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN", "FLASHINFER")
EXTRA_BACKENDS = ("FLASHCORE_KERNEL", "TORCH_SDPA")
ALL_BACKENDS = VLLM_BACKENDS + EXTRA_BACKENDS
_layer_ids = itertools.count()


class Skip(Exception):
    """A backend that cannot run this case; the message is recorded as the reason."""


# vLLM objects -----------------------------------------------------------------------------

def backend_class(name: str):
    """The backend class vLLM would use for ``name``; FLASHCORE comes from our plugin."""
    from vllm.plugins import load_general_plugins
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    load_general_plugins()
    try:
        member = AttentionBackendEnum[name]
    except (KeyError, ValueError):
        raise Skip(f"{name} is not in AttentionBackendEnum (is the flashcore plugin installed?)")
    try:
        return member.get_class()
    except Exception as e:  # CUSTOM unregistered, or an import failing on this platform
        raise Skip(f"{name}: cannot load backend class: {type(e).__name__}: {e}")


_configs: dict = {}


def vllm_config(g: geometry.Geometry, dtype: torch.dtype, page_size: int, max_model_len: int,
                max_num_seqs: int, max_num_batched_tokens: int, device: torch.device,
                variant: batches.Variant):
    """A real VllmConfig for a one-layer model of this geometry, from a local config.json.
    One per variant, the window included: FLASH_ATTN's builder plans for the sliding windows
    of every layer registered in its config."""
    key = (g, dtype, page_size, max_model_len, max_num_seqs, max_num_batched_tokens, device.type,
           variant)
    if key in _configs:
        return _configs[key]
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig

    dtype_name = str(dtype).removeprefix("torch.")
    model_dir = geometry.write_model_dir(g, num_layers=1, dtype=dtype_name)
    model = ModelConfig(model=str(model_dir), tokenizer=None, skip_tokenizer_init=True,
                        dtype=dtype_name, max_model_len=max_model_len, seed=0)
    scheduler = SchedulerConfig(max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                                max_num_batched_tokens=max_num_batched_tokens,
                                is_encoder_decoder=False)
    cache = CacheConfig(block_size=page_size, cache_dtype=variant.kv_cache_dtype)
    config = VllmConfig(model_config=model, cache_config=cache,
                        scheduler_config=scheduler, device_config=DeviceConfig(device=device.type))
    _configs[key] = config
    return config


def config_for(inp: batches.Inputs, g: geometry.Geometry):
    spec = inp.spec
    page = inp.page_size
    max_model_len = max(4096, -(-spec.max_seq_len // page) * page)
    max_num_seqs = max(256, spec.num_reqs)
    tokens = max(8192, spec.num_tokens, max_num_seqs)
    return vllm_config(g, inp.dtype, page, max_model_len, max_num_seqs, tokens, inp.qkv.device,
                       spec.variant)


def common_metadata(inp: batches.Inputs):
    from vllm.v1.attention.backend import CommonAttentionMetadata

    spec = inp.spec
    seq_lens_cpu = torch.tensor(spec.seq_lens, dtype=torch.int32)
    q_lens_cpu = torch.tensor(spec.query_lens, dtype=torch.int32)
    return CommonAttentionMetadata(
        query_start_loc=inp.query_start_loc, query_start_loc_cpu=inp.query_start_loc.cpu(),
        seq_lens=inp.seq_lens, num_reqs=spec.num_reqs, num_actual_tokens=spec.num_tokens,
        max_query_len=spec.max_query_len, max_seq_len=spec.max_seq_len,
        block_table_tensor=inp.block_table, slot_mapping=inp.slot_mapping, causal=True,
        seq_lens_cpu_upper_bound=seq_lens_cpu, is_prefilling=(q_lens_cpu > 1).to(inp.qkv.device),
        _seq_lens_cpu=seq_lens_cpu, _num_computed_tokens_cpu=seq_lens_cpu - q_lens_cpu)


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def unsupported(cls, variant: batches.Variant) -> list[str]:
    """What the backend class declares it cannot run of ``variant``, in the words of vLLM's
    ``validate_configuration`` (the selector's check, which an explicit backend bypasses)."""
    reasons = []
    if not cls.supports_kv_cache_dtype(variant.kv_cache_dtype):
        reasons.append(f"kv_cache_dtype {variant.kv_cache_dtype!r} not supported "
                       f"({cls.__name__}.supports_kv_cache_dtype)")
    if variant.sliding_window and not cls.supports_sliding_window():
        reasons.append(f"sliding window not supported ({cls.__name__}.supports_sliding_window)")
    return reasons


def _stride_order(cls) -> tuple[int, ...]:
    try:
        return tuple(cls.get_kv_cache_stride_order())
    except (AttributeError, NotImplementedError):
        return (0, 1, 2, 3)


# Runners: each has .forward(), optional .update(), .output, .cache --------------------------

class VllmRunner:
    """One backend as vLLM's model runner drives it: layer, builder, build, update, forward."""

    def __init__(self, name: str, inp: batches.Inputs, g: geometry.Geometry):
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.layers.attention import Attention

        cls = backend_class(name)
        reasons = unsupported(cls, inp.spec.variant)
        if reasons:
            raise Skip(f"{name}: " + "; ".join(reasons))
        self.config = config_for(inp, g)
        self.inp = inp
        with set_current_vllm_config(self.config), default_dtype(inp.dtype):
            prefix = f"model.layers.{next(_layer_ids)}.self_attn.attn"
            layer = Attention(g.num_q_heads, g.head_dim, 1.0 / math.sqrt(g.head_dim),
                              num_kv_heads=g.num_kv_heads, cache_config=self.config.cache_config,
                              per_layer_sliding_window=inp.spec.variant.sliding_window,
                              prefix=prefix, attn_backend=cls)
            self.layer = layer.to(inp.qkv.device)
            self.layer.process_weights_after_loading(inp.dtype)
            self.query = self._layer_query()
            kv_spec = self.layer.get_kv_cache_spec(self.config)
            if kv_spec.block_size != inp.page_size:
                # A sliding-window layer asks for the backend's smallest page; vLLM scales it to
                # the model's page (unify_kv_cache_spec_page_size).
                kv_spec = dataclasses.replace(kv_spec, block_size=inp.page_size)
            self.builder = cls.get_builder_cls()(kv_spec, [prefix], self.config, inp.qkv.device)
            self.cache = inp.kv_cache(_stride_order(cls))
            self.common = common_metadata(inp)
            self.metadata = self.build()
        self.impl = self.layer.impl
        self.writes_in_forward = cls.forward_includes_kv_cache_update
        self.output = torch.empty_like(inp.query)

    def _layer_query(self) -> torch.Tensor:
        """The query ``impl.forward`` gets: quantised to fp8 first where ``Attention.forward``
        does it (its ``query_quant``, built for backends that take an fp8 query with an fp8
        cache). Done once: in vLLM torch.compile fuses it into the op before attention."""
        query = self.inp.query
        if self.layer.query_quant is None:
            return query
        fp8, _ = self.layer.query_quant(query.flatten(1), self.layer._q_scale)
        return fp8.view(query.shape)

    def build(self):
        return self.builder.build(common_prefix_len=0, common_attn_metadata=self.common)

    def update(self):
        if not self.writes_in_forward:
            self.impl.do_kv_cache_update(self.layer, self.inp.key, self.inp.value, self.cache,
                                         self.inp.slot_mapping)

    def forward(self):
        self.impl.forward(self.layer, self.query, self.inp.key, self.inp.value, self.cache,
                          self.metadata, self.output)


class KernelRunner:
    """Our launchers called directly, as a user outside vLLM would. ``planned``: with a decode
    plan, as the engine runs; without, every decode gets ``config.num_kv_splits``'s count (what
    a sweep that forces that count measures). ``wave``: the programs the plan fills, in place of
    ``config.decode_wave``'s (its grid then has that wave's rows)."""

    def __init__(self, inp: batches.Inputs, planned: bool = True, wave: int | None = None):
        import flashcore_kernels as fk
        from flashcore_kernels import config

        self.fk, self.inp = fk, inp
        self.cache = inp.kv_cache()
        self.scales = {}
        if inp.spec.variant.fp8:
            self.cache = self.cache.view(batches.FP8)
            scale = torch.full((1,), batches.FP8_SCALE, dtype=torch.float32, device=inp.qkv.device)
            self.scales = dict(k_scale=scale, v_scale=scale)
        self.workspace = fk.SplitKVWorkspace.allocate(inp.spec.num_reqs, inp.num_q_heads,
                                                      inp.num_kv_heads, inp.head_dim,
                                                      inp.cache_dtype, inp.qkv.device)
        # Planned once for the batch, as the engine's builder does each step (outside the
        # forward it times).
        self.decode_plan = None
        if planned:
            wave = wave or config.decode_wave(inp.qkv.device,
                                              inp.num_q_heads // inp.num_kv_heads, inp.head_dim,
                                              inp.cache_dtype)
            self.decode_plan = fk.DecodePlan.allocate(inp.spec.num_reqs, inp.num_kv_heads, wave,
                                                      inp.qkv.device)
            self.tile_tokens = config.planned_decode_tiles(
                inp.spec.num_reqs, inp.num_kv_heads, inp.qkv.device,
                inp.num_q_heads // inp.num_kv_heads, inp.head_dim, inp.query.dtype,
                inp.cache_dtype).block_n
            self.plan()
        self.output = torch.empty_like(inp.query)

    def plan(self):
        inp = self.inp
        self.decode_plan.update(inp.query_start_loc, inp.seq_lens, inp.spec.num_reqs,
                                inp.spec.variant.sliding_window, self.tile_tokens)

    def update(self):
        self.fk.write_kv_cache(self.inp.key, self.inp.value, self.cache, self.inp.slot_mapping,
                               **self.scales)

    def forward(self):
        inp = self.inp
        self.fk.paged_attention(inp.query, self.cache, inp.query_start_loc, inp.seq_lens,
                                inp.block_table, max_query_len=inp.spec.max_query_len,
                                max_seq_len=inp.spec.max_seq_len,
                                sliding_window=inp.spec.variant.sliding_window, out=self.output,
                                workspace=self.workspace, decode_plan=self.decode_plan,
                                check_lengths=False, **self.scales)


class SdpaRunner:
    """torch SDPA on dense, contiguous K/V (no paging): a floor for uniform batches only."""

    has_cache_write = False

    def __init__(self, inp: batches.Inputs, free_bytes: int):
        spec = inp.spec
        if spec.variant != batches.Variant():
            raise Skip(f"{spec.variant.label.strip()}: the floor is dense K/V in the model dtype, "
                       "no window")
        if not spec.is_uniform:
            raise Skip("ragged batch: SDPA needs equal lengths")
        q_len, s = spec.query_lens[0], spec.seq_lens[0]
        if 1 < q_len < s:
            raise Skip("chunked prefill: SDPA's is_causal is top-left aligned")
        kv = batches.kv_cache_bytes(spec, inp.num_kv_heads, inp.head_dim, inp.page_size,
                                    inp.qkv.element_size())
        if 3 * kv > free_bytes:
            raise Skip(f"dense K/V copies need ~{3 * kv / 2**30:.1f} GiB")
        self.inp, self.cache = inp, inp.kv_cache()
        self.causal = q_len > 1
        b, h = spec.num_reqs, inp.num_q_heads
        self.q = inp.query.reshape(b, q_len, h, inp.head_dim).transpose(1, 2).contiguous()
        self.k = self.v = None
        self.o = torch.empty_like(self.q)

    def update(self):
        # The cache write is not what this floor measures; gather dense K/V once, after the
        # new tokens are in the cache, so the result is comparable with the paged backends.
        if self.k is None:
            self.k, self.v = batches.dense_kv(self.inp, self.cache)

    def forward(self):
        self.o = torch.nn.functional.scaled_dot_product_attention(
            self.q, self.k, self.v, is_causal=self.causal, enable_gqa=True)

    @property
    def output(self):
        b, h, q, d = self.o.shape
        return self.o.transpose(1, 2).reshape(b * q, h, d)


def make_runner(name: str, inp: batches.Inputs, g: geometry.Geometry, free_bytes: int):
    if name == "FLASHCORE_KERNEL":
        return KernelRunner(inp)
    if name == "TORCH_SDPA":
        return SdpaRunner(inp, free_bytes)
    if name not in VLLM_BACKENDS:
        raise Skip(f"unknown backend {name}")
    if inp.qkv.device.type != "cuda" and name in ("FLASH_ATTN", "FLASHINFER"):
        raise Skip(f"{name} needs a CUDA GPU")
    return VllmRunner(name, inp, g)


# Timing -----------------------------------------------------------------------------------

def load_version(name: str, path: str):
    """A version of one of the kernels' files, ``path``, as the module
    ``flashcore_kernels.ab_<name>`` of the installed package, so that its relative imports
    resolve and its kernels are its own (how ``ab_prefill.py`` and ``ab_decode.py`` set versions
    side by side in one process)."""
    spec = importlib.util.spec_from_file_location(f"flashcore_kernels.ab_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_all_ms(fn, device, timer: str, warmup_ms: int, rep_ms: int) -> list[float]:
    """GPU time of every timed run of ``fn`` in ms (``timer``: events, graph); on the CPU,
    one wall-clock call."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return [(time.perf_counter() - start) * 1e3]
    import triton.testing

    if timer == "graph":
        times = triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="all")
    else:
        times = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
    return list(times) if isinstance(times, (list, tuple)) else [float(times)]


def time_ms(fn, device, timer: str, warmup_ms: int, rep_ms: int) -> float:
    """Median of ``time_all_ms``."""
    return statistics.median(time_all_ms(fn, device, timer, warmup_ms, rep_ms))


KERNEL_DTYPE = torch.bfloat16  # of kernel_ms' inputs


def kernel_ms(spec: batches.BatchSpec, g: geometry.Geometry, planned: bool = True) -> float:
    """Milliseconds of our launcher alone on one batch of random inputs: CUDA-graph replay,
    KERNEL_DTYPE, page 16, random page order. The tile sweeps (tune_tiles.py), the
    kernel-version comparisons (ab_prefill.py, decode_times.py) time with it."""
    inp = batches.make_inputs(spec, g.num_q_heads, g.num_kv_heads, g.head_dim, dtype=KERNEL_DTYPE)
    try:
        runner = KernelRunner(inp, planned)
        # The graph timer first runs forward on a stream of its own, which does not wait for the
        # inputs and the plan this stream is still writing.
        synchronize(inp.qkv.device)
        return time_ms(runner.forward, inp.qkv.device, "graph", 25, 100)
    finally:
        release(inp)


def kernel_rate(spec: batches.BatchSpec, g: geometry.Geometry, suite: str,
                planned: bool = True) -> float:
    """TFLOP/s (``suite`` "prefill") or TB/s of KV read (decode) of ``kernel_ms``."""
    ms = kernel_ms(spec, g, planned)
    if suite == "prefill":
        return batches.attention_flops(spec, g.num_q_heads, g.head_dim) / ms / 1e9
    return batches.attention_bytes(spec, g.num_q_heads, g.num_kv_heads, g.head_dim,
                                   KERNEL_DTYPE.itemsize) / ms / 1e9


def copy_bandwidth_gbps(device, nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, "events", 25, 200)
    return 2 * nbytes / (ms * 1e-3) / 1e9


# One case, all backends ---------------------------------------------------------------------

def free_memory(device) -> int:
    if device.type != "cuda":
        return 1 << 40
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info(device)[0]


def measure_backend(name, inp, g, *, timer="events", warmup_ms=25, rep_ms=100, check=True,
                    keep_times=False, on_runner=None):
    """One backend on one prepared batch; returns a result dict (never raises). ``keep_times``
    adds every timed run (``times_ms``); ``on_runner(runner)`` is called after timing."""
    device = inp.qkv.device
    rec = {"backend": name, "status": "ok"}
    try:
        t0 = time.perf_counter()
        runner = make_runner(name, inp, g, free_memory(device))
        runner.output.fill_(float("nan"))
        runner.update()
        runner.forward()
        synchronize(device)
        rec["first_call_s"] = round(time.perf_counter() - t0, 3)
        if check:
            rec["max_abs_err"] = batches.reference_error(inp, runner.cache, runner.output)
        if hasattr(runner, "build"):
            t1 = time.perf_counter()
            runner.build()
            rec["build_ms"] = (time.perf_counter() - t1) * 1e3
        times = time_all_ms(runner.forward, device, timer, warmup_ms, rep_ms)
        rec["ms"] = statistics.median(times)
        rec["reps"] = len(times)
        if keep_times:
            rec["times_ms"] = times
        if getattr(runner, "has_cache_write", True):
            rec["update_ms"] = time_ms(runner.update, device, timer, warmup_ms, rep_ms)
        rec["timer"] = timer if device.type == "cuda" else "wall (CPU, one call)"
        if on_runner is not None:
            on_runner(runner)
    except Skip as e:
        rec.update(status="skipped", reason=str(e))
    except Exception as e:  # a failing backend must not stop the sweep
        rec.update(status="failed", reason=f"{type(e).__name__}: {str(e)[:400]}",
                   traceback=traceback.format_exc(limit=6)[-2000:])
    finally:
        with contextlib.suppress(Exception):
            synchronize(device)
    return rec


def add_units(rec: dict, inp: batches.Inputs, copy_gbps: float | None) -> dict:
    """GB/s of attention bytes, TFLOP/s of causal FLOPs, and percent of copy bandwidth."""
    if rec.get("status") != "ok" or not rec.get("ms"):
        return rec
    spec, sec = inp.spec, rec["ms"] * 1e-3
    nbytes = batches.attention_bytes(spec, inp.num_q_heads, inp.num_kv_heads, inp.head_dim,
                                     inp.qkv.element_size())
    flops = batches.attention_flops(spec, inp.num_q_heads, inp.head_dim)
    rec["gbps"] = nbytes / sec / 1e9
    rec["tflops"] = flops / sec / 1e12
    if copy_gbps:
        rec["pct_copy_bw"] = 100.0 * rec["gbps"] / copy_gbps
    return rec


def prepare(spec: batches.BatchSpec, g: geometry.Geometry, *, page_size=16,
            dtype=torch.bfloat16, device="cuda", seed=0, page_order="random") -> batches.Inputs:
    """Random inputs for one batch (``batches.make_inputs``), or ``Skip`` when its KV cache
    would not fit."""
    device = torch.device(device)
    elem = torch.empty((), dtype=dtype).element_size()
    need = batches.kv_cache_bytes(spec, g.num_kv_heads, g.head_dim, page_size, elem)
    free = free_memory(device)
    if need * 1.15 + (1 << 30) > free:
        raise Skip(f"KV cache needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    return batches.make_inputs(spec, g.num_q_heads, g.num_kv_heads, g.head_dim, page_size,
                               dtype, device, seed, page_order)


def release(inp: batches.Inputs | None) -> None:
    if inp is not None:
        device = inp.qkv.device
        inp.free_caches()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def case_record(spec: batches.BatchSpec, g: geometry.Geometry, page_size: int, dtype) -> dict:
    elem = torch.empty((), dtype=dtype).element_size()
    return {"label": spec.label, "geometry": g.name, "num_q_heads": g.num_q_heads,
            "num_kv_heads": g.num_kv_heads, "head_dim": g.head_dim, "page_size": page_size,
            "dtype": str(dtype).removeprefix("torch."),
            "kv_cache_dtype": spec.variant.kv_cache_dtype,
            "sliding_window": spec.variant.sliding_window, "num_reqs": spec.num_reqs,
            "num_tokens": spec.num_tokens, "seq_lens": _summary(spec.seq_lens),
            "query_lens": _summary(spec.query_lens),
            "kv_cache_gib": batches.kv_cache_bytes(spec, g.num_kv_heads, g.head_dim, page_size,
                                                   elem) / 2**30,
            "flops": batches.attention_flops(spec, g.num_q_heads, g.head_dim),
            "bytes": batches.attention_bytes(spec, g.num_q_heads, g.num_kv_heads, g.head_dim, elem),
            "results": []}


def run_case(spec: batches.BatchSpec, g: geometry.Geometry, backends, *, page_size=16,
             dtype=torch.bfloat16, device="cuda", timer="events", warmup_ms=25, rep_ms=100,
             check=True, copy_gbps=None, seed=0, log=print) -> dict:
    """All ``backends`` on one batch with identical inputs; returns the case record."""
    case = case_record(spec, g, page_size, dtype)
    inp = None
    try:
        inp = prepare(spec, g, page_size=page_size, dtype=dtype, device=device, seed=seed)
        for name in backends:
            rec = add_units(measure_backend(name, inp, g, timer=timer, warmup_ms=warmup_ms,
                                            rep_ms=rep_ms, check=check), inp, copy_gbps)
            case["results"].append(rec)
            log("  " + format_result(spec.label, g.name, rec))
    except Skip as e:
        case["skipped"] = str(e)
        log(f"  skip {spec.label} [{g.name}]: {e}")
    finally:
        release(inp)
    return case


def _summary(values) -> str | list:
    values = list(values)
    if len(set(values)) == 1:
        return f"{len(values)}x{values[0]}"
    return values if len(values) <= 8 else f"{len(values)} values, max {max(values)}"


def format_result(label: str, geom: str, rec: dict) -> str:
    head = f"{label:<34} {geom:<12} {rec['backend']:<17}"
    if rec["status"] != "ok":
        return f"{head} {rec['status']}: {rec.get('reason', '')[:150]}"
    parts = [f"{rec['ms'] * 1e3:9.1f} us", f"{rec.get('gbps', 0):8.1f} GB/s",
             f"{rec.get('tflops', 0):7.1f} TFLOP/s"]
    if "pct_copy_bw" in rec:
        parts.append(f"{rec['pct_copy_bw']:5.1f}% copy BW")
    if "max_abs_err" in rec:
        parts.append(f"err {rec['max_abs_err']:.1e}")
    return head + " " + "  ".join(parts)
