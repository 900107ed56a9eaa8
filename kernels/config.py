"""Launch heuristics: tile sizes, warps, pipeline stages and the split-KV count.

Every choice here depends only on values that stay fixed for a model (head_dim, queries_per_kv,
dtype) or on tensor shapes (number of sequences), never on per-batch lengths, so a launch
captured in a CUDA graph stays valid when it is replayed on a batch of other lengths. The one
exception, ``short_prefills_on_triton``, reads the host-side length bounds to pick between two
prefill kernels that are both right for any batch: a graph that replays the other kernel's
launch is slower on that batch, never wrong.
"""

import os
from dataclasses import dataclass
from functools import lru_cache

import torch

# Largest split-KV count; the merge kernel unrolls its loop over the splits.
MAX_KV_SPLITS = 64
# Partials (query heads x splits) one program of the split merge folds in its unrolled loop: at
# head 128 with 4 warps, one register a thread for each (config.merge_heads).
MERGE_PARTIALS = 32
# Shared memory one block may use on Hopper (227 KB), what the tiles below were measured with.
HOPPER_SHARED_MEMORY = 232448
# 32-bit registers of one SM (every architecture from sm_80 to sm_90), and threads of a warp.
REGISTERS_PER_SM = 65536
THREADS_PER_WARP = 32


