"""The Service in front of the pods: HTTPS only, port 443 -> the nginx sidecar's 8443. The model server itself listens
on localhost inside the pod, so TLS cannot be bypassed from the cluster network."""
from .. import names
from .common import metadata


def service(owner):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": metadata(owner, names.service(owner.name), "model-server"),
            "spec": {"type": "ClusterIP", "selector": names.child_labels(owner.name),
                     "ports": [{"name": "https", "port": names.SERVICE_PORT, "targetPort": "https",
                                "protocol": "TCP"}]}}


def internal_endpoint(owner):
    return f"https://{names.service(owner.name)}.{owner.namespace}.svc.cluster.local"
