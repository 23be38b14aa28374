"""The autoscaler as it runs on a cluster, against the real kube-apiserver and kube-controller-manager: it reads each
Ready model pod's gauges at `<podIP>:<its metrics port>` (a real loopback metrics endpoint; the test plays the
kubelet by marking pods Ready at 127.0.0.1), writes the Deployment's replicas (the deployment controller creates and
deletes the pods), goes to zero only while an activator is available and switches the deployment's Service to the
activator first, and an activator's wake-up (the scale subresource, 0 -> 1 only) is recorded as a decision.
The clock is the test's (the windows are minutes long); everything else is real."""
import json
import signal
import uuid

import kubernetes
import pytest
import yaml

from foundry_inference.operator import names
from foundry_inference.operator.autoscale import cluster
from foundry_inference.operator.autoscale import params as params_mod
from foundry_inference.operator.builders import service as service_builder
from foundry_inference.store import errors
from foundry_inference.store.kube import KubernetesStore
from tests.support import helm
from tests.support.procs import Cli
from tests.unit.operator.test_autoscale_policy import params
from tests.unit.operator.test_autoscale_scaler import Metrics

from .test_operator_reconcile import wait_for

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def run(self, scaler, steps, tick_first=False):
        """`steps` autoscaler periods of 2 s (the clock moves before each step with tick_first, else after)."""
        for _ in range(steps):
            self.now += 2 if tick_first else 0
            scaler.step()
            self.now += 0 if tick_first else 2


def deployment(name, ns, labels, replicas, metrics_port=None, annotations=None, owner=None):
    ports = [{"name": "metrics", "containerPort": metrics_port}] if metrics_port else []
    meta = {"name": name, "namespace": ns, "labels": dict(labels), "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"], "controller": True}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [
                         {"name": "c", "image": "registry.invalid/c:1", "ports": ports}]}}}}


def mark_ready(core, ns, selector):
    """As a kubelet would: every live pod of `selector` Running, Ready, at 127.0.0.1. Returns their count."""
    count = 0
    for pod in core.list_namespaced_pod(ns, label_selector=selector).items:
        if pod.metadata.deletion_timestamp:
            continue
        count += 1
        if not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
                "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}})
    return count


def owner(store, ns):
    return store.get("ConfigMap", ns, "owner")


def live_pods(core, ns, selector):
    return [p for p in core.list_namespaced_pod(ns, label_selector=selector).items if not p.metadata.deletion_timestamp]


