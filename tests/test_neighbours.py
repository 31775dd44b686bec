"""Nearest neighbours in latent space (vae_core/neighbours.py) against brute force."""
import numpy as np
import pytest

from vae_core.neighbours import nearest


def brute(mu, point, k, skip=None):
    rows = sorted((float(np.sqrt(((mu[i] - point) ** 2).sum())), i) for i in range(len(mu)) if i != skip)
    return [i for _, i in rows[:k]], [d for d, _ in rows[:k]]


def test_nearest_to_an_index_leaves_the_query_out_and_matches_brute_force():
    mu = np.random.default_rng(0).normal(size=(300, 5))
    for q in (0, 17, 299):
        idx, dist = nearest(mu, q, k=10)
        ref_idx, ref_dist = brute(mu, mu[q], 10, skip=q)
        assert idx.tolist() == ref_idx and np.allclose(dist, ref_dist) and q not in idx
        assert idx.dtype == np.int64 and np.all(np.diff(dist) >= 0)


def test_nearest_to_an_outside_code_includes_every_row():
    mu = np.random.default_rng(1).normal(size=(200, 3))
    point = np.array([0.1, -0.2, 0.3])
    idx, dist = nearest(mu, point, k=7)
    ref_idx, ref_dist = brute(mu, point, 7)
    assert idx.tolist() == ref_idx and np.allclose(dist, ref_dist)
    idx, dist = nearest(mu, mu[5], k=1)  # a code equal to a row finds that row at distance 0
    assert idx.tolist() == [5] and dist[0] == 0


def test_ties_keep_index_order_and_duplicates_of_the_query_stay():
    mu = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    idx, dist = nearest(mu, 0, k=5)  # row 4 duplicates the query; rows 1, 2, 3 tie at distance 1
    assert idx.tolist() == [4, 1, 2, 3, 5] and dist.tolist() == [0.0, 1.0, 1.0, 1.0, 2.0]
    idx, _ = nearest(mu, np.array([0.0, 0.0]), k=3)
    assert idx.tolist() == [0, 4, 1]


def test_k_is_clipped_and_bad_queries_are_refused():
    mu = np.random.default_rng(2).normal(size=(6, 2))
    assert len(nearest(mu, 0, k=100)[0]) == 5 and len(nearest(mu, np.zeros(2), k=100)[0]) == 6
    assert len(nearest(mu, 0, k=0)[0]) == 0
    assert nearest(mu, -1, k=2)[0].tolist() == nearest(mu, 5, k=2)[0].tolist()
    assert nearest(mu, np.int64(3), k=2)[0].tolist() == nearest(mu, 3, k=2)[0].tolist()
    with pytest.raises(IndexError):
        nearest(mu, 6)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        nearest(mu, np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        nearest(mu, 0.5)
