"""Names, labels and annotations shared with the control plane (the Kubernetes-facing contract of the Foundry
inference API; docs/operator.md lists them). Changing one of
these breaks a contract: the control plane reads the same keys."""
import hashlib
import json
import re

GROUP = "foundrylocal.azure.com"
API_VERSION = f"{GROUP}/v1"
OPERATOR_NAMESPACE = "foundry-local-operator"

# labels on every child
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "inference-operator"
DEPLOYMENT_LABEL = "foundry.azure.com/deployment"
COMPONENT_LABEL = "app.kubernetes.io/component"
SOURCE_LABEL = "foundry.azure.com/source"
HARDWARE_LABEL = "foundry.azure.com/hardware"
SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"

# annotations
DESIRED_HASH = "foundry.azure.com/desired-hash"          # hash of the desired child, to see removed fields
CONFIG_HASH = "foundry.azure.com/config-hash"            # on the pod template: nginx config + certificate
PRIMARY_CREATED = "foundry.azure.com/primary-key-created-at"
SECONDARY_CREATED = "foundry.azure.com/secondary-key-created-at"
KEYS_GENERATED = "foundry.azure.com/keys-generated-at"   # the operator's own first-generation time (rotation = later)
LOCAL_ENDPOINT = "foundry.azure.com/local-endpoint"      # embedded node agent: where the TLS sidecar listens
LOCAL_METRICS = "foundry.azure.com/local-metrics-endpoint"
# the autoscaler's last decision on a Deployment it scales: JSON {"replicas", "reason", "time"} (status.lastScaling)
LAST_SCALING = "foundry.azure.com/last-scaling"  # embedded node agent: the first replica's metrics URL
DEPRECATED_FROM = "foundry.azure.com/legacy-kind"
# on a model pod (cluster): digest of the API keys its Secret volume should hold. Written by the operator on pods that
# started before a key rotation: a pod update makes the kubelet sync the pod at once, which refreshes its Secret
# volumes (instead of the kubelet's periodic sync, up to a minute or more)
KEYS_DIGEST = "foundry.azure.com/api-keys-digest"

# catalog ConfigMap
CATALOG_CONFIGMAP = "foundry-local-catalog"
CATALOG_KEY = "catalog.json"
LAST_SYNC = "foundry.azure.com/last-sync"
CATALOG_VERSION = "foundry.azure.com/catalog-version"
SYNC_REQUESTED = "foundry.azure.com/sync-requested-at"
SYNC_ERROR = "foundry.azure.com/last-sync-error"
SYNC_ATTEMPT = "foundry.azure.com/last-sync-attempt"

# the operator's certificate authority (one per installation)
CA_SECRET = "foundry-inference-ca"

# in-pod paths and ports
TLS_PORT = 8443
POD_UID = 65532                     # every container of a model pod runs as this uid/gid (restricted profile)
METRICS_PORT = 9464        # the model server's keyless /metrics listener: declared on the pod, never on the Service
METRICS_PATH = "/metrics"
SERVICE_PORT = 443
KEYS_DIR = "/var/run/foundry/keys"
TLS_DIR = "/etc/foundry/tls"
NGINX_DIR = "/etc/foundry/nginx"
MODELS_DIR = "/models"
MODEL_SUBDIR = "model"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
OCI_PATH = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*")   # an OCI repository path
OCI_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def keys_secret(name):
    return f"{name}-api-keys"


def tls_secret(name):
    return f"{name}-tls"


def nginx_configmap(name):
    return f"{name}-nginx"


def service(name):
    """A Service name must be a DNS-1035 label (start with a letter); a deployment name may start with a digit."""
    if _DNS_1035.match(name) and len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"md-{name[:52]}-{digest}".replace("--", "-")


def model_cr_name(variant_id):
    """A Model resource name for a catalog variant id such as `Phi-4-mini-instruct-generic-cpu:5`."""
    name = re.sub(r"[^a-z0-9.-]+", "-", variant_id.lower()).strip("-.")
    return name[:253] or "model"


def child_labels(name):
    return {MANAGED_BY: MANAGED_BY_VALUE, DEPLOYMENT_LABEL: name}


# scale to zero on a cluster (docs/autoscaling.md): the deployment's activator pods carry this label (never the
# deployment label, which the model Deployment's selector matches)
ACTIVATOR_LABEL = "foundry.azure.com/activator"


def activator(name):
    """The activator Deployment of a deployment that can scale to zero."""
    return f"{name}-activator"


def activator_labels(name):
    return {MANAGED_BY: MANAGED_BY_VALUE, ACTIVATOR_LABEL: name}


# the activator pods' identity: made by the chart in every watched namespace (may only scale Deployments and read
# ModelDeployments/InferenceServices there); a fixed name, like the chart's other accounts
ACTIVATOR_SERVICE_ACCOUNT = "inference-activator"


def replicas_service(name):
    """The Service that always selects the model pods (what the activator forwards to); a DNS-1035 label."""
    return f"{service(name)[:54].rstrip('-')}-replicas"
# Deployment status condition the embedded node agent adds when a model-server process exited and was restarted
# (a kubelet reports this as a pod's restartCount); the operator surfaces it on the ModelDeployment.
RESTARTS_CONDITION = "ModelServerRestarts"
# Progressing reason of a Deployment whose processes a freshly started node agent has not brought up yet: whatever an
# earlier life of `up` reported is void, so the deployment is not Running until this life's processes answer.
NODE_RESTART_REASON = "NodeAgentRestarted"
# exits of a model server after which a deployment whose server keeps exiting is in Error (both modes)
CRASH_LOOP_RESTARTS = 3
DOWNLOAD_CONDITION = "ModelDownloading"       # embedded node agent: the fetcher's progress (bytes done / total)


# the model cache on a cluster (storeModel.enabled; docs/operator.md, "Model cache"): one StoreModel per model artifact
# and namespace, shared by every deployment of that artifact; its PersistentVolumeClaim, fetch Job and the Job's pod
# carry this label with the StoreModel's name
STORE_LABEL = "foundry.azure.com/store-model"
STORE_ARTIFACT = "foundry.azure.com/artifact"   # on a StoreModel: the artifact its Job fetches (JSON, no secrets)


def store_model(model_name, artifact):
    """The StoreModel (and PVC) name of one artifact: a readable part of the model name and a digest of the whole
    artifact (a different tag, registry, URI or credentials Secret is another cache entry); at most 51 characters so
    that its Job's pods stay within a label's 63."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(model_name).lower()).strip("-")[:40].strip("-") or "model"
    digest = hashlib.sha256(json.dumps(artifact, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def store_job(name):
    return f"{name}-fetch"
