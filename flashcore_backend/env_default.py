"""``VLLM_ATTENTION_BACKEND`` as the default attention backend of engines built in this process.

vLLM 0.26 dropped this variable (it only warns "Unknown vLLM environment variable"). The hook is
``EngineArgs.create_engine_config``: every front end (``LLM``, ``vllm serve``, ``AsyncLLM``, the
benchmarks) turns its arguments into a ``VllmConfig`` there, in the user's process, and the
engine-core and worker processes receive that config already resolved. Filling the backend in at
that point, exactly where vLLM itself converts ``--attention-backend``, means everything
downstream (config checks, CUDA-graph mode, the selector in every worker) sees one explicit
choice, and nothing depends on environment variables reaching spawned processes.

Precedence: ``--attention-backend``, ``LLM(attention_backend=...)`` or
``attention_config={"backend": ...}`` (including "auto") win over the variable. The variable
takes any name ``--attention-backend`` takes (FLASHCORE, CUSTOM, FLASH_ATTN, ...), restoring its
pre-0.26 meaning. An unknown name raises when the engine is built, naming the variable and the
valid choices, instead of silently falling back to automatic selection.
"""

import functools
import os

from .plugin import ENV_VAR
from .vllm_api import AttentionConfig, EngineArgs, init_logger, vllm_envs

logger = init_logger("vllm.flashcore_backend")
_MARK = "_flashcore_env_default"


def install() -> None:
    """Wrap ``EngineArgs.create_engine_config`` (once) and tell vLLM the variable is read."""
    vllm_envs.environment_variables.setdefault(ENV_VAR, lambda: os.getenv(ENV_VAR))
    original = EngineArgs.create_engine_config
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def create_engine_config(self, *args, **kwargs):
        apply(self)
        return original(self, *args, **kwargs)

    setattr(create_engine_config, _MARK, True)
    EngineArgs.create_engine_config = create_engine_config


def resolve(name: str):
    """The ``AttentionBackendEnum`` member (None for "auto") named by the variable."""
    try:
        return AttentionConfig.validate_backend_before(name)
    except ValueError as err:
        raise ValueError(f"{ENV_VAR}={name!r}: {err}") from None


def apply(engine_args) -> None:
    """Make the variable the engine's attention backend unless one was chosen explicitly."""
    name = os.environ.get(ENV_VAR, "").strip()
    if not name:
        return
    explicit = engine_args.attention_backend or engine_args.attention_config.backend
    if explicit is not None:
        try:
            resolve(name)
        except ValueError as err:
            logger.warning("%s (ignored: the attention backend was chosen explicitly)", err)
            return
        logger.info("Attention backend %s chosen explicitly; ignoring %s=%s",
                    getattr(explicit, "name", explicit), ENV_VAR, name)
        return
    resolve(name)
    engine_args.attention_backend = name
    logger.info("Attention backend %s selected by %s.", name, ENV_VAR)
