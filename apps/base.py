"""Shared Tornado plumbing: JSON bodies, one error path, no tracebacks on the wire.

Every server subclasses `BaseHandler` and sets `envelope` to one of the three contract shapes, so every error a handler
raises (an `ApiError`, an auth failure, a Tornado HTTPError, or a bug) leaves in the right JSON envelope.
"""
import json
import logging

import tornado.web

from foundry_inference.auth.errors import AuthError

log = logging.getLogger("foundry_inference.http")


class ApiError(Exception):
    """A failure with an HTTP status, a machine-readable kind/code and optional field-level details."""

    def __init__(self, status, kind, message, *, code=None, errors=None, headers=None, extra=None):
        super().__init__(message)
        self.status = status
        self.kind = kind          # control-plane `error` (e.g. ValidationError) / OpenAI `type`
        self.code = code or kind  # OpenAI `code`, predictive `code`
        self.message = message
        self.errors = errors or []  # [{"field": ..., "message": ...}]
        self.headers = headers or {}
        self.extra = extra or {}    # extra top-level fields (e.g. the predictive queue-full payload)


def validation_error(errors, message="Request validation failed"):
    return ApiError(400, "ValidationError", message, code="invalid_request", errors=errors)


# --- the three envelopes of the contract -------------------------------------------------------------------------

def control_plane_envelope(err):
    body = {"error": err.kind, "message": err.message, "details": {}}
    if err.errors:
        body["details"]["errors"] = err.errors
    if err.code and err.code != err.kind:
        body["details"]["code"] = err.code
    return body


def predictive_envelope(err):
    if err.extra:
        return dict(err.extra)
    body = {"detail": err.message}
    if err.code and err.code != err.kind:
        body["code"] = err.code
    return body


def openai_envelope(err):
    param = err.errors[0]["field"] if err.errors else None
    return {"error": {"message": err.message, "type": err.kind, "code": err.code, "param": param}}


_TORNADO_KINDS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
                  409: "Conflict", 411: "LengthRequired", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
                  429: "TooManyRequests", 503: "ServiceUnavailable"}


def _as_api_error(status, exc):
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AuthError):
        return ApiError(exc.status, exc.kind, exc.message, code=exc.code, headers=exc.headers)
    if isinstance(exc, tornado.web.HTTPError) and exc.status_code < 500:
        kind = _TORNADO_KINDS.get(exc.status_code, "BadRequest")
        return ApiError(exc.status_code, kind, exc.log_message or exc.reason or kind, code=kind)
    return ApiError(500, "InternalError", "Internal server error", code="internal_error")


class BaseHandler(tornado.web.RequestHandler):
    envelope = staticmethod(control_plane_envelope)
    max_body_bytes = 1024 * 1024

    def set_default_headers(self):
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.clear_header("Server")

    def write_json(self, obj, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj, separators=(",", ":")))

    def json_body(self):
        """Parse the request body as a JSON object, or raise a 400 in this server's envelope."""
        if len(self.request.body) > self.max_body_bytes:
            raise ApiError(413, "PayloadTooLarge", f"Request body exceeds {self.max_body_bytes} bytes")
        if not self.request.body:
            raise validation_error([{"field": "body", "message": "A JSON body is required"}])
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise validation_error([{"field": "body", "message": f"Malformed JSON: {exc}"}]) from None
        if not isinstance(body, dict):
            raise validation_error([{"field": "body", "message": "The body must be a JSON object"}])
        return body

    def translate(self, exc):
        """Hook for a server to map its own domain errors to an ApiError (None: not one of ours)."""
        return None

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        translated = self.translate(exc) if exc is not None else None
        err = (translated or _as_api_error(status_code, exc)) if exc is not None else ApiError(
            status_code, _TORNADO_KINDS.get(status_code, "InternalError" if status_code >= 500 else "BadRequest"),
            self._reason)
        self.set_status(err.status)
        if err.status == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
            err.message = f"Method {self.request.method} is not allowed on {self.request.path}"
        for name, value in err.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.envelope(err)))

    @classmethod
    def allowed_methods(cls):
        """The HTTP methods this handler implements (for the Allow header of a 405)."""
        return [m for m in cls.SUPPORTED_METHODS
                if getattr(cls, m.lower(), None) is not getattr(tornado.web.RequestHandler, m.lower(), None)]

    def log_exception(self, typ, value, tb):
        translated = self.translate(value)
        if translated is not None and translated.status < 500:
            return
        if isinstance(value, (ApiError, AuthError)) or (
                isinstance(value, tornado.web.HTTPError) and value.status_code < 500):
            return
        log.error("unhandled error on %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))


class ProbeRoutes:
    """GET/HEAD /health(z) and /ready(z) of a model server, public (a kubelet probes without a key). The server's base
    handler provides `service` (with `.ready`), `not_ready()` (the 503 in its envelope) and `ready_fields()`."""

    class Health:
        public = True

        def get(self):
            self.write_json({"status": "ok"})

        head = get

    class Ready:
        public = True

        def get(self):
            if not self.service.ready:
                raise self.not_ready()
            self.write_json({"status": "ready", **self.ready_fields()})

        head = get


class NotFoundHandler(BaseHandler):
    """Default handler: unknown paths get a 404 in the server's envelope instead of Tornado's HTML page."""

    def prepare(self):
        raise ApiError(404, "NotFound", f"No route for {self.request.path}")
