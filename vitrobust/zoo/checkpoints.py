"""Reading a user's checkpoint safely, into the architecture it was saved from.

Checkpoints are read with ``torch.load(weights_only=True)`` (no pickled code runs): a state
dict, or one under ``model`` / ``state_dict`` / ``model_ema`` (DeiT, DynamicViT and MiniViT
releases store theirs under ``model``). The official layouts this suite builds load as they are:

- DeiT / distilled DeiT (facebookresearch/deit): timm's own keys (``dist_token``, ``head_dist``);
- DynamicViT (raoyongming/DynamicViT): timm's ViT keys plus ``score_predictor.{i}.in_conv`` /
  ``out_conv``, which :mod:`vitrobust.compress.prune` names the same way;
- Mini-DeiT (microsoft/Cream, MiniViT): ``blocks.{g}.block...`` as in
  :mod:`vitrobust.compress.multiplex`. Its release has no class token (it averages the patch
  tokens after the final norm) and image relative position encoding on keys (iRPE,
  ``attn.rpe_k.instances.{r}.lookup_table_weight``): :func:`_adapt_mini` gives our Mini net both
  when the checkpoint has them (:mod:`vitrobust.compress.irpe`). Another iRPE layout is refused:
  the net would run without it and silently compute something else.

Anything else that does not fit is a one-line :class:`CheckpointError` naming file and keys, and,
for a checkpoint a zoo config names, the config file and entry first (``where``): a folder, a
symlink loop, an empty file, a pickle holding code (which ``weights_only`` refuses before running
any of it) or the weights of another architecture.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import VitrobustError
from .ckptfile import checkpoint_file_problem

WRAPPER_KEYS = ("model", "state_dict", "model_ema")
HEAD_KEYS = ("head.weight", "head.fc.weight", "fc.weight", "classifier.weight", "head.l.weight")
_IRPE = (".rpe_k.", ".rpe_q.", ".rpe_v.")


class CheckpointError(VitrobustError):
    """A checkpoint file does not fit the architecture; the message names file and keys."""


class ClassCountError(VitrobustError):
    """A model whose number of outputs differs from the data's number of classes."""


def _named(path, where: str | None) -> str:
    """How an error names the checkpoint: ``zoo.yaml: models.m.checkpoint: /ckpt/m.pth``."""
    path = Path(path).expanduser()
    return f"{where}.checkpoint: {path}" if where else str(path)


def _refusal(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one short phrase."""
    # torch words it "Unsupported global: GLOBAL print was not..." or "unsupported GLOBAL
    # posix.mkdir whose module...", depending on whether the module is blocked outright
    found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(exc), re.IGNORECASE)
    if found:   # the unpickler met a reference to code: nothing of it ran
        return (f"refused by torch.load(weights_only=True): it holds pickled code ({found[1]}), "
                "not only tensors; nothing in it was run")
    first = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())[:160]   # no terminal colours
    return f"not a loadable weights-only checkpoint ({exc.__class__.__name__}: {first})"


def read_state(path: str | Path, *, where: str | None = None) -> dict:
    """The state dict inside ``path`` (unwrapped from ``model`` / ``state_dict`` / ``model_ema``);
    ``where``: the zoo-config file and entry that named it, for the error messages."""
    problem = checkpoint_file_problem(path)
    if problem:
        raise CheckpointError(f"{_named(path, where)}: {problem}")
    try:
        state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as exc:   # torch raises many types for a bad file; each becomes one line
        raise CheckpointError(f"{_named(path, where)}: {_refusal(exc)}") from None
    for wrapper_key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(wrapper_key), dict):
            state = state[wrapper_key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{_named(path, where)}: not a state dict (a mapping of names to tensors)")
    return state


def head_classes(state: dict) -> int | None:
    """The number of outputs of the classifier in ``state`` (None when no known head key)."""
    for key in HEAD_KEYS:
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return None


def load_checkpoint(net: nn.Module, path: str | Path, *, state: dict | None = None,
                    where: str | None = None) -> None:
    """Load the checkpoint ``path`` into ``net`` (official layouts adapted, see module doc);
    ``state``: its contents when the caller already read them (a head's class count);
    ``where``: the zoo-config file and entry that named it, for the error messages."""
    state = read_state(path, where=where) if state is None else state
    _adapt_mini(net, state, path)
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
        raise CheckpointError(f"{_named(path, where)}: does not fit {type(net).__name__}: " + "; ".join(parts))
    net.load_state_dict(state)


def _is_mini(net: nn.Module) -> bool:
    blocks = getattr(net, "blocks", None)
    return blocks is not None and len(blocks) > 0 and hasattr(blocks[0], "repeated_times")


def _adapt_mini(net: nn.Module, state: dict, path) -> None:
    """Give our Mini net the official release's iRPE and pooling where the checkpoint has them."""
    if not _is_mini(net) and not any(".block." in k for k in state):
        return
    irpe = sorted(k for k in state if any(tag in k for tag in _IRPE))
    if irpe and _is_mini(net):
        _install_irpe(net, state, irpe, path)
    if not _is_mini(net) or "cls_token" in state or getattr(net, "cls_token", None) is None:
        return
    pos = state.get("pos_embed")
    if pos is None or pos.shape[1] != net.patch_embed.num_patches:
        return   # let the generic key check name what differs
    # The official Mini-DeiT: no class token, pos_embed over the patches only, final norm, then
    # the mean of the patch tokens (timm's global_pool="avg" with no prefix tokens).
    net.cls_token = None
    net.num_prefix_tokens -= 1
    net.has_class_token = False
    net.global_pool = "avg"
    net.pos_embed = nn.Parameter(torch.zeros_like(pos))


def _install_irpe(net: nn.Module, state: dict, keys: list, path) -> None:
    """Official Mini-DeiT: iRPE on keys (49 buckets, ratio 1.9) per layer, no class token."""
    from ..compress.irpe import KeyRPE, num_buckets
    from ..compress.multiplex import RepeatedModuleList

    where = Path(path).expanduser()
    odd = [k for k in keys if ".rpe_k." not in k or not k.endswith(".lookup_table_weight")]
    tables = [state[k] for k in keys if k not in odd]
    if odd or "cls_token" in state or any(t.shape[0] != 1 or t.shape[-1] != num_buckets(1.9) for t in tables):
        raise CheckpointError(
            f"{where}: iRPE layout other than the Mini-DeiT release's (on keys only, shared-head "
            f"tables of {num_buckets(1.9)} buckets, no class token): {(odd or keys)[0]}; it is refused rather "
            "than run without it")
    for group in net.blocks:
        attn = group.block.attn
        attn.rpe_k = RepeatedModuleList([KeyRPE(attn.head_dim, 1.9) for _ in range(group.repeated_times)])


def check_class_count(model, num_classes: int, data: str = "the data") -> None:
    """Raise :class:`ClassCountError` when ``model``'s outputs differ from ``num_classes``.

    The engine calls it before scoring a model on a data slice: a 1,000-class model scored on
    a 10-class folder otherwise reports accuracy near 0 with no word about why.
    """
    own = int(model.info.num_classes)
    if own != int(num_classes):
        raise ClassCountError(f"model {model.info.name!r} has {own} classes but {data} has {num_classes}: "
                              f"give the checkpoint for {num_classes} classes (or num_classes: in its zoo entry)")
