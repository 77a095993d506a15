"""Rows per subset: each package's documents summarised on their own; a subset the corpus has but
no scored document comes from is reported as empty rather than dropped."""

import numpy as np
import pytest

from tttlab.lm.config import CorpusConfig
from tttlab.lm.subsets import subset_rows, summarise


def test_each_subset_is_summarised_from_its_own_documents():
    labels = ["go", "perl", "go", "go"]
    n_bytes = np.array([100, 100, 200, 100])
    bits = {"base": np.array([300.0, 250, 500, 250]), "ttt": np.array([200.0, 250, 400, 250]),
            "control": np.array([300.0, 250, 500, 240])}  # fmt: skip
    rows = subset_rows(labels, n_bytes, bits, subsets=["dict", "perl", "go"], n_boot=200)
    assert [r["subset"] for r in rows] == ["dict", "perl", "go"]
    assert rows[0] == {"subset": "dict", "n_docs": 0,
                       "note": "no scored test documents in this subset"}  # fmt: skip
    assert rows[1]["n_docs"] == 1 and rows[1]["gain"] == 0
    go = summarise(n_bytes[[0, 2, 3]], {k: v[[0, 2, 3]] for k, v in bits.items()}, 200)
    assert rows[2] == {"subset": "go"} | go
    assert rows[2]["gain"] == pytest.approx(np.mean([1.0, 0.5, 0.0]))


def test_labels_must_match_the_documents():
    with pytest.raises(ValueError, match="3 subset labels for 2 documents"):
        subset_rows(["a", "b", "c"], np.array([1, 2]), {"base": np.array([1.0, 2])})


def test_the_corpus_refuses_a_threshold_outside_zero_to_one():
    with pytest.raises(ValueError, match=r"near_dup_threshold=0 is outside \(0, 1\]"):
        CorpusConfig(near_dup_threshold=0)
