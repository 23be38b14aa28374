"""The Helm install on a real single-node Kubernetes (tests/kube/cluster.py: kubelet, containerd, kube-proxy...)
with the images built from docker/: the platform's pods come up by their own probes and serve models end to end.

Everything a user sees is reached inside the cluster's network namespace, through the Services (kube-proxy), with
TLS verified against the install's CA. The tests run in order on one cluster and one release (tests/e2e/conftest.py).
Needs root, the cluster's tools (scripts/setup.sh --test) and the Kubernetes binaries (tests/kube/build-kube.sh);
without them this module skips on a developer machine and fails under CI (tests/support/require.py).
"""
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.cluster_support import (
    CHILD_KINDS,
    NS,
    NUMBERS,
    RELEASE,
    answered_throughout,
    children,
    deleted_after,
    expose,
    fetched_from,
    live,
    platform_rolled_out,
    pods_ready,
    prerequisites,
    push,
    stream_chat,
    upgrade_operator,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(1800)]


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
    assert created["name"] == "iris", created
    states = []

    status = wait_state(node, core, net, platform, "iris", "Running", 300, states)
    NUMBERS["iris create -> Running (s)"] = round(time.monotonic() - started, 1)
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
    assert no_key.headers["content-type"].startswith("application/json"), no_key.text


# --- 4. the chat sample through the official openai client --------------------------------------------------------
def test_chat_sample_streams_through_the_openai_client(node, core, net, platform):
    started = time.monotonic()
    net.call(platform.deploy, "smollm2", {"catalog": {"name": "smollm2-135m-instruct"}}, namespace=NS)
    status = wait_state(node, core, net, platform, "smollm2", "Running", 600)
    NUMBERS["smollm2 create -> Running (s)"] = round(time.monotonic() - started, 1)
    endpoint = expose(core, net, NS, status["internalEndpoint"])
    key = net.call(platform.keys, "smollm2", NS)[0]
    pieces = net.call(stream_chat, platform, endpoint, key, "smollm2-135m-instruct",
                      "What is the capital of France?", 24)
    assert len(pieces) > 1 and "".join(pieces).strip(), pieces
    net.call(platform.delete, "smollm2", NS)


# --- 5. key rotation on the real kubelet ----------------------------------------------------------------------------
KEY_BOUND_S = 5.0       # FOUNDRY_KEY_PROPAGATION_S on a cluster: the rotate answer's effectiveAt promises this


def _rotate_and_time(node, net, platform, endpoint, which, samples=10):
    """Rotate `which`; seconds until the old key is refused (every one of `samples` requests, so that with several
    replicas behind kube-proxy each pod is asked), while the other key works throughout."""
    primary, secondary = net.call(platform.keys, "iris", NS)
    old, other = (primary, secondary) if which == "primary" else (secondary, primary)
    answer = net.call(platform.rotate, "iris", which, NS)
    started = time.monotonic()
    promised = (datetime.datetime.fromisoformat(answer["key"]["effectiveAt"].replace("Z", "+00:00"))
                - datetime.datetime.fromisoformat(answer["key"]["createdAt"].replace("Z", "+00:00")))
    assert promised.total_seconds() <= KEY_BOUND_S + 1, answer["key"]
    while True:
        live(node)
        assert net.call(platform.predict_raw, endpoint, other, [[5.1, 3.5, 1.4, 0.2]]).status_code == 200
        codes = [net.call(platform.predict_raw, endpoint, old, [[5.1, 3.5, 1.4, 0.2]]).status_code
                 for _ in range(samples)]
        elapsed = time.monotonic() - started
        if set(codes) == {401}:
            break
        assert set(codes) <= {200, 401}, codes
        assert elapsed < 60, f"the rotated-out {which} key still works after {elapsed:.1f} s"
        time.sleep(0.1)
    new = net.call(platform.keys, "iris", NS)[0 if which == "primary" else 1]
    assert net.call(platform.predict, endpoint, new)["label_0"] == [0, 1, 2]
    return round(elapsed, 1)


