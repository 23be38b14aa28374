"""A real chat server on a loopback port for tests: `serve()` in a background thread with its own event loop.

    with ChatServer(model_folder) as server:
        requests.post(server.url("/v1/chat/completions"), json=body)

`server.service` is the ChatService (its engine, metrics); `server.app` the Tornado application.
"""
import asyncio
import threading

from foundry_inference.apps.chat import server as server_module
from foundry_inference.apps.chat.service import ChatService
from foundry_inference.apps.chat.settings import ChatSettings


def no_auth():
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    return AuthService.from_settings(AuthSettings(mode="none"))


def key_auth(keys_dir):
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    return AuthService.from_settings(AuthSettings(mode="api-key", api_keys_dir=str(keys_dir)))


class ChatServer:
    def __init__(self, model_path, *, auth=None, env=None, **overrides):
        env = {"FOUNDRY_MODEL_PATH": model_path, "FOUNDRY_CHAT_HOST": "127.0.0.1", "FOUNDRY_CHAT_PORT": "0",
               **(env or {})}
        self.settings = ChatSettings.from_env(env, **overrides)
        self.auth = auth or no_auth()
        self.address = None
        self.service = None
        self.app = None
        self._loop = None
        self._stop = None
        self._thread = None
        self._ready = threading.Event()
        self.exit_code = None
        self.error = None

    @property
    def base(self):
        return f"http://{self.address[0]}:{self.address[1]}"

    def url(self, path):
        return self.base + path

    def start(self, timeout=120):
        self._thread = threading.Thread(target=self._run, name="chat-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the chat server did not become ready")
        if self.error is not None:
            raise self.error
        if not self.service.ready:
            self.stop()
            raise RuntimeError(f"the model did not load: {self.service.load_error}")
        return self

    def _run(self):
        original = server_module.make_app

        def capture(service, *, auth=None):
            self.app = original(service, auth=auth)
            return self.app

        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.service = ChatService(self.settings)
            server_module.make_app = capture
            try:
                task = asyncio.ensure_future(server_module.serve(
                    self.settings, auth=self.auth, started=self._on_started, stop=self._stop,
                    service=self.service))
                while not task.done() and not self.service.ready:
                    await asyncio.sleep(0.01)
            finally:
                server_module.make_app = original
            self._ready.set()
            self.exit_code = await task
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            self._ready.set()

    def _on_started(self, addresses):
        self.address = addresses[0]

    def call(self, fn, *args):
        """Run `fn(*args)` on the server's event loop and return its result (engine state is loop-owned)."""
        import concurrent.futures
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
