"""The Helm install on a real single-node Kubernetes (tests/kube/cluster.py: kubelet, containerd, kube-proxy...)
with the images built from docker/: the platform's pods come up by their own probes and serve models end to end.

Everything a user sees is reached inside the cluster's network namespace, through the Services (kube-proxy), with
TLS verified against the install's CA. The tests of this module run in order on one cluster and one release.
Needs root, the cluster's tools (scripts/setup.sh --test) and the Kubernetes binaries (tests/kube/build-kube.sh);
without them this module skips on a developer machine and fails under CI (tests/support/require.py).
"""
import base64
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import require

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(1800)]

NS = "foundry-local-operator"
RELEASE = "foundry-inference"
NUMBERS = {}          # measured durations, printed at the end of the module (docs/benchmarks.md)


def _prerequisites():
    if os.geteuid() != 0:
        require.unavailable("the real cluster needs root (network namespace, containers, cgroups)", topic="kube")
    from tests.kube import cluster
    for tool in (*cluster.TOOLS, "buildah", "debootstrap"):
        require.require_tool(tool, "bash scripts/setup.sh --test", topic="kube")


@pytest.fixture(scope="module")
def node():
    _prerequisites()
    from tests.kube.cluster import Cluster
    state = Path(tempfile.mkdtemp(prefix="fic-", dir="/tmp"))
    cluster = Cluster(state)
    started = time.monotonic()
    try:
        info = cluster.up()
    except BaseException:
        cluster.stop()
        raise
    NUMBERS["cluster up (s)"] = round(time.monotonic() - started, 1)
    for name, image in info["images"].items():
        NUMBERS[f"image {name} (MB)"] = round(image["bytes"] / 1e6, 1)
    cluster.info_dict = info
    yield cluster
    print("\ncluster numbers: " + json.dumps(NUMBERS), flush=True)
    if os.environ.get("FOUNDRY_KEEP_CLUSTER") == "1":       # debugging: leave it up, `cluster.py down` removes it
        print(f"cluster kept: {json.dumps(info)}", flush=True)
        return
    cluster.stop()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def net(node):
    from tests.kube.client import NetnsClient
    return NetnsClient(node.info_dict)


@pytest.fixture(scope="module")
def core(node):
    import kubernetes
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(node.info_dict["kubeconfig"]))


def _live(node):
    """Fail at once, naming the component, when a process of the cluster died (never hang on a dead kubelet)."""
    dead = node.health()
    if dead:
        logs = "\n".join(f"--- {name}:\n" + node.log_tail(name) for name in dead)
        pytest.fail(f"cluster component(s) died: {', '.join(dead)}\n{logs}", pytrace=False)


