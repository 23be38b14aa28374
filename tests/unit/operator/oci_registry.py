"""A deliberately misbehaving OCI distribution endpoint on loopback, for the fetcher's unit tests only: it serves
what a real registry refuses to store or serve (a blob whose bytes do not match its digest, an archive that escapes
the model directory) and speaks the bearer-token flow of cloud registries. Every test of the happy path and of
credentials against a real registry uses Debian's docker-registry (tests/support/registry.py)"""
import base64
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def tarball(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Registry:
    def __init__(self, repository="models/iris", tag="v1", files=None, username="user", password="pass",
                 layer=None, title="model.tar.gz", ranges="ignore"):
        self.repository, self.tag = repository, tag
        self.ranges = ranges          # "ignore" (answer 200), "honour" (206), "shift" (206 with a range one byte off)
        self.truncate_at = None       # send only this many bytes of the blob, then close (a dropped connection)
        self.redirect_blobs_to = None  # path -> Location: blob GETs answer 307 to it
        self.username, self.password = username, password
        self.layer = layer if layer is not None else tarball(files or {"model.onnx": b"onnx-bytes"})
        self.digest = "sha256:" + hashlib.sha256(self.layer).hexdigest()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa3",
                       "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.digest,
                        "size": len(self.layer), "annotations": {"org.opencontainers.image.title": title}}]}).encode()
        self.requests, self.range_headers = [], []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server's API
                registry.requests.append(self.path)
                registry.range_headers.append(self.headers.get("Range"))
                if self.path.startswith("/token"):
                    expected = "Basic " + base64.b64encode(
                        f"{registry.username}:{registry.password}".encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        return self._reply(401)
                    return self._reply(200, json.dumps({"token": "t0k3n"}).encode())
                if self.headers.get("Authorization") != "Bearer t0k3n":
                    realm = f"http://127.0.0.1:{registry.port}/token"
                    return self._reply(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="reg",'
                                                                         f'scope="repository:{registry.repository}:pull"'})
                base = f"/v2/{registry.repository}"
                if self.path == f"{base}/manifests/{registry.tag}":
                    return self._reply(200, registry.manifest,
                                       {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
                if self.path == f"{base}/blobs/{registry.digest}":
                    if registry.redirect_blobs_to:       # like ACR, GHCR, Docker Hub: the bytes live in object storage
                        return self._reply(307, headers={"Location": registry.redirect_blobs_to(self.path)})
                    if registry.truncate_at is not None:
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(registry.layer)))
                        self.end_headers()
                        self.wfile.write(registry.layer[:registry.truncate_at])
                        return
                    asked = self.headers.get("Range")
                    if asked and registry.ranges != "ignore":
                        start = int(asked.split("=", 1)[1].rstrip("-")) + (registry.ranges == "shift")
                        size = len(registry.layer)
                        return self._reply(206, registry.layer[start:],
                                           {"Content-Range": f"bytes {start}-{size - 1}/{size}"})
                    return self._reply(200, registry.layer)
                return self._reply(404)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class ObjectStorage:
    """A second loopback server standing in for the object storage a registry redirects blob downloads to (the cloud
    service cannot exist here): serves `body` on any path, or redirects on `hops` more times first; records every
    request's headers."""

    def __init__(self, body=b"", hops=0):
        self.body, self.hops, self.seen = body, hops, []
        storage = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's API
                storage.seen.append((self.path, dict(self.headers)))
                if storage.hops:
                    storage.hops -= 1
                    self.send_response(302)
                    self.send_header("Location", f"/hop{len(storage.seen)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(storage.body)))
                self.end_headers()
                self.wfile.write(storage.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
