"""The unified models API: the synced catalog (ConfigMap) plus BYO `Model` CRs in the operator namespace."""
import logging
import re
import time

from foundry_inference import catalog as catalog_format
from foundry_inference.apps.base import ApiError, validation_error
from foundry_inference.auth import actions
from foundry_inference.auth.principal import Resource
from foundry_inference.store import errors as store_errors
from foundry_inference.store.kinds import CUSTOM_API_VERSION
from foundry_inference.timefmt import now_rfc3339

from . import validation
from .handler import ControlPlaneHandler

log = logging.getLogger("foundry_inference.controlplane.models")

SOURCES = ("foundry-local", "foundry", "custom", "huggingface")
COMPUTES = ("cpu", "gpu", "npu")
LAST_SYNC = "foundry.azure.com/last-sync"
CATALOG_VERSION = "foundry.azure.com/catalog-version"
SYNC_REQUESTED = "foundry.azure.com/sync-requested-at"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$")


def _default_variant(entry):
    return next((v for v in entry["variants"] if v["compute"] == "cpu"), entry["variants"][0])


def catalog_summary(entry):
    return {"id": _default_variant(entry)["id"], "alias": entry["alias"], "displayName": entry.get("displayName"),
            "publisher": entry.get("publisher"), "description": entry.get("description"),
            "license": entry.get("license"), "task": entry.get("task"), "source": entry["source"],
            "framework": entry.get("framework"), "modelVersion": entry.get("modelVersion"),
            "supportedCompute": sorted({v["compute"].upper() for v in entry["variants"]})}


def custom_summary(obj):
    spec = obj.get("spec") or {}
    compute = sorted({c.upper() for c in spec.get("supportedCompute") or []}) or None
    return {"id": obj["metadata"]["name"], "alias": spec.get("alias") or obj["metadata"]["name"],
            "displayName": spec.get("displayName"), "publisher": spec.get("publisher"),
            "description": spec.get("description"), "license": spec.get("license"),
            "task": (spec.get("capabilities") or {}).get("task"), "source": "custom",
            "framework": spec.get("framework"),
            "modelVersion": spec.get("modelVersion") or ((spec.get("source") or {}).get("custom") or {}).get("tag"),
            "supportedCompute": compute}


def custom_detail(obj):
    spec = obj.get("spec") or {}
    detail = custom_summary(obj)
    detail.update(name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"), spec=spec,
                  status=obj.get("status") or {}, createdAt=obj["metadata"].get("creationTimestamp"))
    return detail


class _Indexed:
    """A summary with its lower-cased search keys computed once."""

    __slots__ = ("summary", "names", "publisher", "task", "compute", "source", "entry")

    def __init__(self, summary, extra_ids=(), entry=None):
        self.summary = summary
        self.entry = entry
        self.names = " ".join(x.lower() for x in (summary["id"], summary.get("alias"), summary.get("displayName"),
                                                   *extra_ids) if x)
        self.publisher = (summary.get("publisher") or "").lower()
        self.task = (summary.get("task") or "").lower()
        self.compute = set(summary.get("supportedCompute") or [])
        self.source = summary["source"]


