"""benchmarks/generate.py's options: the timed pass follows an untimed one unless --no-warmup,
a --compare run hands that choice to each backend's subprocess, and --disable-custom-all-reduce
leaves NCCL's all-reduce alone."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import e2e  # noqa: E402
import generate  # noqa: E402


def test_warm_up_pass_is_the_default():
    assert generate.parse_args(["--workload", "short"]).warmup
    assert not generate.parse_args(["--workload", "short", "--no-warmup"]).warmup


def test_compare_children_keep_no_warmup(tmp_path):
    argv = ["--compare", "FLASHCORE,FLASH_ATTN", "--workload", "long", "--no-warmup"]
    child = generate.child_argv(argv, "FLASH_ATTN", tmp_path / "fa.json")
    assert "--no-warmup" in child
    assert not generate.parse_args(child[2:]).warmup


def test_nccl_only_all_reduce_also_turns_off_the_all_reduce_fusion():
    argv = ["--workload", "short", "--tensor-parallel-size", "2"]
    fused = e2e.engine_kwargs(generate.parse_args(argv), "model", dummy=True)
    nccl = e2e.engine_kwargs(generate.parse_args([*argv, "--disable-custom-all-reduce"]), "model",
                             dummy=True)
    assert "compilation_config" not in fused and "disable_custom_all_reduce" not in fused
    assert nccl["disable_custom_all_reduce"] is True
    assert nccl["compilation_config"] == {"pass_config": {"fuse_allreduce_rms": False}}
