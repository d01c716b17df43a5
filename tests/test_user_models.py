"""A user's own models and images, end to end through the pytest plugin.

The scenario of the README's "Your own models and data": a 224x224 ImageFolder with 10 classes,
a 10-class ``deit_tiny_patch16_224`` checkpoint, and the official-layout DynamicViT and
Mini-DeiT checkpoints of its variants, all named in a zoo config, scored by a spec that never
mentions any of those files. And the refusal when a variant's checkpoint is missing.

Random checkpoints would leave every accuracy and attack rate to chance, so the checks could only
be vacuous (``asr >= 0``). Instead the checkpoints are built by hand to be a known classifier:

- every image of class ``c`` is a flat gray of level ``30 + 20c`` (plus faint noise), and the
  class folders sort in level order, so class index ``c`` is level ``c``;
- the patch embedding puts a patch's mean intensity in dimension 0 and a constant in
  dimension 1, so after a LayerNorm each level is a distinct point on a circle;
- in the dense and DynamicViT nets, block 0 attends uniformly (zero queries and keys, identity
  values and projection), which copies the mean of the normalized patches into the class token
  (before the first pruning stage, so DynamicViT drops tokens that no longer matter); every other
  block is the identity (zero attention projection and MLP output). The Mini-DeiT net has no
  class token: its blocks are all the identity and the release's mean pooling of the patch
  tokens carries the image. So all three end in the same feature, and one head (each level's
  feature as a template, argmax = nearest level) classifies every image right;
- FGSM moves every pixel of an image the same way (all the gradient flows through the patch
  means), so at 32/255 it shifts the image's gray by 1.6 levels, towards the other classes:
  every image is misclassified by the model it was made on, and the dense model's adversarial
  images fool both variants too (transfer).
- the pruned net's token counts, FLOPs and the Mini net's size follow from the architectures.

So every verdict is known in advance, and it holds only if the product really reads the folder
in sorted class order, loads each checkpoint into the architecture the release meant (a Mini net
that pooled a class token instead of its patch tokens would see a constant and score 1/10; a
random base, chance), and runs 10-class models and attacks through all three.
"""
import json
from types import SimpleNamespace

import pytest
import torch

# The official layouts, key by key, as tests/test_checkpoints.py writes them from the releases'
# model code (reused, so a drift of either from the releases is fixed in one place).
from test_checkpoints import _mini_deit, _predictor_lg, _shapes

pytest_plugins = ["pytester"]

DIM, CLASSES, PER_CLASS = 192, 10, 2
IMAGES = CLASSES * PER_CLASS
LEVELS = [30 + 20 * c for c in range(CLASSES)]   # gray levels of the classes, 0-255
SCALE = 100.0   # logit = SCALE * cos(feature, template): on a template, the next level's logit is
                # 0.6 to 6 lower, so no image is near a tie, and the softmax keeps a gradient for FGSM
TOKENS_KEPT = [137, 96, 67]   # DynamicViT's own count at 0.7: int(0.7**k * 196)

SPEC = """
id: user_models
about: a user's 10-class DeiT-Tiny and its DynamicViT and Mini-DeiT releases on a 224x224 folder
data: {split: test, limit: %d}
attacks:
  fgsm: {name: fgsm, eps: 32/255}
matrix: {model: [deit_tiny, "deit_tiny:prune0.7", "deit_tiny:mini"]}
checks:
  - acc({model}) > 0.85
  - asr({model}, fgsm) > 0.8
  - check: transfer(deit_tiny -> {model}, fgsm) > 0.8
    only: {model: ["deit_tiny:prune0.7", "deit_tiny:mini"]}
  - keep_ratio(deit_tiny:prune0.7) < 0.75
  - gflops(deit_tiny:prune0.7) < gflops(deit_tiny)
  - size_mb(deit_tiny:mini) < 0.7 * size_mb(deit_tiny)
""" % IMAGES
ITEMS = 3 + 3 + 2 + 3
MODELS = ("deit_tiny", "deit_tiny:prune0.7", "deit_tiny:mini")


def _solid(level: int, noise: float = 0.0, generator=None) -> torch.Tensor:
    image = torch.full((3, 224, 224), level / 255)
    if noise:
        image = image + noise * (2 * torch.rand(3, 224, 224, generator=generator) - 1)
    return image.clamp(0, 1)


def _body(shapes: dict) -> dict:
    """Zeros (every residual branch adds nothing), LayerNorms at weight 1, and a patch embedding
    that reads a patch's mean intensity (dimension 0) beside a constant (dimension 1)."""
    state = {k: torch.zeros(shape) for k, shape in shapes.items()}
    for key in state:
        if key == "norm.weight" or key.endswith("in_conv.0.weight") or \
                key.endswith(".weight") and (".norm1." in key or ".norm2." in key):
            state[key] = torch.ones(shapes[key])
    state["patch_embed.proj.weight"][0] = 1.0 / (3 * 16 * 16)
    state["patch_embed.proj.bias"][1] = 1.0
    return state


