"""Embedded mode end to end: the operator and the node agent (run_embedded) on the embedded store turn a
ModelDeployment into real local processes - the model fetched from an OCI registry, a model server per replica, a
real nginx TLS sidecar - reachable over TLS verified with <data-dir>/tls/ca.crt, with API keys enforced, rotated and
scaled, and nothing left running after a delete or a shutdown.

The model server here is a stand-in (tests/unit/operator/stub_server.py, configured from the same environment as
the real servers), put in place of the predictive server's command.
"""
import base64
import json
import ssl
import threading
import time
import warnings
from pathlib import Path

import pytest
import requests

from foundry_inference.operator import names
from foundry_inference.operator.builders import deployment as deployment_builder
from foundry_inference.operator.main import run_embedded
from foundry_inference.store.embedded import EmbeddedStore
from tests.e2e.quickstart_walkthrough import processes_under
from tests.support.embedded_env import loopback_embedded
from tests.support.registry import DockerRegistry
from tests.support.require import require_module
from tests.unit.operator.factories import decoded, mdep, settings

pytestmark = [pytest.mark.integration,
              pytest.mark.usefixtures("nginx")]
STUB = str(Path(__file__).resolve().parents[1] / "unit" / "operator" / "stub_server.py")
NS = "team-a"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (requests.RequestException, OSError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """run_embedded in a thread on a fresh data dir; yields (store, data_dir, stop)."""
    monkeypatch.setattr(deployment_builder, "PREDICTIVE_COMMAND", ["python", STUB])
    monkeypatch.setenv("FOUNDRY_FETCH_ALLOW_PRIVATE", "1")     # the test registry lives on loopback
    monkeypatch.setenv("FOUNDRY_FETCH_INSECURE", "1")
    data = tmp_path / "data"
    store = EmbeddedStore.with_chart_crds(data / "store.db")
    stop = threading.Event()
    thread = threading.Thread(target=run_embedded, args=(store, data, stop, settings(NS)), daemon=True)
    thread.start()
    try:
        yield store, data, stop
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive()
        assert processes_under(data) == [], "processes outlived embedded mode"
        store.close()


class Registry:
    """Debian's docker-registry on loopback (htpasswd user/pass) holding one model pushed with oras."""

    def __init__(self, files=None, repository="models/iris", tag="v1"):
        self.files = files or {"model.onnx": b"onnx-bytes"}
        self.repository, self.tag = repository, tag
        self.server = DockerRegistry(username="user", password="pass")

    def __enter__(self):
        self.server.start()
        self.address = self.server.address
        self.server.push_model(self.files, repository=self.repository, tag=self.tag)
        return self

    def __exit__(self, *exc):
        self.server.stop()


def state(store, name):
    return (store.get("ModelDeployment", NS, name).get("status") or {}).get("state")


def byo(name, reg, **spec):
    return mdep(name, NS, workloadType="predictive", port=8000, model={"custom": {
        "registry": reg.address, "repository": reg.repository, "tag": reg.tag,
        "credentials": {"secretRef": {"name": "registry-creds"}}}}, **spec)


def creds(password="pass"):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "registry-creds", "namespace": NS},
            "stringData": {"username": "user", "password": password}}