@dataclass(frozen=True)
class TileConfig:
    block_m: int  # query rows per program: BLOCK_Q tokens x queries_per_kv heads
    block_n: int  # KV tokens per inner-loop step
    num_warps: int
    num_stages: int
    # Read the block table one KV tile ahead (see tile.attend_kv_range), so the K/V copies run
    # num_stages - 1 tiles ahead of the matrix products. Only the head-128 prefill rule does.
    lookahead: bool = False
    # Over an fp8 cache, run the products in fp16 (tile.fp8_cache_query). The fp8 decode
    # rules do.
    fp16_products: bool = False
    # Registers a thread may take (ptxas -maxnreg), where the occupancy the split count plans
    # for needs fewer than the compiler would pick.
    maxnreg: int | None = None

    def launch_options(self) -> dict:
        """The compiler options of a launch with these tiles."""
        options = dict(num_warps=self.num_warps, num_stages=self.num_stages)
        if self.maxnreg:
            options.update(maxnreg=self.maxnreg)
        return options


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1, read by triton.jit at import)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def hopper_prefill_enabled() -> bool:
    """Whether the launcher may take the Gluon prefill kernel of Hopper GPUs (hopper_prefill.py),
    which is the default; FLASHCORE_HOPPER_PREFILL=0 sends every prefill to prefill.py instead.
    On the H200, causal, 32/8 heads of 128, it ran at 1.23x prefill.py's rate and 0.90x / 0.92x
    FlashAttention-3's at 4k / 16k tokens (benchmarks/NOTES.md)."""
    return os.environ.get("FLASHCORE_HOPPER_PREFILL", "1") != "0"


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (n >= 1). Plain Python: the launchers call this on every
    step, and ``triton.next_power_of_2`` costs ~4 us a call through its constexpr wrapper."""
    return 1 << (n - 1).bit_length()


def power_of_2_at_most(n: int) -> int:
    """The largest power of two <= n (n >= 1)."""
    return 1 << (n.bit_length() - 1)


def padded_head_dim(head_dim: int) -> int:
    return next_power_of_2(head_dim)


def compact_block_n(head_dim: int, dtype: torch.dtype) -> int:
    """KV step for GPUs with less shared memory than Hopper (A100: 163 KB, consumer Ampere and
    Ada: 99 KB), shorter as K/V rows grow. With 4 warps and 2 stages these tiles fit 99 KB at
    every head size (``python -m flashcore_kernels.resources --arch 86``); they have not been
    tuned on those GPUs."""
    row_bytes = padded_head_dim(head_dim) * dtype.itemsize
    return 64 if row_bytes <= 256 else 32 if row_bytes <= 512 else 16


def prefill_tiles(head_dim: int, queries_per_kv: int, dtype: torch.dtype = torch.bfloat16,
                  shared_memory: int = HOPPER_SHARED_MEMORY) -> TileConfig:
    """Tiles of the kernel that serves queries longer than one token, for a GPU whose blocks may
    use ``shared_memory`` bytes (``shared_memory_per_block``)."""
    min_rows = max(16, next_power_of_2(queries_per_kv))
    if interpreting():
        # Small tiles so CPU tests cross several KV tiles and query blocks.
        return TileConfig(block_m=max(32, min_rows), block_n=16, num_warps=4, num_stages=1,
                          lookahead=True)
    if shared_memory < HOPPER_SHARED_MEMORY:
        block_n = compact_block_n(head_dim, dtype)
        return TileConfig(block_m=max(64 if block_n > 16 else 32, min_rows), block_n=block_n,
                          num_warps=4, num_stages=2)
    if dtype == torch.float32:
        # Four-byte tiles: the 16-bit choice below would ask for 257 KB of shared memory at
        # head 128 (Hopper has 227 KB). These take at most 140 KB (python -m
        # flashcore_kernels.resources), which also fits an A100's 163 KB.
        block_n = 64 if padded_head_dim(head_dim) <= 128 else 32
        return TileConfig(block_m=max(64, min_rows), block_n=block_n, num_warps=4, num_stages=2)
    if padded_head_dim(head_dim) > 128:
        # H200, bf16, 16/8 heads, head 256, one causal sequence of 4k / 16k tokens, sweep of
        # block_m {64, 128} x block_n {32, 64} x warps {4, 8} x stages {2, 3} (the tiles that fit
        # shared memory): 128/64/8/2 gave 342 / 462 TFLOP/s, the best; 64/32/8/2 (the previous
        # choice) 131 / 144. 197 KB of shared memory. With the block-table lookahead (same run)
        # 313 / 422 against 346 / 462: at two stages the copies gain nothing from it.
        return TileConfig(block_m=max(128, min_rows), block_n=64, num_warps=8, num_stages=2)
    if padded_head_dim(head_dim) <= 64:
        # H200, bf16, 32/32 heads, head 64, 4k / 16k tokens, sweep of block_m {64, 128} x
        # block_n {64, 128} x warps {4, 8} x stages {2, 3, 4}: 64/64/4/2 gave 284 / 355 TFLOP/s,
        # the best with 128/128/4/3 (257 / 354); the head-128 choice below 212 / 266. With the
        # lookahead the best, 128/64/8/3, gave 284 / 365 against 287 / 355 for this tile in the
        # same run: not worth its 128 KB of shared memory.
        return TileConfig(block_m=max(64, min_rows), block_n=64, num_warps=4, num_stages=2)
    # H200, bf16, 32/8 heads, head 128, page 16, one causal sequence of 4k / 16k tokens, sweep of
    # block_m {64, 128} x block_n {32, 64, 128} x warps {4, 8} x stages {2, 3, 4}: 128/128/8/3
    # gave 322 / 414 TFLOP/s, the best; 128/64/8/3 (the previous choice) 287 / 352. With the
    # block-table lookahead, 1k / 4k / 16k: 177 / 382 / 442 against 177 / 351 / 405 without
    # (same run); 128/64/8/3 with it 187 / 382 / 423; two stages lose (319 / 364 at 4k / 16k),
    # and so do 64-row tiles two programs per SM could hold (64/64/4/3: 176 / 330 / 364). GQA
    # 7:1 (28/4), 4k / 16k: 368 / 430 with it, 317 / 377 without. 229 KB of shared memory:
    # three stages of 128-token K and V tiles. (benchmarks/results/tiles-h200/tune_lookahead_*)
    return TileConfig(block_m=max(128, min_rows), block_n=128, num_warps=8, num_stages=3,
                      lookahead=True)


def hopper_prefill_tiles(head_dim: int) -> TileConfig | None:
    """Tiles of the Gluon prefill kernel (hopper_prefill.py, sm_90), None where it does not
    serve the head size. ``num_warps`` counts the two consumer warpgroups (16 rows a warp); the
    loader warpgroup comes on top. H200, bf16, one causal sequence of 4k / 16k tokens, TFLOP/s
    against prefill.py's best tile in the same process (benchmarks/NOTES.md):
    - head 128, 128 x 128 tiles, three stages (224 KB of shared memory): 473 / 545 against
      383 / 442;
    - head 64, 128 x 128, four stages (144 KB): 310 / 393 against 284 / 356;
    - head 256, 128 x 64, two stages (197 KB; a third would not fit): 470 / 618 against
      343 / 461. Its consumers hold a 64 x 256 fp32 output, 128 registers a thread, so S and P
      fit beside it only with 64-token KV tiles."""
    if head_dim == 128:
        return TileConfig(block_m=128, block_n=128, num_warps=8, num_stages=3)
    if head_dim == 64:
        return TileConfig(block_m=128, block_n=128, num_warps=8, num_stages=4)
    if head_dim == 256:
        return TileConfig(block_m=128, block_n=64, num_warps=8, num_stages=2)
    return None


def hopper_prefill_heads_first(kv_bytes: int, device: torch.device) -> bool:
    """Whether the Gluon prefill kernel launches its programs KV heads first (every head's
    heaviest query block, then every head's next one) rather than query blocks first (all of
    head 0's blocks, heaviest first, then head 1's). Heads first is the better schedule, the
    heaviest work overall starting first, while the K/V that the batch's own tokens write,
    ``kv_bytes``, fits in L2; past that, programs of one head running together share its K/V
    in L2 instead. Measured on an H200 (benchmarks/NOTES.md, "Launch order"): heads first
    gained up to 30% with 4-32 MiB of K/V and lost 2-4% with 64-128 MiB."""
    return kv_bytes <= l2_cache_bytes(device)


# Longest sequence (KV tokens, cached prefix included) for which short_prefills_on_triton
# sends a batch of several prefills to the Triton prefill kernel.
SHORT_PREFILL_TOKENS = 1024


def short_prefills_on_triton(head_dim: int, num_tokens: int, max_query_len: int,
                             max_seq_len: int | None) -> bool:
    """Whether a prefill batch that the Gluon prefill kernel serves runs on the Triton one
    (prefill.py) instead: at head 64, when every sequence is short (``max_seq_len`` at most
    SHORT_PREFILL_TOKENS) and the batch holds at least two longest queries' worth of tokens.
    ``max_seq_len`` None (unknown) keeps the Gluon kernel.

    The Gluon kernel holds a whole SM per program (one warpgroup loading, two computing), so
    each program's start and end are exposed; short sequences make short programs, and a batch
    of many pays that many times. H200, bf16, causal, TFLOP/s, Gluon / Triton
    (benchmarks/results/tiles-h200/ab_short_prefill_d64.txt, run 3):
    - 32/32 heads, routed: 2 x 512 119 / 127, 4 x 512 130 / 149, 16 x 512 136 / 187,
      4 x 1k 212 / 220, 8 x 1k 210 / 239; routed though Gluon leads: 2 x 1k 203 / 195,
      4 x 512 over 512 cached 234 / 229;
    - 32/32 heads, kept: 1 x 512 86 / 77, 1 x 1k 186 / 157, 2 x 2k 289 / 259, 4 x 2k 284 / 279,
      16 x 512 over 1k cached 291 / 287, 8 x 256 over 2k cached 300 / 282;
    - 9/3 heads (SmolLM2), routed: 2 x 512 47 / 50, 16 x 512 111 / 142, 8 x 1k 181 / 192; kept:
      1 x 1k 68 / 67, 2 x 2k 235 / 196; kept though Triton leads: 8 x 256 over 2k cached
      185 / 216 (168 Gluon programs, 1.3 waves).
    At heads 128 and 256 the Gluon kernel leads at every shape measured (16 x 512 included)."""
    return (head_dim == 64 and max_seq_len is not None and max_seq_len <= SHORT_PREFILL_TOKENS
            and num_tokens >= 2 * max_query_len)


def _large_group_tile(queries_per_kv: int, shared_memory: int) -> bool:
    """Whether ``decode_tiles`` may give this group its 128-token tile (it does at 8 splits or
    fewer, head 128 or less): 32 query rows or more, on a GPU with Hopper's shared memory."""
    return queries_per_kv > 16 and shared_memory >= HOPPER_SHARED_MEMORY


