"""The stores' own error hierarchy: callers never see a kubernetes client exception or a sqlite3 error."""


class StoreError(Exception):
    """Base class. `reason` mirrors the Kubernetes Status reason so both stores speak the same language."""

    reason = "InternalError"

    def __init__(self, message, causes=None):
        super().__init__(message)
        self.message = message
        self.causes = list(causes or [])  # [{"field": "spec.replicas", "reason": ..., "message": ...}]


class NotFound(StoreError):
    reason = "NotFound"


class Conflict(StoreError):
    """Stale resourceVersion (optimistic concurrency lost)."""

    reason = "Conflict"


class AlreadyExists(Conflict):
    reason = "AlreadyExists"


class Invalid(StoreError):
    """The object (or a request parameter such as a label selector or continue token) was rejected; see `causes`."""

    reason = "Invalid"


class Gone(StoreError):
    """A continue token that has expired: restart the list without it."""

    reason = "Expired"


class Unavailable(StoreError):
    """The backing store cannot be reached right now; retry later."""

    reason = "ServiceUnavailable"


class UnknownKind(Invalid):
    reason = "UnknownKind"


class Forbidden(StoreError):
    """The store's credentials are not allowed to do this (RBAC); a configuration problem, not a retry."""

    reason = "Forbidden"
