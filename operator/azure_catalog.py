"""Live sync of the real Foundry catalog (catalog.sourceType `azure`, FOUNDRY_CATALOG_SOURCE=azure): the models
Foundry Local offers, read from the public catalog service and mapped onto our catalog format (docs/catalog.md).

`POST {catalog.azureCatalogUrl}/entities/crossRegion` (`{region}` replaced; User-Agent AzureAiStudio) with
`resourceIds: [{resourceId: "azureml", entityContainerType: "Registry"}]` and `indexEntitiesRequest.filters` on
type=models, kind=Versioned, labels=latest, `annotations/tags/foundryLocal`, the device and the execution provider;
pages follow `continuationToken` (with `skip` and `pageSize`). On status 0/408/429/5xx the next region is tried.

Mapping: `annotations.tags` alias, task, license, promptTemplate, supportsToolCalling; `annotations.systemCatalogData`
publisher, displayName, maxOutputTokens; `properties` name, version and variantInfo.variantMetadata device,
executionProvider, fileSizeBytes. Variants are grouped by alias; each one's artifact is
`azureml://registries/azureml/models/<name>/versions/<version>`. An entity that cannot be mapped is skipped (and
counted in the log), never a reason to drop the whole catalog. The region that answered is the catalog's `region`:
downloads of its models try it first unless a region is configured. Samples (`builtin` artifacts) of the configured
`catalog.source` are kept in embedded mode.
"""
import datetime
import json
import logging
import os
import urllib.error
from http.client import HTTPException

from foundry_inference import catalog as catalog_mod
from foundry_inference import logs

from . import azureml
from .fetch_http import FetchError

log = logging.getLogger("foundry_inference.operator.catalog")
DEVICES = {"cpu": "cpu", "gpu": "gpu", "npu": "npu"}
EXECUTION_PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "WebGpuExecutionProvider",
                       "QNNExecutionProvider", "OpenVINOExecutionProvider", "NvTensorRTRTXExecutionProvider",
                       "VitisAIExecutionProvider", "DmlExecutionProvider")
PAGE_SIZE = 50
MAX_PAGES = 200


class CatalogSourceError(Exception):
    pass


def request_body(page_size=PAGE_SIZE, skip=None, token=None):
    filters = [
        {"field": "type", "operator": "eq", "values": ["models"]},
        {"field": "kind", "operator": "eq", "values": ["Versioned"]},
        {"field": "labels", "operator": "eq", "values": ["latest"]},
        {"field": "annotations/tags/foundryLocal", "operator": "eq", "values": ["", "test"]},
        {"field": "properties/variantInfo/variantMetadata/device", "operator": "eq", "values": sorted(DEVICES)},
        {"field": "properties/variantInfo/variantMetadata/executionProvider", "operator": "eq",
         "values": list(EXECUTION_PROVIDERS)},
    ]
    return {"resourceIds": [{"resourceId": "azureml", "entityContainerType": "Registry"}],
            "indexEntitiesRequest": {"filters": filters, "pageSize": page_size, "skip": skip,
                                     "continuationToken": token}}


def _text(value):
    return value.strip() if isinstance(value, str) and value.strip() else None