def _dense_body() -> dict:
    state = _body(_shapes("deit_tiny_patch16_224", num_classes=CLASSES))
    state["blocks.0.attn.qkv.weight"][2 * DIM:] = torch.eye(DIM)   # q = k = 0: uniform attention
    state["blocks.0.attn.proj.weight"] = torch.eye(DIM)
    return state


def _templates(dense: dict) -> torch.Tensor:
    """The head: each level's pre-logit feature in the dense net, scaled to logits SCALE * cos."""
    import timm

    from vitrobust.zoo.build import IMAGENET_MEAN, IMAGENET_STD

    with torch.device("meta"):
        net = timm.create_model("deit_tiny_patch16_224", num_classes=CLASSES)
    net.load_state_dict(dense, assign=True)
    net.eval()
    images = torch.stack([_solid(level) for level in LEVELS])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    with torch.no_grad():
        features = net.forward_head(net.forward_features((images - mean) / std), pre_logits=True)
    return torch.nn.functional.normalize(features, dim=1) * SCALE / features.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """The user's disk: test/<class>/<n>.png, and the three checkpoints as the releases save
    them (the state dict under "model")."""
    import numpy as np
    from PIL import Image

    from vitrobust.zoo.cache import state_hash

    root = tmp_path_factory.mktemp("user")
    generator = torch.Generator().manual_seed(0)
    for level in LEVELS:
        folder = root / "images" / "test" / f"gray{level:03d}"   # sorted folder names = level order
        folder.mkdir(parents=True)
        for n in range(PER_CLASS):
            pixels = (_solid(level, 4 / 255, generator) * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"{n}.png")

    dense = _dense_body()
    head = {"head.weight": _templates(dense), "head.bias": torch.zeros(CLASSES)}
    dense.update(head)
    dynamicvit = dict(dense)
    for i in range(3):   # random predictors: every patch carries the same gray, any kept set will do
        for key, shape in _predictor_lg(i, DIM).items():
            dynamicvit[key] = torch.randn(shape, generator=generator) * 0.02
            if key.endswith("in_conv.0.weight"):
                dynamicvit[key] = torch.ones(shape)
    mini = _body(_mini_deit(DIM, 12, 3, CLASSES, irpe=False))
    mini.update(head)
    states = {"deit_tiny": dense, "deit_tiny:prune0.7": dynamicvit, "deit_tiny:mini": mini}
    paths = {}
    for name, state in states.items():
        paths[name] = root / f"{name.replace(':', '_')}.pth"
        torch.save({"model": state}, paths[name])
    return SimpleNamespace(data=root / "images", checkpoints=paths,
                           hashes={name: state_hash(state) for name, state in states.items()})


def _zoo(pytester, files, *, with_prune: bool = True):
    entries = {"deit_tiny": f"{{arch: deit_tiny_patch16_224, checkpoint: {files.checkpoints['deit_tiny']}}}",
               '"deit_tiny:prune0.7"': f"{{checkpoint: {files.checkpoints['deit_tiny:prune0.7']}}}",
               '"deit_tiny:mini"': f"{{checkpoint: {files.checkpoints['deit_tiny:mini']}}}"}
    if not with_prune:
        del entries['"deit_tiny:prune0.7"']
    path = pytester.path / "zoo.yaml"
    path.write_text(f"data: {files.data}\nmodels:\n" + "".join(f"  {k}: {v}\n" for k, v in entries.items()))
    return path


def _run(pytester, monkeypatch, zoo, *args):
    # Every cache (adversarial sets, any training) in this test's folder, never the user's home
    # or the checkout's shared test cache: the first test then also proves the attacks ran.
    monkeypatch.setenv("VITROBUST_CACHE", str(pytester.path / "cache"))
    monkeypatch.delenv("VITROBUST_DEVICE", raising=False)
    # The inner session shares this process's vitrobust modules, so models built by another test
    # (and meta written into them by its checks) would be reused: each run builds its own.
    monkeypatch.setattr("vitrobust.zoo.build._LOADED", {})
    (pytester.path / "specs").mkdir(exist_ok=True)
    (pytester.path / "specs" / "user.yaml").write_text(SPEC)
    return pytester.runpytest_inprocess(
        "specs", "-p", "no:randomly", "--vitrobust-no-progress", "--vitrobust-device=cpu",
        f"--vitrobust-report-dir={pytester.path / 'reports'}", f"--vitrobust-zoo={zoo}", *args)


