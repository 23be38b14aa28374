"""`POST /v1/predict` answered on the httptools front end without building a Tornado RequestHandler.

The RequestHandler machinery (request object, routing, handler instance, header objects, `_execute`, `finish`,
`flush`, the log hook) cost more CPU than everything else a 1-row request does. This route does the same work as
`handlers.PredictHandler` for the request that succeeds: authenticate (the same `AuthService.check`, on every
request), decode, submit to the batcher, render, count the request in the metrics. Every other outcome (model not
ready, an authentication failure, a bad body, a full queue) is handed to the Tornado application unchanged, which
answers it exactly as before from the one error path (`exchange.to_app()`: it re-runs the checks, which costs
nothing that matters on a request that fails). Only a failure of the model run itself, when the body is already
consumed, is answered here, in the same envelope.
"""
import asyncio
import logging
import time

from foundry_inference.apps.predictive.batcher import InferenceFailed
from foundry_inference.apps.predictive.decoding import dumps
from foundry_inference.apps.predictive.handlers import http_date

log = logging.getLogger("foundry_inference.predictive")


_head_cache = ["", b""]


def _head():
    """The response's header lines (Content-Length aside), rebuilt when the Date string changes (once a second)."""
    date = http_date()
    if date is not _head_cache[0]:
        _head_cache[0] = date
        _head_cache[1] = b"Content-Type: application/json\r\nDate: %s\r\nX-Content-Type-Options: nosniff\r\n" % (
            date.encode("ascii"))
    return _head_cache[1]


class DirectPredict:
    """The direct route's handler: `server.direct_routes[("POST", "/v1/predict")] = DirectPredict(app)`."""

    def __init__(self, app):
        self.service = app.settings["predictive"]
        self.auth = app.settings["auth"]
        self.loop = None

    def __call__(self, exchange):
        service = self.service
        if not service.ready:
            exchange.to_app()
            return
        # Counted now, run on a later loop turn: requests read in the same turn are all counted before any of them
        # submits, so the batcher's idle fast path is taken only by a request that is really alone (as the
        # handler's initialize() does).
        service.inflight += 1
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self.loop.create_task(self._predict(exchange, time.monotonic()))

    async def _predict(self, exchange, started):
        service = self.service
        try:
            answer = await self._answer(exchange)
        finally:
            service.inflight -= 1       # before answering: the next request of this client sees it gone
        if answer is None:
            return
        status, message = answer
        if status == 200:
            service.metrics.observe_request(200, time.monotonic() - started)
            exchange.respond(b"200 OK", _head(), message)
        else:
            self._fail(exchange, started, message)

    async def _answer(self, exchange):
        """(200, body), (500, message), or None when the request was handed to the application or nobody waits."""
        service = self.service
        request = exchange.request
        try:
            await self.auth.check("POST", request.headers)
            began = time.perf_counter()
            array = await service.decode_async(request.body)
            decoded = time.perf_counter() - began
            pending = service.submit(array)
        except Exception:  # noqa: BLE001 - AuthError, BadInput, QueueFull, ...: the application answers it
            if not exchange.proto.closed:
                exchange.to_app()
            return None
        if exchange.proto.closed:
            pending.future.cancel()     # the client went away meanwhile: the batcher drops it
            return None
        exchange.set_close_callback(pending.future.cancel)
        try:
            outputs, start, stop, inference_ms = await pending.future
        except asyncio.CancelledError:
            return None                 # the client went away: nobody to answer
        except InferenceFailed as exc:
            return 500, str(exc)
        try:
            rendering = time.perf_counter()
            answer = service.render(outputs, start, stop, inference_ms)
            service.metrics.observe_stages(decoded, inference_ms / 1000.0, time.perf_counter() - rendering)
            return 200, answer
        except Exception:  # noqa: BLE001 - a bug, not the client's fault: a 500 in the envelope, no traceback out
            log.exception("rendering a /v1/predict answer failed")
            return 500, "Internal server error"

    def _fail(self, exchange, started, message):
        log.error("500 POST /v1/predict %.2fms: %s", 1000.0 * (time.monotonic() - started), message)
        self.service.metrics.observe_request(500, time.monotonic() - started)
        exchange.respond(b"500 Internal Server Error", _head(), dumps({"detail": message}))
