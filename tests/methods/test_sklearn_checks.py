"""scikit-learn's own estimator checks on every predictor, with settings small enough to be fast.

All checks pass, so `expected_failed_checks` lists none. The checks only reach head=None (they
build estimators from defaults); test_baselines.py and test_ttt.py cover given heads and models.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from tttlab.methods import CacheClassifier, GlobalHead, MajorityVote, TTTClassifier

# A higher train_lr than TrainConfig's: the checks fit on 30 to 300 points, a few Adam steps.
FAST = dict(train_epochs=10, train_lr=0.05)


@parametrize_with_checks(
    [
        GlobalHead(**FAST),
        MajorityVote(k=3),
        TTTClassifier(k=3, epochs=5, **FAST),
        CacheClassifier(k=3, **FAST),
        TTTClassifier(k=3, epochs=5, layers="all", space="inputs", **FAST),
    ],
    expected_failed_checks=lambda estimator: {},
)
def test_follows_the_scikit_learn_estimator_api(estimator, check):
    check(estimator)
