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
from foundry_inference.apps.predictive.service import OFFLOAD_BYTES

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
    """The direct route's handler: `server.direct_routes[("POST", "/v1/predict")] = DirectPredict(app)`.

    The requests read in one loop turn are taken on the next, one after the other. The usual one (an API key or no
    auth, a small body) takes the synchronous path: authenticated (`AuthService.check_now`, the same decision as
    `check`), decoded, submitted to the batcher and answered from the batcher's delivery through a `_Reply`: no
    task, coroutine or future per request. Anything else (an Entra token, a body decoded in a worker thread) takes
    the coroutine path, `_predict`."""

    def __init__(self, app):
        self.service = app.settings["predictive"]
        self.auth = app.settings["auth"]
        self.loop = None
        self._arrived = []      # (exchange, arrival time) read in this loop turn, taken on the next

    def __call__(self, exchange):
        service = self.service
        if not service.ready:
            exchange.to_app()
            return
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        # Counted now, run on a later loop turn: requests read in the same turn are all counted before any of them
        # submits, so the batcher's idle fast path is taken only by a request that is really alone (as the
        # handler's initialize() does). The work is done on that turn too, for every request of the turn one after
        # the other: interleaved with the parsing of the next request it costs measurably more CPU.
        service.inflight += 1
        if not self._arrived:
            self.loop.call_soon(self._take_arrived)
        self._arrived.append((exchange, time.monotonic()))

    def _take_arrived(self):
        arrived, self._arrived = self._arrived, []
        for exchange, started in arrived:
            try:
                self._start(exchange, started)
            except Exception:  # noqa: BLE001 - a bug here must not strand the other requests of the turn
                log.exception("the direct route failed on a request")
                self.service.inflight -= 1
                if not exchange.proto.closed and not exchange.finished:
                    exchange.to_app()

    def _start(self, exchange, started):
        service = self.service
        if exchange.proto.closed:           # the client went away meanwhile: nobody to answer
            service.inflight -= 1
            return
        request = exchange.request
        if len(request.body) >= OFFLOAD_BYTES:
            self.loop.create_task(self._predict(exchange, started))
            return
        reply = None
        try:
            if self.auth.check_now("POST", request.headers) is None:     # only the coroutine path can decide
                self.loop.create_task(self._predict(exchange, started))
                return
            began = time.perf_counter()
            array = service.decode(request.body)
            reply = _Reply(self, exchange, started, time.perf_counter() - began)
            service.submit(array, reply)
        except Exception:  # noqa: BLE001 - AuthError, BadInput, QueueFull, ...: the application answers it
            if reply is not None and reply.state:       # already answered (or gone): nothing to hand over
                log.exception("the direct route failed after answering a request")
                return
            service.inflight -= 1
            exchange.to_app()
            return
        if not reply.state:
            exchange.set_close_callback(reply.cancel)

    def answer(self, exchange, started, decoded, result, error):
        """Write the answer of a request whose batch has run (`result`) or failed (`error`)."""
        service = self.service
        service.inflight -= 1               # before answering: the next request of this client sees it gone
        if exchange.proto.closed:
            return
        if error is None:
            try:
                outputs, start, stop, inference_ms = result
                rendering = time.perf_counter()
                message = service.render(outputs, start, stop, inference_ms)
                service.metrics.observe_stages(decoded, inference_ms / 1000.0, time.perf_counter() - rendering)
            except Exception:  # noqa: BLE001 - a bug, not the client's fault: a 500 in the envelope, no traceback
                log.exception("rendering a /v1/predict answer failed")
                self._fail(exchange, started, "Internal server error")
                return
            service.metrics.observe_request(200, time.monotonic() - started)
            exchange.respond(b"200 OK", _head(), message)
        else:
            self._fail(exchange, started, str(error) if isinstance(error, InferenceFailed) else
                       "Internal server error")

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


_DONE, _CANCELLED = 1, 2


class _Reply:
    """What the batcher resolves for a request of the synchronous path, in place of an asyncio Future
    (batcher.Pending): its result is written to the client at once, on the batcher's turn of the event loop.
    cancel() is the connection's close callback: the batcher then drops the request, and nobody is answered."""
    __slots__ = ("route", "exchange", "started", "decoded", "state")

    def __init__(self, route, exchange, started, decoded):
        self.route, self.exchange, self.started, self.decoded = route, exchange, started, decoded
        self.state = 0

    def done(self):
        return self.state != 0

    def cancel(self):
        if self.state:
            return False
        self.state = _CANCELLED
        self.route.service.inflight -= 1
        return True

    def set_result(self, result):
        self._resolve(result, None)

    def set_exception(self, error):
        self._resolve(None, error)

    def _resolve(self, result, error):
        if self.state:
            return
        self.state = _DONE
        try:
            self.route.answer(self.exchange, self.started, self.decoded, result, error)
        except Exception:  # noqa: BLE001 - never into the batcher's delivery loop: the other requests of the batch
            log.exception("answering a /v1/predict request failed")
