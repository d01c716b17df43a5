"""Any timm architecture by name, ``timm:<name>`` in a zoo config's ``arch``.

Built with ``pretrained=False``: nothing is ever downloaded, the weights come from the entry's
checkpoint (or stay random for ``vitrobust measure``). The input size and normalization are the
architecture's own (timm's pretrained config), not the ImageNet defaults the registered
full-size DeiTs use, because e.g. augreg ViTs expect mean/std 0.5.
"""
from __future__ import annotations

from ..errors import VitrobustError
from .registry import ModelEntry, model_entry

PREFIX = "timm:"


class ArchError(VitrobustError):
    """An ``arch`` that is neither a registered model nor a timm architecture."""


def arch_entry(arch: str) -> ModelEntry:
    """The :class:`ModelEntry` for ``arch``: a registered name, or ``timm:<name>``."""
    if not arch.startswith(PREFIX):
        return model_entry(arch)
    import timm

    name = arch[len(PREFIX):]
    if not timm.is_model(name):
        raise ArchError(f"arch {arch!r}: timm has no architecture {name!r} (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(name)
    size = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224
    mean_std = (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else None

    def builder(**kwargs):
        return timm.create_model(name, pretrained=False, **kwargs)

    family = "vit" if name.startswith(("vit_", "deit")) else "timm"
    return ModelEntry(name, builder, family, None, {}, size, f"timm architecture {name}", mean_std)

