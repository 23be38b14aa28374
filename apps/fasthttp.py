"""An HTTP/1.1 front end for a Tornado `Application`, on the httptools parser (llhttp, the parser uvicorn uses).

Why: Tornado's own HTTP/1.1 connection is pure Python and costs roughly half of a small request's CPU (measured in
docs/benchmarks.md). This module replaces only the wire layer: it parses requests with httptools and drives the
unchanged Tornado application through Tornado's public delegate interface (`Application.start_request` ->
`HTTPMessageDelegate`, with an `HTTPConnection` per request), so routing, RequestHandlers, the auth mixin and the error
envelope are the same objects under either front end. `FOUNDRY_HTTP_FRONTEND=tornado` switches back to Tornado's
HTTPServer.

Semantics kept from Tornado's HTTP1Connection: keep-alive (HTTP/1.1 default, HTTP/1.0 on request), one request
processed at a time per connection with pipelined requests answered in order, chunked responses when no
Content-Length is set, `Expect: 100-continue`, and a close callback for the active request when the client goes away.
Limits: body size (413 as soon as it is known, without reading the rest), header size and count (431), HTTP/1.0 and
1.1 only, a deadline for the headers and one for the body of each request (slow clients are answered 408 and closed),
idle keep-alive timeout, reading paused while a pipelined request waits, writes paused while the transport's buffer
is full. llhttp itself refuses what request smuggling is made of (conflicting or duplicate Content-Length,
Content-Length with Transfer-Encoding, chunk size overflow, obs-fold, bare CR or LF): 400 and a close. A connection
answered early with an error is half-closed and drained for a moment (lingering close), so the client reads the
answer instead of a reset.

Direct routes: a server may register `direct_routes={(method, path): handler}` for its one hot route. The handler gets
the `_Exchange` of a request whose method and whole target match, after every check above, and either answers it
with `exchange.respond(...)` (a complete response, no RequestHandler built) or hands it back to the application with
`exchange.to_app()`, e.g. for every error, so that errors keep coming from the one Tornado error path.
"""
import asyncio
import collections
import json
import logging
import re
import time

import httptools
from tornado.httputil import HTTPHeaders, HTTPInputError, RequestStartLine, responses

log = logging.getLogger("foundry_inference.http")

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 128
LINGER_S, LINGER_BYTES = 2.0, 8 << 20
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Refused(Exception):
    """Raised in a parser callback: answer `status` with `message` and close."""
    status, message = 400, "Malformed HTTP request"


class _HeaderTooLarge(_Refused):
    status, message = 431, f"Request line and headers exceed {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields"


class _BadVersion(_Refused):
    status, message = 400, "Only HTTP/1.0 and HTTP/1.1 are supported"


class _BadHeader(_Refused):
    status, message = 400, "Malformed HTTP request: invalid header field"


# A Host header a direct route may serve without asking Tornado: a strict subset of what Tornado's HTTPServerRequest
# accepts (anything else goes to the application, which answers 400 where Tornado refuses it).
_PLAIN_HOST = re.compile(r"[A-Za-z0-9._~:\[\]-]*")
_OWS = b" \t"


