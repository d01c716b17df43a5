"""Is a compression in effect: measured token keep ratios and the report's warnings."""
import copy

import pytest
import torch

from vitrobust.engine import Engine
from vitrobust.expr import parse_check
from vitrobust.in_effect import KIND, in_effect_warnings, keep_ratio, token_keep_ratios
from vitrobust.zoo import load_model


def _load(name):
    return load_model(name, progress=False)


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_keep_ratios_are_measured_per_stage(images):
    # 64 patch tokens at rho 0.5: 32, 16, 8 reach the blocks after the three stages
    assert token_keep_ratios(_load("vit_fixture:prune0.5"), images) == [0.5, 0.25, 0.125]
    # INT8 of the pruned model runs one image per call and prunes the same
    assert token_keep_ratios(_load("vit_fixture:prune0.5:int8"), images) == [0.5, 0.25, 0.125]
    model = _load("vit_fixture:prune0.5")
    assert keep_ratio(model, images) == pytest.approx(0.875 / 3)
    assert model.info.meta["keep_ratio_per_stage"] == [0.5, 0.25, 0.125]
    assert keep_ratio(_load("vit_fixture"), images) == 1.0
    assert keep_ratio(_load("vit_fixture:mini"), images) == 1.0


def test_keep_ratio_measures_what_runs_not_what_is_declared(images):
    model = copy.deepcopy(_load("vit_fixture:prune0.5"))
    model.net.token_ratios = [1.0, 1.0, 1.0]   # a pruning that silently does not prune
    assert model.info.meta["tokens_kept"] == [32, 16, 8]
    assert token_keep_ratios(model, images) == [1.0, 1.0, 1.0]
    messages = [w["message"] for w in in_effect_warnings(model, _load("vit_fixture"))]
    assert any("keeps every patch token" in m for m in messages)
    assert any("no fewer FLOPs" in m for m in messages)


def test_working_compressions_raise_no_warning():
    base = _load("vit_fixture")
    for name in ("vit_fixture:prune0.7", "vit_fixture:int8", "vit_fixture:mini"):
        # the fixtures train one or two epochs, so a variant may score below its base (that
        # warning has its own test); what must be absent is any sign the compression is off
        kinds = {w["kind"] for w in in_effect_warnings(_load(name), base)}
        assert kinds <= {"variant-below-base"}, name
    assert in_effect_warnings(base) == []


def test_int8_without_quantized_layers_is_flagged():
    fake = copy.deepcopy(_load("vit_fixture:int8"))
    fake.net = copy.deepcopy(_load("vit_fixture").net)   # says int8, computes in FP32
    warnings = in_effect_warnings(fake, _load("vit_fixture"))
    assert warnings[0] == {"kind": KIND, "message": "vit_fixture:int8: INT8 model without any quantized layer: "
                                                    "it computes in FP32, so its size, speed and robustness are its base's"}
    assert any("no fewer FLOPs" in w["message"] for w in warnings)


def test_mini_whose_layers_do_not_share_storage_is_flagged():
    fake = copy.deepcopy(_load("vit_fixture:mini"))
    fake.net.blocks = copy.deepcopy(_load("vit_fixture").net.blocks)   # 4 separate blocks
    [warning] = [w for w in in_effect_warnings(fake) if "share" in w["message"]]
    assert warning["message"] == ("vit_fixture:mini: Mini model whose 4 layers use 4 separate attention "
                                  "weights: its shared layers do not share storage")


def test_random_weights_are_warned_about():
    model = _load("deit_tiny_patch16_224")
    assert [w["kind"] for w in in_effect_warnings(model)] == ["random-weights"]


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    in_effect_warnings(_load("vit_fixture:prune0.7"), _load("vit_fixture"))
    assert torch.equal(torch.rand(3), expected)


def test_keep_ratio_is_a_measure_of_the_check_language(tmp_path):
    engine = Engine(adv_cache_dir=tmp_path, progress=False)
    data = {"split": "test", "limit": 8}
    verdict = engine.evaluate(parse_check("keep_ratio(vit_fixture:prune0.5) < keep_ratio(vit_fixture)"), {}, data, "s")
    assert verdict.status == "holds"
    values = {r.key: r.value for r in engine.measurements.values()}
    assert values == {"keep_ratio(vit_fixture:prune0.5)": pytest.approx(0.875 / 3), "keep_ratio(vit_fixture)": 1.0}
    assert engine.model_records["vit_fixture:prune0.5"].meta["keep_ratio_per_stage"] == [0.5, 0.25, 0.125]


def test_a_variant_far_below_its_base_is_flagged_when_built_and_in_the_report():
    from vitrobust.zoo.variant import MAX_ACCURACY_DROP, VariantBelowBase, compare_with_base

    base, variant = _load("vit_fixture"), copy.deepcopy(_load("vit_fixture:prune0.7"))
    with torch.no_grad():   # a collapsed variant: a head that always answers class 0
        variant.net.head.weight.zero_()
        variant.net.head.bias.copy_(torch.arange(10, 0, -1, dtype=torch.float))
    with pytest.warns(VariantBelowBase, match="more than 5% below"):
        compare_with_base(variant, base, "digits")
    assert variant.info.meta["val_acc"] < variant.info.meta["base_val_acc"] - MAX_ACCURACY_DROP
    [warning] = [w for w in in_effect_warnings(variant, base) if w["kind"] == "variant-below-base"]
    assert f"{variant.info.meta['val_acc']:.3f} on the val split" in warning["message"]
    # the same model within the margin raises nothing
    variant.info.meta["val_acc"] = variant.info.meta["base_val_acc"] - MAX_ACCURACY_DROP / 2
    assert all(w["kind"] != "variant-below-base" for w in in_effect_warnings(variant, base))
