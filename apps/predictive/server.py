"""`make_app(settings)` and the `foundry-inference predictive-server` entry point.

The process listens first (so /health answers while a large model loads), loads and warms the model off the event
loop, then /ready turns 200. A model that cannot be loaded stops the process with status 1 and a clear log line, so
the pod restarts and `kubectl logs` says why. SIGTERM stops accepting, lets in-flight requests finish, and exits.
"""
import argparse
import asyncio
import logging
import os
import signal
import sys

import tornado.web

from foundry_inference.apps.lifecycle import close_tornado_server, serve_loaded, stop_on_signals
from foundry_inference.apps.metrics_port import listen_metrics
from foundry_inference.apps.predictive.handlers import PredictiveNotFound, routes
from foundry_inference.apps.predictive.service import PredictiveService
from foundry_inference.apps.predictive.settings import PredictiveSettings, SettingsError

log = logging.getLogger("foundry_inference.predictive")

SHUTDOWN_GRACE_S = 10.0


def _log_request(handler):
    """Access logs belong to the nginx sidecar; the app logs only server errors (an access log line per request
    would cost more than the inference of a small model)."""
    status = handler.get_status()
    if status >= 500:
        log.error("%d %s %.2fms", status, handler._request_summary(), 1000.0 * handler.request.request_time())


def make_auth(auth=None):
    """The AuthService from the environment (FOUNDRY_AUTH_MODE etc.); raises AuthConfigError early."""
    if auth is not None:
        return auth
    from foundry_inference.auth.service import AuthService
    return AuthService.from_settings()


def make_app(settings, *, auth=None, service=None, load=True):
    """The Tornado application. `load=True` loads the model now (tests); the server loads it after listening."""
    service = service or PredictiveService(settings)
    if load and not service.ready:
        service.load()
    return tornado.web.Application(
        routes,
        predictive=service,
        auth=make_auth(auth),
        default_handler_class=PredictiveNotFound,
        log_function=_log_request,
        compress_response=False,
        xsrf_cookies=False,
    )


def choose_frontend(settings):
    if settings.http_frontend == "tornado":
        return "tornado"
    try:
        import httptools  # noqa: F401
    except ImportError:
        if settings.http_frontend == "httptools":
            raise SettingsError("FOUNDRY_HTTP_FRONTEND=httptools but httptools is not installed") from None
        return "tornado"
    return "httptools"


async def serve(settings, *, auth=None, sockets=None, started=None, stop=None, service=None):
    """Run one server process until `stop` (an asyncio.Event, or SIGTERM/SIGINT) is set.

    `sockets`: pre-bound listening sockets (several worker processes share them); `started(addresses)` is called
    once listening; `service`: a PredictiveService to serve (tests keep a handle on it)."""
    service = service or PredictiveService(settings)
    app = make_app(settings, auth=auth, service=service, load=False)
    frontend = choose_frontend(settings)
    if frontend == "httptools":
        from foundry_inference.apps.fasthttp import HttpToolsServer
        from foundry_inference.apps.predictive.decoding import dumps
        from foundry_inference.apps.predictive.direct import DirectPredict
        server = HttpToolsServer(app, max_body_bytes=settings.max_body_bytes,
                                 keep_alive_timeout_s=settings.keep_alive_timeout_s,
                                 error_body=lambda status, message: dumps({"detail": message}),
                                 direct_routes={("POST", "/v1/predict"): DirectPredict(app)})
        addresses = []
        for sock in sockets or [None]:
            addresses += await server.listen(settings.port, settings.host, sock=sock)
    else:
        import tornado.httpserver
        import tornado.netutil
        # Tornado answers bodies over its max_body_size with a bare 400; the handler's own check gives the 413
        # with the contract's envelope for everything up to twice the limit.
        server = tornado.httpserver.HTTPServer(app, max_body_size=2 * settings.max_body_bytes,
                                               idle_connection_timeout=settings.keep_alive_timeout_s)
        sockets = sockets or tornado.netutil.bind_sockets(settings.port, settings.host, backlog=2048)
        server.add_sockets(sockets)
        addresses = [s.getsockname()[:2] for s in sockets]
    log.info("predictive server listening on %s (%s front end), loading %s", addresses, frontend, settings.model_path)
    metrics_server = None
    if settings.metrics_port:
        # several workers each bind it (SO_REUSEPORT): a scrape reads the one worker the kernel picks
        metrics_server, service.metrics_addresses = listen_metrics(
            service.metrics.render, settings.metrics_host, settings.metrics_port, reuse_port=settings.workers > 1)
    stop = stop_on_signals(stop)
    if started is not None:
        started(addresses)
    return await serve_loaded(service, stop, lambda: _close(server, frontend, metrics_server), log)


