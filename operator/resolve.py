"""Model resolution: a deployment's model reference (a Model resource, an inline catalog alias + version, or an inline
custom OCI artifact) -> the model id, variant, artifact and runtime image role it will run.

Resolution never calls the store: it works on the Models listed this pass and the catalog already loaded, so it costs
nothing in an idle pass. A failure is a ResolutionError carrying the state to report: Pending while something may
still appear by itself (no catalog synced yet), Error when the reference cannot be satisfied as written (unknown
model, no variant for the compute) - re-evaluated every pass, so a later catalog sync or Model fixes it.
"""
from dataclasses import dataclass

from foundry_inference.catalog import task_workload_type

from . import catalog_mirror


class ResolutionError(Exception):
    def __init__(self, state, reason, message):
        super().__init__(message)
        self.state, self.reason, self.message = state, reason, message


@dataclass(frozen=True)
class ResolvedModel:
    name: str                 # model id: catalog variant id, Model name, or registry/repository:tag
    variant: str              # variant name (catalog) or tag (custom)
    source: str               # foundry-local | foundry | huggingface | custom
    workload_type: str        # generative | predictive (catalog entries decide for themselves)
    runtime: str              # onnx-genai | vllm
    role: str                 # image role in the operator settings
    image: str
    artifact: dict            # {"type": "oci", registry, repository, tag, credentials?} | {"type": "uri"|"builtin"}
    catalog_entry: dict = None
    catalog_variant: dict = None
    model_cr: str = None      # the Model resource it came from, if any

    @property
    def engine(self):
        """What actually runs the model: vllm, onnx-genai (the chat server) or onnxruntime (the predictive server)."""
        if self.runtime == "vllm":
            return "vllm"
        return "onnxruntime" if self.workload_type == "predictive" else "onnx-genai"


def image_role(workload_type, runtime, compute, byo):
    if runtime == "vllm":
        return "vllm_gpu"
    if workload_type == "predictive":
        return f"predictive-{compute}-byo"
    return f"generative-{compute}-byo" if byo else f"generative-{compute}"


def _oci(custom):
    artifact = {"type": "oci", "registry": custom["registry"], "repository": custom["repository"],
                "tag": custom["tag"]}
    ref = (custom.get("credentials") or {}).get("secretRef")
    if ref:
        artifact["credentials"] = {"name": ref["name"], "usernameKey": ref.get("usernameKey") or "username",
                                   "passwordKey": ref.get("passwordKey") or "password"}
    return artifact


def _catalog_artifact(variant, entry=None, region=None):
    art = variant.get("artifact") or {}
    if "builtin" in art:
        return {"type": "builtin", "name": art["builtin"]}
    if "uri" in art:
        template = variant.get("promptTemplate") or (entry or {}).get("promptTemplate")
        # the fetcher writes it into inference_model.json, as Foundry Local does
        extra = {"promptTemplate": template} if template else {}
        if region and art["uri"].startswith("azureml:"):
            extra["region"] = region      # the live catalog's detected region (FOUNDRY_AZURE_REGION still wins)
        extra.update({k: art[k] for k in ("sha256", "size") if art.get(k)})     # checked by the fetcher
        return {"type": "uri", "uri": art["uri"], **extra}
    return _oci({"registry": art["registry"], "repository": art["repository"], "tag": art.get("tag") or "latest"})


def _finish(spec, settings, *, name, variant, source, workload, runtime, byo, artifact, entry=None,
            catalog_variant=None, model_cr=None):
    if runtime == "vllm" and spec.compute != "gpu":
        raise ResolutionError("Error", "RuntimeRequiresGpu", f"model {name} runs on vLLM, which requires compute gpu")
    if runtime == "vllm" and workload == "predictive":
        raise ResolutionError("Error", "RuntimeMismatch", f"model {name} is predictive; vLLM serves generative models")
    role = image_role(workload, runtime, spec.compute, byo)
    return ResolvedModel(name=name, variant=variant, source=source, workload_type=workload, runtime=runtime,
                         role=role, image=settings.image(role), artifact=artifact, catalog_entry=entry,
                         catalog_variant=catalog_variant, model_cr=model_cr)


