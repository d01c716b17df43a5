"""``:mini`` — MiniViT weight multiplexing with distillation from the dense base.

Zhang, Peng, Zhou, Wu, Hu, Fu, Zhang, Yuan, Xu, "MiniViT: Compressing Vision Transformers with
Weight Multiplexing", CVPR 2022.

Architecture. Consecutive transformer blocks are taken in pairs (the last block stands alone if
the depth is odd). The two layers of a pair run the SAME attention (``qkv``, ``proj``) and MLP
(``fc1``, ``fc2``) parameters -- one tensor each, stored once -- while each layer keeps

* its own LayerNorms (``norm1``, ``norm2``), and
* its own weight transformations, as in Mini-DeiT: a ``num_heads x num_heads`` linear map that
  mixes the heads' attention logits before the softmax (``conv_l``) and another on the
  probabilities after it (``conv_w``), 1x1 convolutions without bias.

Mini-DeiT has no MLP transformation (the depth-wise convolution is Mini-Swin's) and neither
does this module. Patch embedding, class token, position embedding, final norm and head are
the base's timm modules, so the net is the base's ``VisionTransformer`` with ``blocks`` replaced.

Initialization: the shared attention/MLP weights are the FIRST block of each pair's (the mean of
two independently trained blocks is no better aligned than either); each layer's LayerNorms are
its own layer's; the head-mixing maps start at the identity, so training starts from "the base
with every second block's weights replaced by its predecessor's" rather than from a broken net.
(The official release initializes the transformations with a small random normal.)

Training: logit distillation from the dense base, ``alpha * T^2 * KL(student/T || teacher/T) +
(1 - alpha) * CE``, plus, with weight ``attn_weight``, a KL between the last layer's attention
distributions (student: after ``conv_l`` and the softmax), and, with ``hidden_weight``, an MSE
between the last layer's hidden states. Both extra terms are implemented but off by default: they
did not help in the comparison recorded beside ``MINI_RECIPE``.

State-dict keys follow the official Mini-DeiT release (microsoft/Cream, MiniViT/Mini-DeiT) for
the blocks: ``blocks.{g}.block.attn.qkv.weight``, ``blocks.{g}.block.attn.conv_l.instances.{r}
.weight``, ``blocks.{g}.block.norm1.instances.{r}.weight``, ``blocks.{g}.block.mlp.fc1.weight``...
with ``g`` the pair and ``r`` the layer within it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..zoo.train import fit
from ..zoo.variant import inherit_augment, trained_variant, variant_recipe
from ..zoo.wrapper import ModelWrapper
from . import CompressionError, register_compression

# attn_weight / hidden_weight are off by default: on deit_tiny (8 epochs) adding both at weight 1
# gave 0.882 test accuracy vs 0.900 with logits only (dense 0.922), i.e. no gain for the extra cost.
MINI_RECIPE = {"epochs": 8, "lr": 1e-3, "batch_size": 64, "weight_decay": 0.05, "warmup_epochs": 0.5,
               "seed": 0, "temperature": 2.0, "alpha": 0.5, "attn_weight": 0.0, "hidden_weight": 0.0,
               "repeats": 2}


class MultiplexError(CompressionError):
    """The base cannot be weight-multiplexed (not a timm ViT, or blocks this module cannot share)."""


class RepeatedModuleList(nn.Module):
    """One module per layer of a shared block; ``self.instances[r]`` belongs to layer ``r``."""

    def __init__(self, instances):
        super().__init__()
        self.instances = nn.ModuleList(instances)

    def forward(self, r: int, x: torch.Tensor) -> torch.Tensor:
        return self.instances[r](x)


def _head_mixer(num_heads: int) -> nn.Conv2d:
    # A num_heads x num_heads linear map over the head axis of (B, H, N, N); identity at start.
    conv = nn.Conv2d(num_heads, num_heads, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(num_heads).view(num_heads, num_heads, 1, 1))
    return conv


def _mix_heads(conv: nn.Conv2d, attn: torch.Tensor) -> torch.Tensor:
    # Same as conv(attn), but a 1x1 Conv2d on (B, H, N, N) is ~18x slower on CPU than this einsum.
    return torch.einsum("gh,bhnm->bgnm", conv.weight.flatten(1), attn)


class MiniAttention(nn.Module):
    """Multi-head self-attention with shared ``qkv``/``proj`` and per-layer head mixing."""

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, repeats: int):
        super().__init__()
        self.qkv, self.proj, self.num_heads = qkv, proj, num_heads
        self.head_dim = proj.in_features // num_heads
        self.scale = self.head_dim ** -0.5
        self.conv_l = RepeatedModuleList([_head_mixer(num_heads) for _ in range(repeats)])
        self.conv_w = RepeatedModuleList([_head_mixer(num_heads) for _ in range(repeats)])
        self.last_attn: torch.Tensor | None = None   # set when ``keep_attn`` (distillation)
        self.keep_attn = False
        # iRPE on keys, per layer (a RepeatedModuleList of irpe.KeyRPE): only an official
        # Mini-DeiT checkpoint installs it (vitrobust.zoo.checkpoints); trained here: None.
        self.rpe_k: RepeatedModuleList | None = None

    def forward(self, x: torch.Tensor, r: int) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        if self.rpe_k is not None:
            logits = logits + self.rpe_k.instances[r](q * self.scale)
        attn = _mix_heads(self.conv_l.instances[r], logits).softmax(dim=-1)
        if self.keep_attn:
            self.last_attn = attn
        out = _mix_heads(self.conv_w.instances[r], attn) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class MiniBlock(nn.Module):
    """A pre-norm transformer block whose attention/MLP weights serve ``repeats`` layers."""

    def __init__(self, first: nn.Module, layers: list[nn.Module]):
        super().__init__()
        self.norm1 = RepeatedModuleList([copy.deepcopy(layer.norm1) for layer in layers])
        self.norm2 = RepeatedModuleList([copy.deepcopy(layer.norm2) for layer in layers])
        self.attn = MiniAttention(copy.deepcopy(first.attn.qkv), copy.deepcopy(first.attn.proj),
                                  first.attn.num_heads, len(layers))
        self.mlp = copy.deepcopy(first.mlp)

    def forward(self, x: torch.Tensor, r: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(r, x), r)
        return x + self.mlp(self.norm2(r, x))


class RepeatedMiniBlock(nn.Module):
    """Runs its :class:`MiniBlock` ``repeated_times`` times, layer ``r`` with its own parts."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.repeated_times = len(layers)
        self.block = MiniBlock(layers[0], layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in range(self.repeated_times):
            x = self.block(x, r)
        return x


def _check_block(i: int, block: nn.Module) -> None:
    attn = getattr(block, "attn", None)
    if attn is None or not hasattr(attn, "qkv") or not hasattr(block, "mlp"):
        raise MultiplexError(f"block {i} ({type(block).__name__}) is not a timm ViT block with attn.qkv and mlp")
    extras = [name for name in ("ls1", "ls2", "drop_path1", "drop_path2")
              if not isinstance(getattr(block, name, nn.Identity()), nn.Identity)]
    extras += [name for name in ("q_norm", "k_norm", "norm")
               if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity)]
    if extras or getattr(attn, "gate", None) is not None:
        raise MultiplexError(f"block {i}: cannot multiplex blocks with {', '.join(extras) or 'gate'}")


