"""Resolve a model name to a ready :class:`ModelWrapper`: build, train on first use, cache.

Names are a registered base plus optional compression suffixes: ``deit_small``,
``deit_small:int8``, ``deit_small_patch16_224:prune0.5`` (parsed by
:class:`vitrobust.names.ModelName`). Suffixes are handled by ``vitrobust.compress``, one step of
``ModelName.chain()`` at a time; this module only builds base models and reads checkpoints.
Compressed variants are built with :mod:`.variant`.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..data import load_dataset
from ..errors import VitrobustError
from ..names import ModelName
from . import cache
from .registry import ModelEntry, model_entry
from .train import fit
from .wrapper import ModelInfo, ModelWrapper

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_LOADED: dict[tuple, ModelWrapper] = {}


class CheckpointError(VitrobustError):
    """A checkpoint file does not fit the architecture; the message names file and keys."""


def load_model(name: str, *, checkpoint: str | None = None, progress: bool = True) -> ModelWrapper:
    """The model called ``name``, built (and trained or loaded from cache) once per process.

    ``checkpoint`` holds weights for the base; each suffix along ``ModelName(name).chain()`` is
    then applied to the model before it (``a:prune0.7:int8`` quantizes ``a:prune0.7``).
    """
    name = ModelName(name)
    key = (str(name), checkpoint)
    if key not in _LOADED:
        model = _load_base(model_entry(name.base), checkpoint, progress)
        for step in name.chain()[1:]:
            from ..compress import apply_compression  # compress builds on the zoo, not vice versa
            model = apply_compression(model, step.last_suffix, str(step), progress=progress)
        _LOADED[key] = model
    return _LOADED[key]


def _new_wrapper(entry: ModelEntry, net, **info) -> ModelWrapper:
    mean_std = (IMAGENET_MEAN, IMAGENET_STD) if entry.data is None else ((0.5,) * 3, (0.5,) * 3)
    num_classes = getattr(net, "num_classes", info.pop("num_classes", 10))
    meta = ModelInfo(entry.name, family=entry.family, data=entry.data,
                     input_size=entry.input_size, num_classes=num_classes,
                     recipe=dict(entry.recipe), **info)
    return ModelWrapper(net, meta, *mean_std)


def _load_base(entry: ModelEntry, checkpoint: str | None, progress: bool) -> ModelWrapper:
    start = time.perf_counter()
    if entry.data is None or checkpoint:
        model = _new_wrapper(entry, entry.builder())
        if checkpoint:
            load_checkpoint(model.net, checkpoint)
    else:
        train = load_dataset(entry.data, "train")
        key = cache.cache_key(entry.name, entry.recipe, train.fingerprint)
        # seed the initial weights too: otherwise they depend on whatever the process drew first
        torch.manual_seed(int(entry.recipe.get("seed", 0)))
        model = _new_wrapper(entry, entry.builder(num_classes=train.num_classes))
        state = cache.load_weights(entry.name, key)
        if state is not None:
            model.net.load_state_dict(state)
        else:
            fit(model, train, entry.recipe, desc=f"training {entry.name}", progress=progress)
            cache.save_weights(entry.name, key, model.net.state_dict())
    model.eval()
    model.info.weight_hash = cache.state_hash(model.net.state_dict())
    model.info.build_seconds = time.perf_counter() - start
    return model


def load_checkpoint(net: torch.nn.Module, path: str | Path) -> None:
    """Load a local checkpoint (a state dict, or one under 'model' / 'state_dict') safely."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({exc.__class__.__name__})") from None
    for wrapper_key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper_key), dict):
            state = state[wrapper_key]
            break
    own = net.state_dict()
    foreign = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    wrong = sorted(k for k in set(state) & set(own) if tuple(state[k].shape) != tuple(own[k].shape))
    if foreign or missing or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch for {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                         + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
        if foreign:
            parts.append(f"unexpected keys {foreign[:3]}" + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else ""))
        if missing:
            parts.append(f"missing keys {missing[:3]}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
        raise CheckpointError(f"{path}: does not fit {type(net).__name__}: " + "; ".join(parts))
    net.load_state_dict(state)
