"""benchmarks/plan_cost.py times the decode kernel alone by leaving the merge launch out: inside
its context a split decode's partials are written and nothing merges them; outside, the merge
runs again."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import plan_cost  # noqa: E402

import flashcore_kernels as fk  # noqa: E402

from .paged_batch import make_batch  # noqa: E402


def test_merge_left_out_runs_the_decode_kernel_alone(device):
    batch = make_batch([1, 1], [40, 90], device=device)
    call = dict(max_query_len=1, num_kv_splits=4)
    with plan_cost.merge_left_out():
        out = batch.poisoned_out()
        fk.paged_attention(*batch.args(), out=out, **call)
        assert out.isnan().all()  # split partials only: nothing wrote the output
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), out=out, **call)
    assert not out.isnan().any()


def test_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(plan_cost.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        plan_cost.main([])