def _head_64_tile(head_dim: int, cache_dtype: torch.dtype, shared_memory: int) -> bool:
    """Whether ``decode_tiles`` gives this head its 2-warp tile: a padded head of 64 over a
    16-bit cache, on a GPU with Hopper's shared memory."""
    return (padded_head_dim(head_dim) == 64 and cache_dtype.itemsize == 2
            and shared_memory >= HOPPER_SHARED_MEMORY)


def decode_tiles(head_dim: int, queries_per_kv: int, num_kv_splits: int,
                 dtype: torch.dtype = torch.bfloat16, cache_dtype: torch.dtype | None = None,
                 shared_memory: int = HOPPER_SHARED_MEMORY, planned: bool = False) -> TileConfig:
    """Tiles of the kernel that serves single-token queries: one program per KV head holds
    all of that head's query heads (tl.dot needs at least 16 rows). ``cache_dtype`` is the KV
    cache's when it differs from ``dtype`` (fp8); ``planned``: the launch runs a decode plan."""
    rows = max(16, next_power_of_2(queries_per_kv))
    # An fp8 cache under a 16-bit query: products in fp16 (a float32 query keeps its own).
    fp16_products = cache_dtype == torch.float8_e4m3fn and dtype != torch.float32
    if interpreting():  # (the fp8 rules' products too, for the CPU tests)
        return TileConfig(block_m=rows, block_n=16, num_warps=4, num_stages=1,
                          fp16_products=fp16_products)
    if shared_memory < HOPPER_SHARED_MEMORY:
        return TileConfig(block_m=rows, block_n=compact_block_n(head_dim, dtype), num_warps=4,
                          num_stages=2)
    if padded_head_dim(head_dim) > 128:
        num_warps = 4
        if dtype.itemsize == 2 and cache_dtype in (None, dtype):
            # Head 256 takes 141-157 registers a thread unheld: three programs an SM where the
            # split rule and the plan's wave count four, and a batch of as many programs as that
            # wave (64 x 8k at 8 KV heads: 512) runs a short second wave. Held to the four's 128
            # and two stages: H200, 16/8 heads, TB/s at 64x8k / 256x2k / 8x8k 3.50 / 4.17 / 3.21
            # -> 4.55 / 4.57 / 4.18 (FA3 4.07 at 64x8k, 3.87 at 8x8k); block_n 16 4.01 / 4.03 /
            # 3.68, 8 warps 3.43 at most (tiles-h200/tune_d256_decode.txt).
            return TileConfig(block_m=rows, block_n=32, num_warps=num_warps, num_stages=2,
                              maxnreg=decode_thread_registers(queries_per_kv, head_dim, dtype,
                                                              num_warps, shared_memory))
        # An fp8 cache or a float32 model: held to 128, the fp8 kernel spills 76-128 bytes
        # (sm_90); neither is measured, so they keep the tile the 16-bit rule above replaced.
        return TileConfig(block_m=rows, block_n=32, num_warps=num_warps, num_stages=3)
    if _large_group_tile(queries_per_kv, shared_memory) and num_kv_splits <= 8:
        # Large groups (MQA: 32 query heads on one KV head) do 32 rows of matrix products per KV
        # token, and longer steps pay off where each program has a long KV range. H200, MQA,
        # head 128, TB/s of KV read at 1x8k, 8x2k, 64x8k, 256x8k (64, 64, 8, 2 splits), all with
        # one tile: block_n 128, 4 warps, 3 stages 0.45 0.55 3.18 4.07; the rule below (64, 4,
        # 2) 0.47 0.75 2.64 3.03. So 128-token steps at 8 splits or fewer (>= 1k tokens each
        # at 64x8k), 64 above (32 tokens a split at 8x2k).
        return TileConfig(block_m=rows, block_n=128, num_warps=4, num_stages=3)
    if fp16_products and padded_head_dim(head_dim) == 64:
        # fp8 at head 64: head 128's fp8 tiles (below) gave the planned whole-sequence kernel
        # 194-202 registers, two programs an SM, and 64-token steps to split decodes, whose
        # pieces are long here (few splits: 32 KV heads fill a wave with two). H200, 32/32 heads,
        # the plan on, TB/s counted at one byte per element, 64x8k / 8x8k / 8x2k / 3x8k / 1x8k
        # (tiles-h200/tune_fp8_d64_decode.txt): whole sequences with 2 warps and 64-token steps,
        # held to 128 registers (eight programs an SM), 3.08 at 64x8k where 128-token steps
        # with 4 warps read 2.69-2.76 (1.79 as head 128's rule, FA3 2.15); split decodes with
        # 128-token steps and 4 warps, held to 128 (the four the wave counts), 2.49 / 1.95 /
        # 2.06 / 1.87 where head 128's split rule read 1.98 / 1.67 / 1.70 / 1.75 (FA3 2.04 /
        # 1.70 / 1.47 at the first three). SmolLM2's 9/3 heads the same way: 256x2k (whole)
        # 2.44 against 1.78-1.94 with 128-token steps, 64x8k (split) 2.13 against 1.66. All
        # compile to 128 registers without spills (sm_90).
        if num_kv_splits == 1:
            return TileConfig(block_m=rows, block_n=64, num_warps=2, num_stages=3,
                              fp16_products=True, maxnreg=128)
        return TileConfig(block_m=rows, block_n=128, num_warps=4, num_stages=3,
                          fp16_products=True, maxnreg=128)
    if cache_dtype == torch.float8_e4m3fn and num_kv_splits == 1:
        # An fp8 cache moves half the bytes of a 16-bit one per token, so a step of 64 tokens
        # is short. H200, 32/8 heads, head 128, TB/s counted at one byte per element, at 64x8k /
        # 256x8k (no split): block_n 128, 4 warps, 2 stages 2.66 / 2.66; the rule below (64, 4,
        # 4) 1.94 / 1.96, and (64, 4, 2) 1.91 / 2.48. Split batches keep the rule below: 1x8k /
        # 8x2k 1.41 / 1.97 with 64-token steps, 1.10 / 1.65 with 128.
        # Products in fp16 there (e4m3 converts to fp16 in a quarter of the instructions it
        # takes to bf16): fp8 64x8k 2.65 -> 2.82 TB/s, 0.94x -> 0.99x FA3
        # (benchmarks/results/tiles-h200/ab_fp8_fp16_products.txt).
        # With a plan, ptxas gives this kernel (twice the code: two slots a row) 255 registers;
        # held to 208, about the unplanned one's 207 (both two programs an SM), it spills
        # nothing and fp8 64x8k / 256x8k / 128x2k went 396.5 -> 385.1 / 1555 -> 1512 /
        # 210.6 -> 205.1 us (0.968x -> 0.997x FA3 at 64x8k); the same cap made the unplanned
        # kernel 1.5% slower (tiles-h200/ab_fp8_register_cap.txt).
        return TileConfig(block_m=rows, block_n=128, num_warps=4, num_stages=2,
                          fp16_products=fp16_products, maxnreg=208 if planned else None)
    if fp16_products:
        # Split fp8 decodes: fp16 products too, held to the 128 registers of four programs an
        # SM, the occupancy num_kv_splits plans for. Unbounded they take 149 registers, 3
        # programs an SM, and 8x8k went 57.0 -> 75.5 us; at 128, 44 bytes spill and 8x8k goes
        # 2.35 -> 2.38 TB/s, 0.98x FA3 (ab_fp8_fp16_products.txt).
        return TileConfig(block_m=rows, block_n=64, num_warps=4, num_stages=2,
                          fp16_products=True, maxnreg=128)
    if _head_64_tile(head_dim, cache_dtype or dtype, shared_memory):
        # Head 64: half the warps of the rule below, split or not. H200, the plan on, TB/s of KV
        # read (tiles-h200/tune_d64_decode.txt), 32/32 heads at 64x8k / 256x2k / 8x8k / 8x2k /
        # 3x8k / 1x8k: the rule below (block_n 64, 4 warps, 4 stages; 2 split) 3.67 / 4.24 /
        # 4.13 / 3.39 / 3.70 / 2.76 -> 4.42 / 4.48 / 4.16 / 3.42 / 3.72 / 2.85 (FA3 3.86 at
        # 64x8k); SmolLM2's 9/3 at 64x8k / 256x2k / 8x8k 3.90 / 3.98 / 2.72 -> 3.99 / 4.06 /
        # 2.97. 2 or 3 stages within 3%; block_n 128 (4 warps, 3 stages) 4.46 at 64x8k but
        # 3.70 at 8x8k and 3.11 for SmolLM2. 117-128 registers: eight programs an SM.
        return TileConfig(block_m=rows, block_n=64, num_warps=2, num_stages=4)
    # H200, bf16, 32/8 heads, head 128, page 16; sweep of block_n {16..128} x warps {2, 4, 8} x
    # stages {2..5}, TB/s of KV read at 1x8k, 8x2k, 64x8k, 256x8k. block_n 64, 4 warps:
    # 2 stages 2.68 2.71 4.25 4.10; 4 stages 2.41 2.62 4.27 4.34. Split batches (small, short
    # loops per program) do better with the shallower pipeline, whole-sequence ones deeper.
    num_warps = 4
    # With a plan the split count is a run-time value, and ptxas gives the kernel 144-158
    # registers for some groups (158 at one split for groups of 2 and 5-7, 148 at several for
    # 8 and more; 110-128 without a plan): three programs an SM where the plan's wave counts
    # four. So the planned kernel is held to the registers of the programs it counts on. Not
    # at head 64 (here a float32 model's only: 16-bit caches take the tile above), which in bf16
    # took 72-80 unheld and 116-120 under the same cap.
    # Held to 128: GQA 7:1 (one split) 128x2k / 256x2k 172.3 -> 131.1 / 273.4 -> 253.9 us
    # (0.82x / 0.99x -> 1.07x / 1.06x FA3), Llama-3-70B's 64/8 heads 8x8k / 32x8k 86.6 -> 70.6
    # / 306.2 -> 251.2 us (0.82x -> 1.01x / 1.02x); Llama-3-8B's group of 4, inside 128 either
    # way, -2.1% to +0.8% (tiles-h200/ab_decode_register_cap.txt).
    maxnreg = None
    if planned and padded_head_dim(head_dim) == 128:
        maxnreg = decode_thread_registers(queries_per_kv, head_dim, cache_dtype or dtype,
                                          num_warps, shared_memory)
    return TileConfig(block_m=rows, block_n=64, num_warps=num_warps,
                      num_stages=2 if num_kv_splits > 1 else 4, maxnreg=maxnreg)


