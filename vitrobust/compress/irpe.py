"""Image relative position encoding on keys, as the official Mini-DeiT releases use it.

Wu, Peng, Chen, Fu, Chao, "Rethinking and Improving Relative Position Encoding for Vision
Transformer", ICCV 2021 (iRPE). Mini-DeiT (microsoft/Cream, MiniViT) adds to every attention
logit a term that depends on the query and on the 2-D offset between query and key patch:

    logit[b, h, i, j] += sum_d q[b, h, i, d] * W[d, bucket(i, j)]

with ``q`` already scaled by ``head_dim ** -0.5``, one table ``W`` (head_dim x buckets) shared by
the heads ("contextual" mode, "product" method, ``rpe_on="k"``, ``skip=0``: no class token).
The bucket of an offset takes each axis through the paper's piecewise index (exact up to
``alpha``, logarithmic up to ``beta``) and combines rows and columns as ``r * S + c``. With the
release's ratio 1.9: alpha 1.9, beta 3.8, gamma 15.2, S = 7, 49 buckets.

This exists so the official checkpoints load as they are (``attn.rpe_k.instances.{r}
.lookup_table_weight``); models trained here have no iRPE.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn


def piecewise_index(offset: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """Integer offsets -> bucket offsets in [-int(beta), int(beta)] (iRPE Eq. 18)."""
    offset = offset.to(torch.float64)
    far = offset.abs() > alpha
    scaled = alpha + torch.log(offset.abs().clamp_min(alpha) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    squashed = (torch.sign(offset) * scaled.round().clamp(max=beta)).trunc()
    return torch.where(far, squashed, offset.round()).to(torch.long)


@lru_cache(maxsize=8)
def bucket_ids(height: int, width: int, ratio: float) -> torch.Tensor:
    """(L, L) bucket of every (query, key) pair of a height x width patch grid (product method)."""
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    rows = torch.arange(height).view(-1, 1).expand(height, width).reshape(-1)
    cols = torch.arange(width).view(1, -1).expand(height, width).reshape(-1)
    side = 2 * int(beta) + 1
    r = piecewise_index(rows[:, None] - rows[None, :], alpha, beta, gamma) + int(beta)
    c = piecewise_index(cols[:, None] - cols[None, :], alpha, beta, gamma) + int(beta)
    return r * side + c


def num_buckets(ratio: float) -> int:
    return (2 * int(2 * ratio) + 1) ** 2


class KeyRPE(nn.Module):
    """Contextual iRPE on keys with one table shared by all heads (no class token)."""

    def __init__(self, head_dim: int, ratio: float = 1.9):
        super().__init__()
        self.ratio = ratio
        self.lookup_table_weight = nn.Parameter(torch.zeros(1, head_dim, num_buckets(ratio)))

    def forward(self, q_scaled: torch.Tensor) -> torch.Tensor:
        """``q_scaled`` (B, H, L, D) -> the (B, H, L, L) term added to the attention logits."""
        b, h, n, _ = q_scaled.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"iRPE needs a square patch grid without class token, got {n} tokens")
        table = q_scaled @ self.lookup_table_weight[0]                 # (B, H, L, buckets)
        index = bucket_ids(side, side, self.ratio).to(table.device)
        return table.gather(-1, index.expand(b, h, n, n))