def test_own_checkpoints_and_images_run_through_the_plugin(pytester, monkeypatch, user_files):
    result = _run(pytester, monkeypatch, _zoo(pytester, user_files))
    result.assert_outcomes(passed=ITEMS)
    assert "adversarial sets: 3 generated" in result.stdout.str()   # one FGSM set per model, made here

    report = json.loads((pytester.path / "reports" / "latest" / "report.json").read_text())
    assert report["config"]["data"] == str(user_files.data)
    assert report["config"]["zoo"] == str(pytester.path / "zoo.yaml")
    assert [c["status"] for c in report["checks"]] == ["holds"] * ITEMS

    models = report["models"]
    assert set(MODELS) <= set(models)
    for name in MODELS:
        # the weights measured are the checkpoint's, bit for bit, and say where they came from
        assert models[name]["meta"]["weights"] == f"checkpoint {user_files.checkpoints[name]}", name
        assert models[name]["weight_hash"] == user_files.hashes[name], name
        assert models[name]["input_size"] == 224 and models[name]["clean_acc"] == 1.0, name
    # loaded from the release's checkpoint, the pruned model keeps the release's token counts
    assert models["deit_tiny:prune0.7"]["meta"]["tokens_kept"] == TOKENS_KEPT
    # ...and its later blocks really run on those: (3*197 + 3*138 + 3*97 + 3*68) / (12*197) = 0.63
    assert models["deit_tiny:prune0.7"]["gflops"] < 0.7 * models["deit_tiny"]["gflops"]
    # nothing in the report says a compression is not in effect, a model is random or an attack
    # had no gradient to follow
    assert not [w for w in report["warnings"]
                if w["kind"] in ("compression-not-in-effect", "random-weights", "zero-gradient")]

    measured = {m["key"]: m for m in report["measurements"]}
    for name in MODELS:
        # all 20 images of all 10 classes were scored (a class-count mismatch would have stopped
        # the run), each model got every one right, and FGSM fooled it on every one
        for key in (f"acc({name})", f"asr({name}, fgsm)"):
            assert (measured[key]["k"], measured[key]["n"]) == (IMAGES, IMAGES), key
            assert str(user_files.data) in measured[key]["data"], key
    for name in MODELS[1:]:
        key = f"transfer(deit_tiny -> {name}, fgsm)"
        assert (measured[key]["k"], measured[key]["n"]) == (IMAGES, IMAGES), key
    assert measured["keep_ratio(deit_tiny:prune0.7)"]["value"] == pytest.approx(sum(TOKENS_KEPT) / 3 / 196)


def test_a_variant_without_its_checkpoint_is_refused_in_one_line(pytester, monkeypatch, user_files):
    """The same zoo without the DynamicViT entry: the base is a checkpoint, with no training data,
    so the pruned variant cannot be trained; it must not run with random predictors either."""
    # two of the checks naming it: a rate scored on the images, and a comparison with its base
    result = _run(pytester, monkeypatch, _zoo(pytester, user_files, with_prune=False),
                  "-k", "acc and prune0.7 or gflops")
    result.assert_outcomes(failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "Traceback" not in out
    # one line per check in the failures section; the short summary's copies start with FAILED
    # and are cut to the terminal's width, so they are not counted
    errors = [line for line in out.splitlines() if line.startswith("EngineError:")]
    assert len(errors) == 2
    for line in errors:
        # the spec's name for it, once, and the zoo-config key to add is that same name
        assert line.startswith("EngineError: deit_tiny:prune0.7: this variant needs training")
        assert "(deit_tiny:prune0.7: {checkpoint: PATH})" in line
        assert "{checkpoint: PATH}" in line and "train: {epochs: N}" in line   # the two ways out
    # refused before anything ran on it: nothing measured, no half-built model in the report
    report = json.loads((pytester.path / "reports" / "latest" / "report.json").read_text())
    assert report["models"] == {} and report["measurements"] == []
    assert [c["status"] for c in report["checks"]] == ["error", "error"]


def test_following_the_refusal_advice_loads_the_variant(monkeypatch, user_files):
    """The refusal names a zoo entry for the variant: an entry under that name must be the one
    the spec's name resolves to. In-process (no plugin run): the advice comes from the build."""
    import re

    from vitrobust.zoo import UntrainedVariantError, build, load_model
    from vitrobust.zoo.config import ZooConfig

    monkeypatch.setattr(build, "_LOADED", {})   # build afresh, whatever other tests built

    def load(models: dict):
        arch, plan = ZooConfig(models=models).resolve("deit_tiny:prune0.7")
        return load_model(arch, checkpoint=plan, progress=False)

    base = {"deit_tiny": {"arch": "deit_tiny_patch16_224", "checkpoint": str(user_files.checkpoints["deit_tiny"])}}
    with pytest.raises(UntrainedVariantError) as refusal:
        load(base)
    [entry] = re.findall(r"\((\S+): \{checkpoint: PATH\}\)", str(refusal.value))
    checkpoint = str(user_files.checkpoints["deit_tiny:prune0.7"])
    assert entry == "deit_tiny:prune0.7"   # not the architecture the alias resolves to
    model = load({**base, entry: {"checkpoint": checkpoint}})
    assert model.info.meta["weights"] == f"checkpoint {checkpoint}"
