"""The operator's probe endpoints, for the chart's liveness and readiness probes (port FOUNDRY_OPERATOR_HEALTH_PORT,
default 8081; 0 turns them off).

- `GET /healthz`: 200 while the polling loop is turning: a pass was attempted (succeeded or failed) within the stall
  limit. 503 when the loop is stuck (a hung call, a dead thread): the kubelet then restarts the operator.
- `GET /readyz`: 200 once the last pass succeeded; 503 with the reason while passes fail (e.g. the apiserver is
  unreachable). A failing pass does not fail liveness: the loop is retrying, a restart would not help.
Bodies are JSON: {"status", "lastPassAgoSeconds", "passes", "error"}.
- `GET /metrics`: the operator's Prometheus metrics (metrics.py). The probe port has no Service and asks for no key;
  the chart's prometheus.io annotations (and optional ServiceMonitor) point scrapers at it.
"""
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from foundry_inference import logs

log = logging.getLogger("foundry_inference.operator.health")

DEFAULT_PORT = 8081
MIN_STALL_S = 120.0


def stall_limit(settings):
    """How long the loop may go without attempting a pass: ten poll intervals, the longest retry backoff, and never
    under two minutes (a pass over many deployments on a slow apiserver takes a while)."""
    return max(MIN_STALL_S, 10 * settings.pollIntervalSeconds, 2 * min(30.0, settings.backoffMaxSeconds))


def probe(operator, stall_s, now=None):
    """(liveness status, readiness status, body) for the operator's current state."""
    now = time.monotonic() if now is None else now
    last = operator.last_attempt_at or operator.started_at
    body = {"passes": operator.passes, "lastPassAgoSeconds": round(now - last, 3) if last else None,
            "error": operator.last_error}
    alive = last is not None and now - last < stall_s
    ready = alive and operator.passes > 0 and operator.last_error is None
    if not alive:
        body["error"] = f"no reconcile pass attempted for {now - (last or now):.0f} s (limit {stall_s:.0f} s)"
    return (200 if alive else 503), (200 if ready else 503), body


class _Handler(BaseHTTPRequestHandler):
    server_version = "foundry-operator"

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            payload, content_type = self.server.operator.metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        live, ready, body = probe(self.server.operator, self.server.stall_s)
        if path == "/healthz":
            status, word = live, ("healthy" if live == 200 else "stalled")
        elif path == "/readyz":
            status, word = ready, ("ready" if ready == 200 else "not ready")
        else:
            status, word, body = 404, "not found", {"error": "only /healthz, /readyz and /metrics are served here"}
        data = json.dumps({"status": word, **body}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args):     # probes every few seconds: not worth a log line each
        pass


class HealthServer:
    def __init__(self, operator, port=DEFAULT_PORT, address="0.0.0.0", stall_s=None):  # noqa: S104 - probe port
        self.httpd = ThreadingHTTPServer((address, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.operator = operator
        self.httpd.stall_s = stall_s if stall_s is not None else stall_limit(operator.settings)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="operator-health", daemon=True)

    def start(self):
        self._thread.start()
        logs.event(log, "operator probes listening", port=self.port, stall_limit_s=self.httpd.stall_s)
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
