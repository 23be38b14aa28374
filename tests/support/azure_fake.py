"""A loopback fake of the three Azure services a Foundry catalog model needs. It STANDS IN FOR THE CLOUD SERVICES
(api.azureml.ms, Azure Blob Storage, ai.azure.com), which cannot be reached from a test machine; it is written from
the public protocol (docs/catalog.md, operator/azureml.py's docstring), not from our client:

- registry gateway: GET /registry/<region>/modelregistry/v1.0/registry/models/nonazureaccount?assetId=<URI>
  -> {"blobSasUri": "http://127.0.0.1:<port>/blob/<container>?sv=...&sig=...", "modelEntity": {"description"}};
  400 without `User-Agent: AzureAiStudio` or with an Authorization header; 404 for an unknown asset.
- blob container: GET /blob/<container>?restype=container&comp=list&<sas>[&marker=] -> EnumerationResults XML with
  Name / Content-Length / Etag and NextMarker paging; GET /blob/<container>/<name>?<sas> with `Range: bytes=a-b`
  -> 206 + Content-Range + ETag; `If-Match` on another ETag -> 412; a wrong or missing SAS signature -> 403.
- catalog: POST /catalog/<region>/entities/crossRegion -> {"indexEntitiesResponse": {"value": [...],
  "continuationToken"?}} pages of `page_size` entities (point FOUNDRY_AZURE_CATALOG_URL at /catalog/{region}).

It misbehaves on demand (attributes): `failing_regions` answer 503; `throttle` blob GETs answer 429 with
Retry-After; `truncate` blob GETs send a short body; `change_etag_after` = (name, n): after n range requests of that
blob its content and ETag change; `page_size` of the listing; `delay` seconds per range request (to kill a fetcher
mid-download, or to watch a slow download); `extra_blobs` listed with any name (`../escape`); `listed_sizes`
{name: size} listed instead of a blob's real size (a size check that must fail).

`host` (default loopback) and `tls` (an ssl.SSLContext for the server side: https, the handshake in each request's
thread) let a cluster test serve it inside the cluster's network namespace, as the private endpoint it stands in for.

    with AzureFake() as fake:
        uri = fake.add_model("Phi-x-cpu", "1", {"v1/genai_config.json": b"...", ...})
        env = fake.env()        # FOUNDRY_AZUREML_REGISTRY_URL, FOUNDRY_AZURE_CATALOG_URL, allow-list, insecure
"""
import hashlib
import json
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):      # a client gone mid-answer (a killed fetcher): quiet
            super().handle_error(request, client_address)


class _TLSServer(_Server):
    """https: each connection's handshake happens in its own request thread (a slow client holds up no other)."""

    def finish_request(self, request, client_address):
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()


class Container:
    def __init__(self, files):
        self.files = dict(files)
        self.etags = {name: self._etag(data) for name, data in self.files.items()}
        self.extra = []          # (name, size) listed without content

    @staticmethod
    def _etag(data):
        return '"0x8D' + hashlib.sha256(data).hexdigest()[:12].upper() + '"'

    def change(self, name):
        self.files[name] = bytes(reversed(self.files[name]))
        self.etags[name] = self._etag(self.files[name] + b"changed")