def _error_response(status, body, close=True):
    head = (f"HTTP/1.1 {status} {responses.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode("latin1") + body


_CANONICAL = {}        # header name -> its Http-Header-Case, for the names seen (bounded, short names only)


def _canonical(name):
    canonical = _CANONICAL.get(name)
    if canonical is None:
        canonical = "-".join([word.capitalize() for word in name.split("-")])    # as Tornado normalizes it
        if len(name) <= 64 and len(_CANONICAL) < 4096:
            _CANONICAL[name] = canonical
    return canonical


class _Headers(HTTPHeaders):
    """Tornado's HTTPHeaders with the name normalization cached where a request's headers are set and where the
    auth check reads them (Tornado >= 6.5 recomputes it on every access, ~0.6 us each). Same contents, same
    behaviour (tests/unit/test_fasthttp.py compares them); used only where this Tornado keeps the two dicts
    overridden here, plain HTTPHeaders otherwise."""

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            super().__init__(*args, **kwargs)
        else:                       # the front end's case, once per request: skip the generic update()
            self._as_list = {}
            self._combined_cache = {}

    def __setitem__(self, name, value):
        canonical = _canonical(name)
        self._combined_cache[canonical] = value
        self._as_list[canonical] = [value]

    def get_list(self, name):
        return self._as_list.get(_canonical(name), [])

    def __getitem__(self, name):
        canonical = _canonical(name)
        combined = self._combined_cache.get(canonical)
        if combined is None:        # as Tornado's: the values joined, cached until the name is changed
            combined = self._combined_cache[canonical] = ",".join(self._as_list[canonical])
        return combined


if not all(hasattr(HTTPHeaders(), attr) for attr in ("_as_list", "_combined_cache")):
    _Headers = HTTPHeaders     # noqa: F811 - another Tornado's internals: no shortcut


class _Context:
    __slots__ = ("remote_ip", "protocol", "address", "trusted_downstream")

    def __init__(self, address):
        self.address = address
        self.remote_ip = address[0] if isinstance(address, tuple) and address else None
        self.protocol = "http"
        self.trusted_downstream = None


class _Request:
    __slots__ = ("method", "url", "version", "headers", "body", "keep_alive", "error")


class _Exchange:
    """Tornado's `HTTPConnection` for one request: where the RequestHandler writes its response."""
    __slots__ = ("proto", "request", "close_callback", "context", "keep_alive", "chunked", "finished", "body_allowed")

    def __init__(self, proto, request):
        self.proto = proto
        self.request = request
        self.close_callback = None
        self.context = proto.context
        self.keep_alive = request.keep_alive
        self.chunked = False
        self.finished = False
        self.body_allowed = True

    def set_close_callback(self, callback):
        self.close_callback = callback

    def write_headers(self, start_line, headers, chunk=None):
        proto = self.proto
        code = start_line.code
        request = self.request
        self.body_allowed = request.method != "HEAD" and code not in (204, 304) and not 100 <= code < 200
        has_length = "Content-Length" in headers
        if self.body_allowed and not has_length and "Transfer-Encoding" not in headers:
            if request.version == "HTTP/1.1":
                self.chunked = True
                headers["Transfer-Encoding"] = "chunked"
            else:
                self.keep_alive = False   # HTTP/1.0 without a length: the close delimits the body
        if proto.closing:
            self.keep_alive = False
        if not self.keep_alive:
            headers["Connection"] = "close"
        elif request.version == "HTTP/1.0":
            headers["Connection"] = "keep-alive"
        parts = [b"HTTP/1.1 %d %s\r\n" % (code, (start_line.reason or responses.get(code, "Unknown")).encode("latin1"))]
        for name, value in headers.get_all():
            parts.append(b"%s: %s\r\n" % (name.encode("latin1"), value.encode("latin1")))
        parts.append(b"\r\n")
        if chunk and self.body_allowed:
            parts.append(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.chunked else chunk)
        return proto.send(b"".join(parts))

    def write(self, chunk):
        if not chunk or not self.body_allowed:
            return self.proto.ready_future()
        if self.chunked:
            chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        return self.proto.send(chunk)

    def finish(self):
        if self.finished:
            return
        self.finished = True
        self.close_callback = None      # (often a bound method of what holds this exchange: no cycle left for the GC)
        if self.chunked:
            self.proto.send(b"0\r\n\r\n")
        self.proto.exchange_finished(self)

    # --- direct routes ---------------------------------------------------------------------------------------------

    def to_app(self):
        """Hand the request to the Tornado application (a direct route declining it)."""
        self.proto.start_app(self)

    def respond(self, status_line, head, body):
        """Send a whole response and finish: `status_line` like b"200 OK", `head` the header lines (each ending in
        CRLF, Content-Length excluded), `body` bytes."""
        proto = self.proto
        keep_alive = self.keep_alive and not proto.closing
        self.keep_alive = keep_alive
        if not keep_alive:
            head += b"Connection: close\r\n"
        elif self.request.version == "HTTP/1.0":
            head += b"Connection: keep-alive\r\n"
        if not proto.closed:
            proto.transport.write(b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n%s" % (
                status_line, head, len(body), b"" if self.request.method == "HEAD" else body))
        self.finished = True
        self.close_callback = None
        proto.exchange_finished(self)


