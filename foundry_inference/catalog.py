"""The model catalog: the format the operator syncs into the `foundry-local-catalog` ConfigMap (key `catalog.json`)
and the control plane reads. Documented in docs/catalog.md.

A catalog is {"version": str, "models": [entry]}. An entry is one alias of one source with its variants:
    {"alias", "displayName", "publisher", "description", "license", "task", "source", "framework", "modelVersion",
     "contextLength"?, "variants": [{"id", "name", "version", "compute", "executionProvider", "fileSizeBytes",
     "artifact": {"uri"} | {"registry", "repository", "tag"} | {"builtin"}}]}
"""
import json
import re

SOURCES = ("foundry-local", "foundry", "huggingface", "custom")
COMPUTES = ("cpu", "gpu", "npu")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*:[0-9]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_CATALOG_BYTES = 8 * 1024 * 1024


class CatalogError(ValueError):
    """The catalog document is malformed; `problems` lists each one with its JSON path."""

    def __init__(self, problems):
        super().__init__("; ".join(problems[:10]))
        self.problems = problems


def _str(problems, where, value, required=True):
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        problems.append(f"{where}: must be a non-empty string")


def _check_variant(problems, where, variant):
    if not isinstance(variant, dict):
        problems.append(f"{where}: must be an object")
        return
    _str(problems, f"{where}.id", variant.get("id"))
    if isinstance(variant.get("id"), str) and not _ID.match(variant["id"]):
        problems.append(f"{where}.id: must look like <name>:<version>")
    if variant.get("compute") not in COMPUTES:
        problems.append(f"{where}.compute: must be one of {', '.join(COMPUTES)}")
    size = variant.get("fileSizeBytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        problems.append(f"{where}.fileSizeBytes: must be a non-negative integer")
    artifact = variant.get("artifact")
    if not isinstance(artifact, dict) or not ({"uri", "builtin"} & artifact.keys() or
                                              {"registry", "repository"} <= artifact.keys()):
        problems.append(f"{where}.artifact: needs uri, builtin, or registry + repository")
    else:
        if "sha256" in artifact and not (isinstance(artifact["sha256"], str) and _SHA256.match(artifact["sha256"])):
            problems.append(f"{where}.artifact.sha256: must be 64 lower-case hex digits")
        size = artifact.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            problems.append(f"{where}.artifact.size: must be a positive integer (bytes)")


def validate(doc):
    """Raise CatalogError unless `doc` is a well-formed catalog; returns it unchanged."""
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CatalogError(["$: must be an object with a `models` list"])
    _str(problems, "$.version", doc.get("version"))
    seen = set()
    for i, entry in enumerate(doc["models"]):
        where = f"$.models[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object")
            continue
        _str(problems, f"{where}.alias", entry.get("alias"))
        if entry.get("source") not in SOURCES:
            problems.append(f"{where}.source: must be one of {', '.join(SOURCES)}")
        for key in ("displayName", "publisher", "description", "license", "task", "framework", "modelVersion"):
            _str(problems, f"{where}.{key}", entry.get(key), required=False)
        key = (entry.get("source"), str(entry.get("alias")).lower())
        if key in seen:
            problems.append(f"{where}.alias: duplicate alias {entry.get('alias')!r} in source {entry.get('source')}")
        seen.add(key)
        variants = entry.get("variants")
        if not isinstance(variants, list) or not variants:
            problems.append(f"{where}.variants: must be a non-empty list")
            continue
        for j, variant in enumerate(variants):
            _check_variant(problems, f"{where}.variants[{j}]", variant)
    if problems:
        raise CatalogError(problems)
    return doc


def parse(text):
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8", errors="strict")
    if len(text) > MAX_CATALOG_BYTES:
        raise CatalogError([f"$: catalog larger than {MAX_CATALOG_BYTES} bytes"])
    try:
        return validate(json.loads(text))
    except ValueError as exc:
        if isinstance(exc, CatalogError):
            raise
        raise CatalogError([f"$: not JSON: {exc}"]) from None


def _version_key(variant):
    try:
        return int(str(variant.get("version") or variant["id"].rpartition(":")[2]))
    except ValueError:
        return -1


# catalog tasks served by the generative (chat + transcription) server; any other task is a predictive model
GENERATIVE_TASKS = frozenset({"chat-completion", "text-generation", "completion", "automatic-speech-recognition",
                              "text-to-speech", "audio-transcription", "embeddings"})


def task_workload_type(task, fallback=None):
    """"generative" or "predictive" for a catalog task; `fallback` when the task is unknown (None/empty)."""
    task = (task or "").lower()
    if not task:
        return fallback
    return "generative" if task in GENERATIVE_TASKS else "predictive"


class Catalog:
    """Lookups over a validated catalog document."""

    def __init__(self, doc):
        self.doc = doc
        self.version = doc.get("version")
        self.entries = doc["models"]

    def find(self, name, source=None):
        """The entry whose alias (case-insensitive) or one of whose variant ids equals `name`."""
        lowered = name.lower()
        for entry in self.entries:
            if source and entry["source"] != source:
                continue
            if entry["alias"].lower() == lowered or any(v["id"].lower() == lowered for v in entry["variants"]):
                return entry
        return None

    def resolve(self, name, version="latest", compute="cpu"):
        """(entry, variant) for a deployment's `catalog` reference, or (entry, None) when no variant fits."""
        entry = self.find(name)
        if entry is None:
            return None, None
        exact = [v for v in entry["variants"] if v["id"].lower() == name.lower()]
        candidates = exact or [v for v in entry["variants"] if v["compute"] == compute]
        if version not in (None, "", "latest"):
            candidates = [v for v in candidates if str(_version_key(v)) == str(version)]
        if not candidates:
            return entry, None
        return entry, max(candidates, key=_version_key)
