"""The operator's reconcile flows, on the real kube-apiserver + controller-manager (integration) and on the embedded
store (unit): create, update, scale, drift, prune, keys, status, garbage collection, InferenceService parity.

Readiness is simulated the way the cluster would produce it: on the apiserver the pods' status is patched Ready and
the real deployment controller computes the Deployment's readyReplicas; on the embedded store (no controller) the
Deployment's status is patched as the node agent would.
"""
import base64
import time
import uuid

import pytest

from foundry_inference.operator import names
from foundry_inference.store import errors
from tests.unit.operator.factories import children, converge, custom_model, decoded, isvc, mdep, new_operator

STORES = [pytest.param("embedded", marks=pytest.mark.unit), pytest.param("kube", marks=pytest.mark.integration)]


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Env:
    def __init__(self, kind, store, namespace, kube=None):
        self.kind, self.store, self.ns, self.kube = kind, store, namespace, kube

    def operator(self, **overrides):
        return new_operator(self.store, self.ns, **overrides)

    def make_ready(self, name, timeout=60.0):
        """Every replica of the Deployment ready on its current template, as the cluster would report it."""
        dep = self.store.get("Deployment", self.ns, name)
        replicas = dep["spec"]["replicas"]
        if self.kind == "embedded":
            self.store.patch_status("Deployment", self.ns, name, {
                "observedGeneration": dep["metadata"]["generation"], "replicas": replicas,
                "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]})
            return
        import kubernetes
        core = kubernetes.client.CoreV1Api(self.kube.api_client())

        def done():
            for pod in core.list_namespaced_pod(self.ns, label_selector=f"{names.DEPLOYMENT_LABEL}={name}").items:
                if pod.metadata.deletion_timestamp:
                    continue
                ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
                if not ready:
                    core.patch_namespaced_pod_status(pod.metadata.name, self.ns, {"status": {
                        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"},
                                                           {"type": "ContainersReady", "status": "True"}]}})
            st = self.store.get("Deployment", self.ns, name)
            s = st.get("status") or {}
            return (s.get("observedGeneration", 0) >= st["metadata"]["generation"]
                    and s.get("readyReplicas", 0) == replicas and s.get("updatedReplicas", 0) == replicas
                    and s.get("replicas", 0) == replicas)

        wait_for(done, timeout, f"Deployment {name} ready")

    def wait_gone(self, kind, name, timeout=30.0):
        def gone():
            try:
                self.store.get(kind, self.ns, name)
                return False
            except errors.NotFound:
                return True

        wait_for(gone, timeout, f"{kind} {name} garbage-collected")


def make_env(request, prefix):
    """The Env of the store `request.param` names: the embedded store, or a fresh namespace on the real apiserver."""
    if request.param == "embedded":
        return Env("embedded", request.getfixturevalue("embedded_store"), "team-a")
    kube = request.getfixturevalue("kube")
    return Env("kube", request.getfixturevalue("kube_store"), kube.create_namespace(f"{prefix}-{uuid.uuid4().hex[:8]}"),
               kube)


@pytest.fixture(params=STORES)
def env(request):
    return make_env(request, "op")


def status_of(env, name, kind="ModelDeployment"):
    return env.store.get(kind, env.ns, name).get("status") or {}


# --- create, readiness, keys ---------------------------------------------------------------------------------------

def test_create_builds_every_child_and_keys_once_then_runs(env):
    env.store.create(mdep("phi", env.ns, endpoint={"enabled": True, "host": "models.example.com"}))
    op = env.operator()
    converge(op)
    kids = children(env.store, env.ns, "phi")
    assert set(kids) == {("Deployment", "phi"), ("Service", "phi"), ("ConfigMap", "phi-nginx"),
                         ("Secret", "phi-tls"), ("Secret", "phi-api-keys"), ("Ingress", "phi")}
    st = status_of(env, "phi")
    assert st["state"] == "Creating" and st["observedGeneration"] == 1
    assert st["resolvedModel"]["name"] == "Phi-4-mini-instruct-generic-cpu:5"
    # the effective values: what runs, whatever the spec's defaults say
    assert {k: st["resolvedModel"][k] for k in ("workloadType", "runtime", "port")} == {
        "workloadType": "generative", "runtime": "onnx-genai", "port": 5000}
    assert st["serviceReady"] is True and st["deploymentReady"] is False
    assert st["externalEndpoint"] == "http://models.example.com/phi"
    secret = env.store.get("Secret", env.ns, "phi-api-keys")
    assert secret["type"] == "Opaque"
    assert decoded(secret, "primary-key").startswith("fndry-pk-")
    assert decoded(secret, "secondary-key").startswith("fndry-sk-")
    assert secret["metadata"]["labels"][names.DEPLOYMENT_LABEL] == "phi"
    assert secret["metadata"]["ownerReferences"][0]["controller"] is True
    assert st["authentication"]["keysSecretName"] == "phi-api-keys"
    assert st["authentication"]["primaryKeyCreatedAt"] == secret["metadata"]["annotations"][names.PRIMARY_CREATED]

    env.make_ready("phi")
    converge(op)
    st = status_of(env, "phi")
    assert st["state"] == "Running" and st["readyReplicas"] == 1 and st["deploymentReady"] is True
    ready = {c["type"]: c for c in st["conditions"]}
    assert ready["Ready"]["status"] == "True" and ready["KeysReady"]["status"] == "True"
    assert env.store.get("Secret", env.ns, "phi-api-keys")["data"] == secret["data"]     # becoming ready changes none

    # a restarted operator (new process, nothing remembered) keeps the same keys and writes nothing
    again = env.operator()
    report = again.run_pass()
    assert report.child_writes == 0 and report.status_writes == 0
    assert env.store.get("Secret", env.ns, "phi-api-keys")["data"] == secret["data"]


def test_idle_pass_lists_each_kind_once_and_writes_nothing(env):
    for i in range(3):
        env.store.create(mdep(f"m{i}", env.ns))
    op = env.operator()
    converge(op)
    if env.kind == "kube":
        # the real deployment controller reports each Deployment's replicas (status.replicas) a moment later; the
        # pass after that report is the one that copies it, and only then is the world idle
        wait_for(lambda: all((env.store.get("Deployment", env.ns, f"m{i}").get("status") or {}).get("replicas") == 1
                             for i in range(3)), 30, "the deployment controller to report the replicas")
        converge(op)
    report = op.run_pass()
    assert report.child_writes == 0 and report.status_writes == 0
    # 2 owner kinds + Model + 5 child kinds (+ their pods on a cluster), one page each; one GET of the catalog
    assert report.calls == {"list": 9 if env.kind == "kube" else 8, "get": 1}, report.calls


def test_conditions_keep_their_transition_time_until_they_change(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    before = {c["type"]: c for c in status_of(env, "phi")["conditions"]}
    time.sleep(1.1)
    env.make_ready("phi")
    converge(op)
    after = {c["type"]: c for c in status_of(env, "phi")["conditions"]}
    assert after["ModelResolved"]["lastTransitionTime"] == before["ModelResolved"]["lastTransitionTime"]
    assert after["Ready"]["lastTransitionTime"] > before["Ready"]["lastTransitionTime"]


def test_deleted_keys_secret_is_recreated_with_new_keys_and_rotation_survives(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    env.make_ready("phi")
    converge(op)
    first = env.store.get("Secret", env.ns, "phi-api-keys")

    # the control plane's rotate endpoint: one value and its created-at annotation
    rotated = base64.b64encode(b"a" * 64).decode()
    env.store.patch("Secret", env.ns, "phi-api-keys", {
        "data": {"primary-key": rotated},
        "metadata": {"annotations": {names.PRIMARY_CREATED: "2030-01-01T00:00:00Z"}}})
    converge(op)
    kept = env.store.get("Secret", env.ns, "phi-api-keys")
    assert kept["data"]["primary-key"] == rotated and kept["data"]["secondary-key"] == first["data"]["secondary-key"]
    auth = status_of(env, "phi")["authentication"]
    assert auth["primaryKeyRotatedAt"] == "2030-01-01T00:00:00Z" and auth.get("secondaryKeyRotatedAt") is None

    env.store.delete("Secret", env.ns, "phi-api-keys")
    converge(op)
    recreated = env.store.get("Secret", env.ns, "phi-api-keys")
    assert recreated["metadata"]["uid"] != first["metadata"]["uid"]
    assert decoded(recreated, "primary-key").startswith("fndry-pk-")
    assert recreated["data"]["primary-key"] not in (first["data"]["primary-key"], rotated)


def test_auth_disabled_creates_no_keys(env):
    env.store.create(mdep("open", env.ns, authentication={"enabled": False}))
    op = env.operator()
    converge(op)
    env.make_ready("open")
    converge(op)
    with pytest.raises(errors.NotFound):
        env.store.get("Secret", env.ns, "open-api-keys")
    st = status_of(env, "open")
    assert st["state"] == "Running" and st.get("authentication") is None
    app = env.store.get("Deployment", env.ns, "open")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "FOUNDRY_AUTH_MODE", "value": "none"} in app["env"]


# --- update, scale, drift, prune -----------------------------------------------------------------------------------

def test_scale_and_update_roll_through_updating_to_running(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    env.make_ready("phi")
    converge(op)
    assert status_of(env, "phi")["state"] == "Running"
    env.store.patch("ModelDeployment", env.ns, "phi", {"spec": {"replicas": 2, "env": [{"name": "X", "value": "1"}]}})
    converge(op)
    dep = env.store.get("Deployment", env.ns, "phi")
    assert dep["spec"]["replicas"] == 2
    assert {"name": "X", "value": "1"} in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    st = status_of(env, "phi")
    assert st["state"] == "Updating" and st["observedGeneration"] == 2
    env.make_ready("phi")
    converge(op)
    st = status_of(env, "phi")
    assert st["state"] == "Running" and st["readyReplicas"] == 2


def test_drift_on_an_owned_field_is_reverted_and_foreign_metadata_kept(env):
    env.store.create(mdep("phi", env.ns, replicas=2))
    op = env.operator()
    converge(op)
    env.store.patch("Deployment", env.ns, "phi", {"spec": {"replicas": 5},
                                                  "metadata": {"annotations": {"someone/else": "keep-me"}}})
    env.store.patch("ConfigMap", env.ns, "phi-nginx", {"data": {"nginx.conf": "broken"}})
    converge(op)
    dep = env.store.get("Deployment", env.ns, "phi")
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["annotations"]["someone/else"] == "keep-me"
    assert "listen 8443 ssl" in env.store.get("ConfigMap", env.ns, "phi-nginx")["data"]["nginx.conf"]


def test_disabling_the_endpoint_prunes_the_ingress_only(env):
    env.store.create(mdep("phi", env.ns, endpoint={"enabled": True}))
    op = env.operator()
    converge(op)
    assert ("Ingress", "phi") in children(env.store, env.ns, "phi")
    env.store.patch("ModelDeployment", env.ns, "phi", {"spec": {"endpoint": {"enabled": False}}})
    converge(op)
    kids = children(env.store, env.ns, "phi")
    assert ("Ingress", "phi") not in kids and ("Deployment", "phi") in kids
    assert status_of(env, "phi").get("externalEndpoint") is None


def test_an_unrelated_labelled_object_is_not_pruned(env):
    env.store.create(mdep("phi", env.ns))
    env.store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "phi-extra", "namespace": env.ns, "labels": names.child_labels("phi")}, "data": {"a": "b"}})
    converge(env.operator())
    assert env.store.get("ConfigMap", env.ns, "phi-extra")["data"] == {"a": "b"}


