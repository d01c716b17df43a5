"""Is the compression in effect? Checks that a compressed model really is what its name says.

Users report pruning that silently did not prune and speed-ups that never appeared; a
robustness verdict about ``deit_small:prune0.7`` means nothing if the model keeps every token.
Each function returns the report's warning dicts ``{"kind", "message"}`` (empty: all is well),
like :mod:`vitrobust.sanity`:

- ``int8`` without any dynamically quantized layer;
- a token-pruned model that keeps every patch token at every stage (measured, not declared);
- a Mini (weight-multiplexed) model whose shared layers do not share storage;
- a size-reducing compression (INT8, pruning, Mini) with no fewer FLOPs and no fewer bytes than
  its base;
- and, for any model, weights that are random (no training data, no checkpoint), or a trained
  variant that scored far below its base when it was built.

:func:`token_keep_ratios` also backs the ``keep_ratio(MODEL)`` measure. Everything here runs
under ``torch.random.fork_rng``: a check never moves the global RNG, so adding it to a session
cannot change what a later seeded-by-default computation draws.
"""
from __future__ import annotations

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn

from .zoo.variant import below_base

KIND = "compression-not-in-effect"
SHRINKING = ("int8", "prune", "mini")    # compressions that promise fewer FLOPs or bytes
PROBE_IMAGES = 2


def _device(model) -> torch.device:
    pinned = getattr(getattr(model, "info", None), "pinned_device", None)
    if pinned:
        return torch.device(pinned)
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _pruning_net(model: nn.Module):
    """The token-pruning net inside ``model`` (also under an INT8 wrapper), or None."""
    return next((m for m in model.modules() if hasattr(m, "prune_locations") and hasattr(m, "blocks")), None)


@torch.inference_mode()
def token_keep_ratios(model, images: torch.Tensor, batch_size: int = 64) -> list[float]:
    """Per pruning stage, the fraction of patch tokens that reach the blocks after it, measured
    with hooks on ``images`` (``[]`` for a model without token pruning)."""
    net = _pruning_net(model)
    if net is None:
        return []
    seen: dict[int, list[int]] = {}
    locations = [0, *net.prune_locations]
    hooks = [net.blocks[loc].register_forward_pre_hook(
        lambda m, args, i=i: seen.setdefault(i, []).append(args[0].shape[1] - net.num_prefix_tokens))
        for i, loc in enumerate(locations)]
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for chunk in images.split(batch_size):
                model(chunk.to(_device(model)))
    finally:
        for h in hooks:
            h.remove()
    if not seen.get(0):
        return []
    # INT8 runs one image per call; every call reports its own counts, so average them
    start = sum(seen[0]) / len(seen[0])
    return [sum(seen[i]) / len(seen[i]) / start for i in range(1, len(locations)) if seen.get(i)]


def keep_ratio(model, images: torch.Tensor) -> float:
    """Mean over pruning stages of the measured kept fraction (1.0 for an unpruned model); the
    per-stage fractions of a pruned model go to ``model.info.meta["keep_ratio_per_stage"]`` for
    the report (an unpruned model's metadata is left as it is)."""
    ratios = token_keep_ratios(model, images)
    if ratios:
        model.info.meta["keep_ratio_per_stage"] = [round(r, 4) for r in ratios]
    return sum(ratios) / len(ratios) if ratios else 1.0


def _is_int8_linear(module: nn.Module) -> bool:
    return isinstance(module, nnqd.Linear)   # the exact batched subclass (int8_exact) too


def _layer_qkv(net: nn.Module) -> list[torch.Tensor]:
    """The qkv weight each transformer layer computes with (a shared block serves several)."""
    out = []
    for block in getattr(net, "blocks", []):
        repeats = getattr(block, "repeated_times", None)
        inner = block.block if repeats else block
        qkv = getattr(getattr(inner, "attn", None), "qkv", None)
        if qkv is not None and isinstance(getattr(qkv, "weight", None), torch.Tensor):
            out += [qkv.weight] * (repeats or 1)
    return out


def int8_warnings(model) -> list[dict]:
    if any(_is_int8_linear(m) for m in model.modules()):
        return []
    return [{"kind": KIND, "message": f"{model.info.name}: INT8 model without any quantized layer: "
                                      "it computes in FP32, so its size, speed and robustness are its base's"}]


def prune_warnings(model) -> list[dict]:
    size = model.info.input_size
    probe = torch.rand(PROBE_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
    ratios = token_keep_ratios(model, probe)
    if ratios and min(ratios) < 1.0:
        return []
    return [{"kind": KIND, "message": f"{model.info.name}: pruned model keeps every patch token at every stage "
                                      f"(measured keep ratios {[round(r, 3) for r in ratios] or 'none'}): it is not pruned"}]


def mini_warnings(model) -> list[dict]:
    layers = _layer_qkv(model.net)
    distinct = len({w.untyped_storage().data_ptr() for w in layers})
    if layers and distinct < len(layers):
        return []
    return [{"kind": KIND, "message": f"{model.info.name}: Mini model whose {len(layers)} layers use {distinct} "
                                      "separate attention weights: its shared layers do not share storage"}]


def shrink_warnings(model, base) -> list[dict]:
    from . import metrics

    flops, base_flops = metrics.gflops(model), metrics.gflops(base)
    size, base_size = metrics.size_mb(model), metrics.size_mb(base)
    if flops < base_flops * 0.999 or size < base_size * 0.999:
        return []
    return [{"kind": KIND, "message": f"{model.info.name}: no fewer FLOPs ({flops:.4g} vs {base_flops:.4g} G) "
                                      f"and no fewer bytes ({size:.3g} vs {base_size:.3g} MB) than its base {base.info.name}"}]


def weights_warnings(model) -> list[dict]:
    if model.info.meta.get("weights") != "random weights":
        return []
    return [{"kind": "random-weights", "message": f"{model.info.name}: random weights (no training data, no "
                                                  "checkpoint): its accuracy and attack success mean nothing"}]


def accuracy_warnings(model) -> list[dict]:
    """A trained variant far below its base (scored when it was built: ``zoo.variant``)."""
    if not below_base(model.info.meta):
        return []
    acc, base_acc = model.info.meta["val_acc"], model.info.meta["base_val_acc"]
    return [{"kind": "variant-below-base", "message": f"{model.info.name}: {acc:.3f} on the val split against "
                                                      f"{base_acc:.3f} for its base: its verdicts describe a "
                                                      "degraded model, not the compression method"}]


def in_effect_warnings(model, base=None) -> list[dict]:
    """Every check that applies to ``model`` (its compression is ``meta["compression"]``);
    ``base``: the model it was compressed from (its parent), for the FLOPs/bytes comparison."""
    kind = model.info.meta.get("compression")
    out = weights_warnings(model) + accuracy_warnings(model)
    with torch.random.fork_rng(devices=[]):
        if kind == "int8":
            out += int8_warnings(model)
        elif kind == "prune":
            out += prune_warnings(model)
        elif kind == "mini":
            out += mini_warnings(model)
        if kind in SHRINKING and base is not None:
            out += shrink_warnings(model, base)
    return out
