"""The standalone API on contiguous tensors, against float64 PyTorch attention."""

import pytest
import torch

import flashcore_kernels as fk
from flashcore_kernels.reference import attention_one_seq

from ..accuracy import assert_matches_reference


def reference(q, k, v, causal):
    return torch.stack([attention_one_seq(q[b].double(), k[b].double(), v[b].double(), causal=causal,
                                          softmax_scale=q.shape[-1] ** -0.5) for b in range(q.shape[0])])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("seq_q,seq_kv", [(33, 33), (5, 40), (1, 17)])
def test_attention(device, causal, dtype, seq_q, seq_kv):
    q = torch.randn(2, seq_q, 8, 64).to(dtype).to(device)
    k = torch.randn(2, seq_kv, 2, 64).to(dtype).to(device)
    v = torch.randn(2, seq_kv, 2, 64).to(dtype).to(device)
    out = fk.attention(q, k, v, causal=causal)
    assert out.shape == q.shape
    assert_matches_reference(f"dense attention causal={causal}", out, reference(q, k, v, causal))


def test_attention_matches_sdpa_for_equal_lengths(device):
    q = torch.randn(1, 40, 4, 64, dtype=torch.float16, device=device)
    k = torch.randn(1, 40, 4, 64, dtype=torch.float16, device=device)
    v = torch.randn(1, 40, 4, 64, dtype=torch.float16, device=device)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(), is_causal=True)
    torch.testing.assert_close(fk.attention(q, k, v, causal=True).float(), sdpa.transpose(1, 2),
                               atol=4e-3, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_decode_attention(device, dtype):
    batch, max_len = 3, 70
    q = torch.randn(batch, 8, 64).to(dtype).to(device)
    k_cache = torch.randn(batch, max_len, 2, 64).to(dtype).to(device)
    v_cache = torch.randn(batch, max_len, 2, 64).to(dtype).to(device)
    lens = torch.tensor([1, 33, 70], dtype=torch.int32, device=device)
    out = fk.decode_attention(q, k_cache, v_cache, lens)
    ref = torch.stack([attention_one_seq(q[b:b + 1].double(), k_cache[b, :n].double(),
                                         v_cache[b, :n].double(), causal=True, softmax_scale=0.125)[0]
                       for b, n in enumerate(lens.tolist())])
    assert_matches_reference("dense decode", out, ref)


def test_decode_attention_rejects_lengths_past_the_cache(device):
    q = torch.randn(1, 2, 64, dtype=torch.float16, device=device)
    cache = torch.randn(1, 8, 2, 64, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="seq_len 9 needs 9 pages of 1"):
        fk.decode_attention(q, cache, cache, torch.tensor([9], dtype=torch.int32, device=device))


def test_attention_rejects_bad_arguments(device):
    q = torch.randn(1, 4, 4, 64, dtype=torch.float16, device=device)
    k = torch.randn(1, 4, 4, 64, dtype=torch.float16, device=device)
    with pytest.raises(TypeError, match="k has dtype torch.float32"):
        fk.attention(q, k.float(), k)
    with pytest.raises(ValueError, match="k must be contiguous"):
        fk.attention(q, k.transpose(1, 2).contiguous().transpose(1, 2), k)
    with pytest.raises(ValueError, match="q has 4 positions but k only 2"):
        fk.attention(q, k[:, :2], k[:, :2])
    with pytest.raises(ValueError, match="num_q_heads .4. must be a multiple of num_kv_heads .3."):
        fk.attention(q, k[:, :, :3].contiguous(), k[:, :, :3].contiguous())
