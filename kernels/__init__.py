"""FlashCore kernels: Triton attention over a paged KV cache. Imports torch and triton only."""

from .cache_write import write_kv_cache
from .decode_plan import DecodePlan
from .dense import attention, decode_attention
from .paged_attention import SplitKVWorkspace, attention_over_pages, paged_attention
from .reference import paged_attention_reference
from .warmup import warm_up

__all__ = [
    "DecodePlan",
    "SplitKVWorkspace",
    "attention",
    "attention_over_pages",
    "decode_attention",
    "paged_attention",
    "paged_attention_reference",
    "warm_up",
    "write_kv_cache",
]
