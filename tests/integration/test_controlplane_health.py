"""Control plane health on the real apiserver: ready while connected, 503 in the contract's shape when not."""
import pytest
import yaml

from tests.support.procs import Cli, free_port, wait_http

pytestmark = pytest.mark.integration


def admin_env(tmp_path):
    key = tmp_path / "admin-key"
    key.write_text("fndry-admin-health-test\n")
    return {"FOUNDRY_AUTH_MODE": "api-key", "FOUNDRY_ADMIN_KEY_FILE": str(key)}


def test_readyz_reports_kubernetes_connected(kube, tmp_path):
    port = free_port()
    cli = Cli("control-plane", "--store", "kubernetes", "--kubeconfig", kube.kubeconfig, "--port", str(port),
              "--address", "127.0.0.1", log_path=tmp_path / "cp.log", env=admin_env(tmp_path))
    try:
        resp = wait_http(f"http://127.0.0.1:{port}/readyz", proc=cli.proc)
        assert resp.json() == {"status": "ready", "kubernetes": "connected"}
    finally:
        assert cli.stop() == 0, cli.log()


def test_readyz_is_503_when_the_apiserver_is_unreachable(kube, tmp_path):
    config = yaml.safe_load(open(kube.kubeconfig))
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(yaml.safe_dump(config))
    port = free_port()
    cli = Cli("control-plane", "--store", "kubernetes", "--kubeconfig", str(broken), "--port", str(port),
              "--address", "127.0.0.1", log_path=tmp_path / "cp.log", env=admin_env(tmp_path))
    try:
        assert wait_http(f"http://127.0.0.1:{port}/healthz", proc=cli.proc).json() == {"status": "healthy"}
        resp = wait_http(f"http://127.0.0.1:{port}/readyz", proc=cli.proc, status=503)
        body = resp.json()
        assert body["status"] == "not ready" and body["kubernetes"] == "disconnected" and body["error"]
    finally:
        cli.stop()


def test_missing_auth_configuration_is_a_clear_error_not_a_traceback(kube, tmp_path):
    cli = Cli("control-plane", "--store", "kubernetes", "--kubeconfig", kube.kubeconfig, "--port", str(free_port()),
              log_path=tmp_path / "cp.log", env={"FOUNDRY_AUTH_MODE": "api-key", "FOUNDRY_ADMIN_KEY_FILE": ""})
    assert cli.proc.wait(30) == 2
    log = cli.log()
    assert "configuration error" in log and "FOUNDRY_ADMIN_KEY_FILE" in log and "Traceback" not in log
