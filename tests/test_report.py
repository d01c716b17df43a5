"""Reports: files, content of every format, plots only where data exist, the latest pointer."""
import base64
import copy
import dataclasses
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from run_factory import SPEC_IDS, find, make_run
from vitrobust import report
from vitrobust.plots import make_plots
from vitrobust.record import RunConfig, RunRecord, RunWarning
from vitrobust.report import (ReportError, html_page, markdown, resolve_latest, terminal_summary,
                              write_reports)
from vitrobust.stats import wilson_interval

PLOTS = {"asr_keep_rate", "transfer_pgd", "transfer_sp", "asr_vs_size_mb", "asr_vs_throughput",
         "uap_deit_tiny_uap"}


def light(run_id):
    """A run with nothing to plot, for tests about files rather than content."""
    return RunRecord(run_id)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    run = make_run(artifact_dir=tmp / "artifacts")
    return run, write_reports(run, tmp / "out"), tmp / "out"


def test_report_modules_do_not_import_torch():
    code = ("import sys, vitrobust.store, vitrobust.gate, vitrobust.report, vitrobust.plots, "
            "vitrobust.report_format, vitrobust.report_text, vitrobust.report_html; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_files_are_written_under_the_run_id(written):
    run, paths, out = written
    folder = out / run.run_id
    for kind in ("md", "json", "html"):
        assert paths[kind].parent == folder and paths[kind].stat().st_size > 1000
    assert {k[4:] for k in paths if k.startswith("png:")} == PLOTS
    for key in PLOTS:
        assert paths[f"png:{key}"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_is_the_whole_run_record(written):
    run, paths, _ = written
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(run.to_dict()))
    assert RunRecord.from_dict(json.loads(paths["json"].read_text())) == run


def test_json_is_strict_even_with_nan(tmp_path):
    run = light("nan-run")
    run.models = {"m": dataclasses.replace(make_run().models["deit_tiny"], name="m")}
    run.models["m"].throughput = float("nan")
    run.models["m"].params = np.int64(7)
    run.models["m"].meta = {"mask": np.array([1.0, float("inf")])}
    text = write_reports(run, tmp_path)["json"].read_text()
    assert "NaN" not in text and json.loads(text)["models"]["m"]["throughput"] is None
    assert json.loads(text)["models"]["m"]["params"] == 7
    assert json.loads(text)["models"]["m"]["meta"] == {"mask": [1.0, None]}


def test_html_is_self_contained_with_every_spec_and_plot(written):
    run, paths, _ = written
    page = paths["html"].read_text()
    for spec in SPEC_IDS:
        assert f'id="spec-{spec}"' in page
    for section in ("summary", "not-reproduced", "models", "measurements", "warnings", "plots"):
        assert f'<section id="{section}"' in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) == len(PLOTS)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    # Nothing to fetch and nothing to run: only in-page anchors and data URIs.
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("#", "data:")) for r in refs)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page


def test_html_shows_values_intervals_statistics_and_claims_that_failed(written):
    run, paths, _ = written
    page = paths["html"].read_text()
    meas = find(run, "asr(deit_tiny:int8, sp)")
    lo, hi = meas.interval
    assert f"{meas.value:.3f} [{lo:.3f}, {hi:.3f}] ({meas.k}/{meas.n})" in page
    assert "one-sided McNemar p=0.002" in page
    failed = page.split('id="not-reproduced"')[1].split("</section>")[0]
    assert "paper 7.2 claim did not reproduce on the digits zoo" in failed
    assert "asr(deit_small:int8, sp) &gt; asr(deit_small, sp)" in failed
    assert "size=tiny" not in failed     # only the xfailed check is listed
    models = page.split('id="models"')[1].split("</section>")[0]
    assert "keep_rate=0.5" in models and "<td>6,100</td>" in models and "<td>206,000</td>" in models
    assert "zero-gradient" in page and "scored one image per call" in page


def test_html_escapes_untrusted_text():
    run = make_run()
    run.checks[0].check = "<script>alert(1)</script> asr(a, b) > 0"
    page = html_page(run)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_markdown_has_every_spec_and_the_failed_claim(written):
    run, paths, _ = written
    text = paths["md"].read_text()
    for spec in SPEC_IDS:
        assert f"## Spec `{spec}`" in text
    assert "## Claims that did not reproduce" in text and "did not reproduce on the digits" in text
    for name in PLOTS:
        assert f"(plots/{name}.png)" in text
    assert "Every claim reproduced." in markdown(dataclasses.replace(run, checks=run.checks[:2]))


