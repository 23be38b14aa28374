"""A stand-in for vLLM's OpenAI server (vLLM itself needs a GPU and cannot run here): the routes a client and the
auth proxy use - `GET /health`, `GET /v1/models`, `POST /v1/chat/completions` (JSON, or server-sent events when
`stream` is true) - answered in vLLM's shapes, with every request's path and headers recorded."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class VllmStandIn:
    def __init__(self, model="phi-vllm"):
        self.model, self.seen = model, []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _json(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's API
                standin.seen.append(("GET", self.path, dict(self.headers)))
                if self.path == "/health":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": standin.model, "object": "model",
                                                                 "owned_by": "vllm"}]})
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                standin.seen.append(("POST", self.path, dict(self.headers)))
                if self.path != "/v1/chat/completions":
                    return self._json(404, {"detail": "Not Found"})
                words = ["Hello", " from", " vLLM"]
                if not body.get("stream"):
                    return self._json(200, {"id": "cmpl-1", "object": "chat.completion", "created": 0,
                                            "model": standin.model, "choices": [{
                                                "index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "".join(words)}}],
                                            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i, word in enumerate(words + [None]):
                    delta = {"content": word} if word else {}
                    chunk = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 0, "model": standin.model,
                             "choices": [{"index": 0, "delta": delta, "finish_reason": None if word else "stop"}]}
                    self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                    time.sleep(0.05 * (i < len(words)))
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _chunk(self, data):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
