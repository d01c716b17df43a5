"""The pytest plugin on its own: one session object, collection-time validation, options."""
import textwrap

import pytest

pytest_plugins = ["pytester"]

CHEAP = """
id: cheap
about: a spec that builds one fixture model and attacks nothing
attacks:
  fgsm: {name: fgsm, eps: 2/255}
checks:
  - size_mb(vit_fixture) < size_mb(vit_fixture_wide)
"""


@pytest.fixture
def specs(pytester):
    folder = pytester.path / "specs"
    folder.mkdir()
    return folder


def test_one_session_object_holds_the_state(pytester, specs):
    (specs / "cheap.yaml").write_text(CHEAP)
    pytester.makeconftest(textwrap.dedent("""
        def pytest_sessionfinish(session):
            from vitrobust.plugin import PLUGIN_NAME, VitrobustSession, session_of
            plugin = session_of(session.config)
            assert isinstance(plugin, VitrobustSession)
            assert [c.check for c in plugin.checks.values()] == ["size_mb(vit_fixture) < size_mb(vit_fixture_wide)"]
            print("SESSION-OK", plugin.checks[next(iter(plugin.checks))].outcome)
    """))
    result = pytester.runpytest_inprocess("specs", "-s", "--vitrobust-no-report", "--vitrobust-no-progress")
    result.assert_outcomes(passed=1)
    assert "SESSION-OK passed" in result.stdout.str()


def test_a_typo_in_an_attack_parameter_is_a_collection_error_naming_the_line(pytester, specs):
    (specs / "typo.yaml").write_text(textwrap.dedent("""
        id: typo
        about: a misspelled attack parameter
        attacks:
          pgd:
            name: pgd
            eps: 2/255
            stpes: 10
        checks:
          - asr(vit_fixture, pgd) > 0
    """))
    result = pytester.runpytest_inprocess("specs", "--collect-only", "-q")
    out = result.stdout.str()
    assert "typo.yaml:8:" in out and "stpes" in out and "did you mean 'steps'" in out
    assert "Traceback" not in out and result.ret == pytest.ExitCode.INTERRUPTED


def test_a_bad_attack_value_is_a_collection_error(pytester, specs):
    (specs / "bad.yaml").write_text(CHEAP.replace("eps: 2/255", "eps: 0"))
    out = pytester.runpytest_inprocess("specs", "--collect-only", "-q").stdout.str()
    assert "bad.yaml:" in out and "eps must be a finite positive number" in out


def test_the_old_margin_option_still_works(pytester, specs):
    (specs / "cheap.yaml").write_text(CHEAP)
    pytester.makeconftest("def pytest_sessionfinish(session):\n"
                          "    print('MARGIN', session.config.getoption('vitrobust_margin'))\n")
    for flag in ("--vitrobust-margin=0.1", "--vitrobust-asr-margin=0.1"):
        result = pytester.runpytest_inprocess("specs", "-s", "--collect-only", "-q", flag)
        assert "MARGIN 0.1" in result.stdout.str()


def test_specs_run_without_the_cacheprovider(pytester, specs):
    (specs / "cheap.yaml").write_text(CHEAP)
    result = pytester.runpytest_inprocess("specs", "-p", "no:cacheprovider", "--vitrobust-no-progress",
                                          f"--vitrobust-report-dir={pytester.path / 'reports'}")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "reports" / "latest" / "report.json").exists()