def test_rotated_key_is_refused_within_5_s_while_the_other_works(node, core, net, platform):
    """The operator annotates the pods that started before a rotation (woken by its watch on the keys Secrets); the
    pod update makes the kubelet refresh the Secret volume at once and the server's key-file reload does the rest.
    Measured over several rotations; each within the bound the rotate answer promises (effectiveAt)."""
    endpoint = expose(core, net, NS, net.call(platform.deployment, "iris", NS)["status"]["internalEndpoint"])
    times = [_rotate_and_time(node, net, platform, endpoint, which, samples=1)
             for which in ("primary", "secondary", "primary", "secondary")]
    NUMBERS["key rotation -> old key refused on the kubelet (s)"] = times
    assert max(times) < KEY_BOUND_S, times


# --- 6. scale to 2 (kube-proxy spreads), kill a model server (the kubelet restarts it) ------------------------------
def _sep_packets(node, service):
    """Packets kube-proxy's iptables rules sent to each endpoint of `service` (KUBE-SEP chains), by endpoint."""
    out = subprocess.run(node.ns("iptables-save", "-c", "-t", "nat"), capture_output=True, text=True,
                         check=True).stdout
    counts = {}
    for line in out.splitlines():
        if f"{NS}/{service}" in line and "-j DNAT" in line and line.startswith("["):
            packets = int(line[1:].split(":")[0])
            target = line.split("--to-destination ")[1].split()[0]
            counts[target] = counts.get(target, 0) + packets
    return counts


def test_two_replicas_both_serve_and_a_killed_server_is_restarted(node, core, net, platform):
    from tests.kube.node import kill_pod_processes_matching
    endpoint = expose(core, net, NS, net.call(platform.deployment, "iris", NS)["status"]["internalEndpoint"])
    key = net.call(platform.keys, "iris", NS)[1]
    net.call(platform.api, "PATCH", f"/namespaces/{NS}/deployments/iris", json={"replicas": 2})
    wait_state(node, core, net, platform, "iris", "Running", 300)
    selector = "app.kubernetes.io/component=model-server,foundry.azure.com/deployment=iris"
    pods = wait_for(node, lambda: (lambda p: len(p) == 2 and p)(pods_ready(core, NS, selector) or []), 120,
                    "two ready iris pods")

    def both_endpoints():
        subsets = core.read_namespaced_endpoints("iris", NS).subsets or []
        return sum(len(s.addresses or []) for s in subsets) == 2
    wait_for(node, both_endpoints, 60, "both pods in the Service's endpoints")
    wait_for(node, lambda: len(_sep_packets(node, "iris")) == 2, 60, "kube-proxy's rules for both endpoints")
    for _attempt in range(3):
        before = _sep_packets(node, "iris")
        for _ in range(40):      # a new connection each time: kube-proxy picks an endpoint per connection
            assert net.call(platform.predict_raw, endpoint, key, [[5.1, 3.5, 1.4, 0.2]]).status_code == 200
        after = _sep_packets(node, "iris")
        spread = {ep: after.get(ep, 0) - before.get(ep, 0) for ep in after}
        if set(after) == set(before) and all(n >= 0 for n in spread.values()):
            break               # else kube-proxy rewrote its rules in between (counters restart): measure again
    assert len(spread) == 2 and all(n > 0 for n in spread.values()), spread

    victim = pods[0]
    assert kill_pod_processes_matching(node, "predictive-server", victim.metadata.uid), "no model server process found"
    killed = time.monotonic()

    def restarted():
        pod = core.read_namespaced_pod(victim.metadata.name, NS)
        server = next(c for c in pod.status.container_statuses if c.name == "model-server")
        return server.restart_count >= 1 and server.ready and pod
    wait_for(node, restarted, 180, "the kubelet to restart the killed model server")
    NUMBERS["killed model server -> Ready again (s)"] = round(time.monotonic() - killed, 1)
    wait_for(node, both_endpoints, 60, "both pods back in the Service's endpoints")
    for _ in range(20):      # after the kill window: every request with a valid key succeeds
        assert net.call(platform.predict_raw, endpoint, key, [[5.1, 3.5, 1.4, 0.2]]).status_code == 200
    wait_state(node, core, net, platform, "iris", "Running", 120)


