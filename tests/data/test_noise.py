import numpy as np
import pytest

from tttlab.config import DataConfig
from tttlab.data import flip_labels


def test_the_share_flipped_is_exact_and_every_flip_changes_the_class():
    y = np.repeat(np.arange(10), 100)
    noisy, flipped = flip_labels(y, 0.3, 10, seed=0)
    assert flipped.sum() == 300
    assert (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert set(np.unique(noisy)) <= set(range(10))


def test_noise_levels_nest_and_depend_on_the_seed_alone():
    y = np.random.default_rng(0).integers(0, 5, size=500)
    low, low_mask = flip_labels(y, 0.1, 5, seed=3)
    high, high_mask = flip_labels(y, 0.3, 5, seed=3)
    assert (low_mask <= high_mask).all(), "the points flipped at 10% are flipped at 30%"
    np.testing.assert_array_equal(low[low_mask], high[low_mask])
    np.testing.assert_array_equal(flip_labels(y, 0.1, 5, seed=3)[0], low)
    assert (flip_labels(y, 0.1, 5, seed=4)[1] != low_mask).any()


def test_no_noise_changes_nothing():
    y = np.arange(6) % 3
    noisy, flipped = flip_labels(y, 0.0, 3, seed=0)
    np.testing.assert_array_equal(noisy, y)
    assert not flipped.any()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_a_share_outside_zero_to_one_is_refused(bad):
    with pytest.raises(ValueError, match="label_noise must be a number"):
        DataConfig(label_noise=bad)
    with pytest.raises(ValueError, match="label_noise must be a number"):
        flip_labels(np.zeros(4, dtype=int), bad, 2, seed=0)
