"""`make_app(service)` and the `foundry-inference chat-server` entry point.

The process listens first (so /health answers while the model loads), loads and warms the model off the event loop,
then /ready turns 200. A model that cannot be loaded stops the process with status 1 and a clear log line (the pod
restarts and `kubectl logs` says why); a bad setting exits 2 before anything starts. SIGTERM stops accepting, closes
the open connections (their generations are cancelled), stops the engine and exits 0.
"""
import argparse
import asyncio
import logging
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web

from foundry_inference.apps.chat.completions import CompletionsHandler
from foundry_inference.apps.chat.embeddings_api import EmbeddingsHandler
from foundry_inference.apps.chat.handlers import ChatNotFound, routes
from foundry_inference.apps.chat.service import ChatService
from foundry_inference.apps.chat.settings import ChatSettings, SettingsError
from foundry_inference.apps.lifecycle import close_tornado_server, serve_loaded, stop_on_signals
from foundry_inference.apps.metrics_port import listen_metrics

log = logging.getLogger("foundry_inference.chat")

SHUTDOWN_GRACE_S = 10.0


def _log_request(handler):
    """Access logs belong to the nginx sidecar; the app logs server errors only."""
    if handler.get_status() >= 500:
        log.error("%d %s %.2fms", handler.get_status(), handler._request_summary(),
                  1000.0 * handler.request.request_time())


def make_auth(auth=None):
    if auth is not None:
        return auth
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    return AuthService.from_settings(AuthSettings.from_env())


def make_app(service, *, auth=None):
    all_routes = routes + [(r"/v1/completions", CompletionsHandler), (r"/v1/embeddings", EmbeddingsHandler)]
    return tornado.web.Application(all_routes, chat=service, auth=make_auth(auth), default_handler_class=ChatNotFound,
                                   log_function=_log_request, compress_response=False, xsrf_cookies=False)


def listen(app, settings, sockets=None):
    # Tornado answers bodies over max_body_size with a bare 400; twice the larger limit leaves the 413 with the
    # OpenAI envelope to the handlers.
    limit = 2 * max(settings.max_body_bytes, settings.max_audio_bytes)
    server = tornado.httpserver.HTTPServer(app, max_body_size=limit,
                                           idle_connection_timeout=settings.keep_alive_timeout_s)
    sockets = sockets or tornado.netutil.bind_sockets(settings.port, settings.host, backlog=1024)
    server.add_sockets(sockets)
    return server, [s.getsockname()[:2] for s in sockets]


async def serve(settings, *, auth=None, service=None, started=None, stop=None):
    """Run the server until `stop` (an asyncio.Event) is set or SIGTERM/SIGINT arrives. Returns the exit status."""
    service = service or ChatService(settings)
    app = make_app(service, auth=auth)
    server, addresses = listen(app, settings)
    log.info("chat server listening on %s, loading %s", addresses, settings.model_path)
    servers = [server]
    if settings.metrics_port:
        metrics_server, metrics_addresses = listen_metrics(service.metrics.render, settings.metrics_host,
                                                           settings.metrics_port)
        servers.append(metrics_server)
        service.metrics_addresses = metrics_addresses
    stop = stop_on_signals(stop)
    if started is not None:
        started(addresses)

    async def close():
        for s in servers:
            await close_tornado_server(s, SHUTDOWN_GRACE_S)
    return await serve_loaded(service, stop, close, log)


def build_parser():
    parser = argparse.ArgumentParser(prog="foundry-inference chat-server",
                                     description="Serve one generative or transcription model, OpenAI-compatible "
                                                 "(settings from FOUNDRY_* environment variables)")
    parser.add_argument("--model-path", help="model folder (FOUNDRY_MODEL_PATH)")
    parser.add_argument("--address", "--host", dest="address", help="listen address (FOUNDRY_CHAT_HOST)")
    parser.add_argument("--port", type=int, help="listen port (FOUNDRY_CHAT_PORT or PORT, default 5000)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: info")
    return parser


def main(args=None):
    """Entry point: `args` is the Namespace of `foundry-inference chat-server` (optional .port, .address), or a list
    of options when run on its own."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
        from foundry_inference import logs
        logs.setup(args.log_level)
    overrides = dict(model_path=getattr(args, "model_path", None), host=getattr(args, "address", None),
                     port=getattr(args, "port", None))
    try:
        settings = ChatSettings.from_env(**overrides)
        make_auth()          # a bad auth configuration stops the server before anything starts
    except (SettingsError, ValueError) as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
