"""The model cache on the real cluster (storeModel.enabled): two deployments of one model pushed to the cluster's
registry share one StoreModel; its Job fetches the model once into a PersistentVolumeClaim, and every model pod
mounts that volume read-only with no fetcher of its own; both answer over TLS; deleting the deployments deletes the
StoreModel, its Job and its claim (real garbage collector and pvc-protection controller).

The volume is a hostPath PersistentVolume of a storage class the test names (this node has no provisioner); a site
sets storeModel.storageClassName to its own class. Session fixtures: tests/e2e/conftest.py.
"""
import time

import pytest

from tests.e2e.cluster_support import (
    NS,
    NUMBERS,
    STORE_LABEL,
    cache_values,
    cache_volume,
    deleted_after,
    expose,
    pod_report,
    push,
    store_models,
    upgrade_operator,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(1800)]


def test_two_deployments_of_one_model_fetch_it_once_into_a_shared_volume(node, core, net, platform, release):
    from foundry_inference import samples
    registry = node.info_dict["registry"]
    push(node, str(samples.prepare("iris-classifier", progress=lambda m: None)), f"{registry}/byo/iris-cache:v1")
    model = {"custom": {"registry": registry, "repository": "byo/iris-cache", "tag": "v1"}}
    with cache_volume(node, core, "foundry-e2e-store-pv") as volumes:
        upgrade_operator(node, core, cache_values(release["values"]))
        try:
            _two_deployments(node, core, net, platform, model, f"{registry}/byo/iris-cache:v1", volumes)
        finally:
            upgrade_operator(node, core, release["values"])


def _two_deployments(node, core, net, platform, model, model_id, volumes):
    """a, then b, of one model with the cache on: one StoreModel, one fetch, both answer; gone with both."""
    started = time.monotonic()
    net.call(platform.deploy, "iris-cache-a", model, namespace=NS, workloadType="predictive")
    with deleted_after(net, platform, "iris-cache-a"):
        first = wait_state(node, core, net, platform, "iris-cache-a", "Running", 300)
        NUMBERS["model cache: first deployment create -> Running (s)"] = round(time.monotonic() - started, 1)
        (sm,) = store_models(node, model_id)
        name = sm["metadata"]["name"]
        assert sm["status"]["phase"] == "Available" and sm["status"]["progress"] == 100, sm["status"]
        volume = core.read_namespaced_persistent_volume_claim(name, NS).spec.volume_name
        assert (volumes[volume] / "model" / ".foundry-artifact").is_file()  # the Job's fetcher wrote it there

        started = time.monotonic()
        net.call(platform.deploy, "iris-cache-b", model, namespace=NS, workloadType="predictive")
        with deleted_after(net, platform, "iris-cache-b"):
            second = wait_state(node, core, net, platform, "iris-cache-b", "Running", 300)
            NUMBERS["model cache: second deployment (cached) create -> Running (s)"] = round(
                time.monotonic() - started, 1)
            (sm,) = store_models(node, model_id)                         # still one, now used by both
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
    wait_for(node, lambda: not store_models(node, model_id), 180, "the StoreModel garbage-collected")
    wait_for(node, lambda: not core.list_namespaced_persistent_volume_claim(
        NS, label_selector=f"{STORE_LABEL}={name}").items, 180, "the cache's claim deleted")
    wait_for(node, lambda: not core.list_namespaced_pod(NS, label_selector=f"{STORE_LABEL}={name}").items, 180,
             "the fetch pod deleted")
