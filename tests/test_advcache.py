"""The adversarial-example cache: keyed by material, checksummed, rebuilt when damaged."""
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


def test_second_call_loads_without_creating(tmp_path):
    cache, calls = AdvCache(tmp_path), []
    first = cache.get_or_create(MATERIAL, _creator(calls))
    second = cache.get_or_create(MATERIAL, _creator(calls))
    assert len(calls) == 1 and torch.equal(first["adv"], second["adv"])
    data, sums, meta = cache.paths(cache.key(MATERIAL))
    assert data.exists() and sums.exists() and '"strategy": "white-box"' in meta.read_text()
    assert not list(tmp_path.rglob("*.tmp*"))


def test_tampered_entry_is_detected_and_rebuilt(tmp_path, caplog):
    cache, calls = AdvCache(tmp_path), []
    cache.get_or_create(MATERIAL, _creator(calls))
    data, _, _ = cache.paths(cache.key(MATERIAL))
    blob = bytearray(data.read_bytes())
    blob[-20] ^= 0xFF                          # flip one byte inside the tensor data
    data.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="vitrobust.advcache"):
        rebuilt = cache.get_or_create(MATERIAL, _creator(calls))
    assert len(calls) == 2 and "checksum mismatch" in caplog.text
    assert cache.get(MATERIAL) is not None and torch.equal(cache.get(MATERIAL)["adv"], rebuilt["adv"])


def test_unreadable_entry_with_matching_checksum_is_rebuilt(tmp_path, caplog):
    import hashlib
    cache, calls = AdvCache(tmp_path), []
    cache.get_or_create(MATERIAL, _creator(calls))
    data, sums, _ = cache.paths(cache.key(MATERIAL))
    data.write_bytes(b"not a torch file")
    sums.write_text(hashlib.sha256(b"not a torch file").hexdigest())
    with caplog.at_level(logging.WARNING, logger="vitrobust.advcache"):
        cache.get_or_create(MATERIAL, _creator(calls))
    assert len(calls) == 2 and "unusable" in caplog.text
