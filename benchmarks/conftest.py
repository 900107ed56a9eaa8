"""pytest-benchmark plumbing for the attention suites (collected only when named explicitly:
the default test run uses testpaths=tests).

    pytest benchmarks/test_bench_decode.py --bench-quick
    pytest benchmarks/ --bench-backends FLASHCORE,FLASH_ATTN --benchmark-json out.json

pytest-benchmark's own timer is wall clock on the host. Each test therefore times the backend
on the GPU (``triton.testing.do_bench``, CUDA events, or CUDA-graph replays with
``--bench-timer graph``), keeps every timed run, and puts those GPU times in place of the
host timings, so the pytest-benchmark table and its JSON show GPU times (in seconds there).
Units and ratios go to ``extra_info`` and to a summary printed at the end; the session also
writes benchmarks/results/pytest-<suites>.json and .md. No assertion is made on any time.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import geometry  # noqa: E402
import grids  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402

_CASES: dict[str, dict] = {}  # case id -> case record, filled as tests run


def pytest_addoption(parser):
    group = parser.getgroup("flashcore attention benchmarks")
    group.addoption("--bench-quick", action="store_true", help="the small grids")
    group.addoption("--bench-backends", default=",".join(harness.ALL_BACKENDS))
    group.addoption("--bench-timer", choices=("events", "graph"), default="events")
    group.addoption("--bench-rep-ms", type=int, default=100)
    group.addoption("--bench-no-check", action="store_true", help="skip the float64 check")
    group.addoption("--bench-flashinfer-head-dims", default="128",
                    help="head dims FlashInfer runs (each costs a JIT compile), or 'all'")


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    suite = metafunc.module.SUITE
    cases = grids.SUITES[suite](metafunc.config.getoption("--bench-quick"))
    ids = [f"{g}-{spec.label.replace(' ', '')}" for g, spec in cases]
    # Module scope groups the tests by case, so each case's inputs are built once and
    # shared by every backend, then freed before the next case.
    metafunc.parametrize("bench_case", [(suite, g, s) for g, s in cases], ids=ids,
                         indirect=True, scope="module")
    names = [b for b in metafunc.config.getoption("--bench-backends").split(",") if b]
    metafunc.parametrize("backend", names)


@pytest.fixture(scope="session")
def copy_gbps():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return harness.copy_bandwidth_gbps(torch.device("cuda"))


@pytest.fixture(scope="module")
def bench_case(request):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    suite, gname, spec = request.param
    g = geometry.get(gname)
    record = harness.case_record(spec, g, 16, torch.bfloat16) | {"suite": suite}
    _CASES[f"{suite}/{gname}/{spec.label}"] = record
    try:
        inp = harness.prepare(spec, g)
    except harness.Skip as e:
        record["skipped"] = str(e)
        pytest.skip(str(e))
    yield g, inp, record
    harness.release(inp)


@pytest.fixture
def bench_run(benchmark, copy_gbps, request):
    """Measure one backend on the module's case and hand the GPU times to pytest-benchmark."""
    opts = request.config.getoption

    def run(bench_case, backend):
        g, inp, record = bench_case
        dims = opts("--bench-flashinfer-head-dims")
        if backend == "FLASHINFER" and dims != "all" and str(g.head_dim) not in dims.split(","):
            pytest.skip(f"FlashInfer head_dim {g.head_dim} not selected (--bench-flashinfer-head-dims)")

        def hand_over(runner):
            def step():
                runner.forward()
                torch.cuda.synchronize()
            benchmark.pedantic(step, rounds=3, warmup_rounds=1)

        rec = harness.measure_backend(
            backend, inp, g, timer=opts("--bench-timer"), rep_ms=opts("--bench-rep-ms"),
            check=not opts("--bench-no-check"), keep_times=True, on_runner=hand_over)
        harness.add_units(rec, inp, copy_gbps)
        times = rec.pop("times_ms", None)
        record["results"].append(rec)
        print("\n" + harness.format_result(inp.spec.label, g.name, rec))
        if rec["status"] != "ok":
            if rec["status"] == "failed" and backend in report.OURS:
                pytest.fail(rec["reason"])
            pytest.skip(f"{backend} {rec['status']}: {rec.get('reason', '')}")
        benchmark.extra_info.update({k: v for k, v in rec.items() if k != "traceback"})
        benchmark.extra_info.update(case=inp.spec.label, geometry=g.name)
        if times and benchmark.stats is not None:
            # GPU times replace the host-timer rounds (cached stats are computed lazily).
            benchmark.stats.stats.data = [t * 1e-3 for t in times]
        return rec

    return run


def pytest_terminal_summary(terminalreporter, config):
    if not _CASES:
        return
    suites: dict[str, list] = {}
    for rec in _CASES.values():
        suites.setdefault(rec["suite"], []).append(rec)
    for suite, cases in suites.items():
        terminalreporter.write_sep("=", f"FlashCore {suite}: GPU medians, x = their time / ours")
        terminalreporter.write_line(report.text_table(*report.table_rows(cases, grids.HEADLINE[suite])))
    name = "pytest-" + "-".join(sorted(suites))
    payload = {"name": name, "environment": report.environment(),
               "timer": config.getoption("--bench-timer"), "copy_gbps": None, "suites": suites}
    out = report.RESULTS_DIR / f"{name}.json"
    report.write_json(out, payload)
    (report.RESULTS_DIR / f"{name}.md").write_text(report.markdown_report(payload, grids.HEADLINE))
    terminalreporter.write_line(f"wrote {out} and .md")
