"""The corpus's leak guard: pool documents that are near-copies of a test document are found and
removed before a split is accepted, so TTT never trains on (a lightly edited copy of) the text it
is scored on.

    pairs = near_duplicates(pool_texts, test_texts, threshold=0.5)   # [(pool i, test j, jaccard)]

Similarity is the Jaccard index of the documents' word 5-shingles (lower-cased, split on white
space). Candidates come from MinHash LSH (PyPI `datasketch`), tuned to miss few pairs at the
threshold; each candidate's exact Jaccard index is then computed, and only pairs at or above the
threshold are reported, so the stated threshold is exact, not estimated.
"""

from __future__ import annotations

from collections.abc import Sequence

SHINGLE_WORDS = 5
"""Words per shingle."""
NUM_PERM = 128
"""MinHash permutations."""
LSH_WEIGHTS = (0.2, 0.8)
"""datasketch's (false positive, false negative) weights when it picks bands: favour recall, since
every candidate is checked exactly."""


def shingles(text: str, n: int = SHINGLE_WORDS) -> frozenset[str]:
    """The text's word n-grams (lower-cased, split on white space); one shingle of all its words
    when it has fewer than n."""
    words = text.lower().split()
    if len(words) <= n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def near_duplicates(
    pool_texts: Sequence[str], test_texts: Sequence[str], threshold: float, seed: int = 1
) -> list[tuple[int, int, float]]:
    """(pool index, test index, Jaccard) of every pool document whose shingles have Jaccard index
    >= threshold with some test document's (its most similar one), in pool order."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold!r} is outside (0, 1]: it is a Jaccard index")
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError as err:
        raise ImportError(
            "the corpus's leak guard needs datasketch: pip install 'datasketch==1.10.0' "
            "(or pip install 'tttlab[lm]')"
        ) from err
    test_sets = [shingles(t) for t in test_texts]
    pool_sets = [shingles(t) for t in pool_texts]
    # datasketch's LSH needs a threshold below 1 to choose its bands; 1 is checked exactly.
    lsh = MinHashLSH(threshold=min(threshold, 0.99), num_perm=NUM_PERM, weights=LSH_WEIGHTS)

    def minhashes(sets: list[frozenset]) -> list:
        encoded = [[s.encode("utf-8") for s in sorted(x)] for x in sets]
        return MinHash.bulk(encoded, num_perm=NUM_PERM, seed=seed)

    for j, m in enumerate(minhashes(test_sets)):
        if test_sets[j]:
            lsh.insert(j, m)
    pairs = []
    for i, m in enumerate(minhashes(pool_sets)):
        if not pool_sets[i]:
            continue
        scored = [(jaccard(pool_sets[i], test_sets[j]), j) for j in lsh.query(m)]
        best = max(scored, key=lambda s: (s[0], -s[1]), default=(0.0, -1))
        if best[0] >= threshold:
            pairs.append((i, best[1], best[0]))
    return pairs
