"""The zoo config: where a run points the specs' model names, without editing a spec.

::

    data: /data/imagenet                      # replaces the default data source
    models:
      deit_small: {arch: deit_small_patch16_224, checkpoint: /ckpt/deit_s.pth}
      deit_small:prune0.7: {checkpoint: /ckpt/dynamicvit_deit_s_0.7.pth}
      deit_small:mini: {train: {epochs: 3}}
      deit_small:distilled: {arch: deit_small_distilled_patch16_224, checkpoint: /ckpt/deit_s_d.pth}
      swin_tiny: {arch: "timm:swin_tiny_patch4_window7_224", checkpoint: /ckpt/swin_t.pth}

Any model name may have an entry, suffixed ones included. A base entry says which architecture
the name is (``arch``: a registered name or ``timm:<name>``) and its weights; a variant entry
gives the variant's own ``checkpoint`` (loaded instead of training it) or ``train: {epochs: N}``
(fine-tune it on the data's ``train/`` split, cached like the default zoo). ``num_classes``
sets the head's size when no checkpoint says it. Every other key is an error naming file and
key.

The config is untrusted input like a spec: it is read with the specs' bounded safe loader
(:mod:`vitrobust.yamllines`: ``yaml.SafeLoader`` semantics, duplicate keys refused, size, depth
and alias expansion bounded), and everything that can be checked without reading weights is
checked when it is loaded, before any spec is collected: every ``arch`` is a registered model or a
timm architecture, and every ``checkpoint`` is a readable, non-empty regular file (not a folder,
a symlink loop or a pipe). What needs the weights (a checkpoint of another architecture, a pickle
that ``torch.load(weights_only=True)`` refuses) is refused when the model is built, and that
error names this file and the entry's key too (:attr:`ModelSource.where`).

:class:`ZooConfigError` is also a ``pytest.UsageError``: raised while pytest sets up a session it
is printed as one ``ERROR:`` line (exit 4), not as an internal error with a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..errors import VitrobustError
from ..names import ModelName, ModelNameError
from ..yamllines import read_yaml_file
from .ckptfile import checkpoint_file_problem
from .plan import ModelSource, ZooPlan

ZOO_KEYS = ("data", "models")
ENTRY_KEYS = ("arch", "checkpoint", "num_classes", "train")
TRAIN_KEYS = ("epochs",)
TIMM_PREFIX = "timm:"


class ZooConfigError(VitrobustError, pytest.UsageError):
    """A zoo config that cannot be read or has unknown keys; the message names file and key."""


@dataclass
class ZooConfig:
    models: dict[str, dict] = field(default_factory=dict)
    data: str | None = None
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> "ZooConfig":
        path = Path(path)
        raw = read_yaml_file(path, ZooConfigError, "zoo config")
        raw = {} if raw is None else raw
        _known_keys(raw, ZOO_KEYS, str(path))
        models = raw.get("models") or {}
        if not isinstance(models, dict):
            raise ZooConfigError(f"{path}: models: must be a mapping name -> {{{', '.join(ENTRY_KEYS)}}}")
        data = raw.get("data")
        if data is not None and not (isinstance(data, str) and data.strip()):
            raise ZooConfigError(f"{path}: data: must be a data source (an ImageFolder path), got {type(data).__name__}")
        for alias, entry in models.items():
            _check_entry(path, alias, entry)
        _check_arches(path, models)
        return cls(models={str(k): dict(v) for k, v in models.items()}, data=data, path=str(path))

    def resolve(self, name: str) -> tuple[ModelName, ZooPlan | None]:
        """(name to build, plan for ``load_model(name, checkpoint=plan)``) for a spec's name.

        Without any entry along the name's chain: ``(name, None)``, the registered model as is.
        With a registered ``arch`` the name is rebased on it (``deit_small:int8`` ->
        ``deit_small_patch16_224:int8``), so the built model says what it is; a ``timm:``
        architecture keeps the spec's name (the plan carries the architecture).
        """
        name = ModelName(name)
        # a seed replica (deit_small@s1) follows the entries of the name it replicates
        keys = [str(step.replica(0)) for step in name.chain()]
        entries = [self.models.get(key) or {} for key in keys]
        if not any(entries):
            return name, None
        arch = entries[0].get("arch") or name.base
        sources = [_source(e, f"{self.path or 'zoo config'}: models.{key}") for e, key in zip(entries, keys)]
        sources[0] = ModelSource(arch, *(getattr(sources[0], f) for f in ("checkpoint", "num_classes", "train_epochs", "where")))
        resolved = name if arch.startswith(TIMM_PREFIX) else name.with_base(arch)
        return resolved, ZooPlan(tuple(sources), data=self.data,
                                 names=tuple(str(step) for step in name.chain()))


def _source(entry: dict, where: str) -> ModelSource:
    train = entry.get("train") or {}
    return ModelSource(entry.get("arch"), entry.get("checkpoint"), entry.get("num_classes"),
                       train.get("epochs"), where if entry.get("checkpoint") else None)


def _known_keys(mapping, known: tuple, where: str) -> None:
    """``mapping`` is a dict whose keys are all in ``known``, or a one-line error at ``where``."""
    if not isinstance(mapping, dict):
        raise ZooConfigError(f"{where}: must be a mapping with keys {', '.join(known)}")
    extra = sorted(set(mapping) - set(known), key=str)
    if extra:
        raise ZooConfigError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(known)})")


def _check_entry(path: Path, alias, entry) -> None:
    where = f"{path}: models.{alias}"
    try:
        name = ModelName(str(alias))
    except ModelNameError as exc:
        raise ZooConfigError(f"{where}: {exc}") from None
    _known_keys(entry, ENTRY_KEYS, where)
    for key in ("arch", "checkpoint"):
        if key in entry and not (isinstance(entry[key], str) and entry[key]):
            raise ZooConfigError(f"{where}.{key}: must be a non-empty string")
    arch = entry.get("arch")
    if arch is not None and not arch.startswith(TIMM_PREFIX):
        try:
            ModelName(arch)
        except ModelNameError:
            raise ZooConfigError(f"{where}.arch: {arch!r} is neither a registered model name nor timm:<name>") from None
    if name.suffixes and arch is not None and name.last_suffix != "distilled":
        raise ZooConfigError(f"{where}.arch: a variant's architecture is built from its base; arch: on a "
                             "suffixed name is only for :distilled (e.g. deit_small_distilled_patch16_224)")
    classes = entry.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise ZooConfigError(f"{where}.num_classes: must be a positive integer, got {classes!r}")
    if "train" in entry:
        _check_train(where, name, entry)
    if "checkpoint" in entry:
        problem = checkpoint_file_problem(entry["checkpoint"])
        if problem:
            raise ZooConfigError(f"{where}.checkpoint: {entry['checkpoint']}: {problem}")


def _check_arches(path: Path, models: dict) -> None:
    """Every architecture the entries name exists: a base's ``arch`` (or its own name, without
    one) is a registered model or ``timm:<name>``; a ``:distilled`` entry's is a timm name.
    Checked after every entry's keys, so a typo'd key is reported before an unknown name."""
    import timm

    from .timm_arch import arch_entry

    for alias, entry in models.items():
        name = ModelName(str(alias))
        if name.suffixes and "arch" in entry:        # :distilled (see _check_entry)
            arch = entry["arch"].removeprefix(TIMM_PREFIX)
            if not timm.is_model(arch):
                raise ZooConfigError(f"{path}: models.{alias}.arch: timm has no architecture {arch!r}")
            continue
        if name.suffixes:
            if name.base in models:
                continue                              # its base's entry is checked on its own
            key, arch, hint = f"models.{alias}", name.base, " (give its base an entry with arch:)"
        elif "arch" in entry:
            key, arch, hint = f"models.{alias}.arch", entry["arch"], ""
        else:
            key, arch, hint = f"models.{alias}", name.base, " (give it arch: a registered model or timm:<name>)"
        try:
            arch_entry(arch)
        except VitrobustError as exc:
            raise ZooConfigError(f"{path}: {key}: {exc}{hint}") from None


def _check_train(where: str, name: ModelName, entry: dict) -> None:
    train = entry["train"]
    if not name.suffixes:
        raise ZooConfigError(f"{where}.train: only a compressed variant (a suffixed name) is fine-tuned here; "
                             "give a base model its checkpoint")
    if not isinstance(train, dict) or not train:
        raise ZooConfigError(f"{where}.train: must be a mapping like {{epochs: 3}}")
    _known_keys(train, TRAIN_KEYS, f"{where}.train")
    epochs = train.get("epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ZooConfigError(f"{where}.train.epochs: must be a positive integer, got {epochs!r}")
    if "checkpoint" in entry:
        raise ZooConfigError(f"{where}: give checkpoint or train, not both (a checkpoint is loaded, not trained)")
