"""Property-based: random batch compositions, page sizes and head ratios, all against float64."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flashcore_kernels as fk

from ..accuracy import assert_matches_reference
from ..conftest import HAS_CUDA
from ..paged_batch import make_batch

# (q_len, kv_len) per sequence: decodes, short extends over a cached prefix, fresh prefills.
decode = st.integers(1, 300).map(lambda kv: (1, kv))
extend = st.tuples(st.integers(2, 8), st.integers(0, 200)).map(lambda t: (t[0], t[0] + t[1]))
prefill = st.integers(2, 120).flatmap(lambda q: st.tuples(st.just(q), st.integers(q, q + 80)))
sequence = st.one_of(decode, extend, prefill)


@settings(max_examples=40 if HAS_CUDA else 25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seqs=st.lists(sequence, min_size=1, max_size=6),
       page_size=st.sampled_from([16, 32, 64]),
       heads=st.sampled_from([(4, 4), (8, 2), (7, 1), (12, 3), (16, 1)]),
       head_dim=st.sampled_from([64, 80, 128]),
       dtype=st.sampled_from([torch.float16, torch.float32]),
       causal=st.booleans(),
       splits=st.sampled_from([None, 1, 4]),
       seed=st.integers(0, 2**16))
def test_random_batches_match_reference(device, seqs, page_size, heads, head_dim, dtype, causal,
                                        splits, seed):
    q_lens, kv_lens = [s[0] for s in seqs], [s[1] for s in seqs]
    batch = make_batch(q_lens, kv_lens, num_q_heads=heads[0], num_kv_heads=heads[1],
                       head_dim=head_dim, page_size=page_size, dtype=dtype, device=device, seed=seed)
    out = batch.poisoned_out()
    fk.paged_attention(*batch.args(), max_query_len=batch.max_query_len, out=out, causal=causal,
                       num_kv_splits=splits)
    assert_matches_reference("random batches (hypothesis)", out, batch.reference(causal=causal))
