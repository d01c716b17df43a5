"""``:distilled`` (DeiT distillation token) and ``:bornagain`` (born-again knowledge distillation).

``:distilled`` — Touvron, Cord, Douze, Massa, Sablayrolles, Jegou, "Training data-efficient image
transformers & distillation through attention", ICML 2021. timm's ``VisionTransformerDistilled``
with the base's dimensions (for the full-size names, timm's ``deit_*_distilled_patch16_224``,
random weights) gets a distillation token and a second head. It starts from the base's weights
where shapes match; the distillation token and head start as copies of the class token and head,
and the position embedding gets the class token's entry twice. It is fine-tuned with HARD-label
distillation from a CNN teacher: ``0.5 * CE(class head, y) + 0.5 * CE(dist head, argmax
teacher)``. At evaluation timm averages the two heads, so the wrapper returns one (N, C) tensor.

The teacher is ``recipe["teacher"]`` of the base if set, else :data:`TEACHERS` by base name,
else ``cnn_small``; it is loaded with :func:`vitrobust.zoo.load_model` (trained on first use) and
its weight hash is part of the variant's cache key.

``:bornagain`` — Furlanello, Lipton, Tschannen, Itti, Anandkumar, "Born-Again Neural Networks",
ICML 2018. The base's architecture, trained on the base's soft labels. The paper trains the
student from scratch (recipe ``init: "scratch"``, supported); the default starts it from the base's
weights (``init: "base"``) because from scratch it does not reach a comparable accuracy within
the zoo's training budget (see ``BORNAGAIN_RECIPE``). Loss: ``alpha * T^2 * KL(softmax(s/T) || softmax(t/T)) + (1 - alpha) * CE(s, y)``
(Hinton et al. 2015). The recipe records ``temperature`` and ``alpha``.
"""
from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..names import ModelName
from ..zoo.plan import current_step
from ..zoo.train import fit
from ..zoo.variant import inherit_augment, trained_variant, variant_recipe
from ..zoo.wrapper import ModelWrapper
from . import CompressionError, register_compression

DISTILLED_RECIPE = {"epochs": 6, "lr": 5e-4, "batch_size": 64, "weight_decay": 0.05,
                    "warmup_epochs": 0.5, "seed": 0, "distillation": "hard"}
# init "base": from scratch (init "scratch", 15 epochs, lr 2e-3) deit_tiny reached only 0.553
# test accuracy (dense: 0.922 after 30 epochs), too weak a model to compare robustness with within
# the zoo's training budget; so the student starts from the base's weights (self-distillation).
BORNAGAIN_RECIPE = {"epochs": 5, "lr": 5e-4, "batch_size": 64, "weight_decay": 0.05,
                    "warmup_epochs": 0.5, "seed": 1, "temperature": 4.0, "alpha": 0.7, "init": "base"}

# Teachers by base name where the base's recipe names none (default: cnn_small). The test
# fixtures pair with the tiny CNN fixture so their distilled variants build in seconds.
TEACHERS = {"vit_fixture": "cnn_fixture", "vit_fixture_wide": "cnn_fixture"}
DEFAULT_TEACHER = "cnn_small"


class DistillError(CompressionError):
    """The base cannot be given a distillation token (not a class-token timm ViT)."""


def soft_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, batch mean (Hinton et al. 2015)."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def teacher_name(base: ModelWrapper) -> str:
    """The base's recipe's ``teacher``, else :data:`TEACHERS` by its registered base name."""
    root = ModelName(base.name).base
    return base.info.recipe.get("teacher") or TEACHERS.get(root) or DEFAULT_TEACHER


# -- :distilled ----------------------------------------------------------------------------------
def distilled_net(base: ModelWrapper) -> nn.Module:
    """timm ``VisionTransformerDistilled`` with ``base``'s dimensions, initialized from it."""
    from timm.models.deit import VisionTransformerDistilled

    src = base.net
    if not all(hasattr(src, a) for a in ("blocks", "patch_embed", "cls_token", "pos_embed", "head")) \
            or getattr(src, "global_pool", "token") != "token":
        raise DistillError(f"{base.name}: a distillation token needs a class-token timm ViT, "
                           f"got {type(src).__name__}")
    match = re.fullmatch(r"deit_(tiny|small|base)_patch16_224", ModelName(base.name).base)
    arch = current_step().source.arch   # the zoo config's arch: for this variant, if any
    if arch or match:
        import timm
        arch = (arch or f"deit_{match[1]}_distilled_patch16_224").removeprefix("timm:")
        if not timm.is_model(arch):
            raise DistillError(f"{base.name}: arch {arch!r} is not a timm architecture")
        net = timm.create_model(arch, pretrained=False, num_classes=base.info.num_classes,
                                dynamic_img_size=True)
        if not hasattr(net, "set_distilled_training"):
            raise DistillError(f"{base.name}: arch {arch!r} has no distillation token (a deit_*_distilled_* name?)")
    else:
        block = src.blocks[0]
        net = VisionTransformerDistilled(
            img_size=src.patch_embed.img_size, patch_size=src.patch_embed.patch_size,
            num_classes=base.info.num_classes, embed_dim=src.embed_dim, depth=len(src.blocks),
            num_heads=block.attn.num_heads,
            mlp_ratio=block.mlp.fc1.out_features / src.embed_dim,
            qkv_bias=block.attn.qkv.bias is not None)
    _init_from(net, src)
    return net


