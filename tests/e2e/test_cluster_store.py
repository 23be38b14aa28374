"""The model cache on the real cluster (storeModel.enabled): two deployments of one model pushed to the cluster's
registry share one StoreModel; its Job fetches the model once into a PersistentVolumeClaim, and every model pod
mounts that volume read-only with no fetcher of its own; both answer over TLS; deleting the deployments deletes the
StoreModel, its Job and its claim (real garbage collector and pvc-protection controller).

The volume is a hostPath PersistentVolume of a storage class the test names (this node has no provisioner); a site
sets storeModel.storageClassName to its own class. Session fixtures: tests/e2e/conftest.py.
"""
import copy
import os
import time
from pathlib import Path

import pytest

from tests.e2e.cluster_support import (
    NS,
    NUMBERS,
    deleted_after,
    expose,
    pod_report,
    push,
    upgrade_operator,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(1800)]
STORAGE_CLASS = "foundry-e2e-models"
STORE_LABEL = "foundry.azure.com/store-model"
POD_UID = 65532


@pytest.fixture
def cache_volume(node, core):
    """A 1Gi hostPath PersistentVolume of STORAGE_CLASS, writable by the pods' uid; removed afterwards."""
    path = Path(node.info_dict["state"]) / "store-pv"
    path.mkdir(exist_ok=True)
    os.chown(path, POD_UID, POD_UID)
    name = "foundry-e2e-store-pv"
    core.create_persistent_volume({"metadata": {"name": name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
        "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"}}})
    try:
        yield name, path
    finally:
        core.delete_persistent_volume(name)


def store_models(node):
    import kubernetes
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(node.info_dict["kubeconfig"]))
    return api.list_namespaced_custom_object("foundrylocal.azure.com", "v1", NS, "storemodels")["items"]


def test_two_deployments_of_one_model_fetch_it_once_into_a_shared_volume(node, core, net, platform, release,
                                                                         cache_volume):
    from foundry_inference import samples
    pv_name, pv_path = cache_volume
    registry = node.info_dict["registry"]
    push(node, str(samples.prepare("iris-classifier", progress=lambda m: None)), f"{registry}/byo/iris-cache:v1")
    values = copy.deepcopy(release["values"])
    values["storeModel"] = {**values.get("storeModel", {}), "enabled": True, "storageClassName": STORAGE_CLASS,
                            "volumeSize": "1Gi"}
    upgrade_operator(node, core, values)
    model = {"custom": {"registry": registry, "repository": "byo/iris-cache", "tag": "v1"}}
    try:
        started = time.monotonic()
        net.call(platform.deploy, "iris-cache-a", model, namespace=NS, workloadType="predictive")
        with deleted_after(net, platform, "iris-cache-a"):
            first = wait_state(node, core, net, platform, "iris-cache-a", "Running", 300)
            NUMBERS["model cache: first deployment create -> Running (s)"] = round(time.monotonic() - started, 1)
            (sm,) = store_models(node)
            name = sm["metadata"]["name"]
            assert sm["status"]["phase"] == "Available" and sm["status"]["progress"] == 100, sm["status"]
            assert core.read_namespaced_persistent_volume_claim(name, NS).spec.volume_name == pv_name
            assert (pv_path / "model" / ".foundry-artifact").is_file()         # the Job's fetcher wrote it there

            started = time.monotonic()
            net.call(platform.deploy, "iris-cache-b", model, namespace=NS, workloadType="predictive")
            with deleted_after(net, platform, "iris-cache-b"):
                second = wait_state(node, core, net, platform, "iris-cache-b", "Running", 300)
                NUMBERS["model cache: second deployment (cached) create -> Running (s)"] = round(
                    time.monotonic() - started, 1)
                (sm,) = store_models(node)                                   # still one, now used by both
                assert len(sm["metadata"]["ownerReferences"]) == 2, sm["metadata"]
                fetch_pods = core.list_namespaced_pod(NS, label_selector=f"{STORE_LABEL}={name}").items
                assert len(fetch_pods) == 1, pod_report(core)                 # fetched once, for both
                assert fetch_pods[0].status.phase == "Succeeded", pod_report(core)
                for dep in ("iris-cache-a", "iris-cache-b"):
                    pods = core.list_namespaced_pod(NS, label_selector=f"foundry.azure.com/deployment={dep}").items
                    assert pods and all(not p.spec.init_containers for p in pods), pod_report(core)
                    claims = [v.persistent_volume_claim for p in pods for v in p.spec.volumes
                              if v.persistent_volume_claim]
                    assert [(c.claim_name, c.read_only) for c in claims] == [(name, True)] * len(pods)
                platform._ca = platform.ca_path()
                for status, dep in ((first, "iris-cache-a"), (second, "iris-cache-b")):
                    endpoint = expose(core, net, NS, status["internalEndpoint"])
                    key = net.call(platform.keys, dep, NS)[0]
                    assert net.call(platform.predict, endpoint, key)["label_0"] == [0, 1, 2]
        # both deleted: the StoreModel, its Job and its claim go (garbage collector, pvc-protection controller)
        wait_for(node, lambda: not store_models(node), 180, "the StoreModel garbage-collected")
        wait_for(node, lambda: not core.list_namespaced_persistent_volume_claim(
            NS, label_selector=f"{STORE_LABEL}={name}").items, 180, "the cache's claim deleted")
        wait_for(node, lambda: not core.list_namespaced_pod(NS, label_selector=f"{STORE_LABEL}={name}").items, 180,
                 "the fetch pod deleted")
    finally:
        upgrade_operator(node, core, release["values"])
