"""DynamicViT token pruning as the suffix ``:prune{rho}`` (Rao et al., NeurIPS 2021).

Three prediction modules sit before the blocks at ``depth * k // 4`` (k = 1, 2, 3; depth 12 ->
3, 6, 9 as in the paper; depth 8 -> 2, 4, 6; 6 -> 1, 3, 4; 4 -> 1, 2, 3). Stage k keeps
``ceil(rho**k * N)`` of the N patch tokens (ceil, so any rho > 0 keeps at least one token; the
official code floors, and so does a variant loaded from a checkpoint, which comes from that code);
class / distillation tokens are always kept.

- Training, ``selection: gumbel`` (the paper's recipe): hard Gumbel-softmax keep decisions,
  multiplied stage by stage; dropped tokens stay in the tensor but are masked out of every later
  attention softmax (each token may still attend to itself, as the official
  ``softmax_with_policy``), so they no longer influence the kept ones. Loss = CE(labels) + w *
  mean_k MSE(mean keep decision, rho**k) + 0.5 * KL(teacher logits || student logits, T=1) + 0.5
  * MSE(final features of kept tokens, teacher's); the teacher is the dense base model, frozen.
- Training, ``selection: distilled`` (the default zoo's recipe, not the paper's): the network
  trains on the evaluation path below, and each predictor learns to rank tokens as the dense
  teacher's class token attends to them in the blocks it prunes for (see ``PRUNE_RECIPE`` for
  why; :func:`distilled_pruning_loss`).
- Evaluation: at each stage the top-scoring tokens are gathered (``torch.topk``), so every later
  block really runs on fewer tokens and FLOPs fall. Deterministic and batch independent.

The pruned network is the timm ``VisionTransformer`` itself (same class hierarchy, same
``blocks.N.attn.qkv.weight`` keys) plus ``score_predictor.{k}.in_conv.*`` / ``out_conv.*``, the
layout of the official release (raoyongming/DynamicViT, ``PredictorLG``), so its published DeiT
checkpoints load with :func:`vitrobust.zoo.load_checkpoint`.
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

from ..zoo.train import fit
from ..zoo.variant import trained_variant, variant_recipe
from ..zoo.wrapper import ModelWrapper
from . import CompressionError, register_compression

# Recipe for the default zoo (part of each variant's cache and release key). The paper's Gumbel
# recipe trains on sampled keep masks and evaluates the top-k of the keep scores. On our short
# budget (8 epochs on ~1,000 digits) its scores often stayed near-constant or saturated (one
# predictor at p(keep) = 1.0 for every token, std 6e-9), so the top-k evaluation kept a set the
# backbone never trained on, and variants collapsed differently per machine and per seed:
# deit_small:prune0.5 0.649 on one machine, 0.936 on another; across three seeds 14 of 48
# variants fell more than 5 points below their base (deit_base@s2:prune0.6 0.664 vs 0.912 val).
# Fixes tried on those two worst builds: a second top-k phase (0.833), straight-through top-k
# (0.90 / 0.77, scores saturate again), a threshold-centred straight-through (0.63). The
# "distilled" selection trains on the evaluation path itself and gives the predictors a target
# that cannot collapse, the dense teacher's class attention: 0.962 (test; dense 0.967) and 0.947
# (test; val 0.912 = its base's). The architecture, the evaluation and the checkpoint layout stay
# DynamicViT's; ``selection: gumbel`` keeps the paper's training for a user's recipe.
PRUNE_RECIPE = {"epochs": 8, "lr": 3e-4, "predictor_lr": 1e-3, "batch_size": 64,
                "weight_decay": 0.01, "warmup_epochs": 1, "seed": 0, "selection": "distilled",
                "attention_weight": 1.0, "distill_weight": 0.5, "clf_weight": 1.0,
                # selection: gumbel only (the paper's ratio weight is 2.0; 10 held the keep rates here)
                "ratio_weight": 10.0, "token_mse": True}
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


def _logit_kl(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the class distributions, T=1, per image (both losses' logit term)."""
    return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher_logits, -1),
                    reduction="batchmean", log_target=True)


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


