"""The model cache's objects and status (storeModel.enabled): what a StoreModel, its claim and its fetch Job say for
each kind of model, the model pods that mount it, the status read from a Job and its pods, and the settings. The
flows on a real apiserver: tests/integration/test_operator_store.py; on a real node: tests/e2e/test_cluster_store.py.
"""
import datetime
import json

import pytest

from foundry_inference import catalog as catalog_mod
from foundry_inference.operator import names, reconcile_store
from foundry_inference.operator import settings as settings_mod
from foundry_inference.operator import spec as spec_mod
from foundry_inference.operator.builders import deployment as dep_builder
from foundry_inference.operator.builders import store as store_builder
from foundry_inference.operator.resolve import resolve
from foundry_inference.operator.settings import default_catalog_source

from .factories import mdep

pytestmark = pytest.mark.unit
CATALOG = catalog_mod.Catalog(catalog_mod.parse(open(default_catalog_source(), "rb").read()))
ON = settings_mod.from_mapping({"storeModel": {"enabled": True, "storageClassName": "fast"}})
NOW = datetime.datetime(2026, 12, 2, 8, 0, tzinfo=datetime.timezone.utc)


def resolved(settings=ON, **spec):
    obj = mdep("m", "team-a", **spec)
    return resolve(spec_mod.validate(spec_mod.normalise(obj)), settings, CATALOG, {})


def owner(name="m", uid="u-1"):
    return spec_mod.Owner("ModelDeployment", names.API_VERSION, "team-a", name, uid, 1)


def stored(res, uid="sm-1", phase=None, message=None):
    sm = store_builder.store_model(owner(), res, ON)
    sm["metadata"]["uid"] = uid
    if phase:
        sm["status"] = {"phase": phase, "message": message}
    return sm


BYO = {"custom": {"registry": "registry.lab:5000", "repository": "byo/iris", "tag": "v1",
                  "credentials": {"secretRef": {"name": "pull"}}}}


def test_one_name_per_artifact_readable_and_short():
    a = resolved(model=BYO, workloadType="predictive")
    b = resolved(model={"custom": {**BYO["custom"], "tag": "v2"}}, workloadType="predictive")
    name_a = names.store_model(a.name, a.artifact)
    assert name_a == names.store_model(a.name, dict(a.artifact))            # stable
    assert name_a != names.store_model(b.name, b.artifact)                  # another tag: another entry
    assert names.DNS_LABEL.match(name_a) and name_a.startswith("registry-lab-5000-byo-iris")
    long = names.store_model("X" * 300, {"type": "uri", "uri": "https://h/" + "a" * 500})
    assert len(long) <= 51 and len(names.store_job(long)) <= 57


def test_store_model_of_a_catalog_model_sizes_its_volume_from_the_catalog():
    res = resolved()                                    # phi-4-mini cpu: 5,153,960,755 bytes in the catalog
    sm = store_builder.store_model(owner(), res, ON)
    assert sm["spec"]["modelName"] == "Phi-4-mini-instruct-generic-cpu:5"
    assert sm["spec"]["storage"] == {"size": "20Gi", "storageClassName": "fast"}     # 2x 4.8 GiB < 20Gi
    small = settings_mod.from_mapping({"storeModel": {"enabled": True, "volumeSize": "2Gi"}})
    assert store_builder.store_model(owner(), res, small)["spec"]["storage"] == {"size": "10Gi"}
    ref = sm["metadata"]["ownerReferences"]
    assert ref == [{"apiVersion": names.API_VERSION, "kind": "ModelDeployment", "name": "m", "uid": "u-1",
                    "controller": False, "blockOwnerDeletion": False}]
    assert json.loads(sm["metadata"]["annotations"][names.STORE_ARTIFACT]) == res.artifact


def test_source_says_where_the_model_comes_from_without_secrets():
    byo = resolved(model=BYO, workloadType="predictive")
    assert store_builder.source(byo.artifact) == {
        "type": "oci", "registry": "registry.lab:5000", "repository": "byo/iris", "tag": "v1",
        "credentials": {"secretRef": {"name": "pull", "usernameKey": "username", "passwordKey": "password"}}}
    assert store_builder.source({"type": "uri", "uri": "https://h/m.tar.gz?sig=secret", "sha256": "ab" * 32}) == {
        "type": "http", "uri": "https://h/m.tar.gz", "digest": "sha256:" + "ab" * 32}
    assert store_builder.source({"type": "uri", "uri": "azureml://registries/azureml/models/m/versions/1"})[
        "type"] == "catalog"
    assert store_builder.source({"type": "builtin", "name": "iris"}) == {"type": "catalog", "uri": "builtin:iris"}


