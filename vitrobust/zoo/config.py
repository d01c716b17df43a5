"""The zoo config: where a run points the specs' model names, without editing a spec.

::

    data: /data/imagenet/val                 # replaces the default data source
    models:
      deit_small: {arch: deit_small_patch16_224, checkpoint: /ckpt/deit_s.pth}

makes every spec's ``deit_small`` (and ``deit_small:int8``, ``deit_small:prune0.7``...) use that
architecture and checkpoint. Read with ``yaml.safe_load``; no torch needed to read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import VitrobustError
from ..names import ModelName

ZOO_KEYS = ("data", "models")
ENTRY_KEYS = ("arch", "checkpoint")


class ZooConfigError(VitrobustError):
    """A zoo config that cannot be read or has unknown keys; the message names file and key."""


@dataclass
class ZooConfig:
    models: dict[str, dict] = field(default_factory=dict)
    data: str | None = None
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> "ZooConfig":
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ZooConfigError(f"{path}: cannot read zoo config ({exc.__class__.__name__})") from None
        if not isinstance(raw, dict):
            raise ZooConfigError(f"{path}: a zoo config is a mapping with keys {', '.join(ZOO_KEYS)}")
        unknown = sorted(set(raw) - set(ZOO_KEYS), key=str)
        if unknown:
            raise ZooConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(ZOO_KEYS)})")
        models = raw.get("models") or {}
        if not isinstance(models, dict):
            raise ZooConfigError(f"{path}: models: must be a mapping name -> {{arch, checkpoint}}")
        for alias, entry in models.items():
            if not isinstance(entry, dict) or "arch" not in entry:
                raise ZooConfigError(f"{path}: models.{alias}: needs an 'arch' (a registered model name)")
            extra = sorted(set(entry) - set(ENTRY_KEYS), key=str)
            if extra:
                raise ZooConfigError(f"{path}: models.{alias}: unknown key {extra[0]!r} "
                                     f"(known: {', '.join(ENTRY_KEYS)})")
        return cls(models=models, data=raw.get("data"), path=str(path))

    def resolve(self, name: str) -> tuple[ModelName, str | None]:
        """(registered name with the same suffixes, checkpoint for its base) for a spec's name."""
        name = ModelName(name)
        entry = self.models.get(name.base)
        if entry is None:
            return name, None
        return name.with_base(entry["arch"]), entry.get("checkpoint")
