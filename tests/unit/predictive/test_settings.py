import pytest

from foundry_inference.apps.predictive.settings import PredictiveSettings, SettingsError, resolve_model_file

pytestmark = pytest.mark.unit


def model_file(tmp_path, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(b"onnx")
    return str(path)


def test_defaults(tmp_path):
    s = PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": model_file(tmp_path)})
    assert (s.port, s.max_batch_size, s.max_wait_ms, s.queue_depth) == (8000, 32, 2.0, 100)
    assert s.providers == ("CUDAExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider")
    assert s.http_frontend == "auto" and s.workers == 1 and s.intra_op_threads == 0


def test_environment_overrides(tmp_path):
    env = {"FOUNDRY_MODEL_PATH": model_file(tmp_path), "FOUNDRY_PREDICTIVE_PORT": "9000",
           "FOUNDRY_MAX_BATCH_SIZE": "8", "FOUNDRY_MAX_BATCH_WAIT_MS": "0.5", "FOUNDRY_QUEUE_DEPTH": "7",
           "FOUNDRY_INTRA_OP_THREADS": "2", "FOUNDRY_EXECUTION_PROVIDERS": "directml, cpu",
           "FOUNDRY_HTTP_FRONTEND": "Tornado", "FOUNDRY_MAX_BODY_BYTES": "4096"}
    s = PredictiveSettings.from_env(env)
    assert (s.port, s.max_batch_size, s.max_wait_ms, s.queue_depth, s.intra_op_threads) == (9000, 8, 0.5, 7, 2)
    assert s.providers == ("DmlExecutionProvider", "CPUExecutionProvider")
    assert s.http_frontend == "tornado" and s.max_body_bytes == 4096


def test_cpu_is_always_the_last_resort(tmp_path):
    s = PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": model_file(tmp_path), "FOUNDRY_EXECUTION_PROVIDERS": "cuda"})
    assert s.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.parametrize("name,value,needle", [
    ("FOUNDRY_PREDICTIVE_PORT", "eighty", "FOUNDRY_PREDICTIVE_PORT: expected an integer"),
    ("FOUNDRY_MAX_BATCH_SIZE", "0", "FOUNDRY_MAX_BATCH_SIZE: 0 is outside"),
    ("FOUNDRY_QUEUE_DEPTH", "-1", "FOUNDRY_QUEUE_DEPTH"),
    ("FOUNDRY_MAX_BATCH_WAIT_MS", "soon", "expected a number"),
    ("FOUNDRY_HTTP_FRONTEND", "h2", "is not one of"),
    ("FOUNDRY_ALLOW_NON_FINITE", "maybe", "expected on/off"),
])
def test_bad_values_name_the_variable(tmp_path, name, value, needle):
    with pytest.raises(SettingsError, match=needle):
        PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": model_file(tmp_path), name: value})


def test_model_path_is_required_and_must_exist(tmp_path):
    with pytest.raises(SettingsError, match="FOUNDRY_MODEL_PATH is required"):
        PredictiveSettings.from_env({})
    with pytest.raises(SettingsError, match="does not exist"):
        PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": str(tmp_path / "missing.onnx")})


def test_a_directory_must_hold_exactly_one_model(tmp_path):
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(SettingsError, match="no .onnx file"):
        resolve_model_file(str(tmp_path))
    sub = tmp_path / "model"
    sub.mkdir()
    only = model_file(sub, "classifier.onnx")
    assert resolve_model_file(str(tmp_path)) == only      # one level down, as a BYO tarball unpacks
    model_file(tmp_path, "other.onnx")
    with pytest.raises(SettingsError, match="2 .onnx files"):
        resolve_model_file(str(tmp_path))
