"""Catalog sync: load the catalog from its configured source (a file, or an http(s) URL; or with catalog.sourceType
`azure` the live Foundry catalog, azure_catalog.py), validate it, and write the
`foundry-local-catalog` ConfigMap (key `catalog.json`, annotations `foundry.azure.com/last-sync` and
`foundry.azure.com/catalog-version`) in the operator namespace.

A sync runs when the ConfigMap has no catalog yet, when `catalog.intervalSeconds` have passed since the last attempt,
and when the control plane asks for one by setting `foundry.azure.com/sync-requested-at` later than the last attempt.
A broken source never replaces the last good catalog: the ConfigMap keeps its data and gets
`foundry.azure.com/last-sync-error` (why) and `foundry.azure.com/last-sync-attempt` (when).
"""
import datetime
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from foundry_inference import catalog as catalog_mod
from foundry_inference import logs
from foundry_inference.store import errors

from . import azure_catalog, names
from .status import rfc3339

log = logging.getLogger("foundry_inference.operator.catalog")


class SourceError(Exception):
    pass


def parse_time(value):
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def read_source(source, timeout=30.0, limit=catalog_mod.MAX_CATALOG_BYTES):
    """The catalog text from a path, file:// or http(s):// URL; SourceError says what went wrong."""
    parsed = urlparse(source)
    try:
        if parsed.scheme in ("http", "https"):
            req = urllib.request.Request(source, headers={"Accept": "application/json",
                                                          "User-Agent": "foundry-inference-operator"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured by the admin
                data = resp.read(limit + 1)
        else:
            path = Path(parsed.path if parsed.scheme == "file" else source)
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{source}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise SourceError(f"{source}: {reason}") from None
    if len(data) > limit:
        raise SourceError(f"{source}: larger than {limit} bytes")
    return data


class CatalogSync:
    def __init__(self, store, settings):
        self.store = store
        self.settings = settings
        self.namespace = settings.operatorNamespace
        self.catalog = None          # the last good catalog.Catalog
        self.token = 0               # bumped whenever `catalog` is replaced
        self.last_error = None
        self._seen_rv = None
        self.syncs = 0

    def _parse_configmap(self, cm):
        rv = cm["metadata"].get("resourceVersion")
        if rv and rv == self._seen_rv:
            return
        text = (cm.get("data") or {}).get(names.CATALOG_KEY)
        if text:
            try:
                self.catalog = catalog_mod.Catalog(catalog_mod.parse(text))
                self.token += 1
            except catalog_mod.CatalogError as exc:
                log.warning("catalog ConfigMap holds an invalid catalog: %s", exc)
        self._seen_rv = rv

    def due(self, cm, now):
        """Why a sync is due now, or None."""
        if cm is None or not (cm.get("data") or {}).get(names.CATALOG_KEY):
            if cm is not None and self._attempted_within(cm, now, self._retry_s()):
                return None
            return "no catalog yet"
        annotations = cm["metadata"].get("annotations") or {}
        last = max(filter(None, (parse_time(annotations.get(names.LAST_SYNC)),
                                 parse_time(annotations.get(names.SYNC_ATTEMPT)))), default=None)
        requested = parse_time(annotations.get(names.SYNC_REQUESTED))
        # >=: timestamps have one-second resolution, and a request in the same second as the last sync must not be
        # lost (the cost is at most a repeat sync within that second)
        if requested and (last is None or requested >= last):
            return "requested"
        if last is None or (now - last).total_seconds() >= self.settings.catalog.intervalSeconds:
            return "interval"
        return None

    def _retry_s(self):
        return min(60.0, self.settings.catalog.intervalSeconds)

    def _attempted_within(self, cm, now, seconds):
        attempt = parse_time((cm["metadata"].get("annotations") or {}).get(names.SYNC_ATTEMPT))
        requested = parse_time((cm["metadata"].get("annotations") or {}).get(names.SYNC_REQUESTED))
        if requested and attempt and requested >= attempt:
            return False
        return attempt is not None and (now - attempt).total_seconds() < seconds

    def tick(self, now):
        """Sync if due; returns the current catalog (the last good one), or None before the first success."""
        try:
            cm = self.store.get("ConfigMap", self.namespace, names.CATALOG_CONFIGMAP)
        except errors.NotFound:
            cm = None
        if cm is not None:
            self._parse_configmap(cm)
        reason = self.due(cm, now)
        if reason:
            self.sync(cm, now, reason)
        return self.catalog

    def sync(self, cm, now, reason="requested"):
        stamp = rfc3339(now)
        try:
            doc = self._load()
        except (SourceError, catalog_mod.CatalogError, azure_catalog.CatalogSourceError) as exc:
            self.last_error = str(exc)
            logs.event(log, "catalog sync failed; keeping the last good catalog", level=logging.WARNING,
                       source=self._source_name(), error=self.last_error, reason=reason)
            self._write(cm, None, {names.SYNC_ERROR: self.last_error[:1000], names.SYNC_ATTEMPT: stamp})
            return False
        text = json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False)
        annotations = {names.LAST_SYNC: stamp, names.CATALOG_VERSION: str(doc["version"]),
                       names.SYNC_ATTEMPT: stamp, names.SYNC_ERROR: None}
        written = self._write(cm, {names.CATALOG_KEY: text}, annotations)
        self.catalog = catalog_mod.Catalog(doc)
        self.token += 1
        self._seen_rv = written["metadata"].get("resourceVersion")
        self.last_error = None
        self.syncs += 1
        logs.event(log, "catalog synced", version=doc["version"], models=len(doc["models"]), reason=reason)
        return True

    def _source_name(self):
        cfg = self.settings.catalog
        return cfg.azureCatalogUrl if cfg.sourceType == "azure" else cfg.source

    def _load(self):
        """The catalog document from the configured source: the file/URL, or the live Foundry catalog (merged with the
        samples of the file in embedded mode)."""
        cfg = self.settings.catalog
        if cfg.sourceType != "azure":
            return catalog_mod.parse(read_source(cfg.source, cfg.timeoutSeconds))
        samples = None
        if self.settings.embedded:
            try:
                samples = catalog_mod.parse(read_source(cfg.source, cfg.timeoutSeconds))
            except (SourceError, catalog_mod.CatalogError) as exc:
                logs.event(log, "catalog samples unavailable", level=logging.WARNING, error=str(exc))
        return azure_catalog.load(cfg, samples, self.settings.registryAllowlist)

    def _write(self, cm, data, annotations):
        if cm is None:
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": names.CATALOG_CONFIGMAP, "namespace": self.namespace,
                                 "labels": {names.MANAGED_BY: names.MANAGED_BY_VALUE,
                                            names.COMPONENT_LABEL: "catalog"},
                                 "annotations": {k: v for k, v in annotations.items() if v is not None}},
                    "data": data or {}}
            try:
                return self.store.create(body)
            except errors.AlreadyExists:
                pass    # the control plane created it meanwhile: patch it below
        patch = {"metadata": {"annotations": annotations}}
        if data is not None:
            patch["data"] = data
        return self.store.patch("ConfigMap", self.namespace, names.CATALOG_CONFIGMAP, patch)
