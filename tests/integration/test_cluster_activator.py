"""`foundry-inference activator` (the activator pod's container) as a process against the real kube-apiserver and
kube-controller-manager, under a token of the chart's `inference-activator` account: it checks the key before
anything starts, wakes the Deployment through its scale subresource, holds the request until the replicas Service's
/ready answers, forwards it over HTTPS verifying the deployment's certificate, and answers held requests 429 beyond
its bounds and 503 with the cause when the ModelDeployment goes to Error. The replica is a loopback HTTPS server with
a certificate from the operator's own CA code (the test plays the kubelet and kube-proxy: there is no pod here)."""
import concurrent.futures
import json
import ssl
import threading
import time
import uuid

import pytest
import requests
import tornado.httpserver
import tornado.ioloop
import tornado.web

from foundry_inference.operator.builders import tls
from foundry_inference.operator.status import now_utc
from tests.support import helm
from tests.support.procs import Cli, free_port, wait_http
from tests.unit.operator.factories import mdep

from .test_cluster_autoscaler import deployment
from .test_operator_reconcile import wait_for

pytestmark = pytest.mark.integration
KEY = "k" * 32


class Replica:
    """A model replica behind the replicas Service: HTTPS with a certificate for the main Service's name; records
    the credentials it was sent (the model server checks them again)."""

    def __init__(self, cert, key, tmp_path):
        (tmp_path / "r.crt").write_bytes(cert)
        (tmp_path / "r.key").write_bytes(key)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(tmp_path / "r.crt", tmp_path / "r.key")
        self.port = free_port()
        self.seen = []
        self.drop = 0            # requests to drop (the connection closed unanswered: a replica going away)
        self.loop = None

    def start(self):
        started = threading.Event()
        replica = self

        class Ready(tornado.web.RequestHandler):
            def get(self):
                self.finish({"status": "ready"})

        class Score(tornado.web.RequestHandler):
            def post(self):
                if replica.drop:
                    replica.drop -= 1
                    self.request.connection.stream.close()
                    return
                replica.seen.append(self.request.headers.get("api-key"))
                self.finish({"predictions": [json.loads(self.request.body)["input"]]})

        def run():
            self.loop = tornado.ioloop.IOLoop(make_current=False)

            def listen():
                app = tornado.web.Application([(r"/ready", Ready), (r"/score", Score)])
                tornado.httpserver.HTTPServer(app, ssl_options=self.context).listen(self.port, "127.0.0.1")
                started.set()
            self.loop.add_callback(listen)
            self.loop.start()

        threading.Thread(target=run, daemon=True).start()
        started.wait(10)

    def stop(self):
        if self.loop is not None:
            self.loop.add_callback(self.loop.stop)


@pytest.fixture
def env(kube, kube_store, tmp_path):
    ns = kube.create_namespace(f"act-{uuid.uuid4().hex[:8]}")
    helm.server_side_apply(kube.api_client(), [o for o in helm.render({"watch": {"namespaces": [ns]}}).objects
                                               if o["metadata"]["name"] == "inference-activator"])
    kube_store.create(deployment("iris", ns, {"app": "iris"}, 0))
    kube_store.create(mdep("iris", ns, workloadType="predictive", port=8000,
                           autoscaling={"minReplicas": 0, "maxReplicas": 2}))
    now = now_utc()
    ca_cert, ca_key = tls.generate_ca(now)
    cert, key = tls.issue(ca_cert, ca_key, tls.service_dns_names("iris", ns), now)
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "primary-key").write_text(KEY)
    yield ns, kube_store, Replica(cert, key, tmp_path), tmp_path
    kube_store.delete("ModelDeployment", ns, "iris")


def start_activator(kube, ns, tmp_path, replica, **extra):
    port = free_port()
    environ = {"PORT": str(port), "FOUNDRY_DEPLOYMENT_NAME": "iris", "FOUNDRY_DEPLOYMENT_NAMESPACE": ns,
               "FOUNDRY_AUTH_MODE": "api-key", "FOUNDRY_API_KEYS_DIR": str(tmp_path / "keys"),
               "FOUNDRY_SERVICE_HOST": f"iris.{ns}.svc", "FOUNDRY_REPLICAS_ADDRESS": "127.0.0.1",
               "FOUNDRY_REPLICAS_PORT": str(replica.port), "FOUNDRY_CA_FILE": str(tmp_path / "ca.crt"),
               "FOUNDRY_HOLD_TIMEOUT_S": "30", **extra}
    cli = Cli("activator", "--kubeconfig", helm.sa_kubeconfig(kube, ns, "inference-activator"), env=environ,
              log_path=tmp_path / f"activator-{port}.log")
    wait_http(f"http://127.0.0.1:{port}/ready", proc=cli.proc)
    return cli, f"http://127.0.0.1:{port}"


def replicas(store, ns):
    return store.get("Deployment", ns, "iris")["spec"]["replicas"]