@lru_cache(maxsize=None)
def shared_memory_per_block(device: torch.device) -> int:
    """Bytes of shared memory one block may opt into; the interpreter plans as for Hopper."""
    if device.type != "cuda":
        return HOPPER_SHARED_MEMORY
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


@lru_cache(maxsize=None)
def compute_capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


@lru_cache(maxsize=None)
def multiprocessor_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a small "GPU", so CPU tests exercise split-KV
    return torch.cuda.get_device_properties(device).multi_processor_count


def l2_cache_bytes(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).L2_cache_size


def decode_programs_per_sm(queries_per_kv: int, head_dim: int, cache_dtype: torch.dtype,
                           shared_memory: int = HOPPER_SHARED_MEMORY) -> int:
    """Decode programs one SM holds at once, limited by registers (compiled for sm_90): two for
    the 128-token tile that groups of 32 or more get on Hopper (``decode_tiles``: 4 warps, 209
    registers, 82 KB of shared memory); six at a padded head of 64 over a 16-bit cache on Hopper
    (its 2-warp tile takes 111-128 registers, room for eight; the 4-warp tile it replaced,
    72-80, for six); four otherwise (head 128's 4-warp tile takes 111 unplanned, and its planned
    kernel and head 256's tile are held to the four's 128).

    Six at head 64 gives the plan a third split where four gave two: H200, bf16, graph replay,
    with the 4-warp tile, four -> six (tiles-h200/ab_decode_heads.txt, run 3): 32/32 heads,
    planned 8 x 8k 0.992x -> 1.101x FA3, 8 x 2k 1.012x -> 1.095x, 3 x 8k 1.150x -> 1.306x,
    1 x 32k + 7 x 1k 1.045x -> 1.078x; SmolLM2's 9/3 at 8 x 8k / 64 x 8k 1.034x / 1.130x ->
    1.120x / 1.328x; 64 x 8k at 32/32 unchanged. Eight, with the 2-warp tile, gave the plan a
    fourth split that ran slower (8 x 8k 1.130x -> 1.110x, 8 x 2k 1.118x -> 1.098x; run 5). An
    fp8 cache keeps four: its split tile is held to the four's registers."""
    if _large_group_tile(queries_per_kv, shared_memory):
        return 2
    if _head_64_tile(head_dim, cache_dtype, shared_memory):
        return 6
    return 4


