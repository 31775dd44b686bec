import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from vae_core import checkpoint as C
from vae_core.checkpoint import CheckpointError
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.model import VAE


def make_ckpt(**model_kw):
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=3, hidden=(16,), **model_kw))
    return C.Checkpoint(model=model, objective=ObjectiveConfig(beta=2.0, free_bits=0.5), train=TrainConfig(epochs=3),
                        dataset={"name": "digits", "image_shape": [1, 8, 8]},
                        history=[{"epoch": 1, "test_elbo": 30.5, "kl_per_dim": [0.1, 0.2, 0.3]}])


@pytest.mark.parametrize("kw", [{}, dict(architecture="conv", channels=(4, 8)), dict(likelihood="gaussian"),
                                dict(n_classes=10)])
def test_round_trip_gives_identical_outputs(tmp_path, kw):
    ckpt = make_ckpt(**kw)
    path = C.save(tmp_path / "m.safetensors", ckpt)
    back = C.load(path)
    assert back.config == ckpt.config and back.objective == ckpt.objective and back.train == ckpt.train
    assert back.history == ckpt.history and back.dataset == ckpt.dataset
    assert back.versions["torch"] == torch.__version__
    x, z = torch.rand(5, 1, 8, 8), torch.randn(5, 3)
    y = torch.arange(5) if kw.get("n_classes") else None
    with torch.no_grad():
        for a, b in zip(ckpt.model.eval().encode(x, y), back.model.encode(x, y)):
            assert torch.equal(a, b)
        assert torch.equal(ckpt.model.decode(z, y), back.model.decode(z, y))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    path = C.save(tmp_path / "m.safetensors", make_ckpt())
    with pytest.raises(C.CheckpointExistsError):
        C.save(path, make_ckpt(likelihood="gaussian"))
    assert C.load(path).config.likelihood == "bernoulli"
    C.save(path, make_ckpt(likelihood="gaussian"), overwrite=True)
    assert C.load(path).config.likelihood == "gaussian"


def _valid_blob():
    return C.to_bytes(make_ckpt())


def _with_meta(meta_value):
    model = make_ckpt().model
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    return st_save(tensors, metadata=None if meta_value is None else {C.METADATA_KEY: meta_value})


def _meta(**change):
    meta = json.loads(json.loads(_valid_blob()[8:8 + struct.unpack("<Q", _valid_blob()[:8])[0]])["__metadata__"]
                      [C.METADATA_KEY])
    meta.update(change)
    return json.dumps(meta)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/vae_core_pwned",))


def _wrong_shapes():
    model = VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=3, hidden=(17,)))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    return st_save(tensors, metadata={C.METADATA_KEY: _meta()})


def _nan_weights():
    model = make_ckpt().model
    tensors = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    next(iter(tensors.values()))[0] = float("nan")
    return st_save(tensors, metadata={C.METADATA_KEY: _meta()})


def _missing_tensor():
    tensors = {k: v.contiguous() for k, v in make_ckpt().model.state_dict().items()}
    tensors.pop(sorted(tensors)[0])
    return st_save(tensors, metadata={C.METADATA_KEY: _meta()})


BAD = {
    "empty": (lambda: b"", "empty"),
    "seven bytes": (lambda: b"\x01" * 7, "too short"),
    "truncated": (lambda: _valid_blob()[: len(_valid_blob()) // 2], "corrupt|truncated"),
    "header only": (lambda: _valid_blob()[:40], "truncated"),
    "random bytes": (lambda: os.urandom(4096), "not a safetensors file"),
    "pickle": (lambda: pickle.dumps(Exploit()), "not a safetensors file"),
    "torch.save pickle": (lambda: _torch_save_bytes(), "not a safetensors file"),
    "no metadata": (lambda: _with_meta(None), "not a VAE checkpoint"),
    "metadata not json": (lambda: _with_meta("{not json"), "not valid JSON"),
    "metadata a list": (lambda: _with_meta("[1, 2]"), "must be a JSON object"),
    "unknown format version": (lambda: _with_meta(_meta(format_version=99)), "format version 99"),
    "missing format version": (lambda: _with_meta(json.dumps({"model_config": {}})), "format version None"),
    "missing model_config": (lambda: _with_meta(json.dumps({"format_version": 1})), "no model_config"),
    "bad model_config": (lambda: _with_meta(_meta(model_config={"latent_dim": 999})), "latent_dim"),
    "unknown config field": (lambda: _with_meta(_meta(model_config={"evil": 1})), "unknown fields"),
    "wrong shapes": (_wrong_shapes, "shape"),
    "missing tensor": (_missing_tensor, "missing"),
    "nan weights": (_nan_weights, "NaN"),
    "history not a list": (lambda: _with_meta(_meta(history={"a": 1})), "history"),
    # a few KiB of JSON describing a 16-megapixel MLP (~1 TB of weights): refused before anything is allocated
    "huge model config": (lambda: _with_meta(_meta(model_config={**make_ckpt().config.to_dict(),
                                                                 "image_shape": [1, 4096, 4096], "hidden": [8192]})),
                          "shape"),
}


def _torch_save_bytes():
    import io
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_checkpoints_raise_the_typed_error(tmp_path, kind):
    make, msg = BAD[kind]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make())
    with pytest.raises(CheckpointError, match=msg):
        C.load(path)
    assert not os.path.exists("/tmp/vae_core_pwned")


def test_missing_file():
    with pytest.raises(CheckpointError, match="cannot open"):
        C.load("/nonexistent/x.safetensors")


@pytest.mark.parametrize("name,stem", [("my model", "my-model"), ("../../etc/passwd", "etc-passwd"),
                                       ("/abs/path", "abs-path"), ("a\0b", "a-b"), ("ｆｕｌｌ", "full"),
                                       ("x.safetensors", "x"), ("..hidden", "hidden"), ("a/../../b", "a-.-.-b")])
def test_names_cannot_escape_the_folder(tmp_path, name, stem):
    path = C.checkpoint_path(name, tmp_path)
    assert path.parent == tmp_path.resolve() and path.name == f"{stem}.safetensors"


@pytest.mark.parametrize("name", ["", "..", "/", "\0", "‮", "../"])
def test_unusable_names_are_refused(tmp_path, name):
    with pytest.raises(CheckpointError, match="not a usable"):
        C.checkpoint_path(name, tmp_path)
