"""What a pytest-xdist worker hands the controller, and how the controller merges it (no torch).

Under ``pytest -n N`` every worker decides some of the checks with its own engine. Only the
controller records, reports and gates, so each worker packs its check records and its part of
the run record (:meth:`vitrobust.engine.Engine.record_parts`) into one JSON text
(``config.workeroutput``, which xdist carries to the controller), and the controller merges the
workers' texts into the record a serial run would have made. A serial run decides the checks in
collection order and makes each table entry (measurement, model row, data slice, clean score)
when the first check that needs it runs; every worker collects the same items, so an item's
index in its worker's collection is its place in that order. Each worker therefore also sends,
per check it ran, what the check reads (:func:`uses_of`), and the controller

- puts the checks in collection order;
- keeps each measurement, model and data slice once, ordered by the first check (in collection
  order) that reads it, and gives a measurement that check's spec and confidence, as the serial
  run's record has them (a worker may have run a later check first);
- takes a model's clean accuracy from the slice a serial run would have scored it on last;
- adds up the adversarial-cache counts and the profile's seconds over the workers.

Timings are not made to agree: a model's throughput comes from the worker that timed it (a check
that compares speeds), or stays None for the controller's serial timing step.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from .record import CheckRecord, RunRecord, RunWarning

KEY = "vitrobust"   # the key of config.workeroutput that holds a worker's text
END = 1 << 30       # the rank of an entry no check's uses name: after every check


def uses_of(check, spec_data: dict | None, engine) -> dict:
    """What deciding ``check`` reads from the engine's tables, in the order a serial run makes
    them: its measurements (every seed replica's, replica by replica), the models of its models
    table rows, the (model, slice) clean scores its rates need, and its data slice."""
    from .expr import measures
    from .measures import measure_kind
    from .replicate import replica_node

    nodes = [check.node] if engine.seeds == 1 else [replica_node(check.node, s) for s in range(engine.seeds)]
    named = [m for node in nodes for m in measures(node)]
    models = [str(name) for m in named for name in (m.model, m.source) if name is not None]
    clean = [str(m.model) for m in named if measure_kind(m.kind).rate]
    return {"data": engine.data_slice(spec_data).key, "measurements": [m.key for m in named],
            "models": list(dict.fromkeys(models)), "clean": list(dict.fromkeys(clean))}


def engine_config(engine) -> dict:
    """What the run record's config takes from the engine (see :func:`vitrobust.run.build_run_record`)."""
    return {"data_source": engine.data_source, "max_images": engine.max_images,
            "device": str(engine.device), "precision": engine.precision,
            "batch_size": engine.batch_size, "seeds": engine.seeds}


def pack(worker: str, checks: list[tuple[int, str, CheckRecord]], engine=None, uses: list | None = None) -> str:
    """One worker's results as JSON text (execnet carries only plain types, and numpy scalars
    are not plain). ``checks``: (collection index, node id, record) of each check it ran;
    ``uses``: (collection index, :func:`uses_of`) of each; ``engine``: the worker's engine, or
    None if no check built one (its ``record_parts`` is taken here)."""
    payload = {"worker": worker, "checks": [[i, nodeid, asdict(c)] for i, nodeid, c in checks],
               "uses": list(uses or []), "parts": None, "clean": [], "config": None}
    if engine is not None:
        payload.update(parts=_plain(engine.record_parts()), config=engine_config(engine),
                       clean=[list(c) for c in engine.clean_accuracies()])
    return json.dumps(payload, default=_scalar)


def _plain(parts: dict) -> dict:
    def plain(value):
        return asdict(value) if hasattr(value, "__dataclass_fields__") else value

    out = {}
    for key, value in parts.items():
        if isinstance(value, dict):
            value = {k: plain(v) for k, v in value.items()}
        elif isinstance(value, list):
            value = [plain(v) for v in value]
        out[key] = value
    return out


def _scalar(value):
    if hasattr(value, "item"):   # numpy scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


@dataclass
class WorkerResult:
    """One worker's results, read back into the run record's types."""

    worker: str
    checks: list                    # (collection index, node id, CheckRecord)
    uses: list = field(default_factory=list)      # (collection index, uses_of(...))
    parts: dict | None = None       # record_parts, typed; None: the worker built no engine
    clean: list = field(default_factory=list)     # (model, slice, accuracy)
    config: dict | None = None

    @property
    def number(self) -> int:
        """gw0 -> 0, gw12 -> 12: workers in a stable order (ties between copies go to the lower)."""
        match = re.search(r"(\d+)$", self.worker)
        return int(match.group(1)) if match else 0


def unpack(text: str) -> WorkerResult:
    raw = json.loads(text)
    checks = RunRecord.from_dict({"run_id": "", "checks": [c for _, _, c in raw["checks"]]}).checks
    result = WorkerResult(raw["worker"], [(i, nodeid, c) for (i, nodeid, _), c in zip(raw["checks"], checks)],
                          uses=[tuple(u) for u in raw["uses"]], clean=[tuple(c) for c in raw["clean"]],
                          config=raw["config"])
    if raw["parts"] is not None:
        record = RunRecord.from_dict({"run_id": "", **raw["parts"]})
        result.parts = {key: getattr(record, key) if hasattr(record, key) else value
                        for key, value in raw["parts"].items()}
    return result


@dataclass
class Merged:
    """The workers' results as one run: what :func:`vitrobust.run.finish_run` needs of an engine
    (``record_parts`` and the run's configuration), plus the checks in collection order."""

    checks: list
    parts: dict
    config: dict
    run_nodeids: list = field(default_factory=list)

    def __getattr__(self, name):   # data_source, max_images, device, precision, batch_size, seeds
        config = self.__dict__.get("config") or {}
        if name in config:
            return config[name]
        raise AttributeError(name)

    def record_parts(self) -> dict:
        return self.parts


def merge(results: list[WorkerResult]) -> Merged | None:
    """One run from the workers' results; None if no worker built an engine (no run to record,
    as in a serial session where no check ran)."""
    results = sorted(results, key=lambda r: r.number)
    built = [r for r in results if r.parts is not None]
    if not built:
        return None
    checks: dict[str, tuple] = {}
    for r in results:   # under --dist each a check runs on every worker: keep it once
        for index, nodeid, check in r.checks:
            checks.setdefault(check.nodeid, (index, nodeid, check))
    ordered = sorted(checks.values(), key=lambda c: c[0])
    ranks = _first_uses(results)
    parts = {"models": _models(built, ranks),
             "measurements": _measurements(built, ranks, {i: c for i, _, c in ordered}),
             "data": {d.key: d for d in _ordered(_once(built, "data", lambda d: d.key), ranks,
                                                 lambda d: ("data", d.key))},
             "warnings": [w for _, w in _once(built, "warnings", lambda w: (w.kind, w.message, w.model))],
             "artifacts": {k: v for r in built for k, v in r.parts.get("artifacts", {}).items()},
             "cache": _summed(r.parts.get("cache", {}) for r in built)}
    parts["warnings"] += _model_conflicts(built)
    if any("profile" in r.parts for r in built):
        parts["profile"] = add_profiles(r.parts.get("profile", []) for r in built)
    for key in {k for r in built for k in r.parts} - set(parts):   # a part this module does not know
        parts[key] = _combined([r.parts[key] for r in built if key in r.parts])
    return Merged([c for _, _, c in ordered], parts, dict(built[0].config),
                  [nodeid for _, nodeid, _ in ordered])


def _first_uses(results: list[WorkerResult]) -> dict:
    """(kind, ...) -> (collection index, position in that check) of the first check that reads it."""
    ranks: dict[tuple, tuple] = {}

    def seen(key: tuple, rank: tuple) -> None:
        if key not in ranks or rank < ranks[key]:
            ranks[key] = rank

    for r in results:
        for index, use in r.uses:
            seen(("data", use["data"]), (index, 0))
            for pos, key in enumerate(use["measurements"]):
                seen(("measurement", key, use["data"]), (index, pos))
            for pos, name in enumerate(use["models"]):
                seen(("model", name), (index, pos))
            for pos, name in enumerate(use["clean"]):
                seen(("clean", name, use["data"]), (index, pos))
    return ranks


def _entries(r: WorkerResult, kind: str) -> list:
    table = r.parts.get(kind, [])
    return list(table.values()) if isinstance(table, dict) else list(table)


def _once(built: list[WorkerResult], kind: str, ident) -> list[tuple]:
    """(fallback rank, entry) for each distinct entry of table ``kind``: the lowest worker's copy."""
    chosen: dict = {}
    for r in built:
        for pos, entry in enumerate(_entries(r, kind)):
            chosen.setdefault(ident(entry), ((END, r.number, pos), entry))
    return list(chosen.values())


def _ordered(entries: list[tuple], ranks: dict, key) -> list:
    """The entries by the first check that reads them (entries no check names go last)."""
    return [e for _, e in sorted(entries, key=lambda c: (ranks.get(key(c[1]), (END,)), c[0]))]


def _measurements(built: list[WorkerResult], ranks: dict, checks: dict) -> list:
    from .stats import wilson_interval

    records = _ordered(_once(built, "measurements", _measurement_id), ranks,
                       lambda m: ("measurement", m.key, m.data))
    for m in records:   # the spec and confidence of the first check to ask, as serially
        first = checks.get(ranks.get(("measurement", m.key, m.data), (END,))[0])
        if first is None:
            continue
        m.spec = first.spec
        if first.confidence and m.k is not None and m.confidence != first.confidence:
            m.confidence, m.interval = first.confidence, list(wilson_interval(m.k, m.n, first.confidence))
    return records


def _measurement_id(m) -> tuple:
    """What makes two measurement records the same one: the engine keys them by measure, slice
    and attack configuration, of which the record keeps the threat model and strategy."""
    return (m.key, m.data, json.dumps(m.threat_model, sort_keys=True, default=str), m.attack, m.strategy)


def _models(built: list[WorkerResult], ranks: dict) -> dict:
    """Each model once; a throughput from whichever worker timed it; the clean accuracy of the
    slice a serial run would have scored it on last."""
    records = _ordered(_once(built, "models", lambda m: m.name), ranks, lambda m: ("model", m.name))
    models = {m.name: m for m in records}
    for r in built:
        for m in _entries(r, "models"):
            if models[m.name].throughput is None and m.throughput is not None:   # timed on that worker
                models[m.name].throughput, models[m.name].throughput_batch = m.throughput, m.throughput_batch
            for key, value in m.meta.items():   # measured there (keep_ratio per stage)
                models[m.name].meta.setdefault(key, value)
    last: dict[str, tuple] = {}
    for r in built:
        for name, data, acc in r.clean:
            rank = ranks.get(("clean", name, data), (-1,))   # scored by no check's rates: never last
            if name not in last or rank > last[name][0]:
                last[name] = (rank, acc)
    for name, (_, acc) in last.items():
        if name in models:
            models[name].clean_acc = acc
    return models


def _model_conflicts(built: list[WorkerResult]) -> list[RunWarning]:
    """Two workers with different weights under one name would make their numbers disagree."""
    hashes: dict[str, dict[str, str]] = {}
    for r in built:
        for m in _entries(r, "models"):
            hashes.setdefault(m.name, {}).setdefault(m.weight_hash, r.worker)
    return [RunWarning("workers-disagree", f"{name}: pytest-xdist workers built different weights "
                                           f"({', '.join(f'{w}: {h[:12]}' for h, w in seen.items())})", name)
            for name, seen in hashes.items() if len(seen) > 1]


def _summed(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for key, value in d.items():
            out[key] = out.get(key, 0) + value
    return out


def add_profiles(lists) -> list[dict]:
    """Profile items (:mod:`vitrobust.profile`) added up per (kind, name), most seconds first:
    the time of every worker, not wall time."""
    out: dict[tuple, dict] = {}
    for items in lists:
        for item in items:
            into = out.setdefault((item["kind"], item["name"]), {**item, "seconds": 0.0, "total": 0.0, "count": 0})
            for key in ("seconds", "total", "count"):
                into[key] += item.get(key, 0)
    return sorted(out.values(), key=lambda i: -i["seconds"])


def _combined(values: list):
    if all(isinstance(v, dict) for v in values):
        return {k: v for d in values for k, v in d.items()}
    if all(isinstance(v, list) for v in values):
        return [x for v in values for x in v]
    return values[0]
