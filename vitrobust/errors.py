"""One base class for the project's user-facing errors.

Every error a user can cause (a bad spec, zoo config, model name, attack, checkpoint or data
source) is a :class:`VitrobustError` whose message is one line naming the file, key or value at
fault. The command line and the pytest plugin print such errors as that one line; anything
else is a bug and keeps its traceback. Handlers in this project catch ``VitrobustError``, never
a broad ``ValueError`` or ``KeyError`` that could hide one.

It derives from ``ValueError`` so callers that already treat bad input as a ``ValueError`` keep
working.
"""
from __future__ import annotations


class VitrobustError(ValueError):
    """A user-facing problem; ``str(error)`` is one line that says what to change."""