class HttpToolsProtocol(asyncio.Protocol):
    def __init__(self, server):
        self.server = server
        self.loop = server.loop
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.context = None
        self.current = None
        self.pipeline = collections.deque()
        self.closing = False
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        self.drain_waiters = []
        self.last_activity = time.monotonic()
        self._url = None
        self._headers = None
        self._names = None            # the lowered header names seen in the request being parsed
        self._body = None
        self._body_size = 0
        self._header_size = 0
        self._reject = None
        self._length = None
        self._expect = False
        self._began = None            # when the request being parsed started (None between requests)
        self._headers_at = None       # when its headers were complete
        self._lingering = False
        self._plain = None            # the last Host header found plain on this connection

    # --- asyncio.Protocol ------------------------------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.context = _Context(transport.get_extra_info("peername"))
        self.server.connections.add(self)

    def data_received(self, data):
        self.last_activity = time.monotonic()
        if self._lingering:
            self._linger_bytes += len(data)
            if self._linger_bytes > LINGER_BYTES:
                self.close()
            return
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(400, "Protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                self.fail(exc.__context__.status, exc.__context__.message)
            else:
                log.exception("HTTP front end failed on a request")
                self.fail(500, "Internal server error")
        except httptools.HttpParserError:
            self.fail(400, "Malformed HTTP request")
        else:
            if self.pipeline and not self.reading_paused and not self.closing:
                self.reading_paused = True
                self.transport.pause_reading()

    def eof_received(self):
        return False   # close when the client has sent everything: no half-open request handling

    def connection_lost(self, exc):
        self.closed = self.closing = True
        self.server.connections.discard(self)
        self.pipeline.clear()
        current, self.current = self.current, None
        if current is not None and current.close_callback is not None:
            callback, current.close_callback = current.close_callback, None
            try:
                callback()
            except Exception:  # noqa: BLE001
                log.exception("close callback failed")
        self._release_writers()

    def pause_writing(self):
        self.writing_paused = True

    def resume_writing(self):
        self.writing_paused = False
        self._release_writers()

    # --- httptools callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self):
        self._url = []
        self._headers = _Headers()
        self._names = set()
        self._body = []
        self._body_size = 0
        self._header_size = 0
        self._reject = None
        self._length = None
        self._expect = False
        self._began, self._headers_at = time.monotonic(), None

    def on_url(self, url):
        self._header_size += len(url)
        if self._header_size > MAX_HEADER_BYTES:
            raise _HeaderTooLarge()
        self._url.append(url)

    def on_header(self, name, value):
        self._header_size += len(name) + len(value) + 4
        names = self._names
        if self._header_size > MAX_HEADER_BYTES or len(names) >= MAX_HEADERS:
            raise _HeaderTooLarge()
        value = value.strip(_OWS)   # llhttp keeps trailing whitespace; it is not part of the value (RFC 9110 5.5)
        lowered = name.lower()
        if lowered in names:
            try:                    # a repeated field: Tornado's add() keeps every value (and checks it again)
                self._headers.add(name.decode("latin1"), value.decode("latin1"))
            except HTTPInputError:  # what llhttp lets through but Tornado refuses: the client's error, not ours
                raise _BadHeader() from None
        else:
            # The first of its name: set without HTTPHeaders.add()'s regular expressions (half the front end's
            # header cost). llhttp has already checked the name (a token) and every byte of the value exactly as
            # add() would (test_fasthttp_abuse.py compares the two on every byte).
            names.add(lowered)
            self._headers[name.decode("latin1")] = value.decode("latin1")
        if len(name) in (6, 14):
            if lowered == b"content-length":
                self._length = value
            elif lowered == b"expect":
                self._expect = value.lower() == b"100-continue"

    def on_headers_complete(self):
        self._headers_at = time.monotonic()
        if self.parser.get_http_version() not in ("1.1", "1.0"):
            raise _BadVersion()
        limit = self.server.max_body_bytes
        if self._length is not None:
            try:
                too_large = int(self._length) > limit
            except ValueError:
                too_large = False   # llhttp has already refused a malformed Content-Length
            if too_large:
                self._reject = (413, f"Request body exceeds {limit} bytes")
        if self._reject is not None and self.current is None and not self.pipeline:
            self._respond_and_close(*self._reject, linger=True)   # answer now, never read a body we refuse
        elif self._expect and self.current is None and not self.pipeline:
            self.transport.write(_CONTINUE)

    def on_body(self, body):
        if self._reject is not None:
            return
        self._body_size += len(body)
        if self._body_size > self.server.max_body_bytes:
            self._reject = (413, f"Request body exceeds {self.server.max_body_bytes} bytes")
            self._body = None
            if self.current is None and not self.pipeline:
                self._respond_and_close(*self._reject, linger=True)
            return
        self._body.append(body)

    def on_message_complete(self):
        self._began = self._headers_at = None
        if self.closing:
            return
        request = _Request()
        request.method = self.parser.get_method().decode("ascii")
        request.url = b"".join(self._url).decode("latin1")
        request.version = "HTTP/" + self.parser.get_http_version()
        request.headers = self._headers
        request.body = b"".join(self._body) if self._body else b""
        request.keep_alive = self.parser.should_keep_alive()
        request.error = self._reject
        self._body = None
        if self.current is None and not self.pipeline:
            self._dispatch(request)
        else:
            self.pipeline.append(request)

    # --- driving the Tornado application ---------------------------------------------------------------------------

    def _dispatch(self, request):
        if request.error is not None:
            self._respond_and_close(*request.error)
            return
        exchange = self.current = _Exchange(self, request)
        direct = self.server.direct_routes.get((request.method, request.url)) if self.server.direct_routes else None
        if direct is not None and self._plain_host(request):
            try:
                direct(exchange)
            except Exception:  # noqa: BLE001 - a bug in the direct route: the application answers instead
                log.exception("direct route %s %s failed", request.method, request.url)
                if self.current is exchange and not exchange.finished:
                    self.start_app(exchange)
            return
        self.start_app(exchange)

    def _plain_host(self, request):
        host = request.headers.get("Host")
        if host is None:
            return request.version == "HTTP/1.0"
        if host == self._plain:     # the connection's previous request named the same host (the usual case)
            return True
        if _PLAIN_HOST.fullmatch(host) is None:
            return False
        self._plain = host
        return True

    def start_app(self, exchange):
        request = exchange.request
        try:
            delegate = self.server.app.start_request(self, exchange)
            delegate.headers_received(RequestStartLine(request.method, request.url, request.version), request.headers)
            if request.body:
                delegate.data_received(request.body)
            delegate.finish()
        except HTTPInputError as exc:
            # Tornado refusing the request itself (a missing, invalid or repeated Host header, a query string with
            # too many fields): the client's error. The reason without the echoed value.
            if not self.closing and self.current is exchange and not exchange.finished:
                self._respond_and_close(400, "Malformed HTTP request: " + str(exc).split(":", 1)[0])
        except Exception:  # noqa: BLE001 - Tornado handles handler errors; this is a failure of the plumbing
            log.exception("dispatching %s %s failed", request.method, request.url)
            if not self.closing:
                self._respond_and_close(500, "Internal server error")

    def exchange_finished(self, exchange):
        if exchange is not self.current:
            return
        self.current = None
        self.last_activity = time.monotonic()
        if not exchange.keep_alive or self.closing:
            self.close()
            return
        if self.pipeline:
            self._dispatch(self.pipeline.popleft())
        if not self.pipeline and self.reading_paused and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()
            if self._began is not None:        # a request half read before the pause: its deadlines start now
                self._began = time.monotonic()
                self._headers_at = self._headers_at and self._began

    # --- writing ---------------------------------------------------------------------------------------------------

    def ready_future(self):
        future = self.loop.create_future()
        future.set_result(None)
        return future

    def send(self, data):
        if self.closed:
            return self.ready_future()
        self.transport.write(data)
        if not self.writing_paused:
            return self.ready_future()
        future = self.loop.create_future()
        self.drain_waiters.append(future)
        return future

    def _release_writers(self):
        waiters, self.drain_waiters = self.drain_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _respond_and_close(self, status, message, linger=False):
        self.transport.write(_error_response(status, self.server.error_body(status, message)))
        if linger and self.transport.can_write_eof():
            # the client may still be sending what we refuse: half-close and drain for a moment, so that it reads
            # the answer rather than a connection reset
            self.closing = self._lingering = True
            self._linger_bytes = 0
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.close)
            return
        self.close()

    def timed_out(self, now):
        """408 and close when the request being parsed missed its header or body deadline."""
        if self._began is None or self.closing or self.reading_paused:
            return          # (while reading is paused for a pipelined request, the wait is ours, not the client's)
        if self._headers_at is None and now - self._began > self.server.header_timeout_s:
            self.fail(408, "The request headers did not arrive in time")
        elif self._headers_at is not None and now - self._headers_at > self.server.body_timeout_s:
            self.fail(408, "The request body did not arrive in time")

    def fail(self, status, message):
        if self.current is None and not self.closing:
            self._respond_and_close(status, message)
        else:
            self.closing = True    # answer the request in progress (with Connection: close), then close
            self.pipeline.clear()

    def close(self):
        if not self.closing:
            self.closing = True
        if not self.closed and self.transport is not None:
            self.transport.close()   # flushes what is buffered first


