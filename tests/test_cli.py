"""The `vitrobust` command: outputs users script against, and one-line errors."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vitrobust.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vitrobust.cli", *args], capture_output=True, text=True, timeout=600)


def test_measure_json_has_the_documented_keys(capsys):
    assert main(["measure", "deit_tiny_patch16_224", "--input-size", "64", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert {"model", "params", "size_mb", "gflops", "throughput"} <= set(record)
    assert record["model"] == "deit_tiny_patch16_224" and record["params"] == 5_717_416
    assert "clean_acc" not in record            # random weights, no data of its own


def test_measure_trained_model_reports_clean_accuracy(capsys):
    import fixtures.models  # noqa: F401
    assert main(["measure", "vit_fixture", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert 0.5 < record["clean_acc"] <= 1.0


def test_unknown_model_is_one_line_exit_2():
    result = run_cli("measure", "deit_huge")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown model 'deit_huge'" in result.stderr and "Traceback" not in result.stderr


def test_unknown_compression_suffix_is_one_line(capsys):
    assert main(["measure", "deit_tiny_patch16_224:prune9"]) == 2
    err = capsys.readouterr().err
    assert "prune9" in err and len(err.strip().splitlines()) == 1


def test_zoo_list_shows_variants_with_metadata(capsys):
    assert main(["zoo", "list", "deit_small*"]) == 0
    out = capsys.readouterr().out
    for name in ("deit_small:int8", "deit_small:prune0.7", "deit_small:mini", "deit_small:distilled"):
        assert name in out
    assert "keep_rate=0.7" in out
    assert "deit_tiny" not in out


def test_attacks_list_names_gradient_needs(capsys):
    assert main(["attacks", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert {"fgsm", "pgd", "square", "salt_and_pepper", "uap_pgd"} <= set(lines)
    assert lines["pgd"].split()[1] == "yes" and lines["square"].split()[1] == "no"


def test_run_with_missing_spec_path_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path / "nope.yaml")])
    assert exc.value.code == 2
    assert "nope.yaml: no such spec file" in capsys.readouterr().err


def test_run_passes_pytest_options_through_and_defaults_to_specs(tmp_path):
    # `-k pruning` must reach pytest as an option with its value, not be read as a spec path,
    # and `--vitrobust-report-dir DIR` must keep its value even though DIR exists.
    shutil.copytree(Path(__file__).parents[1] / "specs", tmp_path / "specs")
    result = subprocess.run([sys.executable, "-m", "vitrobust.cli", "run", "-k", "pruning", "--collect-only",
                             "--vitrobust-report-dir", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    items = [line for line in result.stdout.splitlines() if "::" in line]
    assert items and all(line.startswith("specs/pruning.yaml::") for line in items)


def test_run_without_specs_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["run", "-k", "pruning"])
    assert exc.value.code == 2 and "no specs/ folder here" in capsys.readouterr().err


def test_gate_unknown_baseline_is_exit_2(tmp_path):
    result = run_cli("gate", "--baseline", "nope", "--db", str(tmp_path / "db.sqlite"))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_measure_reports_where_the_model_ran(capsys):
    assert main(["measure", "deit_tiny_patch16_224", "--input-size", "32", "--json", "--device", "cpu"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["device"] == "cpu"


@pytest.mark.parametrize("command", [["measure", "deit_tiny_patch16_224"], ["zoo", "build", "cnn_small"],
                                     ["run", "--collect-only"]])
def test_a_device_without_cuda_or_a_bad_one_is_one_line_exit_2(command, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, words in (("cuda", "no CUDA GPU"), ("npu", "not a device")):
        assert main([*command, "--device", device]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1


def test_run_passes_the_device_to_pytest(monkeypatch):
    import pytest as pytest_module

    seen = []
    monkeypatch.setattr(pytest_module, "main", lambda args: seen.append(args) or 0)
    assert main(["run", "--jobs", "1", "--device", "cpu", "-k", "tiny"]) == 0
    args = seen[0]
    assert args[args.index("--vitrobust-device") + 1] == "cpu" and "-k" in args


def test_pytest_refuses_a_bad_device_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--vitrobust-device", "cuda:x", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode != 0
    assert "ERROR: device 'cuda:x' is not a device; use auto, cpu, cuda or cuda:N" in result.stderr
