"""Shared test setup: a persistent per-checkout model cache and the tiny fixture models."""
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fixtures.models  # noqa: E402,F401  (registers vit_fixture, vit_fixture_wide, cnn_fixture)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long property runs (spec fuzzing at full size); "
                                       "opt in with VITROBUST_SLOW=1")
    # Trained fixture models persist between local runs (pytest's cache dir) and start fresh in CI.
    if "VITROBUST_CACHE" not in os.environ:
        os.environ["VITROBUST_CACHE"] = str(_model_cache_dir(config))


def _model_cache_dir(config) -> Path:
    """pytest's cache dir when the cacheprovider is on; with ``-p no:cacheprovider`` (read-only
    CI checkouts) ``config.cache`` does not exist, so a per-user, per-checkout folder under the
    temp dir keeps the fixture models instead."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return cache.mkdir("vitrobust-test-cache")
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    path = Path(tempfile.gettempdir()) / f"vitrobust-test-cache-{uid}-{checkout}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        # a predictable name in a shared /tmp: only trust a folder this user owns
        if not hasattr(os, "getuid") or path.stat().st_uid == os.getuid():
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="vitrobust-test-cache-"))


@pytest.fixture(scope="session")
def digits_test():
    from vitrobust.data import load_dataset
    return load_dataset("digits", "test", limit=128)


@pytest.fixture(scope="session")
def vit_model():
    from vitrobust.zoo import load_model
    return load_model("vit_fixture", progress=False)


@pytest.fixture(scope="session")
def cnn_model():
    from vitrobust.zoo import load_model
    return load_model("cnn_fixture", progress=False)
