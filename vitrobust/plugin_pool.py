"""``--vitrobust-jobs``: make what the selected checks need on a local pool before they run.

Registered by :mod:`vitrobust.plugin` when the option asks for more than one process and the
session is not a pytest-xdist one (xdist spreads the checks instead). Once collection and
deselection are done, the session plans exactly the checks it is about to run, with its own
engine (:mod:`vitrobust.planner`), and, when :func:`vitrobust.executor_pool.jobs_for` says a pool
pays, makes every missing model, prediction and adversarial shard on it
(:mod:`vitrobust.fill`). The checks then run as always and find everything in the cache.

Planning in the session itself, rather than in a separate collection before it, means the
models and data slices the plan loads are the ones the checks use: a warm run, where there is
nothing to make, pays only for the plan's cache lookups.

A plan that fails (a model that does not build, a data folder that does not read) starts no
pool: one line says so, and the checks report the error themselves, as in a serial run.
"""
from __future__ import annotations

import pytest

NAME = "vitrobust-pool"


def wanted(config) -> bool:
    jobs = config.getoption("vitrobust_jobs")
    xdist = getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput")
    return jobs != "1" and not xdist and not config.getoption("collectonly")


class PoolFill:
    """Plans the session's checks and fills the cache on a pool, between collection and the run."""

    def __init__(self, config):
        self.config = config

    @pytest.hookimpl(trylast=True)   # after -k / -m deselection
    def pytest_collection_finish(self, session):
        from .collect import CheckItem
        from .errors import VitrobustError
        from .executor_pool import PoolBackend, jobs_for
        from .fill import fill_cache
        from .planner import plan
        from .plugin import session_of
        from .selection import Selected

        selected = [Selected(i.nodeid, i.spec, i.check) for i in session.items if isinstance(i, CheckItem)]
        if not selected:
            return
        engine = session_of(self.config).engine
        echo = self._echo
        try:
            planned = plan(engine, selected)
        except VitrobustError:   # the checks that need it report the error, once each
            echo("pool: not used: the plan needs a model or data that fails (the checks say which)")
            return
        workers = jobs_for(self.config.getoption("vitrobust_jobs"), planned.totals())
        if workers > 1:
            with self._terminal():
                fill_cache([], PoolBackend(workers, progress=engine.progress), echo=echo,
                           planned=(selected, engine, planned))

    def _terminal(self):
        """Output that shows while pytest captures (the progress bar, the pool's lines)."""
        capture = self.config.pluginmanager.getplugin("capturemanager")
        if capture is None:
            from contextlib import nullcontext

            return nullcontext()
        return capture.global_and_fixture_disabled()

    def _echo(self, line: str) -> None:
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:
            print(line)
        else:
            reporter.write_line(line)
