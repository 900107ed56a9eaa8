"""benchmarks/plan_cost.py times the decode kernel alone by leaving the merge launch out: inside
its context a split decode's partials are written and nothing merges them; outside, the merge
runs again."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import plan_cost  # noqa: E402

import flashcore_kernels as fk  # noqa: E402

from .accuracy import assert_matches_reference  # noqa: E402
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


def test_a_case_whose_plan_splits_unlike_the_launch_is_not_compared(device):
    """3 decodes of 80, 90 and 80 tokens on a wave of 12 programs of 2 KV heads: 2 splits each,
    the launch's count at 2, not at 4."""
    batch = make_batch([1, 1, 1], [80, 90, 80], device=device)
    plan = fk.DecodePlan.allocate(3, 2, 12, batch.query.device)
    plan.update(batch.cu_seqlens_q, batch.seq_lens, 3)
    assert plan.seq_splits[:3].tolist() == [2, 2, 2]
    assert plan_cost.unlike_counts("3x80:", plan, 3, 2) is None
    assert plan_cost.unlike_counts("3x80:", plan, 3, 4) == (
        "3x80: not compared, the plan splits [2], the launch without it 4")


def test_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(plan_cost.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        plan_cost.main([])


@pytest.mark.parametrize("rows", [2, 5, 7])
def test_a_plan_on_fewer_rows_still_attends_every_piece(device, rows):
    """A plan made for fewer rows than its own grid (7 here) fits its pieces to them: 3 decodes
    on 2 rows make a row of two, on 5 rows 4 pieces leave an empty row first, on 7 rows a piece
    a row. Every grid's output still matches the reference."""
    batch = make_batch([1, 1, 1], [80, 90, 80], device=device)
    plan = plan_cost.plan_on_rows(fk, batch.cu_seqlens_q, batch.seq_lens, 3, 2, rows=rows,
                                  wave=14)
    pieces = sum(plan.seq_splits.tolist())
    assert plan.grid_rows(3) == rows and pieces == {2: 3, 5: 4, 7: 7}[rows]
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=1, out=out, decode_plan=plan)
    assert_matches_reference(f"decode plan on {rows} rows", out, batch.reference())


def test_a_plan_on_too_few_rows_is_refused(device):
    batch = make_batch([1, 1, 1], [80, 90, 80], device=device)
    with pytest.raises(ValueError, match="cannot hold the plan's 3 pieces"):
        plan_cost.plan_on_rows(fk, batch.cu_seqlens_q, batch.seq_lens, 3, 2, rows=1, wave=14)


def test_an_unknown_geometry_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        plan_cost.main(["--geometry", "llama-9"])
    assert exit_.value.code == 2 and "llama-9" in capsys.readouterr().err


class FixedOutput:
    """A runner whose forward leaves ``output`` as given."""

    def __init__(self, output):
        self.output = torch.tensor(output)

    def forward(self):
        pass


def test_outputs_that_differ_are_caught():
    plan_cost.assert_same_outputs({"a": FixedOutput([1.0, 2.0]), "b": FixedOutput([1.0, 2.001])},
                                  "a")
    with pytest.raises(AssertionError, match="'b'"):
        plan_cost.assert_same_outputs({"a": FixedOutput([1.0, 2.0]),
                                       "b": FixedOutput([1.0, 2.1])}, "a")
