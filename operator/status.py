"""Status of a ModelDeployment / InferenceService, computed as pure data from what one reconcile saw and did.

State: Pending (waiting on something that may appear by itself: the catalog), Creating (children exist, never ready
yet), Running (every replica ready on the current template), ScaledToZero (spec.autoscaling stopped the last
replica after an idle time; a ready state: the next request starts one), Updating (was running, a rollout or scale
is under way), Error (invalid spec, unresolvable model, a child refused, or the rollout stopped progressing),
Terminating (being deleted). Conditions keep their lastTransitionTime unless their status flips; every field of the
CRD's status is written, null while unknown (docs/api.md, decision 4), so a merge patch of the whole status is exact.
"""
import datetime
import json

from . import names
from .builders import deployment as deployment_builder
from .builders import ingress as ingress_builder
from .builders import keys as keys_builder
from .builders import service as service_builder

FIELDS = ("state", "message", "replicas", "desiredReplicas", "selector", "lastScaling", "readyReplicas",
          "deploymentReady", "serviceReady", "internalEndpoint",
          "metricsEndpoint", "externalEndpoint", "resolvedModel", "authentication", "conditions", "observedGeneration")


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def rfc3339(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(previous, type_, status, reason, message, generation, now):
    """A condition; keeps the previous lastTransitionTime when the status did not change."""
    old = next((c for c in previous or [] if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status and old.get(
        "lastTransitionTime") else rfc3339(now)
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since,
            "observedGeneration": generation}


def rollout(deployment, replicas):
    """(ready replicas, complete?, failure message or None) of a child Deployment."""
    if deployment is None:
        return 0, False, None
    st = deployment.get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    current = int(st.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 1)
    complete = (current and ready >= replicas and int(st.get("updatedReplicas") or 0) >= replicas
                and int(st.get("replicas") or 0) == replicas)
    failure = None
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == "False":
            failure = cond.get("message") or cond.get("reason") or "the rollout is not progressing"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            failure = cond.get("message") or "replicas cannot be created"
    return ready, complete, None if complete else failure


def _child_condition(outcome, type_, status="True"):
    """The condition of `type_` with `status` that the embedded node agent set on the child Deployment, or that the
    deployment's pods show on a cluster (pod_status.conditions: the same shape), else None."""
    found = ((outcome.deployment or {}).get("status") or {}).get("conditions") or []
    return next((c for c in [*(outcome.pod_conditions or []), *found]
                 if c.get("type") == type_ and c.get("status") == status), None)


def desired_replicas(deployment, spec):
    """spec.replicas; with spec.autoscaling the autoscaler's count on the child Deployment (initially the first)."""
    if spec is None:
        return 1
    if spec.autoscaling is None:
        return spec.replicas
    current = ((deployment or {}).get("spec") or {}).get("replicas")
    return spec.autoscaling.initial_replicas if current is None else int(current)


def selector(owner):
    """The model-server pods' label selector as a string (the scale subresource's labelSelectorPath)."""
    return ",".join(f"{k}={v}" for k, v in sorted(names.child_labels(owner.name).items()))


def last_scaling(deployment):
    """The autoscaler's last decision ({replicas, reason, time}) from the child Deployment, None when unreadable."""
    raw = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(names.LAST_SCALING)
    try:
        found = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    replicas = found.get("replicas")
    return {"replicas": replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else None,
            "reason": str(found["reason"])[:512] if found.get("reason") is not None else None,
            "time": str(found["time"])[:64] if found.get("time") is not None else None}


def compute(obj, outcome, settings, now=None):
    """The whole status object for `obj` given a ReconcileOutcome (see reconcile_deployment)."""
    now = now or now_utc()
    meta = obj["metadata"]
    generation = int(meta.get("generation") or 1)
    previous = obj.get("status") or {}
    prev_conditions = previous.get("conditions") or []
    owner, spec, resolved = outcome.owner, outcome.spec, outcome.resolved
    autoscaled = spec is not None and spec.autoscaling is not None
    replicas = desired_replicas(outcome.deployment, spec)
    ready, complete, failure = rollout(outcome.deployment, replicas)
    stuck = next((c for c in outcome.pod_conditions or [] if c.get("type") == "Progressing"), None)
    if stuck is not None and not complete:
        failure = stuck.get("message")      # the pods name the cause; the Deployment only its deadline, later
    conds = []

    def add(type_, status_, reason, message):
        conds.append(condition(prev_conditions, type_, status_, reason, message, generation, now))

    if meta.get("deletionTimestamp"):
        state, reason, message = "Terminating", "Deleting", "the deployment is being deleted"
    elif outcome.error:
        state, reason, message = outcome.error
    elif failure:
        state, reason, message = "Error", "RolloutFailed", failure
    elif complete and autoscaled and replicas == 0:
        state, reason, message = "ScaledToZero", "ScaledToZero", "no replica runs (idle); the next request starts one"
    elif complete:
        state, reason, message = "Running", "Running", f"{ready}/{replicas} replicas ready"
    elif (_child_condition(outcome, "Progressing") or {}).get("reason") == names.NODE_RESTART_REASON:
        state, reason, message = "Creating", "Restarting", f"the node restarted; starting: {ready}/{replicas} " \
                                                           "replicas ready"
    elif previous.get("state") in ("Running", "Updating") and outcome.deployment is not None:
        state, reason, message = "Updating", "RollingOut", f"updating: {ready}/{replicas} replicas ready"
    else:
        state, reason, message = "Creating", "Creating", f"creating: {ready}/{replicas} replicas ready"
    download = _child_condition(outcome, names.DOWNLOAD_CONDITION)
    if download is not None and state in ("Creating", "Updating"):
        reason, message = "DownloadingModel", f"{message}; downloading the model: {download.get('message')}"

    if resolved is not None:
        add("ModelResolved", "True", "Resolved", f"{resolved.name} ({resolved.variant}) on {resolved.image}")
    elif outcome.error:
        add("ModelResolved", "False" if outcome.error_stage == "resolve" else "Unknown", outcome.error[1],
            outcome.error[2])
    if outcome.deployment is not None:
        if complete:
            add("Available", "True", "MinimumReplicasAvailable", f"{ready}/{replicas} replicas ready")
        else:
            add("Available", "False", "ProgressDeadlineExceeded" if failure else "ReplicasNotReady",
                failure or f"{ready}/{replicas} replicas ready")
    auth = None
    if spec is not None and spec.auth_enabled:
        if outcome.keys_secret is not None:
            auth = keys_builder.status(outcome.keys_secret)
            add("KeysReady", "True", "KeysCreated", f"API keys in Secret {auth['keysSecretName']}")
        else:
            add("KeysReady", "False", "NotCreated", "API keys are created once the model resolves and the children "
                                                    "can be written")
    if download is not None and state in ("Creating", "Updating"):
        add("ModelDownloading", "True", "Downloading", download.get("message") or "downloading the model")
    restarts = _child_condition(outcome, names.RESTARTS_CONDITION)
    if restarts is not None:
        add("ModelServerRestarted", "True", "ProcessExited", restarts.get("message") or "the model server restarted")
    if spec is not None and spec.dropped:
        add("SettingsIgnored", "True", "BlockedOrReserved", "ignored: " + ", ".join(spec.dropped))
    if obj["kind"] == "InferenceService":
        add("Deprecated", "True", "LegacyKind", "InferenceService is deprecated; use Model + ModelDeployment")
    add("Ready", "True" if state in ("Running", "ScaledToZero") else "False", reason, message)

    service_ready = outcome.service is not None
    dep_annotations = (outcome.deployment or {}).get("metadata", {}).get("annotations") or {}
    if settings.embedded:
        internal = dep_annotations.get(names.LOCAL_ENDPOINT)
        metrics = dep_annotations.get(names.LOCAL_METRICS)
    else:
        internal = service_builder.internal_endpoint(owner) if service_ready and owner else None
        metrics = (deployment_builder.POD_METRICS_ENDPOINT
                   if outcome.deployment is not None and resolved and deployment_builder.has_metrics_port(resolved)
                   else None)
    external = (ingress_builder.external_endpoint(owner, spec.endpoint, outcome.ingress)
                if spec is not None and outcome.ingress is not None else None)
    return {
        "state": state,
        "message": message,
        "replicas": int(((outcome.deployment or {}).get("status") or {}).get("replicas") or 0)
        if outcome.deployment is not None else None,
        "desiredReplicas": replicas if spec is not None else None,
        "selector": selector(owner) if owner is not None else None,
        "lastScaling": last_scaling(outcome.deployment) if autoscaled else None,
        "readyReplicas": ready if outcome.deployment is not None else None,
        "deploymentReady": complete if outcome.deployment is not None else None,
        "serviceReady": service_ready if outcome.deployment is not None or service_ready else None,
        "internalEndpoint": internal,
        "metricsEndpoint": metrics,
        "externalEndpoint": external,
        "resolvedModel": ({"name": resolved.name, "variant": resolved.variant, "image": resolved.image,
                           "workloadType": resolved.workload_type, "runtime": resolved.engine,
                           "port": spec.port if spec else None}
                          if resolved else None),
        "authentication": auth,
        "conditions": conds,
        "observedGeneration": generation,
    }


def _normal(value):
    """Compare statuses as stored: a null field and an absent one are the same; nested nulls too."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def changed(previous, new):
    return _normal(previous or {}) != _normal(new)
