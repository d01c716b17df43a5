"""Several processes on one cache (vitrobust/blobstore.py): spawned processes race on one key.

The races are arranged with events, not sleeps: a process that creates an entry waits until the
other one has looked for it (and missed), so without a lock both would create it, every time.
The processes come from one spawn pool per module, so torch is imported once per worker.
"""
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from vitrobust.advcache import AdvCache
from vitrobust.blobstore import LOCK_TIMEOUT_ENV, BlobStore, lock_timeout
from vitrobust.errors import VitrobustError

MATERIAL = {"source": "abc123", "threat_model": {"attack": "pgd", "eps": 0.03}, "data": "fp",
            "seed": 0, "strategy": "white-box"}
WAIT = 60            # seconds; only reached when something is broken
ROWS = 64 * 1024     # floats per tensor in the reader race: 256 KB, so a write takes a while


# -- in the spawned workers ----------------------------------------------------------------------
def _count(path):
    with open(path, "a") as fh:   # one short O_APPEND write per call: lines do not interleave
        fh.write(f"{os.getpid()}\n")


def _wait_for_others(looked, me):
    for other, event in enumerate(looked):
        if other != me and not event.wait(WAIT):
            raise TimeoutError(f"process {other} never looked")


def _adv_get_or_create(root, me, looked):
    """get_or_create one key; create() counts its calls and waits until the other process has
    looked for the entry, so a second create() would happen unless a lock stops it."""
    cache = AdvCache(root)
    get = cache.get

    def get_noting(material):
        found = get(material)
        looked[me].set()
        return found

    def create():
        _count(os.path.join(root, "creates"))
        _wait_for_others(looked, me)
        generator = torch.Generator().manual_seed(os.getpid())   # two creates would differ
        return {"adv": torch.rand(4, 3, 8, 8, generator=generator),
                "delta": torch.rand(1, 3, 8, 8, generator=generator)}

    cache.get = get_noting
    return cache.get_or_create(MATERIAL, create), cache.stats


def _cached_or_trained(cache_dir, me, looked):
    """Give a tiny model its weights through the model cache (release.cached_or_trained, as every
    zoo model gets them) in an empty cache. Training is a counted stand-in that draws the
    weights from the process id (two trainings would give two models) and waits until the
    other process has looked in the cache."""
    from vitrobust.zoo import cache, release

    load = cache.load_weights

    def load_noting(name, key):
        found = load(name, key)
        looked[me].set()
        return found

    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model = SimpleNamespace(net=net, info=SimpleNamespace(meta={}))

    def train():
        _count(os.path.join(cache_dir, "trainings"))
        _wait_for_others(looked, me)
        generator = torch.Generator().manual_seed(os.getpid())
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    saved = os.environ.get("VITROBUST_CACHE")   # a pool worker runs other tasks after this one
    os.environ["VITROBUST_CACHE"] = cache_dir
    cache.load_weights = load_noting
    try:
        release.cached_or_trained(model, "tiny:int8", "k1", "no-release", train)
        return cache.state_hash(net.state_dict()), net.state_dict()
    finally:
        cache.load_weights = load
        if saved is None:
            del os.environ["VITROBUST_CACHE"]
        else:
            os.environ["VITROBUST_CACHE"] = saved


def _values(value):
    return {"adv": torch.full((ROWS,), float(value)), "delta": torch.full((1, 16), float(value))}


def _writer(root, me, start, stop, progress):
    """Re-put the key with this writer's own contents until told to stop."""
    cache, puts = AdvCache(root), 0
    start.wait(WAIT)
    while not stop.is_set() and puts < 10_000:
        cache.put(MATERIAL, _values(100 * (me + 1) + puts % 3))
        puts += 1
        progress[me] = puts
    return puts


def _reader(root, start, stop, progress, reads, puts_each):
    """get() in a loop while the writers re-put: (misses, mixed entries, reads)."""
    cache, misses, mixed, done = AdvCache(root), 0, 0, 0
    start.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while (done < reads or min(progress.values()) < puts_each) and time.monotonic() < deadline:
        found = cache.get(MATERIAL)
        done += 1
        if found is None:
            misses += 1
        elif not (found["adv"] == found["delta"][0, 0]).all():
            mixed += 1
    stop.set()
    return misses, mixed, done


# -- the tests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spawned():
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        yield pool, manager