# --- errors --------------------------------------------------------------------------------------------------------

def test_invalid_spec_is_error_and_leaves_running_children_alone(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    env.store.patch("ModelDeployment", env.ns, "phi", {"spec": {"runtime": "vllm"}})   # vllm needs a GPU
    reports = converge(op)
    st = status_of(env, "phi")
    assert st["state"] == "Error" and "vllm requires compute gpu" in st["message"]
    assert st["observedGeneration"] == 2
    assert env.store.get("Deployment", env.ns, "phi")["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "foundry-inference", "chat-server"]
    assert reports[-1].failed == 0           # not retried with backoff: it waits for the next generation


def test_unknown_catalog_model_and_missing_model_ref_are_errors_that_recover(env):
    env.store.create(mdep("nope", env.ns, model={"catalog": {"name": "no-such-model"}}))
    env.store.create(mdep("byref", env.ns, model={"ref": "iris"}, workloadType="predictive"))
    op = env.operator()
    converge(op)
    assert status_of(env, "nope")["state"] == "Error"
    assert "no-such-model" in status_of(env, "nope")["message"]
    assert status_of(env, "byref")["state"] == "Error" and "iris" in status_of(env, "byref")["message"]
    assert not children(env.store, env.ns, "byref")
    env.store.create(custom_model("iris", env.ns))
    converge(op)
    st = status_of(env, "byref")
    assert st["state"] == "Creating" and st["resolvedModel"]["name"] == "iris"
    assert env.store.get("Model", env.ns, "iris")["status"]["phase"] == "Available"
    dep = env.store.get("Deployment", env.ns, "byref")
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"] == ["foundry-inference", "predictive-server"]


def test_lazy_registration_creates_the_catalog_model_once(env):
    env.store.create(mdep("a", env.ns))
    env.store.create(mdep("b", env.ns))
    op = env.operator()
    converge(op)
    models = env.store.list_all("Model", env.ns)
    assert [m["metadata"]["name"] for m in models] == ["phi-4-mini-instruct-generic-cpu-5"]
    assert models[0]["status"]["phase"] == "Available"


# --- deletion and parity -------------------------------------------------------------------------------------------

def test_deleting_the_deployment_garbage_collects_every_child(env):
    env.store.create(mdep("phi", env.ns, endpoint={"enabled": True}))
    op = env.operator()
    converge(op)
    env.make_ready("phi")
    converge(op)
    assert len(children(env.store, env.ns, "phi")) == 6
    env.store.delete("ModelDeployment", env.ns, "phi")
    for kind, name in [("Deployment", "phi"), ("Service", "phi"), ("ConfigMap", "phi-nginx"), ("Secret", "phi-tls"),
                       ("Secret", "phi-api-keys"), ("Ingress", "phi")]:
        env.wait_gone(kind, name, timeout=60)
    report = op.run_pass()
    assert report.owners == 0 and report.child_writes == 0


def test_inference_service_gets_the_same_children_and_a_deprecated_condition(env):
    env.store.create(mdep("md", env.ns, replicas=2, endpoint={"enabled": True, "host": "h.example.com"}))
    env.store.create(isvc("legacy", env.ns, replicas=2, ingress={"enabled": True, "host": "h.example.com"}))
    op = env.operator()
    converge(op)
    a, b = children(env.store, env.ns, "md"), children(env.store, env.ns, "legacy")
    assert {k for k, _ in a} == {k for k, _ in b}

    def comparable(obj, name):
        spec = obj.get("spec") or obj.get("data")
        if obj["kind"] == "Deployment":   # the pod template's config hash covers the certificate, fresh per owner
            spec["template"]["metadata"]["annotations"].pop(names.CONFIG_HASH)
        for allocated in ("clusterIP", "clusterIPs"):      # a Service's address is the apiserver's to pick
            spec.pop(allocated, None)
        return repr(spec).replace(name, "NAME")

    for (kind, name), obj in a.items():
        if kind == "Secret":
            continue          # certificates differ by construction (fresh keys)
        other = b[(kind, name.replace("md", "legacy", 1))]
        assert comparable(obj, "md") == comparable(other, "legacy"), kind
        assert other["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    st = status_of(env, "legacy", "InferenceService")
    assert st["state"] == "Creating"
    assert {c["type"]: c["status"] for c in st["conditions"]}["Deprecated"] == "True"
    env.make_ready("legacy")
    converge(op)
    assert status_of(env, "legacy", "InferenceService")["state"] == "Running"
    assert decoded(env.store.get("Secret", env.ns, "legacy-api-keys"), "primary-key").startswith("fndry-pk-")


def test_same_name_in_both_kinds_is_a_name_conflict_not_a_takeover(env):
    env.store.create(mdep("dup", env.ns))
    op = env.operator()
    converge(op)
    env.store.create(isvc("dup", env.ns))
    converge(op)
    st = status_of(env, "dup", "InferenceService")
    assert st["state"] == "Error" and "controlled by ModelDeployment dup" in st["message"]
    assert env.store.get("Deployment", env.ns, "dup")["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"


def foreign(kind, name, ns):
    """An object that happens to hold a child's name: nobody's controller, not ours (a user's, a Helm release's)."""
    meta = {"name": name, "namespace": ns, "labels": {"team": "someone-else"}}
    if kind == "Deployment":
        labels = {"app": "theirs"}
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}}
    if kind == "Service":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": {"ports": [{"port": 1234}]}}
    if kind == "ConfigMap":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "data": {"theirs": "yes"}}
    return {"apiVersion": "v1", "kind": kind, "type": "Opaque", "metadata": meta,
            "data": {"primary-key": base64.b64encode(b"their-secret").decode()}}


@pytest.mark.parametrize("kind,child", [
    ("Deployment", lambda n: n), ("Service", names.service), ("ConfigMap", names.nginx_configmap),
    ("Secret", names.keys_secret), ("Secret", names.tls_secret)])
def test_attack_a_name_taken_by_a_foreign_object_is_never_adopted(env, kind, child):
    name = child("phi")
    theirs = env.store.create(foreign(kind, name, env.ns))
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    after = env.store.get(kind, env.ns, name)
    for field in ("spec", "data"):                     # not patched (its own controller may still write status)
        assert after.get(field) == theirs.get(field)
    assert after["metadata"]["labels"] == {"team": "someone-else"}
    assert not after["metadata"].get("ownerReferences")            # so the GC never deletes it with ours
    st = status_of(env, "phi")
    assert st["state"] == "Error" and f"{kind} {name} already exists" in st["message"], st
    assert any(c.get("reason") == "NameConflict" for c in st["conditions"])
    # the owner of the name removes it: the deployment proceeds on its own
    env.store.delete(kind, env.ns, name)
    if env.kind == "kube" and kind == "Deployment":
        env.wait_gone(kind, name)
    converge(op)
    mine = env.store.get(kind, env.ns, name)
    assert mine["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert status_of(env, "phi")["state"] != "Error"
