"""The sparse-concept generator: seeded, s-sparse, isotropic when inputs are independent, and
clear about settings outside the theory."""

import numpy as np
import pytest

from tttlab.theory import Sim, generate

SMALL = Sim(d1=200, s=4, d2=20, n_train=2000, n_test=100, clusters=100, outputs=4)


def test_a_draw_is_seeded_and_every_input_activates_s_concepts():
    a, b = generate(SMALL), generate(SMALL)
    np.testing.assert_array_equal(a.train.psi_ND, b.train.psi_ND)
    np.testing.assert_array_equal(a.test.y_NT, b.test.y_NT)
    assert (np.diff(a.train.phi_NM.indptr) == SMALL.s).all()
    assert a.train.psi_ND.shape == (2000, 20) and a.test.f_NT.shape == (100, 4)
    other = generate(Sim(**{**SMALL.__dict__, "seed": 1}))
    assert not np.array_equal(a.train.psi_ND, other.train.psi_ND)


def test_independent_inputs_have_isotropic_concepts_and_unit_signal_variance():
    sim = Sim(d1=50, s=5, d2=10, n_train=20000, n_test=10, clusters=10, tightness=0.0, outputs=8)
    draw = generate(sim)
    cov = np.cov(draw.train.phi_NM.toarray(), rowvar=False)
    expected = sim.s * (1 + sim.jitter**2) / sim.d1  # Cov(Phi) = (s/d1) E[v^2] I
    assert np.diag(cov).mean() == pytest.approx(expected, rel=0.02)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.15 * expected
    assert draw.train.f_NT.var(0).mean() == pytest.approx(1.0, rel=0.1)


def test_tight_clusters_share_their_support_and_loose_ones_do_not():
    tight = generate(Sim(**{**SMALL.__dict__, "tightness": 1.0})).train
    loose = generate(Sim(**{**SMALL.__dict__, "tightness": 0.0})).train
    for pts, same in ((tight, True), (loose, False)):
        members = np.flatnonzero(pts.cluster_N == 0)[:2]
        supports = [set(pts.phi_NM[i].indices) for i in members]
        assert (supports[0] == supports[1]) == same


def test_classification_labels_are_the_argmax_of_the_noisy_scores():
    draw = generate(Sim(**{**SMALL.__dict__, "task": "classification"}))
    np.testing.assert_array_equal(draw.train.labels_N, draw.train.y_NT.argmax(1))
    assert set(np.unique(draw.train.labels_N)) <= set(range(SMALL.outputs))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"s": 300}, "s=300 > d1=200"),
        ({"d2": 400}, "no longer underparameterised"),
        ({"sigma": -0.1}, "sigma (the label noise std) must be a number >= 0"),
        ({"tightness": 1.5}, "tightness must be a number >= 0 and <= 1"),
        ({"cluster_concepts": 2}, "cluster_concepts=2 must lie in [s, d1]"),
        ({"clusters": 5000}, "clusters=5000 > n_train=2000"),
    ],
)
def test_settings_outside_the_model_are_refused_with_the_fix(change, message):
    with pytest.raises(ValueError) as err:
        Sim(**{**SMALL.__dict__, **change})
    assert message in str(err.value)


def test_more_features_than_concepts_runs_only_when_asked():
    with pytest.raises(ValueError, match="allow_overparameterised=True"):
        Sim(d1=50, s=4, d2=60, n_train=500, n_test=10, clusters=10)
    sim = Sim(d1=50, s=4, d2=60, n_train=500, n_test=10, clusters=10, allow_overparameterised=True)
    assert generate(sim).train.psi_ND.shape == (500, 60)
