"""The model-serving Deployment: a model-fetcher init container, the model server and the nginx TLS sidecar.

- The model server listens on 127.0.0.1 only; nginx (8443) is the pod's only open API port, so probes go through it
  (HTTPS, the app's own /health and /ready paths) and TLS cannot be bypassed.
- Metrics: the model server also serves `GET /metrics` alone, without a key, on the pod's port `metrics` (9464).
  The Service and the Ingress never route to it; the pod template's prometheus.io/* annotations (and the chart's
  optional PodMonitor) point scrapers at it. vLLM pods have none: vLLM serves /metrics on its API port only.
- API keys are the `<name>-api-keys` Secret mounted as files; the operator creates the Secret before the Deployment.
  The volume is optional so that a pod restarting while someone deleted the Secret still starts (with no valid key)
  and the kubelet fills the files once the operator has recreated it; the middleware re-reads them every few
  seconds.
- The pod template carries a hash of the nginx config and certificate, so a change to either rolls the pods.
- vLLM has no auth of its own: its pods add the `auth-proxy` container (the platform image, `foundry-inference
  auth-proxy`) on the deployment's port, between nginx and vLLM (which listens on the next port, 127.0.0.1 only);
  only the proxy mounts the keys.
"""
import json

from .. import names
from ..autoscale import params as scaling_params
from ..blobcache import parse_size
from .common import metadata

CHAT_COMMAND = ["foundry-inference", "chat-server"]
PREDICTIVE_COMMAND = ["foundry-inference", "predictive-server"]
VLLM_COMMAND = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
FETCH_COMMAND = ["python", "-m", "foundry_inference.operator.fetch"]
TERMINATION_LOG = "/dev/termination-log"     # the Kubernetes default terminationMessagePath, set explicitly
AUTH_PROXY_COMMAND = ["foundry-inference", "auth-proxy"]
APP_CONTAINER, PROXY_CONTAINER, FETCH_CONTAINER = "model-server", "tls-proxy", "model-fetcher"
AUTH_PROXY_CONTAINER = "auth-proxy"
_AUTH_ENV = ("FOUNDRY_DEPLOYMENT_NAME", "FOUNDRY_DEPLOYMENT_NAMESPACE", "FOUNDRY_AUTH_MODE", "FOUNDRY_API_KEYS_DIR",
             "FOUNDRY_ENTRA_TENANT_ID", "FOUNDRY_ENTRA_CLIENT_ID")


def vllm_port(port):
    """vLLM's own port, behind the auth proxy (which takes the deployment's port, where nginx sends requests)."""
    return port + 1 if port < 65535 else port - 1
MODEL_PATH = f"{names.MODELS_DIR}/{names.MODEL_SUBDIR}"


def _restricted(**extra):
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, **extra}


