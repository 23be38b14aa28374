"""Reconcile a Model: validate its source and resolve it (phase Pending / Available / Error). A custom model is
Available once its OCI reference is well formed (the artifact is pulled by each deployment's fetcher, which reports
pull errors on the deployment); a catalog-sourced model is Available while the synced catalog has it."""
from foundry_inference.store import errors

from . import status as status_mod
from .resolve import ResolutionError, resolve_model_resource


def _resolved(found, model, catalog):
    if found["type"] == "oci":
        art = found["artifact"]
        return {"id": model["metadata"]["name"], "variant": art["tag"],
                "uri": f"oci://{art['registry']}/{art['repository']}:{art['tag']}"}
    entry = catalog.find(found["name"])
    variant = next((v for v in entry["variants"] if v["id"].lower() == found["name"].lower()), None)
    if variant is None:       # an alias: the variant is chosen per deployment, by its compute
        return {"id": entry["alias"], "variant": None, "uri": None}
    art = variant.get("artifact") or {}
    result = {"id": variant["id"], "variant": variant.get("name") or variant["id"],
              "uri": art.get("uri") or (f"builtin:{art['builtin']}" if "builtin" in art else None)}
    if isinstance(variant.get("fileSizeBytes"), int):
        result["sizeBytes"] = variant["fileSizeBytes"]
    return result


def compute(model, catalog, now):
    meta = model["metadata"]
    generation = int(meta.get("generation") or 1)
    previous = model.get("status") or {}
    try:
        found = resolve_model_resource(model, catalog)
    except ResolutionError as exc:
        phase = "Pending" if exc.state == "Pending" else "Error"
        cond = status_mod.condition(previous.get("conditions"), "Ready", "False", exc.reason, exc.message,
                                    generation, now)
        new = {"phase": phase, "message": exc.message, "resolved": None, "conditions": [cond],
               "observedGeneration": generation}
    else:
        resolved = _resolved(found, model, catalog)
        message = f"resolved to {resolved['id']}"
        cond = status_mod.condition(previous.get("conditions"), "Ready", "True", "Resolved", message, generation, now)
        new = {"phase": "Available", "message": message, "resolved": resolved, "conditions": [cond],
               "observedGeneration": generation}
    new["lastChecked"] = previous.get("lastChecked")
    if status_mod.changed(previous, new):
        new["lastChecked"] = status_mod.rfc3339(now)
    return new


def reconcile(store, model, catalog, now):
    """Write the Model's status if it changed; returns True when it wrote."""
    new = compute(model, catalog, now)
    if not status_mod.changed(model.get("status"), new):
        return False
    meta = model["metadata"]
    try:
        store.patch_status("Model", meta["namespace"], meta["name"], new)
    except errors.NotFound:
        return False
    return True
