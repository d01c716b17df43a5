"""Cache roots on fsspec URLs (vitrobust/objectstore.py): ``memory://`` stands in for an object
store (no renames, no locks, exclusive manifest creation), ``file://`` is the local folder."""
import json
import threading
import uuid
from pathlib import Path

import fsspec
import pytest
import torch

from vitrobust.advcache import AdvCache
from vitrobust.blobstore import BlobStore
from vitrobust.objectstore import CacheURL, ObjectBlobStore, as_root, open_store
from vitrobust.zoo import cache as model_cache

MATERIAL = {"source": "abc123", "threat_model": {"attack": "pgd", "eps": 0.03}, "data": "fp",
            "seed": 0, "strategy": "white-box"}


@pytest.fixture
def url():
    root = f"memory://vitrobust-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _manifest(cache: AdvCache) -> dict:
    return json.loads(fsspec.open(str(cache.manifest_path(cache.key(MATERIAL))), "rb").open().read())


def test_roots_are_local_folders_or_object_stores(tmp_path, url):
    assert as_root(str(tmp_path)) == tmp_path and as_root(f"file://{tmp_path}") == tmp_path
    assert type(open_store(f"file://{tmp_path}")) is BlobStore   # the local code path, locks and all
    assert isinstance(open_store(url), ObjectBlobStore)
    assert CacheURL(url) / "models" / "a" == f"{url}/models/a"


def test_an_adversarial_set_is_made_once_and_read_back_from_an_object_store(url):
    cache, calls = AdvCache(CacheURL(url) / "adversarial"), []

    def create():
        calls.append(1)
        return {"adv": torch.rand(4, 3, 8, 8)}

    first = cache.get_or_create(MATERIAL, create)
    again = AdvCache(CacheURL(url) / "adversarial").get_or_create(MATERIAL, create)
    assert len(calls) == 1 and torch.equal(first["adv"], again["adv"])
    assert cache.has(MATERIAL) and not cache.has({**MATERIAL, "seed": 1})
    blob = _manifest(cache)["blob"]
    stored = fsspec.open(str(cache.store.blob_path(blob)), "rb").open().read()
    assert blob == __import__("hashlib").sha256(stored).hexdigest()   # named by its content
    assert not str(cache.artifact_dir).startswith("memory:")          # report files stay local


def test_the_first_manifest_wins(url):
    one, two = AdvCache(url), AdvCache(url)
    one.put(MATERIAL, {"adv": torch.zeros(3)})
    two.put(MATERIAL, {"adv": torch.ones(3)})                 # a second writer of the same entry
    assert torch.equal(two.get(MATERIAL)["adv"], torch.zeros(3))


def test_two_writers_without_locks_go_on_with_the_committed_entry(url):
    """Both miss and both make the entry (an object store has no lock); each then returns what
    was committed first, so the two go on with the same tensors."""
    both_missed = threading.Barrier(2, timeout=30)
    results = {}

    def worker(me):
        cache = AdvCache(url)

        def create():
            both_missed.wait()   # neither has committed yet: both really make it
            return {"adv": torch.full((64,), float(me))}

        results[me] = (cache.get_or_create(MATERIAL, create), cache.stats)

    threads = [threading.Thread(target=worker, args=(me,)) for me in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (a, stats_a), (b, stats_b) = results[1], results[2]
    assert torch.equal(a["adv"], b["adv"])
    assert torch.equal(AdvCache(url).get(MATERIAL)["adv"], a["adv"])
    assert sorted([stats_a["generated"], stats_b["generated"]]) == [0, 1]   # the loser reads the winner's


def test_a_tampered_blob_on_an_object_store_is_detected_and_rebuilt(url, caplog):
    cache, calls = AdvCache(url), []

    def create():
        calls.append(1)
        return {"adv": torch.arange(48.0)}

    cache.get_or_create(MATERIAL, create)
    fs = fsspec.filesystem("memory")
    blob = cache.store._path(cache.store.blob_path(_manifest(cache)["blob"]))
    data = bytearray(fs.cat_file(blob))
    data[-20] ^= 0xFF
    fs.pipe_file(blob, bytes(data))
    rebuilt = AdvCache(url).get_or_create(MATERIAL, create)
    assert len(calls) == 2 and "checksum mismatch" in caplog.text
    assert torch.equal(rebuilt["adv"], torch.arange(48.0))
    assert torch.equal(AdvCache(url).get(MATERIAL)["adv"], torch.arange(48.0))   # the blob was rewritten


def test_the_model_cache_follows_vitrobust_cache_to_an_object_store(url, monkeypatch):
    monkeypatch.setenv("VITROBUST_CACHE", url)
    assert model_cache.cache_root() == CacheURL(url)
    trainings = []

    def train():
        trainings.append(1)
        return {"w": torch.arange(6.0)}

    state, made = model_cache.get_or_train("tiny:int8", "k1", train)
    again, made_again = model_cache.get_or_train("tiny:int8", "k1", train)
    assert (made, made_again, len(trainings)) == (True, False, 1)
    assert torch.equal(again["w"], torch.arange(6.0))
    assert fsspec.filesystem("memory").exists(f"{url}/models/tiny__int8-k1.json".split("://", 1)[1])


def test_a_file_url_is_the_local_folder(tmp_path):
    cache = AdvCache(f"file://{tmp_path}")
    cache.put(MATERIAL, {"adv": torch.ones(2)})
    assert isinstance(cache.root, Path) and cache.manifest_path(cache.key(MATERIAL)).is_file()
    assert torch.equal(AdvCache(tmp_path).get(MATERIAL)["adv"], torch.ones(2))
