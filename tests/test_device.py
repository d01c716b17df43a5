"""Devices without a GPU: every tensor names its device, OOM halves the batch, CPU numerics stay.

There is no GPU on the CI machines, so the device plumbing is proved on the CPU: the engine runs
a real set of checks with an explicit ``device="cpu"`` while ``torch.set_default_device("meta")``
is in force, so any tensor made without a device lands on "meta" and fails (or differs), and the
out-of-memory path is driven by callables that raise ``torch.cuda.OutOfMemoryError``.
"""
import json

import pytest
import torch

from vitrobust import device as dev
from vitrobust.dataslice import DataSlice
from vitrobust.engine import Engine
from vitrobust.errors import VitrobustError
from vitrobust.expr import parse_check
from vitrobust.names import ModelName
from vitrobust.zoo import load_model
from vitrobust.zoo.wrapper import ModelWrapper

DATA = {"split": "test", "limit": 32}
ATTACKS = {"fgsm": {"name": "fgsm", "eps": 4 / 255},
           "pgd": {"name": "pgd", "eps": 4 / 255, "steps": 3},                 # random start: draws
           "pgd_l2": {"name": "pgd", "eps": 0.5, "norm": "l2", "steps": 2},
           "pgd_st": {"name": "pgd", "eps": 4 / 255, "steps": 1, "strategy": "straight-through"},
           "square": {"name": "square", "eps": 8 / 255, "n_queries": 5}}
CHECKS = ["acc(vit_fixture) > 0.1",
          "asr(vit_fixture, fgsm) >= 0",
          "asr(vit_fixture, pgd) >= asr(vit_fixture, fgsm) * 0",
          "asr(vit_fixture, pgd_l2) >= 0",
          "transfer(vit_fixture -> vit_fixture_wide, pgd) >= 0",
          "acc(vit_fixture:int8) >= 0",
          "asr(vit_fixture:int8, pgd_st) >= 0",
          "asr(vit_fixture, square) >= 0",
          "throughput(vit_fixture) > 0"]


INT8_DATA = {"split": "test", "limit": 8}   # INT8 runs one image per call: slow on a busy CPU


def _run(engine) -> dict:
    for text in CHECKS:
        engine.evaluate(parse_check(text), ATTACKS, INT8_DATA if "int8" in text else DATA, "spec")
    return {r.key: (r.value, r.outcomes) for r in engine.measurements.values() if r.kind != "throughput"}


def test_the_engine_makes_no_tensor_on_the_default_device(tmp_path, monkeypatch):
    from vitrobust import metrics

    monkeypatch.setattr(metrics, "default_batch_size", lambda size: 4)   # INT8 times 1 image per call
    reference = _run(Engine(device="cpu", adv_cache_dir=tmp_path / "ref", progress=False))
    engine = Engine(device="cpu", adv_cache_dir=tmp_path / "meta", progress=False)
    for name in ("vit_fixture", "vit_fixture_wide", "vit_fixture:int8"):
        load_model(name, progress=False)     # zoo.load_model takes no device: built before
    for data in (DATA, INT8_DATA):
        engine.data(engine.data_slice(data), 32)   # data.py is not device-aware either
    torch.set_default_device("meta")
    try:
        assert torch.empty(1).device.type == "meta"   # the trap is set
        measured = _run(engine)
    finally:
        torch.set_default_device(None)
    assert measured == reference              # same numbers: nothing was made on "meta" silently
    assert engine.model_records["vit_fixture:int8"].device == "cpu"
    assert engine.model_records["vit_fixture"].device == "cpu"
    assert engine.adv_cache.stats["generated"] == 5   # every attack really ran under the trap


def _oom_above(limit):
    def run(batch):
        if batch > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return f"ran at {batch}"
    return run


def test_out_of_memory_halves_the_batch_until_it_fits():
    halvings = []
    result, batch = dev.halving(_oom_above(40), 256, lambda old, new: halvings.append((old, new)))
    assert (result, batch) == ("ran at 32", 32)
    assert halvings == [(256, 128), (128, 64), (64, 32)]


def test_out_of_memory_at_batch_one_is_a_one_line_error_and_other_errors_pass_through():
    with pytest.raises(dev.DeviceError, match="even at batch size 1"):
        dev.halving(_oom_above(0), 4)

    def broken(batch):
        raise ValueError("not memory")
    with pytest.raises(ValueError):
        dev.halving(broken, 4)


class _OutOfMemoryAbove(ModelWrapper):
    """The fixture model, as if a GPU had room for at most ``limit`` images per call."""

    limit = 16

    def forward(self, images):
        if len(images) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return super().forward(images)


def test_the_engine_halves_on_out_of_memory_and_records_it(tmp_path):
    data = {"split": "test", "limit": 64}
    normal = Engine(device="cpu", adv_cache_dir=tmp_path / "a", progress=False)
    expected = normal.evaluate(parse_check("asr(vit_fixture, fgsm) >= 0"), ATTACKS, data, "s")
    engine = Engine(device="cpu", adv_cache_dir=tmp_path / "b", progress=False)
    real = load_model("vit_fixture", progress=False)
    engine._models[ModelName("vit_fixture")] = _OutOfMemoryAbove(real.net, real.info, *real.normalization)
    verdict = engine.evaluate(parse_check("asr(vit_fixture, fgsm) >= 0"), ATTACKS, data, "s")
    assert verdict.values == expected.values            # fgsm is batch-independent: same result
    messages = [w.message for w in engine.warnings if w.kind == "out-of-memory"]
    assert any("scoring at batch 256; retried at batch 128" in m for m in messages)
    assert any("attacking with fgsm at batch 256" in m for m in messages)
    assert any("timing throughput at batch 64; retried at batch 32" in m for m in messages)
    assert engine._batches["vit_fixture"] == 16          # the smaller batch stays for the model
    assert engine.model_records["vit_fixture"].throughput_batch == 16


