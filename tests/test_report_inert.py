"""The HTML report is inert: spec-supplied strings (spec ids, claims, xfail reasons, check text,
model names, attack aliases, matrix values) are escaped, so a hostile spec cannot run script in
the browser of whoever opens the report (issue 14).

A realistic run record (``run_factory.make_run``) gets ``<script>`` and ``<img onerror>``
payloads in every such field; each payload, if it ran, would mark the page's root element with a
``data-pwned-*`` attribute. Checked twice: (a) the HTML holds no script element, no event-handler
attribute and no payload unescaped (no browser needed); (b) headless Chromium loads the page and
its dumped DOM carries no mark. A control page with the payloads left raw shows the browser check
does see them run.
"""
import html
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from run_factory import make_run
from test_report_browser import CHROMIUM, render
from vitrobust.record import RunRecord
from vitrobust.report import write_reports

_MARK = "document.documentElement.setAttribute('data-pwned-{0}', '1')"
SCRIPT = f"<script>{_MARK.format('script')}</script>"
# no '/' in this one: a spec id names report files, so it is the id's payload
IMG = f'<img src=x onerror="{_MARK.format("img")}">'
PAYLOADS = (SCRIPT, IMG)


def _hostile_run() -> RunRecord:
    """``make_run()`` with payloads in every string a spec (or a zoo config) supplies."""
    text = json.dumps(make_run().to_dict())

    def inside(payload: str) -> str:      # the payload as it sits inside a JSON string
        return json.dumps(payload)[1:-1]

    text = text.replace("quantization", "quantization" + inside(IMG))           # spec id
    text = text.replace("deit_tiny:int8", "deit_tiny:int8" + inside(SCRIPT))    # a model name
    text = text.replace(", sp)", ", sp" + inside(SCRIPT) + ")")                 # an attack alias in checks
    text = text.replace('"alias": "sp"', '"alias": "sp' + inside(IMG) + '"')    # ...and in measurements
    text = text.replace('"size": "tiny"', '"size": "tiny' + inside(IMG) + '"')  # a matrix value
    run = RunRecord.from_dict(json.loads(text))
    for check in run.checks:
        check.claim = f"claim {SCRIPT} {IMG}"
        check.xfail_reason = f"xfail {SCRIPT} {IMG}" if check.outcome == "xfailed" else None
    return run


class _Elements(HTMLParser):
    """Every start tag and every attribute name of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("inert")
    paths = write_reports(_hostile_run(), out)
    return out, paths["html"], paths["html"].read_text(encoding="utf-8")


def test_every_spec_supplied_string_is_escaped(hostile_report):
    _, _, page = hostile_report
    for payload in PAYLOADS:
        assert payload not in page
        assert html.escape(payload) in page          # the payload is on the page, as text
    elements = _Elements()
    elements.feed(page)
    assert "script" not in elements.tags
    assert not [name for name in elements.attributes if name.startswith("on")]
    # every kind of field carried a payload to the page: claim, xfail reason, model name, attack
    # alias, matrix value, spec id
    for field in (f"claim {SCRIPT}", f"xfail {SCRIPT}", f"deit_tiny:int8{SCRIPT}", f"sp{SCRIPT})", f"sp{IMG}",
                  f"tiny{IMG}", f"quantization{IMG}"):
        assert html.escape(field) in page, field


def test_the_static_check_sees_an_unescaped_payload(hostile_report):
    """(a) can fail: the same page with one payload left raw is caught by it."""
    _, _, page = hostile_report
    elements = _Elements()
    elements.feed(page.replace(html.escape(IMG), IMG, 1))
    assert "img" in elements.tags and "onerror" in elements.attributes


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"no headless browser at {CHROMIUM} "
                                           "(apt-get install -y chromium chromium-driver)")


@needs_chromium
def test_nothing_runs_in_a_browser(hostile_report):
    out, page, _ = hostile_report
    dom, console = render(page, out)
    assert 'data-probe-done="yes"' in dom            # the page loaded and the probe ran
    assert "data-pwned-script=" not in dom and "data-pwned-img=" not in dom
    assert not [line for line in console if "Uncaught" in line]


@needs_chromium
def test_the_browser_check_sees_a_payload_that_runs(hostile_report, tmp_path):
    """(b) can fail: with the payloads put back raw, Chromium runs both and the DOM shows it."""
    _, _, page = hostile_report
    raw = tmp_path / "raw.html"
    raw.write_text(page.replace("</body>", "".join(PAYLOADS) + "</body>"), encoding="utf-8")
    dom, _ = render(raw, tmp_path)
    assert 'data-pwned-script="1"' in dom and 'data-pwned-img="1"' in dom
