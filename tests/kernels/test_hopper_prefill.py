"""The Gluon prefill kernel of Hopper GPUs (``hopper_prefill.py``): when the launcher picks it,
and, on an sm_90 GPU, its output against the float64 reference.

Gluon has no CPU interpreter, so the kernel itself runs only on an H100/H200; on any other
machine the selection rule and the compiled SASS are checked here. The kernel is on by default
(``FLASHCORE_HOPPER_PREFILL=0`` turns it off, see ``config.hopper_prefill_enabled``), so on a
Hopper GPU every other prefill test of the suite runs through it too.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from flashcore_kernels import config, hopper_prefill
from flashcore_kernels.checks import Variant

from ..paged_batch import make_batch
from .test_paged_attention import check

HOPPER = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
    reason="needs a Hopper (sm_90) GPU")
CUDA = torch.device("cuda")
PLAIN = Variant()


@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.setenv("FLASHCORE_HOPPER_PREFILL", "1")


@pytest.fixture
def on_hopper(enabled, monkeypatch):
    """Make ``supports`` see an sm_90 GPU, whatever this machine has, with the kernel turned on."""
    monkeypatch.setattr(config, "interpreting", lambda: False)
    monkeypatch.setattr(config, "compute_capability", lambda device: (9, 0))


def test_on_by_default_off_with_the_variable(on_hopper, monkeypatch):
    args = (CUDA, torch.bfloat16, torch.bfloat16, 128, 4, PLAIN)
    monkeypatch.delenv("FLASHCORE_HOPPER_PREFILL")
    assert hopper_prefill.supports(*args)
    monkeypatch.setenv("FLASHCORE_HOPPER_PREFILL", "0")
    assert not hopper_prefill.supports(*args)


def test_serves_plain_fp16_and_bf16_at_its_head_sizes(on_hopper):
    for dtype in (torch.float16, torch.bfloat16):
        for head_dim in hopper_prefill.HEAD_DIMS:
            for qpk in (1, 4, 7, 32):
                assert hopper_prefill.supports(CUDA, dtype, dtype, head_dim, qpk, PLAIN)


@pytest.mark.parametrize("reason,args", [
    ("head 192", (CUDA, torch.bfloat16, torch.bfloat16, 192, 4, PLAIN)),
    ("head 96", (CUDA, torch.bfloat16, torch.bfloat16, 96, 4, PLAIN)),
    ("head 80", (CUDA, torch.bfloat16, torch.bfloat16, 80, 4, PLAIN)),
    ("fp32", (CUDA, torch.float32, torch.float32, 128, 4, PLAIN)),
    ("fp8 cache", (CUDA, torch.bfloat16, torch.float8_e4m3fn, 128, 4,
                   Variant(k_scale=torch.ones(1), v_scale=torch.ones(1)))),
    ("sliding window", (CUDA, torch.bfloat16, torch.bfloat16, 128, 4, Variant(sliding_window=64))),
    ("soft cap", (CUDA, torch.bfloat16, torch.bfloat16, 128, 4, Variant(soft_cap=30.0))),
    ("ALiBi", (CUDA, torch.bfloat16, torch.bfloat16, 128, 4, Variant(alibi_slopes=torch.ones(8)))),
    ("sinks", (CUDA, torch.bfloat16, torch.bfloat16, 128, 4, Variant(sinks=torch.ones(8)))),
    ("a group larger than the tile", (CUDA, torch.bfloat16, torch.bfloat16, 128, 256, PLAIN)),
    ("the CPU", (torch.device("cpu"), torch.bfloat16, torch.bfloat16, 128, 4, PLAIN)),
])
def test_leaves_everything_else_to_the_triton_kernel(on_hopper, reason, args):
    assert not hopper_prefill.supports(*args), reason


def test_leaves_other_gpus_to_the_triton_kernel(on_hopper, monkeypatch):
    for capability in ((8, 0), (8, 9), (10, 0), (12, 0)):
        monkeypatch.setattr(config, "compute_capability", lambda device, c=capability: c)
        assert not hopper_prefill.supports(CUDA, torch.bfloat16, torch.bfloat16, 128, 4, PLAIN)


def test_products_issue_together_in_each_consumer():
    """Read off the SASS compiled for sm_90 (no GPU needed): the program splits into warpgroups
    with the register counts hopper_prefill.py sets (consumers, loader), nothing spills, and in
    every KV loop a consumer issues both products of its turn (QK^T of tile j, PV of tile j - 1)
    before it waits, and its first wait leaves the PV product in flight. An edit that makes
    ptxas serialise the products, or that loses a partition's registers, fails here."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # real compiler
    proc = subprocess.run([sys.executable, "-m", "flashcore_kernels.resources", "--loops"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows
    for row in rows:
        tiles = config.hopper_prefill_tiles(row["head_dim"])
        products = (row["head_dim"] + tiles.block_n) // 16  # k-steps of QK^T and of PV
        assert row["spill_bytes"] == 0, row
        assert {hopper_prefill.CONSUMER_REGISTERS,
                hopper_prefill.LOADER_REGISTERS} <= set(row["partition_registers"]), row
        # Two KV loops (unmasked, diagonal) per consumer. Loops that start elsewhere are an
        # mbarrier's retry path, which ptxas lays out to branch back over the last product.
        steps = [loop for loop in row["loops"] if loop[0] == f"HGMMA x{products}"]
        assert len(steps) >= 4, row
        for loop in steps:
            assert loop[1] == "WARPGROUP.DEPBAR.LE gsb0, 0x1", row


@pytest.fixture
def launches(enabled, monkeypatch):
    """Counts the Gluon kernel's launches, so a test knows it ran and not the Triton kernel."""
    calls = []
    launch = hopper_prefill.launch

    def counted(**kwargs):
        calls.append(kwargs["query"].shape)
        launch(**kwargs)

    monkeypatch.setattr(hopper_prefill, "launch", counted)
    return calls


# Lengths off the 128-token tile and the 16-token page: the diagonal tile, a cached prefix that
# shifts it, ragged ends, a decode beside the prefills, and a prefill of two tokens.
CASES = [
    ("one prompt", [300], [300]),
    ("prompt over a cached prefix", [200], [777]),
    ("ragged batch with a decode", [129, 1, 2, 513, 64], [129, 40, 300, 1000, 64]),
    ("tile-aligned", [256, 128], [512, 128]),
]


@HOPPER
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("head_dim", hopper_prefill.HEAD_DIMS)
@pytest.mark.parametrize("heads", [(8, 8), (32, 8), (28, 4), (32, 1)], ids=lambda h: f"{h[0]}/{h[1]}")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_reference(launches, dtype, head_dim, heads, case):
    scenario, q_lens, kv_lens = case
    batch = make_batch(q_lens, kv_lens, num_q_heads=heads[0], num_kv_heads=heads[1],
                       head_dim=head_dim, dtype=dtype, device=CUDA, seed=sum(kv_lens) + head_dim)
    check(f"Hopper prefill, {scenario}", batch)
    assert launches, "the Gluon kernel did not run"


@HOPPER
@pytest.mark.parametrize("page_size", [16, 32, 64])
@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_page_sizes_and_layouts(launches, page_size, layout):
    batch = make_batch([170, 1, 90], [700, 50, 90], num_q_heads=16, num_kv_heads=4, head_dim=128,
                       page_size=page_size, layout=layout, dtype=torch.bfloat16, device=CUDA,
                       seed=page_size)
    check(f"Hopper prefill, page {page_size}, {layout}", batch)
    assert launches


@HOPPER
def test_not_causal(launches):
    batch = make_batch([150, 40], [300, 40], num_q_heads=8, num_kv_heads=2, head_dim=128,
                       dtype=torch.bfloat16, device=CUDA)
    check("Hopper prefill, not causal", batch, causal=False)
    assert launches


@HOPPER
def test_large_logits(launches):
    """Logits in the hundreds: the running max must keep exp2 finite and exact."""
    batch = make_batch([300, 1], [400, 50], num_q_heads=8, num_kv_heads=2, head_dim=128,
                       scale=6.0, dtype=torch.bfloat16, device=CUDA, seed=7)
    check("Hopper prefill, large logits", batch, softmax_scale=1.0)
    assert launches



def test_launch_order_follows_the_l2(monkeypatch):
    """KV heads first while the K/V the batch writes fits in L2 (measured on an H200: gains up
    to 32 MiB, losses from 64 MiB), query blocks first beyond."""
    monkeypatch.setattr(config, "l2_cache_bytes", lambda device: 60 << 20)
    assert config.hopper_prefill_heads_first(32 << 20, CUDA)
    assert config.hopper_prefill_heads_first(60 << 20, CUDA)
    assert not config.hopper_prefill_heads_first(64 << 20, CUDA)

def test_short_prefills_at_head_64_go_to_the_triton_kernel():
    """Several prefills of sequences up to 1k tokens at head 64 (the points where the Triton
    kernel led on an H200); a single prompt, longer sequences, an unknown max_seq_len and
    other head sizes stay on the Gluon kernel."""
    rule = config.short_prefills_on_triton
    assert rule(64, 16 * 512, 512, 512)
    assert rule(64, 2 * 1024, 1024, 1024)
    assert rule(64, 8 * 256 + 100, 256, 900)  # beside decodes of up to 900 tokens
    assert not rule(64, 1024, 1024, 1024)  # one prompt
    assert not rule(64, 8 * 256, 256, 256 + 2048)  # over a cached prefix
    assert not rule(64, 4 * 2048, 2048, 2048)
    assert not rule(64, 16 * 512, 512, None)
    for head_dim in (128, 256):
        assert not rule(head_dim, 16 * 512, 512, 512)


@HOPPER
def test_short_prefills_run_on_the_triton_kernel(launches):
    batch = make_batch([300, 1, 200, 256], [300, 900, 200, 256], num_q_heads=8, num_kv_heads=8,
                       head_dim=64, dtype=torch.bfloat16, device=CUDA, seed=5)
    check("short prefills, head 64", batch, max_seq_len=900)
    assert not launches, "the Gluon kernel ran"
    check("short prefills, head 64, max_seq_len unknown", batch)
    assert launches, "the Gluon kernel did not run"


@HOPPER
@pytest.mark.parametrize("heads_first", [False, True], ids=["query blocks first", "heads first"])
def test_launch_orders(launches, monkeypatch, heads_first):
    """Both launch orders (``config.hopper_prefill_heads_first``) give every query block of every
    KV head one program."""
    monkeypatch.setattr(config, "hopper_prefill_heads_first", lambda *_: heads_first)
    batch = make_batch([129, 1, 2, 513, 64, 300], [129, 40, 300, 1000, 64, 900], num_q_heads=32,
                       num_kv_heads=8, head_dim=128, dtype=torch.bfloat16, device=CUDA, seed=11)
    check(f"Hopper prefill, heads first {heads_first}", batch)
    assert launches
