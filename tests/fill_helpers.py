"""What the executor tests share (tests/test_executor_ray.py, tests/test_executor_pool.py): a
spec of deterministic attacks on the fixture models, in shards, and the sets a serial run makes
of it, to compare an executor's bytes with."""
import json

import pytest

from vitrobust.advcache import AdvCache
from vitrobust.engine import Engine
from vitrobust.names import ModelName
from vitrobust.planner import plan
from vitrobust.selection import select
from vitrobust.zoo import load_model

SHARD = 20    # images per shard: the 48 images of the spec are 3 shards, 3 units per set

SPEC = """
id: distributed
about: deterministic attacks on the fixture models, made by an executor and serially
data: {split: test, limit: 48}
attacks:
  fgsm: {name: fgsm, eps: 2/255}
  pgd: {name: pgd, eps: 4/255, steps: 3}
checks:
  - asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)
  - transfer(vit_fixture -> vit_fixture_wide, pgd) <= asr(vit_fixture, pgd)
"""


@pytest.fixture(scope="module", autouse=True)
def sharded():
    """Every test using it makes its sets in shards of ``SHARD`` images (workers get the size from the
    driver, not from their environment)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITROBUST_SHARD_IMAGES", str(SHARD))
        yield


@pytest.fixture(scope="module")
def spec_args(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    (folder / "specs").mkdir()
    (folder / "specs" / "distributed.yaml").write_text(SPEC)
    return [str(folder / "specs"), f"--rootdir={folder}", "--vitrobust-no-progress"]


@pytest.fixture(scope="module")
def serial(spec_args, tmp_path_factory) -> dict:
    """Every planned shard made in this process, in a cache of its own: key -> images."""
    for name in ("vit_fixture", "vit_fixture_wide"):   # trained first: a plan knows a set's key
        load_model(name, progress=False)                # only once its source is built
    selected, engine = select(spec_args)
    made_here = Engine(adv_cache_dir=tmp_path_factory.mktemp("serial"), progress=False)
    shards = {}
    for unit in plan(engine, selected).of("adversarial"):
        shard = made_here.adversarial.plan(ModelName(unit.model), unit.config, unit.slice).shards[unit.index]
        assert unit.key == f"adversarial/{shard.key}"
        shards[shard.key] = made_here.adversarial.shard(ModelName(unit.model), unit.config, unit.slice, shard)["adv"]
    assert len(shards) == 2 * 3   # two sets of three shards
    return shards


def from_cache(cache, keys) -> dict:
    adv = AdvCache(cache / "adversarial")
    out = {}
    for key in keys:
        manifest = json.loads(adv.manifest_path(key).read_text())
        out[key] = adv.get(manifest["material"])["adv"]
    return out
