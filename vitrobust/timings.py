"""Throughputs kept per machine, so that a warm run times nothing.

A throughput belongs to a model *and* the machine it ran on, so, as airspeed velocity keeps its
benchmark results, an entry is named by both:

- the models, in order: weight hash (which covers the compression), name, the device it
  computes on and batch size each;
- the procedure: ``table`` (one model: :func:`vitrobust.metrics.throughput`'s defaults) or
  ``side-by-side`` (the models of one speed comparison, timed in alternation:
  :func:`vitrobust.metrics.throughput_side_by_side`). A comparison is one entry for the whole
  group, never put together from speeds timed at different moments: the ratio a check decides
  on always comes from one sitting;
- the machine (:func:`machine`): host name, what torch reports of the CPU (model, cores, caches,
  instruction sets) or the CUDA device's name, torch's version and thread count, the device
  type and the autocast precision;
- the code that runs the models (:func:`code`): a hash of vitrobust's own sources (its model
  families, compressions and INT8 kernels are where a speed-up or a slow-down of ours would
  come from) and timm's version. Code of a user's own that the zoo imports is not in it:
  after changing that, retime.

Any change there is another entry, timed anew. What the key cannot see (another program
loading the machine while the entry was timed, a BIOS setting) is why ``--vitrobust-retime``
exists: it times every speed the run needs again and replaces the stored entries (on an object
store, whose manifests are written once, the run uses its new timings and the old entries stay).

The value is JSON: ``{"throughputs": [...], "batches": [...], "timed_at": <UTC ISO time>}``,
stored by :mod:`vitrobust.blobstore`'s protocol (checksummed, damaged entries rebuilt).
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import timm
import torch

from .advcache import key_entry, material_key
from .device import home_device
from .objectstore import as_root, open_store

FORMAT = 1   # bump when how a throughput is timed changes (it is key material)

TABLE, SIDE_BY_SIDE = "table", "side-by-side"


def machine(device: torch.device) -> dict:
    """What the speed of a model depends on besides the model (see the module docstring). The
    CPU is always in it: dynamic INT8 runs there whatever the run's device."""
    gpu = {"cuda": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}
    return {"host": platform.node(), "cpu": torch.cpu.get_capabilities(), **gpu,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


@functools.cache
def code() -> dict:
    """What of the code a speed depends on (see the module docstring)."""
    return {"vitrobust": source_hash(Path(__file__).resolve().parent), "timm": timm.__version__}


def source_hash(folder: Path) -> str:
    """A short hash of the ``.py`` files under ``folder``: their paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class TimingCache:
    """Throughputs on disk, keyed by (models, procedure, machine, code); see the module docstring.

    ``retime``: time every request anew and store it over what was there."""

    def __init__(self, root, retime: bool = False):
        self.root = as_root(root)
        self.store = open_store(self.root, suffix=".timing.json", what="timing cache entry")
        self.retime = retime
        self.stats = {"timed": 0, "reused": 0}   # speeds (one per model), for the run record

    def counts(self) -> dict:
        """The run record's ``cache`` counts of speeds: ``speeds_timed``, ``speeds_reused``."""
        return {f"speeds_{what}": count for what, count in self.stats.items()}

    @staticmethod
    def material(models: list, batch_sizes: list[int], procedure: str, device: torch.device,
                 precision: str) -> dict:
        return {"models": [[m.info.weight_hash, m.info.name, home_device(m).type, int(b)]
                           for m, b in zip(models, batch_sizes)],
                "procedure": procedure, "device": device.type, "precision": precision,
                "machine": machine(device), "code": code()}

    def entry(self, material: dict) -> str:
        return key_entry(material_key(FORMAT, material))

    def get(self, material: dict) -> dict | None:
        """The stored timing, or None when absent or damaged (damage is logged)."""
        found = self.store.get(self.entry(material), decode=lambda data: _timing(json.loads(data), material))
        return None if found is None else found[0]

    def get_or_time(self, material: dict, time: Callable[[], tuple[list[float], list[int]]]) -> dict:
        """The entry for ``material``, or ``time()``'s (throughputs, batch sizes used), stored."""
        def make():
            throughputs, batches = time()
            timing = {"throughputs": [float(t) for t in throughputs], "batches": [int(b) for b in batches],
                      "timed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self.store.put(self.entry(material), json.dumps(timing).encode(), {"material": material})
            return timing

        if self.retime:
            timing, made = make(), True
        else:
            timing, made = self.store.get_or_create(self.entry(material), lambda: self.get(material), make)
        self.stats["timed" if made else "reused"] += len(timing["throughputs"])
        return timing


def _timing(raw, material: dict) -> dict:
    """``raw`` if it is a timing of ``material``'s models, else ValueError (a damaged entry)."""
    count = len(material["models"])
    if not (isinstance(raw, dict) and isinstance(raw.get("throughputs"), list)
            and isinstance(raw.get("batches"), list) and len(raw["throughputs"]) == len(raw["batches"]) == count
            and all(isinstance(t, (int, float)) and t > 0 for t in raw["throughputs"])):
        raise ValueError("not a timing of these models")
    return raw
