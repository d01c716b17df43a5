"""Shared by the spec tests: a good spec to vary, and helpers that write it and read its error."""
import os
import textwrap

import pytest

from vitrobust.spec import SpecError, load_spec_file

GOOD = """\
id: quantization
about: INT8 dynamic quantization makes DeiT easier to attack
data: {split: test, limit: 450}
attacks:
  sp: {name: salt_and_pepper, steps: 100, eps: 4.0, norm: l2}
  pgd: {name: pgd, eps: 8/255, steps: 10}
  pgd_on_int8: {name: pgd, eps: 2/255, strategy: straight-through}
matrix: {size: [tiny, small, base]}
confidence: 0.9
checks:
  - asr(deit_{size}:int8, sp) > asr(deit_{size}, sp)
  - check: transfer(deit_{size}:int8 -> deit_{size}, sp) >= transfer(deit_{size} -> deit_{size}:int8, sp)
    claim: "attacks transfer into INT8 ({size})"
    xfail: "measured: equal on the digits zoo"
    inconclusive: skip
    only: {size: [tiny, small]}
  - size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path, text, **kw) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec_file(path, **kw)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def replace(old, new, text=GOOD):
    assert old in text
    return text.replace(old, new)


# -- end-to-end runs of spec folders in a pytester sandbox ---------------------------------------
@pytest.fixture
def spec_dir(pytester):
    """An empty ``specs/`` folder in the pytester sandbox (import this fixture to use it)."""
    (pytester.path / "specs").mkdir()
    return pytester.path / "specs"


def run_specs(pytester, *args):
    """``pytest specs`` in-process with reports in the sandbox's ``reports/``."""
    return pytester.runpytest_inprocess(
        "specs", "-p", "no:randomly", "--vitrobust-no-progress",
        f"--vitrobust-report-dir={pytester.path / 'reports'}", *args)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty adversarial cache beside the session's (warm) fixture models."""
    cache, models = tmp_path / "cache", os.path.join(os.environ["VITROBUST_CACHE"], "models")
    cache.mkdir()
    os.makedirs(models, exist_ok=True)   # a fresh CI cache may not have it yet
    (cache / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("VITROBUST_CACHE", str(cache))
    return cache
