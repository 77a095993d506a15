"""The leak guard finds near-copies of test documents among pool documents, by the exact Jaccard
index of word shingles, and the corpus build removes them from the pool."""

import random

import pytest

from tttlab.lm.leaks import jaccard, near_duplicates, shingles

WORDS = [f"w{i}" for i in range(5000)]


def prose(seed: int, n: int = 150) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def edited(text: str, every: int = 40) -> str:
    """A light edit: every `every`-th word changed."""
    words = text.split()
    return " ".join(w if i % every else w.upper() + "x" for i, w in enumerate(words))


def test_a_lightly_edited_copy_is_found_and_unrelated_documents_are_not():
    test = [prose(i) for i in range(20)]
    pool = [prose(100 + i) for i in range(300)]
    pool[17] = edited(test[5])  # ~20% of its shingles changed
    pool[230] = test[11]  # an exact copy
    pairs = near_duplicates(pool, test, threshold=0.5)
    assert [(i, j) for i, j, _ in pairs] == [(17, 5), (230, 11)]
    assert 0.5 <= pairs[0][2] < 1 and pairs[1][2] == 1.0
    assert pairs[0][2] == pytest.approx(jaccard(shingles(pool[17]), shingles(test[5])))


def test_the_threshold_is_exact_and_one_keeps_only_identical_shingle_sets():
    test = [prose(1)]
    pool = [edited(test[0], every=e) for e in (10, 20, 40)] + [test[0].upper()]  # case ignored
    scores = {i: s for i, _, s in near_duplicates(pool, test, threshold=0.05)}
    assert sorted(scores) == [0, 1, 2, 3] and scores[0] < scores[1] < scores[2] < 1
    middle = scores[1]
    assert sorted(i for i, *_ in near_duplicates(pool, test, threshold=middle)) == [1, 2, 3]
    assert [i for i, *_ in near_duplicates(pool, test, threshold=1.0)] == [3]


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5])
def test_a_threshold_outside_zero_to_one_is_refused(threshold):
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        near_duplicates(["a b c"], ["a b c"], threshold)


def test_short_and_empty_texts_have_one_or_no_shingle():
    assert shingles("Hello  World") == frozenset(["hello world"])
    assert shingles("  \n") == frozenset()
    assert near_duplicates(["", "x y"], ["x y", ""], threshold=1.0) == [(1, 0, 1.0)]
