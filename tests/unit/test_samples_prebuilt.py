"""The fetcher's prebuilt samples (the cluster's samples image, docker/samples.Dockerfile): copied after their digests
are verified; a corrupt copy fails with the reason instead of serving a damaged model."""
import json

import pytest

from foundry_inference import samples

pytestmark = pytest.mark.unit


def _prebuilt(root, name, files):
    folder = root / name
    folder.mkdir(parents=True)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / samples.MANIFEST).write_text(json.dumps(samples._manifest(folder)))
    return folder


def test_a_prebuilt_sample_is_copied_without_preparing_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_SAMPLES_PREBUILT", str(tmp_path / "prebuilt"))
    monkeypatch.setenv("FOUNDRY_SAMPLES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(samples, "prepare", lambda *a, **k: pytest.fail("prepare() must not run"))
    _prebuilt(tmp_path / "prebuilt", "iris-classifier", {"model.onnx": b"onnx bytes", "sub/labels.txt": b"a\nb\n"})
    lines = []
    samples.build("iris-classifier", tmp_path / "dest", progress=lines.append)
    assert (tmp_path / "dest" / "model.onnx").read_bytes() == b"onnx bytes"
    assert (tmp_path / "dest" / "sub" / "labels.txt").read_bytes() == b"a\nb\n"
    assert any("prebuilt" in line and "digest verified" in line for line in lines), lines


def test_a_corrupt_prebuilt_sample_fails_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_SAMPLES_PREBUILT", str(tmp_path / "prebuilt"))
    folder = _prebuilt(tmp_path / "prebuilt", "iris-classifier", {"model.onnx": b"onnx bytes"})
    (folder / "model.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(samples.SampleError, match="prebuilt sample .* is corrupt: model.onnx does not match"):
        samples.build("iris-classifier", tmp_path / "dest", progress=lambda m: None)
    assert not (tmp_path / "dest" / "model.onnx").exists()


def test_without_a_prebuilt_folder_the_sample_is_prepared_as_before(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_SAMPLES_PREBUILT", str(tmp_path / "none"))
    called = []

    def prepare(name, progress=None):
        called.append(name)
        return _prebuilt(tmp_path / "cache", name, {"model.onnx": b"x"})
    monkeypatch.setattr(samples, "prepare", prepare)
    samples.build("iris-classifier", tmp_path / "dest", progress=lambda m: None)
    assert called == ["iris-classifier"] and (tmp_path / "dest" / "model.onnx").read_bytes() == b"x"