def pod_security_context():
    """The restricted Pod Security profile of every pod the operator makes: non-root with a fixed uid/gid (the
    platform images' own user; nginx-unprivileged and vLLM run fine as it), emptyDirs and Secret files group-owned by
    it."""
    return {"runAsNonRoot": True, "runAsUser": names.POD_UID, "runAsGroup": names.POD_UID,
            "fsGroup": names.POD_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def _quantity(value):
    return str(value)


def resources(spec):
    """Container resources: cpu/memory as given (defaults 100m/256Mi, 1000m/1Gi), gpu -> nvidia.com/gpu."""
    out = {}
    for section in ("requests", "limits"):
        values = {k: _quantity(v) for k, v in (spec.resources.get(section) or {}).items() if k != "gpu"}
        if values:
            out[section] = values
    if spec.compute == "gpu" and not spec.skip_gpu_resource and spec.gpu_count:
        out.setdefault("limits", {})["nvidia.com/gpu"] = str(spec.gpu_count)
    return out


def vllm_args(preferences):
    """vLLM engine arguments from spec.vllm.preferences (allowlisted options only): `key: value` -> `--key=value`
    (one token, so a value can never become an option of its own), true -> a bare flag, false/null -> omitted,
    a list -> the flag repeated, a mapping -> JSON."""
    args = []
    for key in sorted(preferences):
        value = preferences[key]
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            args += [f"{flag}={item}" for item in value]
        elif isinstance(value, dict):
            args.append(f"{flag}={json.dumps(value, sort_keys=True, separators=(',', ':'))}")
        else:
            args.append(f"{flag}={value}")
    return args


def _env(owner, spec, resolved, settings, auth_mode):
    env = [{"name": "PORT", "value": str(spec.port)},
           {"name": "FOUNDRY_MODEL_PATH", "value": MODEL_PATH},
           {"name": "FOUNDRY_MODEL_ID", "value": resolved.name},
           {"name": "FOUNDRY_DEPLOYMENT_NAME", "value": owner.name},
           {"name": "FOUNDRY_DEPLOYMENT_NAMESPACE", "value": owner.namespace},
           {"name": "FOUNDRY_AUTH_MODE", "value": auth_mode}]
    host_var = "FOUNDRY_PREDICTIVE_HOST" if resolved.workload_type == "predictive" else "FOUNDRY_CHAT_HOST"
    env.append({"name": host_var, "value": "127.0.0.1"})
    if has_metrics_port(resolved):
        env += [{"name": "FOUNDRY_METRICS_PORT", "value": str(names.METRICS_PORT)},
                {"name": "FOUNDRY_METRICS_HOST", "value": "0.0.0.0"}]     # noqa: S104 - pod-to-pod, /metrics only
    if auth_mode in ("api-key", "both"):
        env.append({"name": "FOUNDRY_API_KEYS_DIR", "value": names.KEYS_DIR})
    if auth_mode in ("entra", "both"):
        env += [{"name": "FOUNDRY_ENTRA_TENANT_ID", "value": settings.authentication.tenantId},
                {"name": "FOUNDRY_ENTRA_CLIENT_ID", "value": settings.authentication.clientId}]
    if resolved.runtime == "vllm":
        env.append({"name": "HOME", "value": "/tmp"})     # vLLM's image is built for root; its caches go to $HOME
    env += [{"name": name, "value": value} for name, value in spec.env]
    return env


# status.metricsEndpoint in a cluster: every pod answers on its own address (Prometheus finds them by the
# annotations below or the chart's PodMonitor); the Service does not carry the port
POD_METRICS_ENDPOINT = f"http://<pod-ip>:{names.METRICS_PORT}{names.METRICS_PATH}"


def has_metrics_port(resolved):
    return resolved.runtime != "vllm"


def scrape_annotations(resolved):
    if not has_metrics_port(resolved):
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(names.METRICS_PORT),
            "prometheus.io/path": names.METRICS_PATH, "prometheus.io/scheme": "http"}


def _https_probe(path, period, failures, timeout=5, initial=0):
    # the port by number: a probe's named port resolves only among its OWN container's ports, and "https" is the TLS
    # sidecar's (a real kubelet fails such a probe with `strconv.Atoi: parsing "https"`, so the pod never turned Ready)
    probe = {"httpGet": {"path": path, "port": names.TLS_PORT, "scheme": "HTTPS"}, "periodSeconds": period,
             "failureThreshold": failures, "timeoutSeconds": timeout}
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe


