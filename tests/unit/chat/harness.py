"""A real chat server on a loopback port for tests: `serve()` in a background thread with its own event loop.

    with ChatServer(model_folder) as server:
        requests.post(server.url("/v1/chat/completions"), json=body)

`server.service` is the ChatService (its engine, metrics); `server.app` the Tornado application.
"""
import contextlib

from foundry_inference.apps.chat import server as server_module
from foundry_inference.apps.chat.service import ChatService
from foundry_inference.apps.chat.settings import ChatSettings
from tests.support.inprocess import InProcessServer, no_auth


def key_auth(keys_dir):
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    return AuthService.from_settings(AuthSettings(mode="api-key", api_keys_dir=str(keys_dir)))


class ChatServer(InProcessServer):
    name = "chat-test-server"
    server_module = server_module

    def __init__(self, model_path, *, auth=None, env=None, **overrides):
        env = {"FOUNDRY_MODEL_PATH": model_path, "FOUNDRY_CHAT_HOST": "127.0.0.1", "FOUNDRY_CHAT_PORT": "0",
               **(env or {})}
        super().__init__(ChatSettings.from_env(env, **overrides), auth)
        self.app = None

    def make_service(self):
        return ChatService(self.settings)

    @contextlib.contextmanager
    def starting(self):
        """Capture the Tornado application serve() builds, as `self.app`."""
        original = server_module.make_app

        def capture(service, *, auth=None):
            self.app = original(service, auth=auth)
            return self.app
        server_module.make_app = capture
        try:
            yield
        finally:
            server_module.make_app = original


__all__ = ["ChatServer", "key_auth", "no_auth"]
