"""End to end on a GPU: real vLLM ``LLM`` generation with FLASHCORE, compared with FLASH_ATTN.

FLASHCORE is selected the way a user would, ``VLLM_ATTENTION_BACKEND=FLASHCORE`` in the engine's
process (through the installed plugin); FLASH_ATTN and TRITON_ATTN with ``attention_backend=``.
TRITON_ATTN, a second correct backend, calibrates the comparison: FLASHCORE's distance from
FLASH_ATTN is judged against TRITON_ATTN's (bf16 rounding differs between any two kernels).

Each engine runs in its own process (``engine_job.py``) and all prompts of a case go to one
engine. All engines the selected tests need start together, ``FLASHCORE_E2E_PARALLEL`` (4) at a
time on the one GPU, each with a fixed KV-cache size so that concurrent engines don't disturb
each other's memory profiling. Besides the plain geometries: an fp8 (e4m3) KV cache, a
Mistral-style all-layers sliding window, a Gemma-2-style model (logit soft-cap, sliding
window on alternate layers), and on Hopper the Triton prefill kernel, which the Gluon one
replaces there by default. Run with ``-s`` to see the tables:

    .venv/bin/python -m pytest tests/e2e -m gpu -s -q
"""

import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .chat_questions import CHAT_QUESTIONS
from .compare import Comparison, compare_runs, print_table
from .engines import JobRunner, assert_close, flashcore_ok, ok

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
vllm = pytest.importorskip("vllm")

SMOLLM2 = Path(os.environ.get("FLASHCORE_SMOLLM2", "/tmp/models/smollm2"))
PARALLEL = int(os.environ.get("FLASHCORE_E2E_PARALLEL", "4"))

COMMON_KWARGS = dict(
    dtype="bfloat16", load_format="dummy", skip_tokenizer_init=True, max_model_len=1024,
    max_num_seqs=32, max_num_batched_tokens=256,  # small: chunked prefills beside decodes
    gpu_memory_utilization=0.12, kv_cache_memory_bytes=1 << 30, enforce_eager=True, seed=0,
    disable_log_stats=False)


@dataclass(frozen=True)
class Geometry:
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int = 1024
    num_layers: int = 2
    vocab_size: int = 8192


GEOMETRIES = {
    "llama3_8b_heads": Geometry(32, 8, 128),  # Llama-3-8B attention: 32 q / 8 kv, head 128
    "gqa_7_to_1": Geometry(28, 4, 128, hidden_size=1008),  # transformers: hidden % heads == 0
    "mqa": Geometry(16, 1, 128),
    "head64": Geometry(16, 4, 64),
    "head256": Geometry(8, 2, 256),
}


def write_model(path: Path, g: Geometry) -> str:
    from transformers import LlamaConfig

    path.mkdir(parents=True, exist_ok=True)
    LlamaConfig(hidden_size=g.hidden_size, intermediate_size=2 * g.hidden_size,
                num_attention_heads=g.num_q_heads, num_key_value_heads=g.num_kv_heads,
                head_dim=g.head_dim, num_hidden_layers=g.num_layers, vocab_size=g.vocab_size,
                max_position_embeddings=4096, torch_dtype="bfloat16", tie_word_embeddings=False,
                architectures=["LlamaForCausalLM"]).save_pretrained(path)
    return str(path)


# Feature models: transformers configs that vLLM's model code turns into sliding windows and soft
# caps. The window (64) is shorter than most prompts (up to 700 tokens, 24 more generated).
SLIDING_WINDOW = 64
SOFT_CAP = 50.0  # Gemma-2's attn_logit_softcapping


