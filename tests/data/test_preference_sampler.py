"""PreferenceSampler: deterministic per (seed, epoch), ranks partition each global batch."""

from __future__ import annotations

import pytest

from videogpa.engine.data.preference import PreferenceSampler, epoch_permutation


def test_permutation_deterministic_and_varies():
    a = epoch_permutation(50, seed=3, epoch=0)
    assert a == epoch_permutation(50, seed=3, epoch=0)
    assert sorted(a) == list(range(50))
    assert a != epoch_permutation(50, seed=3, epoch=1)
    assert a != epoch_permutation(50, seed=4, epoch=0)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_global_batches_independent_of_world_size(world):
    n, g, seed = 37, 8, 11
    reference = PreferenceSampler(n, g, 0, 1, seed)
    samplers = [PreferenceSampler(n, g, r, world, seed) for r in range(world)]
    for epoch in (0, 1):
        for s in [reference, *samplers]:
            s.set_epoch(epoch)
        ranks = [list(s) for s in samplers]
        full = list(reference)
        per_rank = g // world
        assert len(full) == (n // g) * g and all(len(r) == len(full) // world for r in ranks)
        for k in range(n // g):
            union = [i for r in ranks for i in r[k * per_rank : (k + 1) * per_rank]]
            assert sorted(union) == sorted(full[k * g : (k + 1) * g])
            assert union == reference.global_batch(epoch, k)  # rank order = global order
            assert len(set(union)) == g
        assert len(set(full)) == len(full)  # no pair twice in an epoch


def test_rank_batch_is_contiguous_subslice():
    s = PreferenceSampler(20, 6, rank=1, world_size=3, seed=0)
    s.set_epoch(2)
    perm = epoch_permutation(20, 0, 2)
    assert s.rank_batch(2, 1) == perm[6 + 2 : 6 + 4]
    assert list(s)[2:4] == s.rank_batch(2, 1)


def test_sampler_epochs_differ_and_repeat():
    s = PreferenceSampler(30, 5, seed=1)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"global_batch_size": 6, "world_size": 4}, "global_batch_size"),
        ({"global_batch_size": 4, "rank": 4, "world_size": 4}, "rank"),
        ({"global_batch_size": 4, "world_size": 0}, "world_size"),
        ({"global_batch_size": 64}, "num_pairs"),
    ],
)
def test_sampler_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PreferenceSampler(20, **kwargs)


def test_permutation_rejects_negative_seed_and_accepts_large():
    with pytest.raises(ValueError, match="seed"):
        epoch_permutation(10, seed=-1, epoch=0)
    big = epoch_permutation(10, seed=2**70, epoch=3)
    assert sorted(big) == list(range(10)) and big == epoch_permutation(10, seed=2**70, epoch=3)
