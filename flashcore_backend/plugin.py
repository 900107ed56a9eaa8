"""The ``vllm.general_plugins`` entry point: make FLASHCORE selectable in every vLLM process.

vLLM calls ``register()`` once per process (front end, engine core, workers), and more than once
is harmless. It does three things, importing only vLLM's registry unless asked for more:

1. ``register_backend(CUSTOM, "flashcore_backend.backend.FlashCoreBackend")``: vLLM's slot for
   out-of-tree backends, so ``--attention-backend CUSTOM`` selects us.
2. Installs ``FLASHCORE`` as an alias of the CUSTOM member in ``AttentionBackendEnum``'s member
   map, so ``AttentionBackendEnum["FLASHCORE"]`` is CUSTOM. That makes ``--attention-backend
   FLASHCORE`` and ``LLM(attention_backend="FLASHCORE")`` parse (AttentionConfig's validator
   does ``AttentionBackendEnum[value.upper()]``) and lets ``Attention.__init__`` look up our
   ``get_name()``. An alias, not a new member: enum members pickle by value, and the config
   that reaches spawned engine/worker processes carries CUSTOM (value None), which unpickles
   there before any plugin runs; a new member's value would not exist there yet.
3. When ``VLLM_ATTENTION_BACKEND`` is set (vLLM 0.26 no longer reads it), installs
   ``env_default``'s hook so that it names the default backend of engines built here.
"""

import os

BACKEND_CLASS_PATH = "flashcore_backend.backend.FlashCoreBackend"
ALIAS = "FLASHCORE"
ENV_VAR = "VLLM_ATTENTION_BACKEND"


def register() -> None:
    from .vllm_api import AttentionBackendEnum, register_backend

    register_backend(AttentionBackendEnum.CUSTOM, BACKEND_CLASS_PATH)
    install_alias()
    if os.environ.get(ENV_VAR):
        from . import env_default

        env_default.install()


def install_alias() -> None:
    from .vllm_api import AttentionBackendEnum

    members = AttentionBackendEnum._member_map_  # what AttentionBackendEnum[name] reads
    if members.get(ALIAS) is not AttentionBackendEnum.CUSTOM:
        members[ALIAS] = AttentionBackendEnum.CUSTOM
