"""Settings from the environment (as the operator writes them) and the engine registry."""
import json

import pytest

from foundry_inference.apps.chat.engine import UnsupportedModel, find_model_folder, open_engine
from foundry_inference.apps.chat.settings import ChatSettings, SettingsError
from foundry_inference.apps.chat.whisper import srt, vtt

pytestmark = pytest.mark.unit


def test_operator_environment(tmp_path):
    s = ChatSettings.from_env({"PORT": "5001", "FOUNDRY_MODEL_PATH": str(tmp_path), "FOUNDRY_MODEL_ID": "phi:1",
                               "FOUNDRY_CHAT_HOST": "127.0.0.1"})
    assert (s.port, s.host, s.model_id, s.model_path) == (5001, "127.0.0.1", "phi:1", str(tmp_path))
    assert ChatSettings.from_env({"FOUNDRY_MODEL_PATH": str(tmp_path)}).port == 5000
    s = ChatSettings.from_env({"FOUNDRY_MODEL_PATH": str(tmp_path), "PORT": "5001", "FOUNDRY_CHAT_PORT": "6000"},
                              host="0.0.0.0")
    assert s.port == 6000 and s.model_id == tmp_path.name


@pytest.mark.parametrize("env,name", [
    ({}, "FOUNDRY_MODEL_PATH"),
    ({"FOUNDRY_MODEL_PATH": "/nonexistent/x"}, "FOUNDRY_MODEL_PATH"),
    ({"FOUNDRY_CHAT_MAX_BATCH": "0"}, "FOUNDRY_CHAT_MAX_BATCH"),
    ({"FOUNDRY_CHAT_QUEUE_DEPTH": "many"}, "FOUNDRY_CHAT_QUEUE_DEPTH"),
    ({"FOUNDRY_INTRA_OP_SPINNING": "maybe"}, "FOUNDRY_INTRA_OP_SPINNING"),
    ({"FOUNDRY_WHISPER_COMPUTE_TYPE": "int3"}, "FOUNDRY_WHISPER_COMPUTE_TYPE"),
    ({"PORT": "70000"}, "PORT"),
])
def test_bad_settings_name_the_variable(tmp_path, env, name):
    if env and "FOUNDRY_MODEL_PATH" not in env:
        env = {"FOUNDRY_MODEL_PATH": str(tmp_path), **env}
    with pytest.raises(SettingsError, match=name):
        ChatSettings.from_env(env)


def test_registry_picks_the_engine_from_the_folder(tmp_path, tiny_model):
    settings = ChatSettings(model_path=tiny_model, model_id="t")
    assert open_engine(tiny_model, settings).name == "onnxruntime-genai"
    nested = tmp_path / "artifact"
    nested.mkdir()
    (nested / "model").symlink_to(tiny_model)
    assert find_model_folder(str(nested)) == str(nested / "model")
    whisper = tmp_path / "whisper"
    whisper.mkdir()
    (whisper / "model.bin").write_bytes(b"")
    (whisper / "config.json").write_text(json.dumps({"alignment_heads": [[1, 2]], "lang_ids": []}))
    assert open_engine(str(whisper), settings).name == "faster-whisper"
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UnsupportedModel, match="llama.cpp"):
        find_model_folder(str(gguf))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnsupportedModel, match="nothing"):
        find_model_folder(str(empty))


def test_subtitle_formats():
    segments = [{"start": 0.0, "end": 1.5, "text": " Hello there."}, {"start": 61.25, "end": 3725.0, "text": " Bye."}]
    assert srt(segments) == ("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
                             "2\n00:01:01,250 --> 01:02:05,000\nBye.\n")
    assert vtt(segments) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
                             "00:01:01.250 --> 01:02:05.000\nBye.\n")
