"""Benchmark batches: shapes, random inputs laid out as vLLM lays them out, and work counts.

Torch only (no vLLM): a ``BatchSpec`` says how many tokens each request brings this step
(``query_lens``) and how long its KV is after the step (``seq_lens``); ``make_inputs`` draws
random data for it in vLLM's layout: query/key/value are strided views of one fused QKV
tensor, the KV cache is the packed ``[num_pages, num_kv_heads, page_size, 2 * head_dim]``
logical tensor with the backend's physical stride order, and block tables point at randomly
permuted pages. A ``Variant`` (fp8 KV cache, sliding window) rides on the ``BatchSpec``.
"""

from dataclasses import dataclass, field

import torch

from flashcore_kernels.warmup import paged_cache_like

FP8 = torch.float8_e4m3fn  # what vLLM's "fp8" KV cache holds on CUDA (stored as uint8 bytes)
# Per-tensor K/V (and query) scale: vLLM's default when a checkpoint has none
# (set_default_quant_scales); every backend and the reference use it.
FP8_SCALE = 1.0


@dataclass(frozen=True)
class Variant:
    """The layer's options a case runs with: KV cache dtype (vLLM's ``--kv-cache-dtype``) and
    sliding window (a query sees itself and the ``sliding_window - 1`` tokens before it)."""

    kv_cache_dtype: str = "auto"
    sliding_window: int | None = None

    def __post_init__(self):
        # The inputs draw e4m3 values; other cache dtypes would need their own.
        if self.kv_cache_dtype not in ("auto", "fp8", "fp8_e4m3"):
            raise ValueError(f"kv_cache_dtype must be auto, fp8 or fp8_e4m3: {self}")

    @property
    def fp8(self) -> bool:
        return self.kv_cache_dtype != "auto"

    @property
    def label(self) -> str:
        fp8 = " fp8" if self.fp8 else ""
        return fp8 + (f" window {self.sliding_window}" if self.sliding_window else "")

    def kv_elem_size(self, elem_size: int) -> int:
        """Bytes per KV cache element, given the model dtype's."""
        return 1 if self.fp8 else elem_size

    def skipped_tokens(self, query_len: int, seq_len: int) -> int:
        """Leading tokens no query of the step sees; vLLM frees their whole pages and points
        the block table at the null page (SlidingWindowManager.remove_skipped_blocks)."""
        if not self.sliding_window:
            return 0
        return max(0, seq_len - query_len - self.sliding_window + 1)


