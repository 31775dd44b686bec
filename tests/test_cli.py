import json

import pytest

from bench.common import SAME_NUMBERS_RTOL, max_relative_difference
from vae_core import checkpoint as C
from vae_core.__main__ import main
from vae_core.config import ModelConfig, TrainConfig
from vae_core.runs import RunService, RunSpec
from vae_core.store import DataRef, Workspace

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


def test_train_ends_by_saying_whether_and_why_the_posterior_collapsed(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--latent-dim", "4", "--hidden", "64", "--beta", "8", "--epochs", "10",
                 "--batch-size", "64", "--out", str(tmp_path / "b8.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "collapse: Every latent dimension collapsed (4 of 4)" in out and "By active units" in out
    assert "β = 8 > 1 trades rate away by design" in out
    assert "fix 1: Free bits λ = 0.5 and 35 epochs (train again with --free-bits 0.5 --epochs 35)" in out
    assert "fix 2: β = 1 and 35 epochs (train again with --beta 1 --epochs 35)" in out  # 230 steps: longer too
    assert main(["train", "--dataset", "digits", "--latent-dim", "4", "--hidden", "64", "--free-bits", "0.5",
                 "--epochs", "35", "--batch-size", "64", "--out", str(tmp_path / "fb.safetensors")]) == 0
    assert "collapse: No collapse: all 4 latent dimensions carry information." in capsys.readouterr().out


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


def test_divergence_exits_non_zero_and_saves_no_untrained_model(tmp_path, capsys):
    out = tmp_path / "div.safetensors"
    assert main(["train", "--dataset", "digits", "--epochs", "3", "--lr", "10", "--hidden", "64",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "diverged in epoch 1" in err and "nothing was saved" in err and not out.exists()


def test_user_file_training_registers_the_file_and_evaluate_finds_it_by_hash(tmp_path, monkeypatch, capsys):
    import numpy as np

    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    x = (np.random.default_rng(0).random((40, 6, 6)) * 255).astype(np.uint8)
    src = tmp_path / "mine.npz"
    np.savez(src, x=x, y=np.arange(40) % 2)
    assert main(["train", "--data-file", str(src), "--epochs", "2", "--hidden", "16", "--conditional",
                 "--out", "my-model"]) == 0
    ws = Workspace()
    out = ws.models_dir / "my-model.safetensors"  # a bare name goes into the workspace
    ckpt = C.load(out)
    (stored,) = ws.list_datasets()
    assert ckpt.config.n_classes == 2 and ckpt.dataset["name"] == "mine.npz"
    assert ckpt.dataset["hash"] == stored.hash and stored.n_images == 40 and stored.file_name == "mine.npz"
    src.unlink()  # the original file is gone: the model still finds its data in the workspace
    capsys.readouterr()
    assert main(["evaluate", "my-model", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["dataset"] == "mine.npz" and abs(res["test_elbo"] - ckpt.history[-1]["test_elbo"]) < 1e-4
    # training on the same images again stores nothing new, and the run was recorded
    runs = RunService(ws).runs()
    assert len(runs) == 1 and runs[0].status == "done" and runs[0].saved == out


def test_same_seed_same_history_through_the_cli_and_the_run_service(tmp_path, digits):
    out = tmp_path / "a.safetensors"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--hidden", "32", "--seed", "4",
                 "--out", str(out)]) == 0
    spec = RunSpec(data=DataRef("digits"), model=ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(32,)),
                   train=TrainConfig(epochs=2, seed=4))
    run = RunService(Workspace(tmp_path / "ws")).submit(spec)
    run.wait()
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in h]  # noqa: E731
    assert strip(C.load(out).history) == strip(run.history)


def test_a_sweep_on_two_worker_processes_gives_the_same_numbers(tmp_path, capsys):
    argv = ["sweep", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "2", "--betas", "1,4",
            "--iwae-k", "5", "--json"]
    assert main([*argv, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    two = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    one = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(two) == 2 and max_relative_difference(two, one) <= SAME_NUMBERS_RTOL


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"]])
def test_help(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
