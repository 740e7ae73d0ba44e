"""Hierarchical tracking maps (paper Eqs. 13-18), attention kurtosis (Eq. 19) and head divergence (Eq. 20)."""

import math

import numpy as np
import pytest
import torch

from modeling_hvformer.tracking_maps import (
    attention_kurtosis,
    cross_modal_kurtosis,
    head_divergence,
    patch_patch_tracking_maps,
    patch_token_tracking_maps,
)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _random_attention(generator, *shape):
    """Softmax-normalised random attention along the last dim."""
    return torch.softmax(2.0 * torch.randn(*shape, generator=generator), dim=-1)


# ---------------------------------------------------------------------------------------------------------------
# Eq. 17: patch-patch tracking maps, hand-worked cases


def test_patch_patch_one_head_two_layers_by_hand():
    a1 = _t([[1.0, 0.0], [0.5, 0.5]])
    a2 = _t([[0.5, 0.5], [0.0, 1.0]])
    maps = patch_patch_tracking_maps([a1[None, None], a2[None, None]])  # (3, 1, 2, 2)
    # H^0 = I
    # H^1 = Normalize(I + A1) = Normalize([[2, 0], [0.5, 1.5]]) = [[1, 0], [0.25, 0.75]]
    # A2 H^1 = [[0.5*1 + 0.5*0.25, 0.5*0 + 0.5*0.75], [0.25, 0.75]] = [[0.625, 0.375], [0.25, 0.75]]
    # H^2 = Normalize(H^1 + A2 H^1) = Normalize([[1.625, 0.375], [0.5, 1.5]]) = [[0.8125, 0.1875], [0.25, 0.75]]
    assert maps.shape == (3, 1, 2, 2)
    assert maps.dtype == torch.float32
    torch.testing.assert_close(maps[0, 0], _t([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(maps[1, 0], _t([[1.0, 0.0], [0.25, 0.75]]))
    torch.testing.assert_close(maps[2, 0], _t([[0.8125, 0.1875], [0.25, 0.75]]))


def test_patch_patch_two_heads_two_layers_by_hand():
    layer1 = torch.stack([_t([[1.0, 0.0], [0.0, 1.0]]), _t([[0.0, 1.0], [1.0, 0.0]])])[None]  # (1, 2, 2, 2)
    layer2 = torch.stack([_t([[1.0, 0.0], [1.0, 0.0]]), _t([[0.0, 1.0], [1.0, 0.0]])])[None]
    maps = patch_patch_tracking_maps((layer1, layer2))
    # layer 1: head mean = [[0.5, 0.5], [0.5, 0.5]]; I + mean = [[1.5, 0.5], [0.5, 1.5]] -> /2
    #   H^1 = [[0.75, 0.25], [0.25, 0.75]]
    # layer 2: head mean = [[0.5, 0.5], [1, 0]]; mean H^1 = [[0.5, 0.5], [0.75, 0.25]]
    #   H^1 + mean H^1 = [[1.25, 0.75], [1.0, 1.0]] -> /2 -> H^2 = [[0.625, 0.375], [0.5, 0.5]]
    torch.testing.assert_close(maps[1, 0], _t([[0.75, 0.25], [0.25, 0.75]]))
    torch.testing.assert_close(maps[2, 0], _t([[0.625, 0.375], [0.5, 0.5]]))


def test_patch_patch_three_patches_by_hand():
    a = _t([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    maps = patch_patch_tracking_maps([a[None, None]])
    # H^1 = (I + A) / 2
    expected = _t([[0.75, 0.125, 0.125], [0.0, 1.0, 0.0], [0.125, 0.125, 0.75]])
    torch.testing.assert_close(maps[1, 0], expected)


def test_patch_patch_identity_and_row_sums():
    g = torch.Generator().manual_seed(0)
    atts = [_random_attention(g, 3, 4, 6, 6) for _ in range(5)]
    maps = patch_patch_tracking_maps(atts)
    assert maps.shape == (6, 3, 6, 6)
    torch.testing.assert_close(maps[0], torch.eye(6).expand(3, 6, 6))
    torch.testing.assert_close(maps.sum(-1), torch.ones(6, 3, 6))
    assert (maps >= 0).all()


def test_patch_patch_head_permutation_invariant():
    g = torch.Generator().manual_seed(1)
    atts = [_random_attention(g, 2, 5, 4, 4) for _ in range(3)]
    perm = torch.tensor([3, 0, 4, 2, 1])
    torch.testing.assert_close(
        patch_patch_tracking_maps([a[:, perm] for a in atts]), patch_patch_tracking_maps(atts), rtol=1e-6, atol=1e-6
    )


def test_patch_patch_batch_independent():
    g = torch.Generator().manual_seed(2)
    atts = [_random_attention(g, 4, 3, 5, 5) for _ in range(3)]
    batched = patch_patch_tracking_maps(atts)
    for b in range(4):
        alone = patch_patch_tracking_maps([a[b : b + 1] for a in atts])
        torch.testing.assert_close(batched[:, b : b + 1], alone)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_patch_patch_half_precision_input(dtype):
    g = torch.Generator().manual_seed(3)
    atts = [_random_attention(g, 2, 3, 5, 5) for _ in range(3)]
    reference = patch_patch_tracking_maps([a.to(dtype).float() for a in atts])
    maps = patch_patch_tracking_maps([a.to(dtype) for a in atts])
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    torch.testing.assert_close(maps, reference)  # the same values once rounded to `dtype`: computed in float32
    torch.testing.assert_close(maps.sum(-1), torch.ones(4, 2, 5))


def test_patch_patch_mask_matches_dropping_the_masked_token():
    # 3 tokens, the third is masked (absent crop); attention to it is zero, as a masked softmax gives.
    a1 = _t([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.2, 0.3, 0.5]])
    a2 = _t([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    mask = torch.tensor([[True, True, False]])
    maps = patch_patch_tracking_maps([a1[None, None], a2[None, None]], patch_mask=mask)
    alone = patch_patch_tracking_maps([a1[None, None, :2, :2], a2[None, None, :2, :2]])
    torch.testing.assert_close(maps[:, :, :2, :2], alone)
    assert (maps[:, :, 2, :] == 0).all() and (maps[:, :, :, 2] == 0).all()
    # H^0 = diag(mask)
    torch.testing.assert_close(maps[0, 0], _t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    # Without a mask the real tokens never pick up weight from a key that has zero attention.
    unmasked = patch_patch_tracking_maps([a1[None, None], a2[None, None]])
    torch.testing.assert_close(unmasked[:, :, :2, :2], alone)


def test_patch_patch_mask_drops_leaked_attention():
    # Attention that leaks a little onto a masked key is dropped and the rows renormalised.
    a = _t([[0.45, 0.45, 0.1], [0.0, 0.9, 0.1], [0.3, 0.3, 0.4]])
    maps = patch_patch_tracking_maps([a[None, None]], patch_mask=torch.tensor([[1, 1, 0]]))
    # rows of I + A restricted to the real tokens: [1.45, 0.45] / 1.9 and [0, 1.9] / 1.9
    torch.testing.assert_close(maps[1, 0, :2, :2], _t([[1.45 / 1.9, 0.45 / 1.9], [0.0, 1.0]]))


def test_patch_patch_without_layers_is_the_masked_identity():
    """A model reading only level 0 runs no ViT layer: H_V^0 = diag(mask) alone, its shape from the mask."""
    mask = torch.tensor([[True, True, False], [True, False, True]])
    maps = patch_patch_tracking_maps([], patch_mask=mask)
    expected = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 0, 0]], [[1.0, 0, 0], [0, 0, 0], [0, 0, 1]]])
    torch.testing.assert_close(maps, expected[None])


def test_patch_patch_rejects_bad_input():
    with pytest.raises(ValueError, match="vision_attentions is empty .* pass patch_mask"):
        patch_patch_tracking_maps([])
    with pytest.raises(ValueError, match="eager"):
        patch_patch_tracking_maps([torch.ones(1, 1, 2, 2) / 2, None])
    with pytest.raises(ValueError, match=r"attention of ViT layer 2 has shape \(1, 1, 3, 3\); expected \(batch=1"):
        patch_patch_tracking_maps([torch.ones(1, 1, 2, 2) / 2, torch.ones(1, 1, 3, 3) / 3])


# ---------------------------------------------------------------------------------------------------------------
# Eq. 18: patch-token tracking maps


def test_patch_token_by_hand():
    h_v = _t([[0.8125, 0.1875], [0.25, 0.75]])[None]  # (1, 2, 2): H^2 of the first hand-worked case
    a_c = _t([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0], [0.25, 0.25]])[None, None]  # (1, 1, 4, 2)
    h_c = patch_token_tracking_maps(a_c, h_v)
    # token 0: row 0 of H_V                                  = [0.8125, 0.1875]
    # token 1: 0.5 [0.8125, 0.1875] + 0.5 [0.25, 0.75]        = [0.53125, 0.46875]
    # token 2: all-zero attention (padding)                   -> stays [0, 0], no NaN
    # token 3: 0.25 [0.8125, 0.1875] + 0.25 [0.25, 0.75]      = [0.265625, 0.234375] -> /0.5 = [0.53125, 0.46875]
    expected = _t([[0.8125, 0.1875], [0.53125, 0.46875], [0.0, 0.0], [0.53125, 0.46875]])
    assert h_c.shape == (1, 1, 4, 2)
    torch.testing.assert_close(h_c[0, 0], expected)


def test_patch_token_two_heads_by_hand_with_mask():
    h_v = _t([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None]  # (1, 3, 3)
    a_c = torch.stack([_t([[0.5, 0.5, 0.0]]), _t([[0.0, 0.5, 0.5]])])[None]  # (1, 2, 1, 3)
    h_c = patch_token_tracking_maps(a_c, h_v)
    # head 0: 0.5 [0.5, 0.25, 0.25] + 0.5 [0, 1, 0] = [0.25, 0.625, 0.125]
    # head 1: 0.5 [0, 1, 0] + 0.5 [0, 0, 1]         = [0, 0.5, 0.5]
    torch.testing.assert_close(h_c[0, :, 0], _t([[0.25, 0.625, 0.125], [0.0, 0.5, 0.5]]))
    masked = patch_token_tracking_maps(a_c, h_v, patch_mask=torch.tensor([[True, True, False]]))
    # column 2 dropped and rows renormalised: [0.25, 0.625] / 0.875 and [0, 0.5] / 0.5
    torch.testing.assert_close(masked[0, :, 0], _t([[0.25 / 0.875, 0.625 / 0.875, 0.0], [0.0, 1.0, 0.0]]))


def test_patch_token_rows_sum_to_one_batch_independent_half_precision():
    g = torch.Generator().manual_seed(4)
    h_v = patch_patch_tracking_maps([_random_attention(g, 3, 2, 6, 6) for _ in range(2)])[2]  # (3, 6, 6)
    a_c = _random_attention(g, 3, 4, 5, 6)  # (3, 4, 5, 6)
    h_c = patch_token_tracking_maps(a_c, h_v)
    torch.testing.assert_close(h_c.sum(-1), torch.ones(3, 4, 5))
    for b in range(3):
        torch.testing.assert_close(h_c[b : b + 1], patch_token_tracking_maps(a_c[b : b + 1], h_v[b : b + 1]))
    for dtype in (torch.float16, torch.bfloat16):
        half = patch_token_tracking_maps(a_c.to(dtype), h_v.to(dtype))
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, patch_token_tracking_maps(a_c.to(dtype).float(), h_v.to(dtype).float()))
    with pytest.raises(ValueError, match=r"patch_patch_maps must be \(batch, n_V, n_V\) = \(\d+, \d+, \d+\)"):
        patch_token_tracking_maps(a_c, h_v[:, :5, :5])


# ---------------------------------------------------------------------------------------------------------------
# Independent loop-based numpy implementation of Eqs. 15-18


def _numpy_reference(vision_attentions, cross_attentions, level):
    """Eq. 16 written element by element, averaged over heads (Eq. 17), then Eq. 18, with plain loops."""
    att = [np.asarray(a, dtype=np.float64) for a in vision_attentions]
    batch, heads, n_v, _ = att[0].shape
    all_hv = np.zeros((len(att) + 1, batch, n_v, n_v))
    for b in range(batch):
        w = np.eye(n_v)
        all_hv[0, b] = w
        for layer, a in enumerate(att, start=1):
            new = np.zeros((n_v, n_v))
            for i in range(n_v):
                for p in range(n_v):
                    acc = 0.0
                    for k in range(heads):
                        for j in range(n_v):
                            acc += a[b, k, i, j] * w[j, p]
                    new[i, p] = w[i, p] + acc / heads
                new[i] /= new[i].sum()
            w = new
            all_hv[layer, b] = w
    cross = np.asarray(cross_attentions, dtype=np.float64)
    _, m_heads, n_t, _ = cross.shape
    h_c = np.zeros(cross.shape)
    for b in range(batch):
        for m in range(m_heads):
            for t in range(n_t):
                row = [sum(cross[b, m, t, j] * all_hv[level, b, j, p] for j in range(n_v)) for p in range(n_v)]
                total = sum(row)
                h_c[b, m, t] = [r / total for r in row]
    return all_hv, h_c


def test_agrees_with_loop_numpy_reference():
    g = torch.Generator().manual_seed(5)
    atts = [_random_attention(g, 2, 3, 4, 4) for _ in range(3)]
    a_c = _random_attention(g, 2, 2, 3, 4)
    expected_hv, expected_hc = _numpy_reference([a.numpy() for a in atts], a_c.numpy(), level=2)
    maps = patch_patch_tracking_maps(atts)
    np.testing.assert_allclose(maps.numpy(), expected_hv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(patch_token_tracking_maps(a_c, maps[2]).numpy(), expected_hc, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Eq. 19: kurtosis


def test_kurtosis_by_hand():
    x = _t([[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    # row 0: mean 0.25, deviations (-0.25, -0.25, -0.25, 0.75)
    #   mu2 = (3 * 0.0625 + 0.5625) / 4 = 0.1875; mu4 = (3 * 0.00390625 + 0.31640625) / 4 = 0.08203125
    #   mu4 / mu2^2 - 3 = 0.08203125 / 0.03515625 - 3 = 7/3 - 3 = -2/3
    # row 1: deviations all +-0.5: mu2 = 0.25, mu4 = 0.0625, 0.0625 / 0.0625 - 3 = -2
    torch.testing.assert_close(attention_kurtosis(x), _t([-2.0 / 3.0, -2.0]))
    torch.testing.assert_close(attention_kurtosis(x.T, dim=0), _t([-2.0 / 3.0, -2.0]))
    # one-hot over 50 keys: 1 / (p q) - 6 with p = 1/50 -> 2500 / 49 - 6
    one_hot = torch.zeros(50)
    one_hot[7] = 1.0
    torch.testing.assert_close(attention_kurtosis(one_hot), torch.tensor(2500.0 / 49.0 - 6.0))


def test_kurtosis_normal_and_uniform_samples():
    g = torch.Generator().manual_seed(6)
    normal = torch.randn(1_000_000, generator=g)
    uniform = torch.rand(1_000_000, generator=g)
    assert abs(attention_kurtosis(normal).item()) < 0.03  # std error sqrt(24 / n) ~ 0.005
    assert abs(attention_kurtosis(uniform).item() + 1.2) < 0.02
    # scale and shift do not matter
    assert abs(attention_kurtosis(3.0 + 1e-3 * uniform).item() + 1.2) < 0.02


def test_kurtosis_constant_is_zero():
    x = torch.stack([torch.full((5,), 0.2), torch.zeros(5), torch.full((5,), 1.0 / 3.0)])
    assert torch.equal(attention_kurtosis(x), torch.zeros(3))
    assert torch.equal(attention_kurtosis(x.to(torch.float16)), torch.zeros(3))
    assert torch.equal(attention_kurtosis(torch.softmax(torch.zeros(2, 49), -1)), torch.zeros(2))
    assert torch.equal(attention_kurtosis(torch.tensor([0.7])), torch.tensor(0.0))


def test_kurtosis_mask_excludes_values():
    x = _t([[0.0, 0.0, 0.0, 1.0, 5.0, 9.0]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    torch.testing.assert_close(attention_kurtosis(x, mask=mask), _t([-2.0 / 3.0]))
    assert torch.equal(attention_kurtosis(x, mask=torch.zeros_like(mask)), torch.zeros(1))  # no value: 0


def test_cross_modal_kurtosis_sums_heads():
    # (batch 1, M 2, n_T 2, n_V 4)
    a_c = torch.stack(
        [
            _t([[0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]]),
            _t([[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]),
        ]
    )[None]
    # token 0: -2/3 + (-2); token 1: 0 (uniform) + 0 (all-zero row)
    out = cross_modal_kurtosis(a_c)
    assert out.shape == (1, 2)
    torch.testing.assert_close(out, _t([[-8.0 / 3.0, 0.0]]))
    # a masked fifth key with zero attention would change the sample; the mask leaves it out
    padded = torch.cat([a_c, torch.zeros(1, 2, 2, 1)], dim=-1)
    torch.testing.assert_close(cross_modal_kurtosis(padded, patch_mask=torch.tensor([[1, 1, 1, 1, 0]])), out)
    g = torch.Generator().manual_seed(7)
    rand = _random_attention(g, 3, 4, 5, 6)
    batched = cross_modal_kurtosis(rand)
    for b in range(3):
        torch.testing.assert_close(batched[b : b + 1], cross_modal_kurtosis(rand[b : b + 1]))
    torch.testing.assert_close(cross_modal_kurtosis(rand[:, [2, 0, 3, 1]]), batched)


# ---------------------------------------------------------------------------------------------------------------
# Eq. 20: KL divergence between heads and their mean


def test_head_divergence_by_hand():
    maps = torch.stack(
        [
            _t([[1.0, 0.0], [0.5, 0.5]]),  # head 0, tokens 0 and 1
            _t([[0.0, 1.0], [1.0, 0.0]]),  # head 1
        ]
    )[None]  # (1, 2, 2, 2)
    # token 0: mean [0.5, 0.5]; each head: 1 * log(1 / 0.5) = log 2 (its zero entry adds 0 log 0 = 0) -> 2 log 2
    # token 1: mean [0.75, 0.25]; head 0: 0.5 log(0.5 / 0.75) + 0.5 log(0.5 / 0.25) = 0.5 log(4/3)
    #          head 1: 1 * log(1 / 0.75) = log(4/3)                                   -> 1.5 log(4/3)
    out = head_divergence(maps)
    assert out.shape == (1, 2)
    torch.testing.assert_close(out, torch.tensor([[2.0 * math.log(2.0), 1.5 * math.log(4.0 / 3.0)]]))


def test_head_divergence_zero_when_heads_agree_positive_otherwise():
    g = torch.Generator().manual_seed(8)
    one = _random_attention(g, 2, 1, 3, 5)
    agree = one.expand(2, 4, 3, 5)
    torch.testing.assert_close(head_divergence(agree), torch.zeros(2, 3), atol=1e-6, rtol=0)
    differ = _random_attention(g, 2, 4, 3, 5)
    assert (head_divergence(differ) > 0).all()
    # zeros (masked patches, padded rows) give no NaN
    with_zeros = torch.cat([differ, torch.zeros(2, 4, 3, 2)], dim=-1)
    with_zeros[:, :, 1] = 0.0
    out = head_divergence(with_zeros)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, [0, 2]], head_divergence(differ)[:, [0, 2]])
    assert torch.equal(out[:, 1], torch.zeros(2))


def test_head_divergence_permutation_batch_and_half_precision():
    g = torch.Generator().manual_seed(9)
    maps = _random_attention(g, 3, 4, 5, 6)
    out = head_divergence(maps)
    torch.testing.assert_close(head_divergence(maps[:, [3, 1, 0, 2]]), out)
    for b in range(3):
        torch.testing.assert_close(head_divergence(maps[b : b + 1]), out[b : b + 1])
    for dtype in (torch.float16, torch.bfloat16):
        half = head_divergence(maps.to(dtype))
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, head_divergence(maps.to(dtype).float()))
