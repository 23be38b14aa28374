"""Lazy registration: the Model resource created the first time a catalog model is deployed (setting
catalog.lazyRegistrationEnabled), so `kubectl get models` shows what is in use. It has no owner: it outlives the
deployments that use it."""
from .. import names


def catalog_model(namespace, entry, variant):
    spec = {"displayName": entry.get("displayName") or entry["alias"], "alias": entry["alias"],
            "source": {"type": entry["source"], "catalog": {"name": entry["alias"], "id": variant["id"],
                                                             "version": str(variant.get("version") or "latest")}},
            "supportedCompute": sorted({v["compute"] for v in entry["variants"]}),
            "variants": [{"id": variant["id"], "name": variant.get("name") or variant["id"],
                          "compute": variant["compute"]}]}
    for key in ("description", "publisher", "license", "framework", "modelVersion"):
        if entry.get(key):
            spec[key] = str(entry[key])
    for key in ("version", "executionProvider"):
        if variant.get(key):
            spec["variants"][0][key] = str(variant[key])
    if isinstance(variant.get("fileSizeBytes"), int):
        spec["variants"][0]["fileSizeBytes"] = variant["fileSizeBytes"]
    capabilities = {}
    if entry.get("task"):
        capabilities["task"] = entry["task"]
    if isinstance(entry.get("contextLength"), int) and entry["contextLength"] > 0:
        capabilities["contextLength"] = entry["contextLength"]
    if capabilities:
        spec["capabilities"] = capabilities
    labels = {names.MANAGED_BY: names.MANAGED_BY_VALUE, names.SOURCE_LABEL: entry["source"],
              names.HARDWARE_LABEL: variant["compute"]}
    return {"apiVersion": names.API_VERSION, "kind": "Model",
            "metadata": {"name": names.model_cr_name(variant["id"]), "namespace": namespace, "labels": labels},
            "spec": spec}