def model_server(owner, spec, resolved, settings, auth_mode):
    if resolved.runtime == "vllm":
        command = VLLM_COMMAND
        # the user's options first: what the platform fixes comes last, and the last value wins. vLLM listens behind
        # the auth proxy (auth_proxy below), which has the deployment's port.
        args = [*vllm_args(spec.vllm_preferences), "--model", MODEL_PATH, "--served-model-name", resolved.name,
                "--host", "127.0.0.1", "--port", str(vllm_port(spec.port))]
        health, ready = "/health", "/health"
    else:
        command = PREDICTIVE_COMMAND if resolved.workload_type == "predictive" else CHAT_COMMAND
        args = None
        health, ready = "/health", "/ready"
    container = {
        "name": APP_CONTAINER, "image": resolved.image, "imagePullPolicy": settings.imagePullPolicy,
        "command": list(command),
        "env": _env(owner, spec, resolved, settings, auth_mode),
        "ports": [{"name": "vllm" if resolved.runtime == "vllm" else "http",
                   "containerPort": vllm_port(spec.port) if resolved.runtime == "vllm" else spec.port,
                   "protocol": "TCP"}],
        "resources": resources(spec),
        # the last log lines of a crashed server become its termination message (status: why it keeps exiting)
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # model loading can take minutes: the startup probe allows 10 of them before liveness takes over. An
        # autoscaled deployment's replica is probed every second (same 10 minutes; readiness failing after the same
        # 15 s): a new replica, and the first one after scale to zero, then serves within a second of being ready
        # instead of after the next 10 s startup tick plus a 5 s readiness tick
        "startupProbe": _https_probe(health, 1, 600) if spec.autoscaling else _https_probe(health, 10, 60),
        "livenessProbe": _https_probe(health, 20, 3),
        "readinessProbe": _https_probe(ready, 1, 15) if spec.autoscaling else _https_probe(ready, 5, 3),
        "volumeMounts": [{"name": "models", "mountPath": names.MODELS_DIR, "readOnly": resolved.runtime != "vllm"}],
        "securityContext": _restricted(),
    }
    if has_metrics_port(resolved):
        container["ports"].append({"name": "metrics", "containerPort": names.METRICS_PORT, "protocol": "TCP"})
    if args:
        container["args"] = args
    if auth_mode in ("api-key", "both") and resolved.runtime != "vllm":
        container["volumeMounts"].append({"name": "api-keys", "mountPath": names.KEYS_DIR, "readOnly": True})
    return container


def auth_proxy(owner, spec, resolved, settings, auth_mode):
    """vLLM has no auth of its own: this container (the platform image) checks every request with the platform's auth
    module - the same keys, Entra settings and envelopes as our servers - and forwards it to vLLM."""
    env = [e for e in _env(owner, spec, resolved, settings, auth_mode) if e["name"] in _AUTH_ENV]
    env += [{"name": "PORT", "value": str(spec.port)},
            {"name": "FOUNDRY_UPSTREAM_PORT", "value": str(vllm_port(spec.port))}]
    container = {
        "name": AUTH_PROXY_CONTAINER, "image": settings.image("model-fetcher"),
        "imagePullPolicy": settings.imagePullPolicy, "command": list(AUTH_PROXY_COMMAND), "env": env,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "volumeMounts": [],
        "securityContext": _restricted(runAsNonRoot=True, readOnlyRootFilesystem=True),
    }
    if auth_mode in ("api-key", "both"):
        container["volumeMounts"].append({"name": "api-keys", "mountPath": names.KEYS_DIR, "readOnly": True})
    return container


