"""The Service in front of the pods: HTTPS only, port 443 -> the nginx sidecar's 8443. The model server itself listens
on localhost inside the pod, so TLS cannot be bypassed from the cluster network."""
from .. import names
from .common import metadata


def activator_selector(name):
    return names.activator_labels(name)


def endpoint_selector(name, params, deployment, activator):
    """Whom the deployment's Service selects: its model pods, or its activator while the deployment can scale to
    zero, has no ready replica (at zero, or waking) and the activator has an available pod. Never the activator
    when nothing would answer there (the model pods then, as without autoscaling)."""
    def status(obj, field):
        return int(((obj or {}).get("status") or {}).get(field) or 0)
    if params is None or not params.scales_to_zero or deployment is None or status(activator, "availableReplicas") < 1:
        return names.child_labels(name)
    replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
    if replicas == 0 or status(deployment, "readyReplicas") == 0:
        return activator_selector(name)
    return names.child_labels(name)


def service(owner, selector=None):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": metadata(owner, names.service(owner.name), "model-server"),
            "spec": {"type": "ClusterIP", "selector": selector or names.child_labels(owner.name),
                     "ports": [{"name": "https", "port": names.SERVICE_PORT, "targetPort": "https",
                                "protocol": "TCP"}]}}


def internal_endpoint(owner):
    return f"https://{names.service(owner.name)}.{owner.namespace}.svc.cluster.local"
