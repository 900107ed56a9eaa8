"""Build ragged paged-attention batches for tests: random data, permuted pages, SDPA beside them."""

from dataclasses import dataclass

import torch

from flashcore_kernels.reference import gather_kv, paged_attention_reference


@dataclass
class PagedBatch:
    query: torch.Tensor  # [num_tokens, num_q_heads, head_dim]
    kv_cache: torch.Tensor  # logical [num_pages, num_kv_heads, page_size, 2 * head_dim]
    cu_seqlens_q: torch.Tensor  # [num_seqs + 1] int32
    seq_lens: torch.Tensor  # [num_seqs] int32
    block_table: torch.Tensor  # [num_seqs, max_pages_per_seq] int32
    q_lens: list[int]
    kv_lens: list[int]

    @property
    def max_query_len(self) -> int:
        return max(self.q_lens, default=1)

    def args(self):
        return self.query, self.kv_cache, self.cu_seqlens_q, self.seq_lens, self.block_table

    def poisoned_out(self) -> torch.Tensor:
        return torch.full_like(self.query, float("nan"))

    def reference(self, **kwargs) -> torch.Tensor:
        return paged_attention_reference(*self.args(), **kwargs)

    def sdpa(self, causal: bool = True, softmax_scale: float | None = None) -> torch.Tensor:
        """torch SDPA in the test dtype on the same inputs, with an explicit bottom-right mask
        (SDPA's own is_causal is top-left aligned), for the error table."""
        out = torch.empty_like(self.query)
        cu = self.cu_seqlens_q.tolist()
        group = self.query.shape[1] // self.kv_cache.shape[1]
        for i, seq_len in enumerate(self.kv_lens):
            q = self.query[cu[i]:cu[i + 1]].transpose(0, 1)
            k, v = (t.to(self.query.dtype).repeat_interleave(group, 1).transpose(0, 1)
                    for t in gather_kv(self.kv_cache, self.block_table[i], seq_len))
            mask = None
            if causal:
                q_pos = torch.arange(seq_len - q.shape[1], seq_len, device=q.device)
                mask = torch.arange(seq_len, device=q.device)[None, :] <= q_pos[:, None]
            out[cu[i]:cu[i + 1]] = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=softmax_scale).transpose(0, 1)
        return out


def make_batch(q_lens, kv_lens, *, num_q_heads=4, num_kv_heads=2, head_dim=64, page_size=16,
               dtype=torch.float16, device="cpu", seed=0, layout="NHD", scale=1.0,
               extra_pages=3) -> PagedBatch:
    """A batch whose sequence i has ``q_lens[i]`` new tokens and ``kv_lens[i]`` tokens in all.

    Data is drawn in float32 and cast to ``dtype``, so the reference sees exactly the values the
    kernel sees. Pages are a random permutation; page 0 is never used (a kernel reading page 0
    reads garbage). ``scale`` multiplies queries and keys. ``layout`` is the physical order: NHD = [pages, page_size, heads, 2D]
    (vLLM's default) or HND = [pages, heads, page_size, 2D].
    """
    assert len(q_lens) == len(kv_lens) and all(q <= kv for q, kv in zip(q_lens, kv_lens))
    gen = torch.Generator().manual_seed(seed)
    pages_per_seq = [(kv + page_size - 1) // page_size for kv in kv_lens]
    max_pages = max(max(pages_per_seq, default=1), 1)
    num_pages = sum(pages_per_seq) + extra_pages + 1
    perm = (torch.randperm(num_pages - 1, generator=gen) + 1).tolist()
    block_table = torch.zeros(len(kv_lens), max_pages, dtype=torch.int32)
    for i, n in enumerate(pages_per_seq):
        block_table[i, :n] = torch.tensor(perm[:n], dtype=torch.int32)
        perm = perm[n:]

    # `scale` multiplies queries and keys (not values): logits grow by scale**2, outputs stay O(1).
    kv = torch.randn(num_pages, page_size, num_kv_heads, 2 * head_dim, generator=gen)
    kv[..., :head_dim] *= scale
    kv = kv.to(dtype)
    kv_cache = kv.permute(0, 2, 1, 3) if layout == "NHD" else kv.permute(0, 2, 1, 3).contiguous()
    query = (torch.randn(sum(q_lens), num_q_heads, head_dim, generator=gen) * scale).to(dtype)
    cu = torch.tensor([0] + q_lens, dtype=torch.int64).cumsum(0).to(torch.int32)
    return PagedBatch(query.to(device), kv_cache.to(device), cu.to(device),
                      torch.tensor(kv_lens, dtype=torch.int32, device=device),
                      block_table.to(device), list(q_lens), list(kv_lens))
