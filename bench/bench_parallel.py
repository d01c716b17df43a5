"""Benchmark (not a test): ``vitrobust run`` against ``vitrobust run -n 2`` on the fixture zoo.

Runs one spec on the tiny trained fixture models (``fixtures/models.py``) as a user would:
serially; on two pytest-xdist workers; and on two workers with one torch thread each
(``OMP_NUM_THREADS=1``: by default every worker runs as many threads as the machine has cores,
so two workers oversubscribe it). Each run starts with an empty adversarial cache (the attacks
are the work being shared out) and the same trained models (trained once beforehand, so no run
trains). Printed: the wall time of each, the outcome counts, how many runs each session recorded
in its database and how many checks each holds, and ``vitrobust diff`` of each parallel report
against the serial one (same verdicts and non-timing numbers?). On a 2-core machine a speed-up
is not expected: the point is the same result, in one record, with no lost work.

    python bench/bench_parallel.py [--workers 2] [--images 300] [--models CACHE] [--keep]

``--models CACHE``: take the trained fixture models from that ``VITROBUST_CACHE`` (e.g. the tests'
``.pytest_cache/d/vitrobust-test-cache``) instead of training them in a temp dir first.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = """\
id: parallel
about: several source models, white-box attacks, transfer, sizes and speeds (fixture zoo)
data: {{split: test, limit: {images}}}
attacks:
  fgsm: {{name: fgsm, eps: 2/255}}
  pgd: {{name: pgd, eps: 4/255, steps: 10}}
  pgd8: {{name: pgd, eps: 8/255, steps: 10}}
matrix: {{model: [vit_fixture, vit_fixture_wide, cnn_fixture]}}
checks:
  - asr({{model}}, pgd) > asr({{model}}, fgsm)
  - asr({{model}}, pgd8) >= asr({{model}}, pgd)
  - robust_acc({{model}}, pgd) < acc({{model}})
  - acc({{model}}) > 0.5
  - transfer(vit_fixture -> vit_fixture_wide, pgd) < asr(vit_fixture_wide, pgd)
  - transfer(vit_fixture_wide -> vit_fixture, pgd) < asr(vit_fixture, pgd)
  - size_mb(vit_fixture) < size_mb(vit_fixture_wide)
  - throughput(vit_fixture) > 0.1 * throughput(vit_fixture_wide)
"""
CONFTEST = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport fixtures.models  # noqa: F401\n"
MODELS = ("vit_fixture", "vit_fixture_wide", "cnn_fixture")


def train_models(cache: Path) -> None:
    """The fixture models, trained (or found) in ``cache`` in a child process."""
    code = ("import fixtures.models\nfrom vitrobust.zoo import load_model\n"
            f"for name in {MODELS!r}:\n    load_model(name, progress=False)\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env={**os.environ, "VITROBUST_CACHE": str(cache), "PYTHONPATH": str(ROOT)})


def run(work: Path, models: Path, name: str, images: int, extra: list[str], env: dict | None = None) -> dict:
    """``vitrobust run`` in its own folder, with its own empty adversarial cache."""
    folder = work / name
    (folder / "specs").mkdir(parents=True)
    (folder / "specs" / "parallel.yaml").write_text(SPEC.format(images=images))
    (folder / "conftest.py").write_text(CONFTEST)
    shutil.copytree(models / "models", folder / "cache" / "models")
    env = {**os.environ, **(env or {}), "VITROBUST_CACHE": str(folder / "cache")}
    command = [sys.executable, "-m", "vitrobust.cli", "run", "--vitrobust-no-progress",
               "--vitrobust-report-dir", str(folder / "reports"), "-p", "no:cacheprovider", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    counts = re.findall(r"(\d+) (passed|failed|xfailed|xpassed|skipped|error)", done.stdout.splitlines()[-1])
    with sqlite3.connect(folder / "reports" / "vitrobust.sqlite") as db:
        runs = db.execute("SELECT (SELECT COUNT(*) FROM checks c WHERE c.run_id = r.run_id) FROM runs r").fetchall()
    folders = [p for p in (folder / "reports").iterdir() if p.is_dir() and p.name != "latest"]
    return {"seconds": seconds, "exit": done.returncode, "counts": ", ".join(f"{n} {w}" for n, w in counts),
            "runs": [n for (n,) in runs], "folders": len(folders), "report": folder / "reports" / "latest",
            "stdout": done.stdout}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--models", type=Path, default=None,
                        help="a VITROBUST_CACHE holding the trained fixture models (default: train them)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (reports, caches)")
    args = parser.parse_args()
    from vitrobust.reportdiff import diff_runs, load

    work = Path(tempfile.mkdtemp(prefix="vitrobust-bench-parallel-"))
    models = args.models or work / "trained"
    started = time.perf_counter()
    train_models(models)
    print(f"fixture models trained (or found) in {time.perf_counter() - started:.0f} s; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    workers = ["-n", str(args.workers)]
    results = {"serial": run(work, models, "serial", args.images, []),
               f"-n {args.workers}": run(work, models, "parallel", args.images, workers),
               f"-n {args.workers}, 1 thread each": run(work, models, "parallel-1-thread", args.images, workers,
                                                        {"OMP_NUM_THREADS": "1"})}
    serial = load(results["serial"]["report"])
    print(f"spec: {len(serial.checks)} checks on {', '.join(MODELS)}, {args.images} test images, "
          f"adversarial sets made anew in each run")
    for label, result in results.items():
        line = (f"  {label:<22} {result['seconds']:6.1f} s   exit {result['exit']}   {result['counts']}   "
                f"database: {len(result['runs'])} run(s) holding {result['runs']} checks, "
                f"{result['folders']} report folder(s)")
        if label != "serial":
            differences, counts = diff_runs(serial, load(result["report"]))
            what = f"{counts['checks']} checks, {counts['measurements']} measurements, {counts['models']} models"
            line += (f"\n  {'':<22} against serial: {'same verdicts and numbers' if not differences else f'{len(differences)} difference(s)'} "
                     f"in {what} (timings left out)")
            line += "".join(f"\n    {d}" for d in differences)
        print(line)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.keep:
        print(f"work dir: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