def test_a_keyed_request_wakes_the_deployment_and_is_answered_by_the_replica(env, kube):
    ns, store, replica, tmp_path = env
    cli, url = start_activator(kube, ns, tmp_path, replica)
    try:
        bad = requests.post(f"{url}/score", json={"input": [1, 2, 3, 4]}, headers={"api-key": "wrong" * 8},
                            timeout=10)
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_api_key"
        assert requests.post(f"{url}/score", json={"input": [1]}, timeout=10).status_code == 401
        assert replicas(store, ns) == 0                       # no credentials, nothing started
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(requests.post, f"{url}/score", json={"input": [5, 6]}, headers={"api-key": KEY},
                               timeout=60)
            wait_for(lambda: replicas(store, ns) == 1, 20, "the activator's wake through the scale subresource")
            assert not held.done()                            # held while no replica is ready
            replica.start()                                   # the pod turns ready; kube-proxy routes to it
            answer = held.result(60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [[5, 6]]}
        assert replica.seen == [KEY]                          # credentials kept: the model server checks them again
        # a replica is ready now: the next request is forwarded at once, without another wake
        assert requests.post(f"{url}/score", json={"input": [7]}, headers={"api-key": KEY},
                             timeout=10).json() == {"predictions": [[7]]}
        assert requests.get(f"{url}/ready", timeout=5).status_code == 200       # a probe never wakes
    finally:
        replica.stop()
        assert cli.stop() == 0, cli.log()


def test_a_request_held_as_the_last_replica_goes_wakes_the_deployment_again(env, kube):
    """The request reached the activator in the instant between the autoscaler's switch of the Service and its
    replicas-0 write: its wake found a replica (nothing to do), which then went. It must not wait out its hold."""
    ns, store, replica, tmp_path = env
    store.patch_scale("Deployment", ns, "iris", 1)               # the last replica, about to go
    cli, url = start_activator(kube, ns, tmp_path, replica)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(requests.post, f"{url}/score", json={"input": [3]}, headers={"api-key": KEY},
                               timeout=60)
            time.sleep(2)                      # it reached the activator (a loopback hop) and found the replica
            assert not held.done() and "waking" not in cli.log()
            store.patch_scale("Deployment", ns, "iris", 0)           # the autoscaler's replicas-0 write
            wait_for(lambda: replicas(store, ns) == 1, 10, "the held request's wake, asked again")
            replica.start()
            answer = held.result(60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [[3]]}
    finally:
        replica.stop()
        assert cli.stop() == 0, cli.log()


def test_a_request_sent_to_a_replica_that_went_is_held_and_woken_again_not_answered_502(env, kube):
    """At zero, the route through `<name>-replicas` to the replica that was just removed can outlive it for a moment:
    the request finds it "ready", is sent there and is not answered. It is held, the deployment woken, and it is
    answered by the next replica, not 502."""
    ns, store, replica, tmp_path = env
    replica.start()                                          # /ready answers: a route to the replica that goes
    replica.drop = 1
    cli, url = start_activator(kube, ns, tmp_path, replica)
    try:
        answer = requests.post(f"{url}/score", json={"input": [9]}, headers={"api-key": KEY}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [[9]]}
        assert replicas(store, ns) == 1                      # the retry woke the deployment
        assert "held again" in cli.log()
    finally:
        replica.stop()
        assert cli.stop() == 0, cli.log()


def test_held_requests_are_bounded_and_answered_503_with_the_cause_when_the_model_cannot_start(env, kube):
    ns, store, replica, tmp_path = env
    cli, url = start_activator(kube, ns, tmp_path, replica, FOUNDRY_MAX_HELD_REQUESTS="1")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(requests.post, f"{url}/score", json={"input": [1]}, headers={"api-key": KEY},
                               timeout=60)
            wait_for(lambda: replicas(store, ns) == 1, 20, "the wake")
            over = requests.post(f"{url}/score", json={"input": [2]}, headers={"api-key": KEY}, timeout=10)
            assert over.status_code == 429 and over.headers["Retry-After"] == "2"
            assert "wait for this deployment to start" in over.json()["error"]
            store.patch_status("ModelDeployment", ns, "iris", {
                "state": "Error", "message": "model-fetcher: failed: the registry answered 404 for models/iris:v9"})
            answer = held.result(30)
        assert answer.status_code == 503, answer.text
        assert "the registry answered 404 for models/iris:v9" in answer.text
        assert replica.seen == []
    finally:
        assert cli.stop() == 0, cli.log()


def test_attack_a_replica_without_the_deployments_certificate_never_gets_the_request(env, kube):
    """Something else answering at the replicas address (a pod that took the Service's labels, a spoofed address)
    has no certificate of the deployment's CA: the activator never sends it the request or the caller's key."""
    ns, store, replica, tmp_path = env
    now = now_utc()
    other_ca, other_key = tls.generate_ca(now, common_name="someone else")
    impostor = Replica(*tls.issue(other_ca, other_key, tls.service_dns_names("iris", ns), now), tmp_path)
    impostor.port = replica.port
    cli, url = start_activator(kube, ns, tmp_path, impostor, FOUNDRY_HOLD_TIMEOUT_S="3")
    try:
        impostor.start()
        answer = requests.post(f"{url}/score", json={"input": [1]}, headers={"api-key": KEY}, timeout=30)
        assert answer.status_code == 429 and "no replica was ready within 3 s" in answer.text
        assert impostor.seen == []
    finally:
        impostor.stop()
        assert cli.stop() == 0, cli.log()


def test_the_replica_certificate_must_name_the_main_service(env, kube):
    """The certificate is checked under the main Service's name: one of the right CA for another name is refused."""
    ns, store, replica, tmp_path = env
    cli, url = start_activator(kube, ns, tmp_path, replica, FOUNDRY_SERVICE_HOST=f"other.{ns}.svc",
                               FOUNDRY_HOLD_TIMEOUT_S="3")
    try:
        replica.start()
        answer = requests.post(f"{url}/score", json={"input": [1]}, headers={"api-key": KEY}, timeout=30)
        assert answer.status_code == 429 and replica.seen == []
    finally:
        replica.stop()
        assert cli.stop() == 0, cli.log()
