"""The operator makes a scale-to-zero deployment's activator on the real kube-apiserver (+ controller-manager): the
Service `<name>-replicas` first, then the activator Deployment pointed at its ClusterIP, both owned by the
ModelDeployment; the deployment's Service selects the activator only while it is available and no replica is ready,
and the model pods again once one is; both go when minReplicas leaves 0."""
import json

import kubernetes
import pytest

from foundry_inference.operator import names
from tests.unit.operator.factories import converge, mdep

from .test_cluster_autoscaler import mark_ready
from .test_operator_reconcile import make_env, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=["kube"])
def env(request):
    return make_env(request, "oa")


def selector(env):
    return env.store.get("Service", env.ns, "phi")["spec"]["selector"]


def test_the_operator_makes_the_activator_and_routes_to_it_only_while_nothing_else_answers(env):
    store, ns = env.store, env.ns
    store.create(mdep("phi", ns, autoscaling={"minReplicas": 0, "maxReplicas": 3, "scaleToZeroAfterSeconds": 60}))
    op = env.operator()
    converge(op)
    replicas_svc = store.get("Service", ns, "phi-replicas")
    assert replicas_svc["spec"]["selector"] == names.child_labels("phi")
    activator = store.get("Deployment", ns, "phi-activator")
    owner = store.get("ModelDeployment", ns, "phi")
    assert activator["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    env_vars = {e["name"]: e.get("value") for e in activator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_vars["FOUNDRY_REPLICAS_ADDRESS"] == replicas_svc["spec"]["clusterIP"]
    # the activator's pods are not the model Deployment's: it neither adopts nor counts them
    core = kubernetes.client.CoreV1Api(env.kube.api_client())
    wait_for(lambda: mark_ready(core, ns, f"{names.ACTIVATOR_LABEL}=phi") == 1, 60, "the activator pod")
    env.make_ready("phi")
    converge(op)
    assert selector(env) == names.child_labels("phi")              # a ready replica: the model pods
    assert store.get("Deployment", ns, "phi")["status"]["readyReplicas"] == 1
    assert status_state(env) == "Running"

    # the autoscaler goes to zero (its switch first, then replicas 0): the reconcile keeps the Service on the activator
    store.patch("Service", ns, "phi", {"spec": {"selector": {names.DEPLOYMENT_LABEL: None,
                                                             **names.activator_labels("phi")}}})
    store.patch("Deployment", ns, "phi", {"spec": {"replicas": 0}, "metadata": {"annotations": {
        names.LAST_SCALING: json.dumps({"replicas": 0, "reason": "idle", "time": "2026-12-02T00:00:00Z"})}}})
    wait_for(lambda: not (store.get("Deployment", ns, "phi").get("status") or {}).get("replicas"), 60, "zero")
    converge(op)
    assert selector(env) == names.activator_labels("phi")
    assert status_state(env) == "ScaledToZero"
    assert store.get("Deployment", ns, "phi-activator")["spec"]["replicas"] == 1     # it is what answers now

    # woken (replicas 1, not ready yet): still the activator, which holds the requests; ready: the model pods
    store.patch_scale("Deployment", ns, "phi", 1)
    converge(op)
    assert selector(env) == names.activator_labels("phi")
    env.make_ready("phi")
    converge(op)
    assert selector(env) == names.child_labels("phi")

    # minReplicas 1: nothing answers at zero any more, and nothing is needed there
    store.patch("ModelDeployment", ns, "phi", {"spec": {"autoscaling": {"minReplicas": 1,
                                                                        "scaleToZeroAfterSeconds": None}}})
    converge(op)
    env.wait_gone("Deployment", "phi-activator")
    env.wait_gone("Service", "phi-replicas")
    assert selector(env) == names.child_labels("phi")


def status_state(env):
    return (env.store.get("ModelDeployment", env.ns, "phi").get("status") or {}).get("state")