# --- 6 (status). restarts on the ModelDeployment; a rotation with two replicas -----------------------------------
def test_status_shows_the_restart_and_two_replicas_refuse_a_rotated_key(node, core, net, platform):
    def restart_condition():
        status = net.call(platform.deployment, "iris", NS)["status"]
        found = [c for c in status["conditions"] if c["type"] == "ModelServerRestarted"]
        return found and found[0]
    cond = wait_for(node, restart_condition, 60, "the ModelServerRestarted condition on iris")
    assert cond["status"] == "True" and cond["reason"] == "ProcessExited", cond
    print(f"\nrestart condition: {cond['message']}", flush=True)
    assert "model-server restarted 1 time(s), last exited with" in cond["message"], cond
    # the store's log read (how the operator follows a fetcher's progress) through the apiserver and the kubelet
    from foundry_inference.store.kube import KubernetesStore
    pod = core.list_namespaced_pod(NS, label_selector="foundry.azure.com/deployment=iris").items[0]
    store = KubernetesStore(kubeconfig=node.info_dict["kubeconfig"])
    try:
        assert "model-fetcher: " in store.pod_log(NS, pod.metadata.name, "model-fetcher")
    finally:
        store.close()
    endpoint = expose(core, net, NS, net.call(platform.deployment, "iris", NS)["status"]["internalEndpoint"])
    took = _rotate_and_time(node, net, platform, endpoint, "primary", samples=10)
    NUMBERS["key rotation, 2 replicas -> old key refused by both (s)"] = took
    assert took < KEY_BOUND_S, took


# --- 7. an unfetchable model and a missing image: Error with the cause, from the pods --------------------------------
def test_unfetchable_model_and_missing_image_are_errors_with_their_cause(node, core, net, platform, release):
    started = time.monotonic()
    net.call(platform.deploy, "unfetchable", {"custom": {"registry": "registry.example.com",
                                                          "repository": "models/none", "tag": "1"}},
             namespace=NS, workloadType="predictive")
    status = wait_state(node, core, net, platform, "unfetchable", "Error", 120)
    NUMBERS["unfetchable model -> Error (s)"] = round(time.monotonic() - started, 1)
    assert "model fetch failed" in status["message"] and "registry.example.com" in status["message"], status
    assert "progress deadline" not in status["message"], status
    print(f"\nunfetchable model: {status['message']}", flush=True)
    net.call(platform.delete, "unfetchable", NS)

    # the fetcher's image missing on the node (pull policy Never here: ErrImageNeverPull; from a registry the kubelet
    # reports ErrImagePull / ImagePullBackOff the same way)
    missing = "localhost/foundry-inference/no-such-image:0"
    values = json.loads(json.dumps(release["values"]))
    values["images"]["roles"]["model-fetcher"] = missing
    upgrade_operator(node, core, values)
    try:
        started = time.monotonic()
        net.call(platform.deploy, "noimage", {"catalog": {"name": "iris-classifier"}}, namespace=NS)
        status = wait_state(node, core, net, platform, "noimage", "Error", 180)
        NUMBERS["missing image -> Error (s)"] = round(time.monotonic() - started, 1)
        assert "ErrImageNeverPull" in status["message"] and missing in status["message"], status
        print(f"\nmissing image: {status['message']}", flush=True)
        net.call(platform.delete, "noimage", NS)
    finally:
        upgrade_operator(node, core, release["values"])


