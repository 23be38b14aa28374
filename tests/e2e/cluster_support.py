"""What the cluster tests share (tests/e2e/test_cluster*.py): the release's names, the measured numbers, waiting on
the node with a clear failure when one of its components died, and the steps several tests take (push to the
cluster's registry, upgrade the operator, read what a fetcher pulled). The fixtures are in tests/e2e/conftest.py."""
import contextlib
import json
import os
import subprocess
import time

import pytest

from tests.support import require

NS = "foundry-local-operator"
RELEASE = "foundry-inference"
NUMBERS = {}          # measured durations, printed at the end of the module (docs/benchmarks.md)


def prerequisites():
    if os.geteuid() != 0:
        require.unavailable("the real cluster needs root (network namespace, containers, cgroups)", topic="kube")
    from tests.kube import cluster
    for tool in (*cluster.TOOLS, "buildah", "debootstrap"):
        require.require_tool(tool, "bash scripts/setup.sh --test", topic="kube")


def live(node):
    """Fail at once, naming the component, when a process of the cluster died (never hang on a dead kubelet)."""
    dead = node.health()
    if dead:
        logs = "\n".join(f"--- {name}:\n" + node.log_tail(name) for name in dead)
        pytest.fail(f"cluster component(s) died: {', '.join(dead)}\n{logs}", pytrace=False)


def wait_for(node, predicate, timeout, what, interval=0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        live(node)
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
        live(node)
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


PLATFORM_PODS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component in (operator,control-plane)"


def platform_rolled_out(core):
    """The release's operator and control plane both rolled out: each Deployment's pods are of its current template
    and Ready, and no pod of an older one is left (terminating included). Then the control plane's Service reaches
    only the current pods."""
    import kubernetes
    apps = kubernetes.client.AppsV1Api(core.api_client)
    for dep in apps.list_namespaced_deployment(NS, label_selector=PLATFORM_PODS).items:
        st, want = dep.status, dep.spec.replicas
        if (st.observed_generation or 0) < dep.metadata.generation or not (
                st.updated_replicas == st.ready_replicas == st.replicas == want):
            return False
    pods = core.list_namespaced_pod(NS, label_selector=PLATFORM_PODS).items
    return len(pods) == 2 and not any(p.metadata.deletion_timestamp for p in pods) and pods_ready(
        core, NS, PLATFORM_PODS)


def upgrade_operator(node, core, values):
    """helm upgrade; returns once the operator runs in a new pod (its configuration changed) and the platform has
    rolled out (the control plane too, when the values changed its settings)."""
    from tests.support import helm
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
    before = {p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=selector).items}
    helm.upgrade(node.info_dict["kubeconfig"], values, release=RELEASE, namespace=NS, timeout=300)

    def replaced():
        pods = core.list_namespaced_pod(NS, label_selector=selector).items
        return (len(pods) == 1 and pods[0].metadata.name not in before and platform_rolled_out(core))
    wait_for(node, replaced, 300, "the operator to run in a new pod after the upgrade, the platform rolled out")


@contextlib.contextmanager
def answered_throughout(net, platform, interval=0.05):
    """Calls the control plane through its Service (a keyed list, each on a fresh connection: a new kube-proxy
    choice every time) every `interval` s while the block runs, in the cluster's network namespace. Yields a dict:
    'answered' (200s) and 'failed' (anything else: a status, a reset, a connect timeout of 3 s)."""
    import threading

    import requests
    seen, stop = {"answered": 0, "failed": []}, threading.Event()
    url = f"{platform.url}/api/v1/namespaces/{NS}/deployments"
    headers = dict(platform.admin.headers)

    def poll():
        while not stop.is_set():
            started = time.monotonic()
            try:
                with requests.Session() as fresh:
                    got = fresh.get(url, headers=headers, timeout=(3, 10))
                if got.status_code == 200:
                    seen["answered"] += 1
                else:
                    seen["failed"].append(f"{got.status_code} {got.text[:200]}")
            except requests.RequestException as exc:
                seen["failed"].append(f"{type(exc).__name__} after {time.monotonic() - started:.1f} s: {exc}")
            stop.wait(interval)
    poller = threading.Thread(target=net.call, args=(poll,), daemon=True)
    poller.start()
    try:
        yield seen
    finally:
        stop.set()
        poller.join(30)