def test_claim_and_job_fill_the_volume_once_as_the_restricted_fetcher():
    res = resolved(model=BYO, workloadType="predictive")
    sm = stored(res)
    claim = store_builder.volume_claim(sm, ON)
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}},
                             "storageClassName": "fast"}
    job = store_builder.fetch_job(sm, store_builder.artifact_of(sm), ON)
    for child in (claim, job):
        assert child["metadata"]["ownerReferences"] == [store_builder.controller_ref(sm)]
        assert child["metadata"]["labels"][names.STORE_LABEL] == sm["metadata"]["name"]
    assert job["spec"]["backoffLimit"] == 4
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == dep_builder.pod_security_context()
    (fetcher,) = pod["containers"]
    env = {e["name"]: e.get("value") or e.get("valueFrom") for e in fetcher["env"]}
    assert env["FOUNDRY_FETCH_CACHE"] == "/models/.cache" and env["FOUNDRY_FETCH_DEST"] == dep_builder.MODEL_PATH
    assert env["FOUNDRY_FETCH_LIMIT_BYTES"] == env["FOUNDRY_FETCH_CACHE_LIMIT_BYTES"] == str(20 * 1024 ** 3)
    assert env["FOUNDRY_REGISTRY_PASSWORD"] == {"secretKeyRef": {"name": "pull", "key": "password"}}
    assert "pull" not in env["FOUNDRY_FETCH_ARTIFACT"]                      # credentials only by reference


def test_model_pods_of_a_stored_model_mount_it_read_only_and_fetch_nothing():
    res = resolved(model=BYO, workloadType="predictive", port=8000)
    spec = spec_mod.validate(spec_mod.normalise(mdep("m", "team-a", model=BYO, workloadType="predictive")))
    dep = dep_builder.deployment(owner(), spec, res, ON, tls_secret_name="m-tls", config_hash="h",
                                 auth_mode="api-key", store="iris-0123456789")
    pod = dep["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"][0] == {"name": "models", "persistentVolumeClaim": {"claimName": "iris-0123456789",
                                                                            "readOnly": True}}
    plain = dep_builder.deployment(owner(), spec, res, ON, tls_secret_name="m-tls", config_hash="h",
                                   auth_mode="api-key")
    assert plain["spec"]["template"]["spec"]["initContainers"][0]["name"] == dep_builder.FETCH_CONTAINER
    assert store_builder.cached(res, ON) and not store_builder.cached(res, settings_mod.OperatorSettings())
    assert not store_builder.cached(res, ON.for_embedded())      # one machine: the node agent's own cache


# --- status from the Job and its pods ------------------------------------------------------------------------------
def job(*conditions):
    return {"status": {"conditions": [{"type": t, "status": "True", "message": "backoff limit"} for t in conditions]}}


def pod(name, phase, created, **fetcher_state):
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"phase": phase, "containerStatuses": [{"name": dep_builder.FETCH_CONTAINER,
                                                              "state": fetcher_state}]}}


BOUND = {"status": {"phase": "Bound"}, "spec": {}}


def observe(sm, claim, job_obj, pods, log="progress: 50 of 200 bytes (25%)"):
    return reconcile_store.observe(sm, claim, job_obj, pods, lambda p, c: log)


