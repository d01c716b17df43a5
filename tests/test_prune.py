"""DynamicViT token pruning (``:prune{rho}``): token counts, FLOPs, masking, checkpoints."""
import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vitrobust.compress import CompressionError, parse_suffix
from vitrobust.compress.prune import (PruneError, _policy_block, dynamic_vit, prune_locations,
                                      tokens_to_keep)
from vitrobust.zoo import CheckpointError, load_checkpoint, load_model


@pytest.fixture(scope="module")
def pruned_fixture():
    return load_model("vit_fixture:prune0.5", progress=False)


@pytest.fixture(scope="module")
def small224():
    return load_model("deit_small_patch16_224:prune0.5", progress=False, random_weights=True)


@pytest.mark.parametrize("depth, locs", [(12, [3, 6, 9]), (8, [2, 4, 6]), (6, [1, 3, 4]), (4, [1, 2, 3])])
def test_prune_locations(depth, locs):
    assert prune_locations(depth) == locs


def test_too_shallow_is_an_error():
    with pytest.raises(PruneError, match="at least 3 blocks"):
        prune_locations(2)


@pytest.mark.parametrize("rho, kept", [(0.7, [45, 32, 22]), (0.6, [39, 24, 14]), (0.5, [32, 16, 8]),
                                       (1.0, [64, 64, 64])])
def test_tokens_kept_default_zoo_size(vit_model, rho, kept):
    net = dynamic_vit(vit_model.net, rho)
    assert net.tokens_kept == kept
    assert net.tokens_per_block() == [65] + [k + 1 for k in kept]


def test_eval_forward_runs_on_the_stated_token_counts(pruned_fixture, digits_test):
    net = pruned_fixture.net
    seen = []
    hooks = [blk.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
             for blk in net.blocks]
    try:
        pruned_fixture.eval()(digits_test.images[:4])
    finally:
        for h in hooks:
            h.remove()
    assert seen == net.tokens_per_block() == [65, 33, 17, 9]


