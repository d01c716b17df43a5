"""The black-box attacks' fast paths (queries that cannot change the result left out) return
bitwise the images of the plain path (foolbox itself; Square querying every candidate), with
fewer images forwarded. bench/bench_attacks.py measures the same on the default zoo."""
import copy

import foolbox
import pytest
import torch

from vitrobust.attacks import make_attack

CONFIGS = {
    "sp": ("salt_and_pepper", dict(steps=12, eps=1.5, norm="l2")),
    "sp-per-channel": ("salt_and_pepper", dict(steps=6, eps=1.0, norm="l2", across_channels=False)),
    "noise-linf": ("blended_noise", dict(eps=8 / 255, norm="linf", directions=10, steps=10)),
    "noise-l2": ("blended_noise", dict(eps=1.0, norm="l2", directions=3, steps=5)),
    "spatial-grid": ("spatial", dict(max_rotation=15, max_translation=2, num_rotations=3, num_translations=3)),
    "spatial-no-rotation": ("spatial", dict(max_rotation=0, max_translation=2, num_rotations=3,
                                            num_translations=3)),
    "spatial-random": ("spatial", dict(max_rotation=20, max_translation=1, grid_search=False, random_steps=10)),
    "square": ("square", dict(eps=4 / 255, n_queries=24)),
}


@pytest.fixture(scope="module")
def batch(vit_model, digits_test):
    """32 images; every fourth gets a label the model does not predict, so the batch mixes
    images already 'fooled' clean with ones to attack."""
    data = digits_test.limit(32)
    labels = data.labels.clone()
    predicted = vit_model.predict(data.images)
    labels[::4] = (predicted[::4] + 1) % 10
    return data.images, labels


def _attack(vit_model, images, labels, name, params, fast):
    """Adversarial images and the images forwarded per call (batch 16: two batches, so the
    random draws of the second depend on how many the first consumed)."""
    attack = copy.copy(make_attack(name, batch_size=16, **params))
    attack.fast = fast
    forwarded = []
    hook = vit_model.register_forward_pre_hook(lambda module, args: forwarded.append(len(args[0])))
    try:
        adv = attack(vit_model, images, labels)
    finally:
        hook.remove()
    return adv, forwarded


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_path_returns_the_plain_images(config, vit_model, batch):
    name, params = CONFIGS[config]
    images, labels = batch
    plain, plain_calls = _attack(vit_model, images, labels, name, params, fast=False)
    fast, fast_calls = _attack(vit_model, images, labels, name, params, fast=True)
    assert torch.equal(fast, plain)
    assert sum(fast_calls) < sum(plain_calls)


@pytest.mark.parametrize("config", ["sp", "noise-linf", "spatial-grid"])
def test_images_fooled_clean_come_back_unchanged(config, vit_model, batch):
    # foolbox returns the input itself for them (noise norm 0 / blend 0 / no transform), and so
    # does the fast path (it asks about them only in blended noise's draw search, whose stopping
    # rule decides the draws of the next batch)
    name, params = CONFIGS[config]
    images, labels = batch
    adv, _ = _attack(vit_model, images, labels, name, params, fast=True)
    wrong = vit_model.predict(images) != labels
    assert wrong.any() and torch.equal(adv[wrong], images[wrong])


def test_repeated_grid_points_are_queried_once(vit_model, batch):
    # no rotation budget: foolbox's 3 x 3 x 3 grid holds 9 distinct shifts, each tried 3 times
    images, labels = batch
    _, calls = _attack(vit_model, images, labels, *CONFIGS["spatial-no-rotation"], fast=True)
    assert len(calls) <= 2 * (1 + 9)      # per batch: the clean check and each distinct shift


def test_fast_is_not_part_of_the_threat_model():
    # same images either way, so the cache key must not change with it
    for name, params in CONFIGS.values():
        assert "fast" not in make_attack(name, **params).threat_model()


def test_noise_search_takes_back_draws_foolbox_does_not_make(vit_model, batch):
    # several draws per call: those past the one that completes the search are taken back, so
    # the generator ends where foolbox's does and a later batch draws the same noise
    images, labels = batch
    attack = make_attack("blended_noise", directions=50, steps=5, batch_size=len(images))
    fmodel = foolbox.PyTorchModel(vit_model, bounds=(0, 1), device="cpu")
    calls = []
    hook = vit_model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            attack.foolbox_attack().run(fmodel, images, labels)     # its linear search draws nothing
            theirs = torch.get_rng_state()
            torch.manual_seed(0)
            calls.clear()
            attack._noise(fmodel, images, labels)
            ours = torch.get_rng_state()
            torch.manual_seed(0)
            draws = 0
            while not torch.equal(torch.get_rng_state(), theirs) and draws < attack.directions:
                torch.rand(images.shape)
                draws += 1
    finally:
        hook.remove()
    assert torch.equal(ours, theirs)
    assert len(calls) < draws < attack.directions    # packed calls; the search ended early
