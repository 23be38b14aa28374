"""The autoscaler loop over the embedded store, reading real HTTP metrics endpoints on loopback: load scales up and
the decision lands on the Deployment (replicas + last-scaling); a metrics source that disappears holds the count
(never down, never to zero); a wake-up from zero is written at once and kicks the agent.

The workload is a small stand-in for the node agent's (the loop only reads its identity, parameters, replica count
and metrics URLs); the store and the metrics servers are real."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from foundry_inference.operator import names
from foundry_inference.operator.autoscale.scaler import Scaler

from .test_autoscale_policy import params

pytestmark = pytest.mark.unit


class Metrics:
    """A loopback /metrics endpoint serving the chat server's gauges with the value we set."""

    def __init__(self):
        self.value, self.answered = 0.0, 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = (f"# TYPE foundry_chat_running_sequences gauge\nfoundry_chat_running_sequences {owner.value}\n"
                        f"# TYPE foundry_chat_requests_total counter\nfoundry_chat_requests_total {owner.answered}\n")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def setup(embedded_store):
    embedded_store.create({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "chat", "namespace": "ns"},
                           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                                        {"name": "c", "image": "i"}]}}}})
    metrics = Metrics()
    workload = SimpleNamespace(uid="u1", namespace="ns", name="chat", replicas=1, activator_port=9,
                               scaling=params(min_replicas=0, max_replicas=4, target_concurrency=1,
                                              scale_down_delay_s=2.0, scale_to_zero_after_s=3.0, period_s=1.0,
                                              stable_window_s=4.0, panic_window_s=1.0))
    workload.metrics_urls = lambda: [metrics.url] * workload.replicas
    clock = [0.0]
    kicks = []
    scaler = Scaler(embedded_store, lambda: [workload], lambda: kicks.append(1), clock=lambda: clock[0])
    yield embedded_store, metrics, workload, scaler, clock, kicks
    metrics.close()


def steps(scaler, clock, seconds):
    for _ in range(int(seconds)):
        clock[0] += 1.0
        scaler.step()


def test_load_scales_up_and_the_decision_lands_on_the_deployment(setup):
    store, metrics, workload, scaler, clock, _kicks = setup
    metrics.value = 3.0                               # 3 sequences on the one replica (x3 the target: panic)
    steps(scaler, clock, 3)
    dep = store.get("Deployment", "ns", "chat")
    assert dep["spec"]["replicas"] == workload.replicas >= 3
    decision = json.loads(dep["metadata"]["annotations"][names.LAST_SCALING])
    assert decision["replicas"] == workload.replicas and "target 1 per replica" in decision["reason"]


def test_a_lost_metrics_source_holds_the_count(setup):
    store, metrics, workload, scaler, clock, _kicks = setup
    metrics.value = 2.0
    steps(scaler, clock, 6)
    held = workload.replicas
    assert held >= 2
    metrics.close()                                    # the source is gone: every read fails
    steps(scaler, clock, 60)
    assert workload.replicas == held and store.get("Deployment", "ns", "chat")["spec"]["replicas"] == held


def test_idle_goes_to_zero_and_a_wake_up_comes_back_at_once(setup):
    store, metrics, workload, scaler, clock, kicks = setup
    workload.activator_port = None                      # nothing could answer at zero: it stays at one
    steps(scaler, clock, 6)
    assert workload.replicas == 1
    workload.activator_port = 9
    steps(scaler, clock, 1)
    assert workload.replicas == 0 and store.get("Deployment", "ns", "chat")["spec"]["replicas"] == 0
    scaler.wake(workload)
    assert store.get("Deployment", "ns", "chat")["spec"]["replicas"] == 1 and kicks
    decision = json.loads(store.get("Deployment", "ns", "chat")["metadata"]["annotations"][names.LAST_SCALING])
    assert decision["reason"] == "a request arrived while scaled to zero"
    steps(scaler, clock, 2)                             # the wake-up counts as activity: not straight back to zero
    assert workload.replicas == 1


def test_after_a_burst_an_idle_deployment_that_cannot_go_to_zero_comes_down_to_one(setup):
    """The zero decision can come before any scale-down (scaleToZeroAfterSeconds below the stable window); without
    an activator the deployment must still come down to one replica, not keep its burst count for good."""
    store, metrics, workload, scaler, clock, _kicks = setup
    workload.activator_port = None
    metrics.value = 3.0
    steps(scaler, clock, 3)
    assert workload.replicas >= 3
    metrics.value = 0.0
    steps(scaler, clock, 30)
    assert workload.replicas == 1 and store.get("Deployment", "ns", "chat")["spec"]["replicas"] == 1
