"""One vLLM engine, run in its own process by test_generate.py: build ``LLM``, generate, write
JSON. Engine starts are the expensive part (~60 s with compilation and graphs), so each job runs
every prompt of its case in one engine.

    python engine_job.py JOB.json RESULT.json

The job names the backend the way a user would: FLASHCORE jobs get ``VLLM_ATTENTION_BACKEND``
from the caller's environment, the others ``attention_backend=...`` in ``llm_kwargs``.
"""

import json
import sys
import time


def reinit_weights(model, embed_std: float = 1.0, norm_values: dict | None = None) -> int:
    """Replace vLLM's dummy weights (uniform +-1e-3, which make every attention row nearly
    uniform and every logit nearly equal) with seeded weights that give peaked attention and
    separated logits, so that backend differences show. Seeded by parameter name, drawn on the
    parameter's GPU (fast for 8B models): every backend's engine of the same shape and tensor
    parallel size gets the same model.

    ``embed_std`` scales the embedding; ``norm_values`` sets the norm weights whose names contain
    a key (1.0 otherwise). Gemma-2 needs both: it ties the output embedding to the input one."""
    import zlib

    import torch

    count = 0
    for name, param in model.named_parameters():
        device = param.device
        gen = torch.Generator(device=device).manual_seed(zlib.crc32(name.encode()))
        if param.dim() == 1:  # RMSNorm weights
            value = next((v for k, v in (norm_values or {}).items() if k in name), 1.0)
            value = torch.full(param.shape, float(value), device=device)
        elif "embed_tokens" in name:
            value = torch.randn(param.shape, generator=gen, device=device) * embed_std
        else:
            gain = 1.5 if "qkv_proj" in name else 4.0 if "lm_head" in name else 1.0
            value = torch.randn(param.shape, generator=gen, device=device) * gain / param.shape[1] ** 0.5
        param.data.copy_(value.to(param.dtype))
        count += 1
    return count


def configure_attention(model, kv_scales=None, unquantized_queries=False) -> int:
    """Per-tensor fp8 KV scales for every attention layer (all backends read the layer's
    ``_k_scale``/``_v_scale`` tensors on every cache write and read), and optionally no fp8
    query quantization (FLASH_ATTN and TRITON_ATTN quantize queries when the KV cache is fp8;
    FLASHCORE keeps them in the model dtype). Eager engines only: the layer reads both per call."""
    count = 0
    for module in model.modules():
        if not hasattr(module, "impl") or not hasattr(module, "_k_scale"):
            continue
        if kv_scales is not None:
            k_scale, v_scale = (float(s) for s in kv_scales)
            module._k_scale.fill_(k_scale)
            module._v_scale.fill_(v_scale)
            module._k_scale_float, module._v_scale_float = k_scale, v_scale
            if hasattr(module, "_k_scale_cpu"):
                module._k_scale_cpu.fill_(k_scale)
                module._v_scale_cpu.fill_(v_scale)
        if unquantized_queries:
            module.query_quant = None
        count += 1
    return count


def attention_layers(model) -> list[dict]:
    """What each attention layer's implementation was built with, as vLLM's model code passed
    it (the backends keep their own conventions: FLASH_ATTN stores a window W as (W - 1, 0))."""
    rows = []
    for name, module in model.named_modules():
        impl = getattr(module, "impl", None)
        if impl is None:
            continue
        window = getattr(impl, "sliding_window", None)
        scale = {k: float(getattr(module, f"_{k}")) if hasattr(module, f"_{k}") else None
                 for k in ("k_scale", "v_scale")}
        rows.append({"layer": name, "impl": type(impl).__name__,
                     "num_heads": getattr(impl, "num_heads", None),
                     "num_kv_heads": getattr(impl, "num_kv_heads", None),
                     "sliding_window": list(window) if isinstance(window, tuple) else window,
                     "logits_soft_cap": getattr(impl, "logits_soft_cap", None),
                     "kv_cache_dtype": getattr(module, "kv_cache_dtype", None),
                     "query_quant": getattr(module, "query_quant", None) is not None, **scale})
    return rows


