"""benchmarks/compare.py: one table from generate.py's JSON files, whether each backend ran on
its own (one file each) or in one ``--compare`` run (one file with every backend)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import compare  # noqa: E402


def run(backend: str, out_tok_per_s: float) -> dict:
    return dict(backend=backend, requests_per_s=2.0, input_tok_per_s=100.0,
                output_tok_per_s=out_tok_per_s, total_tok_per_s=out_tok_per_s + 100.0,
                startup_s=50.0, num_requests=8, input_tokens=300, output_tokens=600,
                model="m", latency={"ttft_s": {"p50": 0.5}, "tpot_s": {"p50": 0.003}})


def test_single_runs_and_compare_file_give_one_table(tmp_path, capsys):
    fc, fa = run("FLASHCORE", 200.0), run("FLASH_ATTN", 250.0)
    (tmp_path / "fc.json").write_text(json.dumps(fc))
    (tmp_path / "fa.json").write_text(json.dumps(fa))
    (tmp_path / "both.json").write_text(json.dumps({"backends": {"FLASHCORE": fc,
                                                                 "FLASH_ATTN": fa}}))
    compare.main([str(tmp_path / "fc.json"), str(tmp_path / "fa.json")])
    separate = capsys.readouterr().out
    compare.main([str(tmp_path / "both.json")])
    assert capsys.readouterr().out == separate
    fa_row = next(line for line in separate.splitlines() if line.startswith("FLASH_ATTN"))
    assert "0.80" in fa_row.split()  # FLASHCORE's output tok/s / FLASH_ATTN's: 200 / 250
