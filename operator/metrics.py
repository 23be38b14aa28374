"""Prometheus metrics of the operator, served at /metrics on its probe port (health.py; no key, no Service in front):
reconcile passes, their duration, what each pass saw and did, and failures."""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OperatorMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.passes = Counter("foundry_operator_passes_total", "Reconcile passes completed", registry=r)
        self.pass_errors = Counter("foundry_operator_pass_errors_total", "Reconcile passes that failed as a whole",
                                   registry=r)
        self.seconds = Histogram("foundry_operator_pass_duration_seconds", "Duration of a reconcile pass",
                                 buckets=PASS_BUCKETS, registry=r)
        self.owners = Gauge("foundry_operator_deployments", "ModelDeployments and InferenceServices seen by the last "
                                                            "pass", registry=r)
        self.models = Gauge("foundry_operator_models", "Model resources seen by the last pass", registry=r)
        self.failed = Counter("foundry_operator_reconcile_failures_total", "Objects whose reconcile failed (retried "
                                                                           "with backoff)", registry=r)
        self.writes = Counter("foundry_operator_writes_total", "Writes to the API server", ["what"], registry=r)

    def observe_pass(self, report):
        self.passes.inc()
        self.seconds.observe(report.seconds)
        self.owners.set(report.owners)
        self.models.set(report.models)
        self.failed.inc(report.failed)
        self.writes.labels("status").inc(report.status_writes)
        self.writes.labels("child").inc(report.child_writes)

    def render(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
