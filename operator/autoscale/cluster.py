"""The autoscaler on a cluster: the same Scaler and Policy as the embedded node agent, fed from the apiserver.

Every period `ClusterWorkloads.refresh()` lists, per watched namespace, the Deployments and the model pods once:
an autoscaled Deployment (annotation `foundry.azure.com/autoscaling`) becomes a workload whose replicas are its
`spec.replicas` and whose replicas' gauges are read straight from each Ready pod at
`http://<podIP>:<its containerPort named "metrics">/metrics` (keyless, plain HTTP; the model API stays behind the
TLS sidecar). A Ready pod without an address or a metrics port (vLLM) is missing data: the count holds.

The deployment can go to zero only while its activator Deployment (`<name>-activator`) has an available replica;
before the decision 0 is written, the deployment's Service is switched to select the activator
(builders/service.py), so that the endpoint never routes to pods that are going away. The activator wakes a
deployment with `wake()`: the Deployment's scale subresource, 0 -> 1 only (its ServiceAccount may do nothing else);
the autoscaler then records that decision (`a request arrived while scaled to zero`) as `last-scaling`.
"""
import json
import logging
import threading

from foundry_inference import logs
from foundry_inference.store import errors

from .. import names
from ..builders import service as service_builder
from . import params as scaling_params
from .scaler import Scaler

log = logging.getLogger("foundry_inference.operator.autoscale")
WOKEN = "a request arrived while scaled to zero"
LOST_ACTIVATOR = "no activator answers the endpoint at zero"


def _ready(pod):
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    return not meta.get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


def _metrics_port(pod):
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "metrics" and isinstance(port.get("containerPort"), int):
                return port["containerPort"]
    return None


def metrics_url(pod):
    """The keyless metrics URL of one Ready pod, None when it has no address or no metrics port."""
    ip = (pod.get("status") or {}).get("podIP")
    port = _metrics_port(pod)
    if not ip or port is None:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{names.METRICS_PATH}"


class ClusterWorkload:
    """What the Scaler needs of one autoscaled Deployment (the embedded agent's Workload has the same shape)."""

    def __init__(self, deployment, pods, activator, selector=None):
        meta = deployment["metadata"]
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.deployment = deployment
        self.scaling = scaling_params.of_deployment(deployment)
        self.replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
        self.pods = [p for p in pods if _ready(p)]
        self.activator = activator if _available(activator, deployment) else None
        self.activator_port = bool(self.activator) or None    # truthy: something answers the endpoint at zero
        self.selector = selector      # the deployment's Service's selector as read (None: no Service of its own)
        raw = (meta.get("annotations") or {}).get(names.LAST_SCALING)
        try:
            self.last_decided = int(json.loads(raw)["replicas"]) if raw else None
        except (ValueError, TypeError, KeyError):
            self.last_decided = None

    def metrics_urls(self):
        return [metrics_url(p) for p in self.pods]


def _of_deployment(pod, name):
    """A pod its Deployment's ReplicaSet made (controller `ReplicaSet <name>-<pod-template-hash>`), not any pod that
    merely carries the deployment label: anyone who may create pods in the namespace could otherwise feed the
    autoscaler gauges and move the replica count."""
    meta = pod.get("metadata") or {}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if not name or not template_hash:
        return False
    return any(ref.get("controller") and ref.get("kind") == "ReplicaSet" and ref.get("apiVersion") == "apps/v1"
               and ref.get("name") == f"{name}-{template_hash}" for ref in meta.get("ownerReferences") or [])


def _controller_uid(obj):
    for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _available(deployment, model):
    """The activator answers: it has an available pod and the model's own owner controls it (a look-alike
    Deployment someone else made under that name never lets the deployment go to zero)."""
    owner = _controller_uid(model)
    return (bool(deployment) and owner is not None and _controller_uid(deployment) == owner
            and int((deployment.get("status") or {}).get("availableReplicas") or 0) > 0)


class ClusterWorkloads:
    """() -> the autoscaled Deployments of the watched namespaces as workloads, read fresh at every call."""

    def __init__(self, store, namespaces):
        self.store = store
        self.namespaces = list(namespaces or [None])      # None: every namespace

    def __call__(self):
        found = []
        for namespace in self.namespaces:
            deployments = self.store.list_all("Deployment", namespace,
                                              label_selector=f"{names.MANAGED_BY}={names.MANAGED_BY_VALUE}")
            scaled = [d for d in deployments
                      if scaling_params.ANNOTATION in ((d["metadata"].get("annotations")) or {})]
            if not scaled:
                continue
            by_name = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in deployments}
            services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in self.store.list_all(
                "Service", namespace, label_selector=f"{names.MANAGED_BY}={names.MANAGED_BY_VALUE}")}
            pods = {}
            for pod in self.store.list_all("Pod", namespace, label_selector=names.DEPLOYMENT_LABEL):
                meta = pod["metadata"]
                name = (meta.get("labels") or {}).get(names.DEPLOYMENT_LABEL)
                if _of_deployment(pod, name):
                    pods.setdefault((meta["namespace"], name), []).append(pod)
            for dep in scaled:
                key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
                activator = by_name.get((key[0], names.activator(key[1])))
                svc = services.get((key[0], names.service(key[1])))
                selector = ((svc or {}).get("spec") or {}).get("selector") if _controller_uid(svc) == \
                    _controller_uid(dep) else None
                workload = ClusterWorkload(dep, pods.get(key, []), activator, selector)
                if workload.scaling is not None:
                    found.append(workload)
        return found


