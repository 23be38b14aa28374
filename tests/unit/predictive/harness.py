"""A real predictive server on a loopback port for tests: `serve()` in a background thread with its own event loop.

    with PredictiveServer(model_path, frontend="httptools") as server:
        requests.post(server.url("/v1/predict"), json=body)

The service object is reachable as `server.service` (to slow the model down, read metrics, ...).
"""
import asyncio
import base64
import json
import threading

import numpy as np

from foundry_inference.apps.predictive import server as server_module
from foundry_inference.apps.predictive.service import PredictiveService
from foundry_inference.apps.predictive.settings import PredictiveSettings


def no_auth():
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    return AuthService.from_settings(AuthSettings(mode="none"))


def body_for(array, content_type="application/json"):
    """A /v1/predict body for a tensor (JSON array) or raw image bytes."""
    if isinstance(array, (bytes, bytearray)):
        data = bytes(array)
    else:
        data = json.dumps(np.asarray(array).tolist()).encode()
    return {"items": [{"content_type": content_type, "encoder": "base64", "data": base64.b64encode(data).decode()}]}


def outputs_of(response_json):
    """The decoded output object of a /v1/predict answer."""
    return json.loads(base64.b64decode(response_json["items"][0]["data"]))


class PredictiveServer:
    def __init__(self, model_path, *, frontend="httptools", auth=None, env=None, **overrides):
        env = {"FOUNDRY_MODEL_PATH": model_path, "FOUNDRY_PREDICTIVE_HOST": "127.0.0.1",
               "FOUNDRY_PREDICTIVE_PORT": "0", "FOUNDRY_HTTP_FRONTEND": frontend, **(env or {})}
        self.settings = PredictiveSettings.from_env(env, **overrides)
        self.auth = auth or no_auth()
        self.address = None
        self.service = None
        self._loop = None
        self._stop = None
        self._thread = None
        self._started = threading.Event()
        self._ready = threading.Event()
        self.exit_code = None
        self.error = None

    def url(self, path):
        return f"http://{self.address[0]}:{self.address[1]}{path}"

    def start(self, timeout=60):
        self._thread = threading.Thread(target=self._run, name="predictive-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the predictive server did not become ready")
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
            self.service = PredictiveService(self.settings)
            task = asyncio.ensure_future(server_module.serve(
                self.settings, auth=self.auth, started=self._on_started, stop=self._stop, service=self.service))
            while not task.done() and not self.service.ready:
                await asyncio.sleep(0.01)
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

    def stop(self):
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
