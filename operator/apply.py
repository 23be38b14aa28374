"""Write a desired child only when the existing one differs, and delete children that are no longer desired.

An update is a JSON merge patch computed as the difference between the existing object and the object the operator
wants (`merged`: the existing identity and what others own - their labels and annotations, non-controller
ownerReferences, a Service's allocated clusterIP - with the operator's fields). It has the effect of a full replace
of the fields the operator owns (a field it stopped setting is nulled, and the apiserver re-defaults what it
defaults) without a resourceVersion precondition, so the deployment controller's constant status writes never turn
an update into a Conflict.
"""
import copy
import logging

from foundry_inference.store import errors

from . import compare, names

log = logging.getLogger("foundry_inference.operator.apply")

_SERVICE_KEEP = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort")
_BODY = ("spec", "data", "type")


class ForeignChild(Exception):
    """A child's name is taken by an object the owner does not control (another controller's, or nobody's): the
    operator never takes it over - adopting it would let the garbage collector delete it with the owner."""


def foreign_message(obj):
    """Names an object that holds a child's name without being controlled by the owner, and who controls it."""
    owner = controller_of(obj)
    held = (f"is controlled by {owner.get('kind')} {owner.get('name')}" if owner
            else "is not controlled by this deployment")
    return f"{obj.get('kind')} {obj['metadata']['name']} already exists and {held}; it is left untouched"


def controller_of(obj):
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def _view(obj):
    meta = obj.get("metadata") or {}
    view = {"metadata": {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}}
    for key in _BODY:
        if key in obj:
            view[key] = obj[key]
    return view


def in_sync(actual, desired):
    """True when `actual` holds everything `desired` says, same desired-hash included."""
    want = (desired["metadata"].get("annotations") or {}).get(names.DESIRED_HASH)
    have = ((actual.get("metadata") or {}).get("annotations") or {}).get(names.DESIRED_HASH)
    if want and want != have:
        return False
    ref = controller_of(desired)
    if ref and (controller_of(actual) or {}).get("uid") != ref["uid"]:
        return False
    return compare.contains(_view(actual), _view(desired))


def merged(actual, desired):
    """The object to PUT: `actual`'s identity and foreign metadata, `desired`'s fields."""
    new = copy.deepcopy(actual)
    meta, want = new["metadata"], desired["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **(want.get("labels") or {})}
    meta["annotations"] = {**(meta.get("annotations") or {}), **(want.get("annotations") or {})}
    refs = [r for r in meta.get("ownerReferences") or [] if not r.get("controller")]
    meta["ownerReferences"] = refs + [r for r in want.get("ownerReferences") or [] if r.get("controller")]
    for key in _BODY:
        if key in desired:
            new[key] = copy.deepcopy(desired[key])
        elif key != "type":
            new.pop(key, None)
    if desired["kind"] == "Service":
        for key in _SERVICE_KEEP:
            if key in (actual.get("spec") or {}):
                new["spec"][key] = actual["spec"][key]
    if desired["kind"] == "ConfigMap":
        new.pop("binaryData", None)
    return new


def ensure(store, desired, actual):
    """Create or update one child; returns (object, action) with action created | updated | unchanged."""
    kind, meta = desired["kind"], desired["metadata"]
    if actual is None:
        try:
            return store.create(desired), "created"
        except errors.AlreadyExists:
            # our list was older than the object (or an earlier create's answer was lost): look once, then decide
            actual = store.get(kind, meta["namespace"], meta["name"])
    mine = controller_of(desired)
    if mine and (controller_of(actual) or {}).get("uid") != mine["uid"]:
        raise ForeignChild(foreign_message(actual))
    if in_sync(actual, desired):
        return actual, "unchanged"
    if kind == "Secret" and actual.get("type") and actual.get("type") != desired.get("type"):
        store.delete(kind, meta["namespace"], meta["name"])   # a Secret's type is immutable
        return store.create(desired), "created"
    patch = merge_diff(_owned(actual), _owned(merged(actual, desired)))
    return store.patch(kind, meta["namespace"], meta["name"], patch), "updated"


def _owned(obj):
    meta = obj.get("metadata") or {}
    view = {"metadata": {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}}
    for key in ("spec", "data", "binaryData"):
        if key in obj:
            view[key] = obj[key]
    return view


def merge_diff(source, target):
    """The RFC 7386 merge patch that turns `source` into `target` (lists are replaced whole)."""
    if not isinstance(source, dict) or not isinstance(target, dict):
        return copy.deepcopy(target)
    patch = {key: None for key in source if key not in target}
    for key, value in target.items():
        if key not in source:
            patch[key] = copy.deepcopy(value)
        elif source[key] != value:
            patch[key] = merge_diff(source[key], value) if isinstance(value, dict) and isinstance(
                source[key], dict) else copy.deepcopy(value)
    return patch


def prune(store, owner, children, desired_keys):
    """Delete this owner's children (controller ownerReference = the owner) that are not desired any more."""
    deleted = []
    for (kind, name), obj in children.items():
        if (kind, name) in desired_keys or (controller_of(obj) or {}).get("uid") != owner.uid:
            continue
        try:
            store.delete(kind, owner.namespace, name)
        except errors.NotFound:
            pass
        deleted.append((kind, name))
    return deleted
