"""Assemble the control plane Tornado application and run it."""
import asyncio
import logging
import signal

import tornado.web
from foundry_inference.apps.base import NotFoundHandler

from foundry_inference import logs
from foundry_inference.store.base import AsyncStore

from . import health

log = logging.getLogger("foundry_inference.controlplane")


def make_app(store, **settings):
    """`store` is a blocking ResourceStore; handlers get its async facade as settings["store"]."""
    routes = [*health.routes]
    return tornado.web.Application(routes, store=AsyncStore(store), default_handler_class=NotFoundHandler,
                                   **settings)


async def serve(store, port=8080, address="127.0.0.1", stop_event=None):
    app = make_app(store)
    server = app.listen(port, address=address, max_body_size=8 * 1024 * 1024)
    logs.event(log, "control plane listening", url=f"http://{address}:{port}", store=type(store).__name__)
    stop_event = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    await stop_event.wait()
    server.stop()
    app.settings["store"].close()
    logs.event(log, "control plane stopped")


def main(args):
    from foundry_inference.store.factory import open_store
    store = open_store(args.store, data_dir=args.data_dir, kubeconfig=args.kubeconfig)
    asyncio.run(serve(store, port=args.port, address=args.address))
    return 0