def tls_proxy(settings, ready_every=5):
    """The nginx TLS sidecar. `ready_every`: its readiness probe's period; 1 s in an autoscaled deployment's pod,
    which is Ready only when this container is too (a kubelet probes at a random phase of the period: 5 s cost a
    first request after scale to zero 2.5 s on average)."""
    return {
        "name": PROXY_CONTAINER, "image": settings.image("nginx"), "imagePullPolicy": settings.imagePullPolicy,
        "command": ["nginx", "-e", "stderr", "-c", f"{names.NGINX_DIR}/nginx.conf", "-g", "daemon off;"],
        "ports": [{"name": "https", "containerPort": names.TLS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        "readinessProbe": {"tcpSocket": {"port": "https"}, "periodSeconds": ready_every},
        "livenessProbe": {"tcpSocket": {"port": "https"}, "periodSeconds": 20},
        "volumeMounts": [{"name": "nginx-config", "mountPath": names.NGINX_DIR, "readOnly": True},
                         {"name": "tls", "mountPath": names.TLS_DIR, "readOnly": True},
                         {"name": "nginx-tmp", "mountPath": "/tmp/nginx"}],
        "securityContext": _restricted(runAsNonRoot=True, readOnlyRootFilesystem=True),
    }


def artifact_env(artifact, allowlist=(), cas=None):
    """The fetcher's environment: the artifact as JSON (no secrets), the registries admitted on private addresses,
    the private CA of the artifact's registry (only that one) and registry credentials by reference."""
    public = {k: v for k, v in artifact.items() if k != "credentials"}
    env = [{"name": "FOUNDRY_FETCH_ARTIFACT", "value": json.dumps(public, sort_keys=True, separators=(",", ":"))},
           {"name": "FOUNDRY_FETCH_DEST", "value": MODEL_PATH}]
    if artifact.get("mirrorOf"):            # the admin's own catalog mirror (catalog.mirrorRegistry) is admitted
        allowlist = (*allowlist, artifact["registry"])
    if allowlist:
        env.append({"name": "FOUNDRY_REGISTRY_ALLOWLIST", "value": ",".join(dict.fromkeys(allowlist))})
    registry = str(artifact.get("registry") or "").lower()
    own = {k: v for k, v in (cas or {}).items() if registry and k in (registry, registry.removesuffix(":443"))}
    if own:
        env.append({"name": "FOUNDRY_REGISTRY_CAS", "value": json.dumps(own, sort_keys=True)})
    creds = artifact.get("credentials")
    if creds:
        for var, key in (("FOUNDRY_REGISTRY_USERNAME", creds["usernameKey"]),
                         ("FOUNDRY_REGISTRY_PASSWORD", creds["passwordKey"])):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": creds["name"], "key": key}}})
    return env


def azureml_env(artifact, settings):
    """Where an `azureml://` model is looked up (catalog.azureRegistryUrl / azureRegion); nothing for others. A
    private endpoint in front of Azure (catalog.azure.registryUrl on the site's network) and the blob host its
    gateway names are only known at download time: such a fetcher gets every registryCAs bundle, each of which
    fetch_http still trusts for its own host[:port] alone."""
    if not str(artifact.get("uri") or "").startswith("azureml:"):
        return []
    env = [{"name": "FOUNDRY_AZUREML_REGISTRY_URL", "value": settings.catalog.azureRegistryUrl}]
    if settings.catalog.azureRegion:
        env.append({"name": "FOUNDRY_AZURE_REGION", "value": settings.catalog.azureRegion})
    if settings.registryCAs:
        env.append({"name": "FOUNDRY_REGISTRY_CAS", "value": json.dumps(settings.registryCAs, sort_keys=True)})
    return env


def models_size_limit(spec, resolved, settings):
    """The models emptyDir's sizeLimit (a quantity) or None."""
    if resolved.runtime == "vllm":
        return f"{spec.vllm_cache_gi}Gi"
    return settings.storeModel.modelsVolumeSizeLimit or None


def model_fetcher(resolved, settings, size_limit=None):
    """The init container of a pod that fetches its own model (no model cache: storeModel disabled, or vLLM)."""
    return fetcher_container(resolved.artifact, settings, size_limit)


def fetcher_container(artifact, settings, size_limit=None, cache=None):
    """The model fetcher: a pod's init container, or a StoreModel's Job (builders/store.py, with `cache`: the
    content-addressed cache folder in the same volume, so a restarted fetch resumes and nothing is stored twice).
    With a size limit the fetcher gets it in bytes (FOUNDRY_FETCH_LIMIT_BYTES): a model that would not fit fails with
    a clear message instead of the kubelet evicting the pod."""
    env = artifact_env(artifact, settings.registryAllowlist, settings.registryCAs) + azureml_env(artifact, settings)
    try:
        limit = parse_size(size_limit) if size_limit else None
    except ValueError:
        limit = None                # not a quantity: the apiserver refuses the sizeLimit itself, with the reason
    if limit is not None:
        env.append({"name": "FOUNDRY_FETCH_LIMIT_BYTES", "value": str(limit)})
    if cache:
        env.append({"name": "FOUNDRY_FETCH_CACHE", "value": cache})
        if limit is not None:
            env.append({"name": "FOUNDRY_FETCH_CACHE_LIMIT_BYTES", "value": str(limit)})
    env.append({"name": "FOUNDRY_FETCH_TERMINATION_LOG", "value": TERMINATION_LOG})
    return {
        "name": FETCH_CONTAINER, "image": settings.image("model-fetcher"), "imagePullPolicy": settings.imagePullPolicy,
        "command": list(FETCH_COMMAND), "env": env,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "volumeMounts": [{"name": "models", "mountPath": names.MODELS_DIR}],
        # a failed fetch's `failed: <cause>` line becomes the termination message the operator shows in status:
        # written to the file by the fetcher, else (a crash) the log's tail
        "terminationMessagePath": TERMINATION_LOG, "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _restricted(),
    }


def volumes(owner, spec, resolved, settings, tls_secret_name, auth_mode, store=None):
    """`store`: the StoreModel whose volume holds the model (mounted read-only), else the pod's own emptyDir."""
    if store:
        vols = [{"name": "models", "persistentVolumeClaim": {"claimName": store, "readOnly": True}}]
    else:
        limit = models_size_limit(spec, resolved, settings)
        vols = [{"name": "models", "emptyDir": {"sizeLimit": limit} if limit else {}}]
    if auth_mode in ("api-key", "both"):
        vols.append({"name": "api-keys", "secret": {"secretName": names.keys_secret(owner.name), "optional": True}})
    vols += [{"name": "nginx-config", "configMap": {"name": names.nginx_configmap(owner.name)}},
             {"name": "tls", "secret": {"secretName": tls_secret_name}},
             {"name": "nginx-tmp", "emptyDir": {}}]
    return vols


DRAIN_S = 3


def drain(containers):
    """A pod that is deleted (scaled in, rolled by an update, drained) keeps serving for DRAIN_S before its
    containers get SIGTERM: the routes to it (the Service's endpoints in every node's kube-proxy, the activator's
    `<name>-replicas`) outlive it for a moment, and a connection sent there must still be answered. Returns them."""
    for container in containers:
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(DRAIN_S)]}}}
    return containers