def push(node, *args):
    """`foundry-inference models push ...` from inside the cluster's network, trusting the registry's CA."""
    from tests.support.procs import CLI
    done = subprocess.run(node.ns(CLI, "models", "push", *args, "--ca-file", node.info_dict["registry_ca"]),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def fetched_from(core, name):
    """The artifact the deployment's fetcher pulled (its environment) and its registry CAs; the fetcher finished.
    (Its log is not asserted on: the kubelet may have collected the exited init container's log by then.)"""
    pod = core.list_namespaced_pod(NS, label_selector=f"foundry.azure.com/deployment={name}").items[0]
    fetcher = pod.status.init_container_statuses[0]
    assert fetcher.state.terminated and fetcher.state.terminated.exit_code == 0, pod_report(core)
    env = {e.name: e.value for e in pod.spec.init_containers[0].env}
    return json.loads(env["FOUNDRY_FETCH_ARTIFACT"]), json.loads(env.get("FOUNDRY_REGISTRY_CAS") or "{}"), env


STORE_CLASS = "foundry-e2e-models"      # the storage class of the cache volumes the tests provide (no provisioner)
STORE_LABEL = "foundry.azure.com/store-model"


@contextlib.contextmanager
def cache_volume(node, core, name, size="1Gi", count=3):
    """`count` hostPath PersistentVolumes of STORE_CLASS in the node's state directory, writable by the pods' uid
    (65532): one for the test's StoreModel and spares for the others that turning the cache on makes (every
    deployment of the namespace then uses one, e.g. an earlier module's iris). Deleted afterwards (a bound one goes
    with its claim). Yields {volume name: its folder}."""
    from pathlib import Path
    volumes = {}
    try:
        for i in range(count):
            path = Path(node.info_dict["state"]) / f"{name}-{i}"
            path.mkdir(exist_ok=True)
            os.chown(path, 65532, 65532)
            core.create_persistent_volume({"metadata": {"name": f"{name}-{i}"}, "spec": {
                "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": STORE_CLASS,
                "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"}}})
            volumes[f"{name}-{i}"] = path
        yield volumes
    finally:
        for volume in volumes:
            core.delete_persistent_volume(volume)


def cache_values(values, size="1Gi"):
    """Release values with the model cache on, on the tests' cache volumes."""
    import copy
    values = copy.deepcopy(values)
    values["storeModel"] = {**values.get("storeModel", {}), "enabled": True, "storageClassName": STORE_CLASS,
                            "volumeSize": size}
    return values


def store_models(node, model):
    """The StoreModels whose spec.modelName is `model` (other deployments of the namespace have their own)."""
    import kubernetes
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(node.info_dict["kubeconfig"]))
    return [s for s in api.list_namespaced_custom_object("foundrylocal.azure.com", "v1", NS, "storemodels")["items"]
            if s["spec"]["modelName"] == model]


@contextlib.contextmanager
def deleted_after(net, platform, name):
    """Delete the deployment whatever happens: a leftover would hold up the later tests of the module."""
    try:
        yield
    finally:
        net.call(platform.delete, name, NS)


CHILD_KINDS = [("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Secret"), ("v1", "ConfigMap"),
               ("networking.k8s.io/v1", "Ingress"), ("v1", "Pod"), ("apps/v1", "ReplicaSet")]


def children(node, name):
    import kubernetes

    from tests.support import helm
    api = kubernetes.config.new_client_from_config(node.info_dict["kubeconfig"])
    return helm.labelled(api, f"foundry.azure.com/deployment={name}", CHILD_KINDS)


def stream_chat(platform, endpoint, key, model, content="Say hello.", max_tokens=16):
    """A streamed chat completion with the official openai client (call it through `net.call`): the text pieces."""
    client = platform.openai_client(endpoint, key)
    stream = client.chat.completions.create(model=model, stream=True, max_tokens=max_tokens,
                                            messages=[{"role": "user", "content": content}])
    return [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
