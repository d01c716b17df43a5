"""End to end: real specs, collected by the plugin, run on real (tiny, trained) models."""
import json
import textwrap

import pytest

from spec_helpers import fresh_cache  # noqa: F401  (a fixture)
from spec_helpers import run_specs, spec_dir  # noqa: F401  (spec_dir is a fixture)

pytest_plugins = ["pytester"]

SPEC = """
id: e2e
about: end-to-end check of the plugin on the trained fixture models
data: {split: test, limit: 160}
attacks:
  fgsm: {name: fgsm, eps: 2/255}
  pgd: {name: pgd, eps: 4/255, steps: 5}
matrix: {model: [vit_fixture, vit_fixture_wide]}
checks:
  - check: asr({model}, pgd) > asr({model}, fgsm)
    claim: PGD is stronger than FGSM
  - check: acc({model}) > 0.5
    only: {model: [vit_fixture]}
  - size_mb(vit_fixture) < size_mb(vit_fixture_wide)
  - transfer(cnn_fixture -> {model}, pgd) < asr({model}, pgd)
"""

FALSE_SPEC = """
id: false_claim
about: a property that is false on the fixture must fail and show its numbers
attacks:
  fgsm: {name: fgsm, eps: 2/255}
  pgd: {name: pgd, eps: 4/255, steps: 5}
data: {limit: 160}
checks:
  - asr(vit_fixture, fgsm) > asr(vit_fixture, pgd)
  - check: size_mb(vit_fixture) > size_mb(vit_fixture_wide)
    xfail: the wide fixture is larger by construction
"""



def test_spec_checks_become_items_with_readable_ids(pytester, spec_dir):
    (spec_dir / "e2e.yaml").write_text(SPEC)
    result = pytester.runpytest_inprocess("specs", "--collect-only", "-q")
    out = result.stdout.str()
    assert "e2e[model=vit_fixture]::asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)" in out
    assert "e2e[model=vit_fixture_wide]::transfer(cnn_fixture -> vit_fixture_wide, pgd)" in out
    assert "acc(vit_fixture_wide)" not in out          # restricted by `only:`
    assert len([l for l in out.splitlines() if "::" in l]) == 6   # the size check names no placeholder: once


def test_k_selects_by_model_and_attack(pytester, spec_dir):
    (spec_dir / "e2e.yaml").write_text(SPEC)
    out = pytester.runpytest_inprocess("specs", "--collect-only", "-q", "-k", "fgsm").stdout.str()
    assert [l for l in out.splitlines() if "::" in l] and all("fgsm" in l for l in out.splitlines() if "::" in l)
    out = pytester.runpytest_inprocess("specs", "--collect-only", "-q", "-k", "vit_fixture_wide").stdout.str()
    assert all("vit_fixture_wide" in l for l in out.splitlines() if "::" in l)


def test_real_spec_runs_end_to_end_and_writes_reports(pytester, spec_dir, fresh_cache):
    (spec_dir / "e2e.yaml").write_text(SPEC)
    result = run_specs(pytester)
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    assert "vitrobust" in out and "report:" in out
    latest = pytester.path / "reports" / "latest"
    run = json.loads((latest / "report.json").read_text())
    keys = {m["key"] for m in run["measurements"]}
    assert "asr(vit_fixture, pgd)" in keys and "transfer(cnn_fixture -> vit_fixture, pgd)" in keys
    # each measurement once, even though several checks use it
    assert len(keys) == len(run["measurements"])
    assert (latest / "report.md").exists()
    # where the time went: every model built, every adversarial set made and every check is an
    # item; the terminal prints the time per phase and the five most expensive items
    profile = {(i["kind"], i["name"]) for i in run["profile"]}
    assert {("model", "vit_fixture"), ("model", "cnn_fixture"), ("adversarial", "vit_fixture pgd"),
            ("adversarial", "cnn_fixture pgd")} <= profile
    assert sum(kind == "check" for kind, _ in profile) == 6
    assert ("check", "e2e: asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)") in profile   # named by its text
    assert all(i["total"] >= i["seconds"] >= 0 for i in run["profile"])
    assert "time: model" in out and "writing the reports and the database row" in out
    assert "## Where the time went" in (latest / "report.md").read_text()
    # a second session re-attacks nothing: every adversarial set comes from the disk cache
    again = run_specs(pytester)
    again.assert_outcomes(passed=6)
    made = run["cache"]["predictions_generated"]
    assert made > 0 and f"adversarial sets: {run['cache']['adversarial_generated']} generated" in out
    # ... and scores nothing: every prediction is cached, so no adversarial image is even loaded
    assert f"adversarial sets: 0 generated, 0 reused from the cache; predictions: 0 made, {made} reused" \
        in again.stdout.str()


