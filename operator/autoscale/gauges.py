"""Each replica's load, read from its keyless Prometheus endpoint: the requests in flight or queued, and a count of
requests answered (to tell "idle" from "busy but quick").

- chat / transcription server: foundry_chat_running_sequences + foundry_chat_waiting_sequences, answered =
  foundry_chat_requests_total;
- predictive server: foundry_predict_queue_depth (requests waiting for a batch), answered =
  foundry_predict_requests_total.
A replica that does not answer, or answers without one of these gauges, is missing data (None).
"""
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

CONCURRENCY = ("foundry_chat_running_sequences", "foundry_chat_waiting_sequences", "foundry_predict_queue_depth")
ANSWERED = ("foundry_chat_requests", "foundry_predict_requests")     # counters, without the _total suffix
MAX_BYTES = 4 << 20


def parse(text):
    """(concurrency, answered) from an exposition text; (None, None) when it carries no concurrency gauge."""
    concurrency = answered = None
    for family in text_string_to_metric_families(text):
        if family.name in CONCURRENCY:
            concurrency = (concurrency or 0.0) + sum(s.value for s in family.samples)
        elif family.name in ANSWERED:
            answered = (answered or 0.0) + sum(s.value for s in family.samples if s.name.endswith("_total"))
    return concurrency, answered


def read(url, timeout=1.0):
    """(concurrency, answered) of one replica, (None, None) on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a loopback URL the agent made
            text = resp.read(MAX_BYTES).decode("utf-8", "replace")
        return parse(text)
    except (urllib.error.URLError, OSError, ValueError):
        return None, None
