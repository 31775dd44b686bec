"""Anomaly scoring (vae_core/anomaly.py) and the held-out-class split (Dataset.without_class)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vae_core import anomaly as A
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.data import DataError
from vae_core.runs import build_model
from vae_core.train import fit


def test_roc_of_a_perfect_score_is_one_and_of_a_reversed_score_zero():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert A.roc(s, y)["auroc"] == 1.0
    assert A.roc(-s, y)["auroc"] == 0.0
    r = A.roc(np.random.default_rng(0).random(2000), np.arange(2000) % 2)
    assert abs(r["auroc"] - 0.5) < 0.05 and r["fpr"][0] == 0 and r["tpr"][-1] == 1


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        A.roc(np.ones(3), np.ones(3))


def test_held_out_split_removes_the_class_from_training_only(digits):
    train = digits.without_class(3)
    assert not bool((train.y_train == 3).any()) and len(train.x_train) == int((digits.y_train != 3).sum())
    assert len(train.x_test) == len(digits.x_test) and train.name == digits.name
    with pytest.raises(DataError, match="does not occur"):
        digits.without_class(42)


def test_threshold_flags_and_top_k_are_sorted_by_score():
    s = np.array([1.0, 5.0, 3.0, 4.0])
    assert A.threshold_flags(s, 2.5).tolist() == [1, 3, 2]
    assert A.top_k(s, 2).tolist() == [1, 3]


def test_held_out_evaluation_matches_sklearn_and_the_scores(digits):
    model = build_model(ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(32,)), 0)
    fit(model, digits.without_class(0), ObjectiveConfig(), TrainConfig(epochs=2, batch_size=64))
    res = A.held_out_evaluation(model.eval(), digits, 0)
    is_out = (digits.y_test == 0).numpy()
    assert res["n_out"] == int(is_out.sum()) and res["n_train"] == len(digits.x_train)
    assert res["auroc"]["−ELBO"] == pytest.approx(roc_auc_score(is_out, res["scores"]))
    for r in res["curves"].values():
        assert 0.0 <= r["auroc"] <= 1.0 and r["fpr"][0] == 0 and r["tpr"][-1] == 1
    assert res["test_elbo"] == pytest.approx(float(np.mean(res["scores"])))
