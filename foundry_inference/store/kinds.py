"""The object kinds the platform stores, addressed the same way in both stores."""
from dataclasses import dataclass

from .errors import UnknownKind

GROUP = "foundrylocal.azure.com"
VERSION = "v1"
CUSTOM_API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    status_subresource: bool = False

    @property
    def group(self):
        return self.api_version.rpartition("/")[0]

    @property
    def version(self):
        return self.api_version.rpartition("/")[2]

    @property
    def custom(self):
        return self.group == GROUP

    def path(self, namespace=None, name=None, subresource=None):
        """The apiserver REST path for a collection or an object."""
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


KINDS = {k.kind: k for k in (
    Kind(CUSTOM_API_VERSION, "Model", "models", status_subresource=True),
    Kind(CUSTOM_API_VERSION, "ModelDeployment", "modeldeployments", status_subresource=True),
    Kind(CUSTOM_API_VERSION, "InferenceService", "inferenceservices", status_subresource=True),
    Kind(CUSTOM_API_VERSION, "StoreModel", "storemodels", status_subresource=True),
    Kind("apps/v1", "Deployment", "deployments", status_subresource=True),
    Kind("v1", "Service", "services", status_subresource=True),
    Kind("v1", "Secret", "secrets"),
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("networking.k8s.io/v1", "Ingress", "ingresses", status_subresource=True),
    Kind("v1", "Namespace", "namespaces", namespaced=False, status_subresource=True),
    # read by the operator on a cluster only (restarts, fetch and image-pull failures, download progress); the
    # embedded store holds no pods: its node agent reports the same facts on the Deployment's status
    Kind("v1", "Pod", "pods", status_subresource=True),
    # the model cache on a cluster (storeModel.enabled): a StoreModel's volume and the Job that fills it
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", status_subresource=True),
    Kind("batch/v1", "Job", "jobs", status_subresource=True),
)}


def kind_of(kind_or_obj):
    """Look a Kind up by name ("ModelDeployment") or from an object's `kind`; UnknownKind if the platform has none."""
    name = kind_or_obj.get("kind") if isinstance(kind_or_obj, dict) else kind_or_obj
    if isinstance(kind_or_obj, Kind):
        return kind_or_obj
    try:
        k = KINDS[name]
    except (KeyError, TypeError):
        supported = ", ".join(sorted(KINDS))
        raise UnknownKind(f"unknown kind {name!r}", [{"field": "kind", "reason": "FieldValueNotSupported",
                                                      "message": f"supported kinds: {supported}"}]) from None
    if isinstance(kind_or_obj, dict) and kind_or_obj.get("apiVersion") not in (None, k.api_version):
        raise UnknownKind(f"{name} is served as {k.api_version}, not {kind_or_obj.get('apiVersion')}",
                          [{"field": "apiVersion", "reason": "FieldValueNotSupported", "message": k.api_version}])
    return k
