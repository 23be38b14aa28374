"""One normalised deployment spec for both owner kinds: a ModelDeployment, or a legacy InferenceService mapped onto
the same fields (reference: workloadType <- inferenceType, compute <- hardware, model <- modelSource.foundry/byo,
endpoint <- ingress). Everything downstream (resolution, builders, status) sees only this, so both kinds produce
identical children for equivalent specs.

Checks a structural CRD schema cannot express live here; a violation is an InvalidSpec, which the reconciler reports
as state Error and does not retry until the owner's generation changes.
"""
import copy
from dataclasses import dataclass, field

from foundry_inference import workload_policy

from . import names

DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}


class InvalidSpec(ValueError):
    """The spec cannot be realised as written; `field` names the offending field."""

    def __init__(self, field_path, message):
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


@dataclass(frozen=True)
class Owner:
    """The object that owns the children (ownerReference target)."""
    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str
    generation: int

    @classmethod
    def of(cls, obj):
        meta = obj["metadata"]
        return cls(obj["kind"], obj.get("apiVersion", names.API_VERSION), meta["namespace"], meta["name"],
                   meta["uid"], int(meta.get("generation") or 1))

    @property
    def key(self):
        return (self.kind, self.namespace, self.name)

    def reference(self):
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}


@dataclass(frozen=True)
class Autoscaling:
    """spec.autoscaling; None fields take the operator settings' defaults (docs/autoscaling.md)."""
    min_replicas: int = 1
    max_replicas: int = 1
    target_concurrency: int = None
    scale_down_delay_s: int = None
    scale_to_zero_after_s: int = None

    @classmethod
    def of(cls, raw):
        if not isinstance(raw, dict):
            return None
        low = raw.get("minReplicas")
        return cls(min_replicas=int(1 if low is None else low), max_replicas=int(raw.get("maxReplicas") or 1),
                   target_concurrency=raw.get("targetConcurrency"), scale_down_delay_s=raw.get("scaleDownDelaySeconds"),
                   scale_to_zero_after_s=raw.get("scaleToZeroAfterSeconds"))

    @property
    def initial_replicas(self):
        """Replicas of a new deployment: one even with minReplicas 0, so the model is loaded (and checked) once."""
        return max(1, self.min_replicas)

    def clamp(self, replicas):
        return min(self.max_replicas, max(self.min_replicas, int(replicas)))


@dataclass(frozen=True)
class DeploymentSpec:
    model: dict
    compute: str
    workload_type: str = "generative"
    runtime: str = "onnx-genai"
    vllm_preferences: dict = field(default_factory=dict)
    vllm_cache_gi: int = 100
    skip_gpu_resource: bool = False
    replicas: int = 1
    autoscaling: Autoscaling = None  # None: `replicas`, fixed
    port: int = 5000
    display_name: str = None
    env: tuple = ()
    resources: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_RESOURCES))
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple = ()
    endpoint: dict = field(default_factory=dict)
    auth_enabled: bool = True
    dropped: tuple = ()          # user settings the operator ignored (refused vLLM options, reserved env names)

    @property
    def gpu_count(self):
        return int((self.resources.get("limits") or {}).get("gpu") or 0)


def _resources(raw):
    result = copy.deepcopy(DEFAULT_RESOURCES)
    for section in ("requests", "limits"):
        for key, value in ((raw or {}).get(section) or {}).items():
            if value is not None:
                result[section][key] = value
    return result


def _endpoint(raw):
    raw = dict(raw or {})
    tls = dict(raw.get("tls") or {})
    return {"enabled": bool(raw.get("enabled", False)), "host": raw.get("host") or None,
            "path": raw.get("path") or None, "pathType": raw.get("pathType") or "ImplementationSpecific",
            "ingressClassName": raw.get("ingressClassName") or None,
            "annotations": dict(raw.get("annotations") or {}),
            "tls": {"enabled": bool(tls.get("enabled", False)), "secretName": tls.get("secretName") or None}}


