"""A loopback OTLP/HTTP trace receiver: accepts `POST /v1/traces` (protobuf ExportTraceServiceRequest, optionally
gzip) the way a collector does and decodes every span with opentelemetry-proto, for tests to assert on.

    with OtlpReceiver() as otlp:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = otlp.endpoint
        ...
        spans = otlp.wait_for(lambda spans: len(spans) >= 4)
"""
import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append({"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                  "parent_span_id": span.parent_span_id.hex(), "kind": span.kind,
                                  "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                                  "attributes": {a.key: _value(a.value) for a in span.attributes},
                                  "resource": resource})
        with self.server.lock:
            self.server.spans.extend(spans)
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args):
        pass


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.spans = []
        self.httpd.lock = threading.Lock()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def spans(self):
        with self.httpd.lock:
            return list(self.httpd.spans)

    def wait_for(self, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans
            if predicate(spans):
                return spans
            time.sleep(0.05)
        raise AssertionError(f"the expected spans never arrived; got {self.spans}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
