"""``-p no:cacheprovider``: read-only CI checkouts turn pytest's cache off, and then there is no
``config.cache``. The project's own test setup (tests/conftest.py) must fall back to a folder of
its own for the fixture models, and the plugin must not need the cache at all.

Run in a subprocess: the setup under test is this suite's own ``pytest_configure``, which has
already run in this process, and with ``VITROBUST_CACHE`` set (the fallback is only taken without
it). ``TMPDIR`` points into ``tmp_path``, so the fallback folder is this test's to inspect.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# one model of the shipped zoo (loaded from the package, not trained), nothing attacked
SPEC = """\
id: tiny
about: one shipped model, nothing trained or attacked
checks:
  - params(deit_tiny) > 100000
"""


def test_the_tests_and_a_spec_run_without_the_cacheprovider(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tiny.yaml").write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k not in ("VITROBUST_CACHE", "PYTEST_ADDOPTS")}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "tests/test_names.py", str(tmp_path / "specs" / "tiny.yaml"), "--vitrobust-no-progress",
         f"--vitrobust-report-dir={tmp_path / 'reports'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "INTERNALERROR" not in out and "Traceback" not in out
    summary = re.search(r"^(\d+) passed in ", out, re.MULTILINE)   # nothing failed, errored or skipped
    assert summary and int(summary[1]) >= 2, out[-2000:]
    # the spec ran and was reported; the fixture-model cache fell back into the temp dir
    assert (tmp_path / "reports" / "latest" / "report.json").exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("vitrobust-test-cache-")]) == 1
