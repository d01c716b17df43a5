"""The run record: what one run measured and decided, as typed dataclasses (no torch).

Every producer (engine, plugin, run) builds these and every consumer (store, report, gate, plots)
reads them; ``report.json`` is :meth:`RunRecord.to_dict` and :meth:`RunRecord.from_dict` reads it
back. The schema is documented in ``docs/record.md``; bump :data:`SCHEMA_VERSION` when a field
changes meaning or disappears (adding a field with a default does not need a bump: readers fill
in the default for records written before it existed).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SCHEMA_VERSION = 2   # 1: the untyped dicts of vitrobust <= 0.1 (same keys, read by from_dict)


def local_time_iso() -> str:
    """Local time to the second: ``started`` / ``finished`` of a run."""
    return dt.datetime.now().isoformat(timespec="seconds")


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` in UTC plus 4 random hex digits: sortable and unique."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class ModelRecord:
    """One model a run touched: identity, efficiency, clean accuracy, compression metadata."""

    name: str
    weight_hash: str = ""
    family: str = ""
    params: Optional[int] = None
    size_mb: Optional[float] = None
    gflops: Optional[float] = None
    throughput: Optional[float] = None        # images/s (side by side where a check compared speeds)
    throughput_batch: Optional[int] = None
    differentiable: bool = True
    input_size: Optional[int] = None
    build_seconds: Optional[float] = None
    clean_acc: Optional[float] = None          # on the first data slice it was scored on
    meta: dict = field(default_factory=dict)   # compression parameters: bits, keep_rate, ...
    device: Optional[str] = None               # where it computed: cpu, cuda:0 (INT8: always cpu)


@dataclass
class MeasurementRecord:
    """One measured quantity, e.g. ``asr(deit_tiny:int8, sp)`` on one data slice.

    Rates carry ``k`` successes of ``n`` images in the denominator, a Wilson ``interval`` at
    ``confidence`` and per-image ``outcomes`` (1 success, 0 not, None not in the denominator),
    indexed like the data slice, so two runs on the same slice pair image by image.
    """

    key: str                                   # canonical text of the measure
    kind: str                                  # a registered measure (vitrobust.measures)
    value: Optional[float] = None
    spec: Optional[str] = None                 # the spec that first asked for it
    source: Optional[str] = None               # transfer: where the adversarial inputs were made
    target: Optional[str] = None               # the model scored
    alias: Optional[str] = None                # the attack as the spec names it: pgd, any[pgd, sp]
    attack: Optional[str] = None               # registry name(s), comma-joined for any[...]
    threat_model: Any = None                   # dict (one attack) or list of dicts (any[...])
    strategy: Optional[str] = None             # white-box, black-box, straight-through, transfer:...
    data: Optional[str] = None                 # the data slice, e.g. digits/test[:450]
    k: Optional[int] = None
    n: Optional[int] = None
    interval: Optional[list] = None            # [lo, hi] Wilson at `confidence`
    confidence: Optional[float] = None
    robust_acc: Optional[float] = None         # attacks: right clean and under attack, all images
    clean_acc: Optional[float] = None          # attacks: the target's clean accuracy on the slice
    outcomes: Optional[list] = None


@dataclass
class DataRecord:
    """One data slice a run scored: which images, by id, in the order of every ``outcomes``."""

    key: str                                   # the slice, e.g. folder:/data/val[:1000]
    source: str = ""
    split: str = ""
    limit: Optional[int] = None
    images: int = 0                            # scored (after any skipped)
    classes: int = 0                           # classes among the images scored
    num_classes: int = 0                       # classes of the source
    fingerprint: str = ""                      # content hash (part of the adversarial cache key)
    ids: list = field(default_factory=list)    # <class>/<file> for folders, indices for digits
    skipped: list = field(default_factory=list)  # "id: reason" (--vitrobust-skip-bad-images)


@dataclass
class CheckRecord:
    """One check (one pytest item): its verdict and its pytest outcome."""

    spec: str
    nodeid: str
    check: str                                 # the expanded check text
    params: dict = field(default_factory=dict)  # its matrix cell
    claim: Optional[str] = None
    status: str = "error"                      # holds | fails | inconclusive | varies | error (never ran)
    outcome: Optional[str] = None              # passed | failed | skipped | xfailed | xpassed
    xfail_reason: Optional[str] = None
    confidence: Optional[float] = None
    message: str = ""
    values: dict = field(default_factory=dict)      # measure or side text -> value
    statistic: str = ""
    p_value: Optional[float] = None
    intervals: dict = field(default_factory=dict)   # key -> [lo, hi]
    # decided across seed replicas (--vitrobust-seeds K): status "varies" is possible, and
    # each replica's own verdict is kept (seed, status, p_value, statistic, effects, values)
    replicas: list = field(default_factory=list)
    heterogeneity: dict = field(default_factory=dict)   # paired link -> homogeneity p-value


@dataclass
class RunWarning:
    """Something the report should point out (zero gradients, nondeterminism, ...)."""

    kind: str
    message: str
    model: Optional[str] = None


@dataclass
class RunConfig:
    """What the numbers depend on besides the code: data, zoo, image cap, confidence, device,
    precision, scoring batch, argv, and torch's own numerics (:mod:`vitrobust.numerics`).

    The device defaults are what every run made before devices existed used (CPU, fp32, batch
    256), so older records read back as what they were. The numerics of an older record are
    unknown: None.
    """

    data: Optional[str] = None
    zoo: Optional[str] = None
    max_images: Optional[int] = None
    confidence: float = 0.95
    args: list = field(default_factory=list)
    device: str = "cpu"                        # cpu, cuda, cuda:N (the resolved --vitrobust-device)
    precision: str = "fp32"                    # fp32, bf16, fp16 (autocast)
    batch_size: int = 256                      # images per model call when scoring (at most 64 above 64x64)
    seeds: int = 1                             # training-seed replicas every check is decided across
    threads: Optional[int] = None              # torch.get_num_threads()
    deterministic: Optional[bool] = None       # torch.are_deterministic_algorithms_enabled()
    cpu_capability: Optional[str] = None       # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, ...
    matmul_precision: Optional[str] = None     # torch.get_float32_matmul_precision(): highest, high (TF32)


@dataclass
class RunRecord:
    run_id: str
    started: str = ""
    finished: str = ""
    schema_version: int = SCHEMA_VERSION
    git_commit: Optional[str] = None
    versions: dict = field(default_factory=dict)
    config: RunConfig = field(default_factory=RunConfig)
    models: dict = field(default_factory=dict)          # name -> ModelRecord
    measurements: list = field(default_factory=list)    # MeasurementRecord
    checks: list = field(default_factory=list)          # CheckRecord
    artifacts: dict = field(default_factory=dict)       # name -> path (UAP perturbations, ...)
    warnings: list = field(default_factory=list)        # RunWarning
    cache: dict = field(default_factory=dict)           # adversarial_generated / _reused
    data: dict = field(default_factory=dict)            # slice key -> DataRecord
    profile: list = field(default_factory=list)         # where the time went (vitrobust.profile)

    def to_dict(self) -> dict:
        """The JSON-able form (``report.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunRecord":
        """Read a record written by :meth:`to_dict` (or by vitrobust <= 0.1, schema 1)."""
        raw = dict(raw)
        raw["config"] = _build(RunConfig, raw.get("config") or {})
        raw["models"] = {name: _build(ModelRecord, {"name": name, **(info or {})})
                         for name, info in (raw.get("models") or {}).items()}
        raw["measurements"] = [_build(MeasurementRecord, m) for m in raw.get("measurements") or []]
        raw["checks"] = [_build(CheckRecord, c) for c in raw.get("checks") or []]
        raw["warnings"] = [_build(RunWarning, w) for w in raw.get("warnings") or []]
        raw["data"] = {key: _build(DataRecord, {"key": key, **(d or {})})
                       for key, d in (raw.get("data") or {}).items()}
        raw.setdefault("schema_version", 1)
        return _build(cls, raw)

    # -- small queries every consumer needs --------------------------------------------------
    def spec_ids(self) -> list[str]:
        """Specs in order of first appearance (checks first, then measurement-only specs)."""
        seen: dict[str, None] = {}
        for item in [*self.checks, *self.measurements]:
            if item.spec is not None:
                seen.setdefault(item.spec, None)
        return list(seen)

    def checks_of(self, spec: str) -> list[CheckRecord]:
        return [c for c in self.checks if c.spec == spec]


def _build(cls, raw: dict):
    """``cls(**raw)`` keeping only the fields ``cls`` has (older or newer records still load)."""
    if isinstance(raw, cls):
        return raw
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names})
