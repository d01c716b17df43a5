"""Bad configuration and data: one row per bad input, each refused in one line that names the file
and the key (issue 14).

Every row builds its bad input in ``tmp_path`` and runs the smallest thing that reads it: the zoo
config loader (then ``load_model`` for what only the weights can tell), the ImageFolder loader or
the spec loader. It must raise a :class:`~vitrobust.errors.VitrobustError` (what the CLI prints as
one line and exit 2, and the plugin as one line; a bad zoo config is also a ``pytest.UsageError``,
exit 4) whose message is one line, names the file and the key (for a zoo config: ``models.<name>``
and the field; for data: the folder or ``<class>/<file>``; for a spec: the key path), and holds
no traceback. A few rows also check what must *not* have happened (the pickle's payload).
"""
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from vitrobust.data import load_dataset
from vitrobust.errors import VitrobustError
from vitrobust.spec import load_spec_file
from vitrobust.zoo import build, load_model
from vitrobust.zoo.config import ZooConfig, ZooConfigError
from vitrobust.zoo.registry import model_entry

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    id: str
    build: Callable      # tmp_path -> zero-argument function that reads the bad input
    names: tuple         # what the message must hold: the file and the key (and the cause)
    after: Callable = None   # tmp_path -> None: what must not have happened


@pytest.fixture(autouse=True)
def fresh_models(monkeypatch):
    # rows build models from checkpoints; none may come from another test's process-wide cache
    monkeypatch.setattr(build, "_LOADED", {})


# ------------------------------------------------------------------------------------------------
# zoo configs and checkpoints
# ------------------------------------------------------------------------------------------------
def _zoo(tmp_path, models: str, name: str | None = None):
    """Write ``zoo.yaml`` with ``models`` (YAML lines under ``models:``); the reader loads it and,
    when ``name`` is given, builds that model through it (what a spec naming it does)."""
    path = tmp_path / "zoo.yaml"
    path.write_text("models:\n" + textwrap.indent(textwrap.dedent(models), "  "))

    def read():
        zoo = ZooConfig.load(path)
        if name is not None:
            arch, plan = zoo.resolve(name)
            load_model(arch, checkpoint=plan, progress=False)
    return read


def _state(arch: str) -> dict:
    """Random weights of a registered architecture (10 classes), as a user's checkpoint holds."""
    torch.manual_seed(0)
    return model_entry(arch).builder(num_classes=10).state_dict()


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