def write_mistral_swa(path: Path) -> str:
    """llama3_8b_heads as MistralForCausalLM with ``sliding_window``: no ``layer_types``, so
    vLLM makes it the model-level window (CacheConfig.sliding_window) of every layer. vLLM's
    Mistral code is Llama's with the same parameter names, so the seeded weights equal the
    llama3_8b_heads model's: that model's FLASH_ATTN run is this one without the window."""
    from transformers import MistralConfig

    g = GEOMETRIES["llama3_8b_heads"]
    path.mkdir(parents=True, exist_ok=True)
    MistralConfig(hidden_size=g.hidden_size, intermediate_size=2 * g.hidden_size,
                  num_attention_heads=g.num_q_heads, num_key_value_heads=g.num_kv_heads,
                  head_dim=g.head_dim, num_hidden_layers=g.num_layers, vocab_size=g.vocab_size,
                  sliding_window=SLIDING_WINDOW, max_position_embeddings=4096,
                  torch_dtype="bfloat16", tie_word_embeddings=False,
                  architectures=["MistralForCausalLM"]).save_pretrained(path)
    return str(path)


def write_gemma2(path: Path) -> str:
    """Gemma-2 attention (8 q / 4 kv heads of 256, scale 256^-0.5, soft cap 50), one sliding
    (64) and one global layer: vLLM's Gemma2 code passes ``logits_soft_cap`` to both and the
    window per layer from ``layer_types``."""
    from transformers import Gemma2Config

    path.mkdir(parents=True, exist_ok=True)
    Gemma2Config(hidden_size=1024, intermediate_size=2048, num_attention_heads=8,
                 num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                 num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"],
                 sliding_window=SLIDING_WINDOW, attn_logit_softcapping=SOFT_CAP,
                 final_logit_softcapping=30.0, vocab_size=8192, max_position_embeddings=4096,
                 torch_dtype="bfloat16", tie_word_embeddings=True,
                 architectures=["Gemma2ForCausalLM"]).save_pretrained(path)
    return str(path)


FEATURE_MODELS = {"mistral_swa": write_mistral_swa, "gemma2": write_gemma2}


def model_folder(model, path: Path) -> str:
    """A job's ``model``: ("path", folder), ("geometry", name) or ("feature", name)."""
    kind, what = model
    if kind == "path":
        return what
    return FEATURE_MODELS[what](path) if kind == "feature" else write_model(path, GEOMETRIES[what])

# Gemma-2 ties the output embedding to the input one, and its norms scale by (1 + weight). With
# the Llama seeding (embeddings N(0, 1), norm weights 1) the residual stream points at the input
# token's own embedding row and every position predicts its input token (soft-capped logits
# saturate). A smaller embedding (RMS 0.05 * sqrt(1024) = 1.6 after Gemma's scaling) and
# post-sublayer norms of gain 10 (weight 9) give ordinary next-token distributions (checked on
# the CPU with transformers: top-1 logprob about -2, top-1/top-2 gap about 0.5, 12% of
# positions predicting their own token), and attention scores of standard deviation ~9 whose
# peaks the soft cap 50 * tanh(s / 50) visibly bends: dropping the cap moves prompt logprobs by
# up to ~1.7 nats (mean ~0.27), against ~0.1-0.2 for bf16-sized noise on attention outputs.
GEMMA2_REINIT = {"embed_std": 0.05, "norm_values": {"post_attention_layernorm": 9.0,
                                                    "post_feedforward_layernorm": 9.0}}

# Per-tensor fp8 scales set on every layer after the seeded weights: |q|, |k|, |v| of the
# llama3_8b_heads model stay under ~8 before RoPE (~11 after), so vLLM's default scale 1.0 would
# not overflow e4m3's +-448 either, but it would not notice a backend that ignores the scales.
# With these, K/V are stored as values up to ~110 and an ignored (or swapped) scale shows.
FP8_KV_SCALES = (0.1, 0.125)


def random_prompts(lengths, vocab_size, seed):
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab_size) for _ in range(n)] for n in lengths]


# Lengths around page (16) and tile boundaries, up to several chunks of 256.
PROMPT_LENGTHS = [1, 3, 15, 16, 17, 31, 64, 100, 129, 250, 400, 700]
GEN = dict(max_tokens=24, logprobs=5, prompt_logprobs=5)


