"""The stratified subset behind ``limit: N`` on a folder: size, balance, and independence of order."""
from collections import Counter

from hypothesis import given, settings, strategies as st

from vitrobust.stratify import class_quotas, stratified_subset

# A collection: per class, how many images (classes named c0, c1, ...).
sizes = st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=15)


def _collection(class_sizes):
    ids, classes = [], []
    for c, size in enumerate(class_sizes):
        ids += [f"c{c}/{i}.jpg" for i in range(size)]
        classes += [f"c{c}"] * size
    return ids, classes


@settings(max_examples=200, deadline=None)
@given(sizes, st.integers(min_value=0, max_value=200))
def test_subset_has_min_n_distinct_positions_balanced_across_classes(class_sizes, n):
    ids, classes = _collection(class_sizes)
    chosen = stratified_subset(ids, classes, n)
    assert len(chosen) == len(set(chosen)) == min(n, len(ids))
    assert chosen == sorted(chosen) and all(0 <= p < len(ids) for p in chosen)
    taken = Counter(classes[p] for p in chosen)
    # water-filling: a class below the largest share is one that ran out of images
    most = max(taken.values(), default=0)
    for c, size in enumerate(class_sizes):
        got = taken.get(f"c{c}", 0)
        assert got == size or got >= most - 1
    # so as many classes as there are images to spread over are covered
    assert len(taken) == min(len(class_sizes), len(chosen))


@settings(max_examples=100, deadline=None)
@given(sizes, st.integers(min_value=0, max_value=200), st.randoms(use_true_random=False))
def test_subset_depends_on_ids_not_on_listing_order(class_sizes, n, rnd):
    ids, classes = _collection(class_sizes)
    picked = {ids[p] for p in stratified_subset(ids, classes, n)}
    pairs = list(zip(ids, classes))
    rnd.shuffle(pairs)
    shuffled_ids, shuffled_classes = [p[0] for p in pairs], [p[1] for p in pairs]
    assert {shuffled_ids[p] for p in stratified_subset(shuffled_ids, shuffled_classes, n)} == picked


@settings(max_examples=100, deadline=None)
@given(sizes, st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=100))
def test_a_smaller_limit_is_part_of_a_larger_one(class_sizes, a, b):
    ids, classes = _collection(class_sizes)
    small, large = sorted((a, b))
    assert set(stratified_subset(ids, classes, small)) <= set(stratified_subset(ids, classes, large))


def test_the_seed_changes_the_subset_and_none_takes_everything():
    ids, classes = _collection([50] * 4)
    assert stratified_subset(ids, classes, 20, seed=0) != stratified_subset(ids, classes, 20, seed=1)
    assert stratified_subset(ids, classes, None) == list(range(200))


def test_imagenet_shape_limit_1000_covers_every_class_once():
    # the bench's folder: 1,000 classes x 20 images; limit 1000 is one image of each class
    ids, classes = _collection([20] * 1000)
    chosen = stratified_subset(ids, classes, 1000)
    assert Counter(classes[p] for p in chosen) == Counter({f"c{c}": 1 for c in range(1000)})


def test_quotas_give_the_remainder_to_hash_ranked_classes_not_the_first_listed():
    quotas = class_quotas({f"c{c}": 10 for c in range(10)}, 3)
    assert sum(quotas.values()) == 3 and set(quotas.values()) == {0, 1}
    many = [class_quotas({f"c{c}": 10 for c in range(10)}, 3, seed=s) for s in range(20)]
    # not always the same three classes: the ranking follows the seed
    assert len({tuple(sorted(k for k, v in q.items() if v)) for q in many}) > 1
