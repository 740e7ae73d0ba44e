"""Hierarchical tracking maps and attention statistics of HVFormer (paper §3.5 and §4.3).

Pure, batched torch; no import from this project, because this file travels to the Hub as remote code
beside the model file (which imports it as ``from .tracking_maps import ...``).

Notation (paper): ``L`` ViT layers with ``K`` heads each, ``n_V`` visual tokens (every token of the ViT
sequence: [CLS], patches of the image and of the object crops), ``n_T`` text tokens, ``M`` heads of the
textual-guided visual attention (TVA) of one expert.

- :func:`patch_patch_tracking_maps`: H_V^0..H_V^L (Eqs. 13-17).
- :func:`patch_token_tracking_maps`: H_C^(l,m) of one expert (Eq. 18).
- :func:`attention_kurtosis` / :func:`cross_modal_kurtosis`: excess kurtosis of attention (Eq. 19).
- :func:`head_divergence`: KL divergence of the heads' maps from their mean (Eq. 20).

Every function computes in float32 whatever the input dtype (float16 / bfloat16 attentions included) and
returns float32 tensors on the input's device.

Masks: ``patch_mask`` is a ``(batch, n_V)`` boolean (or 0/1) tensor, True for a real visual token and
False for one to exclude (e.g. the tokens of an absent object crop). Without a mask, masked key positions
that carry exactly zero attention are already handled: they never gain weight in the maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "patch_patch_tracking_maps",
    "patch_token_tracking_maps",
    "attention_kurtosis",
    "cross_modal_kurtosis",
    "head_divergence",
]


def _normalize_rows(x: Tensor) -> Tensor:
    """The paper's ``Normalization``: divide each row (last dim) by its sum; all-zero rows stay zero (no NaN)."""
    total = x.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, x / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(x))


def _as_mask(patch_mask: Tensor | None, batch: int, n_v: int, device: torch.device) -> Tensor | None:
    if patch_mask is None:
        return None
    if patch_mask.shape != (batch, n_v):
        raise ValueError(f"patch_mask must have shape (batch, n_V) = {(batch, n_v)}, got {tuple(patch_mask.shape)}")
    return patch_mask.to(device=device).bool()


def patch_patch_tracking_maps(vision_attentions: Sequence[Tensor], patch_mask: Tensor | None = None) -> Tensor:
    """Hierarchical patch-patch tracking maps H_V^0..H_V^L (paper Eqs. 13-17).

    H_V^0 = I (Eq. 13): before any ViT layer each token holds only its own patch. For l = 1..L (Eq. 17)::

        H_V^l = Normalize(H_V^{l-1} + (1/K) sum_k A_V^(l,k) H_V^{l-1})

    i.e. Eq. 15 (attention propagates the maps) plus the residual connection (Eq. 16), averaged over the K
    heads; Normalize divides each row by its sum, so every row of every H_V^l sums to 1. Entry ``[l, b, i, p]``
    is the estimated weight of original patch ``p`` in the embedding of token ``i`` after ``l`` layers.

    Args:
        vision_attentions: the ViT self-attention maps of layers 1..L in order, as transformers returns them
            with ``output_attentions=True`` (needs ``attn_implementation="eager"``); each of shape
            ``(batch, K, n_V, n_V)`` with rows (queries) summing to 1 (Eq. 14).
        patch_mask: optional ``(batch, n_V)``, True for real tokens. Masked tokens are removed from the
            maps: H_V^0 = diag(mask), attention to and from masked tokens is dropped before each step, so
            masked rows and columns are zero and the rows of real tokens sum to 1 over real tokens only.
            Required when ``vision_attentions`` is empty (a model that reads only level 0, L = 0): it gives the
            shape of H_V^0.

    Returns:
        float32 tensor ``(L + 1, batch, n_V, n_V)``; index ``l`` is H_V^l (index 0 is the identity).
    """
    attentions = list(vision_attentions)
    if not attentions:
        if patch_mask is None:
            raise ValueError(
                "vision_attentions is empty (a model reading only ViT level 0): pass patch_mask to give the batch "
                "size and n_V of H_V^0"
            )
        mask = patch_mask.bool()
        return torch.diag_embed(mask.float())[None]  # H_V^0 = I, masked tokens removed: (1, batch, n_V, n_V)
    for layer, attn in enumerate(attentions, start=1):
        if attn is None:
            raise ValueError(
                f"attention of ViT layer {layer} is None: load the vision encoder with "
                "attn_implementation='eager' and call it with output_attentions=True"
            )
    batch, _, n_v, _ = attentions[0].shape
    device = attentions[0].device
    for layer, attn in enumerate(attentions, start=1):
        if attn.dim() != 4 or attn.shape[0] != batch or attn.shape[-2:] != (n_v, n_v):
            raise ValueError(
                f"attention of ViT layer {layer} has shape {tuple(attn.shape)}; expected (batch={batch}, K, "
                f"n_V={n_v}, n_V={n_v})"
            )
    mask = _as_mask(patch_mask, batch, n_v, device)

    eye = torch.eye(n_v, dtype=torch.float32, device=device)  # (n_V, n_V)
    hv = eye.expand(batch, n_v, n_v).clone()  # H_V^0: (batch, n_V, n_V)
    if mask is not None:
        pair = (mask[:, :, None] & mask[:, None, :]).float()  # (batch, n_V, n_V): 1 where query and key are real
        hv = hv * pair
    maps = [hv]
    for attn in attentions:
        a_mean = attn.to(device=device, dtype=torch.float32).mean(dim=1)  # (1/K) sum_k A_V^(l,k): (batch, n_V, n_V)
        if mask is not None:
            a_mean = a_mean * pair
        hv = _normalize_rows(hv + torch.bmm(a_mean, hv))  # Eq. 17: (batch, n_V, n_V)
        maps.append(hv)
    return torch.stack(maps, dim=0)  # (L + 1, batch, n_V, n_V)