# ---------------------------------------------------------------- the jobs


def backend_kwargs(backend):
    return {} if backend == "FLASHCORE" else {"attention_backend": backend}


def geometry_job(geom, backend, graphs=None):
    g = GEOMETRIES[geom]
    kwargs = dict(COMMON_KWARGS, **backend_kwargs(backend))
    if graphs is not None:  # "default" = vLLM's default (FULL_AND_PIECEWISE, compiled)
        kwargs["enforce_eager"] = False
        if graphs != "default":
            kwargs["compilation_config"] = {"cudagraph_mode": graphs}
    return dict(model=("geometry", geom), llm_kwargs=kwargs, reinit_weights=True, sampling=GEN,
                prompts={"kind": "token_ids",
                         "ids": random_prompts(PROMPT_LENGTHS, g.vocab_size, seed=1)})


def preemption_job(backend, preempt):
    g = GEOMETRIES["llama3_8b_heads"]
    kwargs = dict(COMMON_KWARGS, max_model_len=256, **backend_kwargs(backend))
    if preempt:  # 48 pages x 16 = 768 KV slots for 16 x (120 + 96) tokens: forced preemption
        kwargs["num_gpu_blocks_override"] = 48
    return dict(model=("geometry", "llama3_8b_heads"), llm_kwargs=kwargs, reinit_weights=True,
                sampling=dict(max_tokens=96, logprobs=5),
                prompts={"kind": "token_ids",
                         "ids": random_prompts([120] * 16, g.vocab_size, seed=2)})


def prefix_caching_job(backend):
    """Three 300-token shared prefixes; one request per prefix first, then the rest, whose
    prefixes are then read from cached pages while their suffixes prefill in 64-token chunks."""
    g = GEOMETRIES["llama3_8b_heads"]
    prefixes = random_prompts([300] * 3, g.vocab_size, seed=3)
    suffixes = random_prompts([7, 20, 33, 48, 61, 90] * 3, g.vocab_size, seed=4)
    ids = [prefixes[i % 3] + s for i, s in enumerate(suffixes)]
    kwargs = dict(COMMON_KWARGS, enable_prefix_caching=True, max_num_batched_tokens=64,
                  **backend_kwargs(backend))
    # No prompt logprobs here: vLLM does not read cached prefixes for requests that want them.
    return dict(model=("geometry", "llama3_8b_heads"), llm_kwargs=kwargs, reinit_weights=True,
                sampling=dict(max_tokens=24, logprobs=5), prompts={"kind": "token_ids", "ids": ids},
                waves=[[0, 1, 2], list(range(3, len(ids)))])


def fp8_job(backend, unquantized_queries=False):
    """llama3_8b_heads eager with an fp8 (e4m3) KV cache and FP8_KV_SCALES: same model and
    prompts as geometry_job's, whose FLASH_ATTN run is the bf16-cache comparison."""
    job = geometry_job("llama3_8b_heads", backend)
    job["llm_kwargs"]["kv_cache_dtype"] = "fp8"
    job["kv_scales"] = list(FP8_KV_SCALES)
    job["unquantized_queries"] = unquantized_queries
    return job


def feature_job(model, backend, reinit=True, **llm_extra):
    """A FEATURE_MODELS model, eager, with geometry_job's prompts and sampling."""
    job = geometry_job("llama3_8b_heads", backend)
    job["model"] = ("feature", model)
    job["reinit_weights"] = reinit
    job["llm_kwargs"].update(llm_extra)
    return job