class HttpToolsServer:
    """Listens, tracks connections, closes idle keep-alive ones, and drains in-flight requests on shutdown."""

    def __init__(self, app, *, max_body_bytes, keep_alive_timeout_s=75.0, error_body=None, direct_routes=None,
                 header_timeout_s=30.0, body_timeout_s=60.0):
        self.app = app
        self.direct_routes = dict(direct_routes or {})
        self.max_body_bytes = max_body_bytes
        self.keep_alive_timeout_s = keep_alive_timeout_s
        self.header_timeout_s = header_timeout_s    # first byte of a request to the end of its headers
        self.body_timeout_s = body_timeout_s        # end of the headers to the end of the body
        self.error_body = error_body or (lambda status, message: json.dumps({"detail": message}).encode())
        self.connections = set()
        self.loop = None
        self._servers = []
        self._sweeper = None

    async def listen(self, port, host=None, *, sock=None, backlog=2048, reuse_port=False):
        """Start listening; returns the bound (host, port) pairs (port 0 picks a free port)."""
        self.loop = asyncio.get_running_loop()
        if sock is not None:
            server = await self.loop.create_server(lambda: HttpToolsProtocol(self), sock=sock, backlog=backlog)
        else:
            server = await self.loop.create_server(lambda: HttpToolsProtocol(self), host, port, backlog=backlog,
                                                   reuse_port=reuse_port or None)
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep_idle())
        return [s.getsockname()[:2] for s in server.sockets]

    async def _sweep_idle(self):
        shortest = min(self.keep_alive_timeout_s, self.header_timeout_s, self.body_timeout_s)
        interval = min(max(shortest / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            cutoff = now - self.keep_alive_timeout_s
            for proto in list(self.connections):
                proto.timed_out(now)
                if proto.current is None and not proto.pipeline and proto.last_activity < cutoff:
                    proto.close()

    def stop_listening(self):
        for server in self._servers:
            server.close()

    async def shutdown(self, timeout_s=10.0):
        """Stop accepting, close idle connections, let in-flight requests finish (up to timeout_s), close the rest."""
        self.stop_listening()
        deadline = time.monotonic() + timeout_s
        for proto in list(self.connections):
            proto.closing = True
            if proto.current is None:
                proto.close()
        while any(p.current is not None for p in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proto in list(self.connections):
            proto.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            await server.wait_closed()