def _race(pool, manager, task, *args, processes=2):
    looked = [manager.Event() for _ in range(processes)]
    pending = [pool.apply_async(task, (*args, me, looked)) for me in range(processes)]
    return [p.get(timeout=4 * WAIT) for p in pending]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_two_processes_create_one_adversarial_set_once_and_read_the_same_tensors(spawned, tmp_path):
    (a, stats_a), (b, stats_b) = _race(*spawned, _adv_get_or_create, str(tmp_path))
    assert len(_lines(tmp_path / "creates")) == 1
    assert torch.equal(a["adv"], b["adv"]) and torch.equal(a["delta"], b["delta"])
    assert sorted([stats_a, stats_b], key=lambda s: s["generated"]) == [
        {"generated": 0, "reused": 1}, {"generated": 1, "reused": 0}]
    assert torch.equal(AdvCache(tmp_path).get(MATERIAL)["adv"], a["adv"])


def test_two_processes_train_one_model_once_and_load_the_same_weights(spawned, tmp_path):
    (hash_a, state_a), (hash_b, state_b) = _race(*spawned, _cached_or_trained, str(tmp_path))
    assert len(_lines(tmp_path / "trainings")) == 1
    assert hash_a == hash_b and state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert json.loads((tmp_path / "models" / "tiny__int8-k1.json").read_text())["model"] == "tiny:int8"


def test_a_reader_never_misses_a_committed_entry_while_two_writers_re_put_it(spawned, tmp_path):
    pool, manager = spawned
    AdvCache(tmp_path).put(MATERIAL, _values(1))          # committed before anyone reads
    start, stop = manager.Barrier(3), manager.Event()
    progress = manager.dict({0: 0, 1: 0})
    writers = [pool.apply_async(_writer, (str(tmp_path), me, start, stop, progress)) for me in (0, 1)]
    reader = pool.apply_async(_reader, (str(tmp_path), start, stop, progress, 80, 10))
    misses, mixed, reads = reader.get(timeout=4 * WAIT)
    puts = [w.get(timeout=4 * WAIT) for w in writers]
    assert min(puts) >= 10 and reads >= 80                # the writers did race the reader
    assert (misses, mixed) == (0, 0)
    assert not list(tmp_path.rglob("*.tmp"))


def _entry_with_blob(tmp_path):
    cache, calls = AdvCache(tmp_path), []

    def create():
        calls.append(1)
        return {"adv": torch.arange(48.0).view(1, 3, 4, 4)}   # the same bytes every time

    cache.get_or_create(MATERIAL, create)
    manifest = cache.manifest_path(cache.key(MATERIAL))
    return cache, create, calls, manifest, cache.store.blob_path(json.loads(manifest.read_text())["blob"])


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "torn blob"),
    (lambda data: data[:-9] + bytes([data[-9] ^ 0x01]) + data[-8:], "checksum mismatch"),
    (lambda data: None, "is missing"),
])
def test_a_torn_altered_or_missing_blob_is_detected_and_rebuilt(tmp_path, caplog, damage, message):
    cache, create, calls, manifest, blob = _entry_with_blob(tmp_path)
    damaged = damage(blob.read_bytes())
    blob.unlink() if damaged is None else blob.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        assert cache.get(MATERIAL) is None
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert message in record.getMessage() and "\n" not in record.getMessage()
    assert not manifest.exists()                           # dropped: the entry reads as missing
    cache.get_or_create(MATERIAL, create)
    # the same bytes again, so the same blob name: the damaged file was rewritten, not trusted
    assert len(calls) == 2 and torch.equal(cache.get(MATERIAL)["adv"], torch.arange(48.0).view(1, 3, 4, 4))


def test_a_damaged_manifest_is_rebuilt_and_an_unknown_layout_is_a_miss(tmp_path, caplog):
    cache, create, calls, manifest, _ = _entry_with_blob(tmp_path)
    manifest.write_text('{"protocol": 1, "blob": "../../et')   # torn JSON
    with caplog.at_level(logging.WARNING):
        assert cache.get(MATERIAL) is None and "not JSON" in caplog.text
    cache.get_or_create(MATERIAL, create)
    manifest.write_text(json.dumps({"protocol": 1, "blob": "../../etc/passwd", "size": 1}))
    assert cache.get(MATERIAL) is None and "names no blob" in caplog.text
    manifest.write_text(json.dumps({"key": "k", "sha256": "0" * 64}))   # a layout before
    assert cache.get(MATERIAL) is None
    cache.get_or_create(MATERIAL, create)
    assert len(calls) == 3 and cache.get(MATERIAL) is not None


