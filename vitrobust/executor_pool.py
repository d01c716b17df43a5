"""Fill the cache with a pool of processes on this machine; the pytest session then decides.

``vitrobust run`` on a machine with several cores makes the units a cold run needs
(:mod:`vitrobust.fill`) in ``--jobs`` worker processes before its checks run (the session plans
and starts the pool itself: :mod:`vitrobust.plugin_pool`, option ``--vitrobust-jobs``). Why
processes rather than torch's threads: the default zoo's models are small (32x32 inputs, 65
tokens), and a forward pass at these sizes gains little from a second intra-op thread (about
1.3x on ``deit_small``), while two processes with one thread each run two attacks side by side
at nearly 2x. Each worker gets ``cores // jobs`` torch threads.

- **Order**: model builds first, in waves (a variant after its base), then every clean and
  adversarial shard still missing, the most expensive first (by the planner's estimates:
  longest first keeps the workers evenly busy to the end).
- **Same bytes as a serial run**: each worker asks an :class:`~vitrobust.engine.Engine` built
  with the run's settings for the unit, as the deciding session would, and keeps it (and its
  loaded models) for its next unit.
- **Failures**: a unit that raises is reported in one line and left to the deciding session; a
  worker that dies (out of memory, killed) breaks the pool, and every unit it had not finished
  is left to the deciding session too. Nothing made before is lost: each unit is cached as it
  is made.
- **When**: only when there is enough to do to pay for the workers' start (about 5 s each, the
  imports of torch and timm): ``--jobs auto`` (the default) uses a pool when the plan's
  estimated work is at least :data:`MIN_SECONDS` CPU-seconds and the machine has two cores or
  more; ``--jobs N`` with N > 1 always does; ``--jobs 1`` never does.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .fill import Settings, depth_waves, run_unit, work_of

MIN_SECONDS = 60.0   # estimated CPU-seconds of work below which a pool's start costs more than it saves


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def parse_jobs(value: str) -> str:
    """``--jobs`` / ``--vitrobust-jobs``: 'auto' or a number of processes (1 or more)."""
    if value == "auto" or (value.isdigit() and int(value) >= 1):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is not 'auto' or a number of processes (1 or more)")


def jobs_for(requested: str, plan_totals: dict) -> int:
    """Workers for ``--jobs requested`` ('auto' or a number) given the plan's totals: 1 means
    no pool (the deciding session makes everything itself)."""
    todo = sum(plan_totals[k]["todo"] for k in ("model", "clean", "adversarial"))
    if requested == "auto":
        cores = usable_cores()
        return cores if cores > 1 and todo > 1 and plan_totals["cost"] >= MIN_SECONDS else 1
    return int(requested) if todo > 1 else 1


def _start_worker(threads: int) -> None:
    import warnings

    import torch

    torch.set_num_threads(threads)
    # a worker's warnings would interleave on the terminal; the deciding session builds the
    # same models and records their warnings in the run record
    warnings.simplefilter("ignore")


class PoolBackend:
    """Units on ``jobs`` local processes (spawned: a forked torch is not safe to use)."""

    name = "pool"

    def __init__(self, jobs: int, progress: bool = True):
        self.jobs = jobs
        self.threads = max(1, usable_cores() // jobs)
        self.progress = progress

    def run(self, settings: Settings, units: list, chained: bool):
        if not units:
            return
        from tqdm import tqdm

        waves = depth_waves(units) if chained else [units]
        bar = tqdm(total=len(units), unit="unit", disable=not self.progress, leave=False,
                   desc=f"{'building models' if chained else 'making sets and predictions'} on {self.jobs} processes")
        with bar, ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_start_worker, initargs=(self.threads,)) as pool:
            for wave in waves:
                for unit, made in self._wave(pool, settings, wave):
                    bar.update()
                    yield unit, made

    @staticmethod
    def _wave(pool, settings: Settings, units: list):
        futures, unsent = {}, []
        for unit in units:
            try:
                futures[pool.submit(run_unit, settings, work_of(unit))] = unit
            except BrokenProcessPool as exc:   # a worker died in an earlier wave
                unsent.append((unit, exc))
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        made = future.result()
                    except Exception as exc:   # the unit's own error, or the pool broke under it
                        made = exc
                    yield futures[future], made
        except BaseException:   # Ctrl-C, or the caller stopped: no queued unit starts after this
            for future in pending:
                future.cancel()
            raise
        yield from unsent

