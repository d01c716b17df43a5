"""The HTML report rendered by a real headless browser (Debian's Chromium).

Chromium loads a copy of report.html with a small probe script appended (the report itself has no
script). After the load event the probe writes, into attributes of <body>, each image's
``complete:naturalWidth`` and every resource the page fetched (Resource Timing; data URIs are not
fetches). ``--dump-dom`` prints the DOM after load, and ``--enable-logging=stderr`` prints every
console message and uncaught exception as an ``INFO:CONSOLE`` line. DNS is mapped to nothing so a
stray external reference could not load anyway. No Python dependency beyond the standard library.

Skipped only when /usr/bin/chromium is absent (CI installs it with
``apt-get install -y chromium chromium-driver``).
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

from run_factory import SPEC_IDS, make_run
from vitrobust.report import write_reports

CHROMIUM = os.environ.get("VITROBUST_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no headless browser at {CHROMIUM} "
                                       "(apt-get install -y chromium chromium-driver)")

PROBE = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return i.complete + ':' + i.naturalWidth; });
  var res = performance.getEntriesByType('resource').map(function (r) { return r.name; });
  document.body.setAttribute('data-probe-images', imgs.join(' '));
  document.body.setAttribute('data-probe-resources', res.join(' '));
  document.body.setAttribute('data-probe-done', 'yes');
});
</script>
"""


def render(page: Path, workdir: Path) -> tuple[str, list[str]]:
    """``(dumped DOM, console lines)`` of ``page`` with the probe appended."""
    probe = workdir / f"probe-{page.stem}.html"
    probe.write_text(page.read_text(encoding="utf-8") + PROBE, encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(workdir)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines()
               if ":CONSOLE" in line or "Uncaught" in line]
    return proc.stdout, console


def probe_attr(dom: str, name: str) -> str:
    match = re.search(rf'data-probe-{name}="([^"]*)"', dom)
    assert match, f"probe attribute {name} missing: the page did not finish loading"
    return match.group(1)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    run = make_run(artifact_dir=tmp / "artifacts")
    paths = write_reports(run, tmp / "out")
    dom, console = render(paths["html"], tmp)
    return run, paths, dom, console


def test_page_loads_without_console_errors(rendered):
    _, _, dom, console = rendered
    assert probe_attr(dom, "done") == "yes"
    assert console == []


def test_dom_shows_every_spec_and_section(rendered):
    run, _, dom, _ = rendered
    for spec in SPEC_IDS:
        assert f'id="spec-{spec}"' in dom and f"<code>{spec}</code>" in dom
    for check in run.checks:
        assert check.check.replace(">", "&gt;").replace("<", "&lt;") in dom
    assert "Claims that did not reproduce" in dom and "did not reproduce on the digits zoo" in dom


def test_every_plot_decodes_and_nothing_is_fetched(rendered):
    _, paths, dom, _ = rendered
    images = probe_attr(dom, "images").split()
    assert len(images) == len([k for k in paths if k.startswith("png:")]) == 6
    for image in images:
        complete, width = image.split(":")
        assert complete == "true" and int(width) > 100
    assert probe_attr(dom, "resources") == ""


def test_the_harness_catches_script_errors_and_broken_images(tmp_path):
    # The checks above must be able to fail: a page with an uncaught error, a console error and
    # an undecodable image is caught by the same harness.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
                   "<script>console.error('planted'); missingFunction();</script></body></html>")
    dom, console = render(bad, tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console)
    assert any("planted" in line for line in console)
    assert probe_attr(dom, "images") == "true:0"
