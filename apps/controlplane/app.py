"""Assemble the control plane Tornado application and run it."""
import asyncio
import json
import logging

import tornado.web

from foundry_inference import logs
from foundry_inference.apps.base import NotFoundHandler
from foundry_inference.apps.fasthttp import HttpToolsServer
from foundry_inference.apps.lifecycle import close_tornado_server, stop_on_signals
from foundry_inference.apps.metrics_port import listen_metrics
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.store.base import AsyncStore
from foundry_inference.store.factory import with_read_cache

from . import health, keys, models, openapi, workloads
from .metrics import ControlPlaneMetrics
from .settings import ControlPlaneSettings

log = logging.getLogger("foundry_inference.controlplane")
CACHED_KINDS = ("ModelDeployment", "InferenceService")


def control_plane_auth(**overrides):
    """The control plane's AuthService from FOUNDRY_AUTH_* settings (plane: control)."""
    return AuthService.from_settings(AuthSettings.from_env(plane="control", **overrides))


def make_app(store, config=None, auth=None, **settings):
    """`store` is a blocking ResourceStore; handlers get its async facade as settings["store"]. A store that can
    watch (Kubernetes) is wrapped in a watch-fed read cache for single deployment/InferenceService GETs."""
    config = config or ControlPlaneSettings.from_env()
    if config.read_cache:
        store = with_read_cache(store, CACHED_KINDS, config.watch_namespaces)
    async_store = AsyncStore(store)
    routes = [*health.routes, *openapi.routes(), *models.routes, *keys.routes, *workloads.routes()]
    cache = models.CatalogCache(async_store, config.operator_namespace, config.catalog_configmap,
                                ttl=config.catalog_cache_s)
    # on_stop: background work to end when the app stops serving, even where the store outlives it (tests)
    on_stop = [store.stop_background]
    metrics = ControlPlaneMetrics()
    settings.setdefault("log_function", metrics.log_request)
    return tornado.web.Application(routes, store=async_store, config=config, auth=auth or control_plane_auth(),
                                   catalog_cache=cache, default_handler_class=NotFoundHandler, on_stop=on_stop,
                                   metrics=metrics, **settings)


def _error_body(status, message):
    kind = {413: "PayloadTooLarge", 431: "RequestHeaderFieldsTooLarge"}.get(status, "BadRequest")
    return json.dumps({"error": kind, "message": message, "details": {}}).encode()


async def serve(app, port=8080, address="127.0.0.1", stop_event=None):
    """Serve `app` on the httptools front end (apps/fasthttp.py); bodies over the configured limit get a 413 in the
    control-plane envelope before they are buffered."""
    server = HttpToolsServer(app, max_body_bytes=app.settings["config"].max_body_bytes, error_body=_error_body)
    await server.listen(port, address)
    logs.event(log, "control plane listening", url=f"http://{address}:{port}",
               store=type(app.settings["store"].store).__name__)
    metrics_server = None
    if app.settings["config"].metrics_port:
        metrics_server, _ = listen_metrics(app.settings["metrics"].render, "0.0.0.0",  # noqa: S104 - /metrics only
                                           app.settings["config"].metrics_port)
    stop_event = stop_on_signals(stop_event)
    await stop_event.wait()
    await server.shutdown()
    if metrics_server is not None:
        await close_tornado_server(metrics_server, 5.0)
    app.settings["store"].close()
    logs.event(log, "control plane stopped")


def main(args):
    from foundry_inference.store.factory import open_store
    store = open_store(args.store, data_dir=args.data_dir, kubeconfig=args.kubeconfig)
    app = make_app(store)
    asyncio.run(serve(app, port=args.port, address=args.address))
    return 0
