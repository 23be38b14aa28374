"""Typed operator settings, loaded once from a YAML or JSON file (the chart renders its values into a ConfigMap
mounted as a file; FOUNDRY_OPERATOR_CONFIG names it). A bad value stops the operator at start with a message naming
the setting, never later in a reconcile. Every setting is documented in docs/operator.md.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from foundry_inference.config import ConfigurationError

from . import names

ENV_CONFIG = "FOUNDRY_OPERATOR_CONFIG"
DEFAULT_IMAGE = "ghcr.io/foundry-inference/foundry-inference:0.1.0"
IMAGE_ROLES = ("generative-cpu", "generative-gpu", "generative-cpu-byo", "generative-gpu-byo", "vllm_gpu",
               "predictive-cpu-byo", "predictive-gpu-byo", "nginx", "model-fetcher")
DEFAULT_IMAGES = {role: DEFAULT_IMAGE for role in IMAGE_ROLES}
DEFAULT_IMAGES.update({"vllm_gpu": "vllm/vllm-openai:v0.6.3", "nginx": "nginxinc/nginx-unprivileged:1.27-alpine"})
_SOURCE_TREE_CATALOG = Path(__file__).resolve().parents[1] / "charts" / "foundry-inference" / "files" / "catalog.json"
_IMAGE_CATALOG = Path("/opt/foundry-inference/catalog.json")
DEFAULT_INGRESS_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/proxy-body-size": "50m",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "600",
}


class SettingsError(ConfigurationError):
    """A setting is missing or malformed; raised at start-up."""


def default_catalog_source():
    return str(_SOURCE_TREE_CATALOG if _SOURCE_TREE_CATALOG.is_file() else _IMAGE_CATALOG)


@dataclass(frozen=True)
class TlsSettings:
    secretName: str = None          # a provided kubernetes.io/tls Secret used by every sidecar; else self-signed
    certValidityDays: int = 365
    renewBeforeDays: int = 30


@dataclass(frozen=True)
class IngressSettings:
    className: str = "nginx"                  # used when a deployment names none
    annotations: dict = field(default_factory=lambda: dict(DEFAULT_INGRESS_ANNOTATIONS))
    tlsSecretName: str = None                 # default Ingress TLS Secret when a deployment names none


@dataclass(frozen=True)
class CatalogSettings:
    source: str = field(default_factory=default_catalog_source)   # a file path, file:// or http(s):// URL
    intervalSeconds: float = 6 * 3600.0
    lazyRegistrationEnabled: bool = True
    timeoutSeconds: float = 30.0
    sourceType: str = "configmap"     # configmap: `source` (air-gapped default); azure: the live Foundry catalog
    azureCatalogUrl: str = "https://ai.azure.com/api/{region}/ux/v1.0"
    azureRegistryUrl: str = "https://{region}.api.azureml.ms"
    azureRegion: str = None           # default centralus
    mirrorRegistry: str = None        # host[:port]: azureml:// variants are pulled from this OCI registry instead
    mirrorRepositoryPrefix: str = "foundry-models"


# environment variables that override catalog settings (embedded `up` reads them; docs/catalog.md)
CATALOG_ENV = {"FOUNDRY_CATALOG_SOURCE": "sourceType", "FOUNDRY_AZURE_CATALOG_URL": "azureCatalogUrl",
               "FOUNDRY_AZUREML_REGISTRY_URL": "azureRegistryUrl", "FOUNDRY_AZURE_REGION": "azureRegion",
               "FOUNDRY_CATALOG_MIRROR": "mirrorRegistry"}


@dataclass(frozen=True)
class StoreModelSettings:
    """The model cache on a cluster (docs/operator.md, "Model cache"): with `enabled`, each model artifact is fetched
    once per namespace into a PersistentVolumeClaim (a StoreModel) that every pod of it mounts read-only; without
    it, each pod fetches into its own emptyDir."""
    enabled: bool = False
    storageClassName: str = None       # the PVCs' class; None: the cluster's default class
    volumeSize: str = "20Gi"           # a PVC's size unless the catalog gives a larger model size
    accessMode: str = "ReadWriteOnce"  # ReadWriteMany lets pods on several nodes share one copy
    fetchBackoffLimit: int = 4         # failed fetch pods before a StoreModel is in Error
    modelsVolumeSizeLimit: str = None  # emptyDir sizeLimit for the model volume, e.g. 20Gi


@dataclass(frozen=True)
class AuthenticationSettings:
    apiKeyEnabled: bool = True
    entraEnabled: bool = False
    tenantId: str = None
    clientId: str = None

    def mode(self, enabled_on_deployment):
        if not enabled_on_deployment:
            return "none"
        if self.apiKeyEnabled and self.entraEnabled:
            return "both"
        return "entra" if self.entraEnabled else "api-key"


@dataclass(frozen=True)
class AutoscalingSettings:
    """Defaults of spec.autoscaling and the autoscaler's own numbers (docs/autoscaling.md)."""
    targetConcurrency: int = 4               # in-flight + queued requests per replica
    scaleDownDelaySeconds: int = 30          # a lower count must be wanted this long before replicas go
    scaleToZeroAfterSeconds: int = 300       # idle time before the last replica stops (minReplicas 0)
    periodSeconds: float = 2.0               # how often each replica's gauges are read
    stableWindowSeconds: float = 60.0        # the averaging window of normal decisions
    panicWindowSeconds: float = 6.0          # the short window that reacts to bursts
    panicThreshold: float = 2.0              # panic when the short window wants this many times the replicas
    maxHeldRequests: int = 64                # requests the activator holds per deployment while it starts
    holdTimeoutSeconds: float = 120.0        # how long the activator holds one request


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple = (names.OPERATOR_NAMESPACE,)   # None: every namespace (embedded mode, docs/api.md decision 6)
    operatorNamespace: str = names.OPERATOR_NAMESPACE
    pollIntervalSeconds: float = 5.0
    workers: int = 8                                  # owners reconciled concurrently within one pass
    pageSize: int = 500
    backoffBaseSeconds: float = 1.0
    backoffMaxSeconds: float = 300.0
    progressDeadlineSeconds: int = 300                # docs/api.md decision 12: Error within 5 minutes
    imagePullPolicy: str = "IfNotPresent"
    registryAllowlist: tuple = ()                    # registries on private addresses the fetcher may pull from
    registryCAs: dict = field(default_factory=dict)   # host[:port] -> PEM bundle of that registry's private CA
    images: dict = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    tls: TlsSettings = field(default_factory=TlsSettings)
    ingress: IngressSettings = field(default_factory=IngressSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    storeModel: StoreModelSettings = field(default_factory=StoreModelSettings)
    authentication: AuthenticationSettings = field(default_factory=AuthenticationSettings)
    autoscaling: AutoscalingSettings = field(default_factory=AutoscalingSettings)
    embedded: bool = False                            # set by the embedded entry point, not by the file

    def image(self, role):
        return self.images[role]

    def for_embedded(self):
        """Embedded mode reconciles every namespace (docs/api.md, decision 6)."""
        return dataclasses.replace(self, namespaces=None, embedded=True)


_SECTIONS = {"tls": TlsSettings, "ingress": IngressSettings, "catalog": CatalogSettings,
             "storeModel": StoreModelSettings, "authentication": AuthenticationSettings,
             "autoscaling": AutoscalingSettings}


def _typed(where, value, expected, default):
    """Check one scalar against the type of its default (bool is not an int, an int is a float)."""
    if value is None:
        return default
    kind = type(default) if default is not None else expected
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
    elif kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and
                                                                           not float(value).is_integer()):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        value = kind(value)
    elif kind is str:
        if not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{where}: expected a non-empty string, got {value!r}")
    elif kind is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            raise SettingsError(f"{where}: expected a map of strings")
        value = dict(value)
    return value