def test_run_record_starts_when_the_session_starts(pytester, spec_dir):
    # a session that spends over a second before its first check: "started" must predate it
    pytester.makeconftest("import time\ndef pytest_collection_finish(session):\n    time.sleep(1.2)\n")
    (spec_dir / "e2e.yaml").write_text(SPEC)
    run_specs(pytester, "-k", "size_mb").assert_outcomes(passed=1)
    run = json.loads((pytester.path / "reports" / "latest" / "report.json").read_text())
    assert run["started"] < run["finished"]


def test_max_images_caps_every_measurement_and_is_recorded(pytester, spec_dir):
    (spec_dir / "e2e.yaml").write_text(SPEC)     # the spec asks for 160 images
    run_specs(pytester, "-k", "vit_fixture_wide and fgsm", "--vitrobust-max-images=40").assert_outcomes(passed=1)
    run = json.loads((pytester.path / "reports" / "latest" / "report.json").read_text())
    assert run["config"]["max_images"] == 40
    rates = [m for m in run["measurements"] if m["n"] is not None]
    assert rates and all(len(m["outcomes"]) == 40 and m["data"].endswith("[:40]") for m in rates)


def test_max_images_must_be_a_positive_count(pytester, spec_dir):
    (spec_dir / "e2e.yaml").write_text(SPEC)
    result = run_specs(pytester, "--vitrobust-max-images=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected a positive whole number, got '0'" in result.stderr.str()


def test_false_property_fails_with_measured_values(pytester, spec_dir):
    (spec_dir / "false.yaml").write_text(FALSE_SPEC)
    result = run_specs(pytester)
    result.assert_outcomes(failed=1, xfailed=1)
    out = result.stdout.str()
    assert "asr(vit_fixture, fgsm)" in out and "asr(vit_fixture, pgd)" in out
    assert "McNemar" in out or "bootstrap" in out


def test_bad_spec_is_a_one_line_collection_error(pytester, spec_dir):
    (spec_dir / "bad.yaml").write_text(textwrap.dedent("""
        id: bad
        about: typo in a key
        atacks: {}
        checks: [acc(vit_fixture) > 0.5]
    """))
    result = pytester.runpytest_inprocess("specs")
    out = result.stdout.str()
    assert "bad.yaml" in out and "unknown key 'atacks'" in out
    assert "Traceback" not in out


def test_a_reporting_failure_keeps_the_raw_results(pytester, spec_dir):
    # A real failure, not a patched one: the database path is a folder, so sqlite cannot open it.
    # (Patching vitrobust.report would not reach the inner session: pytester restores sys.modules
    # between in-process runs, so the inner session may import a fresh module object.)
    (pytester.path / "db-is-a-folder").mkdir()
    (spec_dir / "e2e.yaml").write_text(SPEC)
    result = run_specs(pytester, "-k", "size_mb", f"--vitrobust-db={pytester.path / 'db-is-a-folder'}")
    out = result.stdout.str()
    assert "reporting failed (StoreError: cannot use" in out and "unable to open database file" in out
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    [saved] = (pytester.path / "reports").glob("unfinished-*.json")
    assert "size_mb(vit_fixture)" in saved.read_text()


def test_baseline_gate_through_the_plugin(pytester, spec_dir):
    """Save a run as a baseline, plant a regression in it, and the next session fails."""
    import sqlite3

    (spec_dir / "e2e.yaml").write_text(SPEC)
    run_specs(pytester, "-k", "vit_fixture_wide and pgd", "--vitrobust-save-baseline=release").assert_outcomes(passed=2)
    same = run_specs(pytester, "-k", "vit_fixture_wide and pgd", "--vitrobust-baseline=release")
    same.assert_outcomes(passed=2)
    assert same.ret == 0 and "no regressions against baseline 'release'" in same.stdout.str()

    # plant: in the baseline, the PGD attack fooled nothing (so today's ASR is a large rise)
    db = sqlite3.connect(pytester.path / "reports" / "vitrobust.sqlite")
    (run_id,) = db.execute("SELECT run_id FROM baselines WHERE name='release'").fetchone()
    rows = db.execute("SELECT rowid, outcomes FROM measurements WHERE run_id=? AND key=?",
                      (run_id, "asr(vit_fixture_wide, pgd)")).fetchall()
    for rowid, outcomes in rows:
        zeroed = json.dumps([None if o is None else 0 for o in json.loads(outcomes)])
        db.execute("UPDATE measurements SET value=0, k=0, outcomes=? WHERE rowid=?", (zeroed, rowid))
    db.commit()
    db.close()
    worse = run_specs(pytester, "-k", "vit_fixture_wide and pgd", "--vitrobust-baseline=release")
    assert worse.ret != 0
    assert "REGRESSIONS against baseline 'release'" in worse.stdout.str()
    assert "asr(vit_fixture_wide, pgd)" in worse.stdout.str()


ZOO_SPEC = """
id: own_zoo
about: spec model names resolved by a zoo config to local checkpoints
data: {limit: 160}
attacks:
  fgsm: {name: fgsm, eps: 2/255}
checks:
  - acc(good) > acc(broken)
  - acc(broken) < 0.3
  - size_mb(good:int8) < size_mb(good)
"""


def _write_image_folder(root, data):
    """``data`` as PNG files in ImageFolder layout (one folder per class, named by its label)."""
    import numpy as np
    from PIL import Image

    for i, (image, label) in enumerate(zip(data.images, data.labels.tolist())):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(root / str(label) / f"{i}.png")


def test_zoo_config_points_specs_at_local_checkpoints_and_an_image_folder(pytester, spec_dir, vit_model,
                                                                          digits_test):
    """The route real users take (checkpoints and images on disk), with files this test writes.

    `broken` is the trained fixture with its head zeroed: it only scores at chance if the
    checkpoint is really what gets loaded (a retrained or freshly trained model would not).
    `good` is compared with `broken` rather than with a fixed accuracy: the 7-second fixture
    scores 0.45-0.85 on these re-read PNGs depending on the machine that trained it.
    """
    import torch

    state = {k: v.clone() for k, v in vit_model.net.state_dict().items()}
    torch.save({"model": state}, pytester.path / "good.pth")
    broken = {k: (torch.zeros_like(v) if k.startswith("head.") else v) for k, v in state.items()}
    torch.save({"model": broken}, pytester.path / "broken.pth")
    _write_image_folder(pytester.path / "images" / "val", digits_test)
    (pytester.path / "zoo.yaml").write_text(textwrap.dedent(f"""
        data: {pytester.path / 'images'}
        models:
          good: {{arch: vit_fixture, checkpoint: {pytester.path / 'good.pth'}}}
          broken: {{arch: vit_fixture, checkpoint: {pytester.path / 'broken.pth'}}}
        """))
    (spec_dir / "own.yaml").write_text(ZOO_SPEC)

    unconfigured = run_specs(pytester)
    assert "unknown model 'good'" in unconfigured.stdout.str()
    result = run_specs(pytester, f"--vitrobust-zoo={pytester.path / 'zoo.yaml'}")
    result.assert_outcomes(passed=3)
    report = json.loads((pytester.path / "reports" / "latest" / "report.json").read_text())
    assert report["config"]["data"] == str(pytester.path / "images")


def test_device_and_precision_reach_the_run_record(pytester, spec_dir):
    (spec_dir / "e2e.yaml").write_text(SPEC)
    run_specs(pytester, "-k", "vit_fixture_wide and fgsm", "--vitrobust-max-images=24",
         "--vitrobust-device=cpu", "--vitrobust-precision=bf16").assert_outcomes(passed=1)
    run = json.loads((pytester.path / "reports" / "latest" / "report.json").read_text())
    assert (run["config"]["device"], run["config"]["precision"], run["config"]["batch_size"]) == ("cpu", "bf16", 256)
    assert run["models"]["vit_fixture_wide"]["device"] == "cpu"
