"""Process lifecycle shared by the servers: SIGTERM/SIGINT end the serve loop through one asyncio.Event."""
import asyncio
import signal


def stop_on_signals(stop=None):
    """`stop` (or a new Event), set by SIGTERM or SIGINT. Where signal handlers cannot be installed (Windows, or a
    loop outside the main thread, as in tests) the caller's own `stop` is the only way out."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return stop


async def serve_loaded(service, stop, close_server, log):
    """The shared middle of a model server's life: load the model while already listening (so /health answers),
    then serve until `stop` is set. A model that cannot be loaded ends the process with status 1 and its reason in
    the log (the pod restarts and `kubectl logs` says why). `close_server()` is a coroutine function that stops
    accepting and drains the open connections. Returns the exit status."""
    try:
        await service.load_async()
    except Exception as exc:  # noqa: BLE001 - any load failure ends the process with its reason
        log.error("cannot serve the model: %s", exc)
        await close_server()
        return 1
    log.info("ready: %s", service.model_id)
    await stop.wait()
    log.info("shutting down")
    await close_server()
    await service.close()
    return 0


async def close_tornado_server(server, grace_s):
    """Stop a tornado HTTPServer accepting and close its connections, waiting at most `grace_s`."""
    server.stop()
    try:
        await asyncio.wait_for(server.close_all_connections(), grace_s)
    except asyncio.TimeoutError:
        pass
