"""The operator's probe endpoints over real HTTP: ready after a good pass, not ready (but alive) while passes fail,
not alive once the loop stops turning."""
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from foundry_inference.operator import health
from foundry_inference.operator import main as operator_main
from foundry_inference.operator.settings import SettingsError
from foundry_inference.store.kube import KubernetesStore
from tests.support.procs import free_port
from tests.unit.operator.factories import new_operator

pytestmark = pytest.mark.unit


def wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def probes(server):
    base = f"http://127.0.0.1:{server.port}"
    return (requests.get(base + "/healthz", timeout=5), requests.get(base + "/readyz", timeout=5))


def test_ready_after_a_pass_and_stalled_once_the_loop_stops(embedded_store):
    op = new_operator(embedded_store, "apps")
    server = health.HealthServer(op, 0, "127.0.0.1", stall_s=1.0).start()
    stop = threading.Event()
    thread = threading.Thread(target=op.run, args=(stop,), daemon=True)
    try:
        live, ready = probes(server)
        assert live.status_code == 503 and ready.status_code == 503    # no loop yet
        thread.start()
        assert wait_for(lambda: probes(server)[1].status_code == 200)
        live, ready = probes(server)
        assert live.json()["status"] == "healthy" and ready.json()["status"] == "ready"
        assert ready.json()["passes"] >= 1 and ready.json()["error"] is None
        metrics = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
        found = {s.name: s.value for f in text_string_to_metric_families(metrics.text) for s in f.samples}
        assert found["foundry_operator_passes_total"] >= 1
        assert found["foundry_operator_pass_duration_seconds_count"] == found["foundry_operator_passes_total"]
        assert found["foundry_operator_pass_errors_total"] == 0
        stop.set()
        thread.join(10)
        assert wait_for(lambda: probes(server)[0].status_code == 503, timeout=5)
        live, ready = probes(server)
        assert live.json()["status"] == "stalled" and "no reconcile pass" in live.json()["error"]
        assert ready.status_code == 503
        assert requests.get(f"http://127.0.0.1:{server.port}/other", timeout=5).status_code == 404
    finally:
        stop.set()
        server.stop()
        op.close()


def test_an_unreachable_apiserver_makes_it_unready_but_alive(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{free_port()}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    op = new_operator(KubernetesStore(kubeconfig=str(kubeconfig), timeout=(1, 2)), "apps")
    server = health.HealthServer(op, 0, "127.0.0.1", stall_s=60).start()
    stop = threading.Event()
    thread = threading.Thread(target=op.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: op.last_error is not None)
        live, ready = probes(server)
        assert live.status_code == 200
        assert ready.status_code == 503 and "unreachable" in ready.json()["error"].lower()
        errors = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        assert "foundry_operator_pass_errors_total 0.0" not in errors and "foundry_operator_pass_errors_total" in errors
    finally:
        stop.set()
        thread.join(10)
        server.stop()
        op.close()


@pytest.mark.parametrize("value", ["http", "-1", "70000"])
def test_a_bad_health_port_is_a_configuration_error(monkeypatch, embedded_store, value):
    monkeypatch.setenv("FOUNDRY_OPERATOR_HEALTH_PORT", value)
    with pytest.raises(SettingsError, match="FOUNDRY_OPERATOR_HEALTH_PORT"):
        operator_main._probes(new_operator(embedded_store, "apps"))


def test_the_stall_limit_follows_the_poll_interval(embedded_store):
    assert health.stall_limit(new_operator(embedded_store, "apps").settings) == health.MIN_STALL_S
    slow = new_operator(embedded_store, "apps", pollIntervalSeconds=60)
    assert health.stall_limit(slow.settings) == 600


def test_a_busy_health_port_is_a_configuration_error(monkeypatch, embedded_store):
    import socket
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        monkeypatch.setenv("FOUNDRY_OPERATOR_HEALTH_PORT", str(taken.getsockname()[1]))
        with pytest.raises(SettingsError, match="cannot listen"):
            operator_main._probes(new_operator(embedded_store, "apps"))
