"""One contract, two stores: the embedded SQLite store and the real kube-apiserver must behave the same."""
import re
import threading
import time
import uuid

import pytest

from foundry_inference.store import errors

STORES = [pytest.param("embedded", marks=pytest.mark.unit), pytest.param("kube", marks=pytest.mark.integration)]


@pytest.fixture(params=STORES)
def env(request):
    """(store, namespace, other namespace) for the store under test."""
    if request.param == "embedded":
        store = request.getfixturevalue("embedded_store")
        return store, "team-a", "team-b"
    kube = request.getfixturevalue("kube")
    store = request.getfixturevalue("kube_store")
    suffix = uuid.uuid4().hex[:8]
    return store, kube.create_namespace(f"a-{suffix}"), kube.create_namespace(f"b-{suffix}")


def mdep(name, ns, replicas=1, labels=None, **spec):
    body = {"model": {"catalog": {"name": "phi-4-mini", "version": "latest"}}, "compute": "cpu", "replicas": replicas}
    body.update(spec)
    return {"apiVersion": "foundrylocal.azure.com/v1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": body}


def configmap(name, ns, owner=None, labels=None):
    meta = {"name": name, "namespace": ns, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                    "controller": True, "blockOwnerDeletion": True}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def causes_fields(exc):
    """Cause field paths, list indices dropped: kube-apiserver 1.20 reports `spec.tolerations.effect` where current
    versions (and the embedded store) report `spec.tolerations[0].effect`."""
    return {re.sub(r"\[\d+\]", "", c.get("field") or "") for c in exc.value.causes}


# --- create / get -----------------------------------------------------------------------------------------------

def test_create_sets_server_fields_and_defaults(env):
    store, ns, _ = env
    created = store.create(mdep("phi", ns))
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert created["spec"]["port"] == 5000 and created["spec"]["workloadType"] == "generative"
    assert created["spec"]["runtime"] == "onnx-genai"
    fetched = store.get("ModelDeployment", ns, "phi")
    assert fetched["metadata"]["uid"] == meta["uid"]
    assert fetched["spec"] == created["spec"]


def test_create_twice_is_already_exists_and_keeps_the_first(env):
    store, ns, _ = env
    first = store.create(mdep("phi", ns, replicas=2))
    with pytest.raises(errors.AlreadyExists):
        store.create(mdep("phi", ns, replicas=5))
    assert store.get("ModelDeployment", ns, "phi")["spec"]["replicas"] == 2
    assert isinstance(errors.AlreadyExists("x"), errors.Conflict)
    assert store.get("ModelDeployment", ns, "phi")["metadata"]["uid"] == first["metadata"]["uid"]


def test_get_missing_is_not_found(env):
    store, ns, _ = env
    with pytest.raises(errors.NotFound):
        store.get("ModelDeployment", ns, "nope")


def test_unknown_kind_is_a_typed_error(env):
    store, ns, _ = env
    with pytest.raises(errors.UnknownKind):
        store.get("Banana", ns, "x")
    with pytest.raises(errors.UnknownKind):
        store.create({"apiVersion": "v1", "kind": "Banana", "metadata": {"name": "x", "namespace": ns}})


def test_unknown_fields_are_pruned(env):
    store, ns, _ = env
    obj = mdep("phi", ns)
    obj["spec"]["sneaky"] = {"a": 1}
    obj["spec"]["resources"] = {"limits": {"cpu": "1", "bogus": 1}}
    created = store.create(obj)
    assert "sneaky" not in created["spec"]
    assert "bogus" not in created["spec"]["resources"]["limits"]


# --- schema validation: the same bad objects are refused by both ------------------------------------------------

@pytest.mark.parametrize("mutate, field", [
    (lambda o: o["spec"].update(replicas=101), "spec.replicas"),
    (lambda o: o["spec"].update(replicas=0), "spec.replicas"),
    (lambda o: o["spec"].update(port=80), "spec.port"),
    (lambda o: o["spec"].update(compute="tpu"), "spec.compute"),
    (lambda o: o["spec"].update(replicas="three"), "spec.replicas"),
    (lambda o: o["spec"].update(displayName="x" * 257), "spec.displayName"),
    (lambda o: o["spec"].update(resources={"limits": {"gpu": 9}}), "spec.resources.limits.gpu"),
    (lambda o: o["spec"].update(tolerations=[{"key": "a", "effect": "Sometimes"}]), "spec.tolerations.effect"),
    (lambda o: o["spec"].pop("compute"), "spec.compute"),
])
def test_schema_violations_are_invalid_with_field_path(env, mutate, field):
    store, ns, _ = env
    obj = mdep("bad", ns)
    mutate(obj)
    with pytest.raises(errors.Invalid) as exc:
        store.create(obj)
    assert field in causes_fields(exc), exc.value.causes
    with pytest.raises(errors.NotFound):
        store.get("ModelDeployment", ns, "bad")


