"""The bridge: measurable quantities of real features, and their place beside simulated units."""

import numpy as np
import pytest

from tttlab.cli import main
from tttlab.theory.bridge import measure
from tttlab.theory.sweeps import effective_rank

FLAGS = "--d1 100 -s 3 --d2 10 --n-train 1000 --n-test 40 --clusters 40 --outputs 4 -k 10"
SWEEPS = "--sweeps tightness map --tightnesses 0 1 --map-ratios 0.05 0.2 --map-ss 2 4"


def blobs(n=600, d=8, classes=4, spread=0.1, seed=0):
    """Well separated class blobs: a point's neighbours share its label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return rng.normal(size=(classes, d))[y] + spread * rng.normal(size=(n, d)), y


def test_effective_rank_is_the_width_for_isotropic_features_and_one_for_a_line():
    rng = np.random.default_rng(0)
    iso = effective_rank(rng.normal(size=(20000, 10)))
    assert iso["participation_ratio"] == pytest.approx(10, rel=0.02)
    assert iso["entropy_rank"] == pytest.approx(10, rel=0.01)
    line = effective_rank(np.outer(rng.normal(size=500), rng.normal(size=6)))
    assert line["participation_ratio"] == pytest.approx(1, abs=1e-6)


def test_neighbours_of_clustered_features_agree_on_labels():
    X, y = blobs()
    m = measure(X, y, k=10, ttt_gain=0.05)
    assert m["feature_width"] == 8 and m["classes"] == 4 and m["ttt_gain"] == 0.05
    assert m["label_agreement"] > 0.99 and m["agreement_above_chance"] > 0.98
    assert m["distinct_labels"] == pytest.approx(1, abs=0.02)
    noise = measure(X, np.random.default_rng(1).integers(0, 4, len(y)), k=10)
    assert abs(noise["agreement_above_chance"]) < 0.05


def test_bad_bridge_input_is_named():
    X, y = blobs(n=50)
    with pytest.raises(ValueError, match="one label per row"):
        measure(X, y[:-1])
    with pytest.raises(ValueError, match="k=50 but there are only 50 points"):
        measure(X, y, k=50)


def test_the_command_line_places_a_features_file_on_the_regime_map(tmp_path, capsys):
    X, y = blobs()
    np.savez(tmp_path / "blobs.npz", embeddings=X, labels=y)
    args = f"simulate {FLAGS} {SWEEPS} --out {tmp_path} --bridge {tmp_path / 'blobs.npz'}"
    assert main([*args.split(), "--bridge-k", "10"]) == 0
    out = capsys.readouterr().out
    report = next(tmp_path.glob("studies/simulate-*/bridge-blobs.md"))
    assert f"bridge: {report}" in out
    text = report.read_text()
    assert "participation ratio" in text and "Nearest simulated units" in text
    assert report.with_suffix(".png").stat().st_size > 1000


def test_a_features_file_without_the_keys_is_refused_before_any_unit_runs(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", X=np.zeros((5, 2)))
    code = main(f"simulate {FLAGS} {SWEEPS} --out {tmp_path} --bridge {tmp_path}/bad.npz".split())
    assert code == 2 and "has no embeddings or labels" in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()
