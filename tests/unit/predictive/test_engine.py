"""Model loading: metadata, the batch probe, provider fallback and the checks that refuse unservable models."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from foundry_inference.apps.predictive import engine
from foundry_inference.apps.predictive.settings import PredictiveSettings
from tests.support import models

pytestmark = pytest.mark.unit


def settings_for(path, **kw):
    return PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": path}, **kw)


def test_metadata_of_a_classifier():
    model = engine.load_model(settings_for(models.iris_logreg().path))
    assert model.input_name == "X" and model.dtype == np.float32 and model.rank == 2
    assert [o.name for o in model.outputs] == ["label", "probabilities"]
    assert model.batchable and model.fixed_dims == ((1, 4),) and model.fixed_batch is None
    assert model.model_type == "classification"
    assert model.image_layout is None


def test_fixed_batch_and_aggregating_models_are_not_batched():
    fixed = engine.load_model(settings_for(models.fixed_batch_model().path))
    assert fixed.fixed_batch == 1 and not fixed.batchable
    aggregate = engine.load_model(settings_for(models.aggregate_model().path))
    assert aggregate.fixed_batch is None and not aggregate.batchable    # the probe catches what shapes do not say


def test_image_model_layout():
    model = engine.load_model(settings_for(models.squeezenet().path))
    assert model.image_layout == engine.ImageLayout(True, 224, 224)
    assert model.batchable


def test_provider_fallback_is_reported():
    model = engine.load_model(settings_for(models.iris_logreg().path,
                                           providers=("CUDAExecutionProvider", "CPUExecutionProvider")))
    assert model.providers[0] == "CPUExecutionProvider"
    assert model.fallback and "CUDAExecutionProvider" in model.fallback[0]
    doc = model.describe(32)
    assert doc["execution_provider"] == "CPUExecutionProvider"
    assert doc["requested_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_a_provider_that_fails_to_initialise_falls_back(monkeypatch):
    import onnxruntime as ort
    real = ort.InferenceSession
    attempts = []

    def flaky(path, sess_options=None, providers=None):
        attempts.append(list(providers))
        if providers[0] != "CPUExecutionProvider":
            raise RuntimeError("CUDA driver not found")
        return real(path, sess_options=sess_options, providers=providers)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", flaky)
    model = engine.load_model(settings_for(models.iris_logreg().path))
    assert attempts[0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert attempts[-1] == ["CPUExecutionProvider"]
    assert any("failed to initialise (CUDA driver not found)" in note for note in model.fallback)


def _save(tmp_path, graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_models_with_two_inputs_or_string_inputs_are_refused(tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    path = _save(tmp_path, helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", [a, b], [y]))
    with pytest.raises(engine.ModelLoadError, match="exactly one input tensor; .* has 2: a, b"):
        engine.load_model(settings_for(path))
    s = helper.make_tensor_value_info("s", TensorProto.STRING, [None])
    t = helper.make_tensor_value_info("t", TensorProto.STRING, [None])
    path = _save(tmp_path, helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "str", [s], [t]))
    with pytest.raises(engine.ModelLoadError, match="tensor\\(string\\); supported"):
        engine.load_model(settings_for(path))


def test_a_corrupt_file_is_a_load_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(engine.ModelLoadError, match="cannot load"):
        engine.load_model(settings_for(str(path)))


def test_sample_input_fits_dynamic_image_models():
    model = engine.load_model(settings_for(models.squeezenet().path))
    assert engine.sample_input(model, 2).shape == (2, 3, 224, 224)
    assert engine.time_run(model, 1) > 0