# --- bring-your-own from the cluster's registry, and the catalog mirror: https with the registry's own CA ------------
def test_byo_model_from_the_clusters_registry_over_tls(node, core, net, platform):
    """Pushed with `models push` to the cluster's registry (https, a CA of its own, a private address allow-listed
    by the values), deployed by its OCI reference through the control plane, answered through the Service."""
    from foundry_inference import samples
    registry = node.info_dict["registry"]
    out = push(node, str(samples.prepare("iris-classifier", progress=lambda m: None)), f"{registry}/byo/iris:v1")
    assert f"pushed {registry}/byo/iris:v1" in out, out
    started = time.monotonic()
    net.call(platform.deploy, "iris-byo", {"custom": {"registry": registry, "repository": "byo/iris", "tag": "v1"}},
             namespace=NS, workloadType="predictive")
    with deleted_after(net, platform, "iris-byo"):
        status = wait_state(node, core, net, platform, "iris-byo", "Running", 300)
        NUMBERS["BYO iris from the cluster's registry create -> Running (s)"] = round(time.monotonic() - started, 1)
        artifact, cas, _env = fetched_from(core, "iris-byo")
        assert artifact == {"type": "oci", "registry": registry, "repository": "byo/iris", "tag": "v1"}, artifact
        assert list(cas) == [registry], cas                     # the registry's own CA, for it alone
        endpoint = expose(core, net, NS, status["internalEndpoint"])
        platform._ca = platform.ca_path()
        key = net.call(platform.keys, "iris-byo", NS)[0]
        assert net.call(platform.predict, endpoint, key)["label_0"] == [0, 1, 2]


def test_catalog_model_from_the_mirror_registry_without_internet(node, core, net, platform, tmp_path):
    """An air-gapped cluster (no route out of the namespace): a Foundry catalog variant laid out as in a Foundry
    Local cache (the SmolLM2 ONNX GenAI folder under the qwen2.5-coder-0.5b cpu variant's name) is pushed with
    `models push --mirror`; deploying the catalog model pulls it from the mirror (catalog.mirror.registry)."""
    from tests.support import chat_models
    smollm2 = chat_models.require(chat_models.smollm2_model)
    registry = node.info_dict["registry"]
    name, version = "qwen2.5-coder-0.5b-instruct-generic-cpu", "4"
    shutil.copytree(smollm2, tmp_path / "foundry" / "Microsoft" / f"{name}-{version}" / f"v{version}")
    out = push(node, str(tmp_path / "foundry"), "--mirror", registry)
    uri = f"azureml://registries/azureml/models/{name}/versions/{version}"
    assert f"{uri} -> {registry}/foundry-models/azureml/{name}:{version}" in out, out
    started = time.monotonic()
    net.call(platform.deploy, "qwen-mirror", {"catalog": {"name": "qwen2.5-coder-0.5b"}}, namespace=NS)
    with deleted_after(net, platform, "qwen-mirror"):
        status = wait_state(node, core, net, platform, "qwen-mirror", "Running", 600)
        NUMBERS["catalog model from the mirror create -> Running (s)"] = round(time.monotonic() - started, 1)
        artifact, cas, env = fetched_from(core, "qwen-mirror")
        assert artifact == {"type": "oci", "registry": registry, "repository": f"foundry-models/azureml/{name}",
                            "tag": version, "mirrorOf": uri}, artifact
        assert list(cas) == [registry] and "FOUNDRY_AZUREML_REGISTRY_URL" not in env, env
        endpoint = expose(core, net, NS, status["internalEndpoint"])
        platform._ca = platform.ca_path()
        key = net.call(platform.keys, "qwen-mirror", NS)[0]
        pieces = net.call(stream_chat, platform, endpoint, key, "qwen2.5-coder-0.5b")
        assert len(pieces) > 1 and "".join(pieces).strip(), pieces


