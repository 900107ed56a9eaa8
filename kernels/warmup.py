"""Compile, before the first request, the kernels a layer will launch.

Triton compiles a kernel the first time it is launched with a new set of compile-time
constants and argument properties (dtypes, 16-byte alignment of pointers, divisibility of
integer arguments by 16). A serving engine's start-up (memory profiling, CUDA-graph capture)
may run no mixed batch through attention, and then the prefill kernel and the cache write
compile inside the first steps that serve requests, adding seconds to their latency.
``warm_up`` launches them on a batch of one decode and two two-token prefills, with the
caller's own query/key/value/output views (so their strides, and so the specialisation, are
the ones later launches see) and a small cache of the same dtype and physical layout.

The decode and merge kernels take the shape rule's split count (``config.num_kv_splits``) as a
compile-time constant, which picks their tiles: an engine meets one count per range of batch
sizes, and CUDA-graph capture covers only the sizes it captures. So the decode part is also
launched as an engine launches it: with a decode plan at every count, and without one at a lone
sequence's count (the launcher runs a lone sequence without its plan).
"""

import itertools

import torch

from . import config
from .cache_write import write_kv_cache
from .decode_plan import DecodePlan
from .paged_attention import paged_attention

# One decode (query 1, KV 2) and two prefills (query 2, KV 2): the decode and prefill kernels
# launch. The batch goes to the launcher twice, without and with its max_seq_len: on Hopper the
# first takes the Gluon prefill kernel, the second the Triton one wherever the launcher gives
# it batches of short prefills (config.short_prefills_on_triton). The second also passes a
# decode plan, as an engine's steps do, so the planned decode and merge compile too.
_QUERY_LENS, _SEQ_LENS = (1, 2, 2), (2, 2, 2)
# Every count the shape rule can give: the powers of two up to MAX_KV_SPLITS.
SPLIT_COUNTS = tuple(1 << i for i in range(config.MAX_KV_SPLITS.bit_length()))


def paged_cache_like(num_pages: int, num_kv_heads: int, page_size: int, head_dim: int,
                     dtype: torch.dtype, stride_order: tuple[int, ...], device) -> torch.Tensor:
    """A zeroed logical ``[num_pages, num_kv_heads, page_size, 2 * head_dim]`` cache laid out
    in memory in ``stride_order`` (the physical order of the logical dimensions)."""
    logical = (num_pages, num_kv_heads, page_size, 2 * head_dim)
    physical = torch.zeros([logical[i] for i in stride_order], dtype=dtype, device=device)
    return physical.permute([stride_order.index(i) for i in range(4)])


def warm_up(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, *,
            page_size: int, cache_dtype: torch.dtype, stride_order=(0, 2, 1, 3),
            **attention_options) -> bool:
    """Launch the cache write and ``paged_attention`` on a three-sequence batch made from the
    first five rows of ``query``/``key``/``value`` (read only) and ``out`` (overwritten), on a
    GPU also at each split count an engine launches (module docstring).
    ``attention_options`` are ``paged_attention``'s (softmax_scale, sliding_window,
    logits_soft_cap, alibi_slopes, sinks, k_scale, v_scale). Returns False, doing nothing, when
    the views hold fewer than five rows."""
    tokens = sum(_QUERY_LENS)
    if min(query.shape[0], key.shape[0], value.shape[0], out.shape[0]) < tokens:
        return False
    device = query.device
    num_kv_heads, head_dim = key.shape[1], key.shape[2]
    num_seqs = len(_SEQ_LENS)
    cache = paged_cache_like(num_seqs + 1, num_kv_heads, page_size, head_dim, cache_dtype,
                             tuple(stride_order), device)
    # Sequence i lives on page i + 1 (page 0 unused, as in vLLM); its tokens at slots 0, 1.
    block_table = torch.arange(1, num_seqs + 1, dtype=torch.int32, device=device)[:, None]
    slots = [(i + 1) * page_size + pos for i, (q, s) in enumerate(zip(_QUERY_LENS, _SEQ_LENS))
             for pos in range(s - q, s)]
    slot_mapping = torch.tensor(slots, dtype=torch.int64, device=device)
    cu_seqlens_q = torch.tensor([0, *itertools.accumulate(_QUERY_LENS)], dtype=torch.int32,
                                device=device)
    seq_lens = torch.tensor(_SEQ_LENS, dtype=torch.int32, device=device)
    scales = {k: attention_options[k] for k in ("k_scale", "v_scale") if k in attention_options}
    write_kv_cache(key[:tokens], value[:tokens], cache, slot_mapping, **scales)
    queries_per_kv = query.shape[1] // num_kv_heads
    plan = DecodePlan.allocate(num_seqs, num_kv_heads,
                               config.decode_wave(device, queries_per_kv, head_dim, cache_dtype),
                               device)
    plan.update(cu_seqlens_q, seq_lens, num_seqs)
    launches = [dict(max_seq_len=None), dict(max_seq_len=max(_SEQ_LENS), decode_plan=plan)]
    if not config.interpreting():  # (nothing compiles under the interpreter)
        lone = config.num_kv_splits(1, num_kv_heads, device, queries_per_kv, head_dim,
                                    cache_dtype)
        launches += [dict(num_kv_splits=splits, decode_plan=plan) for splits in SPLIT_COUNTS]
        launches.append(dict(num_kv_splits=lone))
    for launch in launches:
        paged_attention(query[:tokens], cache, cu_seqlens_q, seq_lens, block_table,
                        max_query_len=max(_QUERY_LENS), out=out[:tokens], check_lengths=False,
                        **launch, **attention_options)
    return True
