"""Every default a spec or a run can leave out, in one place (no torch).

The spec loader, the engine, the plugin and the gate read these; nothing else repeats them.
"""
from __future__ import annotations

from .errors import VitrobustError

CONFIDENCE = 0.95          # paired tests and intervals (a spec's `confidence:` overrides it)
MARGIN = 0.05              # the gate: how far a rate may move the worse way before it regresses
INCONCLUSIVE = "fail"      # what an inconclusive check does: fail | skip | xfail
INCONCLUSIVE_POLICIES = ("fail", "skip", "xfail")
DATA_SOURCE = "digits"     # the embedded default data set (ships with scikit-learn)
SPLIT = "test"             # the split a spec scores on
IMAGE_LIMIT = 450          # images per spec when it gives no `limit:` (the whole digits test split)
FIT_SPLIT = "val"          # universal perturbations are fitted here, scored on SPLIT (disjoint)
FIT_LIMIT = None           # images of the fit split used to fit (None: all of them)

# How a gradient attack reaches its target model (see vitrobust/attacks/strategy.py):
#   white-box         the model's own gradients
#   black-box         only for attacks that need no gradients
#   straight-through  the model's forward, its declared surrogate's gradient (INT8 -> FP32 parent)
#   transfer          made on the model's declared surrogate, scored on the model
#   transfer:<model>  made on the named model, scored on the target
STRATEGIES = ("white-box", "black-box", "straight-through", "transfer", "transfer:<model>")


class StrategyError(VitrobustError):
    """A strategy text that is none of :data:`STRATEGIES`."""


def parse_strategy(text) -> tuple[str, str | None]:
    """``(kind, surrogate model or None)`` for a strategy text; StrategyError names the known ones."""
    if isinstance(text, str):
        if text in STRATEGIES[:4]:
            return text, None
        if text.startswith("transfer:") and text[len("transfer:"):].strip():
            return "transfer", text[len("transfer:"):].strip()
    raise StrategyError(f"unknown strategy {text!r} (known: {', '.join(STRATEGIES)})")
