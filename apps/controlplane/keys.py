"""API keys of a deployment: read both, rotate one (stored in the `<name>-api-keys` Secret the operator owns)."""
import base64
import secrets

from foundry_inference.apps.base import ApiError, validation_error
from foundry_inference.auth import actions
from foundry_inference.store import errors as store_errors
from foundry_inference.timefmt import now_rfc3339, rfc3339_after

from .handler import ControlPlaneHandler

KEY_TYPES = ("primary", "secondary")
CREATED_AT = "foundry.azure.com/{}-key-created-at"
ROTATE_RETRIES = 3


def secret_name(deployment):
    return f"{deployment}-api-keys"


def _decode(value):
    try:
        return base64.b64decode(value or "").decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _controlled_by(obj, owner):
    """Only a Secret whose controller ownerReference is this very deployment (by uid) holds its keys."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == owner["metadata"].get("uid") for ref in refs)


class KeysHandler(ControlPlaneHandler):
    async def deployment_secret(self, ns, name):
        self.check_namespace(ns)
        self.check_name(name)
        deployment = await self.store.get("ModelDeployment", ns, name)
        if not ((deployment.get("spec") or {}).get("authentication") or {}).get("enabled", True):
            raise ApiError(400, "AuthenticationDisabled",
                           f"Deployment {name!r} has authentication disabled: it has no API keys")
        try:
            secret = await self.store.get("Secret", ns, secret_name(name))
        except store_errors.NotFound:
            raise self.not_found(f"API keys for deployment {name!r} do not exist yet: the operator creates them "
                                 "when the deployment first becomes ready") from None
        if not _controlled_by(secret, deployment):
            raise ApiError(409, "NameConflict", f"Secret {secret_name(name)!r} is not controlled by deployment "
                                                f"{name!r}: it is not its keys and is neither read nor rotated")
        return secret

    def key_entry(self, secret, key_type):
        value = _decode((secret.get("data") or {}).get(f"{key_type}-key"))
        annotations = secret["metadata"].get("annotations") or {}
        return {"value": value, "createdAt": annotations.get(CREATED_AT.format(key_type))
                or secret["metadata"].get("creationTimestamp")}


class GetKeysHandler(KeysHandler):
    auth_action = actions.KEYS_LIST

    async def get(self, ns, name):
        secret = await self.deployment_secret(ns, name)
        self.write_json({"deploymentName": name, "namespace": ns,
                         "primaryKey": self.key_entry(secret, "primary"),
                         "secondaryKey": self.key_entry(secret, "secondary")})


class RotateKeyHandler(KeysHandler):
    auth_action = actions.KEYS_REGENERATE

    async def post(self, ns, name, key_type):
        if key_type not in KEY_TYPES:
            raise validation_error([{"field": "key_type", "message": "must be primary or secondary"}])
        for attempt in range(ROTATE_RETRIES):
            secret = await self.deployment_secret(ns, name)
            value, created = secrets.token_hex(32), now_rfc3339()
            secret.setdefault("data", {})[f"{key_type}-key"] = base64.b64encode(value.encode()).decode()
            secret["metadata"].setdefault("annotations", {})[CREATED_AT.format(key_type)] = created
            try:
                await self.store.replace(secret)
            except store_errors.Conflict:
                if attempt == ROTATE_RETRIES - 1:
                    raise
                continue
            # when every replica accepts it: the key reaches the pods' key files within the platform's propagation
            # bound (a client that calls earlier may get 401 invalid_api_key and should retry after this time)
            effective = rfc3339_after(self.config.key_propagation_s)
            self.write_json({"deploymentName": name, "namespace": ns, "keyType": key_type,
                             "key": {"value": value, "createdAt": created, "effectiveAt": effective}})
            return


routes = [
    (r"/api/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)/keys", GetKeysHandler),
    (r"/api/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)/keys/(?P<key_type>[^/]+)/rotate",
     RotateKeyHandler),
]
