"""Benchmark (not a test): an ImageNet-size folder with ``limit: 1000`` costs memory for 1,000 images.

It writes an ImageFolder of JPEGs like ImageNet's validation set (by default 1,000 classes x 20
images of 500x375; about 0.4 GB, kept for the next run with ``--folder``), a 1,000-class
``deit_tiny_patch16_224`` checkpoint (random weights: memory and decoding do not depend on them)
and a spec with ``limit: 1000``, then runs the spec as a user would (``vitrobust run``) in a
child process and prints:

- the child's peak resident memory (``getrusage``: the largest of its processes), against what
  decoding the whole folder up front would take;
- how many images were decoded (the run record's data section: scored plus skipped);
- how many classes the 1,000 images cover.

    python bench/bench_data.py [--folder DIR] [--classes 1000] [--per-class 20] [--limit 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SPEC = """\
id: imagenet_size
about: clean accuracy of a random-weights 1,000-class DeiT-Ti on a stratified 1,000-image subset
data: {{limit: {limit}}}   # split test: val/ stands in for it
checks:
  - check: acc(deit_tiny) < 0.05
    claim: random weights score near chance (1 in {classes})
"""


def write_class(args) -> int:
    """One class folder of JPEGs: a smooth colour field per class plus per-image noise, so files
    are JPEG-sized (tens of kB) and every image differs."""
    from PIL import Image

    root, label, per_class, width, height = args
    folder = Path(root) / "val" / f"n{label:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(label)
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    for i in range(per_class):
        path = folder / f"ILSVRC2012_val_{label * per_class + i:08d}.JPEG"
        if path.exists():
            continue
        noise = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=85)
    return per_class


def write_folder(root: Path, classes: int, per_class: int) -> None:
    jobs = [(str(root), c, per_class, 500, 375) for c in range(classes)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = sum(pool.map(write_class, jobs, chunksize=16))
    print(f"folder: {done} JPEGs in {classes} classes at {root / 'val'}")


def write_checkpoint(path: Path, classes: int) -> None:
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=classes)
    torch.save({"model": net.state_dict()}, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="where the JPEGs go (kept; default: a temp dir)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vitrobust-bench-data-"))
    folder = args.folder or work / "imagenet"
    started = time.perf_counter()
    write_folder(folder, args.classes, args.per_class)
    print(f"  written or found in {time.perf_counter() - started:.0f} s")
    write_checkpoint(work / "deit_tiny.pth", args.classes)
    (work / "zoo.yaml").write_text(textwrap.dedent(f"""\
        data: {folder}
        models:
          deit_tiny: {{arch: deit_tiny_patch16_224, checkpoint: {work / 'deit_tiny.pth'}}}
        """))
    (work / "spec.yaml").write_text(SPEC.format(limit=args.limit, classes=args.classes))
    env = {**os.environ, "VITROBUST_CACHE": str(work / "cache")}
    command = [sys.executable, "-m", "vitrobust.cli", "run", str(work / "spec.yaml"),
               "--zoo", str(work / "zoo.yaml"), "--vitrobust-report-dir", str(work / "reports"),
               "--vitrobust-no-progress", "-q", "-p", "no:cacheprovider"]
    started = time.perf_counter()
    run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        sys.exit(f"the spec run failed (exit {run.returncode})")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9   # Linux: kB
    floor = subprocess.run([sys.executable, "-c", "import resource, vitrobust.engine, timm; print("
                            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                           capture_output=True, text=True, check=True)
    floor_gb = int(floor.stdout.split()[-1]) * 1024 / 1e9
    record = json.loads((work / "reports" / "latest" / "report.json").read_text())
    (data,) = record["data"].values()
    decoded = data["images"] + len(data["skipped"])
    whole = args.classes * args.per_class * 3 * 224 * 224 * 4 / 1e9
    print(f"spec run: {seconds:.0f} s, check {record['checks'][0]['status']}")
    print(f"peak RSS of the run: {peak_gb:.2f} GB, of which importing torch and timm: {floor_gb:.2f} GB "
          f"(decoding all {args.classes * args.per_class} images up front: {whole:.1f} GB of float32 pixels alone)")
    print(f"images decoded: {decoded} of {args.classes * args.per_class} (limit {args.limit})")
    print(f"classes among them: {data['classes']} of {data['num_classes']}")
    print(f"work dir (delete when done): {work}")


if __name__ == "__main__":
    main()