def smollm2_job(backend):
    kwargs = dict(dtype="bfloat16", max_model_len=2048, max_num_seqs=128,
                  gpu_memory_utilization=0.15, kv_cache_memory_bytes=2 << 30,
                  enforce_eager=True, seed=0, **backend_kwargs(backend))
    return dict(model=("path", str(SMOLLM2)), llm_kwargs=kwargs, ignore_eos=False,
                sampling=dict(max_tokens=64, logprobs=5),  # top-5: the gap to a 3rd-5th token too
                prompts={"kind": "chat", "questions": CHAT_QUESTIONS})


TRITON_PREFILL_ENV = {"FLASHCORE_HOPPER_PREFILL": "0"}


def on_hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def all_jobs() -> dict[str, dict]:
    jobs = {}
    for geom in GEOMETRIES:
        for backend in ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN"):
            jobs[f"{geom}/{backend}/eager"] = geometry_job(geom, backend)
    for graphs in ("default", "FULL"):
        jobs[f"llama3_8b_heads/FLASHCORE/graphs_{graphs}"] = geometry_job(
            "llama3_8b_heads", "FLASHCORE", graphs)
    jobs["preemption/FLASHCORE"] = preemption_job("FLASHCORE", preempt=True)
    jobs["preemption/FLASH_ATTN_no_preemption"] = preemption_job("FLASH_ATTN", preempt=False)
    for backend in ("FLASHCORE", "FLASH_ATTN"):
        jobs[f"prefix_caching/{backend}"] = prefix_caching_job(backend)
    for backend in ("FLASHCORE", "FLASH_ATTN"):
        jobs[f"fp8_kv/{backend}"] = fp8_job(backend)
    # FLASH_ATTN and TRITON_ATTN quantize queries to fp8 too; FLASHCORE doesn't. The calibration
    # engine keeps bf16 queries: the same computation as FLASHCORE's.
    jobs["fp8_kv/TRITON_ATTN_bf16_queries"] = fp8_job("TRITON_ATTN", unquantized_queries=True)
    for backend in ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN"):
        jobs[f"sliding_window/{backend}"] = feature_job("mistral_swa", backend)
        jobs[f"gemma2/{backend}"] = feature_job("gemma2", backend, reinit=GEMMA2_REINIT)
    # Control: the comparison must tell a missing soft cap apart.
    jobs["gemma2/FLASH_ATTN_no_soft_cap"] = feature_job(
        "gemma2", "FLASH_ATTN", reinit=GEMMA2_REINIT,
        hf_overrides={"attn_logit_softcapping": None})
    for backend in ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN"):
        jobs[f"smollm2/{backend}"] = smollm2_job(backend)
    # On Hopper the jobs above prefill through the Gluon kernel (config.hopper_prefill_enabled);
    # these keep the Triton prefill kernel, what every other GPU runs, in a real engine there.
    jobs["llama3_8b_heads/FLASHCORE/triton_prefill"] = dict(
        geometry_job("llama3_8b_heads", "FLASHCORE"), env=TRITON_PREFILL_ENV)
    jobs["prefix_caching/FLASHCORE/triton_prefill"] = dict(
        prefix_caching_job("FLASHCORE"), env=TRITON_PREFILL_ENV)
    for name, job in jobs.items():
        job["name"] = name
        job["backend"] = name.split("/")[1]
    return jobs


def uses(*names_or_fn):
    """Declare the jobs a test reads, so that the fixture can start them all up front."""
    def mark(fn):
        fn.engine_jobs = names_or_fn
        return fn
    return mark


def jobs_of(item) -> list[str]:
    spec = getattr(getattr(item, "function", None), "engine_jobs", ())
    if len(spec) == 1 and callable(spec[0]):
        callspec = getattr(item, "callspec", None)
        return spec[0](**(callspec.params if callspec else {}))
    return list(spec)


# ---------------------------------------------------------------- running them


@pytest.fixture(scope="module")
def runner(request, tmp_path_factory):
    runner = JobRunner(all_jobs(), tmp_path_factory.mktemp("engines"), model_folder, PARALLEL)
    needed = [n for item in request.session.items if item.module is request.module
              for n in jobs_of(item)]
    runner.start(dict.fromkeys(needed))  # every selected test's engines, in parallel
    yield runner
    runner.pool.shutdown(wait=True, cancel_futures=True)


