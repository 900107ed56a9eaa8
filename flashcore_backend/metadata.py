"""Per-batch attention metadata and its builder (FlashInfer's "plan"; ``impl.forward`` is "run").

The kernels read vLLM's own metadata tensors as they are (``query_start_loc`` is our
``cu_seqlens_q``), so ``build`` bundles references and makes one launch: the decode plan
(``flashcore_kernels.DecodePlan``), each decode's split count from its own length and the
order its pieces run in, written on the device into tensors of the builder's. It allocates
nothing, copies nothing and never reads device memory on the host. The buffers of our own,
the plan and the split-KV decode scratch, are allocated once in ``__init__`` for the largest
batch (``max_num_seqs``) and shared by every layer of the group (layers run one after another
on one stream, after the plan that the step's ``build`` launched before them).

CUDA graphs: ``AttentionCGSupport.ALWAYS``. Why that is honest:

* Launch grids depend only on shapes: the decode grid on (num_seqs, num_kv_heads), a slot for
  every piece the plan can list; the prefill grid on (num_tokens, num_seqs). Lengths, page ids
  and the plan are read on the device, and ``check_lengths=False`` keeps the launcher off the
  host. ``build`` rewrites the plan in place before every step a graph replays.
* The one host-side decision is whether to launch the prefill kernel at all (only when
  ``max_query_len > 1``). A captured graph replays whatever was launched at capture. vLLM's V2
  model runner captures a FULL graph for mixed batches with dummy requests of
  ``num_tokens // num_reqs`` tokens each, which is 1 whenever num_tokens <= max_num_seqs
  (``InputBatch.make_dummy``); replayed on a batch holding a prefill, such a graph would skip
  the prefill kernel. So when FULL graphs serve mixed batches
  (``cudagraph_mode.mixed_mode() == FULL``), ``build_for_cudagraph_capture`` sets
  ``max_query_len`` to the graph's token count, a true upper bound on any query it may replay,
  and the prefill launch is captured (its programs exit early for decode rows and padding).
* When FULL graphs serve only uniform batches (the default FULL_AND_PIECEWISE, or
  FULL_DECODE_ONLY), the captured query length is the replayed one: decode graphs launch no
  prefill kernel and pay nothing for it; spec-decode graphs (query length 1 + k) launch it.
* Padded requests (query length 0, seq_len 0) are skipped by both kernels.
"""

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from flashcore_kernels import DecodePlan, SplitKVWorkspace
from flashcore_kernels.config import decode_wave, planned_decode_tiles

from . import support

from .vllm_api import (
    AttentionCGSupport,
    AttentionMetadataBuilder,
    CommonAttentionMetadata,
    CUDAGraphMode,
    get_num_attention_heads_from_layers,
)


@dataclass
class FlashCoreMetadata:
    num_actual_tokens: int  # tokens in this step, padding included under full CUDA graphs
    max_query_len: int  # host-side upper bound; > 1 launches the prefill kernel
    max_seq_len: int
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32, the kernels' cu_seqlens_q
    seq_lens: torch.Tensor  # [num_seqs] int32, KV length including this step's tokens
    block_table: torch.Tensor  # [num_seqs, max_pages_per_seq] int32
    slot_mapping: torch.Tensor  # [num_tokens] int64 (read by KV connectors / spec decode)
    workspace: SplitKVWorkspace  # persistent split-KV scratch owned by the builder
    decode_plan: DecodePlan  # made for this batch by build, in the builder's tensors


