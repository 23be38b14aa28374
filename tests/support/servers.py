"""Run a Tornado application on a loopback port in a background thread, for tests that use a real HTTP client."""
import asyncio
import threading

from tests.support.procs import free_port


class ThreadedServer:
    def __init__(self, make_app):
        """`make_app()` is called on the server's own event loop (Tornado apps bind to the loop they start on)."""
        self.make_app = make_app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.run(self._main())

    async def _main(self):
        try:
            self.loop = asyncio.get_running_loop()
            self.app = self.make_app()
            self.server = self.app.listen(self.port, address="127.0.0.1", max_body_size=64 * 1024 * 1024)
            self._stop = asyncio.Event()
        except Exception as exc:  # noqa: BLE001 - surfaced to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        self.server.stop()
        for stop in self.app.settings.get("on_stop") or ():
            stop()

    def start(self):
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def stop(self):
        if getattr(self, "loop", None) and getattr(self, "_stop", None):
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