def _section(where, cls, raw):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise SettingsError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    defaults = cls()
    values = {}
    for key, value in raw.items():
        hint = known[key].type
        expected = hint if hint in (str, int, float, bool, dict) else str
        values[key] = _typed(f"{where}.{key}", value, expected, getattr(defaults, key))
    return cls(**values)


def _registry_cas(raw):
    """registryCAs: {host[:port]: PEM bundle}; each bundle must load as certificates (checked at start-up)."""
    from .fetch_http import FetchError, tls_context
    if not isinstance(raw, dict):
        raise SettingsError("registryCAs: expected a mapping of host[:port] to a PEM CA bundle")
    cas = {}
    for registry, pem in raw.items():
        where = f"registryCAs.{registry}"
        if not isinstance(registry, str) or not registry.strip() or any(c in registry for c in "/@ ,"):
            raise SettingsError(f"{where}: the key must be a registry host[:port]")
        if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
            raise SettingsError(f"{where}: expected a PEM bundle (-----BEGIN CERTIFICATE-----)")
        try:
            tls_context(pem, where)
        except FetchError as exc:
            raise SettingsError(str(exc)) from None
        cas[registry.strip().lower()] = pem
    return cas


def from_mapping(raw):
    """Build and validate settings from a parsed document (camelCase keys, the chart's values layout)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError("operator settings: the document must be a mapping")
    raw = dict(raw)
    values = {}
    watch = raw.pop("watch", None)
    if watch is not None:
        if not isinstance(watch, dict) or set(watch) - {"namespaces"}:
            raise SettingsError("watch: expected a mapping with `namespaces`")
        raw.setdefault("namespaces", watch.get("namespaces"))
    namespaces = raw.pop("namespaces", None)
    if namespaces is not None:
        if (not isinstance(namespaces, list) or not namespaces or
                not all(isinstance(n, str) and names.DNS_LABEL.match(n) for n in namespaces)):
            raise SettingsError(f"watch.namespaces: expected a non-empty list of namespace names, got {namespaces!r}")
        values["namespaces"] = tuple(dict.fromkeys(namespaces))
    images = raw.pop("images", None)
    if images is not None:
        if not isinstance(images, dict):
            raise SettingsError("images: expected a mapping of role to image reference")
        unknown = sorted(set(images) - set(IMAGE_ROLES))
        if unknown:
            raise SettingsError(f"images: unknown role(s) {', '.join(unknown)} (roles: {', '.join(IMAGE_ROLES)})")
        merged = dict(DEFAULT_IMAGES)
        for role, ref in images.items():
            if not isinstance(ref, str) or not ref.strip() or any(c.isspace() for c in ref):
                raise SettingsError(f"images.{role}: expected an image reference, got {ref!r}")
            merged[role] = ref
        values["images"] = merged
    allow = raw.pop("registryAllowlist", None)
    if allow is not None:
        if not isinstance(allow, list) or not all(isinstance(a, str) and a.strip() and "," not in a for a in allow):
            raise SettingsError("registryAllowlist: expected a list of host[:port] names")
        values["registryAllowlist"] = tuple(a.strip().lower() for a in allow)
    cas = raw.pop("registryCAs", None)
    if cas is not None:
        values["registryCAs"] = _registry_cas(cas)
    for key, cls in _SECTIONS.items():
        if key in raw:
            values[key] = _section(key, cls, raw.pop(key))
    defaults = OperatorSettings()
    scalars = {"operatorNamespace": str, "pollIntervalSeconds": float, "workers": int, "pageSize": int,
               "backoffBaseSeconds": float, "backoffMaxSeconds": float, "progressDeadlineSeconds": int,
               "imagePullPolicy": str}
    unknown = sorted(set(raw) - set(scalars))
    if unknown:
        raise SettingsError(f"operator settings: unknown setting(s) {', '.join(unknown)}")
    for key, value in raw.items():
        values[key] = _typed(key, value, scalars[key], getattr(defaults, key))
    settings = OperatorSettings(**values)
    validate(settings)
    return settings


def validate(s):
    if not names.DNS_LABEL.match(s.operatorNamespace):
        raise SettingsError(f"operatorNamespace: {s.operatorNamespace!r} is not a namespace name")
    if not 0.05 <= s.pollIntervalSeconds <= 3600:
        raise SettingsError("pollIntervalSeconds: must be between 0.05 and 3600")
    if not 1 <= s.workers <= 64:
        raise SettingsError("workers: must be between 1 and 64")
    if not 10 <= s.pageSize <= 5000:
        raise SettingsError("pageSize: must be between 10 and 5000")
    if not 0 < s.backoffBaseSeconds <= s.backoffMaxSeconds:
        raise SettingsError("backoffBaseSeconds: must be > 0 and <= backoffMaxSeconds")
    if not 30 <= s.progressDeadlineSeconds <= 86400:
        raise SettingsError("progressDeadlineSeconds: must be between 30 and 86400")
    if s.imagePullPolicy not in ("Always", "IfNotPresent", "Never"):
        raise SettingsError("imagePullPolicy: must be Always, IfNotPresent or Never")
    if not 1 <= s.tls.certValidityDays <= 3650 or not 0 <= s.tls.renewBeforeDays < s.tls.certValidityDays:
        raise SettingsError("tls: certValidityDays must be 1..3650 and renewBeforeDays below it")
    if s.catalog.intervalSeconds < 10:
        raise SettingsError("catalog.intervalSeconds: must be at least 10")
    source = s.catalog.source
    scheme = urlparse(source).scheme
    if scheme not in ("", "file", "http", "https"):
        raise SettingsError(f"catalog.source: {source!r} must be a file path or a file://, http:// or https:// URL")
    if s.catalog.sourceType not in ("configmap", "azure"):
        raise SettingsError(f"catalog.sourceType: {s.catalog.sourceType!r} must be configmap or azure")
    for key in ("azureCatalogUrl", "azureRegistryUrl"):
        if urlparse(getattr(s.catalog, key)).scheme not in ("http", "https"):
            raise SettingsError(f"catalog.{key}: {getattr(s.catalog, key)!r} must be an http(s):// URL")
    mirror = s.catalog.mirrorRegistry
    if mirror is not None and (any(c in mirror for c in "/@ ,?#") or "://" in mirror):
        raise SettingsError(f"catalog.mirrorRegistry: {mirror!r} must be a registry host[:port] (no scheme or path)")
    if not names.OCI_PATH.fullmatch(s.catalog.mirrorRepositoryPrefix):
        raise SettingsError(f"catalog.mirrorRepositoryPrefix: {s.catalog.mirrorRepositoryPrefix!r} must be a "
                            "lower-case repository path such as foundry-models")
    if s.catalog.azureRegion is not None and not names.DNS_LABEL.match(s.catalog.azureRegion):
        raise SettingsError(f"catalog.azureRegion: {s.catalog.azureRegion!r} is not a region name such as eastus")
    _validate_autoscaling(s.autoscaling)
    _validate_store(s.storeModel)
    auth = s.authentication
    if not (auth.apiKeyEnabled or auth.entraEnabled):
        raise SettingsError("authentication: enable apiKeyEnabled, entraEnabled or both")
    if auth.entraEnabled and not (auth.tenantId and auth.clientId):
        raise SettingsError("authentication.entraEnabled needs tenantId and clientId")


def _validate_store(st):
    from .blobcache import quantity
    for key in ("volumeSize", "modelsVolumeSizeLimit"):       # Kubernetes quantities: they go into the objects
        value = getattr(st, key)
        if value is not None and not (quantity(value) or 0) >= 1:
            raise SettingsError(f"storeModel.{key}: {value!r} is not a size such as 20Gi")
    if st.accessMode not in ("ReadWriteOnce", "ReadWriteMany"):
        raise SettingsError(f"storeModel.accessMode: {st.accessMode!r} must be ReadWriteOnce or ReadWriteMany")
    if st.storageClassName is not None and not names.DNS_SUBDOMAIN.match(st.storageClassName):
        raise SettingsError(f"storeModel.storageClassName: {st.storageClassName!r} is not a StorageClass name")
    if not 0 <= st.fetchBackoffLimit <= 20:
        raise SettingsError("storeModel.fetchBackoffLimit: must be between 0 and 20")


def _validate_autoscaling(a):
    ranges = {"targetConcurrency": (1, 1000), "scaleDownDelaySeconds": (0, 3600),
              "scaleToZeroAfterSeconds": (1, 86400), "periodSeconds": (0.1, 60), "stableWindowSeconds": (1, 3600),
              "panicWindowSeconds": (0.1, 600), "panicThreshold": (1, 100), "maxHeldRequests": (1, 100000),
              "holdTimeoutSeconds": (1, 3600)}
    for key, (low, high) in ranges.items():
        if not low <= getattr(a, key) <= high:
            raise SettingsError(f"autoscaling.{key}: must be between {low} and {high}")
    if a.panicWindowSeconds > a.stableWindowSeconds:
        raise SettingsError("autoscaling.panicWindowSeconds: must not exceed stableWindowSeconds")


def with_env(settings, env):
    """The catalog settings CATALOG_ENV names, from the environment, over those of the file."""
    changes = {key: env[name].strip().lower() if key in ("sourceType", "azureRegion") else env[name].strip()
               for name, key in CATALOG_ENV.items() if (env.get(name) or "").strip()}
    if not changes:
        return settings
    settings = dataclasses.replace(settings, catalog=dataclasses.replace(settings.catalog, **changes))
    try:
        validate(settings)
    except SettingsError as exc:
        env_name = next((n for n, k in CATALOG_ENV.items() if f"catalog.{k}" in str(exc)), "environment")
        raise SettingsError(f"{env_name}: {exc}") from None
    return settings


def load(path=None, env=None):
    """Settings from `path`, else the file FOUNDRY_OPERATOR_CONFIG names, else the defaults; then CATALOG_ENV."""
    env = os.environ if env is None else env
    return with_env(_load(path, env), env)


def _load(path, env):
    path = path or env.get(ENV_CONFIG)
    if not path:
        return from_mapping({})
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{ENV_CONFIG}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}") from None
    try:
        return from_mapping(raw)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
