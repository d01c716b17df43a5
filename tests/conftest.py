"""Shared test setup: a persistent per-checkout model cache and the tiny fixture models."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fixtures.models  # noqa: E402,F401  (registers vit_fixture, vit_fixture_wide, cnn_fixture)


def pytest_configure(config):
    # Trained fixture models persist between local runs (pytest's cache dir) and start fresh in CI.
    if "VITROBUST_CACHE" not in os.environ:
        os.environ["VITROBUST_CACHE"] = str(config.cache.mkdir("vitrobust-test-cache"))


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
