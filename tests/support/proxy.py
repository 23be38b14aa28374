"""A loopback HTTP reverse proxy in front of a real server (the test registry), for tests that must see what the
fetcher asks for: it forwards every request over real HTTP, records (method, path, Range header, status), and can
slow responses down (`delay` seconds per `chunk` bytes) so that a test can kill a fetcher mid-download.

    with CountingProxy(registry.address) as proxy:
        fetch(... {"registry": proxy.address, ...})
        proxy.blob_gets()          # [(path, range header or None, status), ...]
"""
import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade"}


class CountingProxy:
    def __init__(self, upstream, delay=0.0, chunk=64 << 10):
        self.upstream = upstream                      # "host:port"
        self.delay, self.chunk = delay, chunk
        self.requests = []                            # (method, path, range, status)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    with proxy._lock:
                        proxy.requests.append((self.command, self.path, self.headers.get("Range"), resp.status))
                    data_length = resp.getheader("Content-Length")
                    self.send_response(resp.status)
                    for key, value in resp.getheaders():
                        if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                            self.send_header(key, value)
                    payload = None
                    if data_length is None:                 # stream of unknown length: read it whole
                        payload = resp.read()
                        data_length = str(len(payload))
                    self.send_header("Content-Length", data_length)
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if payload is not None:
                        self.wfile.write(payload)
                        return
                    while True:
                        part = resp.read(proxy.chunk)
                        if not part:
                            break
                        self.wfile.write(part)
                        self.wfile.flush()
                        if proxy.delay and "/blobs/" in self.path:
                            time.sleep(proxy.delay)
                except (ConnectionError, BrokenPipeError):
                    self.close_connection = True
                finally:
                    conn.close()

            do_GET = do_HEAD = _forward  # noqa: N815 - http.server's API

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def blob_gets(self):
        with self._lock:
            return [(path, rng, status) for method, path, rng, status in self.requests
                    if method == "GET" and "/blobs/" in path]

    def clear(self):
        with self._lock:
            self.requests.clear()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