def pruning_loss(teacher: ModelWrapper, recipe: dict, label_smoothing: float = 0.0):
    """DynamicViT's distillation loss (official ``DistillDiffPruningLoss`` with token MSE)."""
    ratio_w, distill_w = float(recipe["ratio_weight"]), float(recipe["distill_weight"])
    clf_w, token_mse = float(recipe["clf_weight"]), bool(recipe.get("token_mse", True))

    def loss_fn(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        net = model.net
        logits = model(images)
        out = net.pruning_outputs
        features = out["features"]
        ratio = sum(((d.mean(1) - r) ** 2).mean() for d, r in zip(out["decisions"], net.token_ratios))
        with torch.no_grad():
            t_feat = teacher.net.forward_features(teacher.normalize(images))
            t_logits = teacher.net.forward_head(t_feat)
        kl = _logit_kl(logits, t_logits)
        p = net.num_prefix_tokens
        mask = out["keep"].squeeze(-1) > 0.5
        if not mask.any():
            token = logits.new_zeros(())
        elif token_mse:
            token = ((features[:, p:][mask] - t_feat[:, p:][mask]) ** 2).mean()
        else:  # the official default: KL between per-token softmaxes
            token = F.kl_div(F.log_softmax(features[:, p:][mask], -1), F.log_softmax(t_feat[:, p:][mask], -1),
                             reduction="batchmean", log_target=True)
        ce = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        return clf_w * ce + ratio_w * ratio / len(out["decisions"]) + distill_w * (kl + token)

    return loss_fn


def class_attention(vit: VisionTransformer, images: torch.Tensor):
    """``vit``'s features of ``images`` and its class token's attention to each patch token:
    (B, depth, N), per block, averaged over heads (the fused attention kernel returns no weights,
    so the class token's row is recomputed from each block's own q and k)."""
    rows, p = [], vit.num_prefix_tokens

    def hook(attn, args, out):
        x = args[0]
        q, k, _ = _queries_keys_values(attn, x)
        weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(-1)   # (B, H, 1, n)
        rows.append(weights.mean(1)[:, 0, p:])

    hooks = [blk.attn.register_forward_hook(hook) for blk in vit.blocks]
    try:
        features = vit.forward_features(images)
    finally:
        for h in hooks:
            h.remove()
    return features, torch.stack(rows, 1)


def distilled_pruning_loss(teacher: ModelWrapper, recipe: dict, label_smoothing: float = 0.0):
    """The "distilled" recipe's loss: the network trains on the evaluation path (top-k kept) and
    each predictor learns which tokens the dense teacher's class token reads from the blocks it
    prunes for.

    Predictor k's target is the teacher's class attention to each still-kept token, averaged
    over the blocks from its location on and renormalized; its loss is the cross-entropy of that
    distribution against the softmax of its keep scores (so only the ranking is learned and the
    scores cannot saturate). The rest: CE(labels) + distill_weight * (KL(teacher || student
    logits, T=1) + MSE(final features of the kept tokens, the teacher's at the same patches)).
    """
    distill_w, clf_w = float(recipe["distill_weight"]), float(recipe["clf_weight"])
    attention_w = float(recipe["attention_weight"])

    def loss_fn(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        net = model.net
        logits = model(images)
        out, p = net.pruning_outputs, net.num_prefix_tokens
        features = out["features"]
        with torch.no_grad():
            t_feat, attention = class_attention(teacher.net, teacher.normalize(images))
            t_logits = teacher.net.forward_head(t_feat)
        ranking = logits.new_zeros(())
        for (score, origin), loc in zip(out["scores"], net.prune_locations):
            target = attention[:, loc:].mean(1).gather(1, origin)
            target = target / target.sum(1, keepdim=True)
            ranking = ranking - (target * F.log_softmax(score, -1)).sum(1).mean()
        kl = _logit_kl(logits, t_logits)
        kept = out["origin"]
        t_kept = t_feat[:, p:].gather(1, kept.unsqueeze(-1).expand(-1, -1, t_feat.shape[-1]))
        token = ((features[:, p:] - t_kept) ** 2).mean()
        ce = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        return clf_w * ce + distill_w * (kl + token) + attention_w * ranking / len(out["scores"])

    return loss_fn


SELECTIONS = {"gumbel": pruning_loss, "distilled": distilled_pruning_loss}


def train_pruned(teacher: ModelWrapper, recipe: dict, name: str, progress: bool):
    """``train(model, split)`` for :func:`trained_variant`: one phase, two lrs (see recipe)."""

    def train(model: ModelWrapper, split) -> None:
        net = model.net
        teacher.eval()
        selection = recipe.get("selection", "gumbel")
        if selection not in SELECTIONS:
            raise PruneError(f"{name}: recipe selection must be one of {sorted(SELECTIONS)}, got {selection!r}")
        loss_fn = SELECTIONS[selection](teacher, recipe, float(teacher.info.recipe.get("label_smoothing", 0.0)))
        predictor = list(net.score_predictor.parameters())
        own = {id(q) for q in predictor}
        groups = [{"params": [q for q in net.parameters() if id(q) not in own], "lr": float(recipe["lr"])},
                  {"params": predictor, "lr": float(recipe["predictor_lr"])}]
        net.selection = selection
        try:
            if recipe["epochs"] > 0:
                fit(model, split, recipe, loss_fn=loss_fn, params=groups,
                    desc=f"training {name}", progress=progress)
        finally:
            net.selection = "gumbel"
            net.pruning_outputs = None  # drop the last batch's graph

    return train


@register_compression("prune", r"prune(?P<keep_rate>0?\.\d+|1(?:\.0*)?)",
                      about="DynamicViT token pruning keeping rho, rho^2, rho^3 of the tokens",
                      example="prune0.7")
def apply(base: ModelWrapper, *, name: str, progress: bool = True, keep_rate: float) -> ModelWrapper:
    """DynamicViT token pruning at keep-rate ``keep_rate``, distilled from the dense ``base``."""
    if not base.info.differentiable:
        raise PruneError(f"{base.name}: token pruning needs a differentiable (float) base model")
    net = dynamic_vit(base.net, keep_rate)
    recipe = variant_recipe(base, PRUNE_RECIPE)
    meta = {"compression": "prune", "keep_rate": float(keep_rate),
            "prune_locations": list(net.prune_locations), "tokens_kept": net.tokens_kept}
    model = trained_variant(name, base, net, recipe, train_pruned(base, recipe, name, progress),
                            meta=meta, progress=progress)
    if model.info.meta.get("weights", "").startswith("checkpoint"):
        # A user's DynamicViT checkpoint comes from the official code, which keeps
        # int(rho**k * N) tokens: count them as it does (0.7 on 196: 137/96/67, not 138/97/68).
        model.net.floor_tokens = True
        model.info.meta["tokens_kept"] = model.net.tokens_kept
        model.info.meta["token_rounding"] = "floor, as the official release"
    return model
