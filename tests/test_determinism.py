"""Determinism, stated and held: the same seed on the same machine makes bitwise the same
adversarial images and the same numbers; the run record says what that depends on; the reports
show it; the gate says when a baseline was made under other numerics.

The attack runs are real: the trained fixture models on 16 digits, each attack run twice, each
time by a new engine over empty adversarial and prediction caches (only the trained models are
shared, and they are what is held fixed).
"""
import dataclasses

import pytest
import torch

from run_factory import clone, make_run
from vitrobust.adversarial import AttackConfig
from vitrobust.engine import Engine
from vitrobust.expr import parse_check
from vitrobust.gate import comparability_notes
from vitrobust.numerics import FIELDS, numerics
from vitrobust.record import RunRecord
from vitrobust.report_text import markdown, terminal_summary

DATA = {"split": "test", "limit": 16}
ATTACKS = {"pgd": {"name": "pgd", "eps": 4 / 255, "steps": 3},             # random start, seed 0
           "pgd_seed1": {"name": "pgd", "eps": 4 / 255, "steps": 3, "seed": 1},
           "square": {"name": "square", "eps": 8 / 255, "n_queries": 10},  # random search
           "uap": {"name": "uap_pgd", "eps": 8 / 255, "epochs": 1}}        # and a fitted delta
CHECKS = ["asr(vit_fixture, pgd) >= 0", "asr(vit_fixture, square) >= 0", "asr(vit_fixture, uap) >= 0",
          "transfer(vit_fixture -> cnn_fixture, pgd) >= 0"]


def _session(root):
    """One fresh engine over empty caches: every check, then the sets and the numbers it made."""
    engine = Engine(adv_cache_dir=root, progress=False, defer_timings=True)   # no speeds: not compared
    for text in CHECKS:
        engine.evaluate(parse_check(text), ATTACKS, DATA, "determinism")
    data_slice = engine.data_slice(DATA)
    sets = {alias: engine.adversarial_set("vit_fixture", AttackConfig.from_spec(ATTACKS[alias]), data_slice)
            for alias in ("pgd", "square", "uap", "pgd_seed1")}
    numbers = {m.key: (m.value, m.k, m.n, m.outcomes) for m in engine.measurements.values()}
    return sets, numbers, engine


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().numpy().tobytes()


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    return _session(tmp_path_factory.mktemp("first")), _session(tmp_path_factory.mktemp("second"))


def test_the_same_seed_makes_bitwise_the_same_images_and_numbers(two_sessions):
    (first, numbers_a, engine_a), (second, numbers_b, engine_b) = two_sessions
    assert engine_a.adv_cache.stats["reused"] == engine_b.adv_cache.stats["reused"] == 0   # made, not read
    for alias in ("pgd", "square", "uap"):
        assert _bits(first[alias].images) == _bits(second[alias].images), alias
        assert first[alias].key == second[alias].key
    with open(first["uap"].delta_path, "rb") as a, open(second["uap"].delta_path, "rb") as b:
        assert a.read() == b.read()                      # the fitted perturbation too
    assert numbers_a == numbers_b and len(numbers_a) >= len(CHECKS)


def test_another_seed_makes_other_images_so_the_comparison_can_fail(two_sessions):
    (first, _, _), _ = two_sessions
    assert _bits(first["pgd"].images) != _bits(first["pgd_seed1"].images)


# -- what the record says -----------------------------------------------------------------------
def test_the_record_holds_this_process_numerics():
    found = numerics()
    assert set(found) == set(FIELDS)
    assert found["threads"] == torch.get_num_threads()
    assert found["deterministic"] == torch.are_deterministic_algorithms_enabled()
    assert found["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert found["matmul_precision"] == torch.get_float32_matmul_precision()
    run = make_run()
    run.config = dataclasses.replace(run.config, **found)
    assert RunRecord.from_dict(run.to_dict()).config == run.config     # round trip


def test_a_record_from_before_the_numerics_reads_them_as_unknown():
    old = RunRecord.from_dict({"run_id": "old", "config": {"data": "digits"}, "versions": {"torch": "2.3.0"}})
    assert all(getattr(old.config, key) is None for key in FIELDS)
    assert terminal_summary(old).splitlines()[1] == "numerics: torch 2.3.0, cpu fp32"


def _with(run, run_id, torch_version=None, **config):
    out = clone(run, run_id)
    out.config = dataclasses.replace(out.config, **config)
    if torch_version:
        out.versions = {**out.versions, "torch": torch_version}
    return out


NUMERICS = {"threads": 8, "deterministic": False, "cpu_capability": "AVX2", "matmul_precision": "highest"}


def test_the_reports_show_the_numerics_in_their_header():
    run = _with(make_run(), "r", **NUMERICS)
    line = "torch 2.14.1, cpu fp32, 8 threads, AVX2, deterministic algorithms off, matmul highest"
    assert terminal_summary(run).splitlines()[1] == f"numerics: {line}"
    assert f"Numerics: {line}." in markdown(run).split("## Summary")[0]


# -- the gate's note ------------------------------------------------------------------------------
@pytest.mark.parametrize("change, says", [
    ({"threads": 2}, "threads 8 there, 2 here"),
    ({"torch_version": "2.15.0"}, "torch 2.14.1 there, 2.15.0 here"),
    ({"cpu_capability": "AVX512", "deterministic": True},
     "deterministic False there, True here; cpu_capability AVX2 there, AVX512 here"),
])
def test_the_gate_notes_other_numerics_in_one_line(change, says):
    base = _with(make_run(), "base", **NUMERICS)
    cur = _with(base, "cur", **change)
    notes = [n for n in comparability_notes(cur, base) if "numerics" in n]
    assert len(notes) == 1 and says in notes[0] and "\n" not in notes[0], notes
    assert comparability_notes(_with(base, "same"), base) == []


def test_the_gate_says_nothing_where_the_baseline_did_not_record_them():
    base = make_run()                                     # as written before the numerics existed
    assert comparability_notes(_with(base, "cur", **NUMERICS), base) == []