def patch_token_tracking_maps(
    cross_attentions: Tensor, patch_patch_maps: Tensor, patch_mask: Tensor | None = None
) -> Tensor:
    """Hierarchical patch-token tracking maps H_C^(l,m) of one expert (paper Eq. 18).

    ``H_C^(l,m) = Normalize(A_C^(l,m) H_V^l)``: the weight of each original patch in the visual context that
    text token ``t`` gathers through TVA head ``m`` of the expert reading ViT level ``l``. Rows are divided
    by their sum; a row that is all zero (e.g. a padded text token whose attention was zeroed, or a token
    attending only to masked keys) stays zero instead of becoming NaN.

    Args:
        cross_attentions: ``(batch, M, n_T, n_V)``, A_C of the expert (text queries over visual keys).
        patch_patch_maps: ``(batch, n_V, n_V)``, H_V^l of the same level, e.g.
            ``patch_patch_tracking_maps(...)[l]``.
        patch_mask: optional ``(batch, n_V)``, True for real visual tokens; the columns of masked tokens are
            zeroed before normalising.

    Returns:
        float32 tensor ``(batch, M, n_T, n_V)``.
    """
    if cross_attentions.dim() != 4:
        raise ValueError(f"cross_attentions must be (batch, M, n_T, n_V), got shape {tuple(cross_attentions.shape)}")
    batch, _, _, n_v = cross_attentions.shape
    if patch_patch_maps.shape != (batch, n_v, n_v):
        raise ValueError(
            f"patch_patch_maps must be (batch, n_V, n_V) = {(batch, n_v, n_v)} to match cross_attentions, "
            f"got {tuple(patch_patch_maps.shape)}"
        )
    device = cross_attentions.device
    a_c = cross_attentions.to(dtype=torch.float32)  # (batch, M, n_T, n_V)
    h_v = patch_patch_maps.to(device=device, dtype=torch.float32)  # (batch, n_V, n_V)
    h_c = torch.matmul(a_c, h_v[:, None])  # A_C^(l,m) H_V^l: (batch, M, n_T, n_V)
    mask = _as_mask(patch_mask, batch, n_v, device)
    if mask is not None:
        h_c = h_c * mask[:, None, None, :].float()
    return _normalize_rows(h_c)  # Eq. 18: (batch, M, n_T, n_V)


