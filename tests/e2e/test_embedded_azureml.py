"""A Foundry catalog model (`azureml://`) deployed end to end on one machine: `foundry-inference up` (control plane,
operator, node agent, the real chat server behind the real nginx sidecar) downloads it from tests/support/azure_fake.py,
a loopback fake that STANDS IN FOR THE AZURE CLOUD SERVICES (the azureml registry gateway and Azure Blob Storage,
unreachable from a test machine). The fake serves the SmolLM2-135M ONNX GenAI model laid out as Foundry Local
finds it (`v1/genai_config.json`, ...), its first region failing with 503.

Covered: the deployment's status shows the download's progress (bytes done / total), a restart of `up` in the middle
of the download resumes it, the model answers a chat completion through the official `openai` client, and a second
deployment of the same model downloads nothing; a model the registry does not know ends in state Error naming the
cause.
"""
import json
import os

import pytest

from tests.e2e.quickstart_walkthrough import Platform, processes_under, wait_until
from tests.support import chat_models
from tests.support.azure_fake import AzureFake
from tests.support.procs import Cli, free_port, wait_http
from tests.support.require import require_module, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ALIAS = "smollm2-foundry"


def start_up(tmp, data, env, port, name):
    cli = Cli("up", "--data-dir", str(data), "--port", str(port), env=env, log_path=tmp / f"{name}.log")
    wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=cli.proc)
    wait_until(lambda: (data / "admin-key").exists(), 10, "the admin key")
    return cli


def catalog(uri):
    missing = uri.replace("/versions/1", "/versions/9")
    return {"version": "test-1", "models": [{
        "alias": "not-in-the-registry", "task": "chat-completion", "source": "foundry-local",
        "variants": [{"id": "smollm2-135m-instruct-generic-cpu:9", "compute": "cpu", "artifact": {"uri": missing}}]}, {
        "alias": ALIAS, "displayName": "SmolLM2 135M (Foundry layout)", "publisher": "test", "task": "chat-completion",
        "source": "foundry-local", "framework": "ONNX", "license": "apache-2.0",
        "variants": [{"id": "smollm2-135m-instruct-generic-cpu:1", "name": "smollm2-135m-instruct-generic-cpu",
                      "version": "1", "compute": "cpu", "executionProvider": "CPUExecutionProvider",
                      "artifact": {"uri": uri}}]}]}


def test_a_catalog_model_downloads_with_progress_resumes_after_a_restart_and_answers(tmp_path):
    require_tool("nginx", "apt-get install nginx")
    require_module("openai")
    model = chat_models.require(chat_models.smollm2_model)
    files = {f"v1/{name}": open(os.path.join(model, name), "rb").read() for name in sorted(os.listdir(model))
             if not name.startswith(".") and os.path.isfile(os.path.join(model, name))}
    files["LICENSE"] = b"apache-2.0"
    with AzureFake() as fake:
        uri = fake.add_model("smollm2-135m-instruct-generic-cpu", "1", files, description="SmolLM2")
        fake.failing_regions = {"centralus"}
        fake.delay = 0.25                                 # slow enough to watch the progress and restart mid-way
        (tmp_path / "catalog.json").write_text(json.dumps(catalog(uri)))
        (tmp_path / "operator.yaml").write_text(json.dumps({"catalog": {"source": str(tmp_path / "catalog.json")}}))
        env = {**fake.env(), "FOUNDRY_OPERATOR_CONFIG": str(tmp_path / "operator.yaml"), "FOUNDRY_SAMPLES": "none",
               "FOUNDRY_LOG_LEVEL": "info", "FOUNDRY_AZUREML_PARALLEL": "2"}
        data, port = tmp_path / "data", free_port()
        cli = start_up(tmp_path, data, env, port, "up-1")
        try:
            p = Platform(f"http://127.0.0.1:{port}", data)
            p.deploy("chat", {"catalog": {"name": ALIAS}})
            seen = []

            def downloading():
                status = p.deployment("chat")["status"]
                seen.append(status.get("message") or "")
                return "downloading the model:" in seen[-1] and "(0%)" not in seen[-1]
            wait_until(downloading, 120, "download progress in the deployment's status")
            assert " of " in seen[-1] and "MiB" in seen[-1], seen[-1]
            assert fake.sig not in json.dumps(p.deployment("chat")), "a SAS token reached the status"
        finally:
            assert cli.stop() == 0, cli.log()[-3000:]
        served_before = fake.bytes_served()
        assert 0 < served_before < sum(len(v) for v in files.values())
        fake.delay = 0
        cli = start_up(tmp_path, data, env, port, "up-2")
        try:
            p = Platform(f"http://127.0.0.1:{port}", data)
            status = p.wait_state("chat", "Running", timeout=300)
            fetch_log = (p.workload_dir("chat") / "logs" / "model-fetcher.log").read_text(errors="replace")
            assert "resuming the download at byte" in fetch_log
            assert fake.bytes_served() < sum(len(v) for v in files.values()) + served_before
            assert fake.sig not in fetch_log, "a SAS token reached the fetcher's log"
            key = p.keys("chat")[0]
            client = p.openai_client(status["internalEndpoint"], key)
            answer = client.chat.completions.create(model="smollm2-135m-instruct-generic-cpu:1", max_tokens=8,
                                                    messages=[{"role": "user", "content": "Say hello."}])
            assert answer.choices[0].message.content.strip()
            # the same model deployed again: no byte downloaded, not even a lookup
            requests_before = len(fake.requests)
            p.deploy("chat-2", {"catalog": {"name": ALIAS}})
            p.wait_state("chat-2", "Running", timeout=300)
            assert len(fake.requests) == requests_before, "the second deployment went to the network"
            # a model the registry does not have: state Error naming the cause, no model server started
            p.deploy("missing", {"catalog": {"name": "not-in-the-registry"}})
            status = p.wait_state("missing", "Error", timeout=120, fail_on_error=False)
            assert "versions/9: the model registry answered not found" in status["message"]
            assert not list((p.workload_dir("missing") / "volumes" / "models").glob("model/*"))
        finally:
            assert cli.stop() == 0, cli.log()[-3000:]
    assert processes_under(data) == []
