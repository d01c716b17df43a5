"""The untyped run records of vitrobust 0.1 (plain dicts), accepted at the entry points for now.

A pytest session started before an upgrade keeps the 0.1 ``run.py`` in memory and, at its end,
hands the store and the reports plain dicts. Reading those with :meth:`RunRecord.from_dict`
(the reader of ``report.json``, which knows schema 1) keeps such a run's results instead of
failing at the last step. Delete this module once no caller can pass a dict. No torch.
"""
from __future__ import annotations

from .record import RunRecord


def as_run_record(run) -> RunRecord:
    """``run`` itself if it is a :class:`RunRecord`; a dict read with ``RunRecord.from_dict``
    (its run id may be missing: ``""``); anything else is a TypeError (a caller's bug)."""
    if isinstance(run, RunRecord):
        return run
    if isinstance(run, dict):
        return RunRecord.from_dict({"run_id": "", **run})
    raise TypeError(f"expected a vitrobust.record.RunRecord, got {type(run).__name__}")
