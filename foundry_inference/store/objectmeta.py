"""ObjectMeta and built-in kind rules that kube-apiserver enforces and the embedded store must enforce the same way."""
import base64
import binascii
import re

from .errors import Invalid

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_ANNOTATIONS_BYTES = 256 * 1024


def _cause(field, message, reason="FieldValueInvalid"):
    return {"field": field, "reason": reason, "message": message}


def _check_qualified_key(field, key):
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        problems.append(_cause(field, f"Invalid value: {key!r}: prefix part must be a DNS subdomain"))
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        problems.append(_cause(field, f"Invalid value: {key!r}: name part must consist of alphanumeric characters, "
                                      "'-', '_' or '.', start and end with an alphanumeric character, at most 63"))
    return problems


def name_causes(kind, name, field="metadata.name"):
    if not name:
        return [_cause(field, "name or generateName is required", "FieldValueRequired")]
    if not isinstance(name, str):
        return [_cause(field, "must be a string", "FieldValueTypeInvalid")]
    if kind in ("Service", "Namespace"):
        ok, rule = len(name) <= 63 and (DNS_1035_LABEL if kind == "Service" else DNS_LABEL).match(name), "DNS label"
    else:
        ok, rule = len(name) <= 253 and DNS_SUBDOMAIN.match(name), "DNS subdomain"
    return [] if ok else [_cause(field, f"Invalid value: {name!r}: a lowercase RFC 1123 {rule} must consist of lower "
                                        "case alphanumeric characters or '-', and must start and end with an "
                                        "alphanumeric character")]


def meta_causes(kind, namespaced, meta):
    """Validation causes for metadata (name, namespace, labels, annotations, ownerReferences)."""
    if not isinstance(meta, dict):
        return [_cause("metadata", "must be an object", "FieldValueTypeInvalid")]
    causes = name_causes(kind, meta.get("name"))
    ns = meta.get("namespace")
    if namespaced:
        if not ns:
            causes.append(_cause("metadata.namespace", "namespace is required", "FieldValueRequired"))
        elif not isinstance(ns, str) or len(ns) > 63 or not DNS_LABEL.match(ns):
            causes.append(_cause("metadata.namespace", f"Invalid value: {ns!r}: must be a DNS label"))
    for section in ("labels", "annotations"):
        values = meta.get(section)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            causes.append(_cause(f"metadata.{section}", "must be a map of string to string", "FieldValueTypeInvalid"))
            continue
        for key, value in values.items():
            causes.extend(_check_qualified_key(f"metadata.{section}", key))
            if section == "labels" and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                causes.append(_cause("metadata.labels", f"Invalid value: {value!r}: a valid label value must be "
                                                         "63 characters or less, alphanumeric, '-', '_' or '.'"))
    if meta.get("annotations") and sum(len(k) + len(v) for k, v in meta["annotations"].items()) > MAX_ANNOTATIONS_BYTES:
        causes.append(_cause("metadata.annotations", "Too long: must have at most 262144 bytes", "FieldValueTooLong"))
    refs = meta.get("ownerReferences") or []
    if not isinstance(refs, list):
        causes.append(_cause("metadata.ownerReferences", "must be a list", "FieldValueTypeInvalid"))
        refs = []
    for i, ref in enumerate(refs):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not isinstance(ref, dict) or not ref.get(key):
                causes.append(_cause(f"metadata.ownerReferences[{i}].{key}", "Required value", "FieldValueRequired"))
    if sum(1 for r in refs if isinstance(r, dict) and r.get("controller")) > 1:
        causes.append(_cause("metadata.ownerReferences", "Only one reference can have Controller set to true"))
    return causes


def normalize_secret(obj):
    """stringData folds into base64 data and data must be base64, as the apiserver does."""
    causes = []
    data = dict(obj.get("data") or {})
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    for key, value in data.items():
        if not _SECRET_KEY.match(key):
            causes.append(_cause(f"data[{key}]", "a valid config key must consist of alphanumeric characters, "
                                                 "'-', '_' or '.'"))
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            causes.append(_cause(f"data[{key}]", "illegal base64 data"))
    if data:
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    return causes


def raise_if(causes, kind, name):
    if causes:
        raise Invalid(f"{kind} {name!r} is invalid: " + "; ".join(f"{c['field']}: {c['message']}" for c in causes),
                      causes)
