"""End to end: checks decided across training-seed replicas (--vitrobust-seeds K) on the trained
fixture models, through the plugin, into every report."""
import json

import pytest

from spec_helpers import run_specs, spec_dir  # noqa: F401  (spec_dir is a fixture)

pytest_plugins = ["pytester"]

SPEC = """
id: seeds
about: two builds of each fixture model
data: {split: test, limit: 160}
attacks:
  fgsm: {name: fgsm, eps: 2/255}
  pgd: {name: pgd, eps: 4/255, steps: 5}
checks:
  - check: asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)
    claim: PGD is stronger than FGSM
  - size_mb(vit_fixture) < size_mb(vit_fixture_wide)
"""

VARIES_SPEC = """
id: said_to_vary
about: a claim the spec says varies with the seed, and one that is not tested here
attacks:
  fgsm: {name: fgsm, eps: 2/255}
  pgd: {name: pgd, eps: 4/255, steps: 5}
data: {split: test, limit: 160}
checks:
  - check: asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)
    varies: said so to test the expectation
"""



def _report(pytester) -> dict:
    return json.loads((pytester.path / "reports" / "latest" / "report.json").read_text())


def test_checks_are_decided_across_two_trained_builds(pytester, spec_dir):
    (spec_dir / "seeds.yaml").write_text(SPEC)
    result = run_specs(pytester, "--vitrobust-seeds=2")
    result.assert_outcomes(passed=2)
    run = _report(pytester)
    assert run["config"]["seeds"] == 2
    # the second build is another model: trained again, other weights
    models = run["models"]
    assert {"vit_fixture", "vit_fixture@s1", "vit_fixture_wide@s1"} <= set(models)
    assert models["vit_fixture"]["weight_hash"] != models["vit_fixture@s1"]["weight_hash"]
    attack = run["checks"][0]
    assert attack["status"] == "holds"
    assert [r["seed"] for r in attack["replicas"]] == [0, 1]
    assert all(r["status"] == "holds" for r in attack["replicas"])
    assert "asr(vit_fixture, pgd)" in attack["replicas"][1]["values"]   # keyed by replica-0 names
    # each replica's numbers are its own measurements
    keys = {m["key"] for m in run["measurements"]}
    assert {"asr(vit_fixture, pgd)", "asr(vit_fixture@s1, pgd)"} <= keys
    pooled = [m for m in run["measurements"] if m["key"] == "asr(vit_fixture@s1, pgd)"][0]
    assert attack["replicas"][1]["values"]["asr(vit_fixture, pgd)"] == pytest.approx(pooled["value"])
    assert list(attack["heterogeneity"]) == ["asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)"]
    latest = pytester.path / "reports" / "latest"
    assert "## Across 2 training seeds" in (latest / "report.md").read_text()
    assert 'id="seeds"' in (latest / "report.html").read_text()
    assert (latest / "plots" / "seed_effects_seeds.png").exists()


def test_one_build_is_the_default_and_records_no_replicas(pytester, spec_dir):
    (spec_dir / "seeds.yaml").write_text(SPEC)
    run_specs(pytester, "-k", "size_mb").assert_outcomes(passed=1)
    run = _report(pytester)
    assert run["config"]["seeds"] == 1 and run["checks"][0]["replicas"] == []
    assert not any("@s" in name for name in run["models"])


def test_a_claim_said_to_vary_that_does_not_fails_across_seeds(pytester, spec_dir):
    (spec_dir / "vary.yaml").write_text(VARIES_SPEC)
    result = run_specs(pytester, "--vitrobust-seeds=2")
    result.assert_outcomes(failed=1)
    assert "holds across 2 training seeds, but the spec says it varies" in result.stdout.str()


def test_a_claim_said_to_vary_is_xfailed_in_a_single_buildrun_specs(pytester, spec_dir):
    (spec_dir / "vary.yaml").write_text(VARIES_SPEC)
    result = run_specs(pytester, "-rx")
    result.assert_outcomes(xfailed=1)
    assert "one build cannot decide it" in result.stdout.str()
    check = _report(pytester)["checks"][0]
    assert check["status"] == "holds" and check["outcome"] == "xfailed"   # the build's verdict is kept


ONE_BUILD_SPEC = VARIES_SPEC.replace("varies: said so to test the expectation",
                                     "xfail_one_build: said so to test the expectation")


def test_a_one_build_xfail_is_strict_in_single_build_runs_and_ignored_across_seeds(pytester, spec_dir):
    (spec_dir / "one.yaml").write_text(ONE_BUILD_SPEC)
    single = run_specs(pytester)
    single.assert_outcomes(failed=1)   # the claim holds on this build: a strict xfail's XPASS
    assert "XPASS(strict)" in single.stdout.str()
    run_specs(pytester, "--vitrobust-seeds=2").assert_outcomes(passed=1)


def test_seeds_must_be_a_positive_count(pytester, spec_dir):
    (spec_dir / "seeds.yaml").write_text(SPEC)
    result = run_specs(pytester, "--vitrobust-seeds=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected a positive whole number, got '0'" in result.stderr.str()
