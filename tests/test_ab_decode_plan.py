"""benchmarks/ab_decode_plan.py's register cap: it holds the planned decode kernel alone, only
within its block, and the launch it times under the cap is the planned one, right."""

import importlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ab_decode_plan  # noqa: E402
import batches  # noqa: E402

from flashcore_kernels import config  # noqa: E402
from flashcore_kernels.reference import TOLERANCE  # noqa: E402

from .test_ab_decode import split_batch  # noqa: E402

FP8 = torch.float8_e4m3fn


def test_the_cap_holds_the_planned_kernel_only_within_its_block(monkeypatch):
    monkeypatch.setattr(config, "interpreting", lambda: False)  # the GPU's tile rules
    with ab_decode_plan.planned_register_cap(255):
        assert config.decode_tiles(128, 7, 1, planned=True).maxnreg == 255
        assert config.decode_tiles(128, 7, 1).maxnreg is None
        # in place of a tile's own cap too
        assert config.decode_tiles(128, 4, 1, torch.bfloat16, FP8, planned=True).maxnreg == 255
    assert config.decode_tiles(128, 7, 1, planned=True).maxnreg == 128
    assert config.decode_tiles(128, 4, 1, torch.bfloat16, FP8, planned=True).maxnreg == 208


class RecordingLaunch:
    """Stands in for ``kernel``: launches it as given, noting each launch's register cap."""

    def __init__(self, kernel):
        self.kernel, self.caps = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.caps.append(kwargs.get("maxnreg"))
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_the_capped_launch_is_the_planned_one(monkeypatch, device):
    launcher = importlib.import_module("flashcore_kernels.paged_attention")
    decode = RecordingLaunch(launcher.decode_kernel)
    monkeypatch.setattr(launcher, "decode_kernel", decode)
    inp = split_batch(device)
    found = ab_decode_plan.launches(inp, 96)
    assert list(found) == ["unplanned", "planned", "planned@96"]
    runner, forward = found["planned@96"]
    assert runner.decode_plan is not None and max(runner.decode_plan.seq_splits[:3]) > 1
    runner.update()
    forward()
    assert decode.caps == [96]
    assert batches.reference_error(inp, runner.cache, runner.output) <= TOLERANCE[torch.float16]
    assert ab_decode_plan.launches(inp, None).keys() == {"unplanned", "planned"}


def test_a_plan_wave_sets_the_grid_it_fills(device):
    inp = split_batch(device)
    found = ab_decode_plan.launches(inp, None, waves=[6])
    assert list(found) == ["unplanned", "planned", "wave 6"]
    runner, forward = found["wave 6"]
    wave_rows = -(-6 // inp.num_kv_heads)
    assert runner.decode_plan.grid_rows(3) == max(wave_rows, 3)
    assert runner.decode_plan.grid_rows(3) != found["planned"][0].decode_plan.grid_rows(3)
    runner.update()
    forward()
    assert batches.reference_error(inp, runner.cache, runner.output) <= TOLERANCE[torch.float16]
