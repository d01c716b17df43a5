"""Wires the vitrobust plugin for this repository.

An installed vitrobust registers its plugin through the ``pytest11`` entry point; from a plain
source checkout (no install) this loads it instead, so ``pytest specs/`` works either way.
"""
from importlib.metadata import entry_points

if not any(ep.name == "vitrobust" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["vitrobust.plugin"]
