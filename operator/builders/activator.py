"""What answers a scale-to-zero deployment's endpoint on a cluster while none of its replicas is ready
(docs/autoscaling.md, "On a cluster"; docs/api.md, decision 16).

- The Deployment `<name>-activator` (one replica): the model pod minus the model. The SAME nginx TLS sidecar (the
  deployment's certificate and nginx ConfigMap: 413 beyond 50 MiB, the sidecar's own 429s), and in place of the model
  server the container `foundry-inference activator` (the platform image) on the deployment's port on 127.0.0.1,
  with the deployment's keys Secret and Entra settings: it checks credentials exactly as the model server does before
  anything starts, wakes the Deployment through its scale subresource and forwards to the model pods. It runs under
  the chart's `inference-activator` account (deployments/scale and reading ModelDeployments in its namespace, nothing
  else) and mounts only its own deployment's Secrets. It needs no GPU: the model's nodeSelector and tolerations are
  not copied.
- The Service `<name>-replicas` (ClusterIP, always the model pods, 443 -> https): where the activator forwards, by its
  ClusterIP (no cluster DNS needed), verifying the deployment's certificate under the main Service's DNS name.
Both are children of the ModelDeployment (garbage-collected with it) and desired only while minReplicas is 0.
"""
from .. import names
from . import deployment as model_pod
from .common import metadata

ACTIVATOR_COMMAND = ["foundry-inference", "activator"]
ACTIVATOR_CONTAINER = "activator"


def replicas_service(owner):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": metadata(owner, names.replicas_service(owner.name), "replicas"),
            "spec": {"type": "ClusterIP", "selector": names.child_labels(owner.name),
                     "ports": [{"name": "https", "port": names.SERVICE_PORT, "targetPort": "https",
                                "protocol": "TCP"}]}}


def _container(owner, spec, resolved, settings, auth_mode, params, replicas_ip):
    env = [e for e in model_pod._env(owner, spec, resolved, settings, auth_mode) if e["name"] in model_pod._AUTH_ENV]
    env += [{"name": "PORT", "value": str(spec.port)},
            {"name": "FOUNDRY_OWNER_KIND", "value": owner.kind},
            {"name": "FOUNDRY_SERVICE_HOST", "value": f"{names.service(owner.name)}.{owner.namespace}.svc"},
            {"name": "FOUNDRY_REPLICAS_ADDRESS", "value": replicas_ip},
            {"name": "FOUNDRY_CA_FILE", "value": f"{names.TLS_DIR}/ca.crt"},
            {"name": "FOUNDRY_MAX_HELD_REQUESTS", "value": str(params.max_held)},
            {"name": "FOUNDRY_HOLD_TIMEOUT_S", "value": f"{params.hold_timeout_s:g}"}]
    mounts = [{"name": "tls", "mountPath": names.TLS_DIR, "readOnly": True}]
    if auth_mode in ("api-key", "both"):
        mounts.append({"name": "api-keys", "mountPath": names.KEYS_DIR, "readOnly": True})
    return {
        "name": ACTIVATOR_CONTAINER, "image": settings.image("model-fetcher"),
        "imagePullPolicy": settings.imagePullPolicy, "command": list(ACTIVATOR_COMMAND), "env": env,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        # through the sidecar, like the model server's (it listens on 127.0.0.1); answered by the activator itself
        "readinessProbe": model_pod._https_probe("/ready", 5, 3),
        "volumeMounts": mounts,
        "securityContext": model_pod._restricted(runAsNonRoot=True, readOnlyRootFilesystem=True),
    }


def deployment(owner, spec, resolved, settings, params, *, tls_secret_name, config_hash, auth_mode, replicas_ip):
    labels = {**names.activator_labels(owner.name), names.COMPONENT_LABEL: "activator"}
    volumes = [v for v in model_pod.volumes(owner, spec, resolved, settings, tls_secret_name, auth_mode)
               if v["name"] != "models"]
    pod = {
        "serviceAccountName": names.ACTIVATOR_SERVICE_ACCOUNT,
        "automountServiceAccountToken": True,      # it wakes the Deployment through the apiserver
        "enableServiceLinks": False,
        "securityContext": model_pod.pod_security_context(),
        "containers": model_pod.drain([_container(owner, spec, resolved, settings, auth_mode, params, replicas_ip),
                                       model_pod.tls_proxy(settings)]),
        "volumes": volumes,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(owner, names.activator(owner.name), "activator"),
        "spec": {
            "replicas": 1, "revisionHistoryLimit": 3,
            "selector": {"matchLabels": names.activator_labels(owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": {names.CONFIG_HASH: config_hash}},
                         "spec": pod},
        },
    }