def multiplex(net: nn.Module, repeats: int = 2) -> nn.Module:
    """A deep copy of timm ViT ``net`` whose consecutive blocks share weights in groups of ``repeats``."""
    from timm.models.vision_transformer import VisionTransformer

    blocks = list(getattr(net, "blocks", []))
    if not blocks or not hasattr(net, "patch_embed") or not isinstance(net, VisionTransformer) \
            or getattr(net, "cls_token", None) is None:
        raise MultiplexError(f"{type(net).__name__} is not a plain ViT (a timm VisionTransformer with "
                             "blocks and a class token); weight multiplexing applies to those only")
    for i, block in enumerate(blocks):
        _check_block(i, block)
    out = copy.deepcopy(net)
    out.blocks = nn.Sequential(*[RepeatedMiniBlock(blocks[i:i + repeats])
                                 for i in range(0, len(blocks), repeats)])
    return out


def layer_weights(net: nn.Module) -> list[dict[str, torch.Tensor]]:
    """For every layer (depth index) of a multiplexed net, the weight tensors it computes with."""
    layers = []
    for group in net.blocks:
        b = group.block
        for r in range(group.repeated_times):
            layers.append({"qkv": b.attn.qkv.weight, "proj": b.attn.proj.weight,
                           "fc1": b.mlp.fc1.weight, "fc2": b.mlp.fc2.weight,
                           "norm1": b.norm1.instances[r].weight, "conv_l": b.attn.conv_l.instances[r].weight})
    return layers