def _common(spec, model, compute, workload, endpoint):
    dropped = []
    prefs = {}
    for key, value in ((spec.get("vllm") or {}).get("preferences") or {}).items():
        option = workload_policy.vllm_option(key)
        if option is None:
            dropped.append(f"spec.vllm.preferences.{key}")
        else:
            prefs[option] = value
    env = []
    for item in spec.get("env") or []:
        if workload_policy.env_name_refused(item.get("name")):
            dropped.append(f"spec.env[{item.get('name')}]")
        else:
            env.append((item["name"], str(item.get("value") if item.get("value") is not None else "")))
    return DeploymentSpec(
        model=copy.deepcopy(model or {}), compute=compute, workload_type=workload or "generative",
        runtime=spec.get("runtime") or "onnx-genai", vllm_preferences=prefs,
        vllm_cache_gi=int((spec.get("vllm") or {}).get("modelCacheStorageGi") or 100),
        skip_gpu_resource=bool(spec.get("skipGpuResource", False)), replicas=int(spec.get("replicas") or 1),
        autoscaling=Autoscaling.of(spec.get("autoscaling")),
        port=int(spec.get("port") or 5000), display_name=spec.get("displayName"), env=tuple(env),
        resources=_resources(spec.get("resources")), node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(copy.deepcopy(spec.get("tolerations") or [])), endpoint=_endpoint(endpoint),
        auth_enabled=bool((spec.get("authentication") or {}).get("enabled", True)), dropped=tuple(dropped))


def from_model_deployment(obj):
    spec = obj.get("spec") or {}
    return _common(spec, spec.get("model"), spec.get("compute"), spec.get("workloadType"), spec.get("endpoint"))


def from_inference_service(obj):
    spec = obj.get("spec") or {}
    source = spec.get("modelSource") or {}
    model = {}
    if "foundry" in source:
        model["catalog"] = dict(source["foundry"])
    if "byo" in source:
        model["custom"] = dict(source["byo"])
    return _common(spec, model, spec.get("hardware"), spec.get("inferenceType"), spec.get("ingress"))


def normalise(obj):
    if obj["kind"] == "InferenceService":
        return from_inference_service(obj)
    return from_model_deployment(obj)


def validate(spec, prefix="spec"):
    """Raise InvalidSpec for the first rule the spec breaks (field paths are ModelDeployment paths)."""
    present = [k for k in ("ref", "catalog", "custom") if spec.model.get(k)]
    if len(present) != 1:
        raise InvalidSpec(f"{prefix}.model", "exactly one of ref, catalog or custom is required")
    if spec.compute not in ("cpu", "gpu"):
        raise InvalidSpec(f"{prefix}.compute", "must be cpu or gpu")
    if spec.runtime == "vllm":
        if spec.compute != "gpu":
            raise InvalidSpec(f"{prefix}.runtime", "vllm requires compute gpu")
        if spec.workload_type == "predictive":
            raise InvalidSpec(f"{prefix}.runtime", "vllm serves generative models only")
    if spec.compute == "gpu" and not spec.skip_gpu_resource and not 1 <= spec.gpu_count <= 8:
        raise InvalidSpec(f"{prefix}.resources.limits.gpu", "required (1-8) when compute is gpu "
                                                            "and skipGpuResource is false")
    if spec.skip_gpu_resource and not spec.node_selector:
        raise InvalidSpec(f"{prefix}.skipGpuResource", "requires nodeSelector (to land on a GPU node)")
    scale = spec.autoscaling
    if scale is not None and scale.max_replicas < max(1, scale.min_replicas):
        raise InvalidSpec(f"{prefix}.autoscaling.maxReplicas", "must be at least max(1, minReplicas)")
    if scale is not None and scale.scale_to_zero_after_s is not None and scale.min_replicas != 0:
        raise InvalidSpec(f"{prefix}.autoscaling.scaleToZeroAfterSeconds", "only allowed with minReplicas 0")
    path = spec.endpoint.get("path")
    if path and (not path.startswith("/") or any(c.isspace() for c in path)):
        raise InvalidSpec(f"{prefix}.endpoint.path", "must be an absolute path without spaces")
    return spec
