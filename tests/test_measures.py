"""The measure registry: each measure computed from per-image facts, declared once."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vitrobust import measures
from vitrobust.expr import measures as measures_in, parse_check
from vitrobust.measures import MeasureError, Observation, measure_kind, rate_kinds


class FakeScope:
    """What the engine gives a measure: clean correctness and which attacks fooled what."""

    def __init__(self, clean, fooled, values=None):
        self.clean, self.fooled_by, self.values = np.array(clean), {k: np.array(v) for k, v in fooled.items()}, values or {}

    def clean_correct(self, model):
        return self.clean

    def fooled(self, source, target, aliases):
        out = np.zeros_like(self.clean)
        for alias in aliases:
            out = out | self.fooled_by[alias]
        return out

    def model_value(self, model, key):
        return self.values[key]


def _measure(text):
    return measures_in(parse_check(f"{text} > 0"))[0]


SCOPE = FakeScope(clean=[1, 1, 1, 0, 1], fooled={"a": [1, 0, 0, 1, 0], "b": [0, 0, 1, 1, 0]},
                  values={"size_mb": 2.5})


def test_asr_counts_only_images_right_clean():
    obs = measure_kind("asr").compute(SCOPE, _measure("asr(m, a)"))
    assert obs.counts == (1, 4) and obs.value == 0.25 and math.isnan(obs.outcomes[3])


def test_any_is_the_worst_case_per_image():
    obs = measure_kind("asr").compute(SCOPE, _measure("asr(m, any[a, b])"))
    assert obs.counts == (2, 4)


def test_robust_acc_is_right_clean_and_under_attack_over_all_images():
    obs = measure_kind("robust_acc").compute(SCOPE, _measure("robust_acc(m, a)"))
    assert obs.counts == (3, 5) and obs.value == pytest.approx(0.6)
    assert not np.isnan(obs.outcomes).any()


def test_acc_and_constants():
    assert measure_kind("acc").compute(SCOPE, _measure("acc(m)")).counts == (4, 5)
    assert measure_kind("size_mb").compute(SCOPE, _measure("size_mb(m)")) == 2.5


def test_declarations_drive_rates_and_the_gate_direction():
    assert set(rate_kinds()) == {"asr", "transfer", "acc", "robust_acc"}
    assert set(rate_kinds("higher")) == {"asr", "transfer"}
    assert set(rate_kinds("lower")) == {"acc", "robust_acc"}
    assert measure_kind("transfer").args == "source -> model, attack"
    assert measure_kind("throughput").worse is None and not measure_kind("throughput").rate


def test_unknown_measure_lists_the_known_ones():
    with pytest.raises(MeasureError, match="robust_acc"):
        measure_kind("robustness")


def test_bad_declarations_are_refused():
    with pytest.raises(MeasureError):
        measures.register_measure(args="model, model")
    with pytest.raises(MeasureError):
        measures.register_measure(worse="sideways")


@given(st.lists(st.sampled_from([0.0, 1.0, math.nan]), min_size=1, max_size=50))
def test_rate_is_successes_over_the_denominator(outcomes):
    obs = measures.rate(outcomes)
    valid = [o for o in outcomes if not math.isnan(o)]
    if valid:
        assert obs.value == sum(valid) / len(valid) and obs.counts == (int(sum(valid)), len(valid))
    else:
        assert math.isnan(obs.value)


def test_observation_refuses_bad_outcomes():
    with pytest.raises(MeasureError, match="1.0, 0.0 or NaN"):
        Observation(0.5, np.array([0.5]))
    with pytest.raises(MeasureError, match="1-D"):
        Observation(0.5, np.zeros((2, 2)))


@pytest.mark.parametrize("word", ["monotonic", "any"])
def test_words_of_the_check_language_cannot_be_measures(word):
    def fn(ctx, m):
        return 0.0
    fn.__name__ = word
    with pytest.raises(MeasureError, match="word of the check language"):
        measures.register_measure()(fn)
