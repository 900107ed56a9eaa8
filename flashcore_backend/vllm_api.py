"""Every name this package takes from vLLM (0.26.0), in one place.

vLLM moves these between releases; when it does, this is the only file to change. Names are
imported on first use (PEP 562 ``__getattr__``) so that the plugin entry point, which runs in
every vLLM process, pulls in only the registry module it needs and not the model-executor stack.
"""

from importlib import import_module
from typing import TYPE_CHECKING

# name -> module that defines it
_SOURCES = {
    # attention backend interface
    "AttentionBackend": "vllm.v1.attention.backend",
    "AttentionCGSupport": "vllm.v1.attention.backend",
    "AttentionImpl": "vllm.v1.attention.backend",
    "AttentionLayer": "vllm.v1.attention.backend",
    "AttentionMetadataBuilder": "vllm.v1.attention.backend",
    "AttentionType": "vllm.v1.attention.backend",
    "CommonAttentionMetadata": "vllm.v1.attention.backend",
    "MultipleOf": "vllm.v1.attention.backend",
    # registry
    "AttentionBackendEnum": "vllm.v1.attention.backends.registry",
    "register_backend": "vllm.v1.attention.backends.registry",
    # helpers shared with the built-in backends
    "get_kv_cache_layout": "vllm.v1.attention.backends.utils",
    "get_num_attention_heads_from_layers": "vllm.v1.attention.backends.utils",
    # config
    "AttentionConfig": "vllm.config.attention",
    "CUDAGraphMode": "vllm.config.compilation",
    "VllmConfig": "vllm.config",
    "get_current_vllm_config_or_none": "vllm.config",
    "EngineArgs": "vllm.engine.arg_utils",
    # misc
    "AttentionSpec": "vllm.v1.kv_cache_interface",
    "init_logger": "vllm.logger",
    "vllm_envs": "vllm.envs",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = import_module(module) if name == "vllm_envs" else getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


if TYPE_CHECKING:  # for type checkers and IDEs; at runtime the names load lazily
    import vllm.envs as vllm_envs  # noqa: F401
    from vllm.config import VllmConfig, get_current_vllm_config_or_none  # noqa: F401
    from vllm.config.attention import AttentionConfig  # noqa: F401
    from vllm.config.compilation import CUDAGraphMode  # noqa: F401
    from vllm.engine.arg_utils import EngineArgs  # noqa: F401
    from vllm.logger import init_logger  # noqa: F401
    from vllm.v1.attention.backend import (  # noqa: F401
        AttentionBackend,
        AttentionCGSupport,
        AttentionImpl,
        AttentionLayer,
        AttentionMetadataBuilder,
        AttentionType,
        CommonAttentionMetadata,
        MultipleOf,
    )
    from vllm.v1.attention.backends.registry import (  # noqa: F401
        AttentionBackendEnum,
        register_backend,
    )
    from vllm.v1.attention.backends.utils import (  # noqa: F401
        get_kv_cache_layout,
        get_num_attention_heads_from_layers,
    )
    from vllm.v1.kv_cache_interface import AttentionSpec  # noqa: F401
