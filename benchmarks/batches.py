"""Benchmark batches: shapes, random inputs laid out as vLLM lays them out, and work counts.

Torch only (no vLLM): a ``BatchSpec`` says how many tokens each request brings this step
(``query_lens``) and how long its KV is after the step (``seq_lens``); ``make_inputs`` draws
random data for it in vLLM's layout: query/key/value are strided views of one fused QKV
tensor, the KV cache is the packed ``[num_pages, num_kv_heads, page_size, 2 * head_dim]``
logical tensor with the backend's physical stride order, and block tables point at randomly
permuted pages.
"""

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class BatchSpec:
    """One scheduler step; vLLM orders requests decodes first, then extends, then prefills."""

    seq_lens: tuple[int, ...]
    query_lens: tuple[int, ...]
    label: str = ""

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


def decode_batch(batch: int, context: int) -> BatchSpec:
    return BatchSpec((context,) * batch, (1,) * batch, f"decode {batch}x{context}")


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

def causal_pairs(query_len: int, seq_len: int) -> int:
    """Unmasked (query, key) pairs with bottom-right alignment: query i sees
    ``seq_len - query_len + i + 1`` keys."""
    return query_len * (seq_len - query_len) + query_len * (query_len + 1) // 2


def attention_flops(spec: BatchSpec, num_q_heads: int, head_dim: int) -> int:
    """4 * heads * head_dim * sum of unmasked pairs (2 FLOPs per multiply-add, QK^T and PV)."""
    pairs = sum(causal_pairs(q, s) for q, s in zip(spec.query_lens, spec.seq_lens))
    return 4 * num_q_heads * head_dim * pairs


def attention_bytes(spec: BatchSpec, num_q_heads: int, num_kv_heads: int, head_dim: int,
                    elem_size: int) -> int:
    """Bytes a perfect kernel moves: K and V of every KV token of every KV head, read once,
    plus the query read and the output written."""
    kv = 2 * sum(spec.seq_lens) * num_kv_heads * head_dim * elem_size
    q_and_out = 2 * spec.num_tokens * num_q_heads * head_dim * elem_size
    return kv + q_and_out


def kv_cache_bytes(spec: BatchSpec, num_kv_heads: int, head_dim: int, page_size: int,
                   elem_size: int) -> int:
    pages = sum(-(-s // page_size) for s in spec.seq_lens) + 1
    return pages * page_size * num_kv_heads * 2 * head_dim * elem_size


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
    logical = (inp.num_pages, inp.num_kv_heads, inp.page_size, 2 * inp.head_dim)
    physical = tuple(logical[i] for i in order)
    inverse = tuple(order.index(i) for i in range(4))
    cache = torch.empty(physical, dtype=inp.dtype, device=inp.qkv.device).permute(*inverse)
    cache.normal_()
    return cache


def make_inputs(spec: BatchSpec, num_q_heads: int, num_kv_heads: int, head_dim: int,
                page_size: int = 16, dtype=torch.bfloat16, device="cuda", seed: int = 0) -> Inputs:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = torch.device(device)
    pages_per_req = [-(-s // page_size) for s in spec.seq_lens]
    num_pages = sum(pages_per_req) + 1  # page 0 stays unused, as vLLM reserves a null block
    perm = torch.randperm(num_pages - 1, generator=gen) + 1
    block_table = torch.zeros(spec.num_reqs, max(pages_per_req), dtype=torch.int32)
    slots, start = [], 0
    for r, (n, s, q) in enumerate(zip(pages_per_req, spec.seq_lens, spec.query_lens)):
        block_table[r, :n] = perm[start:start + n]
        start += n
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
            inp.seq_lens[r:r + 1], inp.block_table[r:r + 1])
        err = (out[rows].double() - ref).abs().max().item()
        worst = max(worst, err if err == err else float("inf"))
    return worst