# --- 8. delete (garbage collector), helm upgrade (rolls the platform), helm uninstall (nothing left) ---------------
@pytest.mark.cluster_teardown
def test_delete_upgrade_and_uninstall_leave_nothing_behind(node, core, net, platform, release):
    import kubernetes

    from tests.support import helm
    info = node.info_dict
    assert children(node, "iris")
    net.call(platform.delete, "iris", NS)
    wait_for(node, lambda: net.call(platform.gone, "iris", NS), 120, "iris to be deleted")
    wait_for(node, lambda: not children(node, "iris"), 120, "every child of iris to be collected")

    before = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
    values = {**release["values"], "operator": {"logLevel": "debug"}, "api": {"logLevel": "debug"}}
    # the control plane answers throughout its rolling update: its old pod drains (docs/install.md "Upgrade")
    with answered_throughout(net, platform) as seen:
        helm.upgrade(info["kubeconfig"], values, release=RELEASE, namespace=NS, timeout=300)

        def rolled():
            names = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
            return platform_rolled_out(core) and not (names & before) and names
        wait_for(node, rolled, 300, "the platform pods to be replaced by the upgrade")
        time.sleep(2)
    print(f"\ncontrol plane during the upgrade: {seen['answered']} answered", flush=True)
    assert not seen["failed"] and seen["answered"] > 20, seen

    helm.uninstall(info["kubeconfig"], release=RELEASE, namespace=NS)
    api = kubernetes.config.new_client_from_config(info["kubeconfig"])
    kinds = [*CHILD_KINDS, ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
             ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("rbac.authorization.k8s.io/v1", "ClusterRole"),
             ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")]

    def leftovers():
        left = helm.labelled(api, f"app.kubernetes.io/instance={RELEASE}", kinds)
        # documented as kept after uninstall (docs/install.md "Uninstall"): the admin key, the catalog, the CA
        kept = {("Secret", NS, "inference-operator-admin-key"), ("ConfigMap", NS, "foundry-local-catalog"),
                ("Secret", NS, "foundry-inference-ca")}
        return left - kept
    wait_for(node, lambda: not leftovers(), 120, "nothing of the release to be left")
    ext = kubernetes.client.ApiextensionsV1Api(api)
    assert "modeldeployments.foundrylocal.azure.com" in {c.metadata.name for c in
                                                         ext.list_custom_resource_definition().items}


# --- the harness itself: a used state directory, a dead component, down leaves nothing ------------------------------
def _traces(state, netns):
    from tests.kube.node import CGROUP_ROOT
    procs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                alive = (proc / "stat").read_text().split()[2] != "Z"
                if alive and str(state).encode() in (proc / "cmdline").read_bytes():
                    procs.append(proc.name)
            except OSError:
                pass
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if str(state) in line]
    return {"processes": procs, "mounts": mounts, "netns": Path(f"/run/netns/{netns}").exists(),
            "cgroups": [str(p) for p in CGROUP_ROOT.glob(f"*/{netns}")], "state": Path(state).exists()}


def test_second_up_on_a_used_state_dir_a_dead_kubelet_and_down(tmp_path):
    """Its own small cluster beside the release's, no images."""
    prerequisites()
    from tests.kube.cluster import Cluster, down
    state = Path(tempfile.mkdtemp(prefix="fic2-", dir="/tmp"))
    first = Cluster(state)
    first.up(images=False)
    os.kill(first.pids["kubelet"], 9)                        # a crashed run: nothing stopped cleanly
    second = Cluster(state)
    try:
        info = second.up(images=False)                       # cleans the previous run, then starts afresh
        assert Path(info["kubeconfig"]).exists() and second.health() == []
        os.kill(second.pids["kubelet"], 9)
        time.sleep(0.5)
        assert second.health() == ["kubelet"]
        with pytest.raises(pytest.fail.Exception, match="cluster component.*kubelet"):
            live(second)                                    # a test waiting on the node fails at once, clearly
    finally:
        down(state)
    assert _traces(state, second.netns) == {"processes": [], "mounts": [], "netns": False, "cgroups": [],
                                            "state": False}


def test_an_image_build_without_the_package_mirror_fails_naming_the_step(tmp_path):
    prerequisites()
    import sys
    env = {**os.environ, "FOUNDRY_IMAGE_CACHE": str(tmp_path / "images"),
           "FOUNDRY_DEBIAN_MIRROR": "http://127.0.0.1:9/debian"}        # nothing listens: no network to the mirror
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "kube" / "images.py")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: image build step 'debootstrap (needs the Debian mirror)' failed" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "images").glob("*.tar"))