def test_status_phases_follow_the_job_and_its_pods():
    sm = stored(resolved(model=BYO, workloadType="predictive"))
    name = sm["metadata"]["name"]
    pending_claim = {"status": {"phase": "Pending"}, "spec": {"storageClassName": "fast"}}
    assert observe(sm, pending_claim, job(), [])[:2] == (
        "Pending", f"waiting for PersistentVolumeClaim {name} to be bound (storage class fast)")
    running = pod("p1", "Running", "2026-12-02T08:00:00Z", running={})
    assert observe(sm, BOUND, job(), [running]) == ("Storing", "downloading 50 bytes of 200 bytes (25%)", 25, 200)
    died = pod("p0", "Failed", "2026-12-02T07:59:00Z",
               terminated={"exitCode": 1, "message": "progress: 10 of 200 bytes (5%)\nfailed: connection reset\n"})
    phase, message, *_ = observe(sm, BOUND, job(), [running, died])
    assert phase == "Storing" and message.endswith("; retrying after: connection reset")
    assert observe(sm, BOUND, job("Complete"), [])[:3] == ("Available", f"stored in PersistentVolumeClaim {name}",
                                                         100)
    oom = pod("p1", "Failed", "2026-12-02T08:01:00Z", terminated={"exitCode": 137, "reason": "OOMKilled"})
    assert observe(sm, BOUND, job("Failed"), [died, oom])[:2] == (
        "Error", "model fetch failed (2 attempt(s)): exited with 137 (OOMKilled)")
    pulling = pod("p2", "Pending", "2026-12-02T08:02:00Z", waiting={"reason": "ErrImageNeverPull", "message": "x"})
    assert observe(sm, BOUND, job(), [pulling])[1].startswith("cannot start the fetcher: ErrImageNeverPull")


def test_a_deployment_shows_the_store_progress_or_failure():
    sm = stored(resolved(model=BYO, workloadType="predictive"), phase="Storing", message="downloading 1 of 2")
    (cond,) = reconcile_store.conditions(sm)
    assert cond["type"] == names.DOWNLOAD_CONDITION and "downloading 1 of 2 (StoreModel " in cond["message"]
    sm["status"] = {"phase": "Error", "message": "model fetch failed (5 attempt(s)): 404"}
    (cond,) = reconcile_store.conditions(sm)
    assert (cond["type"], cond["status"], cond["reason"]) == ("Progressing", "False", "FetchFailed")
    sm["status"] = {"phase": "Available"}
    assert reconcile_store.conditions(sm) == [] and reconcile_store.available(sm)
    full = reconcile_store.status(sm, ("Available", "stored", 100, 1234), NOW)
    assert full["path"] == f"persistentvolumeclaim/{sm['metadata']['name']}/model" and full["sizeBytes"] == 1234
    assert full["conditions"][0]["type"] == "Ready" and full["conditions"][0]["status"] == "True"


def test_a_store_model_without_an_artifact_is_an_error_not_a_fetch():
    sm = stored(resolved(model=BYO, workloadType="predictive"))
    sm["metadata"]["annotations"][names.STORE_ARTIFACT] = '{"type": "file", "path": "/etc/shadow"}'
    assert store_builder.artifact_of(sm) is None
    sm["metadata"]["annotations"][names.STORE_ARTIFACT] = "not json"
    assert store_builder.artifact_of(sm) is None


@pytest.mark.parametrize("bad, field", [({"volumeSize": "lots"}, "volumeSize"),
                                        ({"volumeSize": "0"}, "volumeSize"),
                                        ({"accessMode": "ReadOnlyMany"}, "accessMode"),
                                        ({"storageClassName": "Fast_SSD"}, "storageClassName"),
                                        ({"fetchBackoffLimit": 99}, "fetchBackoffLimit")])
def test_settings_refuse_a_bad_store_configuration(bad, field):
    with pytest.raises(settings_mod.SettingsError, match=f"storeModel.{field}"):
        settings_mod.from_mapping({"storeModel": {"enabled": True, **bad}})


def test_fetch_job_and_cached_model_pods_are_admitted_by_the_restricted_profile():
    from tests.support.pod_security import restricted_violations
    res = resolved(model=BYO, workloadType="predictive")
    sm = stored(res)
    assert restricted_violations(store_builder.fetch_job(sm, res.artifact, ON)["spec"]["template"]["spec"]) == []
    spec = spec_mod.validate(spec_mod.normalise(mdep("m", "team-a", model=BYO, workloadType="predictive")))
    dep = dep_builder.deployment(owner(), spec, res, ON, tls_secret_name="m-tls", config_hash="h",
                                 auth_mode="api-key", store=sm["metadata"]["name"])
    assert restricted_violations(dep["spec"]["template"]["spec"]) == []


def test_the_stored_size_is_the_largest_total_a_fetcher_reported():
    sm = stored(resolved(model=BYO, workloadType="predictive"))
    sm["status"] = {"phase": "Storing", "sizeBytes": 200}
    running = pod("p2", "Running", "2026-12-02T08:00:00Z", running={})
    # the resumed fetcher counts only the files still missing
    assert observe(sm, BOUND, job(), [running], log="progress: 20 of 150 bytes (13%)")[3] == 200
