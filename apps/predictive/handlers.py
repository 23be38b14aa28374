"""The routes of the predictive server. Thin: authentication is the mixin's prepare(), the work is the service's."""
import asyncio
import logging
import time

from tornado import httputil

from foundry_inference.apps.base import ApiError, BaseHandler, NotFoundHandler, ProbeRoutes, predictive_envelope
from foundry_inference.apps.predictive.batcher import InferenceFailed, QueueFull
from foundry_inference.apps.predictive.decoding import BadInput, dumps
from foundry_inference.apps.predictive.openapi import docs_page, openapi_document
from foundry_inference.auth.tornado import AuthMixin

log = logging.getLogger("foundry_inference.predictive")

_date_cache = [0, ""]


def http_date():
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0], _date_cache[1] = now, httputil.format_timestamp(now)
    return _date_cache[1]


_KINDS = {400: "BadRequest", 413: "PayloadTooLarge", 415: "UnsupportedMediaType"}


def not_ready(service):
    if service.load_error:
        return ApiError(503, "ServiceUnavailable", f"Model failed to load: {service.load_error}")
    return ApiError(503, "ServiceUnavailable", "Model not loaded yet")


class PredictiveBase(BaseHandler):
    """Errors as `{"detail": ...}` (plus `code` for auth failures, docs/api.md decision 5)."""
    envelope = staticmethod(predictive_envelope)

    @property
    def service(self):
        return self.application.settings["predictive"]

    def clear(self):
        """Tornado's clear() formats a Date per response and sets headers one by one; this is the same result
        (BaseHandler's default headers, no Server header) with the Date string cached for the current second."""
        self._headers = httputil.HTTPHeaders({"Content-Type": "application/json", "Date": http_date(),
                                              "X-Content-Type-Options": "nosniff"})
        self._write_buffer = []
        self._status_code = 200
        self._reason = "OK"

    def compute_etag(self):
        return None     # answers are not cacheable resources; hashing every body costs for nothing

    def not_ready(self):
        return not_ready(self.service)

    def ready_fields(self):
        return {"model_id": self.service.model.model_id}

    def write_json(self, obj, status=200):
        self.set_status(status)
        self.finish(dumps(obj))


class HealthHandler(ProbeRoutes.Health, AuthMixin, PredictiveBase):
    pass


class ReadyHandler(ProbeRoutes.Ready, AuthMixin, PredictiveBase):
    pass


class ModelHandler(AuthMixin, PredictiveBase):
    def get(self):
        service = self.service
        if not service.ready:
            raise not_ready(service)
        self.write_json(service.describe())


class PredictHandler(AuthMixin, PredictiveBase):
    _pending = None
    _counted = False

    def initialize(self):
        # Runs when the request has been read, before the handler's first step: requests that arrived together are
        # all counted before any of them submits, so the idle fast path is taken only by a request that is alone.
        self.service.inflight += 1
        self._counted = True

    async def post(self):
        service = self.service
        if not service.ready:
            raise not_ready(service)
        body = self.request.body
        limit = service.settings.max_body_bytes
        if len(body) > limit:
            raise ApiError(413, "PayloadTooLarge", f"Request body exceeds {limit} bytes")
        began = time.perf_counter()
        try:
            array = await service.decode_async(body)
        except BadInput as exc:
            raise ApiError(exc.status, _KINDS.get(exc.status, "BadRequest"), exc.message) from None
        decoded = time.perf_counter() - began
        try:
            pending = self._pending = service.submit(array)
        except QueueFull as full:
            service.metrics.rejected.inc()
            raise ApiError(429, "TooManyRequests", str(full), headers={"Retry-After": str(full.retry_after)},
                           extra={"error": str(full), "queue_depth": full.depth,
                                  "retry_after": full.retry_after}) from None
        try:
            outputs, start, stop, inference_ms = await pending.future
        except asyncio.CancelledError:
            return                      # the client went away: nobody to answer
        except InferenceFailed as exc:
            raise ApiError(500, "InternalError", str(exc)) from None
        rendering = time.perf_counter()
        answer = service.render(outputs, start, stop, inference_ms)
        service.metrics.observe_stages(decoded, inference_ms / 1000.0, time.perf_counter() - rendering)
        self._uncount()                 # before answering, as the httptools front end does: once the client has
        self.finish(answer)             # its answer, the request is no longer counted in flight

    def on_connection_close(self):
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.cancel()     # the batcher drops it before the next run
        self._uncount()                 # (on_finish may never run: finishing on a closed stream fails)

    def _uncount(self):
        if self._counted:
            self._counted = False
            self.service.inflight -= 1

    def on_finish(self):
        self._uncount()
        self.service.metrics.observe_request(self._status_code, self.request.request_time())


class MetricsHandler(AuthMixin, PredictiveBase):
    def get(self):
        payload, content_type = self.service.metrics.render()
        self.set_header("Content-Type", content_type)
        self.finish(payload)


class OpenAPIHandler(AuthMixin, PredictiveBase):
    def get(self):
        model = self.service.model
        self.write_json(openapi_document(model.model_id if model else None))


class DocsHandler(AuthMixin, PredictiveBase):
    def get(self):
        model = self.service.model
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(docs_page(openapi_document(model.model_id if model else None)))


class PredictiveNotFound(AuthMixin, NotFoundHandler):
    """Unknown paths: authenticated like every other route (deny by default), then 404."""
    envelope = staticmethod(predictive_envelope)


routes = [
    (r"/v1/predict", PredictHandler),          # first: Tornado tries the rules in order
    (r"/health", HealthHandler),
    (r"/healthz", HealthHandler),
    (r"/ready", ReadyHandler),
    (r"/readyz", ReadyHandler),
    (r"/v1/model", ModelHandler),
    (r"/metrics", MetricsHandler),
    (r"/openapi.json", OpenAPIHandler),
    (r"/docs", DocsHandler),
]