def _template(value):
    """promptTemplate as the catalog gives it: a JSON object, or a string holding one."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
            return parsed if isinstance(parsed, dict) else None
        except ValueError:
            return None
    return None


def map_entity(entity):
    """(alias, entry fields, variant) for one catalog entity; ValueError when it cannot be mapped."""
    if not isinstance(entity, dict):
        raise ValueError("not an object")
    annotations = entity.get("annotations") if isinstance(entity.get("annotations"), dict) else {}
    tags = annotations.get("tags") if isinstance(annotations.get("tags"), dict) else {}
    system = annotations.get("systemCatalogData") if isinstance(annotations.get("systemCatalogData"), dict) else {}
    props = entity.get("properties") if isinstance(entity.get("properties"), dict) else {}
    meta = ((props.get("variantInfo") or {}).get("variantMetadata") or {}) if isinstance(props.get("variantInfo"),
                                                                                          dict) else {}
    name, version = _text(props.get("name")), str(props.get("version") or "").strip()
    asset = azureml.parse_uri(f"azureml://registries/azureml/models/{name}/versions/{version}")  # FetchError
    if not version.isdigit():
        raise ValueError(f"version {version!r} is not a number")
    device = DEVICES.get(str(meta.get("device") or "").lower())
    if device is None:
        raise ValueError(f"device {meta.get('device')!r} is not cpu, gpu or npu")
    alias = _text(tags.get("alias")) or name
    size = meta.get("fileSizeBytes")
    variant = {"id": asset.model_id, "name": name, "version": version, "compute": device,
               "executionProvider": _text(meta.get("executionProvider")),
               "artifact": {"uri": asset.uri}}
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        variant["fileSizeBytes"] = size
    template = _template(tags.get("promptTemplate"))
    if template:
        variant["promptTemplate"] = template
    if "supportsToolCalling" in tags:
        variant["supportsToolCalling"] = str(tags["supportsToolCalling"]).strip().lower() in ("true", "1", "yes")
    max_out = system.get("maxOutputTokens") or tags.get("maxOutputTokens")
    if isinstance(max_out, int) or (isinstance(max_out, str) and max_out.isdigit()):
        variant["maxOutputTokens"] = int(max_out)
    fields = {"displayName": _text(system.get("displayName")) or alias, "publisher": _text(system.get("publisher")),
              "description": _text(entity.get("description")) or _text(props.get("description")),
              "license": _text(tags.get("license")), "task": _text(tags.get("task")) or "chat-completion"}
    return alias, {k: v for k, v in fields.items() if v is not None}, variant


def to_catalog(entities, version):
    entries, skipped = {}, 0
    for entity in entities:
        try:
            alias, fields, variant = map_entity(entity)
        except (ValueError, FetchError):
            skipped += 1
            continue
        entry = entries.setdefault(alias.lower(), {"alias": alias, **fields, "source": "foundry-local",
                                                   "framework": "ONNX", "variants": []})
        if all(v["id"] != variant["id"] for v in entry["variants"]):
            entry["variants"].append(variant)
        entry["modelVersion"] = max((v["version"] for v in entry["variants"]), key=int)
    if skipped:
        logs.event(log, "catalog entities skipped", level=logging.WARNING, skipped=skipped,
                   reason="missing name, version or a known device")
    return {"version": version, "models": sorted(entries.values(), key=lambda e: e["alias"].lower())}


def _client(catalog_settings, registry_allowlist=()):
    env = os.environ
    allow = {a.lower() for a in registry_allowlist} | {
        a.strip().lower() for a in (env.get("FOUNDRY_REGISTRY_ALLOWLIST") or "").split(",") if a.strip()}
    settings = azureml.AzureSettings(
        region=catalog_settings.azureRegion or azureml.DEFAULT_REGION, allowlist=frozenset(allow),
        insecure=(env.get("FOUNDRY_FETCH_INSECURE") or "").strip().lower() in ("1", "true", "yes", "on"),
        attempts=1, timeout_s=catalog_settings.timeoutSeconds)
    return azureml.Client(settings)


def fetch_entities(catalog_settings, registry_allowlist=()):
    """(every entity of the live catalog (all pages), the region that answered), trying the regions in turn."""
    client = _client(catalog_settings, registry_allowlist)
    failures = []
    for region in client.settings.regions():
        url = catalog_settings.azureCatalogUrl.replace("{region}", region).rstrip("/") + "/entities/crossRegion"
        try:
            return _pages(client, url), region
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code not in azureml.RETRY_STATUSES:
                raise CatalogSourceError(f"{azureml.redact(url)}: HTTP {exc.code}") from None
            failures.append(f"{region}: HTTP {exc.code}")
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            failures.append(f"{region}: {getattr(exc, 'reason', None) or exc}")
        except FetchError as exc:
            if not str(exc).startswith("cannot resolve"):
                raise CatalogSourceError(str(exc)) from None
            failures.append(f"{region}: {exc}")
        logs.event(log, "catalog service unavailable in region; trying the next", level=logging.WARNING,
                   region=region, error=failures[-1])
    raise CatalogSourceError(f"no catalog region answered ({'; '.join(failures[-4:])})")


def _pages(client, url):
    entities, token, skip = [], None, 0
    for _page in range(MAX_PAGES):
        body = json.dumps(request_body(PAGE_SIZE, skip or None, token)).encode()
        with client.open(url, {"Content-Type": "application/json", "Accept": "application/json"}, "POST",
                         body) as resp:
            data = resp.read(catalog_mod.MAX_CATALOG_BYTES + 1)
        if len(data) > catalog_mod.MAX_CATALOG_BYTES:
            raise CatalogSourceError(f"{azureml.redact(url)}: a catalog page is larger than "
                                     f"{catalog_mod.MAX_CATALOG_BYTES} bytes")
        try:
            doc = json.loads(data)
        except ValueError:
            raise CatalogSourceError(f"{azureml.redact(url)}: the catalog answer is not JSON") from None
        inner = doc.get("indexEntitiesResponse", doc) if isinstance(doc, dict) else None
        page = inner.get("value") if isinstance(inner, dict) else None
        if not isinstance(page, list):
            raise CatalogSourceError(f"{azureml.redact(url)}: the catalog answer has no entity list")
        entities += page
        token = inner.get("continuationToken") or inner.get("nextSkip")
        skip += len(page)
        if not token or not page:
            return entities
    raise CatalogSourceError(f"{azureml.redact(url)}: more than {MAX_PAGES} catalog pages")


def load(catalog_settings, samples_from=None, registry_allowlist=()):
    """The live catalog as a validated document; `samples_from` (a catalog document) contributes its `builtin`
    sample entries (embedded mode)."""
    entities, region = fetch_entities(catalog_settings, registry_allowlist)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    doc = to_catalog(entities, f"azure-{stamp}")
    doc["region"] = region            # the detected region: downloads try it first unless one is configured
    if not doc["models"]:
        raise CatalogSourceError(f"the live catalog answered {len(entities)} entities and none could be used")
    if samples_from:
        taken = {e["alias"].lower() for e in doc["models"]}
        doc["models"] += [e for e in samples_from.get("models", []) if e["alias"].lower() not in taken and
                          all("builtin" in (v.get("artifact") or {}) for v in e["variants"])]
    try:
        return catalog_mod.validate(doc)
    except catalog_mod.CatalogError as exc:
        raise CatalogSourceError(f"the live catalog does not map onto a valid catalog: {exc}") from None
