"""The operator makes a scale-to-zero deployment's activator on the real kube-apiserver (+ controller-manager): the
Service `<name>-replicas` first, then the activator Deployment pointed at its ClusterIP, both owned by the
ModelDeployment; the deployment's Service selects the activator only while it is available and no replica is ready,
and the model pods again once one is (the autoscaler switches it; the reconcile keeps what it finds); both go when
minReplicas leaves 0. A reconcile between the autoscaler's switch and its replicas-0 write keeps the activator."""
import json

import kubernetes
import pytest

from foundry_inference.operator import names
from foundry_inference.operator.autoscale import cluster
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

    # woken (replicas 1, not ready yet): still the activator, which holds the requests; ready: the autoscaler's
    # next period points the Service at the model pods, and the reconcile keeps that
    scaler = cluster.ClusterScaler(store, [ns])
    store.patch_scale("Deployment", ns, "phi", 1)
    converge(op)
    scaler.step()
    assert selector(env) == names.activator_labels("phi")
    env.make_ready("phi")
    converge(op)
    assert selector(env) == names.activator_labels("phi")          # the reconcile never switches it
    scaler.step()
    assert selector(env) == names.child_labels("phi")
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


class Interleaved(cluster.ClusterScaler):
    """The autoscaler with an operator pass run between its Service switch and its replicas-0 write: the pass reads
    the Deployment with its replica still there and ready, and the Service already on the activator."""

    def __init__(self, store, namespaces, between):
        super().__init__(store, namespaces)
        self.between = between

    def _to_activator(self, workload):
        switched = super()._to_activator(workload)
        self.between()
        return switched


def test_a_reconcile_between_the_switch_to_the_activator_and_replicas_0_keeps_the_activator(env):
    store, ns = env.store, env.ns
    store.create(mdep("phi", ns, autoscaling={"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": 1}))
    op = env.operator()
    converge(op)
    core = kubernetes.client.CoreV1Api(env.kube.api_client())
    wait_for(lambda: mark_ready(core, ns, f"{names.ACTIVATOR_LABEL}=phi") == 1, 60, "the activator pod")
    wait_for(lambda: (store.get("Deployment", ns, "phi-activator").get("status") or {}).get("availableReplicas"),
             60, "the activator available")
    env.make_ready("phi")
    converge(op)
    assert selector(env) == names.child_labels("phi")

    passes = []
    scaler = Interleaved(store, [ns], between=lambda: passes.append(converge(op)))
    [workload] = [w for w in scaler.workloads() if w.name == "phi"]
    assert scaler.write(workload, 0, "idle 1 s (scaleToZeroAfterSeconds 1)")
    assert passes, "no operator pass ran between the two writes"
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 0
    # the pass read replicas 1 with a ready replica: it must not have pointed the Service back at the model pods,
    # which the replicas-0 write is now deleting (the endpoint would refuse connections until the next poll)
    assert selector(env) == names.activator_labels("phi")
    scaler.step()
    converge(op)
    assert selector(env) == names.activator_labels("phi")
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 0