def test_model_needs_exactly_one_reference(env):
    store, ns, _ = env
    two = mdep("two", ns, model={"ref": "m", "catalog": {"name": "phi-4-mini"}})
    none = mdep("none", ns, model={})
    for obj in (two, none):
        with pytest.raises(errors.Invalid) as exc:
            store.create(obj)
        assert any(f and f.startswith("spec.model") for f in causes_fields(exc)), exc.value.causes


@pytest.mark.parametrize("name", ["Bad_Name", "-lead", "x" * 64, "has.dot"])
def test_names_that_are_not_dns_labels_are_invalid(env, name):
    store, ns, _ = env
    with pytest.raises(errors.Invalid) as exc:
        store.create(mdep(name, ns))
    assert "metadata.name" in causes_fields(exc)


# --- replace / patch / status -------------------------------------------------------------------------------------

def test_replace_with_stale_resource_version_conflicts_and_changes_nothing(env):
    store, ns, _ = env
    created = store.create(mdep("phi", ns))
    fresh = dict(created, spec=dict(created["spec"], replicas=3))
    updated = store.replace(fresh)
    assert updated["spec"]["replicas"] == 3
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    stale = dict(created, spec=dict(created["spec"], replicas=7))
    with pytest.raises(errors.Conflict):
        store.replace(stale)
    assert store.get("ModelDeployment", ns, "phi")["spec"]["replicas"] == 3


def test_generation_bumps_on_spec_change_only(env):
    store, ns, _ = env
    obj = store.create(mdep("phi", ns))
    obj["metadata"]["labels"] = {"team": "x"}
    obj = store.replace(obj)
    assert obj["metadata"]["generation"] == 1
    obj = store.patch("ModelDeployment", ns, "phi", {"spec": {"replicas": 4}})
    assert obj["metadata"]["generation"] == 2
    obj = store.patch_status("ModelDeployment", ns, "phi", {"state": "Running", "readyReplicas": 4})
    assert obj["metadata"]["generation"] == 2


def test_status_is_written_only_through_patch_status(env):
    store, ns, _ = env
    obj = mdep("phi", ns)
    obj["status"] = {"state": "Running"}
    created = store.create(obj)
    assert (created.get("status") or {}).get("state") is None
    created["status"] = {"state": "Error"}
    replaced = store.replace(created)
    assert (replaced.get("status") or {}).get("state") is None
    patched = store.patch("ModelDeployment", ns, "phi", {"status": {"state": "Error"}, "spec": {"replicas": 2}})
    assert (patched.get("status") or {}).get("state") is None and patched["spec"]["replicas"] == 2
    status = store.patch_status("ModelDeployment", ns, "phi", {"state": "Running", "message": "ok",
                                                               "conditions": [{"type": "Ready", "status": "True"}]})
    assert status["status"]["state"] == "Running"
    assert store.get("ModelDeployment", ns, "phi")["status"]["conditions"][0]["type"] == "Ready"


def test_invalid_status_is_refused(env):
    store, ns, _ = env
    store.create(mdep("phi", ns))
    with pytest.raises(errors.Invalid) as exc:
        store.patch_status("ModelDeployment", ns, "phi", {"state": "Exploded"})
    assert "status.state" in causes_fields(exc)


def test_merge_patch_null_removes_and_invalid_patch_changes_nothing(env):
    store, ns, _ = env
    store.create(mdep("phi", ns, labels={"a": "1", "b": "2"}))
    obj = store.patch("ModelDeployment", ns, "phi", {"metadata": {"labels": {"a": None}}})
    assert obj["metadata"]["labels"] == {"b": "2"}
    with pytest.raises(errors.Invalid):
        store.patch("ModelDeployment", ns, "phi", {"spec": {"replicas": 1000}})
    assert store.get("ModelDeployment", ns, "phi")["spec"]["replicas"] == 1


def test_patch_missing_object_is_not_found(env):
    store, ns, _ = env
    with pytest.raises(errors.NotFound):
        store.patch("ModelDeployment", ns, "ghost", {"spec": {"replicas": 2}})
    with pytest.raises(errors.NotFound):
        store.patch_status("ModelDeployment", ns, "ghost", {"state": "Running"})


def test_concurrent_replaces_one_wins_one_conflicts(env):
    store, ns, _ = env
    base = store.create(mdep("phi", ns))
    results = []

    def writer(replicas):
        obj = dict(base, spec=dict(base["spec"], replicas=replicas))
        try:
            store.replace(obj)
            results.append("ok")
        except errors.Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=writer, args=(r,)) for r in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "ok"]


# --- delete and garbage collection ----------------------------------------------------------------------------------

