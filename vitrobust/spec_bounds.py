"""How much work one spec may ask for, checked when it is loaded (at collection, before anything
runs): a spec from a pull request must not be able to book a shared CI machine for a week.

============  =========  ===========================================================================
bound         default    what it limits
============  =========  ===========================================================================
``steps``     10,000     iterations of one attack: ``steps``, ``random_steps``, ``epochs`` (UAP)
``queries``   100,000    model queries of one black-box attack: ``n_queries``, ``directions``
``restarts``  100        random restarts of one attack (``restarts``, ``n_restarts``)
``matrix``    1,000      checks one spec expands to (each check times its matrix cells)
``images``    100,000    ``data.limit`` and ``data.fit_limit`` (``null``, the whole split, is the
                         data's own size, which the run chooses, not the spec)
============  =========  ===========================================================================

The defaults are far above every shipped spec (10 steps, 200 queries, 30 checks, 450 images).
``$VITROBUST_SPEC_BOUNDS`` raises or lowers any of them for a run, e.g.
``VITROBUST_SPEC_BOUNDS="steps=50000,images=1281167"``. An error names the bound and the variable.
"""
from __future__ import annotations

import os

from .errors import VitrobustError

__all__ = ["ENV", "DEFAULTS", "ATTACK_PARAMS", "bounds", "over_bound"]

ENV = "VITROBUST_SPEC_BOUNDS"
DEFAULTS = {"steps": 10_000, "queries": 100_000, "restarts": 100, "matrix": 1_000, "images": 100_000}
# attack parameter -> the bound it counts against (parameters not named here are not work counts)
ATTACK_PARAMS = {"steps": "steps", "random_steps": "steps", "epochs": "steps",
                 "n_queries": "queries", "queries": "queries", "directions": "queries",
                 "restarts": "restarts", "n_restarts": "restarts"}


class BoundsError(VitrobustError):
    """``$VITROBUST_SPEC_BOUNDS`` is malformed."""


def bounds() -> dict:
    """The bounds in force: :data:`DEFAULTS` with ``$VITROBUST_SPEC_BOUNDS`` applied."""
    result = dict(DEFAULTS)
    text = os.environ.get(ENV, "").strip()
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip().replace("_", "")
        if name not in DEFAULTS or not value.isdigit() or not value.isascii() or int(value) < 1:
            raise BoundsError(f"${ENV}: expected name=N pairs with N a positive whole number and name one of "
                              f"{', '.join(DEFAULTS)}, got {part!r}")
        result[name] = int(value)
    return result


def over_bound(kind: str, value) -> str | None:
    """The problem, naming the bound, when the number ``value`` is above bound ``kind``; None
    when it is within it or not a number (the parameter's own check refuses those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    limit = bounds()[kind]
    if not value > limit:      # NaN passes on to the attack's own check, which refuses it
        return None
    shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return (f"{shown} is above the bound {kind}={limit:,} on the work a spec may request "
            f"(raise it with ${ENV}={kind}=N)")
