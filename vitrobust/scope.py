"""What a measure function sees (:mod:`vitrobust.measures`): the run's engine, bound to one
spec's attacks and data slice, so a measure asks for "clean correctness of this model" or
"fooled by these attacks" without knowing about slices, caches or replicas."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .adversarial import AttackConfig
from .dataslice import DataSlice

if TYPE_CHECKING:
    from .engine import Engine


class Scope:
    """What a measure function sees (see :mod:`vitrobust.measures`): the engine, bound to one
    spec's attacks and data slice."""

    def __init__(self, engine: "Engine", attacks: dict[str, dict], data_slice: DataSlice):
        self.engine, self.attacks, self.data_slice = engine, attacks, data_slice

    def configs(self, measure) -> tuple:
        if measure.attack is None:
            return ()
        return tuple(AttackConfig.from_spec(self.attacks[a]) for a in measure.attack.names)

    def clean_correct(self, model: str) -> np.ndarray:
        return self.engine.clean_correct(model, self.data_slice)

    def fooled(self, source: str, target: str, aliases) -> np.ndarray:
        out = None
        for alias in aliases:
            fooled = self.engine.fooled(source, target, AttackConfig.from_spec(self.attacks[alias]),
                                        self.data_slice)
            out = fooled if out is None else (out | fooled)
        return out

    def model_value(self, model: str, key: str) -> float:
        # a check that names a speed has it timed now, even where the models table's speeds wait
        return getattr(self.engine.model_summary(model, timed=True if key == "throughput" else None), key)

    def keep_ratio(self, model: str) -> float:
        """Patch tokens kept per pruning stage on this slice, mean over stages (:mod:`.in_effect`)."""
        from .in_effect import keep_ratio
        net = self.engine.model(model)
        return keep_ratio(net, self.engine.data(self.data_slice, net.info.input_size).pixels)
