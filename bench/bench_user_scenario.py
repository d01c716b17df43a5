"""Benchmark (not a test): the README's "Your models on a GPU" scenario, built as a user's would be.

It writes what a user brings: an ImageFolder at 224x224 (``val/<wnid>/*.JPEG``, 10 classes), a
10-class ``deit_small_patch16_224`` checkpoint saved the way facebookresearch/deit saves one
(``{"model": state_dict}``), and a DynamicViT DeiT-S 0.7 checkpoint with the official release's
key names and shapes (raoyongming/DynamicViT: timm's ViT keys plus ``score_predictor.*``). The
weights are random (nothing can be downloaded here): the numbers test the plumbing, not
robustness. Then it runs a spec on them with ``vitrobust run --zoo ... --device auto`` and
prints the time, where each model ran, and what the report says of the pruned model.

    python bench/bench_user_scenario.py [--device auto] [--images-per-class 10]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

SPEC = """\
id: my_release
about: the DynamicViT 0.7 we ship against its dense DeiT-S
data: {limit: 100}   # split test: val/ stands in for it
attacks:
  fgsm: {name: fgsm, eps: 2/255}
checks:
  - check: keep_ratio(deit_small:prune0.7) < 0.8
    claim: the pruned model really drops tokens on our data
  - check: gflops(deit_small:prune0.7) < gflops(deit_small)
    claim: and really computes less
  - check: asr(deit_small:prune0.7, fgsm) >= asr(deit_small, fgsm)
    claim: "pruning does not make the model harder to attack (random weights: plumbing only)"
"""


def write_folder(root: Path, classes: int, per_class: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "val" / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{c * per_class + i:08d}.JPEG")


def write_checkpoints(work: Path, classes: int) -> None:
    """The dense checkpoint from timm; the DynamicViT one from the pruned architecture, whose
    state dict carries the release's key names (``score_predictor.{i}.in_conv...``)."""
    import timm
    import torch

    from vitrobust.zoo import load_model

    torch.manual_seed(0)
    dense = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=classes)
    torch.save({"model": dense.state_dict()}, work / "deit_small_10class.pth")
    pruned = load_model("deit_small_patch16_224:prune0.7", progress=False, random_weights=True)
    state = pruned.net.state_dict()
    state["head.weight"], state["head.bias"] = dense.head.weight.detach(), dense.head.bias.detach()
    torch.save({"model": state}, work / "dynamicvit_deit_s_0.7.pth")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--images-per-class", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vitrobust-user-"))
    write_folder(work / "imagenet", args.classes, args.images_per_class)
    write_checkpoints(work, args.classes)
    (work / "zoo.yaml").write_text(textwrap.dedent(f"""\
        data: {work / 'imagenet'}
        models:
          deit_small: {{arch: deit_small_patch16_224, checkpoint: {work / 'deit_small_10class.pth'}}}
          deit_small:prune0.7: {{checkpoint: {work / 'dynamicvit_deit_s_0.7.pth'}}}
        """))
    (work / "specs").mkdir()
    (work / "specs" / "my_release.yaml").write_text(SPEC)
    command = [sys.executable, "-m", "vitrobust.cli", "run", "--zoo", "zoo.yaml", "--device", args.device,
               "--vitrobust-no-progress", "-p", "no:cacheprovider"]
    env = {**os.environ, "VITROBUST_CACHE": str(work / "cache")}
    started = time.perf_counter()
    run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(run.stdout[-4000:])
    if run.returncode not in (0, 1):   # 1: a check failed, which the report shows
        print(run.stderr[-3000:])
        sys.exit(f"the run stopped (exit {run.returncode})")
    record = json.loads((work / "reports" / "latest" / "report.json").read_text())
    print(f"\n{args.classes * args.images_per_class} images at 224x224, device {record['config']['device']}, "
          f"precision {record['config']['precision']}: {seconds:.0f} s end to end (cold cache)")
    for name, model in record["models"].items():
        print(f"  {name}: ran on {model['device']}, {model['gflops']:.2f} GFLOPs, "
              f"{model['throughput']:.1f} img/s, weights: {model['meta'].get('weights')}, "
              f"tokens kept: {model['meta'].get('tokens_kept', '-')}, measured keep ratio per stage: "
              f"{model['meta'].get('keep_ratio_per_stage', '-')}")
    for check in record["checks"]:
        values = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                           for k, v in check["values"].items())
        print(f"  {check['check']}: {check['status']} ({values})")
    print(f"work dir (delete when done): {work}")


if __name__ == "__main__":
    main()