async def _close(server, frontend, metrics_server=None):
    if frontend == "httptools":
        await server.shutdown(SHUTDOWN_GRACE_S)
    else:
        await close_tornado_server(server, SHUTDOWN_GRACE_S)
    if metrics_server is not None:
        await close_tornado_server(metrics_server, SHUTDOWN_GRACE_S)


def _use_uvloop():
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


def supervise(workers, max_restarts=100):
    """Fork `workers` processes that share the listening sockets. Returns (worker index, None) in a child and
    (None, exit status) in the supervisor once every worker has exited. The supervisor forwards SIGTERM/SIGINT to
    the workers (so stopping the pod's PID 1 drains every worker) and restarts a worker that dies unexpectedly.
    Each worker loads its own onnxruntime session after the fork: sessions and their thread pools do not survive a
    fork."""
    children = {}
    stopping = []
    failed = []

    def spawn(index):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            return True
        children[pid] = index
        return False

    def forward(signum, _frame):
        stopping.append(signum)
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for index in range(workers):
        if spawn(index):
            return index, None
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    restarts = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:   # pragma: no cover - PEP 475 retries wait() itself
            continue
        index = children.pop(pid, None)
        if index is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if code == 1:              # the model cannot be loaded: restarting will not help
            log.error("worker %d could not load the model; stopping", index)
            failed.append(index)
            forward(signal.SIGTERM, None)
            continue
        restarts += 1
        if restarts > max_restarts:
            log.error("too many worker restarts; stopping")
            forward(signal.SIGTERM, None)
            continue
        log.warning("worker %d exited with %s; restarting it", index, code)
        if spawn(index):
            return index, None
    return None, 1 if failed else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="foundry-inference predictive-server",
                                     description="Serve one ONNX model on /v1/predict (settings from FOUNDRY_* "
                                                 "environment variables; options override them)")
    parser.add_argument("--model-path", help="an .onnx file or a directory holding one (FOUNDRY_MODEL_PATH)")
    parser.add_argument("--address", "--host", dest="address",
                        help="listen address (FOUNDRY_PREDICTIVE_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (FOUNDRY_PREDICTIVE_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (FOUNDRY_PREDICTIVE_WORKERS)")
    parser.add_argument("--http-frontend", choices=("auto", "httptools", "tornado"),
                        help="HTTP/1.1 implementation (FOUNDRY_HTTP_FRONTEND, default auto)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: info")
    return parser


def main(argv=None):
    """Entry point: `argv` is a list of options, or the Namespace of `foundry-inference predictive-server`
    (whose logging is already set up)."""
    if isinstance(argv, argparse.Namespace):
        args = argv
    else:
        args = build_parser().parse_args(argv)
        from foundry_inference import logs
        logs.setup(args.log_level)
    overrides = {k: v for k, v in dict(
        model_path=getattr(args, "model_path", None), host=getattr(args, "address", None),
        port=getattr(args, "port", None), workers=getattr(args, "workers", None),
        http_frontend=getattr(args, "http_frontend", None)).items() if v is not None}
    try:
        settings = PredictiveSettings.from_env(**overrides)
        make_auth()   # validate the auth configuration before anything starts
    except (SettingsError, ValueError) as exc:
        print(f"predictive-server: {exc}", file=sys.stderr)
        return 2
    sockets = None
    if settings.workers > 1:
        import tornado.netutil
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host, backlog=2048)
        if not hasattr(os, "fork"):
            print("predictive-server: FOUNDRY_PREDICTIVE_WORKERS > 1 needs os.fork (not on Windows)", file=sys.stderr)
            return 2
        worker, exit_code = supervise(settings.workers)
        if worker is None:
            return exit_code      # the supervisor, after its workers stopped
    if os.environ.get("FOUNDRY_UVLOOP", "off").lower() in ("1", "on", "true"):
        _use_uvloop()
    return asyncio.run(serve(settings, sockets=sockets))


if __name__ == "__main__":
    sys.exit(main())