def _teacher_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # timm's fused attention never materializes the map: recompute it from the block's input.
    b, n, _ = x.shape
    q, k, _ = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def distillation_loss(teacher: ModelWrapper, recipe: dict):
    """``loss_fn`` for :func:`fit`: logit KD + CE, last-layer attention KL and hidden-state MSE."""
    T, alpha = float(recipe["temperature"]), float(recipe["alpha"])
    attn_w, hidden_w = float(recipe.get("attn_weight", 0)), float(recipe.get("hidden_weight", 0))
    captured = {}

    def loss_fn(model, images, labels):
        student = model.net
        last = student.blocks[-1].block.attn
        last.keep_attn = attn_w > 0
        hooks = [student.norm.register_forward_pre_hook(lambda m, a: captured.__setitem__("s", a[0])),
                 teacher.net.norm.register_forward_pre_hook(lambda m, a: captured.__setitem__("t", a[0])),
                 teacher.net.blocks[-1].attn.register_forward_pre_hook(
                     lambda m, a: captured.__setitem__("t_in", a[0]))]
        try:
            with torch.no_grad():
                t_logits = teacher(images)
                t_attn = _teacher_attention(teacher.net.blocks[-1].attn, captured["t_in"]) if attn_w else None
            s_logits = model(images)
        finally:
            for h in hooks:
                h.remove()
            last.keep_attn = False
        kd = F.kl_div(F.log_softmax(s_logits / T, 1), F.log_softmax(t_logits / T, 1),
                      reduction="batchmean", log_target=True) * T * T
        loss = alpha * kd + (1 - alpha) * F.cross_entropy(s_logits, labels)
        if attn_w:
            s_attn = last.last_attn.clamp_min(1e-8)
            loss = loss + attn_w * (t_attn * (t_attn.clamp_min(1e-8).log() - s_attn.log())).sum(-1).mean()
            last.last_attn = None
        if hidden_w:
            loss = loss + hidden_w * F.mse_loss(captured["s"], captured["t"])
        return loss

    return loss_fn


@register_compression("mini", about="MiniViT weight multiplexing (pairs of blocks) + distillation from the base")
def apply(base: ModelWrapper, *, name: str, progress: bool = True, recipe: dict | None = None) -> ModelWrapper:
    """MiniViT (Zhang et al., CVPR 2022): pairs of consecutive blocks share weights, distilled."""
    recipe = variant_recipe(base, inherit_augment(base, recipe or MINI_RECIPE))
    net = multiplex(base.net, int(recipe.get("repeats", 2)))
    meta = {"compression": "mini", "sharing": "pairs of consecutive blocks",
            "shared_blocks": len(net.blocks), "teacher": base.name}

    def train(model, split):
        fit(model, split, recipe, loss_fn=distillation_loss(base, recipe),
            desc=f"training {name}", progress=progress)

    return trained_variant(name, base, net, recipe, train, meta=meta, progress=progress)
