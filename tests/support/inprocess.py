"""A data-plane server's real `serve()` on a loopback port, in a background thread with its own event loop; the
chat and predictive test harnesses are this with their own settings and service."""
import asyncio
import concurrent.futures
import contextlib
import threading


def no_auth():
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    return AuthService.from_settings(AuthSettings(mode="none"))


class InProcessServer:
    name = "test-server"
    server_module = None          # the module whose serve(settings, auth=, started=, stop=, service=) runs

    def __init__(self, settings, auth=None):
        self.settings = settings
        self.auth = auth or no_auth()
        self.address = None
        self.service = None
        self._loop = None
        self._stop = None
        self._thread = None
        self._ready = threading.Event()
        self.exit_code = None
        self.error = None

    def make_service(self):
        raise NotImplementedError

    def starting(self):
        """A context held while serve() starts (e.g. to capture the app it builds)."""
        return contextlib.nullcontext()

    @property
    def base(self):
        return f"http://{self.address[0]}:{self.address[1]}"

    def url(self, path):
        return self.base + path

    def start(self, timeout=120):
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the {self.name} did not become ready")
        if self.error is not None:
            raise self.error
        if not self.service.ready:
            self.stop()
            raise RuntimeError(f"the model did not load: {self.service.load_error}")
        return self

    def _run(self):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.service = self.make_service()
            with self.starting():
                task = asyncio.ensure_future(self.server_module.serve(
                    self.settings, auth=self.auth, started=self._on_started, stop=self._stop, service=self.service))
                while not task.done() and not self.service.ready:
                    await asyncio.sleep(0.01)
            self._ready.set()
            self.exit_code = await task
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test thread
            self.error = exc
        finally:
            self._ready.set()

    def _on_started(self, addresses):
        self.address = addresses[0]

    def call(self, fn, *args):
        """Run `fn(*args)` on the server's event loop and return its result (engine state is loop-owned)."""
        future = concurrent.futures.Future()

        def run():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)
        self._loop.call_soon_threadsafe(run)
        return future.result(30)

    def stop(self):
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
