"""The activator: what answers a deployment's endpoint while none of its replicas is ready (embedded mode).

One asyncio loop in a thread of the node agent, one loopback listener per deployment that can scale to zero. The
deployment's nginx sidecar (same TLS certificate, same port) lists it as the `backup` of the replicas, and as its
only server while no replica is ready, so it is off the path whenever a replica accepts connections.

A request that reaches it is, in this order:
1. authenticated and authorized with the shared auth module and the deployment's own settings (its key files, its
   Entra settings: the model server's own environment), so an unauthenticated request never starts anything;
   `/health` and `/ready` are answered here (a probe does not wake a model);
2. counted against the hold bounds (maxHeldRequests per deployment, HELD_BYTES of held bodies): beyond them a 429
   with Retry-After in the envelope of the workload (OpenAI routes: the OpenAI error; others: the predictive
   server's queue-full body), as the sidecar's own 429;
3. held while the autoscaler is told at once (no poll) to start a replica; forwarded as soon as one passes its
   readiness probe (the body and the answer stream through: server-sent events arrive as the replica sends them);
   a replica that cannot start (fetch failure, the server exits) answers every held request 503 with the cause;
   holdTimeoutSeconds without a ready replica is a 429 with Retry-After. A node agent that stops answers the
   requests it holds 503 (they never hang).
"""
import asyncio
import logging
import re
import threading
import time

import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.simple_httpclient
import tornado.web

from foundry_inference import logs
from foundry_inference.apps import authproxy
from foundry_inference.apps.base import ApiError, openai_envelope, predictive_envelope
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings

from ..builders import nginx as nginx_builder

log = logging.getLogger("foundry_inference.operator.activator")
HELD_BYTES = 128 << 20            # bodies held per deployment at once
RETRY_AFTER_S = 2
POLL_S = 0.05
_MODEL_READY = re.compile(rb"^foundry_model_ready 1(\.0)?$", re.MULTILINE)
_OPENAI = re.compile(nginx_builder._OPENAI_PATHS.lstrip("~"))  # the sidecar's split between the two envelopes


def too_many(path, message, depth):
    """A 429 in the envelope the sidecar's own 429 uses for this path."""
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if _OPENAI.match(path):
        return ApiError(429, "rate_limit_error", f"Too many requests: {message}", code="rate_limit_error",
                        headers=headers)
    return ApiError(429, "TooManyRequests", message, headers=headers,
                    extra={"error": f"Queue full: {message}", "queue_depth": depth, "retry_after": RETRY_AFTER_S})


def unavailable(path, message):
    if _OPENAI.match(path):
        return ApiError(503, "server_error", message, code="model_unavailable")
    return ApiError(503, "ServiceUnavailable", message, code="model_unavailable")


class Gate:
    """One deployment's holding pen: its bounds, its wake-up call and where its ready replica is. With `rewake_s`
    the wake-up is asked again every that many seconds while a request is held (it is idempotent: 0 -> 1 only)."""

    rewake_s = None
    retry_unreachable = False   # a request whose ready replica does not answer is held and woken again

    def __init__(self, workload, wake, max_held, hold_timeout_s, probe_client):
        self.workload, self.wake = workload, wake
        self.max_held, self.hold_timeout_s = max_held, hold_timeout_s
        self.held = self.held_bytes = 0
        self.closing = None             # a message once the agent stops
        self.probe_client = probe_client

    async def _get(self, url):
        try:
            return await self.probe_client.fetch(url, request_timeout=1.0, connect_timeout=0.5, raise_error=False)
        except (OSError, tornado.httpclient.HTTPClientError):
            return None

    async def _ready_port(self):
        """A replica that passes its readiness probe. Where the replica has a metrics port, its quiet
        `foundry_model_ready` gauge is watched first, so a loading model is not asked (and does not log) a 503 /ready
        every poll."""
        path = self.workload.readiness_path() or "/health"
        for port, metrics in self.workload.replica_ports():
            if metrics:
                resp = await self._get(metrics)
                if resp is None or resp.code != 200 or not _MODEL_READY.search(resp.body or b""):
                    continue
            resp = await self._get(f"http://127.0.0.1:{port}{path}")
            if resp is not None and 200 <= resp.code < 400:
                return port
        return None

    async def port_for(self, path, body_bytes, deadline=None):
        """The port of a ready replica, holding the request until there is one; raises ApiError beyond bounds.
        With `deadline` (a retry after the replica found did not answer): held and woken at once, until then."""
        if deadline is None:
            port = await self._ready_port()
            if port is not None:
                return port             # a replica became ready before nginx was told: no hold, no wake
        if self.held >= self.max_held or self.held_bytes + body_bytes > HELD_BYTES:
            raise too_many(path, f"{self.held} requests wait for this deployment to start", self.held)
        self.held += 1
        self.held_bytes += body_bytes
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.wake, self.workload)
            woken = time.monotonic()
            deadline = deadline or woken + self.hold_timeout_s
            while time.monotonic() < deadline:
                if self.closing:
                    raise unavailable(path, self.closing)
                port = await self._ready_port()
                if port is not None:
                    return port
                failure = self.workload.start_failure()
                if failure:
                    raise unavailable(path, f"the deployment could not start: {failure}")
                if self.rewake_s is not None and time.monotonic() - woken >= self.rewake_s:
                    await loop.run_in_executor(None, self.wake, self.workload)
                    woken = time.monotonic()
                await asyncio.sleep(POLL_S)
            raise too_many(path, f"no replica was ready within {self.hold_timeout_s:g} s", self.held)
        finally:
            self.held -= 1
            self.held_bytes -= body_bytes


