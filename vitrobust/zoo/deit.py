"""DeiT family: the scaled default zoo (trained on the embedded digits) and the paper's
full-size architectures by their timm names (random weights or a local checkpoint).

The default zoo keeps the paper's tiny < small < base ordering in width, depth and heads.
Patch 4 on 32x32 inputs gives 64 patch tokens, so DynamicViT keep-rates change real compute.
"""
from __future__ import annotations

import timm
from timm.models.vision_transformer import VisionTransformer

from .registry import register_model

# Shared by every default-zoo ViT; part of each model's cache key.
VIT_RECIPE = {"epochs": 30, "lr": 2e-3, "batch_size": 64, "weight_decay": 0.05,
              "label_smoothing": 0.1, "warmup_epochs": 2, "seed": 0}


def _small_vit(embed_dim: int, depth: int, num_heads: int, num_classes: int = 10,
               img_size: int = 32, distilled: bool = False, **kwargs) -> VisionTransformer:
    cls = VisionTransformer
    if distilled:
        from timm.models.deit import VisionTransformerDistilled as cls
    return cls(img_size=img_size, patch_size=4, num_classes=num_classes, embed_dim=embed_dim,
               depth=depth, num_heads=num_heads, mlp_ratio=2.0, **kwargs)


@register_model(recipe=VIT_RECIPE)
def deit_tiny(**kwargs) -> VisionTransformer:
    """DeiT-Tiny scaled to 32x32 digits: width 64, depth 4, 2 heads."""
    return _small_vit(64, 4, 2, **kwargs)


@register_model(recipe=VIT_RECIPE)
def deit_small(**kwargs) -> VisionTransformer:
    """DeiT-Small scaled to 32x32 digits: width 96, depth 6, 3 heads."""
    return _small_vit(96, 6, 3, **kwargs)


@register_model(recipe=VIT_RECIPE)
def deit_base(**kwargs) -> VisionTransformer:
    """DeiT-Base scaled to 32x32 digits: width 128, depth 8, 4 heads."""
    return _small_vit(128, 8, 4, **kwargs)


def _timm(name: str, **kwargs):
    # pretrained=False: nothing is ever downloaded; weights come from a local checkpoint if given.
    kwargs.setdefault("num_classes", 1000)
    # dynamic_img_size: the same weights run at any --input-size (position embeddings are
    # interpolated), so efficiency can be measured at other resolutions
    kwargs.setdefault("dynamic_img_size", True)
    return timm.create_model(name, pretrained=False, **kwargs)


@register_model(data=None, input_size=224)
def deit_tiny_patch16_224(**kwargs):
    """The paper's DeiT-Tiny (5.7M params), timm architecture, random or local weights."""
    return _timm("deit_tiny_patch16_224", **kwargs)


@register_model(data=None, input_size=224)
def deit_small_patch16_224(**kwargs):
    """The paper's DeiT-Small (22M params), timm architecture, random or local weights."""
    return _timm("deit_small_patch16_224", **kwargs)


@register_model(data=None, input_size=224)
def deit_base_patch16_224(**kwargs):
    """The paper's DeiT-Base (86M params), timm architecture, random or local weights."""
    return _timm("deit_base_patch16_224", **kwargs)