class ClusterScaler(Scaler):
    """The Scaler writing to the apiserver: the Service goes to the activator before a scale to zero, and a wake-up
    done by an activator (replicas 0 -> 1 through the scale subresource) is recorded as a decision.

    It is the only writer of a scale-to-zero deployment's Service selector once that Service exists (the operator's
    reconcile keeps the selector it finds there, docs/autoscaling.md): every period it points the Service where
    builders/service.endpoint_selector says, from the Deployment it has just read, and before it writes replicas 0 it
    points the Service at the activator, in the same thread. One writer, in order: no reconcile that read the
    Deployment before the replicas-0 write can point the Service back at pods that are going away."""

    def __init__(self, store, namespaces, clock=None):
        kwargs = {"clock": clock} if clock else {}
        super().__init__(store, ClusterWorkloads(store, namespaces), kick=lambda: None, **kwargs)
        self._workloads_fn = self.workloads
        self.workloads = self._recording

    def _recording(self):
        current = self._workloads_fn()
        for workload in current:
            if workload.replicas > 0 and workload.last_decided == 0:
                self.write(workload, workload.replicas, WOKEN)
                workload.last_decided = workload.replicas
                if workload.scaling is not None:
                    self._policy(workload, self.clock()).touch(self.clock())
            elif workload.replicas == 0 and not workload.activator_port:
                # at zero with no activator to answer (its pod crashed, it was deleted): the endpoint would refuse
                # every request and nothing would wake it, so one replica comes back, and the Service to it
                if self._to_model(workload):
                    self.write(workload, 1, LOST_ACTIVATOR)
                    continue
            self._route(workload)
        return current

    def _route(self, workload):
        """The Service where the rule says, from what was just read (a ready replica: the model pods; at zero or
        waking with an available activator: the activator)."""
        if workload.selector is None or workload.scaling is None or not workload.scaling.scales_to_zero:
            return
        wanted = service_builder.endpoint_selector(workload.name, workload.scaling, workload.deployment,
                                                   workload.activator)
        if workload.selector == wanted:
            return
        if wanted == service_builder.activator_selector(workload.name):
            self._to_activator(workload)
        elif self._to_model(workload):
            logs.event(log, "endpoint to replicas", namespace=workload.namespace, name=workload.name)

    def write(self, workload, replicas, reason):
        if replicas == 0 and not self._to_activator(workload):
            return False
        return super().write(workload, replicas, reason)

    def _to_model(self, workload):
        wanted = names.child_labels(workload.name)
        dropped = {k: None for k in service_builder.activator_selector(workload.name) if k not in wanted}
        try:
            self.store.patch("Service", workload.namespace, names.service(workload.name),
                             {"spec": {"selector": {**dropped, **wanted}}})
        except errors.NotFound:
            return False
        workload.selector = wanted
        return True

    def _to_activator(self, workload):
        """The deployment's Service selects the activator (before its replicas go)."""
        try:
            wanted = service_builder.activator_selector(workload.name)
            dropped = {k: None for k in names.child_labels(workload.name) if k not in wanted}   # a merge patch
            self.store.patch("Service", workload.namespace, names.service(workload.name),
                             {"spec": {"selector": {**dropped, **wanted}}})
        except errors.NotFound:
            return False
        workload.selector = wanted
        logs.event(log, "endpoint to activator", namespace=workload.namespace, name=workload.name)
        return True


def start(store, settings, stop_event):
    """The autoscaler's thread in the operator (`foundry-inference operator` on a cluster): every
    `autoscaling.periodSeconds` until `stop_event` is set. Returns the thread."""
    scaler = ClusterScaler(store, settings.namespaces)
    thread = threading.Thread(target=scaler.run, args=(stop_event, settings.autoscaling.periodSeconds),
                              name="autoscaler", daemon=True)
    thread.start()
    return thread


def wake(store, namespace, name, attempts=3):
    """The activator's call: one replica now if the Deployment has none (the scale subresource; 0 -> 1 only, never
    over a count someone else set in between). True when this call woke it, False when it already had replicas
    or is gone."""
    for _ in range(attempts):
        try:
            scale = store.get_scale("Deployment", namespace, name)
            if int((scale.get("spec") or {}).get("replicas") or 0) > 0:
                return False
            store.patch_scale("Deployment", namespace, name, 1,
                              resource_version=scale["metadata"]["resourceVersion"])
        except errors.NotFound:
            return False
        except errors.Conflict:
            continue              # the Deployment moved (its status, most often): read again
        logs.event(log, "woken", namespace=namespace, name=name)
        return True
    logs.event(log, "wake-up not written: the Deployment kept changing", level=logging.WARNING,
               namespace=namespace, name=name, attempts=attempts)
    return False
