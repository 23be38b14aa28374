"""The control plane's watch-fed read cache on the real apiserver: other writers' changes show up, the store's own
writes are never read back older, a miss or an outage never serves stale or invented data, and a forbidden watch
just turns the cache off."""
import asyncio
import time

import kubernetes
import pytest

from foundry_inference.store import errors
from foundry_inference.store.base import AsyncStore
from foundry_inference.store.kinds import CUSTOM_API_VERSION
from foundry_inference.store.kube import KubernetesStore
from foundry_inference.store.watchcache import CachedStore

pytestmark = pytest.mark.integration

KINDS = ("ModelDeployment", "InferenceService")


def deployment(ns, name, replicas=1):
    return {"apiVersion": CUSTOM_API_VERSION, "kind": "ModelDeployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu", "replicas": replicas}}


def eventually(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.fixture
def cached(kube):
    store = CachedStore(KubernetesStore(kubeconfig=kube.kubeconfig), KINDS)
    assert store.cache.wait_synced(), "the informers did not list within 10 s"
    yield store
    store.close()


def test_objects_written_by_others_are_served_from_the_cache_and_follow_their_changes(cached, kube_store,
                                                                                       kube_namespace):
    kube_store.create(deployment(kube_namespace, "other"))
    hit = eventually(lambda: cached.lookup("ModelDeployment", kube_namespace, "other"))
    assert hit and hit["spec"]["replicas"] == 1
    kube_store.patch_status("ModelDeployment", kube_namespace, "other", {"state": "Running", "readyReplicas": 1})
    assert eventually(lambda: (cached.lookup("ModelDeployment", kube_namespace, "other") or {})
                      .get("status", {}).get("state") == "Running")
    hit["spec"]["replicas"] = 99                       # callers get copies: the cache is not theirs to change
    assert cached.lookup("ModelDeployment", kube_namespace, "other")["spec"]["replicas"] == 1
    kube_store.delete("ModelDeployment", kube_namespace, "other")
    assert eventually(lambda: cached.lookup("ModelDeployment", kube_namespace, "other") is None)


def test_own_writes_are_never_read_back_older(cached, kube_namespace):
    """What a control plane client sees: GET right after its own PUT/PATCH/DELETE returns that write or newer."""
    facade = AsyncStore(cached)

    async def scenario():
        created = await facade.create(deployment(kube_namespace, "mine"))
        assert (await facade.get_cached("ModelDeployment", kube_namespace, "mine"))["metadata"]["uid"] == \
            created["metadata"]["uid"]
        for replicas in range(2, 22):
            current = await facade.get("ModelDeployment", kube_namespace, "mine")
            current["spec"]["replicas"] = replicas
            await facade.replace(current)
            read = await facade.get_cached("ModelDeployment", kube_namespace, "mine")
            assert read["spec"]["replicas"] == replicas
        await facade.delete("ModelDeployment", kube_namespace, "mine")
        with pytest.raises(errors.NotFound):
            await facade.get_cached("ModelDeployment", kube_namespace, "mine")
        await facade.create(deployment(kube_namespace, "mine", replicas=3))     # same name, new object
        assert (await facade.get_cached("ModelDeployment", kube_namespace, "mine"))["spec"]["replicas"] == 3

    try:
        asyncio.run(scenario())
        # and once the watch has caught up, the same reads are answered from memory
        assert eventually(lambda: (cached.lookup("ModelDeployment", kube_namespace, "mine") or {})
                          .get("spec", {}).get("replicas") == 3)
    finally:
        facade.close()


def test_a_miss_goes_to_the_apiserver_and_unknown_objects_are_not_found(cached, kube_store, kube_namespace):
    facade = AsyncStore(cached)
    try:
        with pytest.raises(errors.NotFound):
            asyncio.run(facade.get_cached("ModelDeployment", kube_namespace, "nobody"))
        kube_store.create(deployment(kube_namespace, "fresh"))    # read before the watch can have delivered it
        assert asyncio.run(facade.get_cached("ModelDeployment", kube_namespace, "fresh"))["metadata"]["name"] == \
            "fresh"
    finally:
        facade.close()


def test_without_watch_permission_the_cache_stays_off_and_reads_still_work(kube, kube_store, kube_namespace):
    """bob may get and list but not watch: the cache never serves, every read goes to the apiserver."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube.api_client())
    rbac.create_namespaced_role(kube_namespace, {
        "metadata": {"name": "no-watch"},
        "rules": [{"apiGroups": ["foundrylocal.azure.com"], "resources": ["modeldeployments"],
                   "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(kube_namespace, {
        "metadata": {"name": "bob-no-watch"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-watch"},
        "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]})
    kube_store.create(deployment(kube_namespace, "seen"))
    store = CachedStore(KubernetesStore(kubeconfig=kube.user_kubeconfig("bob")), ("ModelDeployment",),
                        namespaces=[kube_namespace])
    facade = AsyncStore(store)
    try:
        assert not store.cache.wait_synced(timeout=2.0)
        assert store.lookup("ModelDeployment", kube_namespace, "seen") is None
        assert asyncio.run(facade.get_cached("ModelDeployment", kube_namespace, "seen"))["metadata"]["name"] == \
            "seen"
    finally:
        facade.close()


def test_an_apiserver_outage_turns_the_cache_off_until_it_has_listed_again(kube, cached, kube_store,
                                                                           kube_namespace):
    kube_store.create(deployment(kube_namespace, "steady"))
    assert eventually(lambda: cached.lookup("ModelDeployment", kube_namespace, "steady"))
    kube.stop_apiserver()
    try:
        assert eventually(lambda: cached.lookup("ModelDeployment", kube_namespace, "steady") is None), \
            "the cache kept answering while its watch was down"
        with pytest.raises(errors.Unavailable):
            cached.get("ModelDeployment", kube_namespace, "steady")
    finally:
        kube.start_apiserver()
    assert eventually(lambda: cached.lookup("ModelDeployment", kube_namespace, "steady"), timeout=40)


def test_a_watch_closed_from_another_thread_mid_read_ends_quietly(kube_store, kube_namespace):
    """Closing the store (shutdown) while an informer reads its watch ends the read, without an exception escaping
    the reader's thread (http.client drops its file under a blocked reader)."""
    import threading
    stream = kube_store.watch("ModelDeployment", kube_namespace, None, timeout_s=60)
    outcome = []

    def read():
        try:
            outcome.append(list(stream))
        except BaseException as exc:  # noqa: BLE001 - the outcome under test
            outcome.append(exc)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    kube_store.create(deployment(kube_namespace, "watched"))
    time.sleep(0.5)
    stream.close()
    reader.join(10)
    assert not reader.is_alive(), "the reader still blocks after close()"
    assert outcome and isinstance(outcome[0], list), outcome