@dataclass(frozen=True)
class BatchSpec:
    """One scheduler step; vLLM orders requests decodes first, then extends, then prefills."""

    seq_lens: tuple[int, ...]
    query_lens: tuple[int, ...]
    label: str = ""
    variant: Variant = Variant()

    def __post_init__(self):
        if len(self.seq_lens) != len(self.query_lens):
            raise ValueError("seq_lens and query_lens differ in length")
        if any(q < 1 or q > s for q, s in zip(self.query_lens, self.seq_lens)):
            raise ValueError(f"need 1 <= query_len <= seq_len: {self}")

    @property
    def num_reqs(self) -> int:
        return len(self.seq_lens)

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)

    @property
    def max_query_len(self) -> int:
        return max(self.query_lens)

    @property
    def max_seq_len(self) -> int:
        return max(self.seq_lens)

    @property
    def is_decode_only(self) -> bool:
        return self.max_query_len == 1

    @property
    def is_uniform(self) -> bool:
        return len(set(self.seq_lens)) == 1 and len(set(self.query_lens)) == 1


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``AxB,...`` (batch x context, sequences x tokens) as pairs, for command lines."""
    return [tuple(int(n) for n in shape.split("x")) for shape in text.split(",")]


def parse_counts(text: str) -> list[int]:
    """``N,...`` as integers, for command lines."""
    return [int(n) for n in text.split(",")]


def decode_batch(batch: int, context: int, variant: Variant = Variant()) -> BatchSpec:
    return BatchSpec((context,) * batch, (1,) * batch, f"decode {batch}x{context}{variant.label}",
                     variant)


def uneven_decode_batch(lengths, label: str) -> BatchSpec:
    """Decodes over contexts of the given lengths (a server's running batch rarely has one)."""
    return BatchSpec(tuple(lengths), (1,) * len(lengths), f"decode {label}")


def prefill_batch(num_seqs: int, seq_len: int) -> BatchSpec:
    return BatchSpec((seq_len,) * num_seqs, (seq_len,) * num_seqs, f"prefill {num_seqs}x{seq_len}")


def mixed_batch(num_decodes: int, decode_context: int, chunk: int, cached: int,
                num_chunks: int = 1) -> BatchSpec:
    """Decodes first, then prefill chunks of ``chunk`` tokens over ``cached`` cached tokens."""
    seq = (decode_context,) * num_decodes + (cached + chunk,) * num_chunks
    q = (1,) * num_decodes + (chunk,) * num_chunks
    label = f"mixed {num_decodes}x{decode_context} + {num_chunks}x({chunk} new, {cached} cached)"
    return BatchSpec(seq, q, label)


# Work counts ------------------------------------------------------------------------------

def _triangle(n: int) -> int:
    """1 + 2 + ... + n (0 for n <= 0)."""
    return n * (n + 1) // 2 if n > 0 else 0


def causal_pairs(query_len: int, seq_len: int, sliding_window: int | None = None) -> int:
    """Unmasked (query, key) pairs with bottom-right alignment: query i sees
    ``seq_len - query_len + i + 1`` keys, at most ``sliding_window`` of them."""
    pairs = query_len * (seq_len - query_len) + _triangle(query_len)
    if sliding_window:
        # The query at position p hides the p + 1 - W keys before its window, when positive;
        # summed over p = seq_len - query_len .. seq_len - 1:
        w = sliding_window
        pairs -= _triangle(seq_len - w) - _triangle(seq_len - query_len - w)
    return pairs


def attention_flops(spec: BatchSpec, num_q_heads: int, head_dim: int) -> int:
    """4 * heads * head_dim * sum of unmasked pairs (2 FLOPs per multiply-add, QK^T and PV)."""
    window = spec.variant.sliding_window
    pairs = sum(causal_pairs(q, s, window) for q, s in zip(spec.query_lens, spec.seq_lens))
    return 4 * num_q_heads * head_dim * pairs


def attention_bytes(spec: BatchSpec, num_q_heads: int, num_kv_heads: int, head_dim: int,
                    elem_size: int) -> int:
    """Bytes a perfect kernel moves: K and V of every KV token some query sees (all of them
    without a window), of every KV head, read once, plus the query read and the output written.
    ``elem_size`` is the model dtype's; an fp8 cache holds one byte per element."""
    visible = sum(s - spec.variant.skipped_tokens(q, s)
                  for q, s in zip(spec.query_lens, spec.seq_lens))
    kv = 2 * visible * num_kv_heads * head_dim * spec.variant.kv_elem_size(elem_size)
    q_and_out = 2 * spec.num_tokens * num_q_heads * head_dim * elem_size
    return kv + q_and_out


def page_counts(spec: BatchSpec, page_size: int) -> list[tuple[int, int]]:
    """Per request: (pages its block table spans, leading pages freed by the window)."""
    return [(-(-s // page_size), spec.variant.skipped_tokens(q, s) // page_size)
            for q, s in zip(spec.query_lens, spec.seq_lens)]


def kv_cache_bytes(spec: BatchSpec, num_kv_heads: int, head_dim: int, page_size: int,
                   elem_size: int) -> int:
    """Bytes of the pages in use plus the null page; ``elem_size`` as in attention_bytes."""
    pages = sum(n - skip for n, skip in page_counts(spec, page_size)) + 1
    return pages * page_size * num_kv_heads * 2 * head_dim * spec.variant.kv_elem_size(elem_size)


# Inputs -----------------------------------------------------------------------------------

@dataclass
class Inputs:
    spec: BatchSpec
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    page_size: int
    dtype: torch.dtype
    qkv: torch.Tensor  # [num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim]
    query: torch.Tensor  # [num_tokens, num_q_heads, head_dim], view of qkv
    key: torch.Tensor  # [num_tokens, num_kv_heads, head_dim], view of qkv
    value: torch.Tensor  # [num_tokens, num_kv_heads, head_dim], view of qkv
    query_start_loc: torch.Tensor  # int32 [num_reqs + 1]
    seq_lens: torch.Tensor  # int32 [num_reqs]
    block_table: torch.Tensor  # int32 [num_reqs, max_pages]
    slot_mapping: torch.Tensor  # int64 [num_tokens]
    num_pages: int
    caches: dict = field(default_factory=dict)  # stride order -> packed KV cache

    @property
    def cache_dtype(self) -> torch.dtype:
        """The dtype the kernels read the cache in."""
        return FP8 if self.spec.variant.fp8 else self.dtype

    def kv_cache(self, stride_order: tuple[int, ...] = (0, 2, 1, 3)) -> torch.Tensor:
        """The packed logical cache with this physical order; one tensor per order, shared by
        every backend that uses it (each writes the same new K/V to the same slots)."""
        order = tuple(stride_order)
        if order not in self.caches:
            self.caches[order] = _random_cache(self, order)
        return self.caches[order]

    def free_caches(self) -> None:
        self.caches.clear()


def _random_cache(inp: Inputs, order) -> torch.Tensor:
    cache = paged_cache_like(inp.num_pages, inp.num_kv_heads, inp.page_size, inp.head_dim,
                             inp.dtype, order, inp.qkv.device).normal_()
    if inp.spec.variant.fp8:
        # vLLM allocates an "fp8" cache as uint8 (STR_DTYPE_TO_TORCH_DTYPE); backends view it.
        # (.to keeps the strides of a dense permuted tensor, and a same-size view keeps them too.)
        cache = cache.to(FP8).view(torch.uint8)
    return cache


PAGE_ORDERS = ("random", "in_order")


def make_inputs(spec: BatchSpec, num_q_heads: int, num_kv_heads: int, head_dim: int,
                page_size: int = 16, dtype=torch.bfloat16, device="cuda", seed: int = 0,
                page_order: str = "random") -> Inputs:
    """Random inputs for ``spec``. ``page_order``: the block tables point at pages in random
    order, as in a server's cache after a while, or ("in_order") each sequence's pages one
    after the other, so the difference between the two is what scattered pages cost."""
    if page_order not in PAGE_ORDERS:
        raise ValueError(f"page_order must be one of {PAGE_ORDERS}, got {page_order!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = torch.device(device)
    counts = page_counts(spec, page_size)
    # Page 0 is vLLM's null block: never written, and what a window's freed pages point at.
    num_pages = sum(n - skip for n, skip in counts) + 1
    perm = torch.randperm(num_pages - 1, generator=gen) + 1  # drawn either way: same q/k/v
    if page_order == "in_order":
        perm = torch.arange(1, num_pages)
    block_table = torch.zeros(spec.num_reqs, max(n for n, _ in counts), dtype=torch.int32)
    slots, start = [], 0
    for r, ((n, skip), s, q) in enumerate(zip(counts, spec.seq_lens, spec.query_lens)):
        block_table[r, skip:n] = perm[start:start + n - skip]
        start += n - skip
        pos = torch.arange(s - q, s)
        slots.append(block_table[r, pos // page_size].long() * page_size + pos % page_size)
    width = (num_q_heads + 2 * num_kv_heads) * head_dim
    qkv = torch.randn(spec.num_tokens, width, generator=gen).to(dtype=dtype, device=device)
    q_end, k_end = num_q_heads * head_dim, (num_q_heads + num_kv_heads) * head_dim
    cu = torch.tensor([0] + list(spec.query_lens), dtype=torch.int32).cumsum(0).to(torch.int32)
    return Inputs(
        spec=spec, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
        page_size=page_size, dtype=dtype, qkv=qkv,
        query=qkv[:, :q_end].view(-1, num_q_heads, head_dim),
        key=qkv[:, q_end:k_end].view(-1, num_kv_heads, head_dim),
        value=qkv[:, k_end:].view(-1, num_kv_heads, head_dim),
        query_start_loc=cu.to(device),
        seq_lens=torch.tensor(spec.seq_lens, dtype=torch.int32, device=device),
        block_table=block_table.to(device), slot_mapping=torch.cat(slots).to(device),
        num_pages=num_pages)


def dense_kv(inp: Inputs, cache: torch.Tensor):
    """Contiguous ``[num_reqs, num_kv_heads, seq_len, head_dim]`` K and V gathered from the
    cache; only for uniform batches (the SDPA floor)."""
    s, d, p = inp.spec.seq_lens[0], inp.head_dim, inp.page_size
    pos = torch.arange(s, device=cache.device)
    pages = inp.block_table.long()[:, pos // p]  # [num_reqs, s]
    rows = cache[pages, :, (pos % p)[None, :], :]  # [num_reqs, s, num_kv_heads, 2 * d]
    rows = rows.transpose(1, 2).contiguous()
    return rows[..., :d].contiguous(), rows[..., d:].contiguous()


def reference_error(inp: Inputs, cache: torch.Tensor, out: torch.Tensor, max_reqs: int = 3,
                    max_rows: int = 64) -> float:
    """Max-abs error of ``out`` against the float64 reference on the last ``max_rows`` queries of
    a few requests (first, middle, last), read through the block table from ``cache`` after the
    new K/V were written."""
    from flashcore_kernels import paged_attention_reference

    variant = inp.spec.variant
    options = dict(sliding_window=variant.sliding_window)
    if variant.fp8:
        cache = cache.view(FP8)
        options.update(k_scale=FP8_SCALE, v_scale=FP8_SCALE)
    n = inp.spec.num_reqs
    picks = sorted({0, n // 2, n - 1})[:max_reqs]
    cu = inp.query_start_loc.tolist()
    worst = 0.0
    for r in picks:
        # The last few queries of a request are themselves a valid bottom-right query block;
        # checking only those keeps the float64 score matrix small for long prefills.
        rows = slice(max(cu[r], cu[r + 1] - max_rows), cu[r + 1])
        ref = paged_attention_reference(
            inp.query[rows], cache,
            torch.tensor([0, rows.stop - rows.start], dtype=torch.int32, device=cache.device),
            inp.seq_lens[r:r + 1], inp.block_table[r:r + 1], **options)
        err = (out[rows].double() - ref).abs().max().item()
        worst = max(worst, err if err == err else float("inf"))
    return worst