def attention_kurtosis(attention: Tensor, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Excess kurtosis ``mu_4 / sigma^4 - 3`` (paper Eq. 19) of each attention distribution along ``dim``.

    What "distribution" means here (as for the paper's Fig. 5b): the attention weights of one query in one
    head over the ``n_V`` keys are taken as a sample of ``n_V`` numbers, and the kurtosis is that of the
    sample's values, with population moments (divide by ``n``, no bias correction):
    ``mu_k = mean((x - mean(x))^k)``, ``sigma^2 = mu_2``. It is *not* the kurtosis of the key position under
    the attention probabilities. A one-hot row over ``n`` keys gives ``n - 5 + 1/(n - 1)`` (45.02 for
    n = 50), a two-valued half/half row gives -2, a normal sample 0, a uniform sample -1.2.

    Degenerate case: when ``sigma = 0`` (all values equal: exactly uniform attention, an all-zero padded
    row, a single value, or no unmasked value) the kurtosis is undefined; this function returns **0** for it,
    so that sums over heads (:func:`cross_modal_kurtosis`) and averages over tokens stay finite. The
    moments are computed about a sample value (exact zero deviations for constant rows), so "constant"
    means exactly equal values, without a tolerance.

    Args:
        attention: any shape; values along ``dim`` form one sample.
        dim: the dimension holding the sample (default: last, the keys).
        mask: optional boolean tensor broadcastable to ``attention``; only True positions are sample
            values (use it to leave out masked patches, whose zero weights would otherwise count).

    Returns:
        float32 tensor of ``attention``'s shape without ``dim``.
    """
    x = attention.to(dtype=torch.float32)
    x = x.movedim(dim, -1)  # (..., n)
    if mask is None:
        valid = torch.ones_like(x, dtype=torch.bool)
    else:
        valid = torch.broadcast_to(mask.to(device=x.device).bool(), attention.shape).movedim(dim, -1)
    validf = valid.float()  # (..., n)
    count = validf.sum(dim=-1, keepdim=True)  # (..., 1)
    # Shift by a value of the sample (the first valid one): exact zeros for a constant sample.
    first = valid.int().argmax(dim=-1, keepdim=True)  # (..., 1)
    shifted = (x - x.gather(-1, first)) * validf  # (..., n)
    mean = shifted.sum(dim=-1, keepdim=True) / count.clamp_min(1.0)  # (..., 1)
    centred = (shifted - mean) * validf  # (..., n)
    # Kurtosis is scale-free: rescale deviations to [-1, 1] so that the 4th powers cannot underflow.
    scale = centred.abs().amax(dim=-1, keepdim=True)  # (..., 1)
    centred = centred / torch.where(scale > 0, scale, torch.ones_like(scale))
    denom = count.squeeze(-1).clamp_min(1.0)  # (...)
    mu2 = centred.pow(2).sum(dim=-1) / denom  # (...)
    mu4 = centred.pow(4).sum(dim=-1) / denom  # (...)
    safe_mu2 = torch.where(mu2 > 0, mu2, torch.ones_like(mu2))
    return torch.where(mu2 > 0, mu4 / safe_mu2.pow(2) - 3.0, torch.zeros_like(mu2))


def cross_modal_kurtosis(cross_attentions: Tensor, patch_mask: Tensor | None = None) -> Tensor:
    """Kurtosis of the cross-modal attention A_C^l of one expert, summed over its heads (paper Eq. 19, §4.3).

    For each text token, the excess kurtosis of each head's attention over the ``n_V`` visual tokens
    (see :func:`attention_kurtosis` for the definition and the sigma = 0 convention), summed over the M heads.

    Args:
        cross_attentions: ``(batch, M, n_T, n_V)``.
        patch_mask: optional ``(batch, n_V)``, True for real visual tokens; masked ones are left out of the
            samples.

    Returns:
        float32 tensor ``(batch, n_T)``.
    """
    if cross_attentions.dim() != 4:
        raise ValueError(f"cross_attentions must be (batch, M, n_T, n_V), got shape {tuple(cross_attentions.shape)}")
    batch, _, _, n_v = cross_attentions.shape
    mask = _as_mask(patch_mask, batch, n_v, cross_attentions.device)
    if mask is not None:
        mask = mask[:, None, None, :]  # (batch, 1, 1, n_V)
    per_head = attention_kurtosis(cross_attentions, dim=-1, mask=mask)  # (batch, M, n_T)
    return per_head.sum(dim=1)  # (batch, n_T)


def head_divergence(tracking_maps: Tensor) -> Tensor:
    """KL divergence of the heads' patch-token tracking maps from their mean (paper Eq. 20).

    For each text token::

        D = sum_m sum_i M_i^(m) log(M_i^(m) / Mbar_i),   Mbar = (1/M) sum_m M^(m)

    where ``M^(m)`` is the token's row of H_C^(l,m) over the ``n_V`` patches. Terms with ``M_i^(m) = 0`` are 0
    (0 log 0 = 0); ``Mbar_i = 0`` only when every head has 0 there, so no division by zero happens. The
    value is >= 0 (log-sum inequality) and is 0 exactly when all heads agree; tiny negative rounding
    residues are clamped to 0. All-zero (padded) rows give 0.

    Args:
        tracking_maps: ``(batch, M, n_T, n_V)``, e.g. from :func:`patch_token_tracking_maps`.

    Returns:
        float32 tensor ``(batch, n_T)``.
    """
    if tracking_maps.dim() != 4:
        raise ValueError(f"tracking_maps must be (batch, M, n_T, n_V), got shape {tuple(tracking_maps.shape)}")
    p = tracking_maps.to(dtype=torch.float32).clamp_min(0.0)  # (batch, M, n_T, n_V)
    p_bar = p.mean(dim=1, keepdim=True)  # (batch, 1, n_T, n_V)
    # xlogy(0, y) = 0 for y >= 0, so p = 0 terms vanish even where p_bar = 0.
    terms = torch.xlogy(p, p) - torch.xlogy(p, p_bar.expand_as(p))  # (batch, M, n_T, n_V)
    return terms.sum(dim=(1, 3)).clamp_min(0.0)  # (batch, n_T)
