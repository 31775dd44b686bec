"""The latent map of a whole dataset (vae_core/latent_map.py) and what serves its images (vae_core/map_server.py):
every image encoded with the test images scored as everywhere else, the cache in the workspace, the views, the
PCA plane both ways, selections as bitsets, Procrustes alignment, the columns the browser reads, and the image
routes' answers and refusals."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae_core import latent_map as L
from vae_core import map_server
from vae_core.metrics import per_sample_scores
from vae_core.projection import pca


@pytest.fixture(scope="module")
def enc(digits, trained_digits):
    return L.encode(trained_digits, digits)


def test_every_image_is_encoded_and_the_test_rows_score_as_everywhere_else(enc, digits, trained_digits):
    n_train, n_test = len(digits.x_train), len(digits.x_test)
    assert enc.n == n_train + n_test and enc.n_train == n_train and enc.latent_dim == 2
    test = per_sample_scores(trained_digits, digits.x_test)  # seed 0: what the Anomalies page shows
    for key in ("mu", "logvar", "neg_elbo", "recon", "kl", "sq_error"):
        assert np.array_equal(getattr(enc, key)[n_train:], test[key].astype(np.float32)), key
    train = per_sample_scores(trained_digits, digits.x_train, seed=1)
    assert np.array_equal(enc.mu[:n_train], train["mu"])
    assert np.array_equal(enc.labels, np.r_[digits.y_train.numpy(), digits.y_test.numpy()])
    assert enc.rows("test").tolist() == list(range(n_train, enc.n)) and len(enc.rows("train")) == n_train
    assert enc.is_test(np.array([0, n_train])).tolist() == [False, True]
    with pytest.raises(ValueError, match="split must be"):
        enc.rows("validation")


def test_the_map_cache_keeps_encodings_and_views_and_ignores_damaged_or_foreign_files(enc, tmp_path, monkeypatch):
    cache = L.MapCache(tmp_path / "maps", "model-a", "digits-1438-359")
    assert cache.encodings() is None and cache.view(L.View("PCA")) is None
    cache.save_encodings(enc)
    back = cache.encodings()
    assert back.n_train == enc.n_train and all(np.array_equal(getattr(back, k), getattr(enc, k))
                                               for k in ("mu", "logvar", "neg_elbo", "labels"))
    rows, coords = L.project(enc, L.View("PCA"))
    cache.save_view(L.View("PCA"), rows, coords)
    got_rows, got_coords = cache.view(L.View("PCA"))
    assert np.array_equal(got_rows, rows) and np.array_equal(got_coords, coords)
    other = L.MapCache(tmp_path / "maps", "model-b", "digits-1438-359")  # another model: another folder
    assert other.folder != cache.folder and other.encodings() is None
    path = cache.folder / "encodings.safetensors"
    path.write_bytes(path.read_bytes()[:-9])  # truncated: recomputed, never an error
    assert cache.encodings() is None
    # past the size cap the least recently used map goes
    other.save_encodings(enc)
    monkeypatch.setenv(L.CACHE_CAP_ENV, str(1e-6))
    L.MapCache(tmp_path / "maps", "model-c", "d").save_encodings(enc)
    assert not cache.folder.exists() and not other.folder.exists()


def test_views_raw_pca_and_a_seeded_umap_subsample(enc):
    rows, coords = L.project(enc, L.View("raw"))
    assert np.array_equal(rows, np.arange(enc.n)) and np.array_equal(coords, enc.mu.astype(np.float64))
    rows, coords = L.project(enc, L.View("PCA"))
    assert np.allclose(coords, pca(enc.mu)[0])
    view = L.View("UMAP", points=300, n_neighbors=10, min_dist=0.2, seed=3)
    reports = []
    rows, coords = L.project(enc, view, lambda f, stage, left: reports.append((f, stage, left)))
    assert len(rows) == 300 and np.array_equal(rows, np.sort(rows)) and coords.shape == (300, 2)
    assert np.array_equal(rows, view.rows(enc.n))  # seeded: the same subsample every time
    assert reports[-1][0] == 1.0 and {r[1] for r in reports} >= {"laying out the map"}
    assert all(left is not None and left >= 0 for _, _, left in reports)
    assert view.name == "umap-300-10-0.2-3" and L.View("t-SNE", 500).name == "tsne-500-30-0"


def test_the_pca_plane_goes_both_ways(enc):
    z = np.random.default_rng(0).normal(size=(50, 5))
    plane = L.PCAPlane(z)
    assert np.allclose(plane.to_map(z), pca(z)[0])
    uv = np.array([[0.5, -1.0], [2.0, 0.25]])
    assert np.allclose(plane.to_map(plane.to_latent(uv)), uv)  # a map place → a code on the plane → that place
    assert np.allclose(plane.w.T @ plane.w, np.eye(2))


def test_selections_travel_as_bitsets_over_any_map(enc):
    point_rows = np.array([3, 5, 8, 13, 21, 34, 55, 89, 144])
    bits = L.rows_to_bits(np.array([5, 55, 144, 7]), point_rows)  # 7 is not on this map
    assert L.bits_to_rows(bits, point_rows).tolist() == [5, 55, 144]
    assert L.bits_to_rows("", point_rows).size == 0
    assert L.where_on_map(point_rows, np.arange(18.0).reshape(9, 2), [8, 9, 144]).tolist() == [[4, 5], [16, 17]]
    counts = L.label_counts(enc.labels, np.arange(100), [str(k) for k in range(10)])
    assert sum(c for _, c in counts) == 100 and counts == sorted(counts, key=lambda nc: -nc[1])
    assert L.label_counts(None, np.arange(5), None) == []


def test_procrustes_undoes_a_rotation_a_reflection_a_scale_and_a_shift():
    a = np.random.default_rng(1).normal(size=(200, 2))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    b = 3.0 * (a @ rotation) * np.array([1.0, -1.0]) + np.array([5.0, -2.0])  # turned, mirrored, scaled, moved
    aligned, info = L.procrustes(a, b)
    assert np.allclose(aligned, a, atol=1e-9) and info["disparity"] < 1e-12
    assert info["reflection"] and info["scale"] == pytest.approx(1 / 3)
    assert np.allclose(L.aligned(b[:5], info), a[:5])  # anything drawn on the second map moves with it
    assert np.array_equal(L.aligned(b[:5], None), b[:5])
    noisy = a + np.random.default_rng(2).normal(scale=0.3, size=a.shape)
    assert 0.02 < L.procrustes(a, noisy)[1]["disparity"] < 0.2  # what stays apart is reported, not hidden


def test_the_browsers_columns_and_colours(enc):
    rows = enc.rows("test")
    blob = L.points_payload(enc, rows, enc.mu[rows])
    cols = L.read_payload(blob)
    assert np.array_equal(cols["row"], rows) and np.array_equal(cols["x"], enc.mu[rows, 0])
    assert cols["split"].all() and np.array_equal(cols["label"], enc.labels[rows])
    payload, legend = L.colouring(enc, "neg_elbo", rows)
    got = L.read_payload(payload)
    assert np.allclose(got["value"], enc.neg_elbo[rows]) and len(got["rgba"]) == len(rows)
    lo, hi = np.percentile(enc.neg_elbo[rows], [1, 99])
    assert legend["min"] == pytest.approx(lo) and legend["max"] == pytest.approx(hi)  # outliers do not wash it out
    payload, legend = L.colouring(enc, "label", rows, [str(k) for k in range(10)])
    rgba = L.read_payload(payload)["rgba"]
    assert len(legend["items"]) == 10 and len(set(rgba[enc.labels[rows] == 3].tolist())) == 1
    other = L.Encodings(**{k: getattr(enc, k) for k in ("mu", "logvar", "recon", "kl", "sq_error")},
                        neg_elbo=enc.neg_elbo + 2.0, n_train=enc.n_train, labels=enc.labels)
    payload, legend = L.colouring(enc, "delta", rows, other=other)
    assert np.allclose(L.read_payload(payload)["value"], 2.0) and legend["min"] == -legend["max"]
    with pytest.raises(ValueError, match="second model"):
        L.colouring(enc, "delta", rows)


def test_the_images_behind_rows_and_their_reconstructions(digits, trained_digits):
    rows = np.array([0, len(digits.x_train) - 1, len(digits.x_train), len(digits.x_train) + 5])
    images = L.dataset_images(digits, rows)
    assert np.array_equal(images[:2], digits.x_train[[0, -1]].numpy())
    assert np.array_equal(images[2:], digits.x_test[[0, 5]].numpy())
    x, r = L.reconstructions(trained_digits, digits, rows)
    assert x.shape == r.shape == (4, 1, 8, 8) and 0 <= r.min() and r.max() <= 1
    decode = L.decoder_at(trained_digits, None)
    assert decode(np.array([[0.0, 0.0], [1.0, -1.0]])).shape == (2, 1, 8, 8)


def test_the_image_routes_draw_strips_and_refuse_bad_requests(digits, trained_digits):
    url = map_server.publish_images(("test", "digits"), lambda rows: L.dataset_images(digits, rows))
    token = url.rsplit("/", 1)[1]
    png = map_server.images_png(token, {"rows": "0,1,2", "px": "32"})
    assert Image.open(io.BytesIO(png)).size == (96, 32)  # three images side by side, 32 px each (8 px × 4)
    for bad, why in (({"rows": "", "px": "32"}, "1…400 rows"), ({"rows": "1,x", "px": "32"}, "whole numbers"),
                     ({"rows": ",".join(["1"] * 401), "px": "32"}, "1…400"), ({"rows": "1", "px": "9999"}, "8…256")):
        with pytest.raises(map_server.BadRequest, match=why):
            map_server.images_png(token, bad)
    with pytest.raises(KeyError):
        map_server.images_png("0" * 32, {"rows": "1", "px": "32"})
    url = map_server.publish_decoder(("test", "digits-decoder"), L.decoder_at(trained_digits, None))
    token = url.rsplit("/", 1)[1]
    png = map_server.decode_png(token, {"x0": "-1", "dx": "0.5", "nx": "4", "y0": "-1", "dy": "1", "ny": "2",
                                        "px": "16"})
    assert Image.open(io.BytesIO(png)).size == (16 * 8, 16)
    with pytest.raises(map_server.BadRequest, match="at most 2500 cells"):
        map_server.decode_png(token, {"x0": "0", "dx": "1", "nx": "60", "y0": "0", "dy": "1", "ny": "60", "px": "8"})
    with pytest.raises(map_server.BadRequest, match="finite"):
        map_server.decode_png(token, {"x0": "nan", "dx": "1", "nx": "1", "y0": "0", "dy": "1", "ny": "1", "px": "8"})
    centres = map_server.lattice_centres(0.0, 1.0, 3, 0.0, 2.0, 2)  # top row first, left to right
    assert centres.tolist() == [[0.5, 3.0], [1.5, 3.0], [2.5, 3.0], [0.5, 1.0], [1.5, 1.0], [2.5, 1.0]]


def test_a_decoded_lattice_is_the_decoder_at_the_cell_centres(trained_digits):
    decode = L.decoder_at(trained_digits, None)
    xy = map_server.lattice_centres(-1.0, 0.5, 4, -1.0, 1.0, 2)
    with torch.no_grad():
        expected = trained_digits.decode_mean(torch.as_tensor(xy, dtype=torch.float32)).numpy()
    assert np.allclose(decode(xy), expected)
