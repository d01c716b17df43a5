"""Model names, parsed once: a base plus compression suffixes (no torch).

``deit_small:prune0.7`` is the base ``deit_small`` with the suffix ``prune0.7``; suffixes apply
left to right (``deit_small:prune0.7:int8`` quantizes the pruned model). :class:`ModelName` is a
``str`` (it prints, hashes, compares and serializes as its text), parsed when it is made, so no
module splits a name on ``':'`` itself. What a suffix means is the compression registry's business
(:func:`vitrobust.compress.parse_suffix`); this module only knows the syntax.

A base may carry a replica seed, ``deit_small@s1:prune0.7``: the same model and variants trained
again with every recipe seed shifted (:func:`vitrobust.zoo.replicas.replica_recipe`), so a claim
can be tested across independently trained builds. ``@s0`` is the default zoo itself and is
written without the tag (``ModelName("deit_small@s0") == "deit_small"``).
"""
from __future__ import annotations

import re

from .errors import VitrobustError

_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")   # what the check language reads as a name
_SEED = re.compile(r"(?P<base>.*)@s(?P<seed>0|[1-9][0-9]{0,5})\Z")   # deit_small@s1


class ModelNameError(VitrobustError):
    """A model name that is not ``base[:suffix...]``."""


class ModelName(str):
    """A model name with its parts: ``.base``, ``.suffixes`` (a tuple of suffix texts) and
    ``.seed`` (the replica, 0 for the default zoo)."""

    base: str
    suffixes: tuple
    seed: int

    def __new__(cls, text):
        if isinstance(text, ModelName):
            return text
        if not isinstance(text, str):
            raise ModelNameError(f"a model name must be a string, got {type(text).__name__}")
        parts = text.split(":")
        seeded = _SEED.match(parts[0])
        seed = int(seeded["seed"]) if seeded else 0
        if seeded:
            parts[0] = seeded["base"]
        for part in parts:
            if not _PART.match(part):
                raise ModelNameError(f"bad model name {text!r}: expected base[@sN][:suffix...], each part "
                                     "letters, digits, '_', '.' (starting with a letter or '_')")
        base = parts[0]
        if seed:   # @s0 is the default zoo: one spelling per model
            parts[0] = f"{base}@s{seed}"
        self = super().__new__(cls, ":".join(parts))
        self.base, self.suffixes, self.seed = base, tuple(parts[1:]), seed
        return self

    def __getnewargs__(self):   # pickle (multiprocessing) rebuilds it from its text
        return (str(self),)

    @classmethod
    def join(cls, base: str, suffixes=(), seed: int = 0) -> "ModelName":
        return cls(":".join([f"{base}@s{seed}" if seed else base, *suffixes]))

    def replica(self, seed: int) -> "ModelName":
        """The same name in replica ``seed`` (``deit_small:prune0.7`` -> ``deit_small@s2:prune0.7``)."""
        return ModelName.join(self.base, self.suffixes, seed)

    @property
    def parent(self) -> "ModelName | None":
        """The name without its last suffix (``deit_small:prune0.7`` -> ``deit_small``)."""
        return ModelName.join(self.base, self.suffixes[:-1], self.seed) if self.suffixes else None

    @property
    def last_suffix(self) -> str | None:
        return self.suffixes[-1] if self.suffixes else None

    def with_base(self, base: str) -> "ModelName":
        """The same suffixes on another base (a zoo config's alias points a name elsewhere)."""
        return ModelName.join(base, self.suffixes, self.seed)

    def chain(self) -> list["ModelName"]:
        """Every name on the way: base, base:s1, base:s1:s2, ... (the last is ``self``)."""
        return [ModelName.join(self.base, self.suffixes[:i], self.seed) for i in range(len(self.suffixes) + 1)]
