"""Model names, parsed once: a base plus compression suffixes (no torch).

``deit_small:prune0.7`` is the base ``deit_small`` with the suffix ``prune0.7``; suffixes apply
left to right (``deit_small:prune0.7:int8`` quantizes the pruned model). :class:`ModelName` is a
``str`` (it prints, hashes, compares and serializes as its text), parsed when it is made, so no
module splits a name on ``':'`` itself. What a suffix means is the compression registry's business
(:func:`vitrobust.compress.parse_suffix`); this module only knows the syntax.
"""
from __future__ import annotations

import re

from .errors import VitrobustError

_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")   # what the check language reads as a name


class ModelNameError(VitrobustError):
    """A model name that is not ``base[:suffix...]``."""


class ModelName(str):
    """A model name with its parts: ``.base`` and ``.suffixes`` (a tuple of suffix texts)."""

    base: str
    suffixes: tuple

    def __new__(cls, text):
        if isinstance(text, ModelName):
            return text
        if not isinstance(text, str):
            raise ModelNameError(f"a model name must be a string, got {type(text).__name__}")
        parts = text.split(":")
        for part in parts:
            if not _PART.match(part):
                raise ModelNameError(f"bad model name {text!r}: expected base[:suffix...], each part "
                                     "letters, digits, '_', '.' (starting with a letter or '_')")
        self = super().__new__(cls, text)
        self.base, self.suffixes = parts[0], tuple(parts[1:])
        return self

    def __getnewargs__(self):   # pickle (multiprocessing) rebuilds it from its text
        return (str(self),)

    @classmethod
    def join(cls, base: str, suffixes=()) -> "ModelName":
        return cls(":".join([base, *suffixes]))

    @property
    def parent(self) -> "ModelName | None":
        """The name without its last suffix (``deit_small:prune0.7`` -> ``deit_small``)."""
        return ModelName.join(self.base, self.suffixes[:-1]) if self.suffixes else None

    @property
    def last_suffix(self) -> str | None:
        return self.suffixes[-1] if self.suffixes else None

    def with_base(self, base: str) -> "ModelName":
        """The same suffixes on another base (a zoo config's alias points a name elsewhere)."""
        return ModelName.join(base, self.suffixes)

    def chain(self) -> list["ModelName"]:
        """Every name on the way: base, base:s1, base:s1:s2, ... (the last is ``self``)."""
        return [ModelName.join(self.base, self.suffixes[:i]) for i in range(len(self.suffixes) + 1)]
