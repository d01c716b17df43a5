"""The planner: the work a selection of checks needs, as units, without doing any of it.

A unit is one piece of work the engine caches, named by the cache key the engine itself uses,
so a unit is done exactly when its cache entry exists:

- ``model``: a model's trained weights, ``models/<name>-<key>`` in the zoo cache (the key holds
  recipe, training data and, for a variant, the base's weight hash, so a variant's key is known
  only once its base is built: until then it is *pending*, after its base). A model with no
  weights of its own to train (``:int8``, a checkpoint from a zoo config) is ``built/<name>``,
  always done;
- ``clean``: a model's predictions on one shard of a clean slice, ``predictions/<key>``
  (:mod:`vitrobust.predcache`);
- ``adversarial``: one shard of an adversarial set per (source weights, threat model, strategy,
  data shard), ``adversarial/<key>`` with the shard's key from
  :meth:`vitrobust.adversarial.AdversarialSets.plan`, the one the engine looks up, *and* the
  predictions on it of every target model its checks score on it (``targets``). A worker that
  makes the shard scores it, so the images never travel; the unit is done when the shard and
  every target's predictions are cached.

Shards are the engine's own (``$VITROBUST_SHARD_IMAGES`` images each; a slice up to that size
is one shard, ``1/1``), and each shard's seed is fixed by the attack's seed and the shard, so a
distributed run makes the images a serial run makes.

Units are deduplicated across specs and checks (two aliases for one attack config are one set).
Each has an estimated cost in seconds on the machine the costs were measured on
(:mod:`vitrobust.unit_costs`). Planning builds the models that are cached (to learn their weight
hashes) and loads the data slices (their fingerprints are key material); it trains nothing and
attacks nothing (:func:`vitrobust.zoo.cache.probing`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from . import unit_costs
from .adversarial import AttackConfig
from .dataslice import DataSlice
from .expr import measures as measures_of
from .measures import measure_kind
from .names import ModelName
from .replicate import replica_node
from .zoo.cache import WouldTrain, entry_name, probing

KINDS = ("model", "clean", "adversarial")


@dataclass
class Unit:
    """One piece of cached work (see the module docstring)."""

    kind: str
    model: str                    # the model built, scored, or attacked (the source)
    key: str = ""                 # its cache entry; "" while pending or never cached
    attack: str = ""              # adversarial: "<alias>: <name> <params>"
    data: str = ""                # the data slice key
    shard: str = "1/1"            # "i/k": the i-th of the k shards of its data slice
    cached: bool = False
    cost: float | None = None     # estimated seconds (unit_costs); None: no estimate
    images: int | None = None
    targets: list = field(default_factory=list)   # adversarial: models scored on the set
    needs: list = field(default_factory=list)     # model units to build first
    specs: list = field(default_factory=list)     # spec ids that need this unit
    note: str = ""
    # how to run it (not printed): the source name, attack config and data slice
    config: AttackConfig | None = field(default=None, repr=False, compare=False)
    slice: DataSlice | None = field(default=None, repr=False, compare=False)
    index: int = field(default=0, repr=False, compare=False)   # the shard's position (0-based)

    @property
    def pending(self) -> bool:
        """Its key is not known yet (a model it needs is not built)."""
        return not self.key

    @property
    def todo(self) -> bool:
        return self.cached is False

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("config"), out.pop("slice")
        return out


@dataclass
class Plan:
    units: list[Unit]
    checks: int = 0

    def of(self, kind: str) -> list[Unit]:
        return [u for u in self.units if u.kind == kind]

    def todo(self, kind: str | None = None) -> list[Unit]:
        return [u for u in self.units if u.todo and (kind is None or u.kind == kind)]

    def totals(self) -> dict:
        """Per kind: units, cached, to do, and the estimated seconds of what is to do."""
        out = {}
        for kind in KINDS:
            units = self.of(kind)
            todo = [u for u in units if u.cached is not True]
            out[kind] = {"units": len(units), "cached": sum(u.cached is True for u in units),
                         "todo": len(todo), "cost": sum(u.cost or 0.0 for u in todo),
                         "unestimated": sum(u.cost is None for u in todo)}
        out["checks"] = self.checks
        out["cost"] = sum(out[k]["cost"] for k in KINDS)
        return out

    def to_dict(self) -> dict:
        return {"units": [u.to_dict() for u in self.units], "totals": self.totals()}


def plan(engine, selected, previous: Plan | None = None) -> Plan:
    """The units the selected checks (``selection.Selected``: spec + check) need, with the
    engine that will decide them (its zoo, data, device, precision, image cap and seeds).

    A model is probed by building it (from the cache only), and a process builds a model once
    (``zoo.load_model`` and the engine keep it), so planning again with the same engine passes
    the ``previous`` plan: the models it found cached keep their keys."""
    planner = _Planner(engine, previous)
    for item in selected:
        planner.add_check(item.spec, item.check)
    planner.resolve()
    return Plan(planner.units(), checks=len(selected))


class _Planner:
    def __init__(self, engine, previous: Plan | None = None):
        self.engine = engine
        self.known = {u.model: u for u in (previous.of("model") if previous else []) if u.cached is True}
        self.models: dict[str, Unit] = {}
        self.clean: dict[tuple, Unit] = {}
        self.sets: dict[tuple, Unit] = {}
        self.clean_units: list[Unit] = []   # per shard, once resolved
        self.set_units: list[Unit] = []

    # -- what the checks name -----------------------------------------------------------------
    def add_check(self, spec, check) -> None:
        data_slice = self.engine.data_slice(spec.data)
        nodes = [check.node] if self.engine.seeds == 1 else \
            [replica_node(check.node, s) for s in range(self.engine.seeds)]
        for node in nodes:
            for m in measures_of(node):
                for name in filter(None, (m.model, m.source)):
                    self._model(ModelName(name), spec.id)
                if measure_kind(m.kind).rate:   # every rate is over the model's clean predictions
                    self._clean(ModelName(m.model), data_slice, spec.id)
                if m.attack is not None:
                    for alias in m.attack.names:
                        config = AttackConfig.from_spec(spec.attacks[alias])
                        self._set(ModelName(m.source or m.model), config, alias, data_slice,
                                  ModelName(m.model), spec.id)

    def _model(self, name: ModelName, spec_id: str) -> Unit:
        for step in name.chain():   # a variant's base is built (trained) first
            if step not in self.models:
                parent = self.models.get(step.parent) if step.parent else None
                self.models[step] = Unit("model", str(step), shard="", needs=[parent.model] if parent else [])
        unit = self.models[name]
        _add(unit.specs, spec_id)
        return unit

    def _clean(self, name: ModelName, data_slice: DataSlice, spec_id: str) -> None:
        unit = self.clean.setdefault((name, data_slice.key), Unit(
            "clean", str(name), data=data_slice.key, needs=[str(name)], slice=data_slice))
        _add(unit.specs, spec_id)

    def _set(self, source: ModelName, config: AttackConfig, alias: str, data_slice: DataSlice,
             target: ModelName, spec_id: str) -> None:
        key = (source, config, data_slice)
        if key not in self.sets:
            self.sets[key] = Unit("adversarial", str(source), attack=f"{alias}: {_describe(config)}",
                                  data=data_slice.key, needs=[str(source)], config=config, slice=data_slice)
        unit = self.sets[key]
        _alias(unit, alias)
        _add(unit.targets, str(target))
        _add(unit.specs, spec_id)

    # -- what is cached -----------------------------------------------------------------------
    def resolve(self) -> None:
        """Keys, cached flags and costs: models first (a set's key needs its source's weights)."""
        for unit in self.models.values():
            self._resolve_model(unit)
        for unit in self.clean.values():
            self.clean_units += self._clean_shards(unit)
        merged: dict[str, Unit] = {}
        for unit in list(self.sets.values()):
            self._resolve_set(unit)
            if unit.key and unit.key in merged:   # one config under two aliases: one set
                first = merged[unit.key]
                for t in unit.targets:
                    _add(first.targets, t)
                for s in unit.specs:
                    _add(first.specs, s)
                for alias in unit.attack.split(":")[0].split(", "):
                    _alias(first, alias)
                unit.kind = "duplicate"
            elif unit.key:
                merged[unit.key] = unit
        for unit in self.sets.values():
            if unit.kind == "adversarial":
                self.set_units += self._set_shards(unit)

    def _resolve_model(self, unit: Unit) -> None:
        if unit.model in self.known:
            known = self.known[unit.model]
            unit.key, unit.note, unit.cached, unit.cost = known.key, known.note, True, 0.0
            return
        parent = self.models.get(unit.needs[0]) if unit.needs else None
        if parent is not None and parent.cached is not True:
            unit.note = f"key known once {parent.model} is built"
            unit.cost = unit_costs.training(unit.model)
            return
        arch, _ = self.engine.zoo.resolve(ModelName(unit.model))
        try:
            with probing() as lookups:
                self.engine.model(unit.model)
        except WouldTrain as exc:
            unit.key = f"models/{entry_name(exc.name, exc.key)}"
            unit.cost = unit_costs.training(unit.model)
            return
        own = [(n, k, found) for n, k, found in lookups if n == str(arch)]
        if own:
            name, key, found = own[-1]
            unit.key = f"models/{entry_name(name, key)}"
            unit.note = "" if found else "shipped with vitrobust (zoo/release)"
        else:
            unit.key = f"built/{unit.model}"
            unit.note = "no weights of its own to train (derived from its parent, or a checkpoint)"
        unit.cached, unit.cost = True, 0.0

    def _clean_shards(self, unit: Unit) -> list[Unit]:
        """The clean unit of a (model, slice), one per shard (one, pending, until it is built)."""
        per_image = unit_costs.forward(unit.model)
        try:
            with probing():
                shards = self.engine.clean_shards(unit.model, unit.slice)
        except WouldTrain as exc:
            unit.images, unit.note = unit.slice.limit, f"key known once {exc.name} is built"
            unit.cost = _times(unit.images, per_image)
            return [unit]
        predictions = self.engine.predictions
        return [replace(unit, key=f"predictions/{predictions.key(material)}", shard=f"{i + 1}/{len(shards)}",
                        index=i, images=stop - start, cost=_times(stop - start, per_image),
                        cached=predictions.has(material))
                for i, (start, stop, inputs) in enumerate(shards)
                for material in [self.engine.prediction_material(unit.model, inputs)]]

    def _resolve_set(self, unit: Unit) -> None:
        """The whole set's key (to merge aliases of one configuration) and its cost."""
        unit.images = self._images(unit.model, unit.slice)
        unit.needs = sorted(set(unit.needs) | {t for t in unit.targets})
        try:
            with probing():
                set_plan = self.engine.adversarial.plan(ModelName(unit.model), unit.config, unit.slice)
        except WouldTrain as exc:
            unit.note = f"key known once {exc.name} is built"
            unit.cost = self._set_cost(unit, None)
            return
        unit.key = f"adversarial/{set_plan.key}"
        unit.cost = self._set_cost(unit, set_plan.strategy)

    def _set_shards(self, unit: Unit) -> list[Unit]:
        """A set's units, one per shard: the shard and its targets' predictions on it."""
        if not unit.key:
            return [unit]
        engine, source = self.engine, ModelName(unit.model)
        set_plan = engine.adversarial.plan(source, unit.config, unit.slice)
        out = []
        for i, shard in enumerate(set_plan.shards):
            materials = [engine.prediction_material(t, {"adversarial": shard.key}) for t in unit.targets]
            cached = engine.adv_cache.has(shard.material) and all(engine.predictions.has(m) for m in materials)
            share = (shard.stop - shard.start) / max(unit.images or 1, 1)
            out.append(replace(unit, key=f"adversarial/{shard.key}", shard=f"{i + 1}/{len(set_plan.shards)}",
                               index=i, images=shard.stop - shard.start, cached=cached,
                               cost=None if unit.cost is None else unit.cost * share,
                               targets=list(unit.targets), specs=list(unit.specs), needs=list(unit.needs)))
        return out

    def _set_cost(self, unit: Unit, strategy: str | None) -> float | None:
        fit = self._images(unit.model, unit.slice.fit_slice()) if unit.config.build().universal else None
        return unit_costs.attack(unit.config, unit.model, strategy or "white-box", unit.images, fit)

    def _images(self, name: str, data_slice: DataSlice) -> int | None:
        """Images of the slice (loaded: the planner needs its fingerprint anyway), or its limit
        while the model that fixes the image size is not built."""
        try:
            with probing():   # built already when it is cached (memoized): nothing is trained
                model = self.engine.model(name)
        except WouldTrain:
            return data_slice.limit
        return len(self.engine.data(data_slice, model.info.input_size))

    def units(self) -> list[Unit]:
        return [*self.models.values(), *self.clean_units, *self.set_units]


def _add(items: list, value) -> None:
    if value not in items:
        items.append(value)


def _times(n: int | None, seconds: float | None) -> float | None:
    return None if n is None or seconds is None else n * seconds


def _alias(unit: Unit, alias: str) -> None:
    """Name one more spec alias of the set (``fgsm, fgsm_again: fgsm eps=2/255``)."""
    names, _, rest = unit.attack.partition(": ")
    if alias not in names.split(", "):
        unit.attack = f"{names}, {alias}: {rest}"


def _describe(config: AttackConfig) -> str:
    params = " ".join(f"{k}={_short(v)}" for k, v in config.params)
    strategy = f" strategy={config.strategy}" if config.strategy else ""
    return f"{config.name} {params}{strategy}".strip()


def _short(value) -> str:
    """A budget as the specs write it (``2/255``) when it is one; other floats to 4 digits."""
    if isinstance(value, float):
        k = value * 255
        return f"{round(k)}/255" if round(k) >= 1 and abs(k - round(k)) < 1e-6 else f"{value:.4g}"
    return str(value)
