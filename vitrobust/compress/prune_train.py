"""Training a DynamicViT variant: the paper's Gumbel loss, the default "distilled" loss, and the
``train(model, split)`` step :func:`vitrobust.zoo.variant.trained_variant` runs (see
:data:`.prune.PRUNE_RECIPE` for which recipe the zoo uses and why)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ..zoo.train import fit
from ..zoo.wrapper import ModelWrapper
from .dynamic_vit import PruneError, _queries_keys_values


def _logit_kl(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the class distributions, T=1, per image (both losses' logit term)."""
    return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher_logits, -1),
                    reduction="batchmean", log_target=True)


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
