"""Every cache finds its damage, says so in one warning line naming the file, and rebuilds.

Five caches: trained models (vitrobust/zoo/cache.py), adversarial sets (vitrobust/advcache.py),
predictions (vitrobust/predcache.py), throughputs (vitrobust/timings.py), all four on
vitrobust/blobstore.py, and the UAP perturbations' ``.npy`` (vitrobust/adversarial.py ``_save_delta``). Each is damaged in every way
that applies: a flipped byte, a truncated file, a valid file of other contents or random bytes of
the same length under the data file's name, another entry's manifest copied over this one's, and
(for the torch caches) a committed entry whose checksum holds but whose contents are not what the
cache holds (other values, or a pickled object that ``weights_only`` refuses). Each case asserts that the damage is detected (exactly one warning line, naming the
damaged file), that the entry is rebuilt (``create`` runs again and the result equals one made
in an empty cache), and that the damaged contents are never handed back.

The adversarial cache's flipped byte, torn blob, missing blob and torn manifest are in
tests/test_cache_races.py and tests/test_advcache.py; they are not repeated here.
"""
import json
import logging
import random
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from test_advcache import MATERIAL
from vitrobust import adversarial
from vitrobust.advcache import AdvCache
from vitrobust.blobstore import dumps
from vitrobust.predcache import PredCache
from vitrobust.timings import TABLE, TimingCache
from vitrobust.zoo import cache as model_cache


def _tensor(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# -- the caches, each behind the same small interface ---------------------------------------
class Models:
    """``get_or_train``: a tiny state dict, drawn from a seed (so a rebuild is the same)."""

    entry_kind = "cached model"

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def _at(self, root):
        self.monkeypatch.setenv("VITROBUST_CACHE", str(root))
        return model_cache._store()

    def value(self, seed=0):
        return {"weight": _tensor(seed, 3, 4), "bias": _tensor(seed + 1, 3)}

    def run(self, root, calls):
        self._at(root)
        state, _ = model_cache.get_or_train("tiny", "k1", lambda: calls.append(1) or self.value())
        return state

    def files(self, root):
        store = self._at(root)
        manifest = store.manifest_path(model_cache.entry_name("tiny", "k1"))
        return store.blob_path(json.loads(manifest.read_text())["blob"]), manifest

    def other_entry(self, root):
        self._at(root)
        model_cache.save_weights("other", "k1", self.value(7))
        return self._at(root).manifest_path(model_cache.entry_name("other", "k1")), self.value(7)

    def put_raw(self, root, payload):
        self._at(root).put(model_cache.entry_name("tiny", "k1"), dumps(payload))

    @staticmethod
    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Adversarial:
    """``AdvCache.get_or_create``: images and a universal delta."""

    def value(self, seed=0):
        return {"adv": _tensor(seed, 2, 3, 4, 4), "delta": _tensor(seed + 1, 1, 3, 4, 4)}

    def run(self, root, calls):
        return AdvCache(root).get_or_create(MATERIAL, lambda: calls.append(1) or self.value())

    def files(self, root):
        cache = AdvCache(root)
        manifest = cache.manifest_path(cache.key(MATERIAL))
        return cache.store.blob_path(json.loads(manifest.read_text())["blob"]), manifest

    def other_entry(self, root):
        other = {**MATERIAL, "seed": 7}
        cache = AdvCache(root)
        cache.put(other, self.value(7))
        return cache.manifest_path(cache.key(other)), self.value(7)

    def put_raw(self, root, payload):
        cache = AdvCache(root)
        cache.store.put(AdvCache.entry(cache.key(MATERIAL)), dumps(payload))

    same = staticmethod(Models.same)


class _Entry:
    """The files of entry ``material()`` in a cache with ``.store`` and ``.entry``."""

    def files(self, root):
        cache = self.cache(root)
        manifest = cache.store.manifest_path(cache.entry(self.material()))
        return cache.store.blob_path(json.loads(manifest.read_text())["blob"]), manifest


class Predictions(_Entry):
    """``PredCache.get_or_create``: a model's predicted classes on one input set."""

    cache = PredCache
    MODEL = SimpleNamespace(info=SimpleNamespace(weight_hash="w0", name="tiny"))

    def material(self, inputs="fp"):
        return PredCache.material(self.MODEL, {"clean": inputs}, "cpu", "fp32")

    def value(self, seed=0):
        return torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(seed))

    def run(self, root, calls):
        return PredCache(root).get_or_create(self.material(), lambda: calls.append(1) or self.value())

    def other_entry(self, root):
        cache = PredCache(root)
        cache.get_or_create(self.material("other"), lambda: self.value(7))
        return cache.store.manifest_path(cache.entry(self.material("other"))), self.value(7)

    def put_raw(self, root, payload):
        cache = PredCache(root)
        cache.store.put(cache.entry(self.material()), dumps(payload))

    @staticmethod
    def same(a, b):
        return torch.equal(a, b)


class Timings(_Entry):
    """``TimingCache.get_or_time``: the throughput of one model on this machine (JSON)."""

    cache = TimingCache
    MODEL = SimpleNamespace(info=SimpleNamespace(weight_hash="w0", name="tiny", pinned_device="cpu"))

    def material(self, name="tiny"):
        model = SimpleNamespace(info=SimpleNamespace(**{**vars(self.MODEL.info), "name": name}))
        return TimingCache.material([model], [8], TABLE, torch.device("cpu"), "fp32")

    def value(self, seed=0):
        return {"throughputs": [100.0 + seed], "batches": [8]}

    def run(self, root, calls):
        timing = TimingCache(root).get_or_time(
            self.material(), lambda: calls.append(1) or tuple(self.value().values()))
        return {k: timing[k] for k in ("throughputs", "batches")}

    def other_entry(self, root):
        cache = TimingCache(root)
        cache.get_or_time(self.material("other"), lambda: tuple(self.value(7).values()))
        return cache.store.manifest_path(cache.entry(self.material("other"))), self.value(7)

    def put_raw(self, root, payload):
        cache = TimingCache(root)
        cache.store.put(cache.entry(self.material()), json.dumps(payload, default=repr).encode())

    @staticmethod
    def same(a, b):
        return a == b


