"""The API keys Secret `<name>-api-keys` (contract with the control plane): Opaque, data `primary-key` and
`secondary-key` (`fndry-pk-<uuid4>`, `fndry-sk-<uuid4>`), created-at annotations in RFC 3339 UTC, the standard child
labels (docs/operator.md),
controller ownerReference. The operator creates it once; afterwards only the control plane's rotate endpoint changes
a value (and its created-at annotation). The operator never rewrites data it finds."""
import base64
import uuid

from .. import names
from .common import metadata

PRIMARY, SECONDARY = "primary-key", "secondary-key"
PREFIX = {PRIMARY: "fndry-pk-", SECONDARY: "fndry-sk-"}
CREATED = {PRIMARY: names.PRIMARY_CREATED, SECONDARY: names.SECONDARY_CREATED}


def rfc3339(now):
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_key(which, uuid4=uuid.uuid4):
    return f"{PREFIX[which]}{uuid4()}"


def secret(owner, now, uuid4=uuid.uuid4):
    stamp = rfc3339(now)
    meta = metadata(owner, names.keys_secret(owner.name), "api-keys",
                    annotations={names.PRIMARY_CREATED: stamp, names.SECONDARY_CREATED: stamp,
                                 names.KEYS_GENERATED: stamp})
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "data": {which: base64.b64encode(new_key(which, uuid4).encode()).decode()
                     for which in (PRIMARY, SECONDARY)}}


def repair_patch(owner, existing, now, uuid4=uuid.uuid4):
    """A merge patch restoring what the operator owns on an existing keys Secret, or None when nothing is missing:
    labels, the controller ownerReference, and a key that is absent or empty (with its created-at annotation).
    Present key values and their annotations are never touched: a rotation must survive every reconcile."""
    meta = existing.get("metadata") or {}
    patch = {}
    labels = meta.get("labels") or {}
    wanted = names.child_labels(owner.name)
    if any(labels.get(k) != v for k, v in wanted.items()):
        patch.setdefault("metadata", {})["labels"] = wanted
    refs = meta.get("ownerReferences") or []
    if not any(r.get("uid") == owner.uid and r.get("controller") for r in refs):
        if not any(r.get("controller") for r in refs):
            patch.setdefault("metadata", {})["ownerReferences"] = [*refs, owner.reference()]
    data = existing.get("data") or {}
    annotations = meta.get("annotations") or {}
    for which in (PRIMARY, SECONDARY):
        if not data.get(which):
            patch.setdefault("data", {})[which] = base64.b64encode(new_key(which, uuid4).encode()).decode()
            patch.setdefault("metadata", {}).setdefault("annotations", {})[CREATED[which]] = rfc3339(now)
        elif not annotations.get(CREATED[which]):
            patch.setdefault("metadata", {}).setdefault("annotations", {})[CREATED[which]] = (
                meta.get("creationTimestamp") or rfc3339(now))
    return patch or None


def status(secret_obj):
    """status.authentication of the owner from the keys Secret's annotations."""
    annotations = (secret_obj.get("metadata") or {}).get("annotations") or {}
    generated = annotations.get(names.KEYS_GENERATED)
    result = {"keysSecretName": secret_obj["metadata"]["name"]}
    for which, field in ((PRIMARY, "primary"), (SECONDARY, "secondary")):
        created = annotations.get(CREATED[which])
        result[f"{field}KeyCreatedAt"] = created
        result[f"{field}KeyRotatedAt"] = created if created and generated and created != generated else None
    return result