def test_devices_are_checked_with_one_line_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(dev.ENV, raising=False)
    assert dev.resolve_device("auto") == torch.device("cpu") == dev.resolve_device(None)
    for bad, words in (("gpu", "not a device"), ("cuda:x", "not a device"), ("cuda", "no CUDA GPU")):
        with pytest.raises(VitrobustError, match=words) as exc:
            dev.resolve_device(bad)
        assert "\n" not in str(exc.value)
    monkeypatch.setenv(dev.ENV, "tpu")
    with pytest.raises(dev.DeviceError, match=r"\$VITROBUST_DEVICE 'tpu'"):
        dev.resolve_device(None)
    monkeypatch.setenv(dev.ENV, "cpu")
    assert dev.resolve_device(None) == torch.device("cpu")


def test_auto_takes_cuda_when_present_and_cuda_n_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv(dev.ENV, raising=False)
    assert dev.resolve_device("auto") == torch.device("cuda")
    assert dev.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(dev.DeviceError, match=r"sees 2 CUDA GPU\(s\)"):
        dev.resolve_device("cuda:2")


def test_precision_is_checked_and_fp32_is_no_autocast_at_all():
    with pytest.raises(dev.DeviceError, match="fp64"):
        dev.check_precision("fp64")
    with dev.autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with dev.autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bf16_changes_the_numbers_and_int8_is_untouched_by_it(tmp_path, digits_test):
    engine = Engine(device="cpu", precision="bf16", adv_cache_dir=tmp_path, progress=False)
    model, int8 = engine.model("vit_fixture"), engine.model("vit_fixture:int8")
    with engine.autocast():
        assert model(digits_test.images[:4]).dtype == torch.bfloat16
        assert int8(digits_test.images[:4]).dtype == torch.float32      # quantized kernels: no autocast


def test_cpu_fp32_keeps_the_adversarial_cache_key_of_before(tmp_path):
    """The key material on the CPU at fp32 is exactly vitrobust 0.1's: caches made before stay."""
    from vitrobust.adversarial import AttackConfig

    attack = AttackConfig.from_spec(ATTACKS["fgsm"])
    made = Engine(device="cpu", adv_cache_dir=tmp_path / "a", progress=False).adversarial.get(
        ModelName("vit_fixture"), attack, DataSlice(limit=32))
    [meta] = (tmp_path / "a").rglob(f"{made.key}.json")
    assert set(json.loads(meta.read_text())["material"]) == {
        "source", "source_name", "threat_model", "strategy", "data", "data_key"}
    other = Engine(device="cpu", precision="bf16", adv_cache_dir=tmp_path / "b", progress=False)
    bf16 = other.adversarial.get(ModelName("vit_fixture"), attack, DataSlice(limit=32))
    [meta] = (tmp_path / "b").rglob(f"{bf16.key}.json")
    material = json.loads(meta.read_text())["material"]
    assert bf16.key != made.key and (material["device"], material["precision"]) == ("cpu", "bf16")


def test_int8_stays_on_its_pinned_device_and_serves_inputs_from_elsewhere(digits_test):
    int8 = load_model("vit_fixture:int8", progress=False)
    assert int8.info.pinned_device == "cpu"
    assert dev.place(int8, torch.device("meta")) is int8 and dev.home_device(int8) == torch.device("cpu")
    # a model on another device than its input moves the input in and the logits back
    with pytest.raises(NotImplementedError, match="meta"):
        int8(torch.empty(1, 3, 32, 32, device="meta"))


def test_training_runs_on_the_training_device_and_returns_the_model_home(monkeypatch, digits_test):
    from vitrobust.zoo import train as zoo_train
    from vitrobust.zoo.wrapper import ModelInfo

    seen = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    model = ModelWrapper(net, ModelInfo("tiny"))
    teacher = ModelWrapper(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)),
                           ModelInfo("teacher"))

    def loss(m, images, labels):
        seen.append((images.device, labels.device, dev.home_device(m), dev.home_device(teacher)))
        return torch.nn.functional.cross_entropy(m(images), labels)

    moves = []
    real_place = zoo_train.place
    monkeypatch.setattr(zoo_train, "place", lambda m, d: moves.append((m.info.name, str(d))) or real_place(m, d))
    dev.set_training_device(torch.device("cpu"))
    try:
        zoo_train.fit(model, digits_test, {"epochs": 1, "batch_size": 64}, loss_fn=loss,
                      progress=False, companions=(teacher,))
    finally:
        dev.set_training_device(None)
    assert seen and all(d == torch.device("cpu") for row in seen for d in row)
    assert moves == [("tiny", "cpu"), ("teacher", "cpu")] * 2   # there and back, teacher too


def test_the_gate_says_when_device_or_precision_differ_from_the_baseline():
    from vitrobust.gate import comparability_notes
    from vitrobust.record import RunConfig, RunRecord

    baseline = RunRecord.from_dict({"run_id": "old", "config": {"data": "digits"}})   # before devices
    assert baseline.config.device == "cpu" and comparability_notes(RunRecord("a", config=RunConfig("digits")), baseline) == []
    notes = comparability_notes(RunRecord("b", config=RunConfig("digits", device="cuda:0", precision="bf16")), baseline)
    assert [n.split(" differs")[0] for n in notes] == ["note: device", "note: precision"]