def model_rpc(fn, *args, **kwargs):
    """A method for ``LLM.collective_rpc`` that runs ``fn(model, *args, **kwargs)`` in each
    worker. Not ``LLM.apply_model(fn)``: that passes ``fn`` as an argument, which vLLM 0.26's
    multiprocessing executor (tensor parallel) sends to its workers with plain pickle, by name,
    and the functions of this script cannot be imported by name there. A collective_rpc method
    travels by value (cloudpickle) at every hop, with the functions it calls."""
    return lambda worker: fn(worker.get_model(), *args, **kwargs)


def top(entries) -> list | None:
    """{token_id: Logprob} -> [[token_id, logprob, rank], ...] (top-k plus the chosen token)."""
    if entries is None:
        return None
    return [[tid, lp.logprob, lp.rank] for tid, lp in entries.items()]


def prompts_for(job, llm):
    from vllm.inputs import TokensPrompt

    spec = job["prompts"]
    if spec["kind"] == "token_ids":
        return [TokensPrompt(prompt_token_ids=ids) for ids in spec["ids"]]
    tokenizer = llm.get_tokenizer()
    if getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                               add_generation_prompt=True, tokenize=False)
                 for q in spec["questions"]]
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    else:  # a base model: plain completion prompts
        ids = [tokenizer.encode(f"Question: {q}\nAnswer:") for q in spec["questions"]]
    return [TokensPrompt(prompt_token_ids=list(i)) for i in ids]


def metrics(llm) -> dict:
    wanted = ("vllm:num_preemptions", "vllm:prefix_cache_hits", "vllm:prefix_cache_queries")
    try:
        return {m.name: getattr(m, "value", None) for m in llm.get_metrics() if m.name in wanted}
    except Exception as err:  # metrics are informative only
        return {"error": repr(err)}


def run(job: dict) -> dict:
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=job["model"], **job["llm_kwargs"])
    init_s = time.perf_counter() - start
    result = {"name": job["name"], "init_s": round(init_s, 1),
              "backend_config": str(llm.llm_engine.vllm_config.attention_config.backend)}
    reinit = job.get("reinit_weights")
    if reinit:  # True, or reinit_weights' keyword arguments
        options = reinit if isinstance(reinit, dict) else {}
        result["reinit_params"] = llm.collective_rpc(model_rpc(reinit_weights, **options))[0]
    if job.get("kv_scales") is not None or job.get("unquantized_queries"):
        scales, unquantized = job.get("kv_scales"), bool(job.get("unquantized_queries"))
        result["configured_layers"] = llm.collective_rpc(
            model_rpc(configure_attention, scales, unquantized))[0]
    # One list per tensor-parallel rank.
    per_worker = llm.collective_rpc(model_rpc(attention_layers))
    result["attention_layers"] = per_worker[0]
    result["attention_impls"] = sorted({r["impl"] for r in per_worker[0]})
    result["attention_impls_per_worker"] = [sorted({r["impl"] for r in rows}) for rows in per_worker]
    result["heads_per_worker"] = [sorted({(r["num_heads"], r["num_kv_heads"]) for r in rows})
                                  for rows in per_worker]

    params = SamplingParams(temperature=0.0, ignore_eos=job.get("ignore_eos", True),
                            detokenize=False, **job["sampling"])
    prompts = prompts_for(job, llm)
    waves = job.get("waves") or [list(range(len(prompts)))]
    outputs = [None] * len(prompts)
    start = time.perf_counter()
    for wave in waves:  # e.g. warm the prefix cache with one wave, then hit it with the next
        for i, out in zip(wave, llm.generate([prompts[i] for i in wave], params, use_tqdm=False)):
            outputs[i] = out
    result["gen_s"] = round(time.perf_counter() - start, 1)
    result["metrics"] = metrics(llm)
    result["requests"] = [{
        "prompt_ids": list(out.prompt_token_ids),
        "output_ids": list(out.outputs[0].token_ids),
        "sample_logprobs": [top(e) for e in (out.outputs[0].logprobs or [])],
        "prompt_logprobs": [top(e) for e in (out.prompt_logprobs or [])],
    } for out in outputs]
    return result


def main(job_path: str, result_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    try:
        result = run(job)
        result["ok"] = True
    except Exception as err:
        result = {"name": job["name"], "ok": False, "error": f"{type(err).__name__}: {err}"}
    with open(result_path, "w") as f:
        json.dump(result, f)
    print(f"JOB {job['name']} ok={result['ok']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
