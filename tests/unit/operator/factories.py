"""Objects and helpers shared by the operator's unit and integration tests."""
import base64
import copy
import datetime
import time
import uuid

from foundry_inference.operator import settings as settings_mod
from foundry_inference.operator.loop import Operator

NOW = datetime.datetime(2026, 1, 15, 10, 0, 0, tzinfo=datetime.timezone.utc)
API = "foundrylocal.azure.com/v1"


def settings(namespace, **overrides):
    """Settings watching `namespace` (also the operator namespace), fast backoff for tests."""
    raw = {"watch": {"namespaces": [namespace]}, "operatorNamespace": namespace, "pollIntervalSeconds": 0.2,
           "backoffBaseSeconds": 0.1, "backoffMaxSeconds": 2.0}
    raw.update(overrides)
    return settings_mod.from_mapping(raw)


def mdep(name, namespace, **spec):
    body = {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}
    body.update(spec)
    return {"apiVersion": API, "kind": "ModelDeployment", "metadata": {"name": name, "namespace": namespace},
            "spec": body}


def isvc(name, namespace, **spec):
    body = {"modelSource": {"foundry": {"name": "phi-4-mini"}}, "hardware": "cpu"}
    body.update(spec)
    return {"apiVersion": API, "kind": "InferenceService", "metadata": {"name": name, "namespace": namespace},
            "spec": body}


def custom_model(name, namespace, **spec):
    body = {"displayName": name, "source": {"type": "custom", "custom": {
        "registry": "myacr.azurecr.io", "repository": "models/iris", "tag": "v1"}},
        "capabilities": {"task": "classification"}}
    body.update(spec)
    return {"apiVersion": API, "kind": "Model", "metadata": {"name": name, "namespace": namespace}, "spec": body}


def decoded(secret, key):
    return base64.b64decode(secret["data"][key]).decode()


def new_operator(store, namespace, **overrides):
    return Operator(store, settings(namespace, **overrides))


def converge(op, passes=8):
    """Run passes until one writes nothing and skips nothing (an object in backoff is waited for); returns the
    reports."""
    reports = []
    for _ in range(passes):
        report = op.run_pass()
        reports.append(report)
        if not (report.child_writes or report.status_writes or report.failed or report.skipped):
            break
        if report.failed or report.skipped:
            time.sleep(op.settings.backoffMaxSeconds / 4)
    return reports


def children(store, namespace, name):
    """{(kind, name): object} of everything labelled as belonging to deployment `name`."""
    found = {}
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "Ingress"):
        for obj in store.list_all(kind, namespace, label_selector=f"foundry.azure.com/deployment={name}"):
            found[(kind, obj["metadata"]["name"])] = obj
    return found


def fixed_uuid(seed=0):
    counter = iter(range(seed, seed + 1000))
    return lambda: uuid.UUID(int=next(counter))


def strip_server_fields(obj):
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata", {})
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink"):
        meta.pop(key, None)
    obj.pop("status", None)
    return obj
