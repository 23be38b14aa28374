"""Prometheus metrics of the control plane: requests by method, route (the handler's class: bounded cardinality) and
status, and their latency. Served on FOUNDRY_METRICS_PORT (apps/metrics_port.py: /metrics only, no key); the chart sets
9464 and declares the port so Prometheus scrapes the pods directly."""
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

access_log = logging.getLogger("tornado.access")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControlPlaneMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("foundry_api_requests_total", "Control-plane requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("foundry_api_request_duration_seconds", "Control-plane request latency",
                                 ["route"], buckets=BUCKETS, registry=r)

    def log_request(self, handler):
        """Tornado's log_function: count the request, then log it as Tornado would."""
        status, seconds = handler.get_status(), handler.request.request_time()
        route = type(handler).__name__
        self.requests.labels(handler.request.method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        level = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
        level("%d %s %.2fms", status, handler._request_summary(), 1000.0 * seconds)

    def render(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
