"""Plots read model names through ModelName, keep-rates from the models' meta, attacks by alias."""
import dataclasses
import re
from pathlib import Path

import numpy as np

from run_factory import find, make_run
from vitrobust.plots import base_of, keep_rate_lines, make_plots, uap_parts
from vitrobust.record import ModelRecord, RunRecord

ROOT = Path(__file__).resolve().parents[1]


def test_plots_never_split_a_name_on_colons_themselves():
    source = (ROOT / "vitrobust" / "plots.py").read_text()
    assert not re.search(r"""split\(\s*['"]:['"]""", source)


def test_base_of_is_meta_base_else_the_name_without_its_last_suffix():
    assert base_of("deit_tiny:prune0.7", ModelRecord("deit_tiny:prune0.7")) == "deit_tiny"
    assert base_of("deit_tiny:distilled:prune0.5", ModelRecord("x")) == "deit_tiny:distilled"
    assert base_of("deit_tiny", ModelRecord("deit_tiny")) == "deit_tiny"
    assert base_of("a:prune0.5", ModelRecord("a:prune0.5", meta={"base": "b"})) == "b"


def test_uap_key_of_a_compressed_model():
    # The model part may carry suffixes: the attack is what follows the last ':'.
    assert uap_parts("uap:deit_tiny:int8:uap") == ("deit_tiny:int8", "uap")
    assert uap_parts("uap:deit_tiny:uap-0123abcd") == ("deit_tiny", "uap-0123abcd")


def test_uap_of_a_compressed_model_is_drawn(tmp_path):
    np.save(tmp_path / "u.npy", np.full((3, 8, 8), 1 / 255, np.float32))
    run = RunRecord("u", artifacts={"uap:deit_tiny:int8:uap": str(tmp_path / "u.npy"),
                                    "uap:not a model:uap": str(tmp_path / "u.npy")})
    plots, notes = make_plots(run)
    assert [p.name for p in plots] == ["uap_deit_tiny_int8_uap"]
    assert len(notes) == 1 and notes[0].startswith("uap:not a model:uap: not uap:<model>:<attack>")


def test_keep_rate_lines_per_family_and_attack_alias():
    run = make_run()
    lines = keep_rate_lines(run)
    assert set(lines) == {(base, "pgd", style) for base in ("deit_tiny", "deit_small")
                          for style in ("asr", "transfer")}
    asr = lines[("deit_tiny", "pgd", "asr")]
    assert [rate for rate, _ in asr] == [0.5, 0.7, 1.0]
    assert asr[0][1] is find(run, "asr(deit_tiny:prune0.5, pgd)")


def test_keep_rate_comes_from_meta_not_from_the_name():
    run = make_run()
    for name, model in run.models.items():
        if name.startswith("deit_small:prune"):
            model.meta = {k: v for k, v in model.meta.items() if k != "keep_rate"}
    families = {base for base, _, _ in keep_rate_lines(run)}
    assert families == {"deit_tiny"}


def test_family_without_meta_base_is_the_parent_name():
    run = make_run()
    for model in run.models.values():
        model.meta.pop("base", None)
    assert {base for base, _, _ in keep_rate_lines(run)} == {"deit_tiny", "deit_small"}


def test_attacks_are_labelled_by_alias():
    run = make_run()
    assert {m.attack for m in run.measurements if m.alias == "sp"} == {"salt_and_pepper"}
    assert "transfer_sp" in {p.name for p in make_plots(run)[0]}
    for m in run.measurements:
        m.alias = None                   # older records: the registry name
    assert "transfer_salt_and_pepper" in {p.name for p in make_plots(run)[0]}


def test_scatter_reads_model_records():
    run = make_run()
    run.models = {name: dataclasses.replace(m, throughput=None) for name, m in run.models.items()}
    names = {p.name for p in make_plots(run)[0]}
    assert "asr_vs_size_mb" in names and "asr_vs_throughput" not in names