class Perturbation:
    """``_save_delta``: the UAP's ``.npy`` beside the cache; "create" is the file's (re)write."""

    KEY = "ab" * 32

    def __init__(self, monkeypatch):
        write, self.calls = adversarial.atomic_write, []
        monkeypatch.setattr(adversarial, "atomic_write", lambda path, fn: self.calls.append(1) or write(path, fn))

    def value(self, seed=0):
        return _tensor(seed, 1, 3, 4, 4)

    def run(self, root, calls):
        self.calls = calls   # each write of the file counts as a "create"
        path = adversarial._save_delta(root / "artifacts", self.KEY, self.value())
        return np.load(path, allow_pickle=False)

    def files(self, root):
        return root / "artifacts" / f"uap-{self.KEY[:24]}.npy", None

    @staticmethod
    def same(a, b):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# -- the damage -------------------------------------------------------------------------------
def flip_byte(kind, root):
    data, _ = kind.files(root)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))


def truncate(kind, root):
    data, _ = kind.files(root)
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])


def foreign_file(kind, root):
    """A valid file of other contents under the data file's name (a copy gone wrong)."""
    data, _ = kind.files(root)
    other = kind.value(7)
    if isinstance(kind, Perturbation):
        with open(data, "wb") as fh:
            np.save(fh, other.squeeze(0).numpy())
        return other.squeeze(0).numpy()
    data.write_bytes(dumps(other))
    return other


def random_bytes(kind, root):
    data, _ = kind.files(root)
    data.write_bytes(random.Random(0).randbytes(len(data.read_bytes())))   # same size: only a hash can tell


def foreign_manifest(kind, root):
    """Another entry's manifest copied over this one's: whole, checksummed, and not this entry."""
    _, manifest = kind.files(root)
    other, value = kind.other_entry(root)
    shutil.copyfile(other, manifest)
    return value


def wrong_contents(kind, root):
    """A committed entry whose checksum holds but whose blob is not what this cache stores."""
    kind.put_raw(root, {"predictions": torch.zeros(2, 2)} if isinstance(kind, Predictions) else [1, 2, 3])


class Pickled:
    """Not a tensor: ``torch.load(weights_only=True)`` refuses it, in a paragraph of text."""


def unsafe_pickle(kind, root):
    """A committed entry, checksum and all, whose blob pickles an object of a class."""
    kind.put_raw(root, {"weight": Pickled()})


KINDS = {"model": Models, "adversarial": Adversarial, "predictions": Predictions, "uap": Perturbation,
         "timings": Timings}
ALL = (flip_byte, truncate, foreign_file, random_bytes, foreign_manifest, wrong_contents, unsafe_pickle)
CASES = [(kind, damage) for kind, damages in {
    "model": ALL,
    "predictions": ALL,
    # flipped byte, torn blob and wrong contents: tests/test_cache_races.py, tests/test_advcache.py
    "adversarial": (foreign_file, random_bytes, foreign_manifest, unsafe_pickle),
    "uap": (flip_byte, truncate, foreign_file, random_bytes),   # no manifest, no pickle: the file is all
    "timings": (flip_byte, truncate, random_bytes, foreign_manifest, wrong_contents),   # JSON: no pickle
}.items() for damage in damages]


def _build(name, monkeypatch):
    cls = KINDS[name]
    return cls(monkeypatch) if cls in (Models, Perturbation) else cls()


@pytest.mark.parametrize("kind_name, damage", CASES, ids=[f"{k}-{d.__name__}" for k, d in CASES])
def test_damage_is_detected_in_one_line_and_the_entry_rebuilt(kind_name, damage, tmp_path, caplog, monkeypatch):
    kind = _build(kind_name, monkeypatch)
    fresh = kind.run(tmp_path / "fresh", [])             # what an empty cache makes
    root, calls = tmp_path / "cache", []
    kind.run(root, calls)
    blob, manifest = kind.files(root)
    damaged_file = manifest if damage in (foreign_manifest, wrong_contents, unsafe_pickle) else blob
    planted = damage(kind, root)

    with caplog.at_level(logging.WARNING):
        result = kind.run(root, calls)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(damaged_file) in warnings[0] and "\n" not in warnings[0]
    assert len(calls) == 2                                  # made again, not read
    assert kind.same(result, fresh)
    if planted is not None:
        assert not kind.same(result, planted)               # the damaged contents never came back

    caplog.clear()
    with caplog.at_level(logging.WARNING):                  # rebuilt on disk: read back quietly
        again = kind.run(root, calls)
    assert len(calls) == 2 and kind.same(again, fresh) and not caplog.records
    assert not list(root.rglob("*.tmp"))


def test_a_manifest_from_before_entries_were_named_is_still_read(tmp_path, monkeypatch):
    """Old caches keep working: a manifest without ``entry`` is trusted on its checksum."""
    kind, calls = Models(monkeypatch), []
    kind.run(tmp_path, calls)
    _, manifest = kind.files(tmp_path)
    old = json.loads(manifest.read_text())
    del old["entry"]
    manifest.write_text(json.dumps(old))
    assert Models.same(kind.run(tmp_path, calls), kind.value()) and len(calls) == 1
