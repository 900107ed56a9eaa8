"""Fixtures for the vLLM adapter tests. vLLM is imported lazily, inside fixtures, so that without
vLLM installed every test module skips (``pytest.importorskip("vllm")``) instead of erroring."""

import pytest


@pytest.fixture(scope="session")
def registered():
    """The plugin's registration, as vLLM's entry point runs it in each process."""
    from flashcore_backend.plugin import register

    register()


@pytest.fixture(scope="session")
def make_config(tmp_path_factory, registered, device):
    """``make_config(geometry) -> VllmConfig`` for the test device, one model directory per
    geometry."""
    from .vllm_batch import make_vllm_config, write_model_dir

    cache = {}

    def make(g):
        if g not in cache:
            cache[g] = make_vllm_config(write_model_dir(tmp_path_factory.mktemp("model"), g), g,
                                        device=device)
        return cache[g]

    return make
