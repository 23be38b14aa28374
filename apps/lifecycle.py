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
