"""The helpers attacks are built from: norm-ball geometry, budget and step checks, the active
batch of early exit, image hashes, input gradients, Square's schedule and margin."""
import hashlib
import math

import pytest
import torch
from torch import nn

from vitrobust.attacks import AttackError
from vitrobust.attacks.active import ActiveBatch
from vitrobust.attacks.base import check_budget, image_hashes, input_gradient
from vitrobust.attacks.iterative import default_step_size
from vitrobust.attacks.pgd import check_steps
from vitrobust.attacks.projection import normalized_step, perturbation_norm, project, random_start
from vitrobust.attacks.square import _margin, p_schedule
from vitrobust.attacks.straight_through import combined_hash
from vitrobust.zoo.wrapper import ModelInfo, ModelWrapper


def _per_image(t):
    return t.flatten(1)


# -- projection.py ------------------------------------------------------------------------------
def test_normalized_step_is_the_unit_steepest_direction():
    grad = torch.tensor([[[[3.0, -4.0], [0.0, 0.5]]]])
    assert torch.equal(normalized_step(grad, "linf"), torch.tensor([[[[1.0, -1.0], [0.0, 1.0]]]]))
    step = normalized_step(grad, "l2")
    assert _per_image(step).norm(dim=1).item() == pytest.approx(1.0)
    assert torch.allclose(step, grad / grad.norm())
    with pytest.raises(ValueError, match="no gradient step for norm 'l0'"):
        normalized_step(grad, "l0")


def test_project_linf_clamps_each_pixel():
    delta = torch.tensor([[0.5, -0.5, 0.01, -0.02]])
    assert torch.equal(project(delta, 0.1, "linf"), torch.tensor([[0.1, -0.1, 0.01, -0.02]]))


def test_project_l2_scales_only_what_lies_outside_and_keeps_the_direction():
    inside = torch.tensor([[0.3, 0.4]])             # norm 0.5
    outside = torch.tensor([[3.0, 4.0]])            # norm 5
    both = torch.cat([inside, outside])
    out = project(both, 1.0, "l2")
    assert torch.equal(out[0], inside[0])
    assert out[1].norm().item() == pytest.approx(1.0)
    assert torch.allclose(out[1], torch.tensor([0.6, 0.8]))
    assert torch.allclose(project(out, 1.0, "l2"), out)          # idempotent


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_lies_in_the_ball_and_follows_the_generator(norm):
    shape, eps = (64, 3, 4, 4), 0.3
    delta = random_start(shape, eps, norm, torch.Generator().manual_seed(0))
    assert delta.shape == shape
    assert (perturbation_norm(delta, norm) <= eps + 1e-6).all()
    assert torch.equal(delta, random_start(shape, eps, norm, torch.Generator().manual_seed(0)))
    assert not torch.equal(delta, random_start(shape, eps, norm, torch.Generator().manual_seed(1)))
    if norm == "linf":   # uniform per pixel: both signs, reaching close to the edge
        assert delta.min() < -0.9 * eps and delta.max() > 0.9 * eps
    else:                # uniform in the ball: radii spread, most of the mass near the edge
        radii = perturbation_norm(delta, norm)
        assert radii.max() > 0.9 * eps and radii.median() > 0.8 * eps


def test_perturbation_norm_of_known_deltas():
    delta = torch.zeros(2, 3, 2, 2)
    delta[0, 0, 0, 0], delta[0, 2, 0, 0] = 0.3, -0.4     # one pixel, two channels
    delta[0, 1, 1, 1] = 0.1                              # another pixel
    assert torch.allclose(perturbation_norm(delta, "linf"), torch.tensor([0.4, 0.0]))
    assert torch.allclose(perturbation_norm(delta, "l2"), torch.tensor([math.sqrt(0.26), 0.0]))
    assert torch.equal(perturbation_norm(delta, "l0"), torch.tensor([2.0, 0.0]))


# -- budget and step checks ---------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0, -0.1, math.inf, float("nan"), None, "lots"])
def test_check_budget_refuses_unbounded_and_names_eps(eps):
    with pytest.raises(AttackError, match="unbounded minimization attack") as info:
        check_budget("pgd", eps)
    assert info.value.param == "eps"


