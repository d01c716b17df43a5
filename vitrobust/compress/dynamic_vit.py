"""The DynamicViT network (Rao et al., NeurIPS 2021): a timm ViT with three token-keep
predictors, and the masked attention its training uses (see :mod:`.prune` for the method, the
recipe and how the zoo trains it; :mod:`.prune_train` for the losses).

Three prediction modules sit before the blocks at ``depth * k // 4`` (k = 1, 2, 3; depth 12 ->
3, 6, 9 as in the paper; depth 8 -> 2, 4, 6; 6 -> 1, 3, 4; 4 -> 1, 2, 3). Stage k keeps
``ceil(rho**k * N)`` of the N patch tokens (ceil, so any rho > 0 keeps at least one token; the
official code floors, and so does a variant loaded from a checkpoint, which comes from that code);
class / distillation tokens are always kept.
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer

from . import CompressionError

NUM_STAGES = 3


class PruneError(CompressionError):
    """A keep-rate outside (0, 1] or a base model token pruning cannot be applied to."""


def prune_locations(depth: int) -> list[int]:
    """Blocks before which the three predictors run: ``depth * k // 4`` for k = 1, 2, 3."""
    locs = [depth * k // 4 for k in range(1, NUM_STAGES + 1)]
    if len(set(locs)) < NUM_STAGES:
        raise PruneError(f"token pruning needs at least 3 blocks, the model has {depth}")
    return locs


def tokens_to_keep(num_patches: int, ratio: float, floor: bool = False) -> int:
    """``ceil(ratio * num_patches)`` (rounded first so 64 * 0.5**3 is exactly 8); ``floor``: the
    official release's ``int(ratio * num_patches)``, for its checkpoints (see :func:`apply`)."""
    exact = round(num_patches * ratio, 6)
    return max(1, math.floor(exact) if floor else math.ceil(exact))


class ScorePredictor(nn.Module):
    """DynamicViT's local-global prediction module; keys match the official ``PredictorLG``.

    Input tokens (B, N, C) and the current keep mask (B, N, 1); output log-probabilities
    (B, N, 2) of (keep, drop). The first half of the embedding is per token (local), the second
    half is averaged over the tokens still kept (global) and broadcast back.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.out_conv = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(),
                                      nn.Linear(dim // 2, dim // 4), nn.GELU(),
                                      nn.Linear(dim // 4, 2), nn.LogSoftmax(dim=-1))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)
        half = x.shape[-1] // 2
        local, glob = x[..., :half], x[..., half:]
        glob = (glob * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1e-6)
        return self.out_conv(torch.cat([local, glob.expand(-1, x.shape[1], -1)], dim=-1))


def keep_score(log_probs: torch.Tensor) -> torch.Tensor:
    """A token's rank score: the log-odds of keeping it, log p(keep) - log p(drop).

    Ranks exactly as p(keep) does, but does not round to a tie where p(keep) saturates near 1
    (log p(keep) becomes -0.0 in float32 for every token).
    """
    return log_probs[..., 0] - log_probs[..., 1]


def softmax_with_policy(logits: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
    """Attention softmax over the kept keys only; every query may also attend to itself.

    ``logits`` (B, H, N, N), ``policy`` (B, N, 1) of 0/1 decisions (straight-through, so the
    mask is multiplicative to pass gradients to the predictors). Unlike the official version
    no eps is added to masked entries: a dropped token gets exactly zero weight.
    """
    n = logits.shape[-1]
    keep = policy.reshape(policy.shape[0], 1, 1, n).to(torch.float32)
    eye = torch.eye(n, dtype=keep.dtype, device=keep.device).view(1, 1, n, n)
    allowed = keep + (1.0 - keep) * eye
    logits = logits.to(torch.float32)
    weights = (logits - logits.amax(-1, keepdim=True).detach()).exp() * allowed
    denom = weights.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return weights / denom


def _queries_keys_values(attn: Attention, x: torch.Tensor):
    """timm ``Attention``'s normed q, k and its v, each (B, heads, N, head_dim)."""
    b, n, _ = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def _policy_attention(attn: Attention, x: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
    """timm ``Attention.forward`` with the policy softmax in place of the plain one."""
    b, n, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = _queries_keys_values(attn, x)
    weights = attn.attn_drop(softmax_with_policy((q * attn.scale) @ k.transpose(-2, -1), policy))
    out = (weights.type_as(v) @ v).transpose(1, 2).reshape(b, n, attn.attn_dim)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


def _policy_block(blk: Block, x: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
    """timm ``Block.forward`` with masked attention (the MLP is per token, nothing to mask)."""
    x = x + blk.drop_path1(blk.ls1(_policy_attention(blk.attn, blk.norm1(x), policy)))
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


class TokenPruningMixin:
    """Mixed in front of a timm ``VisionTransformer`` class: adds predictors, prunes tokens.

    Attributes: ``keep_rate``, ``prune_locations``, ``token_ratios`` (rho**k), ``tokens_kept``
    (patch tokens kept per stage at the model's input size), ``score_predictor``. While
    training, ``pruning_outputs`` holds the last forward's keep decisions and final tokens for
    the loss.
    """

    def _init_pruning(self, keep_rate: float) -> None:
        self.keep_rate = float(keep_rate)
        self.prune_locations = prune_locations(len(self.blocks))
        self.token_ratios = [self.keep_rate ** k for k in range(1, NUM_STAGES + 1)]
        self.pruning_outputs = None
        self.floor_tokens = False   # True for checkpoints of the official release (see apply)
        self.selection = "gumbel"   # how training keeps tokens: the recipe's selection (train_pruned)
        dim = self.embed_dim
        self.score_predictor = nn.ModuleList(ScorePredictor(dim) for _ in self.prune_locations)
        # Seeded init (official: trunc-normal 0.02, zero bias): a rebuilt variant is the same model.
        generator = torch.Generator().manual_seed(0)
        for predictor in self.score_predictor:
            for m in predictor.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02, generator=generator)
                    nn.init.zeros_(m.bias)
            # Start each stage near its target keep rate (the official init starts at 0.5):
            # with a short fine-tuning budget the ratio loss then has little left to do.
            p = min(max(self.keep_rate, 1e-3), 1 - 1e-3)
            with torch.no_grad():
                predictor.out_conv[4].bias.copy_(torch.tensor([math.log(p), math.log(1 - p)]))

    @property
    def tokens_kept(self) -> list[int]:
        n = self.patch_embed.num_patches
        return [tokens_to_keep(n, r, self.floor_tokens) for r in self.token_ratios]

    def tokens_per_block(self) -> list[int]:
        """Tokens (prefix tokens included) each block sees at evaluation."""
        counts, current = [], self.patch_embed.num_patches
        kept = dict(zip(self.prune_locations, self.tokens_kept))
        for i in range(len(self.blocks)):
            current = kept.get(i, current)
            counts.append(current + self.num_prefix_tokens)
        return counts

    def forward_features(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        if not self.training or self.selection == "distilled":
            x = self.norm(self._prune_eval(x))
            if self.pruning_outputs is not None:
                self.pruning_outputs["features"] = x   # for the token-distillation loss
            return x
        x = self.norm(self._prune_train(x))
        self.pruning_outputs["features"] = x  # the token-distillation loss needs them
        return x

    def _prune_train(self, x: torch.Tensor) -> torch.Tensor:
        b, p = x.shape[0], self.num_prefix_tokens
        n = x.shape[1] - p
        keep = x.new_ones(b, n, 1)
        prefix = x.new_ones(b, p, 1)
        policy, decisions, stage = None, [], 0
        for i, blk in enumerate(self.blocks):
            if stage < len(self.prune_locations) and i == self.prune_locations[stage]:
                log_probs = self.score_predictor[stage](x[:, p:], keep)
                # Hard Gumbel-softmax: 0/1 forward, soft gradient; a dropped token stays dropped.
                keep = F.gumbel_softmax(log_probs, hard=True)[..., :1] * keep
                decisions.append(keep.flatten(1))
                policy = torch.cat([prefix, keep], dim=1)
                stage += 1
            x = blk(x) if policy is None else _policy_block(blk, x, policy)
        self.pruning_outputs = {"decisions": decisions, "keep": keep.detach()}
        return x

    def _prune_eval(self, x: torch.Tensor) -> torch.Tensor:
        p, n0 = self.num_prefix_tokens, x.shape[1] - self.num_prefix_tokens
        origin = torch.arange(n0, device=x.device).expand(x.shape[0], n0)   # patch index of each token
        scores, stage = [], 0
        for i, blk in enumerate(self.blocks):
            if stage < len(self.prune_locations) and i == self.prune_locations[stage]:
                tokens = x[:, p:]
                score = keep_score(self.score_predictor[stage](tokens, tokens.new_ones(*tokens.shape[:2], 1)))
                scores.append((score, origin))
                k = tokens_to_keep(n0, self.token_ratios[stage], self.floor_tokens)
                # Keep the spatial order of the survivors (sorted indices): only which tokens
                # survive matters to the blocks, but an ordered set is easier to inspect.
                idx = score.detach().topk(k, dim=1).indices.sort(dim=1).values
                tokens = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
                origin = origin.gather(1, idx)
                x = torch.cat([x[:, :p], tokens], dim=1)
                stage += 1
            x = blk(x)
        # training on this path ("distilled"): the loss needs each stage's scores and the tokens kept
        self.pruning_outputs = {"scores": scores, "origin": origin} if self.training else None
        return x


@lru_cache(maxsize=None)
def _pruned_class(cls: type) -> type:
    return type(f"DynamicViT{cls.__name__}", (TokenPruningMixin, cls), {})


DynamicViT = _pruned_class(VisionTransformer)


def dynamic_vit(vit: VisionTransformer, keep_rate: float) -> VisionTransformer:
    """A copy of the timm ViT ``vit`` with DynamicViT predictors for keep-rate ``keep_rate``."""
    if not 0 < keep_rate <= 1:
        raise PruneError(f"keep rate must be in (0, 1], got {keep_rate}")
    if isinstance(vit, TokenPruningMixin):
        raise PruneError("the model is already token-pruned")
    if not isinstance(vit, VisionTransformer):
        raise PruneError(f"token pruning needs a timm VisionTransformer, got {type(vit).__name__}")
    if vit.global_pool != "token" or vit.num_prefix_tokens < 1:
        raise PruneError(f"token pruning needs a class-token model, got global_pool={vit.global_pool!r}")
    bad = [i for i, blk in enumerate(vit.blocks)
           if type(blk) is not Block or not isinstance(blk.attn, Attention)]
    if bad:
        raise PruneError(f"token pruning supports timm Block/Attention only; block {bad[0]} is "
                         f"{type(vit.blocks[bad[0]]).__name__}")
    net = copy.deepcopy(vit)
    # Same object, subclass with the pruning forward: parameters and state-dict keys stay timm's.
    net.__class__ = _pruned_class(type(vit))
    net._init_pruning(keep_rate)
    return net
