"""The metrics listener: `GET /metrics` alone, on a port of its own, without authentication.

In a pod the model server listens on 127.0.0.1 behind the nginx TLS sidecar, which asks for a data-plane key; a
Prometheus server scraping through it would need one. This listener binds the pod's address on a separate port
(FOUNDRY_METRICS_PORT; the operator sets 9464), which the pod declares but neither the Service nor the Ingress
routes to, so scraping never needs a key and the port is reachable only pod-to-pod (NetworkPolicy can narrow it to
the monitoring namespace). It serves nothing else: every other path is a 404, every other method a 405, and the
metrics hold no request content (counts, timings, the model name).
"""
import logging

import tornado.httpserver
import tornado.netutil
import tornado.web

log = logging.getLogger("foundry_inference.metrics")


class _Metrics(tornado.web.RequestHandler):
    def get(self):
        payload, content_type = self.settings["render"]()
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(payload)

    def compute_etag(self):
        return None


class _NotFound(tornado.web.RequestHandler):
    def prepare(self):
        self.set_status(404)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("only /metrics is served on this port\n")


def _quiet(handler):
    if handler.get_status() >= 500:
        log.error("%d %s", handler.get_status(), handler._request_summary())


def listen_metrics(render, host, port, *, reuse_port=False):
    """Serve `render() -> (bytes, content type)` at /metrics on host:port. Returns (server, [(host, port)])."""
    app = tornado.web.Application([(r"/metrics", _Metrics)], render=render, default_handler_class=_NotFound,
                                  log_function=_quiet, compress_response=False)
    server = tornado.httpserver.HTTPServer(app, max_body_size=64 * 1024, idle_connection_timeout=30)
    sockets = tornado.netutil.bind_sockets(port, host, backlog=128, reuse_port=reuse_port)
    server.add_sockets(sockets)
    addresses = [s.getsockname()[:2] for s in sockets]
    log.info("metrics listening on %s (no authentication; /metrics only)", addresses)
    return server, addresses