def test_terminal_summary(written):
    run = written[0]
    text = terminal_summary(run)
    assert text.splitlines()[0] == (f"vitrobust run {run.run_id}: 5 passed, 1 xfailed, 1 skipped "
                                    "(7 checks, 26 measurements, 8 models)")
    for check in run.checks:
        assert check.check in text
    meas = run.measurements[0]
    assert f"[{meas.interval[0]:.3f}, {meas.interval[1]:.3f}] ({meas.k}/{meas.n})" in text
    assert "did not reproduce: quantization" in text and "warning (zero-gradient)" in text


def test_plots_only_where_data_exist(tmp_path):
    run = make_run()   # no artifact_dir: no UAP
    names = {p.name for p in make_plots(run)[0]}
    assert names == PLOTS - {"uap_deit_tiny_uap"}
    for info in run.models.values():
        info.meta.pop("keep_rate", None)
    run.measurements = [m for m in run.measurements if m.kind != "transfer"]
    assert {p.name for p in make_plots(run)[0]} == {"asr_vs_size_mb", "asr_vs_throughput"}
    empty = RunRecord("empty")
    paths = write_reports(empty, tmp_path)
    assert not any(k.startswith("png:") for k in paths)
    assert "No plottable data" in paths["html"].read_text()


def test_keep_rate_plot_needs_a_pruned_point():
    run = make_run()
    run.measurements = [m for m in run.measurements if "prune" not in (m.target or "")]
    assert "asr_keep_rate" not in {p.name for p in make_plots(run)[0]}


def test_uap_is_shown_amplified(tmp_path):
    delta = np.zeros((3, 16, 16), np.float32)
    delta[0, :8] = 2 / 255          # a faint perturbation, invisible unamplified
    delta[2, 8:] = -2 / 255
    np.save(tmp_path / "u.npy", delta)
    run = RunRecord("u", artifacts={"uap:m:uap": str(tmp_path / "u.npy")})
    [plot], notes = make_plots(run)
    assert notes == [] and plot.name == "uap_m_uap"
    pixels = np.asarray(Image.open(io.BytesIO(plot.png)).convert("RGB"), dtype=float)
    assert pixels[..., 0].max() - pixels[..., 0].min() > 200   # full range, not 2/255


def test_unreadable_uap_becomes_a_warning(tmp_path):
    run = make_run("broken-uap")
    run.artifacts = {"uap:deit_tiny:uap": str(tmp_path / "missing.npy")}
    page = write_reports(run, tmp_path)["html"].read_text()
    assert "cannot read" in page and "uap_deit_tiny" not in page


def test_latest_symlink_follows_the_newest_report(tmp_path):
    write_reports(light("run-a"), tmp_path)
    assert os.readlink(tmp_path / "latest") == "run-a"
    write_reports(light("run-b"), tmp_path)
    assert os.readlink(tmp_path / "latest") == "run-b"
    assert resolve_latest(tmp_path) == (tmp_path / "run-b").resolve()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".latest")]


def test_latest_falls_back_to_a_text_file(tmp_path, monkeypatch):
    write_reports(light("run-a"), tmp_path)

    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not supported here")

    monkeypatch.setattr(report.os, "symlink", no_symlinks)
    write_reports(light("run-b"), tmp_path)
    latest = tmp_path / "latest"
    assert not latest.is_symlink() and latest.read_text().strip() == "run-b"
    assert resolve_latest(tmp_path) == tmp_path / "run-b"
    monkeypatch.undo()
    write_reports(light("run-c"), tmp_path)   # back to a symlink over the text file
    assert os.readlink(latest) == "run-c"


@pytest.mark.parametrize("run_id", ["", None, "../escape", "a/b"])
def test_unusable_run_id(tmp_path, run_id):
    with pytest.raises(ReportError):
        write_reports(dataclasses.replace(copy.deepcopy(make_run()), run_id=run_id), tmp_path)


# -- intervals as recorded, at their confidence -------------------------------------------------
def test_recorded_interval_is_shown_as_is():
    run = make_run()
    meas = find(run, "asr(deit_tiny, pgd)")
    meas.interval = [0.123, 0.987]              # not what Wilson would give: shown, not recomputed
    assert "[0.123, 0.987]" in terminal_summary(run) and "[0.123, 0.987]" in html_page(run)


