"""What a zoo config says about each step of a model name, and the step being built now.

A spec's ``deit_small:prune0.7:int8`` is built in three steps (``ModelName.chain()``): the base,
then one compression per suffix. A zoo config may say something about any of them: the base's
architecture and checkpoint, a variant's own checkpoint (an official DynamicViT release) or a
fine-tuning budget (``train: {epochs: N}``). :class:`ZooPlan` holds one :class:`ModelSource`
per step; it is frozen and hashable, so ``load_model`` caches by it.

Compressions do not take the plan as an argument (their ``apply(base, name=..., **params)``
signature is the extension contract); :func:`vitrobust.zoo.variant.trained_variant`, which
every trained compression goes through, reads the step being built from :func:`current_step`
instead. That keeps "checkpoint instead of training" in one place for every compression.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSource:
    """One zoo-config entry: all fields optional; an empty source changes nothing."""

    arch: str | None = None            # registered name, or "timm:<name>"
    checkpoint: str | None = None
    num_classes: int | None = None
    train_epochs: int | None = None    # train: {epochs: N}: fine-tune the variant on data's train/
    # where the checkpoint was named ("zoo.yaml: models.deit_small"), so an error reading it names
    # the file and the key; only for messages, so not compared (two configs, one model)
    where: str | None = field(default=None, compare=False)

    @property
    def empty(self) -> bool:
        return self == ModelSource()


@dataclass(frozen=True)
class ZooPlan:
    """One :class:`ModelSource` per step of the name's chain, and the data to fine-tune on."""

    steps: tuple = ()
    data: str | None = None
    # each step as the spec and the zoo config name it (deit_small:prune0.7); only for messages,
    # so not compared: two aliases of the same sources share one built model
    names: tuple = field(default=(), compare=False)

    def step(self, i: int) -> ModelSource:
        return self.steps[i] if i < len(self.steps) else ModelSource()

    def entry_name(self, i: int) -> str | None:
        """The zoo-config key of step ``i``: what an error tells the user to add."""
        return self.names[i] if i < len(self.names) else None


@dataclass
class BuildStep:
    """The variant step being built: its source, the data for ``train:``, and whether
    untrained (random) weights are acceptable (``vitrobust measure``: weights do not matter).
    ``used`` is set by whoever consumed the source's checkpoint or ``train:``, so a source a
    compression never looked at (``:int8`` has nothing to train) is an error, not ignored."""

    source: ModelSource = ModelSource()
    data: str | None = None
    random_weights: bool = False
    used: bool = False
    entry: str | None = None   # the step's zoo-config key, when a zoo config named the model


_CURRENT: ContextVar = ContextVar("vitrobust_build_step", default=None)


def current_step() -> BuildStep:
    """The step :func:`building` set; outside any build, the default (train as registered)."""
    return _CURRENT.get() or BuildStep()


@contextmanager
def building(step: BuildStep):
    token = _CURRENT.set(step)
    try:
        yield step
    finally:
        _CURRENT.reset(token)
