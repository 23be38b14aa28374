"""A real predictive server on a loopback port for tests: `serve()` in a background thread with its own event loop.

    with PredictiveServer(model_path, frontend="httptools") as server:
        requests.post(server.url("/v1/predict"), json=body)

The service object is reachable as `server.service` (to slow the model down, read metrics, ...).
"""
import base64
import json

import numpy as np

from foundry_inference.apps.predictive import server as server_module
from foundry_inference.apps.predictive.service import PredictiveService
from foundry_inference.apps.predictive.settings import PredictiveSettings
from tests.support.inprocess import InProcessServer, no_auth


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


class PredictiveServer(InProcessServer):
    name = "predictive-test-server"
    server_module = server_module

    def __init__(self, model_path, *, frontend="httptools", auth=None, env=None, **overrides):
        env = {"FOUNDRY_MODEL_PATH": model_path, "FOUNDRY_PREDICTIVE_HOST": "127.0.0.1",
               "FOUNDRY_PREDICTIVE_PORT": "0", "FOUNDRY_HTTP_FRONTEND": frontend, **(env or {})}
        super().__init__(PredictiveSettings.from_env(env, **overrides), auth)

    def make_service(self):
        return PredictiveService(self.settings)

    def start(self, timeout=60):
        return super().start(timeout)


__all__ = ["PredictiveServer", "body_for", "no_auth", "outputs_of"]
