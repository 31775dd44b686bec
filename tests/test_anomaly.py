"""Anomaly scoring (vae_core/anomaly.py), the held-out-class split (Dataset.without_class), and scoring a second
dataset with −ELBO and the input-complexity-corrected score (with its export table)."""
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from vae_core import anomaly as A
from vae_core import checkpoint as C
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.data import DataError
from vae_core.export import new_data_scores_table
from vae_core.metrics import per_sample_scores
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


# ---------------------------------------------------------------- scoring a second dataset

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.fixture(scope="module")
def shipped_digits():
    return C.load(SHIPPED / "digits-2d.safetensors").model.eval()


@pytest.fixture(scope="module")
def new_vs_test(shipped_digits, digits):
    """Test digits against "new" images: the first 200 test digits drawn in negative (1 − x)."""
    x_new = 1.0 - digits.x_test[:200].numpy()  # numpy in, as a user's file arrives
    seen = []
    res = A.score_new_data(shipped_digits, digits.x_test, x_new, y_test=digits.y_test,
                           y_new=digits.y_test[:200].numpy(), progress=seen.append)
    return res, x_new, seen


def _png_nats(image_2d: np.ndarray) -> float:
    buf = io.BytesIO()
    Image.fromarray(np.rint(image_2d * 255).astype(np.uint8)).save(buf, format="PNG", optimize=True,
                                                                     compress_level=9)
    return len(buf.getvalue()) * 8 * math.log(2)


def test_new_data_scores_aurocs_and_corrected_score(new_vs_test, shipped_digits, digits):
    res, x_new, seen = new_vs_test
    m, k = len(digits.x_test), len(x_new)
    assert res["n_test"] == m and res["n_new"] == k and res["compressor"] == A.COMPRESSOR
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    is_new = np.r_[np.zeros(m), np.ones(k)]
    for name, key in A.SCORE_KEYS.items():
        both = np.r_[res["test"][key], res["new"][key]]
        assert res["auroc"][name] == pytest.approx(roc_auc_score(is_new, both))
        assert res["curves"][name]["auroc"] == res["auroc"][name] and res["curves"][name]["tpr"][-1] == 1
    assert res["auroc"][A.RAW_SCORE] > 0.9  # negatives are far from anything the model has seen
    ref = per_sample_scores(shipped_digits, digits.x_test)
    assert np.array_equal(res["test"]["neg_elbo"], ref["neg_elbo"]) and res["test"]["mu"].shape == (m, 2)
    for part in ("test", "new"):
        p = res[part]
        assert np.allclose(p["corrected"], p["neg_elbo"] - p["complexity_nats"])
    for i in (0, 7, 123):  # L(x): the image's PNG, encoded here independently, in nats
        assert res["new"]["complexity_nats"][i] == pytest.approx(_png_nats(x_new[i, 0]))
        assert res["test"]["complexity_nats"][i] == pytest.approx(_png_nats(digits.x_test[i, 0].numpy()))


def test_precomputed_test_scores_give_the_same_result(new_vs_test, shipped_digits, digits):
    res, x_new, _ = new_vs_test
    again = A.score_new_data(shipped_digits, digits.x_test, torch.as_tensor(x_new),
                             test_scores=per_sample_scores(shipped_digits, digits.x_test))
    assert again["auroc"] == res["auroc"] and again["test"]["labels"] is None
    assert np.array_equal(again["new"]["corrected"], res["new"]["corrected"])


def test_top_new_images_and_the_export_table(new_vs_test):
    res, x_new, _ = new_vs_test
    for score in ("neg_elbo", "corrected"):
        top = A.top_new_images(res, 5, score)
        assert top.tolist() == np.argsort(-res["new"][score], kind="stable")[:5].tolist()
    with pytest.raises(ValueError, match="score"):
        A.top_new_images(res, 5, "recon")
    frame = new_data_scores_table(res)
    assert list(frame.columns) == ["source", "index", "label", "neg_elbo", "complexity_nats", "corrected"]
    assert (frame["source"] == "test").sum() == res["n_test"] and (frame["source"] == "new").sum() == len(x_new)
    new = frame[frame["source"] == "new"]
    assert new["index"].tolist() == list(range(len(x_new)))
    assert np.allclose(new["corrected"], res["new"]["corrected"])
    assert np.allclose(frame["corrected"], frame["neg_elbo"] - frame["complexity_nats"])
    unlabelled = dict(res, new=dict(res["new"], labels=None))
    labels = new_data_scores_table(unlabelled)["label"]
    assert labels.isna().sum() == len(x_new) and labels.notna().sum() == res["n_test"]
    no_labels = dict(unlabelled, test=dict(res["test"], labels=None))
    assert "label" not in new_data_scores_table(no_labels).columns


def test_new_images_of_another_shape_are_refused(shipped_digits, digits):
    with pytest.raises(ValueError, match=r"1×28×28.*1×8×8"):
        A.score_new_data(shipped_digits, digits.x_test, np.zeros((3, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        A.score_new_data(shipped_digits, digits.x_test, np.full((3, 1, 8, 8), 2.0, np.float32))


def test_a_conditional_model_needs_labels_for_the_new_images(digits):
    model = build_model(ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(16,), n_classes=10), 0)
    x_new = digits.x_test[:20]
    with pytest.raises(ValueError, match="conditional.*new images have no labels"):
        A.score_new_data(model, digits.x_test, x_new, y_test=digits.y_test)
    with pytest.raises(ValueError, match="classes 0…9"):
        A.score_new_data(model, digits.x_test, x_new, y_test=digits.y_test, y_new=np.full(20, 12))
    res = A.score_new_data(model, digits.x_test, x_new, y_test=digits.y_test, y_new=digits.y_test[:20])
    ref = per_sample_scores(model, x_new, digits.y_test[:20])
    assert np.array_equal(res["new"]["neg_elbo"], ref["neg_elbo"])


def test_auroc_in_words():
    below = A.explain_auroc(0.3)
    assert "HIGHER likelihood" in below and "Nalisnick et al. 2019" in below and "0.30" in below
    assert "chance" in A.explain_auroc(0.5) and "chance" in A.explain_auroc(0.54)
    assert "weakly" in A.explain_auroc(0.6) and "fairly well" in A.explain_auroc(0.8)
    good = A.explain_auroc(0.95, unseen="the new images", seen="the test images")
    assert " well" in good and "95%" in good and "the new images" in good
    with pytest.raises(ValueError):
        A.explain_auroc(1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_equals_scikit_learn_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.3
    for scores in (rng.normal(size=300) + y, np.round(rng.normal(size=300) + y, 1)):  # continuous, many ties
        ours = A.roc(scores, y)
        assert ours["auroc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
        assert np.allclose(ours["fpr"], fpr) and np.allclose(ours["tpr"], tpr)
