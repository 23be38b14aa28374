"""`foundry-inference chat-server` as a real process, configured from the environment as in a pod (the operator's
variables: PORT, FOUNDRY_MODEL_PATH, FOUNDRY_MODEL_ID, FOUNDRY_CHAT_HOST, FOUNDRY_AUTH_MODE, FOUNDRY_API_KEYS_DIR):
SmolLM2 answers the capital of France with Paris through the official `openai` client, keys are enforced, SIGTERM
exits cleanly, and bad configurations stop the process with a clear status."""
import signal

import pytest
import requests

from tests.support.chat_models import require, smollm2_model
from tests.support.procs import Cli, free_port, wait_http
from tests.support.require import require_module

pytestmark = pytest.mark.e2e

KEY = "fndry-pk-" + "c0ffee" * 6


def start(tmp_path, model_path, **env):
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "primary-key").write_text(KEY)
    (keys / "secondary-key").write_text("")
    port = free_port()
    env = {"PORT": str(port), "FOUNDRY_MODEL_PATH": model_path, "FOUNDRY_MODEL_ID": "smollm2-135m-instruct",
           "FOUNDRY_CHAT_HOST": "127.0.0.1", "FOUNDRY_AUTH_MODE": "api-key", "FOUNDRY_API_KEYS_DIR": str(keys),
           "FOUNDRY_DEPLOYMENT_NAME": "smol", "FOUNDRY_DEPLOYMENT_NAMESPACE": "default", **env}
    return Cli("chat-server", env=env, log_path=tmp_path / "chat.log"), f"http://127.0.0.1:{port}"


def test_smollm_answers_paris_through_the_openai_client(tmp_path):
    model = require(smollm2_model)
    cli, base = start(tmp_path, model)
    try:
        wait_http(base + "/health", proc=cli.proc, timeout=60)
        wait_http(base + "/ready", proc=cli.proc, timeout=120)
        assert requests.get(base + "/v1/models", timeout=5).json()["data"][0]["id"] == "smollm2-135m-instruct"
        r = requests.post(base + "/v1/chat/completions", json={"model": "x", "messages": []}, timeout=5)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_credentials"
        openai = require_module("openai")
        client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
        question = [{"role": "user", "content": "What is the capital of France?"}]
        out = client.chat.completions.create(model="smollm2-135m-instruct", messages=question, max_tokens=24)
        assert "Paris" in out.choices[0].message.content
        assert out.usage.prompt_tokens > 10 and out.usage.completion_tokens > 0
        stream = client.chat.completions.create(model="smollm2-135m-instruct", messages=question, max_tokens=24,
                                                stream=True)
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        rc = cli.stop(signal.SIGTERM)
    assert rc == 0, cli.log()


def test_bad_configuration_exits_with_a_clear_status(tmp_path):
    cli, _ = start(tmp_path, str(tmp_path / "missing"))
    assert cli.proc.wait(30) == 2
    assert "FOUNDRY_MODEL_PATH" in cli.log()
    empty = tmp_path / "model"
    empty.mkdir()
    (empty / "weights.gguf").write_bytes(b"GGUF")
    cli, _ = start(tmp_path, str(empty))
    assert cli.proc.wait(60) == 1
    assert "llama.cpp" in cli.log()