class CatalogCache:
    """The parsed catalog ConfigMap, re-read at most every `ttl` seconds and re-parsed only when it changed."""

    def __init__(self, store, namespace, name, ttl=2.0):
        self.store, self.namespace, self.name, self.ttl = store, namespace, name, ttl
        self._checked = 0.0
        self._rv = None
        self.indexed, self.version, self.last_sync, self.catalog = [], None, None, None
        self._custom, self._custom_at = None, 0.0

    async def custom_models(self):
        """BYO Model CRs, listed at most every `ttl` seconds; writes through this process invalidate the cache."""
        if self._custom is None or time.monotonic() - self._custom_at >= self.ttl:
            items = await self.store.list_all("Model", self.namespace)
            self._custom = [o for o in items if ((o.get("spec") or {}).get("source") or {}).get("type") == "custom"]
            self._custom_at = time.monotonic()
        return self._custom

    def invalidate_custom(self):
        self._custom = None

    async def refresh(self):
        if time.monotonic() - self._checked < self.ttl:
            return self
        try:
            cm = await self.store.get("ConfigMap", self.namespace, self.name)
        except store_errors.NotFound:
            cm = None
        self._checked = time.monotonic()
        rv = cm["metadata"]["resourceVersion"] if cm else None
        if rv == self._rv:
            return self
        self._rv = rv
        doc = {"version": None, "models": []}
        if cm and (cm.get("data") or {}).get("catalog.json"):
            try:
                doc = catalog_format.parse(cm["data"]["catalog.json"])
            except catalog_format.CatalogError as exc:
                log.warning("catalog ConfigMap is malformed; serving an empty catalog: %s", exc)
        annotations = (cm or {}).get("metadata", {}).get("annotations") or {}
        self.catalog = catalog_format.Catalog(doc)
        self.version = annotations.get(CATALOG_VERSION) or doc.get("version")
        self.last_sync = annotations.get(LAST_SYNC)
        order = {s: i for i, s in enumerate(SOURCES)}
        entries = sorted(doc["models"], key=lambda e: order.get(e["source"], 99))
        self.indexed = [_Indexed(catalog_summary(e), [v["id"] for v in e["variants"]], e) for e in entries]
        return self


class ModelsHandler(ControlPlaneHandler):
    def auth_resource(self):
        """Models are not deployments: authorize against the operator namespace's collection, whatever `name` is."""
        return Resource(namespace=self.config.operator_namespace, name=None,
                        verb=actions.verb_for(self.request.method, False))

    @property
    def catalog(self):
        return self.settings["catalog_cache"]

    async def custom_models(self):
        return await self.catalog.custom_models()

    def check_model_name(self, name):
        if not _MODEL_ID.match(name):
            raise validation_error([{"field": "name", "message": "must be a model alias or id "
                                                                 "(letters, digits, '.', '_', ':', '-')"}])

    async def custom_body(self, path_name=None):
        body = self.load_body(validation.CustomModelSchema())
        if path_name is not None and body["name"] != path_name:
            raise validation_error([{"field": "name", "message": f"must match the name in the path ({path_name})"}])
        await self.check_registry(body["source"]["custom"]["registry"], "source.custom.registry")
        name = body.pop("name")
        hardware = ((body.get("supportedCompute") or ["cpu"])[0]).lower()
        meta = {"name": name, "namespace": self.config.operator_namespace,
                "labels": {"foundry.azure.com/source": "custom", "foundry.azure.com/hardware": hardware}}
        return {"apiVersion": CUSTOM_API_VERSION, "kind": "Model", "metadata": meta, "spec": body}


class ModelListHandler(ModelsHandler):
    async def get(self):
        name = (self.query_str("name") or "").lower()
        compute = self.query_str("compute")
        if compute is not None and compute.lower() not in COMPUTES:
            raise validation_error([{"field": "compute", "message": "value is not a valid enumeration member; "
                                                                    "permitted: cpu, gpu, npu"}])
        source = self.query_str("source")
        if source is not None and source.lower() not in SOURCES:
            raise validation_error([{"field": "source", "message": "value is not a valid enumeration member; "
                                                                   "permitted: " + ", ".join(SOURCES)}])
        task = (self.query_str("task") or "").lower()
        publisher = (self.query_str("publisher") or "").lower()
        limit = self.query_int("limit", None, 1, 100, clamp=True)
        offset = self.query_int("offset", None, 0, 10**9)
        cache = await self.catalog.refresh()
        everything = list(cache.indexed)
        if source in (None, "custom"):
            everything += [_Indexed(custom_summary(o)) for o in await self.custom_models()]
        want_compute = compute.upper() if compute else None
        source = source.lower() if source else None
        matched = [i.summary for i in everything
                   if (not name or name in i.names) and (not want_compute or want_compute in i.compute)
                   and (not task or task == i.task) and (not publisher or publisher in i.publisher)
                   and (not source or source == i.source)]
        start = offset or 0
        page = matched[start:start + limit] if limit is not None else matched[start:]
        self.write_json({"models": page, "total": len(matched), "count": len(page),
                         "hasMore": start + len(page) < len(matched), "limit": limit, "offset": offset,
                         "unfilteredTotal": len(everything), "version": cache.version, "lastSync": cache.last_sync})

    async def post(self):
        obj = await self.custom_body()
        created = await self.store.create(obj)
        self.catalog.invalidate_custom()
        self.set_header("Location", f"/api/v1/models/custom/{created['metadata']['name']}")
        self.write_json(custom_detail(created), 201)


