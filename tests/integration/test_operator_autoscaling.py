"""spec.autoscaling in the operator, on the real kube-apiserver (integration) and on the embedded store (unit): the
autoscaler owns the child Deployment's replicas (the operator keeps its count within the bounds, as with an HPA),
its last decision and ScaledToZero (a ready state) show in the status; fixed replicas stay as they were."""
import json

import pytest

from foundry_inference.operator import names
from tests.unit.operator.factories import converge, mdep

from .test_operator_reconcile import STORES, make_env, status_of, wait_for


@pytest.fixture(params=STORES)
def env(request):
    return make_env(request, "as")


def scale(env, replicas, reason):
    """What the autoscaler writes: the Deployment's replicas and its decision (docs/autoscaling.md)."""
    env.store.patch("Deployment", env.ns, "phi", {
        "metadata": {"annotations": {names.LAST_SCALING: json.dumps(
            {"replicas": replicas, "reason": reason, "time": "2026-12-02T00:00:00Z"})}},
        "spec": {"replicas": replicas}})


def settle_at_zero(env):
    """No replica left, as the node agent (embedded) or the deployment controller (kube) reports it."""
    if env.kind == "embedded":
        env.make_ready("phi")
        return

    def settled():
        dep = env.store.get("Deployment", env.ns, "phi")
        st = dep.get("status") or {}
        return (st.get("observedGeneration", 0) >= dep["metadata"]["generation"] and not st.get("replicas")
                and not st.get("readyReplicas"))

    wait_for(settled, 60, "the Deployment at zero replicas")


def test_the_autoscaler_owns_replicas_and_scaled_to_zero_is_ready(env):
    env.store.create(mdep("phi", env.ns, autoscaling={"minReplicas": 0, "maxReplicas": 3,
                                                      "scaleToZeroAfterSeconds": 60}))
    op = env.operator()
    converge(op)
    dep = env.store.get("Deployment", env.ns, "phi")
    assert dep["spec"]["replicas"] == 1                      # one replica first, even with minReplicas 0
    env.make_ready("phi")
    converge(op)
    st = status_of(env, "phi")
    assert st["state"] == "Running" and st["desiredReplicas"] == 1 and st["replicas"] == 1
    assert st.get("lastScaling") is None
    assert st["selector"] == f"{names.MANAGED_BY}={names.MANAGED_BY_VALUE},{names.DEPLOYMENT_LABEL}=phi"

    scale(env, 3, "load 9 in flight, target 3 per replica")
    converge(op)
    assert env.store.get("Deployment", env.ns, "phi")["spec"]["replicas"] == 3     # kept, not reverted to 1
    st = status_of(env, "phi")
    assert st["desiredReplicas"] == 3 and st["state"] == "Updating"
    assert st["lastScaling"] == {"replicas": 3, "reason": "load 9 in flight, target 3 per replica",
                                 "time": "2026-12-02T00:00:00Z"}

    scale(env, 0, "idle 60 s")
    settle_at_zero(env)
    converge(op)
    st = status_of(env, "phi")
    assert st["state"] == "ScaledToZero" and st["desiredReplicas"] == 0 and st["readyReplicas"] == 0
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "ScaledToZero"


def test_narrower_bounds_clamp_the_autoscaled_count_and_removal_restores_fixed_replicas(env):
    env.store.create(mdep("phi", env.ns, autoscaling={"minReplicas": 1, "maxReplicas": 5}))
    op = env.operator()
    converge(op)
    scale(env, 5, "burst")
    converge(op)
    env.store.patch("ModelDeployment", env.ns, "phi", {"spec": {"autoscaling": {"maxReplicas": 2}}})
    converge(op)
    assert env.store.get("Deployment", env.ns, "phi")["spec"]["replicas"] == 2
    env.store.patch("ModelDeployment", env.ns, "phi", {"spec": {"autoscaling": None, "replicas": 4}})
    converge(op)
    assert env.store.get("Deployment", env.ns, "phi")["spec"]["replicas"] == 4
    assert status_of(env, "phi").get("lastScaling") is None


def test_fixed_replicas_are_still_the_operators(env):
    env.store.create(mdep("phi", env.ns, replicas=2))
    op = env.operator()
    converge(op)
    scale(env, 5, "someone else")
    converge(op)
    assert env.store.get("Deployment", env.ns, "phi")["spec"]["replicas"] == 2
    st = status_of(env, "phi")
    assert st["desiredReplicas"] == 2 and st.get("lastScaling") is None


@pytest.mark.parametrize("annotation", ["not json", "[1, 2]", json.dumps({"replicas": "many", "reason": "x" * 5000}),
                                        json.dumps({"replicas": True})])
def test_attack_a_garbled_decision_annotation_never_breaks_the_status(env, annotation):
    env.store.create(mdep("phi", env.ns, autoscaling={"maxReplicas": 2}))
    op = env.operator()
    converge(op)
    env.store.patch("Deployment", env.ns, "phi", {"metadata": {"annotations": {names.LAST_SCALING: annotation}}})
    converge(op)
    last = status_of(env, "phi").get("lastScaling")
    assert last is None or (last.get("replicas") is None and len(last.get("reason") or "") <= 512)
