"""One offline generation run in this process: engine, prompts, timing, per-request latency.

What is measured:
- throughput over the wall time of ``LLM.generate`` alone (engine start-up is reported apart):
  requests/s, input (prompt) tok/s, output (generated) tok/s, total tok/s;
- per-request latency from ``RequestOutput.metrics`` (vLLM 0.26 fills it when stats are on,
  so the engine is built with ``disable_log_stats=False``): end-to-end = last token minus
  queued (engine-core clock), TTFT = first token minus arrival (front-end clock), TPOT =
  (last token - first token) / (output tokens - 1). All requests arrive at t=0 in an offline
  run, so end-to-end latency includes the time a request waits for a batch slot.
"""

import os
import statistics
import time

from report import flashcore_settings

PERCENTILES = (50, 90, 99)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    pick = lambda p: values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]
    return {"mean": statistics.fmean(values)} | {f"p{p}": pick(p) for p in PERCENTILES}


def request_latencies(outputs) -> dict:
    e2e, ttft, tpot = [], [], []
    for out in outputs:
        m = getattr(out, "metrics", None)
        if m is None or not getattr(m, "last_token_ts", 0):
            continue
        if m.queued_ts:
            e2e.append(m.last_token_ts - m.queued_ts)
        if m.first_token_latency:
            ttft.append(m.first_token_latency)
        n = len(out.outputs[0].token_ids) if out.outputs else 0
        if n > 1 and m.first_token_ts:
            tpot.append((m.last_token_ts - m.first_token_ts) / (n - 1))
    if not e2e and not ttft:
        return {"source": "unavailable (RequestOutput.metrics empty)"}
    return {"source": "RequestOutput.metrics (RequestStateStats)", "e2e_s": percentiles(e2e),
            "ttft_s": percentiles(ttft), "tpot_s": percentiles(tpot)}


def engine_kwargs(args, model_dir: str, dummy: bool) -> dict:
    kw = dict(model=model_dir, dtype=args.dtype, seed=args.seed, disable_log_stats=False,
              gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
              enforce_eager=args.enforce_eager)
    if args.tensor_parallel_size > 1:
        # One worker process per GPU; each imports the plugin through vLLM's general-plugins hook
        # and reads VLLM_ATTENTION_BACKEND from the environment it inherits.
        kw.update(tensor_parallel_size=args.tensor_parallel_size,
                  distributed_executor_backend="mp",
                  disable_custom_all_reduce=args.disable_custom_all_reduce or None)
        if args.disable_custom_all_reduce:
            # vLLM 0.26 otherwise fuses each all-reduce with the next RMSNorm through
            # FlashInfer's all-reduce (NVLink multicast) at TP > 1 on Hopper.
            kw["compilation_config"] = {"pass_config": {"fuse_allreduce_rms": False}}
    if args.max_num_seqs:
        kw["max_num_seqs"] = args.max_num_seqs
    if args.backend != "FLASHCORE" or args.select_via == "kwarg":
        kw["attention_backend"] = args.backend
    if dummy:
        kw.update(load_format="dummy", skip_tokenizer_init=True)
    return {k: v for k, v in kw.items() if v is not None}


def select_backend_env(backend: str, select_via: str) -> None:
    """FLASHCORE through the environment switch; must run before vLLM is imported."""
    if backend == "FLASHCORE" and select_via == "env":
        os.environ["VLLM_ATTENTION_BACKEND"] = "FLASHCORE"
    elif os.environ.get("VLLM_ATTENTION_BACKEND") == "FLASHCORE":
        del os.environ["VLLM_ATTENTION_BACKEND"]


def configured_backend(llm) -> str | None:
    try:
        backend = llm.llm_engine.vllm_config.attention_config.backend
        return getattr(backend, "name", None) or (str(backend) if backend else None)
    except Exception:
        return None


def run(args, model_dir: str, dummy: bool, prompts: list, log=print) -> tuple[dict, list]:
    """Build the engine, generate, and return (results, outputs)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t0 = time.perf_counter()
    llm = LLM(**engine_kwargs(args, model_dir, dummy))
    startup = time.perf_counter() - t0
    log(f"engine ready in {startup:.1f}s (requested backend {args.backend}, "
        f"config says {configured_backend(llm)})")
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                            max_tokens=args.output_len, ignore_eos=args.ignore_eos,
                            detokenize=not dummy)
    inputs = [TokensPrompt(prompt_token_ids=p) if isinstance(p, list) else p for p in prompts]
    warmup = 0.0
    if args.warmup:
        # An untimed pass over the same prompts first. Triton kernels, vLLM's sampler kernels
        # among them, compile on the first batch that needs them (seconds each, past the
        # engine's own warm-up), and the compiled kernels stay in Triton's disk cache: without
        # this pass, the first backend timed on a machine pays compiles the next one finds
        # cached. The prefix cache is emptied so that the timed pass prefills in full.
        t = time.perf_counter()
        llm.generate(inputs, params, use_tqdm=False)
        llm.reset_prefix_cache()
        warmup = time.perf_counter() - t
        log(f"untimed warm-up pass: {warmup:.1f}s")
    t1 = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=True)
    elapsed = time.perf_counter() - t1
    n_in = sum(len(o.prompt_token_ids or []) for o in outputs)
    n_out = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    results = {
        "backend": args.backend, "configured_backend": configured_backend(llm),
        "startup_s": startup, "warmup_s": warmup, "elapsed_s": elapsed, "num_requests": len(outputs),
        "input_tokens": n_in, "output_tokens": n_out,
        "requests_per_s": len(outputs) / elapsed, "input_tok_per_s": n_in / elapsed,
        "output_tok_per_s": n_out / elapsed, "total_tok_per_s": (n_in + n_out) / elapsed,
        "latency": request_latencies(outputs), "flashcore_settings": flashcore_settings(),
    }
    return results, outputs


def format_results(r: dict) -> str:
    lines = [f"backend {r['backend']} (engine config: {r.get('configured_backend')}), "
             f"{r['num_requests']} requests in {r['elapsed_s']:.2f}s (engine start {r['startup_s']:.0f}s)",
             f"  throughput: {r['requests_per_s']:.2f} req/s | input {r['input_tok_per_s']:.0f} tok/s | "
             f"output {r['output_tok_per_s']:.0f} tok/s | total {r['total_tok_per_s']:.0f} tok/s"]
    lat = r.get("latency", {})
    for key, name in (("e2e_s", "end-to-end"), ("ttft_s", "time to first token"),
                      ("tpot_s", "time per output token")):
        p = lat.get(key)
        if p:
            unit, scale = ("ms", 1e3) if key == "tpot_s" else ("s", 1.0)
            lines.append(f"  {name:<22} " + "  ".join(f"{k} {v * scale:.3f}{unit}" for k, v in p.items()))
    lines.append(f"  latency source: {lat.get('source')}")
    return "\n".join(lines)