class Activate(authproxy.Forward):
    """Every method of every path: authenticated first (AuthMixin.prepare), then held and forwarded."""

    strip_credentials = False     # the model server checks them again
    connect_timeout_s = 3         # a replica that was just ready: no answer in 3 s is a replica that went

    @property
    def envelope(self):
        """The workload's envelope, chosen by path before anything else (auth failures included)."""
        return openai_envelope if _OPENAI.match(self.request.path) else predictive_envelope

    @property
    def upstream(self):
        return self._upstream

    async def _forward(self, path=None):
        gate = self.settings["gate"]
        size = len(self.request.body or b"")
        deadline = None
        while True:
            port = await gate.port_for(self.request.path, size, deadline)
            self._upstream = self.settings["upstreams"](port)
            try:
                return await super()._forward(path)
            except ApiError as exc:
                # the replica that looked ready did not answer and nothing reached the client yet: on a cluster,
                # the route to a replica that was going away (the deployment had just gone to zero) outlived it
                # for a moment. Held and woken again, within the hold time, instead of a 502
                if exc.status != 502 or self._started or not gate.retry_unreachable:
                    raise
                deadline = deadline or time.monotonic() + gate.hold_timeout_s
                if time.monotonic() >= deadline:
                    raise
                logs.event(log, "replica did not answer: held again", path=self.request.path)

    get = head = post = put = patch = delete = options = _forward


class Probe(tornado.web.RequestHandler):
    """/health and /ready: the deployment is ready to accept requests (ScaledToZero is a ready state)."""

    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish('{"status":"ok","scaledToZero":true}')


class Activator:
    """The agent's activator thread and its listeners; register()/unregister()/stop() from any thread."""

    def __init__(self, wake, max_body_bytes=50 << 20):
        self.wake = wake                 # (workload) -> None: ask for a replica now (blocking; run off the loop)
        self.max_body_bytes = max_body_bytes
        self.loop = None
        self.thread = None
        self.servers = {}                # uid -> (HTTPServer, Gate)
        self._upstreams = {}
        self._lock = threading.Lock()

    def _start(self):
        if self.thread is not None:
            return
        started = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.probe_client = tornado.simple_httpclient.SimpleAsyncHTTPClient(force_instance=True)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="activator", daemon=True)
        self.thread.start()
        started.wait()

    def _call(self, fn, *args):
        """Run `fn` on the loop and return its result (from another thread)."""
        future = asyncio.run_coroutine_threadsafe(self._as_coro(fn, *args), self.loop)
        return future.result(30)

    @staticmethod
    async def _as_coro(fn, *args):
        return fn(*args)

    def _upstream(self, port):
        found = self._upstreams.get(port)
        if found is None:
            found = self._upstreams[port] = authproxy.Upstream(port, self.max_body_bytes)
        return found

    def register(self, workload, params):
        """A listener for `workload` on a free loopback port; returns the port. Raises AuthConfigError when the
        deployment's auth settings are unusable (the agent reports it)."""
        with self._lock:
            self._start()
            if workload.uid in self.servers:
                return self.servers[workload.uid][0].port
            auth = AuthService.from_settings(AuthSettings.from_env(env=workload.app_env()))
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            port = sockets[0].getsockname()[1]

            def listen():
                gate = Gate(workload, self.wake, params.max_held, params.hold_timeout_s, self.probe_client)
                app = tornado.web.Application(
                    [(r"/(?:health|ready)", Probe), (r"/.*", Activate)], auth=auth, gate=gate,
                    upstreams=self._upstream, compress_response=False, xsrf_cookies=False)
                server = tornado.httpserver.HTTPServer(app, max_body_size=self.max_body_bytes + 1,
                                                       idle_connection_timeout=75)
                server.add_sockets(sockets)
                server.port = port
                return server, gate

            self.servers[workload.uid] = self._call(listen)
            return port

    def update(self, workload, params):
        """New hold bounds for a registered deployment."""
        entry = self.servers.get(workload.uid)
        if entry is not None:
            entry[1].max_held, entry[1].hold_timeout_s = params.max_held, params.hold_timeout_s

    def held(self, uid):
        entry = self.servers.get(uid)
        return entry[1].held if entry else 0

    def unregister(self, uid, why="the deployment was deleted"):
        with self._lock:
            entry = self.servers.pop(uid, None)
            if entry is None:
                return
            server, gate = entry
            gate.closing = why

            def close():
                server.stop()
            self._call(close)

    def stop(self):
        """Answer every held request 503, close the listeners, end the thread (idempotent)."""
        gates = [gate for _server, gate in self.servers.values()]
        for uid in list(self.servers):
            self.unregister(uid, "the node agent is stopping; retry in a moment")
        if self.thread is not None:
            deadline = time.monotonic() + 2
            while any(g.held for g in gates) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(POLL_S * 3)          # let the held requests see `closing` and answer
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.thread = None