def wait_for(node, predicate, timeout, what, interval=0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        _live(node)
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - "not yet", reported on timeout
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pods_ready(core, namespace, selector=None):
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return pods and all(any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
                        for p in pods) and pods


@pytest.fixture(scope="module")
def release(node, core):
    """The chart installed by the Helm SDK with the local-images values; the platform's pods Ready."""
    import yaml

    from tests.support import helm
    info = node.info_dict
    try:
        core.create_namespace({"metadata": {"name": NS}})
    except Exception:  # noqa: BLE001 - already there
        pass
    values = yaml.safe_load(Path(info["values"]).read_text())
    started = time.monotonic()
    helm.install(info["kubeconfig"], values, release=RELEASE, namespace=NS, timeout=300)
    pods = wait_for(node, lambda: pods_ready(core, NS), 300, "the operator and control-plane pods to be Ready")
    NUMBERS["helm install -> platform pods Ready (s)"] = round(time.monotonic() - started, 1)
    yield {"values": values, "installed": started, "pods": [p.metadata.name for p in pods]}


@pytest.fixture(scope="module")
def platform(node, core, net, release):
    from tests.e2e.quickstart_walkthrough import Platform

    class ClusterPlatform(Platform):
        def __init__(self, url, admin_key, ca):
            import requests
            self.url, self._ca = url, ca
            self.admin = requests.Session()
            self.admin.headers["Authorization"] = f"Bearer {admin_key}"

        @property
        def ca(self):
            return self._ca

    secret = core.read_namespaced_secret("inference-operator-admin-key", NS)
    admin_key = base64.b64decode(secret.data["admin-key"]).decode()
    service = core.read_namespaced_service("inference-operator-api", NS)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
    ca_dir = Path(tempfile.mkdtemp(prefix="fic-ca-"))

    def ca_path():
        ca = core.read_namespaced_secret("foundry-inference-ca", NS)
        (ca_dir / "ca.crt").write_bytes(base64.b64decode(ca.data["tls.crt"]))
        return str(ca_dir / "ca.crt")
    plat = ClusterPlatform(url, admin_key, None)
    plat.ca_path = ca_path
    return plat


def pod_report(core, namespace=NS):
    out = []
    for pod in core.list_namespaced_pod(namespace).items:
        statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
        out.append(f"{pod.metadata.name} {pod.status.phase} " + "; ".join(
            f"{c.name}: ready={c.ready} restarts={c.restart_count} {c.state.to_dict()}" for c in statuses))
    return "\n".join(out)


def wait_state(node, core, net, platform, name, state, timeout, states=None):
    """Poll the deployment until `state`; an unexpected Error or a timeout fails with the status and the pods."""
    states = [] if states is None else states
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        _live(node)
        status = net.call(platform.deployment, name, NS)["status"]
        if not states or states[-1] != status["state"]:
            states.append(status["state"])
        if status["state"] == state:
            return status
        if status["state"] == "Error" and state != "Error":
            break
        time.sleep(0.5)
    pytest.fail(f"{name} did not reach {state} (states {states}); status: {json.dumps(status)[:2000]}\n"
                f"pods:\n{pod_report(core)}", pytrace=False)


def expose(core, net, namespace, endpoint):
    """Map the endpoint's Service name to its ClusterIP for the namespace's threads; returns the endpoint."""
    host = endpoint.split("://", 1)[1].split("/", 1)[0].split(":")[0]
    service, svc_ns = host.split(".")[:2]
    net.hosts[host] = core.read_namespaced_service(service, svc_ns).spec.cluster_ip
    return endpoint


# --- 1. the platform's pods ---------------------------------------------------------------------------------------
def test_platform_pods_become_ready_by_their_probes(node, core, release):
    pods = core.list_namespaced_pod(NS).items
    names = sorted(p.metadata.labels.get("app.kubernetes.io/component", p.metadata.name) for p in pods)
    assert len(pods) == 2, names
    for pod in pods:
        assert pod.status.phase == "Running"
        assert all(c.ready and c.restart_count == 0 for c in pod.status.container_statuses), pod.status
        container = pod.spec.containers[0]
        assert container.readiness_probe is not None and container.image.startswith("localhost/foundry-inference/")


# --- 2 + 3. iris: Creating -> Running by itself, predict over TLS with both keys ------------------------------------
def test_iris_runs_by_itself_and_predicts_over_tls(node, core, net, platform, release):
    started = time.monotonic()
    created = net.call(platform.deploy, "iris", {"catalog": {"name": "iris-classifier"}}, namespace=NS)
    assert created["status"]["state"] in ("Creating", "Pending", None) or created
    states = []

    status = wait_state(node, core, net, platform, "iris", "Running", 300, states)
    NUMBERS["iris create -> Running (s)"] = round(time.monotonic() - started, 1)
    NUMBERS["helm install -> first predict (s)"] = None
    assert "Creating" in states, states

    pod = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=model-server").items[0]
    assert [c.name for c in pod.spec.init_containers] == ["model-fetcher"]
    assert {c.name for c in pod.spec.containers} == {"model-server", "tls-proxy"}
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0

    endpoint = expose(core, net, NS, status["internalEndpoint"])
    platform._ca = platform.ca_path()
    primary, secondary = net.call(platform.keys, "iris", NS)
    outputs = net.call(platform.predict, endpoint, primary)
    NUMBERS["helm install -> first predict (s)"] = round(time.monotonic() - release["installed"], 1)
    assert outputs["label_0"] == [0, 1, 2], outputs
    assert net.call(platform.predict, endpoint, secondary)["label_0"] == [0, 1, 2]
    no_key = net.call(platform.predict_raw, endpoint, None, [[5.1, 3.5, 1.4, 0.2]])
    assert no_key.status_code == 401, no_key.text
    assert no_key.json()["error"]["code"], no_key.text
