"""The predictive server's per-request histograms (a lock-free prometheus_client Histogram) expose exactly what
prometheus_client's own Histogram exposes for the same observations."""
import re

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from foundry_inference.apps.predictive.metrics import LATENCY_BUCKETS, PredictiveMetrics, _FastHistogram

pytestmark = pytest.mark.unit

VALUES = [0.0, 0.0004, 0.0005, 0.00051, 0.003, 0.01, 0.7, 2.5, 9.99, 10.0, 11.0, 1e9]


def _exposition(cls, labelled):
    registry = CollectorRegistry()
    if labelled:
        histogram = cls("request_predict_seconds", "predict request latency", ["model_name"], registry=registry)
        child = histogram.labels("iris")
    else:
        child = cls("foundry_predict_request_duration_seconds", "Time", buckets=LATENCY_BUCKETS, registry=registry)
    for value in VALUES:
        child.observe(value)
    # the _created timestamps differ by the microseconds between the two objects' creation
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


@pytest.mark.parametrize("labelled", [False, True])
def test_fast_histogram_exposes_what_prometheus_client_exposes(labelled):
    fast, stock = _exposition(_FastHistogram, labelled), _exposition(Histogram, labelled)
    assert fast == stock
    assert "_bucket{" in fast and "_created" in fast and "_count" in fast


def test_requests_and_stages_are_counted():
    metrics = PredictiveMetrics()
    metrics.bind_model("iris")
    for _ in range(3):
        metrics.observe_request(200, 0.002)
        metrics.observe_stages(0.0001, 0.0005, 0.00002)
    text = metrics.render()[0].decode()
    assert 'foundry_predict_requests_total{status="200"} 3.0' in text
    assert 'foundry_predict_request_duration_seconds_bucket{le="0.002"} 3.0' in text
    assert 'foundry_predict_request_duration_seconds_bucket{le="0.001"} 0.0' in text
    for stage in ("preprocess", "predict", "postprocess"):
        assert f'request_{stage}_seconds_count{{model_name="iris"}} 3.0' in text
