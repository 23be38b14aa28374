"""Deployments (ModelDeployment CRs) and legacy InferenceServices: one REST resource shape, two field vocabularies.

REST item: {"name", "namespace", "spec", "status"}; list: {<listKey>: [...], "continueToken": str|null} (contract
decisions 1, 2, 4). Create 201 + Location, PUT/PATCH 200, DELETE 202.
"""
from dataclasses import dataclass

from foundry_inference.apps.base import validation_error
from foundry_inference.store import errors as store_errors
from foundry_inference.store.base import merge_patch
from foundry_inference.store.kinds import CUSTOM_API_VERSION

from . import validation
from .admission import admit_deployment_spec
from .handler import ControlPlaneHandler

STATUS_FIELDS = ("state", "message", "replicas", "desiredReplicas", "lastScaling", "readyReplicas",
                 "deploymentReady", "serviceReady", "internalEndpoint",
                 "externalEndpoint", "resolvedModel", "authentication", "observedGeneration")
DEFAULT_PAGE = 500
MAX_PAGE = 500
PATCH_RETRIES = 3


@dataclass(frozen=True)
class Workload:
    kind: str
    collection: str          # URL segment
    list_key: str
    schema: type
    patch_schema: type
    registry_path: tuple     # where an inline registry lives in the spec

    @property
    def patchable(self):
        return tuple(self.patch_schema().fields)

    def registry(self, spec):
        node = spec
        for key in self.registry_path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    def to_rest(self, obj):
        status = obj.get("status") or {}
        rest_status = {key: status.get(key) for key in STATUS_FIELDS}
        rest_status["conditions"] = status.get("conditions") or []
        meta = obj["metadata"]
        return {"name": meta["name"], "namespace": meta.get("namespace"), "spec": obj.get("spec") or {},
                "status": rest_status}

    def to_object(self, namespace, name, spec, metadata=None):
        meta = dict(metadata or {})
        meta.update(name=name, namespace=namespace)
        return {"apiVersion": CUSTOM_API_VERSION, "kind": self.kind, "metadata": meta, "spec": spec}


DEPLOYMENTS = Workload("ModelDeployment", "deployments", "deployments", validation.DeploymentSchema,
                       validation.DeploymentPatchSchema, ("model", "custom", "registry"))
INFERENCE_SERVICES = Workload("InferenceService", "inferenceservices", "inferenceServices",
                              validation.InferenceServiceSchema, validation.InferenceServicePatchSchema,
                              ("modelSource", "byo", "registry"))


class WorkloadHandler(ControlPlaneHandler):
    workload: Workload = None

    def location(self, namespace, name):
        return f"/api/v1/namespaces/{namespace}/{self.workload.collection}/{name}"

    async def list_page(self, namespace):
        limit = self.query_int("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        token = self.query_str("continue", 4096)
        page = await self.store.list(self.workload.kind, namespace, limit=limit, continue_token=token)
        self.write_json({self.workload.list_key: [self.workload.to_rest(o) for o in page.items],
                         "continueToken": page.continue_token})

    async def load_workload(self, body_name=None):
        body = self.load_body(self.workload.schema())
        if body_name is not None and body["name"] != body_name:
            raise validation_error([{"field": "name", "message": f"must match the name in the path ({body_name})"}])
        registry = self.workload.registry(body["spec"])
        if registry is not None:
            await self.check_registry(registry, "spec." + ".".join(self.workload.registry_path))
        if self.workload is DEPLOYMENTS:
            await admit_deployment_spec(body["spec"], self.settings["catalog_cache"])
        return body


class ListAllHandler(WorkloadHandler):
    async def get(self):
        await self.list_page(None)


class CollectionHandler(WorkloadHandler):
    async def get(self, ns):
        self.check_namespace(ns)
        await self.list_page(ns)

    async def post(self, ns):
        self.check_namespace(ns, for_write=True)
        body = await self.load_workload()
        created = await self.store.create(self.workload.to_object(ns, body["name"], body["spec"]))
        self.set_header("Location", self.location(ns, body["name"]))
        self.write_json(self.workload.to_rest(created), 201)


class ItemHandler(WorkloadHandler):
    def prepare_names(self, ns, name, for_write=False):
        self.check_namespace(ns, for_write)
        self.check_name(name)

    async def get(self, ns, name):
        self.prepare_names(ns, name)
        self.write_json(self.workload.to_rest(await self.store.get_cached(self.workload.kind, ns, name)))

    async def put(self, ns, name):
        self.prepare_names(ns, name, for_write=True)
        body = await self.load_workload(body_name=name)
        current = await self.store.get(self.workload.kind, ns, name)
        obj = self.workload.to_object(ns, name, body["spec"], current["metadata"])
        self.write_json(self.workload.to_rest(await self.store.replace(obj)))

    async def patch(self, ns, name):
        self.prepare_names(ns, name, for_write=True)
        raw = self.json_body()
        unknown = sorted(set(raw) - set(self.workload.patchable))
        if unknown:
            allowed = ", ".join(self.workload.patchable)
            raise validation_error([{"field": key, "message": f"not patchable; PATCH accepts only {allowed} "
                                                              "(use PUT to replace the whole spec)"}
                                    for key in unknown])
        changes = validation.load(self.workload.patch_schema(), raw)
        for attempt in range(PATCH_RETRIES):
            current = await self.store.get(self.workload.kind, ns, name)
            spec = dict(current.get("spec") or {})
            for key, value in changes.items():
                if value is None:
                    spec.pop(key, None)         # `"autoscaling": null` removes it (RFC 7386)
                else:
                    spec[key] = merge_patch(spec.get(key), value) if isinstance(value, dict) else value
            full = validation.load(self.workload.schema(), {"name": name, "spec": spec})
            obj = self.workload.to_object(ns, name, full["spec"], current["metadata"])
            try:
                updated = await self.store.replace(obj)
            except store_errors.Conflict:
                if attempt == PATCH_RETRIES - 1:
                    raise
                continue
            self.write_json(self.workload.to_rest(updated))
            return

    async def delete(self, ns, name):
        self.prepare_names(ns, name)
        await self.store.delete(self.workload.kind, ns, name)
        self.write_json({"status": "deleting", "name": name, "namespace": ns}, 202)


def routes():
    out = []
    for workload in (DEPLOYMENTS, INFERENCE_SERVICES):
        c = workload.collection
        out += [(rf"/api/v1/{c}", ListAllHandler, {"workload": workload}),
                (rf"/api/v1/namespaces/(?P<ns>[^/]+)/{c}", CollectionHandler, {"workload": workload}),
                (rf"/api/v1/namespaces/(?P<ns>[^/]+)/{c}/(?P<name>[^/]+)", ItemHandler, {"workload": workload})]
    return out
