"""Store and validation failures -> the control plane's error envelope, in one place."""
import marshmallow

from foundry_inference.apps.base import ApiError, validation_error
from foundry_inference.store import errors as store_errors

RETRY_AFTER_S = 5


def from_store(exc):
    if isinstance(exc, store_errors.NotFound):
        return ApiError(404, "NotFound", exc.message)
    if isinstance(exc, store_errors.Conflict):
        return ApiError(409, "Conflict", exc.message)
    if isinstance(exc, store_errors.Invalid):
        causes = [{"field": c.get("field") or "body", "message": c.get("message") or exc.message}
                  for c in exc.causes] or [{"field": "body", "message": exc.message}]
        return validation_error(causes)
    if isinstance(exc, store_errors.Gone):
        return ApiError(410, "Gone", exc.message + " (restart the list without `continue`)",
                        errors=[{"field": "continue", "message": "expired"}])
    if isinstance(exc, store_errors.Unavailable):
        return ApiError(503, "ServiceUnavailable", "The Kubernetes API is unavailable; retry later",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    return ApiError(500, "InternalError", "The Kubernetes API refused the control plane's request: " + exc.message)


def translate(exc):
    if isinstance(exc, store_errors.StoreError):
        return from_store(exc)
    if isinstance(exc, marshmallow.ValidationError):
        messages = exc.messages if isinstance(exc.messages, list) else [{"field": "body", "message": str(exc)}]
        return validation_error(messages)
    return None
