"""The Ingress for `spec.endpoint.enabled`: path `/{name}(/|$)(.*)` (or the given path) rewritten to `/$2`, the
backend spoken to over HTTPS (the sidecar), the ingress class, operator-wide default annotations overlaid by the
deployment's own, and TLS when asked for."""
from .. import names
from .common import metadata


def path_prefix(owner, endpoint):
    return (endpoint.get("path") or f"/{owner.name}").rstrip("/") or "/"


def ingress(owner, endpoint, settings):
    prefix = path_prefix(owner, endpoint)
    annotations = dict(settings.ingress.annotations)
    annotations.update({"nginx.ingress.kubernetes.io/rewrite-target": "/$2",
                        "nginx.ingress.kubernetes.io/use-regex": "true",
                        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"})
    annotations.update(endpoint.get("annotations") or {})
    rule = {"http": {"paths": [{
        "path": f"{'' if prefix == '/' else prefix}(/|$)(.*)", "pathType": endpoint.get("pathType") or
        "ImplementationSpecific",
        "backend": {"service": {"name": names.service(owner.name), "port": {"number": names.SERVICE_PORT}}}}]}}
    host = endpoint.get("host")
    if host:
        rule = {"host": host, **rule}
    spec = {"ingressClassName": endpoint.get("ingressClassName") or settings.ingress.className, "rules": [rule]}
    tls = endpoint.get("tls") or {}
    if tls.get("enabled"):
        secret = tls.get("secretName") or settings.ingress.tlsSecretName or names.tls_secret(owner.name)
        spec["tls"] = [{"secretName": secret, **({"hosts": [host]} if host else {})}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": metadata(owner, owner.name, "ingress", annotations=annotations), "spec": spec}


def external_endpoint(owner, endpoint, ingress_obj=None):
    """The URL clients use from outside: the host when one is set, else the address the ingress controller
    published in the Ingress status; None until either is known."""
    if not endpoint.get("enabled"):
        return None
    scheme = "https" if (endpoint.get("tls") or {}).get("enabled") else "http"
    prefix = path_prefix(owner, endpoint)
    host = endpoint.get("host")
    if not host and ingress_obj:
        lb = ((ingress_obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if lb:
            host = lb[0].get("hostname") or lb[0].get("ip")
    if not host:
        return None
    return f"{scheme}://{host}{'' if prefix == '/' else prefix}"