def assert_detected(control: Comparison, calibration: Comparison | None, what: str):
    """A run without the feature must fail assert_close's limits, or the case can't tell."""
    limit = control.limits(calibration)
    caught = (control.prompt_max_diff > limit["prompt_max_diff"]
              or control.prompt_top5_overlap < limit["prompt_top5_overlap"]
              or control.sample_max_diff > limit["sample_max_diff"]
              or control.unexplained_divergences)
    assert caught, f"a run {what} passes the limits {limit}: {control}"


def layers_of(result) -> list[dict]:
    return result["attention_layers"]


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("geom", list(GEOMETRIES))
@uses(lambda geom: [f"{geom}/{b}/eager" for b in ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN")])
def test_geometry_matches_flash_attn(runner, geom):
    fc = flashcore_ok(runner.result(f"{geom}/FLASHCORE/eager"))
    fa = ok(runner.result(f"{geom}/FLASH_ATTN/eager"))
    tr = runner.result(f"{geom}/TRITON_ATTN/eager")
    tr_cmp = compare_runs(tr, fa, "TRITON_ATTN") if tr["ok"] else None
    fc_cmp = compare_runs(fc, fa, "FLASHCORE", tr_cmp)
    print_table(f"{geom} {GEOMETRIES[geom]} eager, vs FLASH_ATTN", [fc_cmp, tr_cmp],
                timings={n: runner.result(f"{geom}/{n}/eager") for n in
                         ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN")})
    assert fc["flashcore_logged"], "vLLM's log never named the FlashCore backend"
    assert_close(fc_cmp, tr_cmp)


@pytest.mark.parametrize("graphs", ["default", "FULL"])
@uses(lambda graphs: [f"llama3_8b_heads/FLASHCORE/graphs_{graphs}",
                      "llama3_8b_heads/FLASH_ATTN/eager", "llama3_8b_heads/TRITON_ATTN/eager"])
def test_cuda_graphs_match_flash_attn(runner, graphs):
    """default: FULL_AND_PIECEWISE (full graphs for uniform decodes, compiled piecewise graphs
    otherwise). FULL: full graphs for mixed batches too (our ALWAYS support: the captured graph
    must launch the prefill kernel although vLLM captures it with one-token requests)."""
    fc = flashcore_ok(runner.result(f"llama3_8b_heads/FLASHCORE/graphs_{graphs}"))
    fa = ok(runner.result("llama3_8b_heads/FLASH_ATTN/eager"))
    tr = runner.result("llama3_8b_heads/TRITON_ATTN/eager")
    tr_cmp = compare_runs(tr, fa, "TRITON_ATTN eager") if tr["ok"] else None
    fc_cmp = compare_runs(fc, fa, f"FLASHCORE graphs={graphs}", tr_cmp)
    print_table(f"llama3_8b_heads, CUDA graphs ({graphs}) vs FLASH_ATTN eager", [fc_cmp, tr_cmp],
                timings={f"FLASHCORE graphs={graphs}": fc})
    assert_close(fc_cmp, tr_cmp)


@uses("preemption/FLASHCORE", "preemption/FLASH_ATTN_no_preemption")
def test_preemption_completes_every_request(runner):
    fc = flashcore_ok(runner.result("preemption/FLASHCORE"))
    fa = ok(runner.result("preemption/FLASH_ATTN_no_preemption"))
    counts = [len(r["output_ids"]) for r in fc["requests"]]
    fc_cmp = compare_runs(fc, fa, "FLASHCORE preempted")
    print_table(f"preemption: 48 KV pages, 16 x (120 + 96) tokens; metrics {fc['metrics']}",
                [fc_cmp], timings={"FLASHCORE": fc})
    assert counts == [96] * 16, counts
    preemptions = fc["metrics"].get("vllm:num_preemptions")
    assert preemptions is None or preemptions > 0, "the small KV cache caused no preemption"
    assert_close(fc_cmp, None)


@uses("prefix_caching/FLASHCORE", "prefix_caching/FLASH_ATTN")
def test_prefix_caching_with_chunked_prefill(runner):
    fc = flashcore_ok(runner.result("prefix_caching/FLASHCORE"))
    fa = ok(runner.result("prefix_caching/FLASH_ATTN"))
    fc_cmp = compare_runs(fc, fa, "FLASHCORE")
    print_table(f"prefix caching + 64-token chunks; metrics {fc['metrics']}", [fc_cmp],
                timings={"FLASHCORE": fc, "FLASH_ATTN": fa})
    hits = fc["metrics"].get("vllm:prefix_cache_hits")
    assert hits is None or hits > 0, "no prefix-cache hits: the case did not test cached pages"
    assert_close(fc_cmp, None)


@uses("fp8_kv/FLASHCORE", "fp8_kv/FLASH_ATTN", "fp8_kv/TRITON_ATTN_bf16_queries",
      "llama3_8b_heads/FLASH_ATTN/eager")
def test_fp8_kv_cache_matches_flash_attn(runner):
    """fp8 (e4m3) KV cache with per-tensor scales, vs FLASH_ATTN (FA3) with the same cache.
    FA3 also quantizes the queries to fp8 (scale 1); FLASHCORE attends with bf16 queries. The
    calibration, TRITON_ATTN with its query quantization switched off, computes what FLASHCORE
    does, so its distance from FLASH_ATTN includes what the query quantization alone costs."""
    fc = flashcore_ok(runner.result("fp8_kv/FLASHCORE"))
    fa = runner.result("fp8_kv/FLASH_ATTN")
    if not fa["ok"] and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip(f"FLASH_ATTN has an fp8 KV cache only with FA3 (Hopper): {fa['error'][:200]}")
    ok(fa)
    tr = ok(runner.result("fp8_kv/TRITON_ATTN_bf16_queries"))
    bf16 = ok(runner.result("llama3_8b_heads/FLASH_ATTN/eager"))
    k_scale, v_scale = FP8_KV_SCALES
    for result in (fc, fa, tr):
        for layer in layers_of(result):
            assert layer["kv_cache_dtype"] == "fp8", (result["name"], layer)
            assert layer["k_scale"] == pytest.approx(k_scale), (result["name"], layer)
            assert layer["v_scale"] == pytest.approx(v_scale), (result["name"], layer)
    assert not any(layer["query_quant"] for layer in layers_of(tr)), layers_of(tr)
    tr_cmp = compare_runs(tr, fa, "TRITON_ATTN fp8, bf16 queries")
    fc_cmp = compare_runs(fc, fa, "FLASHCORE fp8", tr_cmp)
    same_math = compare_runs(fc, tr, "FLASHCORE vs TRITON bf16 q")
    cache_effect = compare_runs(bf16, fa, "FLASH_ATTN bf16 cache")
    print_table(f"llama3_8b_heads, fp8 KV cache (k_scale {k_scale}, v_scale {v_scale}), vs "
                f"FLASH_ATTN fp8 (queries quantized: "
                f"{sorted({layer['query_quant'] for layer in layers_of(fa)})})",
                [fc_cmp, tr_cmp, same_math, cache_effect],
                timings={"FLASHCORE": fc, "FLASH_ATTN": fa, "TRITON_ATTN": tr})
    assert_close(fc_cmp, tr_cmp)


@uses("sliding_window/FLASHCORE", "sliding_window/FLASH_ATTN", "sliding_window/TRITON_ATTN",
      "llama3_8b_heads/FLASH_ATTN/eager")
def test_sliding_window_matches_flash_attn(runner):
    """Every layer a 64-token window (Mistral-style), prompts up to 700 tokens in chunks of 256
    beside decodes; the same model without the window (llama3_8b_heads) as a control."""
    fc = flashcore_ok(runner.result("sliding_window/FLASHCORE"))
    fa = ok(runner.result("sliding_window/FLASH_ATTN"))
    tr = runner.result("sliding_window/TRITON_ATTN")
    full = ok(runner.result("llama3_8b_heads/FLASH_ATTN/eager"))
    assert [layer["sliding_window"] for layer in layers_of(fc)] == [SLIDING_WINDOW] * 2, \
        layers_of(fc)
    assert [layer["sliding_window"] for layer in layers_of(fa)] == [[SLIDING_WINDOW - 1, 0]] * 2, \
        layers_of(fa)
    tr_cmp = compare_runs(tr, fa, "TRITON_ATTN") if tr["ok"] else None
    fc_cmp = compare_runs(fc, fa, "FLASHCORE", tr_cmp)
    control = compare_runs(full, fa, "no window (control)", tr_cmp)
    print_table(f"Mistral-style sliding window {SLIDING_WINDOW}, vs FLASH_ATTN",
                [fc_cmp, tr_cmp, control],
                timings={n: runner.result(f"sliding_window/{n}") for n in
                         ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN")})
    assert_close(fc_cmp, tr_cmp)
    assert_detected(control, tr_cmp, "without the sliding window")


@uses("gemma2/FLASHCORE", "gemma2/FLASH_ATTN", "gemma2/TRITON_ATTN",
      "gemma2/FLASH_ATTN_no_soft_cap")
def test_gemma2_soft_cap_and_alternating_window(runner):
    """Gemma-2 style: soft cap 50 on both layers, a 64-token window on the first, head size
    256; FLASH_ATTN without the soft cap as a control."""
    fc = flashcore_ok(runner.result("gemma2/FLASHCORE"))
    fa = ok(runner.result("gemma2/FLASH_ATTN"))
    tr = runner.result("gemma2/TRITON_ATTN")
    no_cap = ok(runner.result("gemma2/FLASH_ATTN_no_soft_cap"))
    assert [(layer["sliding_window"], layer["logits_soft_cap"]) for layer in layers_of(fc)] == [
        (SLIDING_WINDOW, SOFT_CAP), (None, SOFT_CAP)], layers_of(fc)
    assert [layer["logits_soft_cap"] for layer in layers_of(fa)] == [SOFT_CAP] * 2, layers_of(fa)
    assert [layer["logits_soft_cap"] for layer in layers_of(no_cap)] == [0] * 2, layers_of(no_cap)
    tr_cmp = compare_runs(tr, fa, "TRITON_ATTN") if tr["ok"] else None
    fc_cmp = compare_runs(fc, fa, "FLASHCORE", tr_cmp)
    control = compare_runs(no_cap, fa, "no soft cap (control)", tr_cmp)
    print_table(f"Gemma-2 style (soft cap {SOFT_CAP}, window {SLIDING_WINDOW} on layer 0, "
                "head 256), vs FLASH_ATTN", [fc_cmp, tr_cmp, control],
                timings={n: runner.result(f"gemma2/{n}") for n in
                         ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN")})
    assert_close(fc_cmp, tr_cmp)
    assert_detected(control, tr_cmp, "without the soft cap")


@uses(lambda: ["llama3_8b_heads/FLASHCORE/triton_prefill", "llama3_8b_heads/FLASH_ATTN/eager",
               "llama3_8b_heads/TRITON_ATTN/eager", "prefix_caching/FLASHCORE/triton_prefill",
               "prefix_caching/FLASH_ATTN"] if on_hopper() else [])
def test_triton_prefill_matches_flash_attn(runner):
    """FLASHCORE_HOPPER_PREFILL=0 in the engine: on an H100/H200, where FLASHCORE otherwise
    prefills through the Gluon kernel (hopper_prefill.py), every prefill and chunked prefill of
    llama3_8b_heads runs the Triton kernel (prefill.py) that other GPUs run: prompts of 1 to 700
    tokens in 256-token chunks beside decodes, then 64-token chunks over cached prefixes. Judged
    as the eager run is."""
    if not on_hopper():
        pytest.skip("elsewhere the other tests run prefill.py already")
    fc = flashcore_ok(runner.result("llama3_8b_heads/FLASHCORE/triton_prefill"))
    fa = ok(runner.result("llama3_8b_heads/FLASH_ATTN/eager"))
    tr = runner.result("llama3_8b_heads/TRITON_ATTN/eager")
    tr_cmp = compare_runs(tr, fa, "TRITON_ATTN") if tr["ok"] else None
    fc_cmp = compare_runs(fc, fa, "FLASHCORE triton_prefill", tr_cmp)
    fc_cached = flashcore_ok(runner.result("prefix_caching/FLASHCORE/triton_prefill"))
    cached_cmp = compare_runs(fc_cached, ok(runner.result("prefix_caching/FLASH_ATTN")),
                              "FLASHCORE triton_prefill, cached prefixes")
    print_table("llama3_8b_heads with the Triton prefill kernel, vs FLASH_ATTN",
                [fc_cmp, tr_cmp, cached_cmp], timings={"FLASHCORE triton_prefill": fc})
    assert_close(fc_cmp, tr_cmp)
    assert_close(cached_cmp, None)


@pytest.mark.skipif(not (SMOLLM2 / "config.json").exists(), reason=f"{SMOLLM2} not present")
@uses(lambda: [f"smollm2/{b}" for b in ("FLASHCORE", "FLASH_ATTN", "TRITON_ATTN")]
      if (SMOLLM2 / "config.json").exists() else [])
def test_smollm2_greedy_chat(runner):
    """128 chat prompts, greedy, 64 tokens: identical outputs vs FLASH_ATTN, first divergence,
    and FLASH_ATTN's own top-1 vs top-k gap at the token where an output diverged.

    The acceptance criterion: agree with FLASH_ATTN at least as often as TRITON_ATTN does. A
    divergence is a near-tie when FLASH_ATTN's gap is within the bf16 rounding floor (0.15 nats:
    the logit grid is 0.125 at magnitudes 16 to 32). Over 64 greedy tokens a correct backend
    also diverges at wider gaps, as bf16 noise accumulates over the layers (TRITON_ATTN on
    2026-11-27, H200: 14 of its 81 divergences), so FLASHCORE may have no more of those than
    TRITON_ATTN has; a wrong kernel diverges early and far from ties on most prompts."""
    fc = flashcore_ok(runner.result("smollm2/FLASHCORE"))
    fa = ok(runner.result("smollm2/FLASH_ATTN"))
    tr = ok(runner.result("smollm2/TRITON_ATTN"))
    tr_cmp = compare_runs(tr, fa, "TRITON_ATTN")
    fc_cmp = compare_runs(fc, fa, "FLASHCORE")  # both judged at the 0.15 floor, no calibration
    print_table(f"smollm2, {len(CHAT_QUESTIONS)} chat prompts, greedy, 64 tokens, vs FLASH_ATTN",
                [fc_cmp, tr_cmp], timings={"FLASHCORE": fc, "FLASH_ATTN": fa, "TRITON_ATTN": tr},
                per_request=True)
    assert fc_cmp.identical >= tr_cmp.identical, (fc_cmp.identical, tr_cmp.identical)
    assert len(fc_cmp.unexplained_divergences) <= len(tr_cmp.unexplained_divergences), (
        f"FLASHCORE diverges beyond a near-tie (gap > {fc_cmp.near_tie:.3f}) more often than "
        f"TRITON_ATTN: {fc_cmp.unexplained_divergences} vs {tr_cmp.unexplained_divergences}")
