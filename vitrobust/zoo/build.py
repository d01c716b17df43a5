"""Resolve a model name to a ready :class:`ModelWrapper`: build, train on first use, cache.

Names are a registered base plus optional compression suffixes: ``deit_small``,
``deit_small:int8``, ``deit_small_patch16_224:prune0.5`` (parsed by
:class:`vitrobust.names.ModelName`). Suffixes are handled by ``vitrobust.compress``, one step of
``ModelName.chain()`` at a time; this module builds the base and runs each step with what the
zoo config says about it (:mod:`.plan`). Compressed variants are built with :mod:`.variant`.

Weights are never silently random where they matter: a base without training data or a
checkpoint is labelled ``meta["weights"] = "random weights"`` (and so is everything derived from
it), and a variant that needs training on such a base is an error unless ``random_weights=True``
(``vitrobust measure``: size, FLOPs and throughput do not depend on the weights).
"""
from __future__ import annotations

import time

import torch

from ..data import open_train_split
from ..errors import VitrobustError
from ..names import ModelName
from . import cache, release
from .checkpoints import CheckpointError, head_classes, load_checkpoint, read_state
from .plan import BuildStep, ModelSource, ZooPlan, building
from .registry import ModelEntry
from .replicas import replica_recipe
from .timm_arch import arch_entry
from .train import fit
from .wrapper import ModelInfo, ModelWrapper

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RANDOM_WEIGHTS = "random weights"
_LOADED: dict[tuple, ModelWrapper] = {}

__all__ = ["CheckpointError", "RANDOM_WEIGHTS", "UnusedSourceError", "load_checkpoint", "load_model"]


class UnusedSourceError(VitrobustError):
    """A zoo entry's checkpoint or train: on a variant built without training (e.g. ``:int8``)."""


def load_model(name: str, *, checkpoint: str | ZooPlan | None = None, progress: bool = True,
               random_weights: bool = False) -> ModelWrapper:
    """The model called ``name``, built (and trained or loaded from cache) once per process.

    ``checkpoint``: a path holding weights for the base, or a :class:`ZooPlan` (what a zoo
    config says about every step, from :meth:`ZooConfig.resolve`). Each suffix along
    ``ModelName(name).chain()`` is then applied to the model before it. ``random_weights``:
    accept untrained variants of a base without training data (labelled "random weights").
    """
    name = ModelName(name)
    plan = checkpoint if isinstance(checkpoint, ZooPlan) else \
        ZooPlan((ModelSource(checkpoint=checkpoint),) if checkpoint else ())
    key = (str(name), plan, bool(random_weights))
    if key not in _LOADED:
        source = plan.step(0)
        entry = arch_entry(source.arch or name.base)
        model = _load_base(entry, name.chain()[0], source, plan, progress)
        for i, step in enumerate(name.chain()[1:], start=1):
            build = BuildStep(plan.step(i), plan.data, bool(random_weights), entry=plan.entry_name(i))
            model = _apply_step(model, step, build, progress)
        _LOADED[key] = model
    return _LOADED[key]


def _apply_step(parent: ModelWrapper, step: ModelName, build: BuildStep, progress: bool) -> ModelWrapper:
    from ..compress import apply_compression  # compress builds on the zoo, not vice versa

    with building(build):
        variant = apply_compression(parent, step.last_suffix, str(step), progress=progress)
    if not build.source.empty and (build.source.checkpoint or build.source.train_epochs) and not build.used:
        raise UnusedSourceError(f"{build.entry or step}: :{step.last_suffix} is built from its parent without training, so "
                                "its zoo entry's checkpoint/train: would be ignored; give the parent's checkpoint")
    if parent.info.meta.get("weights") == RANDOM_WEIGHTS and "weights" not in variant.info.meta:
        variant.info.meta["weights"] = RANDOM_WEIGHTS
    return variant


def _new_wrapper(entry: ModelEntry, net, name: str | None = None, recipe: dict | None = None,
                 **info) -> ModelWrapper:
    if entry.mean_std is not None:
        mean_std = entry.mean_std
    else:
        mean_std = (IMAGENET_MEAN, IMAGENET_STD) if entry.data is None else ((0.5,) * 3, (0.5,) * 3)
    num_classes = getattr(net, "num_classes", info.pop("num_classes", 10))
    meta = ModelInfo(name or entry.name, family=entry.family, data=entry.data,
                     input_size=entry.input_size, num_classes=num_classes,
                     recipe=dict(entry.recipe if recipe is None else recipe), **info)
    return ModelWrapper(net, meta, *mean_std)


def _load_base(entry: ModelEntry, name: ModelName, source: ModelSource, plan: ZooPlan, progress: bool) -> ModelWrapper:
    """The base ``name`` (with its replica seed: ``deit_small@s1``) per ``entry`` and ``source``."""
    start = time.perf_counter()
    recipe = replica_recipe(entry.recipe, name.seed)
    if entry.data is None or source.checkpoint:
        state = read_state(source.checkpoint, where=source.where) if source.checkpoint else None
        classes = source.num_classes or (head_classes(state) if state else None) or _later_classes(plan)
        net = entry.builder(num_classes=classes) if classes else entry.builder()
        # the replica seed is kept for the variants' recipes; a checkpoint's weights do not change
        model = _new_wrapper(entry, net, name, recipe)
        if state is not None:
            load_checkpoint(model.net, source.checkpoint, state=state, where=source.where)
            model.info.data = None   # weights from elsewhere: not trained on the registered data
            model.info.meta["weights"] = f"checkpoint {source.checkpoint}"
        else:
            model.info.meta["weights"] = RANDOM_WEIGHTS
    else:
        train = open_train_split(entry.data)
        key = cache.cache_key(entry.name, recipe, train.fingerprint)
        # seed the initial weights too: otherwise they depend on whatever the process drew first
        torch.manual_seed(int(recipe.get("seed", 0)))
        label = ModelName.join(entry.name, seed=name.seed)   # deit_small_patch16_224@s1
        model = _new_wrapper(entry, entry.builder(num_classes=train.num_classes), label, recipe)
        release.cached_or_trained(
            model, label, key, release.release_key(entry.name, recipe, entry.data),
            lambda: fit(model, train, recipe, desc=f"training {label}", progress=progress))
    model.eval()
    model.info.weight_hash = cache.state_hash(model.net.state_dict())
    model.info.build_seconds = time.perf_counter() - start
    return model


def _later_classes(plan: ZooPlan) -> int | None:
    """A base without its own checkpoint takes its class count from its variants' entries
    (a DynamicViT checkpoint for 10 classes needs a 10-class base to be built from)."""
    for source in plan.steps[1:]:
        if source.num_classes:
            return source.num_classes
        if source.checkpoint:
            classes = head_classes(read_state(source.checkpoint, where=source.where))
            if classes:
                return classes
    return None
