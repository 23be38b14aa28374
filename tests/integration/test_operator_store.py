"""The model cache (storeModel.enabled) on the real kube-apiserver + controller-manager: one StoreModel per model
artifact shared by the deployments of it, its volume claim and fetch Job, the deployments held until it is
Available and then mounting it read-only without a fetcher, its failure on their status, and garbage collection with
the last deployment.

This apiserver has no node and no Job controller: where the test says so it writes what they would (the Job's
completion or failure, a fetch pod's exit), through the same status subresources. tests/e2e/test_cluster_store.py
runs the whole thing on a real node.
"""
import uuid

import pytest

from foundry_inference.operator import names
from foundry_inference.operator.builders.deployment import FETCH_CONTAINER
from foundry_inference.store import errors
from tests.unit.operator.factories import converge, custom_model, mdep

from .test_operator_reconcile import make_env, status_of, wait_for

pytestmark = pytest.mark.integration
STORE = {"storeModel": {"enabled": True, "storageClassName": "models-fast"}}


@pytest.fixture(params=["kube"])
def env(request):
    return make_env(request, "sm")


def store_models(env):
    return {o["metadata"]["name"]: o for o in env.store.list_all("StoreModel", env.ns)}


def only_store_model(env):
    found = store_models(env)
    assert len(found) == 1, sorted(found)
    return next(iter(found.values()))


def finish_job(env, name, outcome="Complete", message=None):
    """What the Job controller writes when the fetch pod succeeded (Complete) or failed too often (Failed)."""
    cond = {"type": outcome, "status": "True", "lastProbeTime": "2026-12-02T00:00:00Z",
            "lastTransitionTime": "2026-12-02T00:00:00Z"}
    if message:
        cond.update(reason="BackoffLimitExceeded", message=message)
    body = {"conditions": [cond], "startTime": "2026-12-02T00:00:00Z"}
    if outcome == "Complete":
        body.update(succeeded=1, completionTime="2026-12-02T00:00:10Z")
    else:
        body["failed"] = 1
    env.store.patch_status("Job", env.ns, names.store_job(name), body)


