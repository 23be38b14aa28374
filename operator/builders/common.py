"""Metadata every child shares: the standard labels (docs/operator.md), the controller ownerReference, and the
desired-state hash that lets the applier notice a field the operator stopped setting (a subset comparison alone
cannot)."""
import copy
import hashlib
import json

from .. import names


def metadata(owner, name, component, annotations=None):
    meta = {"name": name, "namespace": owner.namespace,
            "labels": {**names.child_labels(owner.name), names.COMPONENT_LABEL: component},
            "ownerReferences": [owner.reference()]}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def digest(value, length=16):
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:length]


def with_hash(obj):
    """Stamp `obj` with the hash of everything it says (the hash annotation itself excluded)."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    annotations = meta.setdefault("annotations", {})
    annotations.pop(names.DESIRED_HASH, None)
    annotations[names.DESIRED_HASH] = digest(obj)
    return obj