def decode_thread_registers(queries_per_kv: int, head_dim: int, cache_dtype: torch.dtype,
                            num_warps: int, shared_memory: int = HOPPER_SHARED_MEMORY) -> int:
    """Registers a thread may take so that ``decode_programs_per_sm`` programs of
    ``num_warps`` fit one SM's register file."""
    programs = decode_programs_per_sm(queries_per_kv, head_dim, cache_dtype, shared_memory)
    return REGISTERS_PER_SM // (programs * num_warps * THREADS_PER_WARP)


def decode_wave(device: torch.device, queries_per_kv: int, head_dim: int,
                cache_dtype: torch.dtype) -> int:
    """Decode programs the GPU runs at once: one wave."""
    programs = decode_programs_per_sm(queries_per_kv, head_dim, cache_dtype,
                                      shared_memory_per_block(device))
    return programs * multiprocessor_count(device)


def num_kv_splits(num_seqs: int, num_kv_heads: int, device: torch.device, queries_per_kv: int,
                  head_dim: int, cache_dtype: torch.dtype) -> int:
    """Split each decode sequence's KV range so that the programs fill one wave of the GPU.

    Without splitting, a decode batch launches num_seqs * num_kv_heads programs; at batch 1 with
    8 KV heads that is 8 programs on a 132-SM H100, and the KV read runs at a few percent of the
    memory bandwidth. More programs than the SMs hold at once (``decode_programs_per_sm``) start a
    second, mostly idle wave, so the count is the largest power of two that keeps one wave. H200,
    TB/s of KV read, splits 8 / 16 / 32 / 64: 32/8 heads at 1x8k 1.42 2.23 2.60 2.70 (64 chosen),
    at 8x8k 3.88 3.74 3.59 3.50 (8); MQA (two per SM), splits 2 / 4 / 8 at 64x8k 2.78 3.37 3.15
    (4), at 256x2k one split 3.81, two 3.19 (1). The choice was the best at every shape of
    benchmarks/results/tiles-h200/tune_splits.txt but MQA 8x2k (32 splits 0.90, 16 0.94). The
    previous rule (about two programs per SM, rounded up) gave MQA 8 splits at 64x8k, 2 at 256x2k
    and 64 at 8x2k (0.75). A power of two keeps the merge kernel's load of all partials a single
    tile.
    """
    programs = max(1, num_seqs * num_kv_heads)
    splits = max(1, decode_wave(device, queries_per_kv, head_dim, cache_dtype) // programs)
    return min(MAX_KV_SPLITS, power_of_2_at_most(splits))


def planned_decode_tiles(num_seqs: int, num_kv_heads: int, device: torch.device,
                         queries_per_kv: int, head_dim: int, dtype: torch.dtype,
                         cache_dtype: torch.dtype) -> TileConfig:
    """The decode kernel's tiles in a planned launch of ``num_seqs`` sequences (the launcher's
    choice: those of the count a batch of like lengths gets), whose steps the decode plan cuts
    its pieces in (``DecodePlan.update``'s ``tile_tokens``)."""
    splits = num_kv_splits(num_seqs, num_kv_heads, device, queries_per_kv, head_dim, cache_dtype)
    return decode_tiles(head_dim, queries_per_kv, splits, dtype, cache_dtype,
                        shared_memory_per_block(device), planned=True)


def merge_heads(num_q_heads: int, num_splits: int) -> int:
    """Query heads each program of the split merge combines (decode.merge_splits_kernel): as
    many as MERGE_PARTIALS allows, a power of two, at most the heads there are.

    H200, bf16, decode alone, graph replay, us, the earlier merge (one head a program, one tile)
    against this rule, alternating (benchmarks/results/tiles-h200/ab_merge.txt, machine 4): MQA
    64 x 8k (4 splits, 8 heads) 80.0 -> 74.6, MQA 128 x 4k (2 splits) 76.9 -> 74.9, GQA 7:1
    16 x 8k (8 splits) 70.3 -> 69.5, Llama 8 x 8k (8 splits) 69.0 -> 68.7. At 64 splits the
    unrolled loop lost to the tile (machine 2: Llama 1 x 8k 11.24 -> 11.8, MQA 1 x 8k 8.4 ->
    9.2), so there the tile stays."""
    heads = power_of_2_at_most(max(1, MERGE_PARTIALS // num_splits))
    return min(next_power_of_2(num_q_heads), heads)


def planned_merge_tile(num_q_heads: int, num_splits: int) -> tuple[int, int]:
    """(splits, query heads) of one tile of the planned merge (decode.merge_planned).

    ``num_splits`` is the shape rule's count (``num_kv_splits``), which the plan gives a batch of
    like lengths at the decode grid's batch sizes. The tile holds twice that count (at least 4
    first, so that a large batch of one split each with one long sequence in 16 takes two
    passes), with the heads of that count alone: MERGE_PARTIALS partials (32 registers a thread
    at head 128, 4 warps), one head at 64 splits. A sequence split more than the tile holds
    loops, all the tile's loads in flight together each pass; at the rule's own count the second
    half is masked off and loads nothing. Twice, because the plan splits further than the rule:
    3 like sequences get 22 splits, not 16, and a long decode beside short ones many more.
    H200, bf16, Llama-3-8B heads, graph replay, us, the tile of the count alone against twice it,
    interleaved (tiles-h200/ab_decode.txt run 1): 3 x 8k 34.3 -> 33.5, 12 x 8k 103.3 -> 101.9,
    1 x 32k + 7 x 1k 51.8 -> 49.9, 1 x 128k + 31 x 2k 201.6 -> 196.3, 1 x 32k + 69 x 1k
    118.1 -> 115.3; 8 x 8k and 64 x 8k unchanged (70.0, 489)."""
    rows = max(num_splits, 4)
    heads = max(1, MERGE_PARTIALS // rows)
    return 2 * rows, min(next_power_of_2(num_q_heads), heads)


def merge_one_tile(num_splits: int) -> bool:
    """Whether the split merge loads all of a head's splits as one tile (one head a program)
    rather than walking them in its unrolled loop: at the largest split count only, where the
    loop's 64 steps a thread lost 0.5-0.8 us to the tile (ab_merge.txt, machine 2). At 32 splits
    the loop with one head is faster (H200, alternating, machines 6 and 7: MQA 8 x 2k 9.45-9.59
    -> 9.22-9.29 us, GQA 7:1 4 x 8k 24.95-25.03 -> 24.42-24.66)."""
    return num_splits >= MAX_KV_SPLITS


def split_kv_rows(max_num_seqs: int, num_kv_heads: int, device: torch.device, queries_per_kv: int,
                  head_dim: int, cache_dtype: torch.dtype) -> int:
    """Rows of partial results (one per sequence and split) the largest batch can need."""
    return max(n * num_kv_splits(n, num_kv_heads, device, queries_per_kv, head_dim, cache_dtype)
               for n in range(1, max_num_seqs + 1))
