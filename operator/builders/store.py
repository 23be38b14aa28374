"""The model cache on a cluster (storeModel.enabled; docs/operator.md, "Model cache").

One StoreModel per model artifact and namespace, referenced (never controlled) by every deployment of that artifact:
the garbage collector deletes it with the last of them. The StoreModel controls two children: a
PersistentVolumeClaim, and a Job whose pod runs the model fetcher once into that volume, with the fetcher's
content-addressed cache in the same volume (a restarted fetch resumes; the model's files are stored once). Once the
StoreModel is Available, the model pods mount the volume read-only and fetch nothing.
"""
import json
import math

from .. import names
from ..blobcache import parse_size
from .deployment import MODEL_PATH, fetcher_container, pod_security_context

CACHE_DIR = f"{names.MODELS_DIR}/.cache"
_GI = 1024 ** 3


def cached(resolved, settings):
    """True when a deployment of `resolved` takes its model from a StoreModel (vLLM downloads its own)."""
    return settings.storeModel.enabled and not settings.embedded and resolved.runtime != "vllm"


def labels(name):
    return {names.MANAGED_BY: names.MANAGED_BY_VALUE, names.STORE_LABEL: name}


def user_ref(owner):
    """A deployment's reference on a StoreModel it uses: not its controller (several deployments share one)."""
    return {**owner.reference(), "controller": False, "blockOwnerDeletion": False}


def controller_ref(store_model):
    meta = store_model["metadata"]
    return {"apiVersion": names.API_VERSION, "kind": "StoreModel", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def source(artifact):
    """The StoreModel's spec.source (what a person reads in `kubectl get sm -o yaml`) for an artifact."""
    if artifact["type"] == "oci":
        out = {"type": "oci", "registry": artifact["registry"], "repository": artifact["repository"],
               "tag": artifact["tag"]}
        creds = artifact.get("credentials")
        if creds:
            out["credentials"] = {"secretRef": {"name": creds["name"], "usernameKey": creds["usernameKey"],
                                                "passwordKey": creds["passwordKey"]}}
        return out
    if artifact["type"] == "builtin":
        return {"type": "catalog", "uri": f"builtin:{artifact['name']}"}
    uri = str(artifact.get("uri") or "")
    out = {"type": "catalog" if uri.startswith("azureml:") else "http", "uri": uri.split("?", 1)[0]}
    if artifact.get("sha256"):
        out["digest"] = f"sha256:{artifact['sha256']}"
    return out


def size(resolved, settings):
    """The volume's size: storeModel.volumeSize, or twice the catalog's model size (an archive and its unpacked
    files) rounded up to Gi when that is larger."""
    configured = settings.storeModel.volumeSize
    model_bytes = (resolved.catalog_variant or {}).get("fileSizeBytes")
    if isinstance(model_bytes, int) and not isinstance(model_bytes, bool) and model_bytes > 0:
        needed = math.ceil(2 * model_bytes / _GI)
        if needed * _GI > parse_size(configured):
            return f"{needed}Gi"
    return configured


def store_model(owner, resolved, settings):
    """The StoreModel a deployment of `resolved` uses, with `owner` as its first user."""
    artifact = resolved.artifact
    name = names.store_model(resolved.name, artifact)
    storage = {"size": size(resolved, settings)}
    if settings.storeModel.storageClassName:
        storage["storageClassName"] = settings.storeModel.storageClassName
    return {
        "apiVersion": names.API_VERSION, "kind": "StoreModel",
        "metadata": {"name": name, "namespace": owner.namespace, "labels": labels(name),
                     "annotations": {names.STORE_ARTIFACT: json.dumps(artifact, sort_keys=True)},
                     "ownerReferences": [user_ref(owner)]},
        "spec": {"modelName": resolved.name, "variant": resolved.variant, "source": source(artifact),
                 "storage": storage},
    }


def artifact_of(store_model):
    """The artifact a StoreModel's Job fetches (its annotation), or None when it is missing or not an artifact."""
    raw = ((store_model.get("metadata") or {}).get("annotations") or {}).get(names.STORE_ARTIFACT)
    try:
        artifact = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(artifact, dict) or artifact.get("type") not in ("oci", "uri", "builtin"):
        return None
    return artifact


def _child_meta(store_model, name):
    meta = store_model["metadata"]
    return {"name": name, "namespace": meta["namespace"], "labels": labels(meta["name"]),
            "ownerReferences": [controller_ref(store_model)]}


def volume_claim(store_model, settings):
    storage = (store_model.get("spec") or {}).get("storage") or {}
    spec = {"accessModes": [settings.storeModel.accessMode],
            "resources": {"requests": {"storage": str(storage.get("size") or settings.storeModel.volumeSize)}}}
    if storage.get("storageClassName"):
        spec["storageClassName"] = storage["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _child_meta(store_model, store_model["metadata"]["name"]), "spec": spec}


def fetch_job(store_model, artifact, settings):
    """The Job that fills the volume: one fetcher pod at a time, a new pod after a failure (each one's termination
    message names its cause) up to storeModel.fetchBackoffLimit failures."""
    name = store_model["metadata"]["name"]
    size_limit = str(((store_model.get("spec") or {}).get("storage") or {}).get("size") or "") or None
    container = fetcher_container(artifact, settings, size_limit, cache=CACHE_DIR)
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": name}}],
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _child_meta(store_model, names.store_job(name)),
            "spec": {"backoffLimit": settings.storeModel.fetchBackoffLimit,
                     "template": {"metadata": {"labels": labels(name)}, "spec": pod}}}


def stored_path(name):
    """Where a StoreModel's model is (status.path): the claim and the folder inside it."""
    return f"persistentvolumeclaim/{name}{MODEL_PATH.removeprefix(names.MODELS_DIR)}"