class AzureFake:
    def __init__(self, page_size=1000, host="127.0.0.1", tls=None):
        self.sig = "fake-" + secrets.token_hex(8)
        self.expired_sig = None              # set: the gateway hands out a SAS that the blob service refuses
        self.sas_base = None                 # set: the gateway names this blob host instead of its own
        self.redirect_blobs = None           # set: blob GETs answer 302 to this URL
        self.containers = {}                 # container name -> Container
        self.assets = {}                     # asset URI -> (container name, description)
        self.catalog = []                    # entity dicts for the catalog endpoint
        self.page_size = page_size
        self.failing_regions = set()
        self.throttle, self.retry_after = 0, 1
        self.truncate = 0
        self.change_etag_after = None
        self.delay = 0.0
        self.listed_sizes = {}               # name -> size listed instead of the real one
        self.requests = []                   # (method, path without query, Range, status)
        self.range_times = []                # time.monotonic() of each ranged blob answer sent (206)
        self.catalog_bodies = []
        self._range_counts = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None, length=None):
                with fake._lock:
                    fake.requests.append((self.command, self.path.split("?")[0], self.headers.get("Range"), status))
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                fake._get(self)

            def do_POST(self):
                fake._post(self)

        self.server = (_TLSServer if tls else _Server)((host, 0), Handler)
        self.server.tls = tls
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"{host}:{self.port}"
        self.base = f"{'https' if tls else 'http'}://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- setup -----------------------------------------------------------------------------------------------------
    def add_model(self, name, version, files, description="a model", registry="azureml"):
        uri = f"azureml://registries/{registry}/models/{name}/versions/{version}"
        container = f"{name.lower()}-{version}"
        self.containers[container] = Container(files)
        self.assets[uri] = (container, description)
        return uri

    def env(self):
        return {"FOUNDRY_AZUREML_REGISTRY_URL": f"{self.base}/registry/{{region}}",
                "FOUNDRY_AZURE_CATALOG_URL": f"{self.base}/catalog/{{region}}",
                "FOUNDRY_REGISTRY_ALLOWLIST": self.host, "FOUNDRY_FETCH_INSECURE": "1",
                "FOUNDRY_AZUREML_BACKOFF_S": "0.05"}

    def blob_gets(self, name=None):
        return [r for r in self.requests if r[0] == "GET" and r[1].count("/") >= 3 and r[1].startswith("/blob/")
                and (name is None or r[1].endswith("/" + name))]

    def bytes_served(self, name=None):
        total = 0
        for _m, _p, rng, status in self.blob_gets(name):
            if status == 206 and rng:
                a, b = map(int, rng.split("=")[1].split("-"))
                total += b - a + 1
        return total

    # --- handlers --------------------------------------------------------------------------------------------------
    def _get(self, h):
        parts = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(parts.query)
        m = re.fullmatch(r"/registry/([a-z0-9]+)/modelregistry/v1\.0/registry/models/nonazureaccount", parts.path)
        if m:
            return self._lookup(h, m.group(1), parts.query)
        m = re.fullmatch(r"/blob/([a-z0-9.-]+)(?:/(.+))?", parts.path)
        if not m or m.group(1) not in self.containers:
            return h._send(404, b"<Error><Code>ResourceNotFound</Code></Error>")
        if query.get("sig") != [self.sig]:
            return h._send(403, b"<Error><Code>AuthenticationFailed</Code></Error>")
        container = self.containers[m.group(1)]
        if m.group(2) is None:
            return self._list(h, container, query)
        return self._blob(h, container, urllib.parse.unquote(m.group(2)))

    def _lookup(self, h, region, raw_query):
        if h.headers.get("User-Agent") != "AzureAiStudio" or h.headers.get("Authorization"):
            return h._send(400, b'{"error": "bad request"}')
        if region in self.failing_regions:
            return h._send(503, b'{"error": "unavailable"}')
        # the asset id must be percent-encoded: every byte but A-Za-z0-9-_.~
        raw = raw_query.partition("assetId=")[2].partition("&")[0]
        if re.search(r"[^A-Za-z0-9\-_.~%]", raw):
            return h._send(400, b'{"error": "assetId is not encoded"}')
        uri = urllib.parse.unquote(raw)
        if uri not in self.assets:
            return h._send(404, b'{"error": "not found"}')
        container, description = self.assets[uri]
        sig = self.expired_sig or self.sig
        body = {"blobSasUri": f"{self.sas_base or self.base}/blob/{container}?sv=2021-08-06&sr=c&sp=rl&sig={sig}",
                "modelEntity": {"description": description}}
        h._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _list(self, h, container, query):
        if query.get("restype") != ["container"] or query.get("comp") != ["list"]:
            return h._send(400, b"<Error><Code>InvalidQueryParameterValue</Code></Error>")
        entries = sorted([(n, self.listed_sizes.get(n, len(d)), container.etags[n])
                          for n, d in container.files.items()] + [(n, size, '"0x1"') for n, size in container.extra])
        start = int((query.get("marker") or ["0"])[0] or 0)
        page = entries[start:start + self.page_size]
        nxt = start + self.page_size if start + self.page_size < len(entries) else None
        blobs = "".join(f"<Blob><Name>{escape(n)}</Name><Properties><Content-Length>{size}</Content-Length>"
                        f"<Etag>{escape(etag)}</Etag></Properties></Blob>" for n, size, etag in page)
        xml = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="x"><Blobs>{blobs}</Blobs>'
               f"<NextMarker>{nxt if nxt is not None else ''}</NextMarker></EnumerationResults>")
        h._send(200, xml.encode(), {"Content-Type": "application/xml"})

    def _blob(self, h, container, name):
        if name not in container.files:
            return h._send(404, b"<Error><Code>BlobNotFound</Code></Error>")
        if self.redirect_blobs:
            return h._send(302, b"", {"Location": self.redirect_blobs})
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            if self.throttle > 0:
                self.throttle -= 1
                throttled = True
            else:
                throttled = False
            count = self._range_counts[name] = self._range_counts.get(name, 0) + 1
            if self.change_etag_after and self.change_etag_after[0] == name and count > self.change_etag_after[1]:
                container.change(name)
                self.change_etag_after = None
        if throttled:
            return h._send(429, b"<Error><Code>ServerBusy</Code></Error>", {"Retry-After": str(self.retry_after)})
        data, etag = container.files[name], container.etags[name]
        if h.headers.get("If-Match") not in (None, etag):
            return h._send(412, b"<Error><Code>ConditionNotMet</Code></Error>")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range") or "")
        if not m:
            return h._send(200, data, {"ETag": etag})
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            return h._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        body = data[start:end + 1]
        headers = {"ETag": etag, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        with self._lock:
            short = self.truncate > 0
            self.truncate -= 1 if short else 0
        if short:                            # promise the whole range, send half, close the connection
            headers["Connection"] = "close"
            h.close_connection = True
            return h._send(206, body[:len(body) // 2], headers, length=len(body))
        h._send(206, body, headers)
        self.range_times.append(time.monotonic())

    def _post(self, h):
        parts = urllib.parse.urlsplit(h.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        m = re.fullmatch(r"/catalog/([a-z0-9]+)/entities/crossRegion", parts.path)
        if not m:
            return h._send(404, b"{}")
        if h.headers.get("User-Agent") != "AzureAiStudio":
            return h._send(400, b'{"error": "bad request"}')
        if m.group(1) in self.failing_regions:
            return h._send(503, b"{}")
        try:
            request = json.loads(body)
            inner = request["indexEntitiesRequest"]
            assert request["resourceIds"] == [{"resourceId": "azureml", "entityContainerType": "Registry"}]
        except (ValueError, KeyError, TypeError, AssertionError):
            return h._send(400, b'{"error": "malformed request"}')
        self.catalog_bodies.append(request)
        token = inner.get("continuationToken")
        start = int(token) if token else int(inner.get("skip") or 0)
        size = min(int(inner.get("pageSize") or 50), self.page_size)
        page = self.catalog[start:start + size]
        answer = {"indexEntitiesResponse": {"value": page}}
        if start + size < len(self.catalog):
            answer["indexEntitiesResponse"]["continuationToken"] = str(start + size)
        h._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
