"""The predictive server (port 8000): one ONNX model behind `/v1/predict`, with dynamic batching and backpressure.

Modules: settings (environment), engine (onnxruntime session + tensor metadata), decoding (the `items` payload and
images), batcher (coalescing concurrent requests into one session.run), metrics (Prometheus), handlers (the routes),
server (make_app and main); the httptools HTTP/1.1 front end is shared: apps/fasthttp.py.
"""