def _from_catalog(spec, settings, catalog, name, version, model_cr=None):
    if catalog is None:
        raise ResolutionError("Pending", "CatalogUnavailable", "waiting for the model catalog to be synced")
    entry, variant = catalog.resolve(name, version or "latest", spec.compute)
    if entry is None:
        raise ResolutionError("Error", "ModelNotFound", f"the catalog has no model {name!r}")
    if variant is None:
        offered = ", ".join(sorted({f"{v['id']} ({v['compute']})" for v in entry["variants"]}))
        at = "" if version in (None, "", "latest") else f" at version {version}"
        raise ResolutionError("Error", "VariantNotFound", f"catalog model {entry['alias']!r} has no {spec.compute} "
                                                          f"variant{at}; available: {offered}")
    workload = task_workload_type(entry.get("task"), spec.workload_type)
    framework = (variant.get("framework") or entry.get("framework") or "").lower()
    runtime = "vllm" if spec.runtime == "vllm" or framework == "vllm" else spec.runtime
    artifact = _catalog_artifact(variant, entry, catalog.doc.get("region"))
    try:
        artifact = catalog_mirror.artifact(artifact.get("uri", ""), settings.catalog) or artifact
    except catalog_mirror.MirrorError as exc:
        raise ResolutionError("Error", "MirrorNameInvalid", str(exc)) from None
    return _finish(spec, settings, name=variant["id"], variant=variant.get("name") or variant["id"],
                   source=entry["source"], workload=workload, runtime=runtime, byo=False,
                   artifact=artifact, entry=entry,
                   catalog_variant=variant, model_cr=model_cr)


def resolve_model_resource(model, catalog):
    """Validate a Model resource: (catalog name, version) for a catalog-sourced one, or its OCI artifact. Raises
    ResolutionError. Shared by the Model reconciler (its phase) and deployments that reference it."""
    name = model["metadata"]["name"]
    source = (model.get("spec") or {}).get("source") or {}
    kind = source.get("type")
    if kind == "custom":
        custom = source.get("custom")
        if not custom:
            raise ResolutionError("Error", "InvalidSource", f"Model {name}: source.custom is required for a custom "
                                                            "model")
        return {"type": "oci", "artifact": _oci(custom)}
    ref = source.get("catalog") or {}
    lookup = ref.get("id") or ref.get("name") or (model.get("spec") or {}).get("alias")
    if not lookup:
        raise ResolutionError("Error", "InvalidSource", f"Model {name}: source.catalog.name or id is required for a "
                                                        f"{kind} model")
    if catalog is None:
        raise ResolutionError("Pending", "CatalogUnavailable", "waiting for the model catalog to be synced")
    if catalog.find(lookup) is None:
        raise ResolutionError("Error", "ModelNotFound", f"Model {name}: the catalog has no model {lookup!r}")
    return {"type": "catalog", "name": lookup, "version": ref.get("version") or "latest"}


def resolve(spec, settings, catalog, models):
    """The ResolvedModel for a normalised spec; `models` maps name -> Model object in the owner's namespace."""
    model = spec.model
    if model.get("custom"):
        custom = model["custom"]
        name = f"{custom['registry']}/{custom['repository']}:{custom['tag']}"
        return _finish(spec, settings, name=name, variant=custom["tag"], source="custom", workload=spec.workload_type,
                       runtime=spec.runtime, byo=True, artifact=_oci(custom))
    if model.get("catalog"):
        ref = model["catalog"]
        return _from_catalog(spec, settings, catalog, ref["name"], ref.get("version"))
    ref_name = model["ref"]
    obj = models.get(ref_name)
    if obj is None:
        raise ResolutionError("Error", "ModelNotFound", f"Model {ref_name!r} does not exist in this namespace")
    found = resolve_model_resource(obj, catalog)
    mspec = obj.get("spec") or {}
    if found["type"] == "catalog":
        return _from_catalog(spec, settings, catalog, found["name"], found["version"], model_cr=ref_name)
    task = (mspec.get("capabilities") or {}).get("task")
    workload = mspec.get("workloadType") or ("predictive" if task_workload_type(task) == "predictive"
                                             else spec.workload_type)
    runtime = mspec.get("runtime") or spec.runtime
    return _finish(spec, settings, name=ref_name, variant=found["artifact"]["tag"], source="custom",
                   workload=workload, runtime=runtime, byo=True, artifact=found["artifact"], model_cr=ref_name)