def _init_from(net: nn.Module, src: nn.Module) -> None:
    own, theirs = net.state_dict(), src.state_dict()
    state = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    pos = theirs["pos_embed"]
    if own["pos_embed"].shape[1] == pos.shape[1] + 1:   # [cls, patches] -> [cls, cls, patches]
        state["pos_embed"] = torch.cat([pos[:, :1], pos[:, :1], pos[:, 1:]], dim=1)
    state["dist_token"] = theirs["cls_token"]
    for suffix in ("weight", "bias"):
        if f"head.{suffix}" in theirs:
            state[f"head_dist.{suffix}"] = theirs[f"head.{suffix}"]
    own.update({k: v for k, v in state.items() if own[k].shape == v.shape})
    net.load_state_dict(own)


def hard_distillation_loss(teacher: ModelWrapper):
    """``0.5 CE(class head, y) + 0.5 CE(dist head, argmax teacher)`` (DeiT hard distillation)."""

    def loss_fn(model, images, labels):
        with torch.no_grad():
            target = teacher(images).argmax(1)
        # Call the net directly: the wrapper would average the two heads.
        cls_logits, dist_logits = model.net(model.normalize(images))
        return 0.5 * F.cross_entropy(cls_logits, labels) + 0.5 * F.cross_entropy(dist_logits, target)

    return loss_fn


@register_compression("distilled", about="DeiT distillation token, hard distillation from a CNN teacher")
def apply_distilled(base: ModelWrapper, *, name: str, progress: bool = True,
                    recipe: dict | None = None) -> ModelWrapper:
    """DeiT with a distillation token (Touvron et al. 2021), hard-label teacher: a CNN."""
    from ..zoo import load_model

    tname = teacher_name(base)
    recipe = variant_recipe(base, inherit_augment(base, {**(recipe or DISTILLED_RECIPE), "teacher": tname}))
    if base.info.data is not None:   # the default zoo: a CNN teacher trained on the same data
        teacher = load_model(tname, progress=progress)
        recipe["teacher_hash"] = teacher.info.weight_hash
    else:   # a checkpoint base fine-tuned on the user's data (train:): it teaches itself
        teacher = base
        recipe["teacher"] = base.name
    net = distilled_net(base)
    meta = {"compression": "distilled", "teacher": recipe["teacher"], "distillation": "hard"}

    def train(model, split):
        model.net.set_distilled_training(True)
        try:
            fit(model, split, recipe, loss_fn=hard_distillation_loss(teacher),
                desc=f"training {name}", progress=progress)
        finally:
            model.net.set_distilled_training(False)

    return trained_variant(name, base, net, recipe, train, meta=meta, progress=progress)


# -- :bornagain ----------------------------------------------------------------------------------
def reinitialized(net: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``net`` with fresh (seeded) weights: same architecture, from scratch."""
    net = copy.deepcopy(net)
    torch.manual_seed(seed)
    if hasattr(net, "init_weights"):   # timm ViTs: their own init (trunc-normal, zero biases)
        net.init_weights()
    else:
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return net


def kd_loss(teacher: ModelWrapper, temperature: float, alpha: float):
    """``alpha * T^2 * KL + (1 - alpha) * CE`` against ``teacher``'s soft labels."""

    def loss_fn(model, images, labels):
        with torch.no_grad():
            t_logits = teacher(images)
        logits = model(images)
        return alpha * soft_kd(logits, t_logits, temperature) + (1 - alpha) * F.cross_entropy(logits, labels)

    return loss_fn


@register_compression("bornagain", about="born-again KD: same architecture from scratch on the base's soft labels")
def apply_bornagain(base: ModelWrapper, *, name: str, progress: bool = True,
                    recipe: dict | None = None) -> ModelWrapper:
    """Born-again network (Furlanello et al. 2018): the base re-trained on its own soft labels."""
    recipe = variant_recipe(base, inherit_augment(base, recipe or BORNAGAIN_RECIPE))
    net = reinitialized(base.net, int(recipe["seed"])) if recipe.get("init") == "scratch" \
        else copy.deepcopy(base.net)
    meta = {"compression": "bornagain", "teacher": base.name, "temperature": float(recipe["temperature"])}

    def train(model, split):
        fit(model, split, recipe, loss_fn=kd_loss(base, float(recipe["temperature"]), float(recipe["alpha"])),
            desc=f"training {name}", progress=progress)

    return trained_variant(name, base, net, recipe, train, meta=meta, progress=progress)
