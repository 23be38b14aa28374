"""`foundry-inference auth-proxy`: the data-plane auth check in front of a model server that has none (vLLM).

A vLLM pod runs it between the nginx TLS sidecar and vLLM: nginx -> this proxy on 127.0.0.1:PORT -> vLLM on
127.0.0.1:FOUNDRY_UPSTREAM_PORT. It authenticates and authorizes every request with the same auth module and the same
settings as our own servers (FOUNDRY_AUTH_MODE, FOUNDRY_API_KEYS_DIR, FOUNDRY_ENTRA_*, ...), so a vLLM deployment has
the API-key and Entra semantics of any other: 401/403/400 in the OpenAI envelope, keys re-read within seconds of a
rotation. Public, like on our servers: `/health`, `/ready` (both answer vLLM's own /health) and `GET /v1/models`.
An authorized request is forwarded as is, minus the caller's credentials and hop-by-hop headers; the answer streams
back unbuffered (server-sent events of a streaming completion arrive as vLLM sends them).
"""
import argparse
import asyncio
import logging
import os

import tornado.httpclient
import tornado.httpserver
import tornado.httputil
import tornado.simple_httpclient
import tornado.web

from foundry_inference.apps.base import ApiError, BaseHandler, openai_envelope
from foundry_inference.apps.lifecycle import stop_on_signals
from foundry_inference.auth.tornado import AuthMixin
from foundry_inference.config import ConfigurationError
from foundry_inference.envreader import EnvReader

log = logging.getLogger("foundry_inference.authproxy")

_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "transfer-encoding", "upgrade", "host", "content-length"})
_CREDENTIALS = frozenset({"authorization", "api-key", "x-api-key"})
TIMEOUT_S = 600.0             # the nginx sidecar's proxy timeouts


class Upstream:
    def __init__(self, port, max_body_bytes):
        self.base = f"http://127.0.0.1:{port}"
        self.max_body_bytes = max_body_bytes
        self.client = tornado.simple_httpclient.SimpleAsyncHTTPClient(
            force_instance=True, max_clients=1024, max_body_size=1 << 40, max_buffer_size=1 << 20)


class Forward(AuthMixin, BaseHandler):
    """Every method of every path: authorized like any data-plane route, then forwarded."""
    envelope = staticmethod(openai_envelope)
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    strip_credentials = True      # vLLM has no auth; a server that checks again needs them (the activator)
    connect_timeout_s = 10

    @property
    def upstream(self):
        return self.settings["upstream"]

    def set_default_headers(self):
        self.clear_header("Server")

    async def _forward(self, path=None):
        if len(self.request.body) > self.upstream.max_body_bytes:
            raise ApiError(413, "invalid_request_error", f"Request body exceeds {self.upstream.max_body_bytes} bytes",
                           code="payload_too_large")
        headers = tornado.httputil.HTTPHeaders()
        dropped = _HOP | _CREDENTIALS if self.strip_credentials else _HOP
        for name, value in self.request.headers.get_all():
            if name.lower() not in dropped:
                headers.add(name, value)
        self._status, self._headers_in, self._started = None, tornado.httputil.HTTPHeaders(), False
        request = tornado.httpclient.HTTPRequest(
            self.upstream.base + (path or self.request.uri), method=self.request.method, headers=headers,
            body=self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None,
            allow_nonstandard_methods=True, follow_redirects=False, decompress_response=False,
            request_timeout=TIMEOUT_S, connect_timeout=self.connect_timeout_s, header_callback=self._header,
            streaming_callback=self._chunk)
        try:
            response = await self.upstream.client.fetch(request, raise_error=False)
        except OSError as exc:
            raise ApiError(502, "server_error", f"the model server is not reachable: {exc.strerror or exc}",
                           code="upstream_unavailable") from None
        except tornado.httpclient.HTTPClientError as exc:
            if self._started:            # part of the answer went out already: the connection just ends
                raise
            # the connection closed (or timed out) before an answer: not an internal error, a 502 like the others
            raise ApiError(502, "server_error", f"the model server did not answer: {exc}",
                           code="upstream_unavailable") from None
        if response.code == 599 and not self._started:
            raise ApiError(502, "server_error", f"the model server did not answer: {response.error}",
                           code="upstream_unavailable")
        self._start()
        self.finish()

    def _header(self, line):
        if line.startswith("HTTP/"):
            self._status, self._headers_in = int(line.split(" ", 2)[1]), tornado.httputil.HTTPHeaders()
        elif line.strip():
            self._headers_in.parse_line(line)

    def _start(self):
        if self._started or self._status is None:
            return
        self._started = True
        self.set_status(self._status)
        for name, value in self._headers_in.get_all():
            if name.lower() not in _HOP:
                self.add_header(name, value)

    def _chunk(self, data):
        self._start()
        self.write(data)
        self.flush()

    get = head = post = put = patch = delete = options = _forward


class Public(Forward):
    """Liveness/readiness and the model list: public on every server of the platform."""
    public = True

    async def get(self):
        path = "/health" if self.request.path in ("/health", "/ready") else None
        await self._forward(path)


def make_app(upstream_port, *, auth=None, max_body_bytes=50 << 20):
    if auth is None:
        from foundry_inference.auth.service import AuthService
        auth = AuthService.from_settings()
    return tornado.web.Application([(r"/(?:health|ready|v1/models)", Public), (r"/.*", Forward)], auth=auth,
                                   upstream=Upstream(upstream_port, max_body_bytes), compress_response=False,
                                   xsrf_cookies=False)


def settings_from_env(env=None):
    read = EnvReader(os.environ if env is None else env)
    return {"port": read.integer("PORT", 5000, low=1, high=65535),
            "upstream_port": read.integer("FOUNDRY_UPSTREAM_PORT", 0, low=0, high=65535),
            "max_body_bytes": read.integer("FOUNDRY_MAX_BODY_BYTES", 50 << 20, low=1, high=1 << 34)}


async def serve(port, upstream_port, *, host="127.0.0.1", auth=None, max_body_bytes=50 << 20, stop=None):
    app = make_app(upstream_port, auth=auth, max_body_bytes=max_body_bytes)
    server = tornado.httpserver.HTTPServer(app, max_body_size=max_body_bytes + 1, idle_connection_timeout=75)
    server.listen(port, host)
    log.info("auth proxy listening on %s:%d in front of 127.0.0.1:%d", host, port, upstream_port)
    stop = stop_on_signals(stop)
    await stop.wait()
    server.stop()
    return 0


def main(args):
    settings = settings_from_env()
    if not settings["upstream_port"]:
        raise ConfigurationError("FOUNDRY_UPSTREAM_PORT (the port of the model server behind the proxy) is required")
    port = getattr(args, "port", None) or settings["port"]
    return asyncio.run(serve(port, settings["upstream_port"], host=getattr(args, "address", None) or "127.0.0.1",
                             max_body_bytes=settings["max_body_bytes"]))


if __name__ == "__main__":  # pragma: no cover - the console script is the entry point
    main(argparse.Namespace())