def test_computed_interval_uses_the_measurements_confidence_then_the_runs():
    run = make_run()
    meas = find(run, "asr(deit_tiny, pgd)")
    meas.interval, meas.confidence = None, 0.8
    lo, hi = wilson_interval(meas.k, meas.n, 0.8)
    assert f"[{lo:.3f}, {hi:.3f}] ({meas.k}/{meas.n}) at 80%" in terminal_summary(run)
    meas.confidence = None                       # no confidence of its own: the run's
    run.config = RunConfig(confidence=0.9)
    lo, hi = wilson_interval(meas.k, meas.n, 0.9)
    text = terminal_summary(run)
    assert f"[{lo:.3f}, {hi:.3f}] ({meas.k}/{meas.n})" in text and "[90% interval]" in text
    assert f"({meas.k}/{meas.n}) at" not in text


def test_an_interval_at_another_confidence_says_so():
    run = make_run()
    find(run, "asr(deit_tiny:int8, sp)").confidence = 0.99
    run.checks[0].confidence = 0.99             # the check's intervals are at its confidence
    page = html_page(run)
    # The check's row shows both of its values at 99%; the measurements table the one measurement.
    assert page.count(" at 99%") == 3
    assert "[95% interval]" in page


def test_warnings_name_their_model():
    run = make_run()
    run.warnings = [RunWarning("nondeterministic", "logits differ between calls", model="deit_tiny:int8"),
                    RunWarning("zero-gradient", "deit_small: zero gradient", model="deit_small")]
    text = terminal_summary(run)
    assert "warning (nondeterministic): deit_tiny:int8: logits differ between calls" in text
    assert "warning (zero-gradient): deit_small: zero gradient" in text   # not named twice
    assert "deit_tiny:int8: logits differ" in markdown(run) and "deit_tiny:int8: logits" in html_page(run)


def test_every_spec_supplied_string_is_escaped():
    """Spec ids, check text, claims, params, reasons, messages, statistics, measurement keys,
    strategies, data, model names and meta, warnings, config and versions all reach the page."""
    evil = "<i id=x{}>"
    run = make_run()
    strings = iter(range(1000))

    def bad():
        return evil.format(next(strings))

    for c in run.checks:
        c.spec, c.check, c.claim, c.message, c.statistic = bad(), bad(), bad(), bad(), bad()
        c.params, c.xfail_reason = {bad(): bad()}, bad()
        c.outcome = "xfailed"
    for m in run.measurements:
        m.key, m.strategy, m.data, m.spec = bad(), bad(), bad(), bad()
    run.models = {bad(): dataclasses.replace(m, meta={bad(): bad()}) for m in run.models.values()}
    run.warnings = [RunWarning(bad(), bad(), model=bad())]
    run.config = RunConfig(data=bad(), zoo=bad(), args=[bad()])
    run.versions = {bad(): bad()}
    run.git_commit, run.started = bad(), bad()
    page = html_page(run)
    used = next(strings)
    assert used > 100
    for i in range(used):
        assert evil.format(i) not in page
    assert sum(f"&lt;i id=x{i}&gt;" in page for i in range(used)) == used


def test_a_report_json_of_vitrobust_0_1_is_read_and_reported(tmp_path):
    """An old report.json (schema 1: no alias, no confidence) reads back and reports."""
    old = make_run("old-dict").to_dict()
    del old["schema_version"]
    for meas in old["measurements"]:
        del meas["alias"], meas["confidence"]
    run = RunRecord.from_dict(old)
    assert run.schema_version == 1
    paths = write_reports(run, tmp_path)
    assert RunRecord.from_dict(json.loads(paths["json"].read_text())).checks == make_run().checks
    assert terminal_summary(run).startswith("vitrobust run old-dict: 5 passed")


def test_reports_say_where_each_model_ran_and_at_what_precision(tmp_path):
    run = make_run("dev")
    run.config.device, run.config.precision = "cuda:1", "bf16"
    name = next(iter(run.models))
    run.models[name].device = "cpu"          # e.g. an INT8 model pinned to the CPU
    paths = write_reports(run, tmp_path)
    page, md = paths["html"].read_text(), paths["md"].read_text()
    assert "device=cuda:1" in page and "precision=bf16" in page
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in md.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in run.models}
    assert cells[name] == "cpu"
    assert [cells[n] for n in run.models if n != name] == ["cuda:1"] * (len(run.models) - 1)