class _Payload:
    """Pickles as a call to ``os.mkdir(marker)``: the folder exists iff the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _pickle_with_code(tmp_path):
    path = _save(tmp_path / "evil.pth", {"model": {"w": torch.zeros(1)}, "extra": _Payload(tmp_path / "pwned")})
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {path}}}", "m")


def _folder_checkpoint(tmp_path):
    (tmp_path / "weights.pth").mkdir()
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {tmp_path / 'weights.pth'}}}")


def _symlink_loop(tmp_path):
    (tmp_path / "loop.pth").symlink_to(tmp_path / "loop.pth")
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {tmp_path / 'loop.pth'}}}")


def _empty_checkpoint(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {tmp_path / 'empty.pth'}}}")


def _fifo_checkpoint(tmp_path):
    os.mkfifo(tmp_path / "pipe.pth")     # torch.load would wait on it forever
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {tmp_path / 'pipe.pth'}}}")


def _other_architecture(tmp_path):
    path = _save(tmp_path / "cnn.pth", {"model": _state("cnn_fixture")})
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {path}}}", "m")


def _variant_of_other_architecture(tmp_path):
    base = _save(tmp_path / "vit.pth", _state("vit_fixture"))
    other = _save(tmp_path / "cnn.pth", _state("cnn_fixture"))
    return _zoo(tmp_path, f"""
        b: {{arch: vit_fixture, checkpoint: {base}}}
        "b:prune0.7": {{checkpoint: {other}}}
        """, "b:prune0.7")


def _not_a_state_dict(tmp_path):
    path = _save(tmp_path / "list.pth", [1, 2, 3])
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {path}}}", "m")


def _garbage_checkpoint(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 this is not a torch file")
    return _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {tmp_path / 'junk.pth'}}}", "m")


def _python_tag(tmp_path):
    marker = tmp_path / "pwned"
    return _zoo(tmp_path, f"m: !!python/object/apply:os.mkdir [{marker}]")


def _alias_bomb(text_key: str):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(5)]
    return "\n".join(lines) + f"\n{text_key}: *f\n"


def _zoo_file(content: bytes):
    def build_(tmp_path):
        (tmp_path / "zoo.yaml").write_bytes(content)
        return lambda: ZooConfig.load(tmp_path / "zoo.yaml")
    return build_


def _pwned_absent(tmp_path):
    assert not (tmp_path / "pwned").exists(), "the pickle's code ran"


ZOO_ROWS = [
    Row("zoo-unknown-arch", lambda t: _zoo(t, "m: {arch: deit_huge}"),
        ("zoo.yaml", "models.m.arch", "unknown model 'deit_huge'")),
    Row("zoo-unknown-timm-arch", lambda t: _zoo(t, "m: {arch: 'timm:no_such_net'}"),
        ("zoo.yaml", "models.m.arch", "no_such_net")),
    Row("zoo-unregistered-name-without-arch", lambda t: _zoo(t, "mystery: {num_classes: 3}"),
        ("zoo.yaml", "models.mystery", "unknown model 'mystery'", "arch:")),
    Row("zoo-variant-of-an-unregistered-base", lambda t: _zoo(t, "'ghost:int8': {}"),
        ("zoo.yaml", "models.ghost:int8", "unknown model 'ghost'")),
    Row("zoo-distilled-arch-not-in-timm", lambda t: _zoo(t, "'deit_tiny:distilled': {arch: no_distilled_net}"),
        ("zoo.yaml", "models.deit_tiny:distilled.arch", "no_distilled_net")),
    Row("zoo-unknown-key", lambda t: _zoo(t, "m: {arch: vit_fixture, weights: x.pth}"),
        ("zoo.yaml", "models.m", "unknown key 'weights'")),
    Row("zoo-duplicate-model", lambda t: _zoo(t, "m: {arch: vit_fixture}\nm: {arch: cnn_fixture}"),
        ("zoo.yaml:3", "duplicate key 'm'")),
    Row("zoo-duplicate-field", lambda t: _zoo(t, "m: {arch: vit_fixture, arch: cnn_fixture}"),
        ("zoo.yaml:2", "duplicate key 'arch'")),
    Row("zoo-alias-bomb", _zoo_file(_alias_bomb("models").encode()), ("zoo.yaml", "aliases are expanded")),
    Row("zoo-python-tag", _python_tag, ("zoo.yaml:2", "python/object/apply:os.mkdir"), _pwned_absent),
    Row("zoo-not-yaml", _zoo_file(b"models: [unclosed\n"), ("zoo.yaml", "YAML error")),
    Row("zoo-not-utf8", _zoo_file(b"models: {m: {arch: \xff}}\n"), ("zoo.yaml", "not UTF-8")),
    Row("zoo-data-not-a-path", _zoo_file(b"data: [a, b]\n"), ("zoo.yaml", "data:")),
    Row("checkpoint-missing", lambda t: _zoo(t, f"m: {{arch: vit_fixture, checkpoint: {t / 'gone.pth'}}}"),
        ("zoo.yaml", "models.m.checkpoint", "gone.pth", "no such checkpoint file")),
    Row("checkpoint-is-a-folder", _folder_checkpoint,
        ("zoo.yaml", "models.m.checkpoint", "weights.pth", "is a folder")),
    Row("checkpoint-symlink-loop", _symlink_loop,
        ("zoo.yaml", "models.m.checkpoint", "loop.pth", "symlink loop")),
    Row("checkpoint-0-bytes", _empty_checkpoint,
        ("zoo.yaml", "models.m.checkpoint", "empty.pth", "0 bytes")),
    Row("checkpoint-is-a-pipe", _fifo_checkpoint,
        ("zoo.yaml", "models.m.checkpoint", "pipe.pth", "not a regular file")),
    Row("checkpoint-of-another-architecture", _other_architecture,
        ("zoo.yaml", "models.m.checkpoint", "cnn.pth", "does not fit VisionTransformer")),
    Row("variant-checkpoint-of-another-architecture", _variant_of_other_architecture,
        ("zoo.yaml", "models.b:prune0.7.checkpoint", "cnn.pth", "does not fit")),
    Row("checkpoint-pickle-with-code", _pickle_with_code,
        ("zoo.yaml", "models.m.checkpoint", "evil.pth", "pickled code (posix.mkdir)", "nothing in it was run"),
        _pwned_absent),
    Row("checkpoint-not-a-state-dict", _not_a_state_dict,
        ("zoo.yaml", "models.m.checkpoint", "list.pth", "not a state dict")),
    Row("checkpoint-not-a-torch-file", _garbage_checkpoint,
        ("zoo.yaml", "models.m.checkpoint", "junk.pth", "not a loadable weights-only checkpoint")),
]


# ------------------------------------------------------------------------------------------------
# ImageFolder data
# ------------------------------------------------------------------------------------------------
def _images(folder: Path, classes=("a", "b"), per_class=2, size=(16, 12)):
    for cls in classes:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((size[1], size[0], 3), 40 * i, np.uint8)).save(folder / cls / f"{i}.png")
    return folder


def _data(setup: Callable, max_pixels: int | None = None):
    """A row that builds a folder with ``setup(folder)`` and loads its test split, with PIL's
    decompression-bomb limit at ``max_pixels`` while it reads (default: PIL's own)."""
    def build_(tmp_path):
        folder = tmp_path / "images"
        folder.mkdir()
        setup(folder)

        def read():
            with pytest.MonkeyPatch.context() as patch:
                if max_pixels is not None:
                    patch.setattr(Image, "MAX_IMAGE_PIXELS", max_pixels)
                return load_dataset(str(folder), "test", image_size=8)
        return read
    return build_


def _bomb(pixels_over: int):
    """An image ``pixels_over`` times PIL's limit, with the limit lowered to 1,000 pixels so the
    file stays small: 1.2x is where PIL only warns, 4x where it refuses on its own."""
    def setup(folder):
        _images(folder)
        side = int((1000 * pixels_over) ** 0.5) + 1
        Image.new("RGB", (side, side)).save(folder / "a" / "bomb.png")
    return setup


def _write(relative: str, content: bytes):
    def setup(folder):
        _images(folder)
        (folder / relative).write_bytes(content)
    return setup


DATA_ROWS = [
    Row("data-folder-missing", lambda t: (lambda: load_dataset(str(t / "nowhere"), "test", image_size=8)),
        ("nowhere", "no such data folder")),
    Row("data-folder-empty", _data(lambda folder: None), ("images", "no class sub-folders")),
    Row("data-no-class-folders", _data(lambda folder: Image.new("RGB", (8, 8)).save(folder / "loose.png")),
        ("images", "no class sub-folders")),
    Row("data-split-folder-empty", _data(lambda folder: (folder / "val").mkdir()),
        ("images/val", "no class sub-folders")),
    Row("data-class-folder-empty", _data(lambda folder: (_images(folder), (folder / "c").mkdir())),
        ("images/c", "class folder has no images")),
    Row("data-not-an-image-under-png", _data(_write("a/fake.png", b"#!/bin/sh\necho not a picture\n")),
        ("images/a/fake.png", "cannot read image")),
    Row("data-image-0-bytes", _data(_write("b/empty.png", b"")), ("images/b/empty.png", "0 bytes")),
    Row("data-image-truncated", _data(lambda folder: (_images(folder, size=(64, 64)), (folder / "a" / "cut.png")
                                                      .write_bytes((folder / "a" / "0.png").read_bytes()[:60]))),
        ("images/a/cut.png", "cannot read image")),
    Row("data-decompression-bomb-refused-by-pil", _data(_bomb(4), 1000), ("images/a/bomb.png", "decompression bomb")),
    Row("data-decompression-bomb-pil-only-warns", _data(_bomb(1.2), 1000),
        ("images/a/bomb.png", "decompression bomb")),
]


# ------------------------------------------------------------------------------------------------
# specs (the loader the plugin runs at collection)
# ------------------------------------------------------------------------------------------------
SPEC = """\
id: {id}
about: a spec
attacks:
  pgd: {{name: pgd, eps: 2/255, steps: {steps}}}
matrix: {{size: {sizes}}}
checks:
  - asr(deit_{{size}}, pgd) > 0
"""


def _spec(text: str = None, **fields):
    values = {"id": "ok", "steps": 10, "sizes": "[tiny, small]", **fields}

    def build_(tmp_path):
        (tmp_path / "spec.yaml").write_text(text if text is not None else SPEC.format(**values))
        return lambda: load_spec_file(tmp_path / "spec.yaml")
    return build_


SPEC_ROWS = [
    Row("spec-duplicate-key", _spec(SPEC.format(id="ok", steps=10, sizes="[tiny]") + "about: again\n"),
        ("spec.yaml:8", "duplicate key 'about'")),
    Row("spec-id-with-path-separator", _spec(id="'../../etc/passwd'"), ("spec.yaml:1", "id: must match")),
    Row("spec-id-with-space-and-brackets", _spec(id="'a [b]'"), ("spec.yaml:1", "id: must match")),
    Row("spec-id-too-long", _spec(id="a" * 65), ("spec.yaml:1", "id: must match")),
    Row("spec-steps-over-the-bound", _spec(steps=10 ** 9),
        ("spec.yaml:4", "attacks.pgd.steps", "bound steps=10,000", "VITROBUST_SPEC_BOUNDS")),
    Row("spec-matrix-over-the-bound", _spec(sizes="[" + ", ".join(f"s{i}" for i in range(1001)) + "]"),
        ("spec.yaml:7", "checks[0]", "bound matrix=1,000")),
    Row("spec-matrix-value-unsafe-in-a-test-id", _spec(sizes="['tiny]/x']"), ("spec.yaml:5", "matrix.size")),
    Row("spec-alias-bomb", _spec(_alias_bomb("about")), ("spec.yaml", "aliases are expanded")),
    Row("spec-python-tag", _spec("id: x\nabout: !!python/object/apply:os.mkdir [pwned]\n"),
        ("spec.yaml:2", "python/object/apply")),
]

ROWS = ZOO_ROWS + DATA_ROWS + SPEC_ROWS


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_a_bad_input_is_one_line_naming_the_file_and_the_key(row, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)               # a payload that escaped would land here
    read = row.build(tmp_path)
    with pytest.raises(VitrobustError) as info:
        read()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    for word in row.names:
        assert word in message, f"{word!r} not in: {message}"
    if row.after is not None:
        row.after(tmp_path)


def test_every_zoo_config_error_is_a_pytest_usage_error(tmp_path):
    """Raised while pytest sets a session up, a ZooConfigError is printed as one ERROR: line."""
    with pytest.raises(pytest.UsageError):
        _zoo(tmp_path, "m: {arch: deit_huge}")()
    assert issubclass(ZooConfigError, VitrobustError)


def test_the_pickle_payload_is_live_so_its_row_can_fail(tmp_path):
    """The payload really runs code when unpickled without weights_only: the row above proves
    something only because this does happen here."""
    _save(tmp_path / "evil.pth", {"extra": _Payload(tmp_path / "pwned")})
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert (tmp_path / "pwned").is_dir()


def test_skip_bad_images_skips_and_lists_a_decompression_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    folder = tmp_path / "images"
    folder.mkdir()
    _bomb(1.2)(folder)
    data = load_dataset(str(folder), "test", image_size=8, skip_bad=True)
    assert len(data) == 4 and "a/bomb.png" not in data.ids
    assert [s.split(":")[0] for s in data.skipped] == ["a/bomb.png"]
    assert "decompression bomb" in data.skipped[0]


def test_a_good_zoo_config_still_loads(tmp_path):
    """The rows fail for their fault alone: the same files, right, load."""
    path = _save(tmp_path / "vit.pth", {"model": _state("vit_fixture")})
    _zoo(tmp_path, f"m: {{arch: vit_fixture, checkpoint: {path}}}\n'm:int8': {{}}", "m:int8")()
    folder = _images(tmp_path / "images")
    assert len(load_dataset(str(folder), "test", image_size=8)) == 4


@pytest.mark.parametrize("models, words", [
    ("m: {arch: deit_huge}", ("models.m.arch", "unknown model 'deit_huge'")),
    ("m: {arch: vit_fixture, checkpoint: WEIGHTS}", ("models.m.checkpoint", "is a folder")),
], ids=["unknown-arch", "checkpoint-is-a-folder"])
def test_vitrobust_run_stops_with_one_line_and_exit_4(tmp_path, models, words):
    """The CLI route: ``vitrobust run --zoo`` refuses a bad zoo config before collecting any
    spec, with one ``ERROR:`` line on stderr and pytest's usage-error exit code."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "zoo.yaml").write_text("models:\n  " + models.replace("WEIGHTS", str(tmp_path / "weights")) + "\n")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text("id: s\nabout: a\nchecks:\n  - params(deit_tiny) > 0\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "vitrobust.cli", "run", "specs", "--zoo", "zoo.yaml",
                             "-p", "no:cacheprovider", "-p", "no:randomly", "--vitrobust-no-report"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 4, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), result.stderr[-2000:]
    assert "zoo.yaml" in errors[0] and all(w in errors[0] for w in words)
    assert "Traceback" not in result.stderr + result.stdout


def test_through_vitrobust_run_a_pickle_with_code_fails_its_checks_and_nothing_runs(tmp_path):
    """End to end: the zoo config is fine, the checkpoint's pickle holds code. Every check naming
    the model fails with the one refusing line (exit 1), and the payload never runs."""
    _save(tmp_path / "evil.pth", {"model": {"w": torch.zeros(1)}, "extra": _Payload(tmp_path / "pwned")})
    (tmp_path / "zoo.yaml").write_text(f"models:\n  m: {{arch: deit_tiny_patch16_224, checkpoint: {tmp_path / 'evil.pth'}}}\n")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text("id: s\nabout: a\nchecks:\n  - params(m) > 0\n  - size_mb(m) > 0\n")
    result = subprocess.run([sys.executable, "-m", "vitrobust.cli", "run", "specs", "--zoo", "zoo.yaml",
                             "-p", "no:cacheprovider", "-p", "no:randomly", "--vitrobust-no-report",
                             "--vitrobust-no-progress"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "VITROBUST_CACHE": str(tmp_path / "cache")})
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-2000:]
    refusals = [line for line in out.splitlines() if "refused by torch.load(weights_only=True)" in line
                and not line.startswith("FAILED")]
    assert len(refusals) == 2, out[-2000:]
    for line in refusals:
        assert "zoo.yaml: models.m.checkpoint" in line and "evil.pth" in line and "pickled code" in line
    assert "pool: not used" in out   # vitrobust run's plan hit the same model: no pool, one line
    assert "Traceback" not in out
    assert not (tmp_path / "pwned").exists()
