"""Building a compressed variant of a built model: its wrapper, its recipe, its trained weights.

Every compression in :mod:`vitrobust.compress` derives its model from a base the same way: the
variant keeps the base's data, input size, classes, recipe and input normalization
(:func:`variant_wrapper`); a trained variant caps its epochs by the base's ``variant_epochs``
(:func:`variant_recipe`), follows the base's augmentation setting (:func:`inherit_augment`),
and is trained once and cached under a key that holds the base's weight hash
(:func:`trained_variant`). Keeping these here means no compression re-derives them.
"""
from __future__ import annotations

import time

import torch

from ..data import load_dataset
from . import cache
from .wrapper import ModelInfo, ModelWrapper


def variant_wrapper(name: str, base: ModelWrapper, net: torch.nn.Module, *, family: str | None = None,
                    differentiable: bool = True, meta: dict | None = None) -> ModelWrapper:
    """``net`` wrapped as the variant ``name`` of ``base`` (same data, size, classes, recipe and
    normalization); weight hash and build time are the caller's to fill in."""
    info = ModelInfo(name, family=family or base.info.family, differentiable=differentiable,
                     data=base.info.data, input_size=base.info.input_size,
                     num_classes=base.info.num_classes, meta=dict(meta or {}),
                     recipe=dict(base.info.recipe))
    return ModelWrapper(net, info, *base.normalization)


def variant_recipe(base: ModelWrapper, recipe: dict) -> dict:
    """``recipe`` with its epochs capped by the base's ``variant_epochs`` (small test fixtures)."""
    cap = base.info.recipe.get("variant_epochs")
    return {**recipe, "epochs": min(recipe.get("epochs", 1), cap)} if cap else dict(recipe)


def inherit_augment(base: ModelWrapper, recipe: dict) -> dict:
    """``recipe`` with the base's ``augment`` setting when the base states one.

    A base trained without augmentation (the test fixtures) loses accuracy fast when fine-tuned
    on shifted images (vit_fixture: 0.81 -> 0.58 in two epochs of adversarial training).
    """
    if "augment" in base.info.recipe and "augment" not in recipe:
        return {**recipe, "augment": base.info.recipe["augment"]}
    return dict(recipe)


def trained_variant(name: str, base: ModelWrapper, net: torch.nn.Module, recipe: dict,
                    train, *, family: str | None = None, meta: dict | None = None,
                    differentiable: bool = True, progress: bool = True) -> ModelWrapper:
    """Wrap ``net`` as the variant ``name`` of ``base``; train it once and cache the weights.

    ``train(model, train_split)`` trains in place (usually via :func:`~.train.fit` with a custom
    loss). The cache key holds the recipe, the training data and the base's weight hash, so a
    retrained base retrains its variants. Bases with random weights (full-size timm names) are
    not trained.
    """
    start = time.perf_counter()
    model = variant_wrapper(name, base, net, family=family, differentiable=differentiable, meta=meta)
    if base.info.data is not None:
        train_split = load_dataset(base.info.data, "train")
        key = cache.cache_key(name, recipe, train_split.fingerprint, base=base.info.weight_hash)
        state = cache.load_weights(name, key)
        if state is not None:
            model.net.load_state_dict(state)
        else:
            train(model, train_split)
            cache.save_weights(name, key, model.net.state_dict())
    model.eval()
    model.info.weight_hash = cache.state_hash(model.net.state_dict())
    model.info.build_seconds = time.perf_counter() - start
    return model
