"""benchmarks/generate.py's options: the timed pass follows an untimed one unless --no-warmup,
and a --compare run hands that choice to each backend's subprocess."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import generate  # noqa: E402


def test_warm_up_pass_is_the_default():
    assert generate.parse_args(["--workload", "short"]).warmup
    assert not generate.parse_args(["--workload", "short", "--no-warmup"]).warmup


def test_compare_children_keep_no_warmup(tmp_path):
    argv = ["--compare", "FLASHCORE,FLASH_ATTN", "--workload", "long", "--no-warmup"]
    child = generate.child_argv(argv, "FLASH_ATTN", tmp_path / "fa.json")
    assert "--no-warmup" in child
    assert not generate.parse_args(child[2:]).warmup
