"""The node agent's processes get the environment their container spec says plus a short allowlist of the agent's
own, never the rest of it (registry passwords, cloud tokens, whatever the shell that ran `up` held)."""
import base64

import pytest

from foundry_inference.operator.agent.workload import Workload

pytestmark = pytest.mark.unit

LEAKS = {"AWS_SECRET_ACCESS_KEY": "aws-secret", "GITHUB_TOKEN": "ghp_secret", "FOUNDRY_REGISTRY_PASSWORD": "parent-pw",
         "AZURE_CLIENT_SECRET": "azure-secret", "FOUNDRY_AUTH_MODE": "none", "LD_PRELOAD": "/tmp/evil.so",
         "PYTHONPATH": "/tmp/evil"}


def workload(tmp_path):
    dep = {"metadata": {"namespace": "ns", "name": "iris", "uid": "u-1"}}
    secret = {"data": {"password": base64.b64encode(b"declared-pw").decode()}}
    return Workload(dep, str(tmp_path), lambda ns, name: secret if name == "creds" else None)


def test_attack_model_processes_do_not_inherit_the_agents_environment(tmp_path, monkeypatch):
    for name, value in LEAKS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FOUNDRY_LOG_LEVEL", "debug")
    w = workload(tmp_path)
    fetcher = {"env": [{"name": "FOUNDRY_FETCH_DEST", "value": "/models/model"},
                       {"name": "FOUNDRY_REGISTRY_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
               "volumeMounts": [{"name": "models", "mountPath": "/models"}]}
    env = w._env(fetcher, {"FOUNDRY_FETCH_CACHE": "/c"})
    assert env["FOUNDRY_REGISTRY_PASSWORD"] == "declared-pw"            # what the spec declares, from its Secret
    assert env["FOUNDRY_FETCH_DEST"].endswith("volumes/models/model") and env["FOUNDRY_FETCH_CACHE"] == "/c"
    app = w._app_env({"env": [{"name": "FOUNDRY_AUTH_MODE", "value": "api-key"}]}, 4321)
    for started in (env, app):
        assert not set(LEAKS) - {"FOUNDRY_REGISTRY_PASSWORD", "FOUNDRY_AUTH_MODE"} & set(started), sorted(started)
        assert "aws-secret" not in started.values() and "parent-pw" not in started.values()
        assert started["FOUNDRY_LOG_LEVEL"] == "debug" and "PATH" in started   # the short allowlist comes through
    assert app["FOUNDRY_AUTH_MODE"] == "api-key" and app["PORT"] == "4321"
    assert "FOUNDRY_REGISTRY_PASSWORD" not in app


def test_attack_a_pod_the_agent_cannot_realise_whole_is_not_run_without_its_auth_proxy(tmp_path):
    # a vLLM pod: vLLM, nginx and the auth proxy; running vLLM behind nginx alone would serve it without auth
    pod = {"containers": [{"name": "model-server", "command": ["python3", "-m", "vllm"]},
                          {"name": "tls-proxy", "command": ["nginx"]},
                          {"name": "auth-proxy", "command": ["foundry-inference", "auth-proxy"]}]}
    w = workload(tmp_path)
    w.sync({"metadata": {"generation": 1}, "spec": {"replicas": 1, "template": {"spec": pod}}}, {}, {})
    assert w.problem[0] == "Unsupported" and "auth-proxy" in w.problem[1]
    assert w.apps == [] and w.fetcher is None and w.proxy is None


def test_an_embedded_fetcher_writes_no_termination_message_file(tmp_path):
    """The pod spec names the kubelet's /dev/termination-log for the fetcher; on one machine no such file is the
    fetcher's to write (the agent reads its log file), so the agent's fetchers run without the setting."""
    from foundry_inference.operator.agent.agent import NodeAgent
    from foundry_inference.operator.builders.deployment import TERMINATION_LOG
    agent = NodeAgent(None, str(tmp_path), None, nginx_binary="")
    fetcher = {"env": [{"name": "FOUNDRY_FETCH_TERMINATION_LOG", "value": TERMINATION_LOG}]}
    assert "FOUNDRY_FETCH_TERMINATION_LOG" not in workload(tmp_path)._env(fetcher, agent.fetch_env)