def test_full_size_timm_name_builds_untrained_with_metadata(small224):
    meta = small224.info.meta
    assert meta == {"compression": "prune", "keep_rate": 0.5, "prune_locations": [3, 6, 9],
                    "tokens_kept": [98, 49, 25], "weights": "random weights"}
    seen = []
    hooks = [blk.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
             for blk in small224.net.blocks]
    with torch.no_grad():
        out = small224(torch.rand(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 1000)
    assert seen == [197] * 3 + [99] * 3 + [50] * 3 + [26] * 3


def test_fixture_variant_metadata_and_backbone_init(vit_model):
    model = load_model("vit_fixture:prune0.7", progress=False)
    assert model.info.meta.items() >= {"compression": "prune", "keep_rate": 0.7, "prune_locations": [1, 2, 3],
                               "tokens_kept": [45, 32, 22]}.items()
    # Before training the backbone is the base's, and the base itself is left untouched.
    fresh = dynamic_vit(vit_model.net, 0.7)
    base_state = vit_model.net.state_dict()
    for key, value in fresh.state_dict().items():
        if not key.startswith("score_predictor."):
            assert torch.equal(value, base_state[key]), key
    assert not any(k.startswith("score_predictor.") for k in base_state)
    # ...and training changed it (the variant was fine-tuned, not just wrapped).
    assert not torch.equal(model.net.state_dict()["blocks.1.attn.qkv.weight"], base_state["blocks.1.attn.qkv.weight"])


def _gflops(net, size=32):
    net = copy.deepcopy(net).eval()
    for blk in net.blocks:
        blk.attn.fused_attn = False  # the counter misses fused SDPA on CPU
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def test_flops_fall_monotonically_with_keep_rate(vit_model):
    flops = [_gflops(dynamic_vit(vit_model.net, rho)) for rho in (1.0, 0.7, 0.6, 0.5)]
    assert flops[0] > flops[1] > flops[2] > flops[3]
    assert flops[3] < 0.6 * _gflops(vit_model.net)  # 65, 33, 17, 9 tokens + predictors


def test_eval_is_deterministic_and_batch_independent(pruned_fixture, digits_test):
    x = digits_test.images[:16]
    with torch.no_grad():
        a, b = pruned_fixture(x), pruned_fixture(x)
        single = torch.cat([pruned_fixture(x[i:i + 1]) for i in range(len(x))])
    assert torch.equal(a, b)
    assert torch.allclose(a, single, atol=1e-5)


def _train_forward(net, x, seed, perturb=None):
    """One training-mode forward with fixed Gumbel noise.

    ``perturb``: patch-token rows whose attention input (``norm1``, i.e. their queries, keys
    and values) is replaced by noise in every block from the first pruning stage on; the
    stage-1 predictor has already decided by then. Their residual stream is per token anyway.
    """
    hooks = []
    if perturb is not None:
        def pre(module, args):
            h = args[0].clone()
            h[:, 1 + perturb] = 5.0 * torch.randn(h[:, 1 + perturb].shape, generator=noise)
            return (h,)
        noise = torch.Generator().manual_seed(0)
        hooks = [blk.norm1.register_forward_pre_hook(pre) for blk in net.blocks[net.prune_locations[0]:]]
    torch.manual_seed(seed)
    try:
        logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    out = net.pruning_outputs
    return logits, out["features"], out["decisions"]


def test_dropped_tokens_do_not_influence_kept_ones_during_training(vit_model, digits_test):
    net = dynamic_vit(vit_model.net, 0.5).train()
    x = digits_test.images[:1] * 2 - 1
    logits, feats, decisions = _train_forward(net, x, seed=3)
    first = decisions[0][0]
    dropped = (first < 0.5).nonzero().flatten()
    kept_final = (decisions[-1][0] > 0.5).nonzero().flatten()
    assert len(dropped) > 0 and len(kept_final) > 0
    logits2, feats2, decisions2 = _train_forward(net, x, seed=3, perturb=dropped[:1])
    for d, d2 in zip(decisions, decisions2):
        assert torch.equal(d, d2)
    assert torch.allclose(logits, logits2, atol=1e-6)
    assert torch.allclose(feats[0, 1 + kept_final], feats2[0, 1 + kept_final], atol=1e-6)
    # Control: perturbing a token that is still kept does change the outputs.
    logits3, _, _ = _train_forward(net, x, seed=3, perturb=kept_final[:1])
    assert not torch.allclose(logits, logits3, atol=1e-4)


def test_policy_block_masks_keys_of_dropped_tokens(vit_model):
    blk = vit_model.net.blocks[0]
    x = torch.randn(2, 9, blk.norm1.normalized_shape[0])
    policy = torch.ones(2, 9, 1)
    policy[:, [2, 5]] = 0
    y = _policy_block(blk, x, policy)
    x2 = x.clone()
    x2[:, [2, 5]] += 10 * torch.randn(2, 2, x.shape[-1])
    y2 = _policy_block(blk, x2, policy)
    keep = [0, 1, 3, 4, 6, 7, 8]
    assert torch.allclose(y[:, keep], y2[:, keep], atol=1e-6)
    # With an all-ones policy the block is exactly timm's own block.
    assert torch.allclose(_policy_block(blk, x, torch.ones(2, 9, 1)), blk(x), atol=1e-5)


def _official_keys(depth: int) -> set:
    """The state-dict layout of raoyongming/DynamicViT's DeiT checkpoints (PredictorLG x3)."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias", "head.weight", "head.bias"}
    for i in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
    for k in range(3):
        for part in ("in_conv.0", "in_conv.1", "out_conv.0", "out_conv.2", "out_conv.4"):
            keys |= {f"score_predictor.{k}.{part}.weight", f"score_predictor.{k}.{part}.bias"}
    return keys


def test_official_checkpoint_layout_loads(small224, tmp_path):
    state = small224.net.state_dict()
    assert set(state) == _official_keys(12)
    assert state["score_predictor.0.in_conv.1.weight"].shape == (384, 384)
    assert state["score_predictor.2.out_conv.4.weight"].shape == (2, 96)
    # A checkpoint as the official release writes it: the state dict under "model".
    official = {k: torch.randn_like(v) * 0.02 for k, v in state.items()}
    path = tmp_path / "dynamicvit_small_0.5.pth"
    torch.save({"model": official, "epoch": 29}, path)
    net = copy.deepcopy(small224.net)
    load_checkpoint(net, path)
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], official[k]) for k in official)


def test_checkpoint_with_wrong_shape_or_foreign_key_is_a_clear_error(small224, tmp_path):
    state = {k: v.clone() for k, v in small224.net.state_dict().items()}
    bad = dict(state, **{"score_predictor.0.out_conv.4.weight": torch.zeros(3, 96)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch for score_predictor\.0\.out_conv\.4\.weight"):
        load_checkpoint(copy.deepcopy(small224.net), tmp_path / "shape.pth")
    foreign = dict(state, **{"score_predictor.3.in_conv.0.weight": torch.ones(384)})
    torch.save({"model": foreign}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['score_predictor\.3"):
        load_checkpoint(copy.deepcopy(small224.net), tmp_path / "foreign.pth")


@pytest.mark.parametrize("suffix, rho", [("prune0.7", 0.7), ("prune.5", 0.5), ("prune1", 1.0), ("prune1.0", 1.0)])
def test_suffix_parsing(suffix, rho):
    comp, params = parse_suffix(suffix)
    assert comp.prefix == "prune" and params == {"keep_rate": rho}


@pytest.mark.parametrize("suffix", ["prune0", "prune1.5", "prune", "prune-0.5"])
def test_bad_suffixes_are_errors(suffix):
    with pytest.raises(CompressionError, match="unknown compression suffix"):
        parse_suffix(suffix)


def test_zero_keep_rate_is_an_error():
    with pytest.raises(PruneError, match=r"keep rate must be in \(0, 1\]"):
        load_model("vit_fixture:prune0.0", progress=False)


def test_non_vit_base_is_an_error():
    with pytest.raises(PruneError, match="timm VisionTransformer"):
        dynamic_vit(torch.nn.Linear(3, 3), 0.5)


def test_training_loss_reaches_the_predictors(vit_model, digits_test):
    from vitrobust.compress.prune import PRUNE_RECIPE, pruning_loss
    from vitrobust.zoo import ModelWrapper
    vit_model.zero_grad(set_to_none=True)   # the session fixture may carry other tests' grads
    net = dynamic_vit(vit_model.net, 0.5)
    student = ModelWrapper(net, copy.copy(vit_model.info)).train()
    torch.manual_seed(0)
    loss = pruning_loss(vit_model, PRUNE_RECIPE)(student, digits_test.images[:32], digits_test.labels[:32])
    loss.backward()
    # Every stage's predictor gets a gradient: through the keep-ratio loss and, straight
    # through the hard Gumbel decisions, through the masked attention of later blocks.
    for k, predictor in enumerate(net.score_predictor):
        grad = predictor.in_conv[1].weight.grad
        assert grad is not None and grad.abs().sum() > 0, k
    assert net.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in vit_model.parameters())  # the teacher stays frozen


def test_trained_predictors_discriminate_between_tokens(pruned_fixture, vit_model, digits_test):
    """Top-k on near-constant scores keeps a biased subset: training must spread the scores.

    Measured on what the first predictor really sees at evaluation (the tokens after the
    blocks before it), as the rank score top-k uses (the log-odds of keeping a token).
    """
    from vitrobust.compress.prune import keep_score
    from vitrobust.zoo import ModelWrapper

    def score_spread(model):
        scores = []
        hook = model.net.score_predictor[0].register_forward_hook(
            lambda mod, args, out: scores.append(keep_score(out)))
        try:
            model.predict(digits_test.images)
        finally:
            hook.remove()
        return torch.cat(scores).std(1).mean().item()

    untrained = ModelWrapper(dynamic_vit(vit_model.net, 0.5), copy.copy(vit_model.info),
                             *vit_model.normalization).eval()
    before, after = score_spread(untrained), score_spread(pruned_fixture)
    assert before < 1e-3
    assert after > 100 * before


def test_distilled_selection_trains_on_the_evaluation_path(digits_test):
    model = copy.deepcopy(load_model("vit_fixture:prune0.5", progress=False))
    net = model.net
    x = digits_test.images[:6]
    with torch.no_grad():
        evaluated = model(x)
        net.train()
        net.selection = "distilled"
        trained_on = model(x)
        net.selection = "gumbel"
        sampled = model(x)
    assert torch.allclose(trained_on, evaluated, atol=1e-5)
    assert not torch.allclose(sampled, evaluated, atol=1e-3)   # the paper's Gumbel masks differ


def test_distilled_selection_records_scores_and_the_patches_it_kept(digits_test):
    model = copy.deepcopy(load_model("vit_fixture:prune0.5", progress=False))
    net = model.net.train()
    net.selection = "distilled"
    with torch.no_grad():
        model(digits_test.images[:3])
    out = net.pruning_outputs
    n = net.patch_embed.num_patches
    assert [score.shape[1] for score, _ in out["scores"]] == [n] + net.tokens_kept[:-1]
    kept = out["origin"]
    assert kept.shape == (3, net.tokens_kept[-1])
    assert all(len(set(row.tolist())) == kept.shape[1] for row in kept)      # distinct patches
    for (score, origin), later in zip(out["scores"][1:], [*out["scores"][2:], (None, kept)]):
        # each stage's survivors are a subset of the tokens it ranked
        assert all(set(b.tolist()) <= set(a.tolist()) for a, b in zip(origin, later[1]))


def test_class_attention_matches_timms_unfused_attention(vit_model, digits_test):
    from vitrobust.compress.prune import class_attention
    net = copy.deepcopy(vit_model.net).eval()
    x = vit_model.normalize(digits_test.images[:4])
    with torch.no_grad():
        _, rows = class_attention(net, x)
        full = []
        for blk in net.blocks:
            blk.attn.fused_attn = False
            blk.attn.attn_drop.register_forward_hook(lambda mod, args, out: full.append(out))
        net.forward_features(x)
    p = net.num_prefix_tokens
    expected = torch.stack([a.mean(1)[:, 0, p:] for a in full], 1)
    assert rows.shape == (4, len(net.blocks), net.patch_embed.num_patches)
    assert torch.allclose(rows, expected, atol=1e-6)


def test_distilled_loss_reaches_predictors_and_backbone_not_the_teacher(vit_model, digits_test):
    from vitrobust.compress.prune import PRUNE_RECIPE, distilled_pruning_loss
    from vitrobust.zoo import ModelWrapper
    vit_model.zero_grad(set_to_none=True)
    net = dynamic_vit(vit_model.net, 0.5)
    student = ModelWrapper(net, copy.copy(vit_model.info), *vit_model.normalization).train()
    net.selection = "distilled"
    recipe = {**PRUNE_RECIPE, "attention_weight": 1.0}
    loss = distilled_pruning_loss(vit_model, recipe)(student, digits_test.images[:16], digits_test.labels[:16])
    loss.backward()
    for k, predictor in enumerate(net.score_predictor):   # through the ranking loss (top-k has no gradient)
        grad = predictor.in_conv[1].weight.grad
        assert grad is not None and grad.abs().sum() > 0, k
    assert net.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in vit_model.parameters())


def test_an_unknown_selection_is_refused(vit_model):
    from vitrobust.compress.prune import PRUNE_RECIPE, train_pruned
    net = dynamic_vit(vit_model.net, 0.5)
    from vitrobust.zoo import ModelWrapper
    student = ModelWrapper(net, copy.copy(vit_model.info))
    with pytest.raises(PruneError, match="selection must be one of"):
        train_pruned(vit_model, {**PRUNE_RECIPE, "selection": "magic"}, "x:prune0.5", False)(student, None)


def test_keep_score_ranks_tokens_whose_keep_probability_saturated():
    from vitrobust.compress.prune import keep_score
    logits = torch.tensor([[[30.0, 0.0], [30.0, -3.0], [30.0, 2.0]]])   # p(keep) ~ 1 for all three
    log_probs = torch.log_softmax(logits, -1)
    assert log_probs[..., 0].unique().numel() == 1                  # ties in float32 ...
    assert keep_score(log_probs).argsort(descending=True).tolist() == [[1, 0, 2]]   # ... not here