def test_stale_temporary_files_of_crashed_writers_are_ignored(tmp_path):
    cache, calls = AdvCache(tmp_path), []
    manifest = cache.manifest_path(cache.key(MATERIAL))
    blobs = tmp_path / "blobs" / "ab"
    blobs.mkdir(parents=True)
    manifest.parent.mkdir(parents=True)
    stale = [manifest.with_name(f".{manifest.name}.0123456789abcdef0123456789abcdef.tmp"),
             blobs / f".{'ab' * 32}.pt.0123456789abcdef0123456789abcdef.tmp",
             manifest.with_name(f"{cache.key(MATERIAL)}.pt.tmp4242")]          # the layout before
    stale[0].write_text(json.dumps({"protocol": 1, "blob": "ab" * 32, "size": 4}))
    stale[1].write_bytes(b"half")
    stale[2].write_bytes(b"half a torch file")
    assert cache.get(MATERIAL) is None
    made = cache.get_or_create(MATERIAL, lambda: calls.append(1) or {"adv": torch.ones(2)})
    assert len(calls) == 1 and torch.equal(cache.get(MATERIAL)["adv"], made["adv"])
    assert all(path.exists() for path in stale)            # not read, not someone else's to delete


def _hold_lock(path):
    """A separate process holding ``path``'s lock until it is killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import filelock, sys, time\n"
                               "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
                               "print('held', flush=True); time.sleep(600)", str(path)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_dead_lock_holder_blocks_no_one(tmp_path, monkeypatch, caplog):
    store = BlobStore(tmp_path)
    store.lock_path("e").parent.mkdir(parents=True, exist_ok=True)
    holder = _hold_lock(store.lock_path("e"))
    try:
        monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0.2")
        with caplog.at_level(logging.INFO), store.lock("e") as held:   # a live holder: waited for
            assert not held and "still locked by another process" in caplog.text
        assert "waiting for another process" in caplog.text
    finally:
        holder.kill()                                      # SIGKILL: no chance to release
        holder.wait()
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, str(WAIT))
    start = time.monotonic()
    with store.lock("e") as held:                          # the kernel released the dead one's lock
        assert held and time.monotonic() - start < WAIT / 2


def test_past_the_lock_timeout_the_entry_is_made_without_the_lock(tmp_path, monkeypatch, caplog):
    cache = AdvCache(tmp_path)
    lock = cache.store.lock_path(AdvCache.entry(cache.key(MATERIAL)))
    lock.parent.mkdir(parents=True)
    holder = _hold_lock(lock)
    try:
        monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0.2")
        with caplog.at_level(logging.WARNING):
            made = cache.get_or_create(MATERIAL, lambda: {"adv": torch.ones(3)})
        assert "making it without the lock" in caplog.text and torch.equal(cache.get(MATERIAL)["adv"], made["adv"])
    finally:
        holder.kill()
        holder.wait()


def test_locks_are_per_key(tmp_path, monkeypatch, caplog):
    cache = AdvCache(tmp_path)
    lock = cache.store.lock_path(AdvCache.entry(cache.key(MATERIAL)))
    lock.parent.mkdir(parents=True)
    holder = _hold_lock(lock)
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0.2")
    try:
        with caplog.at_level(logging.INFO, logger="vitrobust.blobstore"):   # another key: no waiting
            cache.get_or_create({**MATERIAL, "seed": 1}, lambda: {"adv": torch.ones(3)})
        assert "waiting" not in caplog.text
        with caplog.at_level(logging.INFO, logger="vitrobust.blobstore"):   # the held key: waits
            cache.get_or_create(MATERIAL, lambda: {"adv": torch.ones(3)})
        assert "waiting" in caplog.text
    finally:
        holder.kill()
        holder.wait()


def test_lock_timeout_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(LOCK_TIMEOUT_ENV, raising=False)
    assert lock_timeout() is None
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "2.5")
    assert lock_timeout() == 2.5
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(VitrobustError, match=LOCK_TIMEOUT_ENV):
        lock_timeout()
