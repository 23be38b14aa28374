"""Status as pure data: the state machine, conditions that keep their transition time, nulls for what is unknown;
the semantic comparison behind "apply only what differs"; per-object backoff."""
import copy
import datetime
import types

import pytest

from foundry_inference.operator import apply, compare, names, status
from foundry_inference.operator import settings as settings_mod
from foundry_inference.operator import spec as spec_mod
from foundry_inference.operator.backoff import Backoff
from foundry_inference.operator.reconcile_deployment import Outcome

from .factories import NOW, mdep

pytestmark = pytest.mark.unit
SETTINGS = settings_mod.from_mapping({})


def owner_obj(state=None, generation=1, conditions=None):
    obj = mdep("phi", "ns")
    obj["metadata"].update(uid="u1", generation=generation)
    if state:
        obj["status"] = {"state": state, "conditions": conditions or []}
    return obj


def deployment(ready, replicas=1, generation=1, observed=1, updated=None, total=None, conditions=None):
    return {"metadata": {"generation": generation, "annotations": {}},
            "status": {"readyReplicas": ready, "observedGeneration": observed,
                       "updatedReplicas": replicas if updated is None else updated,
                       "replicas": replicas if total is None else total, "conditions": conditions or []}}


def outcome(obj, dep=None, error=None, keys=None, runtime="onnx-genai"):
    out = Outcome(owner=spec_mod.Owner.of(obj), spec=spec_mod.normalise(obj), deployment=dep, service={"x": 1},
                  keys_secret=keys)
    if error:
        out.error, out.error_stage = error, "resolve"
    else:
        out.resolved = types.SimpleNamespace(name="m:1", variant="m", image="img", runtime=runtime,
                                             workload_type="generative",
                                             engine="vllm" if runtime == "vllm" else "onnx-genai")
    return out


@pytest.mark.parametrize("previous, dep, expected", [
    (None, None, "Creating"),
    (None, deployment(0), "Creating"),
    (None, deployment(1), "Running"),
    ("Running", deployment(0, updated=0, total=2), "Updating"),
    ("Running", deployment(1, generation=2, observed=1), "Updating"),
    ("Error", deployment(0), "Creating"),
    (None, deployment(0, conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                      "message": "ReplicaSet has timed out progressing."}]), "Error"),
])
def test_state_machine(previous, dep, expected):
    obj = owner_obj(previous)
    st = status.compute(obj, outcome(obj, dep), SETTINGS, NOW)
    assert st["state"] == expected
    assert st["observedGeneration"] == 1
    assert set(st) == set(status.FIELDS)


def test_resolution_errors_carry_state_reason_and_message():
    obj = owner_obj()
    st = status.compute(obj, outcome(obj, error=("Pending", "CatalogUnavailable", "waiting")), SETTINGS, NOW)
    assert st["state"] == "Pending" and st["message"] == "waiting"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["ModelResolved"]["status"] == "False" and conds["ModelResolved"]["reason"] == "CatalogUnavailable"
    assert conds["Ready"]["status"] == "False"
    assert st["readyReplicas"] is None and st["deploymentReady"] is None


def test_transition_time_moves_only_when_the_status_flips():
    obj = owner_obj()
    first = status.compute(obj, outcome(obj, deployment(0)), SETTINGS, NOW)
    later = NOW + datetime.timedelta(minutes=5)
    obj["status"] = first
    same = status.compute(obj, outcome(obj, deployment(0)), SETTINGS, later)
    assert not status.changed(first, same)
    flipped = status.compute(obj, outcome(obj, deployment(1)), SETTINGS, later)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times["Ready"] == "2026-01-15T10:05:00Z" and times["ModelResolved"] == "2026-01-15T10:00:00Z"


def test_null_and_absent_compare_equal():
    assert not status.changed({"state": "Running"}, {"state": "Running", "externalEndpoint": None})
    assert status.changed({"state": "Running"}, {"state": "Creating"})


def test_embedded_endpoint_comes_from_the_node_agent():
    obj = owner_obj()
    dep = deployment(1)
    dep["metadata"]["annotations"][names.LOCAL_ENDPOINT] = "https://127.0.0.1:40001"
    st = status.compute(obj, outcome(obj, dep), SETTINGS.for_embedded(), NOW)
    assert st["internalEndpoint"] == "https://127.0.0.1:40001"
    st = status.compute(obj, outcome(obj, dep), SETTINGS, NOW)
    assert st["internalEndpoint"] == "https://phi.ns.svc.cluster.local"


def test_metrics_endpoint_names_the_pod_port_or_the_local_url():
    obj = owner_obj()
    dep = deployment(1)
    assert status.compute(obj, outcome(obj, dep), SETTINGS, NOW)["metricsEndpoint"] == \
        f"http://<pod-ip>:{names.METRICS_PORT}/metrics"
    assert status.compute(obj, outcome(obj, dep, runtime="vllm"), SETTINGS, NOW)["metricsEndpoint"] is None
    assert status.compute(obj, outcome(obj, None), SETTINGS, NOW)["metricsEndpoint"] is None
    dep["metadata"]["annotations"][names.LOCAL_METRICS] = "http://127.0.0.1:40002/metrics"
    st = status.compute(obj, outcome(obj, dep), SETTINGS.for_embedded(), NOW)
    assert st["metricsEndpoint"] == "http://127.0.0.1:40002/metrics"


