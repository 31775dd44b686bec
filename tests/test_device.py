import pytest
import torch

from vae_core import device as dev


def _fake(monkeypatch, cuda, mps):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(dev, "_mps_available", lambda: mps)


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _fake(monkeypatch, cuda, mps)
    assert dev.pick_device("auto").type == expected
    assert dev.pick_device(None).type == expected


def test_explicit_choice_overrides_and_missing_device_is_an_error(monkeypatch):
    _fake(monkeypatch, True, False)
    assert dev.pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="MPS"):
        dev.pick_device("mps")
    _fake(monkeypatch, False, False)
    with pytest.raises(ValueError, match="CUDA"):
        dev.pick_device("cuda")
    with pytest.raises(ValueError):
        dev.pick_device("tpu")