class CatalogModelHandler(ModelsHandler):
    async def get(self, source, name):
        self.check_model_name(name)
        cache = await self.catalog.refresh()
        entry = cache.catalog.find(name, source=source)
        if entry is None:
            raise ApiError(404, "NotFound", f"No {source} catalog model with alias or id {name!r}")
        detail = catalog_summary(entry)
        detail.update(variants=entry["variants"], contextLength=entry.get("contextLength"))
        self.write_json(detail)


class CustomModelHandler(ModelsHandler):
    async def get(self, name):
        self.check_name(name, subdomain=True)
        obj = await self.store.get("Model", self.config.operator_namespace, name)
        if ((obj.get("spec") or {}).get("source") or {}).get("type") != "custom":
            raise ApiError(404, "NotFound", f"No custom model named {name!r}")
        self.write_json(custom_detail(obj))

    async def put(self, name):
        self.check_name(name, subdomain=True)
        obj = await self.custom_body(path_name=name)
        current = await self.store.get("Model", self.config.operator_namespace, name)
        if ((current.get("spec") or {}).get("source") or {}).get("type") != "custom":
            raise ApiError(404, "NotFound", f"No custom model named {name!r}")
        obj["metadata"] = {**current["metadata"], "labels": {**(current["metadata"].get("labels") or {}),
                                                             **obj["metadata"]["labels"]}}
        replaced = await self.store.replace(obj)
        self.catalog.invalidate_custom()
        self.write_json(custom_detail(replaced))

    async def delete(self, name):
        self.check_name(name, subdomain=True)
        namespace = self.config.operator_namespace
        obj = await self.store.get("Model", namespace, name)
        if ((obj.get("spec") or {}).get("source") or {}).get("type") != "custom":
            raise ApiError(404, "NotFound", f"No custom model named {name!r}")
        await self.store.delete("Model", namespace, name)
        self.catalog.invalidate_custom()
        self.write_json({"status": "deleting", "name": name, "namespace": namespace}, 202)


class SyncHandler(ModelsHandler):
    async def post(self):
        namespace, name, now = self.config.operator_namespace, self.config.catalog_configmap, now_rfc3339()
        patch = {"metadata": {"annotations": {SYNC_REQUESTED: now}}}
        try:
            await self.store.patch("ConfigMap", namespace, name, patch)
        except store_errors.NotFound:
            await self.store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": name, "namespace": namespace, "annotations": {SYNC_REQUESTED: now},
                "labels": {"app.kubernetes.io/managed-by": "inference-operator"}}})
        self.write_json({"status": "triggered", "message": "Catalog sync requested", "syncedAt": now})


routes = [
    (r"/api/v1/models", ModelListHandler),
    (r"/api/v1/models/sync", SyncHandler),
    (r"/api/v1/models/(?P<source>foundry-local|foundry)/(?P<name>[^/]+)", CatalogModelHandler),
    (r"/api/v1/models/custom/(?P<name>[^/]+)", CustomModelHandler),
]