def test_delete_then_not_found(env):
    store, ns, _ = env
    store.create(mdep("phi", ns))
    store.delete("ModelDeployment", ns, "phi")
    with pytest.raises(errors.NotFound):
        store.get("ModelDeployment", ns, "phi")
    with pytest.raises(errors.NotFound):
        store.delete("ModelDeployment", ns, "phi")


def test_children_are_garbage_collected_with_their_owner(env):
    store, ns, _ = env
    owner = store.create(mdep("phi", ns))
    other = store.create(mdep("other", ns))
    store.create(configmap("phi-nginx", ns, owner=owner))
    store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "phi-api-keys", "namespace": ns, "ownerReferences": configmap("x", ns, owner)["metadata"][
            "ownerReferences"]}, "stringData": {"primary-key": "fndry-pk-1"}})
    store.create(configmap("other-nginx", ns, owner=other))
    store.delete("ModelDeployment", ns, "phi")
    deadline = time.monotonic() + 60
    gone = set()
    while time.monotonic() < deadline and len(gone) < 2:
        for kind, name in (("ConfigMap", "phi-nginx"), ("Secret", "phi-api-keys")):
            try:
                store.get(kind, ns, name)
            except errors.NotFound:
                gone.add(name)
        time.sleep(0.5)
    assert gone == {"phi-nginx", "phi-api-keys"}
    assert store.get("ConfigMap", ns, "other-nginx")["data"] == {"k": "v"}


def test_a_child_created_after_its_owner_was_deleted_is_garbage_collected(env):
    """A controller acting on a stale view may create a child for an owner deleted a moment before: the garbage
    collector removes such a child, so nothing outlives its owner."""
    store, ns, _ = env
    owner = store.create(mdep("gone", ns))
    store.delete("ModelDeployment", ns, "gone")
    store.create(configmap("gone-nginx", ns, owner=owner))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            store.get("ConfigMap", ns, "gone-nginx")
        except errors.NotFound:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("a child of a deleted owner was kept")


def test_secret_string_data_is_stored_as_base64(env):
    store, ns, _ = env
    created = store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", "namespace": ns},
                            "stringData": {"primary-key": "fndry-pk-abc"}})
    assert created["data"] == {"primary-key": "Zm5kcnktcGstYWJj"}
    assert "stringData" not in store.get("Secret", ns, "keys")


# --- list, selectors, pagination -----------------------------------------------------------------------------------

def test_list_namespace_and_all_namespaces(env):
    store, ns, other = env
    store.create(mdep("one", ns))
    store.create(mdep("two", other))
    assert [o["metadata"]["name"] for o in store.list("ModelDeployment", ns).items] == ["one"]
    everywhere = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in store.list_all("ModelDeployment")}
    assert {(ns, "one"), (other, "two")} <= everywhere


@pytest.mark.parametrize("selector, expected", [
    ("tier=gold", {"a"}),
    ("tier!=gold", {"b", "c"}),
    ("tier in (gold,silver)", {"a", "b"}),
    ("tier notin (gold)", {"b", "c"}),
    ("tier", {"a", "b"}),
    ("!tier", {"c"}),
    ("tier=gold,team=x", {"a"}),
    ("tier=none", set()),
])
def test_label_selectors(env, selector, expected):
    store, ns, _ = env
    store.create(mdep("a", ns, labels={"tier": "gold", "team": "x"}))
    store.create(mdep("b", ns, labels={"tier": "silver"}))
    store.create(mdep("c", ns))
    names = {o["metadata"]["name"] for o in store.list("ModelDeployment", ns, label_selector=selector).items}
    assert names == expected


def test_malformed_selector_and_continue_token_are_invalid(env):
    store, ns, _ = env
    with pytest.raises(errors.Invalid):
        store.list("ModelDeployment", ns, label_selector="tier in (gold")
    with pytest.raises(errors.Invalid):
        store.list("ModelDeployment", ns, limit=5, continue_token="not-a-token!!")


def test_pagination_over_260_objects(env):
    store, ns, _ = env
    for i in range(260):
        store.create(configmap(f"cm-{i:03d}", ns, labels={"even": str(i % 2 == 0).lower()}))
    seen, token, pages = [], None, 0
    while True:
        page = store.list("ConfigMap", ns, limit=50, continue_token=token)
        pages += 1
        assert len(page.items) <= 50
        seen += [o["metadata"]["name"] for o in page.items]
        token = page.continue_token
        if not token:
            break
    names = [n for n in seen if n.startswith("cm-")]
    assert names == sorted(names) and len(names) == 260 and len(set(names)) == 260
    assert pages >= 6
    evens = store.list_all("ConfigMap", ns, label_selector="even=true", page_size=40)
    assert len(evens) == 130