def failed_fetch_pod(env, store_model, cause, owner=None):
    """A fetch pod that exited with the fetcher's `failed:` line (what its Job's pod and the kubelet would leave)."""
    name = store_model["metadata"]["name"]
    job = env.store.get("Job", env.ns, names.store_job(name))
    ref = owner or {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                    "uid": job["metadata"]["uid"], "controller": True}
    pod = env.store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"{name}-fetch-{uuid.uuid4().hex[:5]}", "namespace": env.ns, "ownerReferences": [ref],
        "labels": {names.MANAGED_BY: names.MANAGED_BY_VALUE, names.STORE_LABEL: name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": FETCH_CONTAINER, "image": "fetcher:1"}]}})
    env.store.patch_status("Pod", env.ns, pod["metadata"]["name"], {
        "phase": "Failed", "containerStatuses": [{
            "name": FETCH_CONTAINER, "image": "fetcher:1", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": f"failed: {cause}\n"}}}]})
    return pod


def deploy_iris(env, name="iris"):
    """A deployment of the custom Model `iris` (an OCI artifact), reconciled with the cache on; the operator."""
    env.store.create(custom_model("iris", env.ns))
    env.store.create(mdep(name, env.ns, model={"ref": "iris"}, workloadType="predictive", port=8000))
    op = env.operator(**STORE)
    converge(op)
    return op


def pod_spec(env, name):
    return env.store.get("Deployment", env.ns, name)["spec"]["template"]["spec"]


def test_two_deployments_of_one_model_share_one_store_model_and_mount_it_read_only(env):
    store, ns = env.store, env.ns
    store.create(mdep("phi", ns))
    store.create(mdep("phi-two", ns))
    op = env.operator(**STORE)
    converge(op)
    sm = only_store_model(env)
    name = sm["metadata"]["name"]
    users = {store.get("ModelDeployment", ns, d)["metadata"]["uid"] for d in ("phi", "phi-two")}
    refs = sm["metadata"]["ownerReferences"]
    assert {r["uid"] for r in refs} == users and not any(r.get("controller") for r in refs)
    assert sm["spec"]["modelName"] == "Phi-4-mini-instruct-generic-cpu:5"
    assert sm["spec"]["source"]["type"] in ("catalog", "oci", "http")
    # the claim and the Job, both controlled by the StoreModel
    claim = store.get("PersistentVolumeClaim", ns, name)
    assert claim["spec"]["storageClassName"] == "models-fast"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    job = store.get("Job", ns, names.store_job(name))
    for child in (claim, job):
        assert child["metadata"]["ownerReferences"][0]["uid"] == sm["metadata"]["uid"]
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": name}}]
    env_vars = {e["name"]: e.get("value") for e in job_pod["containers"][0]["env"]}
    assert env_vars["FOUNDRY_FETCH_CACHE"].startswith(names.MODELS_DIR + "/")
    assert env_vars["FOUNDRY_FETCH_LIMIT_BYTES"] == str(20 * 1024 ** 3)
    assert job_pod["securityContext"]["runAsNonRoot"] is True and job_pod["automountServiceAccountToken"] is False
    # held: no model Deployment while the store is not Available; the deployment says what it waits for
    for dep in ("phi", "phi-two"):
        with pytest.raises(errors.NotFound):
            store.get("Deployment", ns, dep)
        st = status_of(env, dep)
        assert st["state"] == "Creating"
        assert f"waiting for PersistentVolumeClaim {name} to be bound (storage class models-fast)" in st["message"]
    assert only_store_model(env)["status"]["phase"] == "Pending"

    finish_job(env, name)                                   # the Job controller: the fetch pod succeeded
    converge(op)
    sm = only_store_model(env)
    assert sm["status"]["phase"] == "Available" and sm["status"]["progress"] == 100
    assert sm["status"]["path"] == f"persistentvolumeclaim/{name}/model"
    for dep in ("phi", "phi-two"):
        spec = pod_spec(env, dep)
        assert "initContainers" not in spec                 # nothing to fetch: the volume holds the model
        assert {"name": "models", "persistentVolumeClaim": {"claimName": name, "readOnly": True}} in spec["volumes"]
        server = next(c for c in spec["containers"] if c["name"] == "model-server")
        assert {"name": "models", "mountPath": names.MODELS_DIR, "readOnly": True} in server["volumeMounts"]
        env.make_ready(dep)
    converge(op)
    assert status_of(env, "phi")["state"] == status_of(env, "phi-two")["state"] == "Running"
    assert len(store.list_all("Job", ns)) == 1             # one fetch for both

    # a restarted operator changes nothing
    assert env.operator(**STORE).run_pass().child_writes == 0

    # the cache outlives one user and goes with the last (garbage collection of the StoreModel, its claim, its Job)
    store.delete("ModelDeployment", ns, "phi")
    wait_for(lambda: len(only_store_model(env)["metadata"]["ownerReferences"]) == 1, 60, "phi's reference dropped")
    converge(op)
    assert status_of(env, "phi-two")["state"] == "Running"
    store.delete("ModelDeployment", ns, "phi-two")
    env.wait_gone("StoreModel", name, 60)
    env.wait_gone("Job", names.store_job(name), 60)
    # the claim is deleted; its kubernetes.io/pvc-protection finalizer is removed by a controller this test
    # control plane does not run (the real cluster's does: tests/e2e/test_cluster_store.py)
    wait_for(lambda: _deleting(store, ns, name), 60, "the claim deleted")


def _deleting(store, ns, name):
    try:
        return bool(store.get("PersistentVolumeClaim", ns, name)["metadata"].get("deletionTimestamp"))
    except errors.NotFound:
        return True


def test_a_failed_fetch_is_the_deployments_error_and_deleting_the_job_retries(env):
    store, ns = env.store, env.ns
    op = deploy_iris(env)
    sm = only_store_model(env)
    name = sm["metadata"]["name"]
    assert sm["spec"]["source"] == {"type": "oci", "registry": "myacr.azurecr.io", "repository": "models/iris",
                                    "tag": "v1"}
    # a pod that only wears the label (not the Job's) says nothing about the store
    failed_fetch_pod(env, sm, "forged", owner={"apiVersion": "v1", "kind": "ReplicationController", "name": "x",
                                               "uid": "0f0f0f0f-0000-0000-0000-000000000000", "controller": True})
    failed_fetch_pod(env, sm, "registry myacr.azurecr.io answered 404 for models/iris:v1")
    finish_job(env, name, "Failed", "Job has reached the specified backoff limit")
    converge(op)
    sm = only_store_model(env)
    assert sm["status"]["phase"] == "Error"
    assert sm["status"]["message"] == ("model fetch failed (1 attempt(s)): registry myacr.azurecr.io answered 404 "
                                       "for models/iris:v1")
    st = status_of(env, "iris")
    assert st["state"] == "Error" and "answered 404" in st["message"] and "forged" not in st["message"]
    assert f"StoreModel {name}" in st["message"]

    store.delete("Job", ns, names.store_job(name))          # the documented retry
    wait_for(lambda: not any(j["metadata"]["name"] == names.store_job(name) and not j["metadata"].get(
        "deletionTimestamp") for j in store.list_all("Job", ns)), 30, "the failed Job deleted")
    converge(op)
    assert store.get("Job", ns, names.store_job(name))["metadata"]["uid"] != ""
    assert only_store_model(env)["status"]["phase"] in ("Pending", "Storing")


def test_a_deployment_that_changes_model_leaves_the_old_store_model(env):
    store, ns = env.store, env.ns
    op = deploy_iris(env, "m")
    old = only_store_model(env)["metadata"]["name"]
    store.patch("Model", ns, "iris", {"spec": {"source": {"custom": {"tag": "v2"}}}})
    converge(op)
    found = store_models(env)
    assert old not in found and len(found) == 1             # its only user left it: deleted
    assert next(iter(found.values()))["spec"]["source"]["tag"] == "v2"


def test_a_deleted_claim_is_made_again_and_filled_by_a_new_job(env):
    store, ns = env.store, env.ns
    op = deploy_iris(env)
    name = only_store_model(env)["metadata"]["name"]
    finish_job(env, name)
    converge(op)
    assert only_store_model(env)["status"]["phase"] == "Available"
    old_job = store.get("Job", ns, names.store_job(name))["metadata"]["uid"]
    # someone deletes the claim while no pod uses it (the pvc-protection controller then lets it go)
    store.delete("PersistentVolumeClaim", ns, name)
    store.patch("PersistentVolumeClaim", ns, name, {"metadata": {"finalizers": None}})
    wait_for(lambda: _deleting(store, ns, name) and not any(
        c["metadata"]["name"] == name for c in store.list_all("PersistentVolumeClaim", ns)), 30, "the claim gone")
    converge(op)
    assert store.get("PersistentVolumeClaim", ns, name)                      # made again, empty
    job = store.get("Job", ns, names.store_job(name))
    assert job["metadata"]["uid"] != old_job and not (job.get("status") or {}).get("conditions")
    assert only_store_model(env)["status"]["phase"] == "Pending"            # not Available on an empty volume
    assert f"(StoreModel {name})" in status_of(env, "iris")["message"]      # the deployment says it waits