@pytest.fixture
def setup(kube, kube_store):
    ns = kube.create_namespace(f"cas-{uuid.uuid4().hex[:8]}")
    metrics = Metrics()
    scaling = params(min_replicas=0, max_replicas=3, target_concurrency=1, scale_down_delay_s=5.0,
                     scale_to_zero_after_s=20.0, period_s=2.0, stable_window_s=10.0, panic_window_s=4.0)
    port = int(metrics.url.split(":")[2].split("/")[0])
    # the ModelDeployment's stand-in: it controls the model Deployment and the activator (as the operator makes them)
    owner = kube_store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": ns}})
    kube_store.create(deployment("phi", ns, names.child_labels("phi"), 1, metrics_port=port,
                                 annotations={params_mod.ANNOTATION: scaling.to_annotation()}, owner=owner))
    kube_store.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "phi", "namespace": ns},
                       "spec": {"selector": names.child_labels("phi"),
                                "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}})
    core = kubernetes.client.CoreV1Api(kube.api_client())
    yield ns, kube_store, core, metrics
    metrics.close()


def test_scales_on_pod_gauges_and_to_zero_only_behind_an_available_activator(setup):
    ns, store, core, metrics = setup
    model = f"{names.DEPLOYMENT_LABEL}=phi"
    wait_for(lambda: mark_ready(core, ns, model) == 1, 60, "the first pod")
    clock = Clock()
    scaler = cluster.ClusterScaler(store, [ns], clock=clock)

    # load of 3 in flight on one replica (target 1): the panic window asks for 3 at once
    metrics.value, metrics.answered = 3.0, 5.0
    clock.run(scaler, 3)
    dep = store.get("Deployment", ns, "phi")
    assert dep["spec"]["replicas"] == 3
    assert json.loads(dep["metadata"]["annotations"][names.LAST_SCALING])["reason"].startswith("panic")
    wait_for(lambda: mark_ready(core, ns, model) == 3, 60, "three pods from the deployment controller")

    # idle: every replica reports nothing in flight and no new request: down to one after the delay, and no
    # further without an activator (nothing would answer the endpoint at zero)
    metrics.value = 0.0
    clock.run(scaler, 30)
    dep = store.get("Deployment", ns, "phi")
    assert dep["spec"]["replicas"] == 1
    assert json.loads(dep["metadata"]["annotations"][names.LAST_SCALING])["reason"].startswith("load 0.0")
    wait_for(lambda: len(live_pods(core, ns, model)) == 1, 60, "two pods deleted by the deployment controller")
    assert store.get("Service", ns, "phi")["spec"]["selector"] == names.child_labels("phi")
    # the answered counters are summed over the ready pods: two pods leaving moves the sum, which is activity. On a
    # busy apiserver they can still have been listed during the 30 periods above: idle for scaleToZeroAfter again
    clock.run(scaler, 11)
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 1           # nothing answers at zero yet

    # an available activator: the Service selects it first, then the replicas go and the pods are deleted
    store.create(deployment(names.activator("phi"), ns, names.activator_labels("phi"), 1, owner=owner(store, ns)))
    activator = f"{names.ACTIVATOR_LABEL}=phi"
    wait_for(lambda: mark_ready(core, ns, activator) == 1 and int(
        (store.get("Deployment", ns, names.activator("phi")).get("status") or {}).get("availableReplicas") or 0),
        60, "the activator available")
    scaler.step()
    dep = store.get("Deployment", ns, "phi")
    assert dep["spec"]["replicas"] == 0
    assert json.loads(dep["metadata"]["annotations"][names.LAST_SCALING])["reason"].startswith("idle")
    assert store.get("Service", ns, "phi")["spec"]["selector"] == names.activator_labels("phi")
    wait_for(lambda: not live_pods(core, ns, model), 60, "the model pods deleted")
    assert len(live_pods(core, ns, activator)) == 1

    # the activator's wake-up: replicas 0 -> 1 through the scale subresource, once; recorded as a decision
    assert cluster.wake(store, ns, "phi") is True
    assert cluster.wake(store, ns, "phi") is False          # already waking: no second write
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 1
    wait_for(lambda: len(live_pods(core, ns, model)) == 1, 60, "a pod created at once by the deployment controller")
    scaler.step()
    decision = json.loads(store.get("Deployment", ns, "phi")["metadata"]["annotations"][names.LAST_SCALING])
    assert decision == {"replicas": 1, "reason": cluster.WOKEN, "time": decision["time"]}


def test_wake_never_overrides_a_count_and_a_missing_deployment_is_no_error(setup):
    ns, store, _core, _metrics = setup
    store.patch_scale("Deployment", ns, "phi", 2)
    assert cluster.wake(store, ns, "phi") is False
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 2
    assert cluster.wake(store, ns, "nobody") is False


def test_a_ready_pod_whose_metrics_do_not_answer_holds_the_count(setup):
    ns, store, core, metrics = setup
    wait_for(lambda: mark_ready(core, ns, f"{names.DEPLOYMENT_LABEL}=phi") == 1, 60, "the first pod")
    store.create(deployment(names.activator("phi"), ns, names.activator_labels("phi"), 1, owner=owner(store, ns)))
    wait_for(lambda: mark_ready(core, ns, f"{names.ACTIVATOR_LABEL}=phi") == 1 and int(
        (store.get("Deployment", ns, names.activator("phi")).get("status") or {}).get("availableReplicas") or 0),
        60, "the activator available")
    metrics.close()                                          # the replica's metrics endpoint is gone
    clock = Clock()
    scaler = cluster.ClusterScaler(store, [ns], clock=clock)
    clock.run(scaler, 40)
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 1     # never to zero on missing data
    assert store.get("Service", ns, "phi")["spec"]["selector"] == names.child_labels("phi")


def test_the_endpoint_selector_rule():
    p0, p1 = params(min_replicas=0, max_replicas=2), params(min_replicas=1, max_replicas=2)
    up = {"availableReplicas": 1}

    def dep(replicas, ready):
        return {"spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}
    model, act = names.child_labels("m"), names.activator_labels("m")
    sel = service_builder.endpoint_selector
    assert sel("m", p0, dep(0, 0), {"status": up}) == act               # at zero
    assert sel("m", p0, dep(1, 0), {"status": up}) == act               # waking: held at the activator
    assert sel("m", p0, dep(1, 1), {"status": up}) == model             # a replica is ready
    assert sel("m", p0, dep(0, 0), {"status": {}}) == model             # no available activator: never to it
    assert sel("m", p0, dep(0, 0), None) == model
    assert sel("m", p1, dep(1, 0), {"status": up}) == model             # cannot scale to zero
    assert sel("m", None, dep(0, 0), {"status": up}) == model           # fixed replicas
    assert sel("m", p0, None, {"status": up}) == model                  # no Deployment yet


def test_the_charts_activator_identity_can_wake_and_nothing_else(kube, kube_store):
    """The chart's activator RBAC applied to the real apiserver; a token of its ServiceAccount (TokenRequest, as in
    its pod) can wake a Deployment and is refused everything else (a template, a Secret, another namespace)."""
    ns, other = (kube.create_namespace(f"cas-{uuid.uuid4().hex[:8]}") for _ in range(2))
    rendered = helm.render({"watch": {"namespaces": [ns]}})
    objects = [o for o in rendered.objects if o["metadata"]["name"] == "inference-activator"]
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Role", "RoleBinding"}
    helm.server_side_apply(kube.api_client(), objects)
    for namespace in (ns, other):
        kube_store.create(deployment("phi", namespace, names.child_labels("phi"), 0))
    kube_store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "phi-api-keys", "namespace": ns},
                       "stringData": {"key1": "secret"}})
    as_activator = KubernetesStore(kubeconfig=helm.sa_kubeconfig(kube, ns, "inference-activator"))
    try:
        def woken():
            try:
                return cluster.wake(as_activator, ns, "phi")
            except errors.Forbidden:
                return False                                 # the RoleBinding is not in the authorizer's cache yet
        wait_for(woken, 30, "the activator's wake-up allowed")
        assert kube_store.get("Deployment", ns, "phi")["spec"]["replicas"] == 1
        with pytest.raises(errors.NotFound):            # reading its owner's state by name is allowed
            as_activator.get("ModelDeployment", ns, "phi")
        refused = [
            lambda: as_activator.patch("Deployment", ns, "phi", {"spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "attacker.invalid/x:1"}]}}}}),
            lambda: as_activator.patch("Deployment", ns, "phi", {"spec": {"replicas": 5}}),
            lambda: as_activator.get("Secret", ns, "phi-api-keys"),
            lambda: as_activator.list("Pod", ns),
            lambda: cluster.wake(as_activator, other, "phi"),
            lambda: as_activator.patch_scale("ModelDeployment", ns, "phi", 1),
            lambda: as_activator.list("ModelDeployment", ns),
            lambda: as_activator.get("ModelDeployment", other, "phi"),
        ]
        for call in refused:
            with pytest.raises(errors.Forbidden):
                call()
        assert kube_store.get("Deployment", other, "phi")["spec"]["replicas"] == 0
        assert kube_store.get("Deployment", ns, "phi")["spec"]["template"]["spec"]["containers"][0]["image"] == \
            "registry.invalid/c:1"
    finally:
        as_activator.close()


def test_the_operator_process_runs_the_autoscaler_beside_its_loop(setup, kube, tmp_path):
    """`foundry-inference operator` on the real apiserver (as in its pod): the load on a replica's gauges moves the
    Deployment's replicas within a few periods, without any ModelDeployment event; SIGTERM stops both cleanly."""
    ns, store, core, metrics = setup
    wait_for(lambda: mark_ready(core, ns, f"{names.DEPLOYMENT_LABEL}=phi") == 1, 60, "the first pod")
    metrics.value, metrics.answered = 3.0, 1.0
    config = tmp_path / "operator.yaml"
    config.write_text(yaml.safe_dump({"watch": {"namespaces": [ns]}, "operatorNamespace": ns,
                                      "autoscaling": {"periodSeconds": 0.5}}))
    cli = Cli("operator", "--kubeconfig", kube.kubeconfig, log_path=tmp_path / "operator.log",
              env={"FOUNDRY_OPERATOR_CONFIG": str(config), "FOUNDRY_OPERATOR_HEALTH_PORT": "0"})
    try:
        wait_for(lambda: store.get("Deployment", ns, "phi")["spec"]["replicas"] == 3, 60,
                 "the operator's autoscaler scaling on the pod's gauges")
    finally:
        rc = cli.stop(signal.SIGTERM)
    assert rc == 0, cli.log()
    assert "scaled" in cli.log()


def test_idle_without_an_activator_goes_down_to_one_replica_not_zero(setup):
    """After a burst, the zero decision (scaleToZeroAfterSeconds shorter than the stable window) comes before any
    scale-down; with nothing to answer the endpoint at zero the deployment must still shrink, to one replica."""
    ns, store, core, metrics = setup
    quick = params(min_replicas=0, max_replicas=3, target_concurrency=1, scale_down_delay_s=5.0,
                   scale_to_zero_after_s=2.0, period_s=2.0, stable_window_s=10.0, panic_window_s=4.0)
    store.patch("Deployment", ns, "phi", {"metadata": {"annotations": {params_mod.ANNOTATION: quick.to_annotation()}}})
    model = f"{names.DEPLOYMENT_LABEL}=phi"
    wait_for(lambda: mark_ready(core, ns, model) == 1, 60, "the first pod")
    clock = Clock()
    scaler = cluster.ClusterScaler(store, [ns], clock=clock)
    metrics.value, metrics.answered = 3.0, 1.0
    scaler.step()
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 3
    wait_for(lambda: mark_ready(core, ns, model) == 3, 60, "three pods")
    metrics.value = 0.0
    clock.run(scaler, 20, tick_first=True)
    dep = store.get("Deployment", ns, "phi")
    assert dep["spec"]["replicas"] == 1
    reason = json.loads(dep["metadata"]["annotations"][names.LAST_SCALING])["reason"]
    assert reason.startswith("idle") and "one replica kept" in reason
    assert store.get("Service", ns, "phi")["spec"]["selector"] == names.child_labels("phi")


def _available_activator_and_quick_params(store, core, ns, scale_to_zero_after_s):
    """An available activator, the first model pod ready, and short autoscaling periods with minReplicas 0."""
    store.create(deployment(names.activator("phi"), ns, names.activator_labels("phi"), 1, owner=owner(store, ns)))
    wait_for(lambda: mark_ready(core, ns, f"{names.ACTIVATOR_LABEL}=phi") == 1 and int(
        (store.get("Deployment", ns, names.activator("phi")).get("status") or {}).get("availableReplicas") or 0),
        60, "the activator available")
    wait_for(lambda: mark_ready(core, ns, f"{names.DEPLOYMENT_LABEL}=phi") == 1, 60, "the first pod")
    quick = params(min_replicas=0, max_replicas=3, target_concurrency=1, scale_down_delay_s=5.0,
                   scale_to_zero_after_s=scale_to_zero_after_s, period_s=2.0, stable_window_s=10.0,
                   panic_window_s=4.0)
    store.patch("Deployment", ns, "phi", {"metadata": {"annotations": {params_mod.ANNOTATION: quick.to_annotation()}}})


def test_at_zero_without_an_available_activator_one_replica_comes_back(setup):
    """The activator answers a deployment at zero; if it goes (deleted, or no pod available), nothing would answer
    the endpoint nor wake the deployment: the autoscaler brings one replica back and points the Service at it."""
    ns, store, core, metrics = setup
    model = f"{names.DEPLOYMENT_LABEL}=phi"
    _available_activator_and_quick_params(store, core, ns, scale_to_zero_after_s=2.0)
    clock = Clock()
    scaler = cluster.ClusterScaler(store, [ns], clock=clock)
    clock.run(scaler, 3, tick_first=True)
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 0
    assert store.get("Service", ns, "phi")["spec"]["selector"] == names.activator_labels("phi")
    scaler.step()
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 0        # stays while the activator answers

    store.delete("Deployment", ns, names.activator("phi"))
    clock.now += 2
    scaler.step()
    dep = store.get("Deployment", ns, "phi")
    assert dep["spec"]["replicas"] == 1
    assert json.loads(dep["metadata"]["annotations"][names.LAST_SCALING])["reason"] == cluster.LOST_ACTIVATOR
    assert store.get("Service", ns, "phi")["spec"]["selector"] == names.child_labels("phi")
    wait_for(lambda: len(live_pods(core, ns, model)) == 1, 60, "a model pod again")


def test_attack_a_pod_that_only_carries_the_deployment_label_does_not_move_the_replicas(setup):
    """Someone who may create pods in the namespace labels one like the model's and serves a huge load from it: the
    autoscaler reads only the pods of the Deployment's own ReplicaSet."""
    ns, store, core, metrics = setup
    model = f"{names.DEPLOYMENT_LABEL}=phi"
    wait_for(lambda: mark_ready(core, ns, model) == 1, 60, "the first pod")
    metrics.value, metrics.answered = 0.0, 1.0                      # the real replica is idle
    rogue = Metrics()
    rogue.value = 1000.0
    try:
        port = int(rogue.url.split(":")[2].split("/")[0])
        labels = {**names.child_labels("phi"), "pod-template-hash": "abc12"}
        container = {"name": "c", "image": "registry.invalid/c:1",
                     "ports": [{"name": "metrics", "containerPort": port}]}
        # its own pod-template-hash: the ReplicaSet's selector does not match it, so nothing adopts or deletes it
        core.create_namespaced_pod(ns, {"metadata": {"name": "rogue", "labels": labels},
                                        "spec": {"containers": [container]}})
        mark_ready(core, ns, "pod-template-hash=abc12")
        clock = Clock()
        scaler = cluster.ClusterScaler(store, [ns], clock=clock)
        clock.run(scaler, 5)
        assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 1
        assert len(live_pods(core, ns, model)) == 2                  # the rogue pod was there all along
    finally:
        rogue.close()


def test_attack_a_look_alike_activator_never_lets_the_deployment_go_to_zero(setup):
    """A Deployment named `<name>-activator` with an available pod, made by someone else (not controlled by the
    deployment's owner): the endpoint would route to it, so the autoscaler never goes to zero behind it."""
    ns, store, core, metrics = setup
    model = f"{names.DEPLOYMENT_LABEL}=phi"
    wait_for(lambda: mark_ready(core, ns, model) == 1, 60, "the first pod")
    metrics.value, metrics.answered = 0.0, 0.0
    store.create(deployment(names.activator("phi"), ns, names.activator_labels("phi"), 1))      # no owner
    wait_for(lambda: mark_ready(core, ns, f"{names.ACTIVATOR_LABEL}=phi") == 1 and int(
        (store.get("Deployment", ns, names.activator("phi")).get("status") or {}).get("availableReplicas") or 0),
        60, "the look-alike available")
    clock = Clock()
    scaler = cluster.ClusterScaler(store, [ns], clock=clock)
    for _ in range(40):                                             # 80 s of idle, well past scaleToZeroAfter
        scaler.step()
        clock.now += 2
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 1
    assert store.get("Service", ns, "phi")["spec"]["selector"] == names.child_labels("phi")


def test_a_woken_replica_is_not_sent_back_to_zero_before_the_held_requests_reach_it(setup):
    """Woken by the activator, the new replica turns ready; its answered-request counter happens to equal the last
    replica's (here both 0), and the deployment has been idle since before it went to zero. Its first sample must
    count as activity (the requests held while it started are about to be forwarded to it): it stays for
    scaleToZeroAfterSeconds from then, instead of going to zero at once."""
    ns, store, core, metrics = setup
    model = f"{names.DEPLOYMENT_LABEL}=phi"
    _available_activator_and_quick_params(store, core, ns, scale_to_zero_after_s=4.0)
    metrics.value, metrics.answered = 0.0, 0.0
    clock = Clock()
    scaler = cluster.ClusterScaler(store, [ns], clock=clock)
    clock.run(scaler, 4, tick_first=True)
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 0
    wait_for(lambda: not live_pods(core, ns, model), 60, "the model pod deleted")

    assert cluster.wake(store, ns, "phi") is True
    clock.run(scaler, 1, tick_first=True)                   # the wake is recorded; the pod is not ready yet
    wait_for(lambda: mark_ready(core, ns, model) == 1, 60, "the woken pod ready")
    clock.now += 30                                         # it took a while to start
    scaler.step()
    assert store.get("Deployment", ns, "phi")["spec"]["replicas"] == 1
    clock.run(scaler, 3, tick_first=True)                   # then idle for scaleToZeroAfterSeconds: to zero
    dep = store.get("Deployment", ns, "phi")
    assert dep["spec"]["replicas"] == 0
    assert json.loads(dep["metadata"]["annotations"][names.LAST_SCALING])["reason"].startswith("idle")
