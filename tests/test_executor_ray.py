"""The Ray executor (vitrobust/executor_ray.py) on this machine only: a local Ray and a
two-node ``ray.cluster_utils.Cluster``, both on 127.0.0.1, make the adversarial sets a serial
run makes, byte for byte, and the pytest session then decides from the cache alone.

Every Ray process these tests start listens on loopback (asserted), and each test is bounded by
an alarm, so a Ray that hangs fails the test instead of holding CI."""
import json
import signal
from contextlib import contextmanager

import pytest
import torch

from fill_helpers import from_cache, serial, sharded, spec_args  # noqa: F401  (fixtures)
from spec_helpers import fresh_cache  # noqa: F401  (a fixture)

from vitrobust import cli
from vitrobust.executor_ray import fill_cache, local_ray_env

try:
    import ray
except ImportError:   # the executor's one-line error is tested below either way
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="the ray extra is not installed (pip install -e '.[ray]')")

LIMIT = 300   # seconds any one Ray test may take (about 60 on a 2-core machine shared with other jobs)


class PastDeadline(Exception):
    """A Ray test ran too long (raised by the alarm; never retried)."""


@contextmanager
def deadline(seconds: int):
    def expire(signum, frame):
        raise PastDeadline(f"a Ray test ran past {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _start_cluster():
    """A head and one more node, both on this machine (loopback: ``local_ray_env``). A raylet
    gives its agent 15 s (not configurable) to start and aborts after, which a busy machine can
    miss on a cold start; one more try finds the imports warm."""
    from ray.cluster_utils import Cluster

    for attempt in (1, 2):
        cluster = Cluster(initialize_head=False)
        try:
            cluster.add_node(num_cpus=1, include_dashboard=False)
            cluster.add_node(num_cpus=1)
            return cluster
        except Exception as exc:   # noqa: BLE001 (Ray raises a bare Exception for a node that did not start)
            cluster.shutdown()
            if attempt == 2 or isinstance(exc, PastDeadline):
                raise


def _assert_loopback():
    nodes = ray.nodes()
    assert nodes and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    gcs = ray.get_runtime_context().gcs_address
    assert gcs.startswith("127.0.0.1:"), gcs


@needs_ray
def test_a_local_ray_run_makes_the_serial_sets_and_the_session_decides_from_the_cache(
        tmp_path, spec_args, serial, fresh_cache, monkeypatch):
    connected = []
    real_connect = __import__("vitrobust.executor_ray", fromlist=["connect"]).connect

    def connect_and_check(ray_module, address, **kw):   # while the instance is up: where it listens
        started = real_connect(ray_module, address, num_cpus=2)
        _assert_loopback()
        connected.append(started)
        return started

    monkeypatch.setattr("vitrobust.executor_ray.connect", connect_and_check)
    monkeypatch.chdir(tmp_path)
    try:
        with deadline(LIMIT):
            code = cli.main(["run", spec_args[0], "--executor", "ray", "--vitrobust-no-progress",
                             "-p", "no:randomly", f"--vitrobust-report-dir={tmp_path / 'reports'}"])
    finally:
        ray.shutdown()
    assert connected == [True] and not ray.is_initialized()
    assert code == 0
    ray_made = from_cache(fresh_cache, serial)
    assert all(torch.equal(ray_made[k], serial[k]) for k in serial)
    run = json.loads((tmp_path / "reports" / "latest" / "report.json").read_text())
    # every prediction was made on Ray, where the images were: the session loaded none of them
    assert run["cache"] == {"adversarial_generated": 0, "adversarial_reused": 0,
                            "predictions_generated": 0, "predictions_reused": 2 * 3 + 3 * 3,
                            "speeds_timed": 2, "speeds_reused": 0}   # the models table's, in the session
    assert [c["status"] for c in run["checks"]] == ["holds", "holds"]


@needs_ray
def test_a_two_node_cluster_on_loopback_makes_the_serial_sets(spec_args, serial, fresh_cache):
    local_ray_env()   # on loopback, and patient with a busy CI machine
    cluster = None
    try:
        with deadline(LIMIT):
            cluster = _start_cluster()
            assert cluster.address.startswith("127.0.0.1:")
            ray.init(address=cluster.address, log_to_driver=False)
            _assert_loopback()
            assert len(ray.nodes()) == 2
            summary = fill_cache(spec_args, address=cluster.address, echo=lambda line: None)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    assert summary.failed == [] and summary.mismatched == []
    assert summary.ran == {"model": 0, "clean": 2 * 3, "adversarial": len(serial)}   # 2 models x 3 shards
    ray_made = from_cache(fresh_cache, serial)
    assert all(torch.equal(ray_made[k], serial[k]) for k in serial)


def test_without_ray_the_executor_is_one_line_telling_how_to_install_it(monkeypatch, capsys, spec_args):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert cli.main(["run", spec_args[0], "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vitrobust: error: the Ray executor needs Ray: pip install 'vitrobust[ray]' (or: pip install ray)"
