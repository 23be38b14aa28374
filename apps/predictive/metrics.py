"""Prometheus metrics of the predictive server, in a registry of its own (one per application, so tests and
several apps in one process never collide). Label children are created once: a per-request update is a few
attribute look-ups, not a label resolution.

Beside ours, KServe's model-server histograms under their names (kserve/python/kserve/kserve/metrics.py):
`request_preprocess_seconds` (decoding the body), `request_predict_seconds` (the batch's session.run that held the
request) and `request_postprocess_seconds` (rendering the answer), label `model_name`, default buckets; they start
once the model is loaded (its name is the label).

The four histograms observed on every request are `_FastHistogram`s: prometheus_client's own takes a lock per bucket
and for the sum, ~1 us a call, a tenth of a small prediction's CPU; this one counts into plain lists (all updates
happen on the event loop thread) and exposes exactly the same samples (tests/unit/predictive/test_metrics.py)."""
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class _FastHistogram(Histogram):
    """A Histogram whose observe() is a list increment. Same name, buckets, labels and exposition (`_bucket`,
    `_count`, `_sum`, `_created`); no exemplars. Single-writer: observe from one thread."""

    def _metric_init(self):
        super()._metric_init()
        self._counts = [0] * len(self._upper_bounds)
        self._total = 0.0

    def observe(self, amount, exemplar=None):
        self._counts[bisect_left(self._upper_bounds, amount)] += 1     # the first bucket with amount <= le
        self._total += amount

    def _child_samples(self):
        samples, acc = [], 0.0
        for bound, count in zip(self._upper_bounds, list(self._counts), strict=True):
            acc += count
            samples.append(Sample("_bucket", {"le": floatToGoString(bound)}, acc, None, None))
        samples.append(Sample("_count", {}, acc, None, None))
        samples.append(Sample("_sum", {}, self._total, None, None))
        created = [s for s in super()._child_samples() if s.name == "_created"]
        return tuple(samples + created)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class PredictiveMetrics:
    def __init__(self, registry=None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("foundry_predict_requests_total", "Prediction requests answered, by HTTP status",
                                ["status"], registry=r)
        self.latency = _FastHistogram("foundry_predict_request_duration_seconds",
                                 "Time from the request's arrival to its answer", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("foundry_predict_queue_depth", "Requests waiting for a batch", registry=r)
        self.queue_capacity = Gauge("foundry_predict_queue_capacity", "Configured queue depth", registry=r)
        self.batch_size = Histogram("foundry_predict_batch_size", "Rows per session.run", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.rejected = Counter("foundry_predict_rejected_total",
                                "Requests refused with 429 because the queue was full", registry=r)
        self.dropped = Counter("foundry_predict_dropped_total",
                               "Queued requests dropped before running because their client disconnected", registry=r)
        self.load_seconds = Gauge("foundry_model_load_seconds", "Time to load and probe the model", registry=r)
        self.ready = Gauge("foundry_model_ready", "1 once the model is loaded and warmed up", registry=r)
        self._status = {}
        kserve = ["model_name"]
        self._kserve = tuple(_FastHistogram(name, doc, kserve, registry=r) for name, doc in (
            ("request_preprocess_seconds", "pre-process request latency"),
            ("request_predict_seconds", "predict request latency"),
            ("request_postprocess_seconds", "post-process request latency")))
        self.preprocess = self.predict = self.postprocess = None

    def bind_model(self, model_name):
        self.preprocess, self.predict, self.postprocess = (h.labels(model_name) for h in self._kserve)

    def observe_stages(self, preprocess_s, predict_s, postprocess_s):
        if self.preprocess is not None:
            self.preprocess.observe(preprocess_s)
            self.predict.observe(predict_s)
            self.postprocess.observe(postprocess_s)

    def observe_request(self, status, seconds):
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = self.requests.labels(str(status))
        child.inc()
        self.latency.observe(seconds)

    def bind_queue(self, batcher):
        self.queue_depth.set_function(lambda: len(batcher.queue))
        self.queue_capacity.set(batcher.depth)

    def render(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
