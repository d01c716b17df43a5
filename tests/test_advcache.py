"""The adversarial-example cache: keyed by material, checksummed, rebuilt when damaged.
(Several processes on one cache: tests/test_cache_races.py.)"""
import hashlib
import io
import json
import logging

import torch

from vitrobust.advcache import AdvCache

MATERIAL = {"source": "abc123", "threat_model": {"attack": "pgd", "eps": 0.03}, "data": "fp",
            "seed": 0, "strategy": "white-box"}


def _creator(calls):
    def create():
        calls.append(1)
        return {"adv": torch.rand(4, 3, 8, 8), "delta": torch.zeros(1, 3, 8, 8)}
    return create


def test_key_is_canonical_and_sensitive():
    reordered = dict(reversed(list(MATERIAL.items())))
    assert AdvCache.key(MATERIAL) == AdvCache.key(reordered)
    assert AdvCache.key(MATERIAL) != AdvCache.key({**MATERIAL, "seed": 1})
    assert len(AdvCache.key(MATERIAL)) == 64


def _blob(cache):
    manifest = json.loads(cache.manifest_path(cache.key(MATERIAL)).read_text())
    return cache.store.blob_path(manifest["blob"])


def test_second_call_loads_without_creating(tmp_path):
    cache, calls = AdvCache(tmp_path), []
    first = cache.get_or_create(MATERIAL, _creator(calls))
    second = cache.get_or_create(MATERIAL, _creator(calls))
    assert len(calls) == 1 and torch.equal(first["adv"], second["adv"])
    assert cache.stats == {"generated": 1, "reused": 1}
    meta = cache.manifest_path(cache.key(MATERIAL))
    assert '"strategy": "white-box"' in meta.read_text() and _blob(cache).exists()
    assert _blob(cache).name == json.loads(meta.read_text())["blob"] + ".pt"   # named by its content
    assert not list(tmp_path.rglob("*.tmp*"))


def test_tampered_entry_is_detected_and_rebuilt(tmp_path, caplog):
    cache, calls = AdvCache(tmp_path), []
    cache.get_or_create(MATERIAL, _creator(calls))
    data = _blob(cache)
    blob = bytearray(data.read_bytes())
    blob[-20] ^= 0xFF                          # flip one byte inside the tensor data
    data.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="vitrobust.advcache"):
        rebuilt = cache.get_or_create(MATERIAL, _creator(calls))
    assert len(calls) == 2 and "checksum mismatch" in caplog.text
    assert cache.get(MATERIAL) is not None and torch.equal(cache.get(MATERIAL)["adv"], rebuilt["adv"])


def test_unreadable_entry_with_matching_checksum_is_rebuilt(tmp_path, caplog):
    cache, calls = AdvCache(tmp_path), []
    cache.get_or_create(MATERIAL, _creator(calls))
    cache.store.put(AdvCache.entry(cache.key(MATERIAL)), b"not a torch file")   # checksum holds
    with caplog.at_level(logging.WARNING, logger="vitrobust.advcache"):
        cache.get_or_create(MATERIAL, _creator(calls))
    assert len(calls) == 2 and "unusable" in caplog.text
    assert torch.equal(cache.get(MATERIAL)["delta"], torch.zeros(1, 3, 8, 8))


def _legacy_entry(tmp_path, tensors, checksum=None):
    """An entry as vitrobust wrote it before the blob store: .pt, .sha256 and .json side by side."""
    base = tmp_path / AdvCache.entry(AdvCache.key(MATERIAL))
    base.parent.mkdir(parents=True)
    torch.save(tensors, base.with_suffix(".pt"))
    digest = hashlib.sha256(base.with_suffix(".pt").read_bytes()).hexdigest()
    base.with_suffix(".sha256").write_text((checksum or digest) + "\n")
    base.with_suffix(".json").write_text(json.dumps({"key": "k", "sha256": digest, "material": MATERIAL}))
    return base


def test_entry_of_the_layout_before_is_adopted_when_its_checksum_holds(tmp_path):
    tensors = {"adv": torch.rand(2, 3, 8, 8)}
    base = _legacy_entry(tmp_path, tensors)
    cache, calls = AdvCache(tmp_path), []
    assert torch.equal(cache.get_or_create(MATERIAL, _creator(calls))["adv"], tensors["adv"]) and calls == []
    assert json.loads(base.with_suffix(".json").read_text())["protocol"] == 1   # now a manifest
    assert base.with_suffix(".pt").exists()    # left for older versions still running
    data, _ = cache.store.get(AdvCache.entry(cache.key(MATERIAL)))   # re-stored as a blob
    assert torch.equal(torch.load(io.BytesIO(data), weights_only=True)["adv"], tensors["adv"])


def test_damaged_entry_of_the_layout_before_is_a_miss_not_a_crash(tmp_path):
    _legacy_entry(tmp_path, {"adv": torch.rand(2, 3, 8, 8)}, checksum="0" * 64)
    cache, calls = AdvCache(tmp_path), []
    assert cache.get(MATERIAL) is None
    made = cache.get_or_create(MATERIAL, _creator(calls))
    assert len(calls) == 1 and torch.equal(cache.get(MATERIAL)["adv"], made["adv"])
