"""Embedded-store properties beyond the shared contract: durability, multi-process safety, token expiry."""
import multiprocessing
import time

import pytest

from foundry_inference.store import errors
from foundry_inference.store.embedded import EmbeddedStore

pytestmark = pytest.mark.unit


def cm(name, ns="default", data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": data or {"count": "0"}}


def test_state_survives_reopening_the_file(tmp_path):
    path = tmp_path / "store.db"
    first = EmbeddedStore.with_chart_crds(path)
    created = first.create(cm("kept"))
    first.close()
    again = EmbeddedStore.with_chart_crds(path)
    fetched = again.get("ConfigMap", "default", "kept")
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    later = again.create(cm("later"))
    assert int(later["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def _increment(path, times):
    store = EmbeddedStore.with_chart_crds(path)
    conflicts = 0
    for _ in range(times):
        while True:
            obj = store.get("ConfigMap", "default", "counter")
            obj["data"]["count"] = str(int(obj["data"]["count"]) + 1)
            try:
                store.replace(obj)
                break
            except errors.Conflict:
                conflicts += 1
    return conflicts


def test_two_processes_writing_at_once_lose_no_update(tmp_path):
    path = tmp_path / "store.db"
    EmbeddedStore.with_chart_crds(path).create(cm("counter"))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        conflicts = pool.starmap(_increment, [(path, 60), (path, 60)])
    final = EmbeddedStore.with_chart_crds(path).get("ConfigMap", "default", "counter")
    assert final["data"]["count"] == "120"
    assert sum(conflicts) >= 0  # conflicts are how the loser learns; the count above proves nothing was lost


def test_expired_continue_token_is_gone(tmp_path):
    store = EmbeddedStore.with_chart_crds(tmp_path / "s.db", continue_ttl=0.2)
    for i in range(3):
        store.create(cm(f"c{i}"))
    page = store.list("ConfigMap", "default", limit=1)
    assert page.continue_token
    time.sleep(0.3)
    with pytest.raises(errors.Gone):
        store.list("ConfigMap", "default", limit=1, continue_token=page.continue_token)


def test_no_op_write_keeps_resource_version(tmp_path):
    store = EmbeddedStore.with_chart_crds(tmp_path / "s.db")
    obj = store.create(cm("same"))
    again = store.replace(obj)
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_replace_with_another_uid_is_a_conflict(tmp_path):
    store = EmbeddedStore.with_chart_crds(tmp_path / "s.db")
    obj = store.create(cm("x"))
    store.delete("ConfigMap", "default", "x")
    store.create(cm("x"))
    with pytest.raises(errors.Conflict):
        store.replace(obj)


def test_unreadable_location_is_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(errors.Unavailable):
        EmbeddedStore(blocker / "store.db")


def test_custom_kind_without_crd_is_refused(tmp_path):
    store = EmbeddedStore(tmp_path / "s.db")  # no CRDs installed
    with pytest.raises(errors.NotFound):
        store.create({"apiVersion": "foundrylocal.azure.com/v1", "kind": "Model",
                      "metadata": {"name": "m", "namespace": "default"}, "spec": {}})


def test_dependent_with_a_surviving_owner_is_kept(tmp_path):
    store = EmbeddedStore.with_chart_crds(tmp_path / "s.db")
    a, b = store.create(cm("a")), store.create(cm("b"))
    refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
            for o in (a, b)]
    child = cm("child")
    child["metadata"]["ownerReferences"] = refs
    store.create(child)
    store.delete("ConfigMap", "default", "a")
    assert store.get("ConfigMap", "default", "child")
    store.delete("ConfigMap", "default", "b")
    with pytest.raises(errors.NotFound):
        store.get("ConfigMap", "default", "child")