def deployment(owner, spec, resolved, settings, *, tls_secret_name, config_hash, auth_mode, store=None):
    """The model Deployment. `store`: the name of an Available StoreModel holding the model (its pods mount that
    volume and fetch nothing), else None (each pod fetches into its own emptyDir)."""
    pod_labels = {**names.child_labels(owner.name), names.COMPONENT_LABEL: "model-server"}
    containers = [model_server(owner, spec, resolved, settings, auth_mode),
                  tls_proxy(settings, 1 if spec.autoscaling else 5)]
    if resolved.runtime == "vllm":
        containers.append(auth_proxy(owner, spec, resolved, settings, auth_mode))
    drain(containers)
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,     # a namespace with a thousand Services would otherwise bloat every pod's env
        "securityContext": pod_security_context(),
    }
    if not store:                        # the model cache's pods fetch nothing: the StoreModel's Job did
        pod["initContainers"] = [model_fetcher(resolved, settings, models_size_limit(spec, resolved, settings))]
    pod["containers"] = containers
    pod["volumes"] = volumes(owner, spec, resolved, settings, tls_secret_name, auth_mode, store)
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    # one GPU node cannot hold an old and a new pod at once: replace instead of surging
    strategy = ({"type": "Recreate"} if spec.compute == "gpu" else
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    scaling = ({scaling_params.ANNOTATION: scaling_params.resolve(spec.autoscaling, settings).to_annotation()}
               if spec.autoscaling else None)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(owner, owner.name, "model-server", scaling),
        "spec": {
            "replicas": spec.autoscaling.initial_replicas if spec.autoscaling else spec.replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": settings.progressDeadlineSeconds,
            "selector": {"matchLabels": names.child_labels(owner.name)},
            "strategy": strategy,
            "template": {"metadata": {"labels": pod_labels,
                                      "annotations": {names.CONFIG_HASH: config_hash, **scrape_annotations(resolved)}},
                         "spec": pod},
        },
    }
