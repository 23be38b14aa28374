"""What a deployment's spec can say only once its model is known: the catalog decides a catalog model's workload
type (its task), so a ModelDeployment naming a catalog model is stored with that workloadType instead of the CRD's
default `generative`, and a workloadType that contradicts the catalog is refused (400) rather than silently ignored.
Everything else the operator resolves (the engine, the image, the port that runs) is in `status.resolvedModel`
(docs/api.md, "Effective values")."""
from foundry_inference.apps.base import validation_error
from foundry_inference.catalog import task_workload_type


async def admit_deployment_spec(spec, catalog_cache):
    """`spec` (a validated ModelDeployment spec, modified in place) with workloadType set from the catalog entry its
    `model.catalog` names. A model the catalog does not (yet) know is left for the operator to report."""
    ref = (spec.get("model") or {}).get("catalog")
    if not ref:
        return spec
    catalog = (await catalog_cache.refresh()).catalog
    entry = catalog.find(ref["name"]) if catalog is not None else None
    workload = task_workload_type((entry or {}).get("task"))
    if workload is None:
        return spec
    given = spec.get("workloadType")
    if given and given != workload:
        raise validation_error([{"field": "spec.workloadType", "message": (
            f"catalog model {entry['alias']!r} (task {entry['task']}) is a {workload} model; omit workloadType or "
            f"set it to {workload}")}])
    spec["workloadType"] = workload
    return spec