class FlashCoreMetadataBuilder(AttentionMetadataBuilder[FlashCoreMetadata]):
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.ALWAYS
    supports_update_block_table: bool = True

    def __init__(self, kv_cache_spec, layer_names: list[str], vllm_config, device: torch.device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        model_config = vllm_config.model_config
        num_q_heads = (get_num_attention_heads_from_layers(vllm_config, layer_names)
                       or model_config.get_num_attention_heads(vllm_config.parallel_config))
        max_num_seqs = vllm_config.scheduler_config.max_num_seqs
        num_kv_heads, head_dim = kv_cache_spec.num_kv_heads, kv_cache_spec.head_size
        # The dtypes the kernels read, as the impl hands them over: an fp8 cache's spec holds
        # uint8, which the wave would count alike (one byte) but the tiles would not.
        dtype = model_config.dtype
        cache_dtype = support.kernel_cache_dtype(vllm_config.cache_config.cache_dtype, dtype)
        self.workspace = SplitKVWorkspace.allocate(
            max_num_seqs=max_num_seqs, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads,
            head_dim=head_dim, cache_dtype=cache_dtype, device=device)
        wave = decode_wave(device, num_q_heads // num_kv_heads, head_dim, cache_dtype)
        self.decode_plan = DecodePlan.allocate(max_num_seqs, num_kv_heads, wave, device)
        # The decode kernel's tiles, whose steps the plan cuts pieces in, depend on the batch
        # size: found on the host once for each size.
        self._tile_tokens = {}
        self._tile_args = (num_kv_heads, device, num_q_heads // num_kv_heads, head_dim, dtype,
                           cache_dtype)
        # A sliding-window group's decodes read the window only: the plan splits that.
        self.sliding_window = getattr(kv_cache_spec, "sliding_window", None) or None
        self.decode_plan.warm_up(self.sliding_window)

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> FlashCoreMetadata:
        m = common_attn_metadata
        if common_prefix_len:
            raise NotImplementedError("FLASHCORE: cascade attention is not supported")
        if m.causal is not True:  # a per-request tensor or False; never evaluated on the host
            raise NotImplementedError("FLASHCORE: only causal attention is supported")
        # Every row the kernels launch for (padding included: not a decode, so no split).
        num_seqs = m.seq_lens.shape[0]
        if self.decode_plan.applies_to(num_seqs):  # (else the launch makes no use of it)
            self.decode_plan.update(m.query_start_loc, m.seq_lens, num_seqs, self.sliding_window,
                                    self.tile_tokens(num_seqs))
        return FlashCoreMetadata(
            num_actual_tokens=m.num_actual_tokens, max_query_len=m.max_query_len,
            max_seq_len=m.max_seq_len, query_start_loc=m.query_start_loc, seq_lens=m.seq_lens,
            block_table=m.block_table_tensor, slot_mapping=m.slot_mapping,
            workspace=self.workspace, decode_plan=self.decode_plan)

    def tile_tokens(self, num_seqs: int) -> int:
        """KV tokens a step of the decode kernel takes in the planned launch of ``num_seqs``."""
        if num_seqs not in self._tile_tokens:
            self._tile_tokens[num_seqs] = planned_decode_tiles(num_seqs, *self._tile_args).block_n
        return self._tile_tokens[num_seqs]

    def build_for_cudagraph_capture(
            self, common_attn_metadata: CommonAttentionMetadata) -> FlashCoreMetadata:
        metadata = self.build(0, common_attn_metadata)
        mode = self.vllm_config.compilation_config.cudagraph_mode
        if mode.mixed_mode() == CUDAGraphMode.FULL:
            # This graph may replay mixed batches: capture the prefill launch (module docstring).
            metadata.max_query_len = max(metadata.max_query_len, metadata.num_actual_tokens)
        return metadata

    def update_block_table(self, metadata: FlashCoreMetadata, blk_table: torch.Tensor,
                           slot_mapping: torch.Tensor) -> FlashCoreMetadata:
        # vLLM reuses metadata across KV-cache groups with equal specs; keep our own scratch,
        # sized for this group's query heads. The plan depends on the lengths and the window,
        # which groups of equal specs share.
        return replace(metadata, block_table=blk_table, slot_mapping=slot_mapping,
                       workspace=self.workspace)