def test_deployment_runs_behind_real_nginx_tls_with_keys_rotation_scale_and_clean_stop(embedded):
    store, data, stop = embedded
    with Registry(files={"model.onnx": b"onnx"}) as reg:
        store.create(creds())
        store.create(byo("iris", reg))
        wait_for(lambda: state(store, "iris") == "Running", 60, "Running")
        st = store.get("ModelDeployment", NS, "iris")["status"]
        endpoint = st["internalEndpoint"]
        assert endpoint.startswith("https://127.0.0.1:")
        ca = data / "tls" / "ca.crt"
        assert ca.exists()
        keys = store.get("Secret", NS, "iris-api-keys")
        primary, secondary = decoded(keys, "primary-key"), decoded(keys, "secondary-key")

        # a real TLS handshake, verified against the installation CA, TLS 1.2 or newer
        ctx = ssl.create_default_context(cafile=str(ca))
        import socket
        host, port = "127.0.0.1", int(endpoint.rsplit(":", 1)[1])
        with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) \
                as tls_sock:
            assert tls_sock.version() in ("TLSv1.2", "TLSv1.3")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
            old.set_ciphers("DEFAULT:@SECLEVEL=0")       # let this client really offer TLS 1.1
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
            with socket.create_connection((host, port), timeout=5) as raw, old.wrap_socket(raw):
                pass
        assert "no protocols available" not in str(refused.value)      # refused by nginx, not by this client

        assert requests.get(f"{endpoint}/v1/model", verify=str(ca), timeout=5).status_code == 401
        ok = requests.get(f"{endpoint}/v1/model", verify=str(ca), timeout=5,
                          headers={"Authorization": f"Bearer {primary}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["model_files"] == [".foundry-artifact", "model.onnx"]     # fetched like the init container
        assert ok.json()["model_id"] == f"{reg.address}/{reg.repository}:{reg.tag}"
        assert requests.get(f"{endpoint}/v1/model", verify=str(ca), timeout=5,
                            headers={"api-key": secondary}).status_code == 200

        # rotate the primary key the way the control plane does: the new one works within 5 s, the secondary stays
        rotated = "f" * 64
        store.patch("Secret", NS, "iris-api-keys", {"data": {"primary-key": base64.b64encode(rotated.encode())
                                                             .decode()}})
        wait_for(lambda: requests.get(f"{endpoint}/v1/model", verify=str(ca), timeout=5, headers={
            "Authorization": f"Bearer {rotated}"}).status_code == 200, 5, "rotated key accepted")
        assert requests.get(f"{endpoint}/v1/model", verify=str(ca), timeout=5,
                            headers={"Authorization": f"Bearer {primary}"}).status_code == 401
        assert requests.get(f"{endpoint}/v1/model", verify=str(ca), timeout=5,
                            headers={"api-key": secondary}).status_code == 200

        # scale out: two model-server processes behind the same nginx
        store.patch("ModelDeployment", NS, "iris", {"spec": {"replicas": 2}})
        wait_for(lambda: store.get("ModelDeployment", NS, "iris")["status"].get("readyReplicas") == 2
                 and state(store, "iris") == "Running", 30, "2 ready replicas")
        pids = {requests.get(f"{endpoint}/v1/model", verify=str(ca), timeout=5,
                             headers={"api-key": secondary}).json()["pid"] for _ in range(12)}
        assert len(pids) == 2

        # delete: its processes stop, its keys leave the disk
        workdir = data / "workloads" / NS / "iris"
        assert processes_under(workdir)
        store.delete("ModelDeployment", NS, "iris")
        wait_for(lambda: not processes_under(workdir) and not workdir.exists(), 20, "processes stopped")

        # one more, then shut the whole thing down (the fixture checks nothing outlives it)
        store.create(byo("again", reg))
        wait_for(lambda: state(store, "again") == "Running", 60, "second deployment Running")
        assert processes_under(data / "workloads" / NS / "again")


def test_fetch_failure_is_an_error_naming_the_cause_and_recovers_when_fixed(embedded):
    store, _data, _stop = embedded
    with Registry() as reg:
        store.create(creds(password="wrong"))
        store.create(byo("iris", reg))
        wait_for(lambda: state(store, "iris") == "Error", 30, "Error")
        message = store.get("ModelDeployment", NS, "iris")["status"]["message"]
        assert "model fetch failed" in message and "401" in message
        store.patch("Secret", NS, "registry-creds", {"stringData": {"password": "pass"}})
        wait_for(lambda: state(store, "iris") == "Running", 60, "recovered to Running")


def test_crashing_model_server_is_reported_as_error(embedded, monkeypatch):
    store, _data, _stop = embedded
    monkeypatch.setattr(deployment_builder, "PREDICTIVE_COMMAND", ["python", "-c", "import sys; print('boom "
                                                                                  "config'); sys.exit(3)"])
    with Registry() as reg:
        store.create(creds())
        store.create(byo("crash", reg))
        wait_for(lambda: state(store, "crash") == "Error", 40, "Error")
        message = store.get("ModelDeployment", NS, "crash")["status"]["message"]
        assert "keeps exiting" in message and "boom config" in message
        assert names.LOCAL_ENDPOINT


def test_operator_command_in_embedded_mode_reconciles_and_stops_on_sigterm(tmp_path):
    import signal

    from tests.support.procs import Cli

    data = tmp_path / "data"
    store = EmbeddedStore.with_chart_crds(data / "store.db")
    store.create(mdep("phi", "anywhere"))                     # embedded mode watches every namespace
    cli = Cli("operator", "--store", "embedded", "--data-dir", str(data), log_path=tmp_path / "operator.log",
              env={"FOUNDRY_OPERATOR_CONFIG": ""})
    try:
        # the sample catalog's Phi variants live in the Azure model registry, which tests cannot reach (conftest.py)
        wait_for(lambda: (store.get("ModelDeployment", "anywhere", "phi").get("status") or {}).get("state")
                 == "Error", 60, "status written by the operator process")
        status = store.get("ModelDeployment", "anywhere", "phi")["status"]
        assert "no model registry region answered" in status["message"]
        assert store.get("Secret", "anywhere", "phi-api-keys")
        assert (data / "tls" / "ca.crt").exists()
    finally:
        rc = cli.stop(signal.SIGTERM)
        store.close()
    assert rc == 0, cli.log()
    assert processes_under(data) == []


def test_real_predictive_server_behind_nginx_answers_a_prediction(tmp_path, monkeypatch):
    """No stand-in: the operator's own command line (`foundry-inference predictive-server`) runs the real predictive
    server on the fetched iris model, configured only by the environment the operator writes."""
    require_module("foundry_inference.apps.predictive.server")
    models = require_module("tests.support.models")
    built = models.iris_logreg()
    data, store = loopback_embedded(tmp_path, monkeypatch)
    stop = threading.Event()
    thread = threading.Thread(target=run_embedded, args=(store, data, stop, settings(NS)), daemon=True)
    with Registry(files={"iris.onnx": Path(built.path).read_bytes()}) as reg:
        thread.start()
        try:
            store.create(creds())
            store.create(byo("iris", reg))
            wait_for(lambda: state(store, "iris") == "Running", 90, "Running")
            st = store.get("ModelDeployment", NS, "iris")["status"]
            endpoint, ca = st["internalEndpoint"], str(data / "tls" / "ca.crt")
            key = decoded(store.get("Secret", NS, "iris-api-keys"), "primary-key")
            row = [float(v) for v in built.X[0]]
            body = {"items": [{"content_type": "application/json", "encoder": "base64",
                               "data": base64.b64encode(json.dumps([row]).encode()).decode()}]}
            assert requests.post(f"{endpoint}/v1/predict", json=body, verify=ca, timeout=10).status_code == 401
            resp = requests.post(f"{endpoint}/v1/predict", json=body, verify=ca, timeout=10,
                                 headers={"api-key": key})
            assert resp.status_code == 200, resp.text
            out = json.loads(base64.b64decode(resp.json()["items"][0]["data"]))
            assert int(out["label_0"][0]) == int(built.estimator.predict([row])[0])
            meta = requests.get(f"{endpoint}/v1/model", verify=ca, timeout=10, headers={"api-key": key}).json()
            assert meta["id"] == f"{reg.address}/{reg.repository}:{reg.tag}"
        finally:
            stop.set()
            thread.join(60)
            store.close()
    assert processes_under(data) == []
