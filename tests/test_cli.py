import json

import pytest

from vae_core import checkpoint as C
from vae_core.__main__ import main

KEYS = {"test_elbo", "test_recon", "test_kl", "iwae_nll", "active_units", "kl_per_dim"}


def test_train_then_evaluate_json(tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    assert main(["train", "--dataset", "digits", "--epochs", "3", "--hidden", "64", "--latent-dim", "3",
                 "--beta", "2", "--free-bits", "0.1", "--warmup", "1", "--out", str(out)]) == 0
    ckpt = C.load(out)
    assert ckpt.config.latent_dim == 3 and ckpt.config.hidden == (64,) and ckpt.objective.beta == 2.0
    assert ckpt.objective.free_bits == 0.1 and len(ckpt.history) == 3 and ckpt.dataset["name"] == "digits"
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iwae-k", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert KEYS <= set(res) and len(res["kl_per_dim"]) == 3
    assert abs(res["test_elbo"] - ckpt.history[-1]["test_elbo"]) < 1e-4  # same seeded evaluation
    assert res["iwae_nll"] <= res["test_elbo"] + 0.5  # IWAE NLL is the tighter bound
    assert abs(res["test_recon"] + res["test_kl"] - res["test_elbo"]) < 1e-6


def test_tutorial_preset_and_refusal_to_overwrite(tmp_path, capsys):
    out = tmp_path / "tut.safetensors"
    assert main(["train", "--dataset", "digits", "--preset", "tutorial", "--epochs", "1", "--out", str(out)]) == 0
    assert C.load(out).config.hidden == (400,)
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert main(["evaluate", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--latent-dim", "0", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "latent_dim" in capsys.readouterr().err


def test_divergence_exits_non_zero_but_saves_finite_weights(tmp_path):
    out = tmp_path / "div.safetensors"
    assert main(["train", "--dataset", "digits", "--epochs", "3", "--lr", "10", "--hidden", "64",
                 "--out", str(out)]) == 1
    C.load(out)  # loads: weights are finite


def test_user_file_training(tmp_path):
    import numpy as np
    x = (np.random.default_rng(0).random((40, 6, 6)) * 255).astype(np.uint8)
    src = tmp_path / "mine.npz"
    np.savez(src, x=x, y=np.arange(40) % 2)
    out = tmp_path / "mine.safetensors"
    assert main(["train", "--data-file", str(src), "--epochs", "2", "--hidden", "16", "--conditional",
                 "--out", str(out)]) == 0
    ckpt = C.load(out)
    assert ckpt.config.n_classes == 2 and ckpt.dataset["name"] == "mine"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"]])
def test_help(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
