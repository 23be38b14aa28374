"""A stand-in model server for the node agent's tests: run as a file (`python stub_server.py`), configured from the
environment exactly like the real servers (PORT, FOUNDRY_PREDICTIVE_HOST, FOUNDRY_MODEL_PATH, FOUNDRY_API_KEYS_DIR,
FOUNDRY_AUTH_MODE). /health and /ready are public; anything else needs one of the keys in the keys directory
(re-read on every request, like the auth middleware's reload), as `Authorization: Bearer <key>` or `api-key`."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _keys():
    directory = os.environ.get("FOUNDRY_API_KEYS_DIR") or ""
    found = set()
    for name in ("primary-key", "secondary-key"):
        try:
            with open(os.path.join(directory, name)) as fh:
                value = fh.read().strip()
        except OSError:
            continue
        if value:
            found.add(value)
    return found


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's API
        if self.path in ("/health", "/ready"):
            return self._send(200, {"status": "ok"})
        if os.environ.get("FOUNDRY_AUTH_MODE") != "none":
            auth = self.headers.get("Authorization") or ""
            key = auth[7:] if auth.startswith("Bearer ") else self.headers.get("api-key")
            if not key or key not in _keys():
                return self._send(401, {"detail": "invalid or missing API key", "code": "invalid_api_key"})
        model = os.environ.get("FOUNDRY_MODEL_PATH") or ""
        files = sorted(os.listdir(model)) if os.path.isdir(model) else []
        return self._send(200, {"path": self.path, "model_files": files, "pid": os.getpid(),
                                "model_id": os.environ.get("FOUNDRY_MODEL_ID")})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    host = os.environ.get("FOUNDRY_PREDICTIVE_HOST") or os.environ.get("FOUNDRY_CHAT_HOST") or "127.0.0.1"
    ThreadingHTTPServer((host, int(os.environ["PORT"])), Handler).serve_forever()