def test_check_budget_returns_a_float():
    assert check_budget("pgd", 2) == 2.0 and isinstance(check_budget("pgd", 2), float)


def test_check_steps():
    assert check_steps("pgd", "3", None) == (3, None)
    assert check_steps("pgd", 3, 1) == (3, 1.0)
    for steps, step_size, param in [(0, None, "steps"), (3, 0, "step_size"), (3, -1.0, "step_size")]:
        with pytest.raises(AttackError) as info:
            check_steps("pgd", steps, step_size)
        assert info.value.param == param


def test_default_step_size_reaches_the_edge_in_the_last_step():
    assert default_step_size("ifgsm", 4 / 255, 10, None) == 4 / 255 / 10
    assert default_step_size("ifgsm", 4 / 255, 10, 0.5) == 0.5
    with pytest.raises(AttackError) as info:
        default_step_size("ifgsm", None, 10, None)
    assert info.value.param == "eps"
    with pytest.raises(AttackError) as info:
        default_step_size("ifgsm", 4 / 255, 0, None)
    assert info.value.param == "steps"


# -- early exit ---------------------------------------------------------------------------------
def test_active_batch_freezes_retired_images_and_narrows_the_state():
    images = torch.arange(4.0).view(4, 1)
    batch = ActiveBatch(images, torch.tensor([0, 1, 2, 3]), step=torch.tensor([10.0, 11.0, 12.0, 13.0]))
    batch.retire(torch.tensor([False, True, False, True]), images + 100)
    assert len(batch) == 2
    assert batch.labels.tolist() == [0, 2] and batch.state["step"].tolist() == [10.0, 12.0]
    batch.retire(torch.tensor([False, False]), images[:2] + 7)    # nothing fooled: no change
    assert len(batch) == 2
    out = batch.finish(batch.images + 50)
    assert out.flatten().tolist() == [50.0, 101.0, 52.0, 103.0]


# -- image hashes -------------------------------------------------------------------------------
def test_image_hashes_follow_content_not_identity():
    images = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a = image_hashes(images)
    assert a == image_hashes(images.clone()) and len(set(a)) == 3
    changed = images.clone()
    changed[1, 0, 0, 0] += 1e-6
    b = image_hashes(changed)
    assert b[0] == a[0] and b[1] != a[1] and b[2] == a[2]


# -- gradients ----------------------------------------------------------------------------------
def test_input_gradient_of_a_linear_model_is_the_analytic_one():
    torch.manual_seed(0)
    linear = nn.Linear(12, 5, bias=False)
    model = ModelWrapper(nn.Sequential(nn.Flatten(), linear), ModelInfo("lin", num_classes=5),
                         (0.0,) * 3, (1.0,) * 3)
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    grad, logits = input_gradient(model, x, y)
    # d CE / d x = W^T (softmax(Wx) - onehot(y)), per image (the loss is summed, not averaged)
    expected = (logits.softmax(1) - nn.functional.one_hot(y, 5).float()) @ linear.weight
    assert torch.allclose(grad.flatten(1), expected, atol=1e-6)
    assert torch.allclose(logits, model(x).detach())


# -- square attack ------------------------------------------------------------------------------
def test_margin_is_the_true_logit_minus_the_best_other():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert _margin(logits, torch.tensor([0, 2])).tolist() == [1.0, -4.0]


def test_p_schedule_halves_at_the_papers_checkpoints():
    n = 10000
    assert p_schedule(0.8, 0, n) == 0.8
    assert p_schedule(0.8, 10, n) == 0.8
    assert p_schedule(0.8, 11, n) == 0.4
    assert p_schedule(0.8, 500, n) == 0.8 / 8
    assert p_schedule(0.8, 8000, n) == 0.8 / 256
    assert p_schedule(0.8, 9999, n) == 0.8 / 512
    assert p_schedule(0.8, 1, 100) == 0.8 / 4         # iterations scale to a 10000-query run


# -- straight-through ---------------------------------------------------------------------------
def test_combined_hash_is_the_sha256_of_the_joined_hashes():
    # pinned: adversarial sets made through a straight-through model are cached under it
    assert combined_hash("a1", "b2") == hashlib.sha256(b"a1|b2").hexdigest()[:16]
    assert combined_hash("a1", "b2") != combined_hash("b2", "a1")
