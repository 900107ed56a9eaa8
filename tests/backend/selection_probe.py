"""Run in a fresh interpreter by test_registration.py: load vLLM's plugins through the installed
``vllm.general_plugins`` entry point (nothing of ours imported first), exercise each way of
selecting the backend, and print one JSON line of what vLLM resolved.

    python selection_probe.py MODEL_DIR

There is no GPU here, so vLLM's CPU platform stands in for the CUDA one: ``create_engine_config``
then runs to the end and shows the backend every engine process would receive.
"""

import json
import os
import sys


def main(model_dir: str) -> dict:
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    vllm.platforms._current_platform = CpuPlatform()  # before vLLM modules bind it

    from vllm.plugins import load_general_plugins

    load_general_plugins()
    load_general_plugins()  # a second call in the same process is a no-op for vLLM
    from flashcore_backend.plugin import register

    register()  # and calling ours again directly must be harmless

    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    def engine_backend(**kwargs):
        args = EngineArgs(model=model_dir, skip_tokenizer_init=True, max_model_len=256, **kwargs)
        backend = args.create_engine_config().attention_config.backend
        return None if backend is None else backend.name

    def cli_backend(*argv):
        parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
        args = parser.parse_args(["--model", model_dir, "--skip-tokenizer-init", *argv])
        return EngineArgs.from_cli_args(args).create_engine_config().attention_config.backend.name

    member = AttentionBackendEnum["FLASHCORE"]
    result = {
        "env": os.environ.get("VLLM_ATTENTION_BACKEND"),
        "enum_name": member.name,
        "enum_is_custom": member is AttentionBackendEnum.CUSTOM,
        "class": f"{member.get_class().__module__}.{member.get_class().__qualname__}",
        "class_name": member.get_class().get_name(),
        "default": engine_backend(),
        "kwarg_flashcore": engine_backend(attention_backend="FLASHCORE"),
        "kwarg_triton": engine_backend(attention_backend="TRITON_ATTN"),
        "kwarg_auto": engine_backend(attention_backend="auto"),
        "config_dict_triton": engine_backend(attention_config={"backend": "TRITON_ATTN"}),
        "cli_flashcore": cli_backend("--attention-backend", "FLASHCORE"),
        "cli_custom": cli_backend("--attention-backend", "CUSTOM"),
        "cli_lowercase": cli_backend("--attention-backend", "flashcore"),
    }
    os.environ["VLLM_ATTENTION_BACKEND"] = "NOT_A_BACKEND"
    try:
        result["unknown_env"] = f"no error, chose {engine_backend()}"
    except ValueError as err:
        result["unknown_env"] = str(err)
    result["unknown_env_explicit"] = engine_backend(attention_backend="FLASHCORE")
    return result


if __name__ == "__main__":
    print("PROBE " + json.dumps(main(sys.argv[1])))