@pytest.mark.parametrize("a, b, equal", [
    ("1000m", "1", True), ("1Gi", "1024Mi", True), (2, "2", True), ("0.5", "500m", True),
    ("1G", "1Gi", False), ("100m", "0.2", False), ("abc", "abc", True), ("abc", "abd", False)])
def test_quantities_compare_by_value_under_resources(a, b, equal):
    assert compare.contains({"resources": {"limits": {"cpu": a}}}, {"resources": {"limits": {"cpu": b}}}) is equal


def test_contains_ignores_server_defaults_but_not_owned_values():
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "env": [{"name": "X", "value": ""}]}]},
                        "volumes": [{"name": "m", "emptyDir": {}}]}}
    actual = copy.deepcopy(desired)
    actual["spec"]["progressDeadlineSeconds"] = 600
    actual["spec"]["template"]["containers"][0]["imagePullPolicy"] = "Always"
    actual["spec"]["template"]["containers"][0]["env"][0].pop("value")        # the apiserver omits ""
    assert compare.contains(actual, desired)
    actual["spec"]["replicas"] = 3
    assert not compare.contains(actual, desired)
    assert compare.differences(actual, desired) == ["spec.replicas"]
    actual["spec"]["replicas"] = 2
    actual["spec"]["template"]["containers"].append({"name": "b"})
    assert not compare.contains(actual, desired)


def test_desired_hash_notices_a_field_the_operator_stopped_setting():
    from foundry_inference.operator.builders import common
    old = common.with_hash({"kind": "Ingress", "metadata": {"name": "x", "annotations": {}},
                            "spec": {"rules": [], "tls": [{"secretName": "s"}]}})
    new = common.with_hash({"kind": "Ingress", "metadata": {"name": "x", "annotations": {}}, "spec": {"rules": []}})
    assert compare.contains(old["spec"], new["spec"])   # a subset check alone would call them equal
    assert not apply.in_sync(old, new)
    patch = apply.merge_diff(apply._owned(old), apply._owned(apply.merged(old, new)))
    assert patch["spec"] == {"tls": None}


def test_merge_keeps_what_others_own():
    actual = {"kind": "Service", "metadata": {"name": "s", "labels": {"team": "x"}, "annotations": {"a": "1"},
                                              "ownerReferences": [{"uid": "other", "controller": False}]},
              "spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ports": []}}
    desired = {"kind": "Service", "metadata": {"name": "s", "labels": {"mine": "y"},
                                               "ownerReferences": [{"uid": "me", "controller": True}]},
               "spec": {"ports": [{"port": 443}]}}
    new = apply.merged(actual, desired)
    assert new["metadata"]["labels"] == {"team": "x", "mine": "y"} and new["metadata"]["annotations"] == {"a": "1"}
    assert [r["uid"] for r in new["metadata"]["ownerReferences"]] == ["other", "me"]
    assert new["spec"] == {"ports": [{"port": 443}], "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"]}


def test_backoff_doubles_per_object_caps_and_resets():
    now = [0.0]
    b = Backoff(base=1, maximum=8, clock=lambda: now[0], jitter=0)
    assert [b.failed("a") for _ in range(5)] == [1, 2, 4, 8, 8]
    assert not b.ready("a") and b.ready("b")
    now[0] = 100
    assert b.ready("a")
    b.succeeded("a")
    assert b.failed("a") == 1
    b.forget_except({"b"})
    assert b.failures("a") == 0


def test_download_progress_from_the_node_agent_shows_in_the_message_until_running():
    obj = owner_obj()
    progress = {"type": names.DOWNLOAD_CONDITION, "status": "True", "reason": "Downloading",
                "message": "12.0 MiB (12582912 bytes) of 48.0 MiB (50331648 bytes) (25%)"}
    st = status.compute(obj, outcome(obj, deployment(0, conditions=[progress])), SETTINGS.for_embedded(), NOW)
    assert st["state"] == "Creating"
    assert st["message"] == ("creating: 0/1 replicas ready; downloading the model: 12.0 MiB (12582912 bytes) of "
                             "48.0 MiB (50331648 bytes) (25%)")
    downloading = next(c for c in st["conditions"] if c["type"] == "ModelDownloading")
    assert downloading["status"] == "True" and downloading["message"].endswith("(25%)")
    st = status.compute(obj, outcome(obj, deployment(1, conditions=[progress])), SETTINGS.for_embedded(), NOW)
    assert st["state"] == "Running" and "downloading" not in st["message"]
    assert not [c for c in st["conditions"] if c["type"] == "ModelDownloading"]
