"""Structural-schema admission for custom resources, as kube-apiserver does it.

The embedded store must accept and reject exactly what a real apiserver would for the chart's CRDs, so the same
object behaves the same in both modes. This module repeats the apiserver's three steps on a decoded object:

1. prune fields the structural schema does not know (``x-kubernetes-preserve-unknown-fields`` keeps them), then drop
   nulls of non-nullable fields that have no default;
2. apply ``default`` values to absent (or non-nullable null) fields, only inside objects that exist;
3. validate with OpenAPI v3 semantics (go-openapi as vendored by Kubernetes), reporting causes shaped like the
   apiserver's ``Status.details.causes``: ``{"field", "reason", "message"}``.

A third-party JSON-schema validator would differ on ``nullable``, ``x-kubernetes-int-or-string``, pruning and error
paths, hence this small engine. Accept/reject decisions and the pruned, defaulted object were checked against a real
kube-apiserver 1.20. Causes follow current apiservers where 1.20 is less precise: list items are ``spec.env[0].name``
(1.20 drops the index), type errors are ``FieldValueTypeInvalid`` (1.20: ``FieldValueInvalid``), and a failed
``oneOf``/``anyOf``/``not`` names its field (1.20 leaves the field empty and puts the path in the message).
Null values skip ``allOf``/``anyOf``/``oneOf``/``not`` as in go-openapi, so ``nullable`` + ``allOf: [{enum}]`` means
"null or one of".
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CrdSchema", "load_crds"]

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TYPE_INVALID = "FieldValueTypeInvalid"

_ROOT_KEPT = ("apiVersion", "kind", "metadata")  # never pruned or defaulted at the resource root
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$")


def load_crds(directory: str | Path) -> dict[tuple[str, str], dict]:
    """Read every CustomResourceDefinition in ``directory/*.yaml``, keyed by (group, kind)."""
    crds = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = doc
    return crds


class CrdSchema:
    """One served version of a CRD: its names and the admission (prune, default, validate) of objects."""

    def __init__(self, crd: dict, version: str = "v1"):
        spec = crd["spec"]
        names = spec["names"]
        self.crd = crd
        self.group: str = spec["group"]
        self.kind: str = names["kind"]
        self.plural: str = names["plural"]
        self.singular: str = names.get("singular") or self.kind.lower()
        self.list_kind: str = names.get("listKind") or self.kind + "List"
        self.short_names: list[str] = list(names.get("shortNames") or [])
        self.namespaced: bool = spec.get("scope", "Namespaced") == "Namespaced"
        self.version = version
        found = [v for v in spec["versions"] if v["name"] == version]
        if not found:
            raise ValueError(f"CRD {self.plural}.{self.group} has no version {version!r}")
        self._version = found[0]
        self.schema: dict = self._version["schema"]["openAPIV3Schema"]
        self.has_status_subresource: bool = "status" in (self._version.get("subresources") or {})
        self.printer_columns: list[dict] = list(self._version.get("additionalPrinterColumns") or [])

    def admit(self, obj: dict) -> list[dict]:
        """Prune and default ``obj`` in place; return the validation causes (empty when valid)."""
        prune(obj, self.schema, root=True)
        prune_nulls(obj, self.schema, root=True)
        apply_defaults(obj, self.schema, root=True)
        causes: list[dict] = []
        validate(obj, self.schema, "", causes)
        return causes


# ---- pruning -------------------------------------------------------------------------------------------------------

def _child_schema(schema: dict | None, key: str) -> dict | None:
    if schema is None:
        return None
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _keeps_unknown(schema: dict) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or schema.get("additionalProperties") is True


def prune(value: Any, schema: dict | None, root: bool = False) -> None:
    """Drop the fields the structural schema does not describe."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key in list(value):
            if root and key in _ROOT_KEPT:
                continue
            sub = _child_schema(schema, key)
            if sub is not None:
                prune(value[key], sub)
            elif not _keeps_unknown(schema):
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            prune(item, schema["items"])


def prune_nulls(value: Any, schema: dict | None, root: bool = False) -> None:
    """Drop nulls where the schema neither allows null nor has a default (those get the default later)."""
    if isinstance(value, dict):
        for key in list(value):
            if root and key in _ROOT_KEPT:
                continue
            sub = _child_schema(schema, key)
            if value[key] is None and sub is not None and not sub.get("nullable") and "default" not in sub:
                del value[key]
            else:
                prune_nulls(value[key], sub)
    elif isinstance(value, list):
        for item in value:
            prune_nulls(item, (schema or {}).get("items"))


# ---- defaulting ----------------------------------------------------------------------------------------------------

def _default_of(schema: dict) -> Any:
    return json.loads(json.dumps(schema["default"]))  # a deep copy, never shared with the schema


def _needs_default(value: Any, present: bool, schema: dict | None) -> bool:
    if schema is None or "default" not in schema:
        return False
    return not present or (value is None and not schema.get("nullable"))


def apply_defaults(value: Any, schema: dict | None, root: bool = False) -> None:
    """Fill defaults of absent fields, only inside objects that exist (the apiserver's rule)."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if not (root and key in _ROOT_KEPT) and _needs_default(value.get(key), key in value, sub):
                value[key] = _default_of(sub)
        for key in list(value):
            if root and key in _ROOT_KEPT:
                continue
            sub = _child_schema(schema, key)
            if _needs_default(value[key], True, sub):
                value[key] = _default_of(sub)
            apply_defaults(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            if _needs_default(item, True, schema["items"]):
                value[index] = _default_of(schema["items"])
            apply_defaults(value[index], schema["items"])


# ---- validation ----------------------------------------------------------------------------------------------------

def _cause(causes: list, field: str, reason: str, message: str) -> None:
    causes.append({"field": field, "reason": reason, "message": message})


def _composite(causes: list, path: str, detail: str) -> None:
    # kube-apiserver 1.20 reports these with an empty field ("<nil>") and the path only in the message; the path
    # is kept here so that callers can point at the offending field.
    _cause(causes, path, INVALID, f'Invalid value: "": "{path}" {detail}')


def _render(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps("object" if isinstance(value, dict) else "array")
    return json.dumps(value)


def _invalid(causes: list, path: str, value: Any, detail: str, reason: str = INVALID) -> None:
    _cause(causes, path, reason, f"Invalid value: {_render(value)}: {path or '<root>'} in body {detail}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _allowed_types(schema: dict) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    return [schema["type"]] if schema.get("type") else []


def _type_ok(value: Any, allowed: list[str]) -> bool:
    actual = _json_type(value)
    if actual in allowed:
        return True
    if actual == "integer" and "number" in allowed:
        return True
    return actual == "number" and "integer" in allowed and math.isfinite(value) and float(value).is_integer()


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def validate(value: Any, schema: dict, path: str, causes: list) -> None:
    """Append to ``causes`` every way ``value`` violates ``schema`` (go-openapi order and semantics)."""
    allowed = _allowed_types(schema)
    if value is None:
        if allowed and not schema.get("nullable"):
            _invalid(causes, path, "null", f"must be of type {','.join(allowed)}: \"null\"", TYPE_INVALID)
        _check_enum(value, schema, path, causes)
        return
    if allowed and not _type_ok(value, allowed):
        kind = _json_type(value)  # the apiserver shows the JSON type, not the value, for type errors
        _invalid(causes, path, kind, f"must be of type {','.join(allowed)}: \"{kind}\"", TYPE_INVALID)
        return
    _check_combinators(value, schema, path, causes)
    if isinstance(value, str):
        _check_string(value, schema, path, causes)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, schema, path, causes)
    elif isinstance(value, list):
        _check_array(value, schema, path, causes)
    elif isinstance(value, dict):
        _check_object(value, schema, path, causes)
    _check_enum(value, schema, path, causes)


def _check_enum(value: Any, schema: dict, path: str, causes: list) -> None:
    enum = schema.get("enum")
    if enum and not any(_same(value, allowed) for allowed in enum):
        supported = ", ".join(json.dumps(v) for v in enum)
        _cause(causes, path, NOT_SUPPORTED, f"Unsupported value: {_render(value)}: supported values: {supported}")


def _errors_of(value: Any, schema: dict, path: str) -> list[dict]:
    found: list[dict] = []
    validate(value, schema, path, found)
    return found


def _check_combinators(value: Any, schema: dict, path: str, causes: list) -> None:
    for sub in schema.get("allOf") or []:
        validate(value, sub, path, causes)
    if schema.get("anyOf") and not schema.get("x-kubernetes-int-or-string"):
        results = [_errors_of(value, sub, path) for sub in schema["anyOf"]]
        if all(results):
            _composite(causes, path, "must validate at least one schema (anyOf)")
            causes.extend(results[0])
    if schema.get("oneOf"):
        results = [_errors_of(value, sub, path) for sub in schema["oneOf"]]
        valid = sum(1 for r in results if not r)
        if valid != 1:
            found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            _composite(causes, path, f"must validate one and only one schema (oneOf). {found}")
            if valid == 0:
                causes.extend(results[0])
    if isinstance(schema.get("not"), dict) and not _errors_of(value, schema["not"], path):
        _composite(causes, path, "must not validate the schema (not)")


def _check_string(value: str, schema: dict, path: str, causes: list) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        _invalid(causes, path, value, f"should be at most {schema['maxLength']} chars long")
    if "minLength" in schema and len(value) < schema["minLength"]:
        _invalid(causes, path, value, f"should be at least {schema['minLength']} chars long")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        _invalid(causes, path, value, f"should match '{schema['pattern']}'")
    if schema.get("format") == "date-time" and not _DATE_TIME.match(value):
        _invalid(causes, path, value, f'must be of type date-time: "{value}"', TYPE_INVALID)


def _check_number(value: float, schema: dict, path: str, causes: list) -> None:
    if "maximum" in schema:
        limit = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= limit:
            _invalid(causes, path, value, f"should be less than {limit}")
        elif value > limit:
            _invalid(causes, path, value, f"should be less than or equal to {limit}")
    if "minimum" in schema:
        limit = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= limit:
            _invalid(causes, path, value, f"should be greater than {limit}")
        elif value < limit:
            _invalid(causes, path, value, f"should be greater than or equal to {limit}")
    step = schema.get("multipleOf")
    if step and not float(value / step).is_integer():
        _invalid(causes, path, value, f"should be a multiple of {step}")


def _check_array(value: list, schema: dict, path: str, causes: list) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        _invalid(causes, path, value, f"should have at most {schema['maxItems']} items")
    if "minItems" in schema and len(value) < schema["minItems"]:
        _invalid(causes, path, value, f"should have at least {schema['minItems']} items")
    if isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{index}]", causes)


def _check_object(value: dict, schema: dict, path: str, causes: list) -> None:
    prefix = f"{path}." if path else ""
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        _invalid(causes, path, value, f"should have at most {schema['maxProperties']} properties")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        _invalid(causes, path, value, f"should have at least {schema['minProperties']} properties")
    for name in schema.get("required") or []:
        if name not in value:
            _cause(causes, prefix + name, REQUIRED, "Required value")
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            validate(item, props[key], prefix + key, causes)
        elif isinstance(extra, dict):
            validate(item, extra, prefix + key, causes)
        elif extra is False:
            _invalid(causes, prefix + key, item, "is a forbidden property")
