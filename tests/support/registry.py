"""A real OCI distribution registry for tests: Debian's `docker-registry` (distribution v2) on loopback.

    with DockerRegistry(username="user", password="pass") as reg:
        reg.push_model({"model.onnx": data}, "models/iris", "v1")     # oras: a tar.gz of the files as one layer
        reg.address                                                     # "127.0.0.1:<port>"

Storage is a temporary directory; the port is free; the process dies with the test process (PR_SET_PDEATHSIG) and is
stopped on exit. Plain HTTP on loopback: with `username`, htpasswd (bcrypt) basic auth is on - distribution accepts
it without TLS - so the fetcher's credential path is exercised for real (the fetcher needs FOUNDRY_FETCH_INSECURE=1
for plain http). `available()` says why a test must skip (`apt-get install docker-registry`).
"""
import ctypes
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import requests

BINARY = shutil.which("docker-registry") or ("/usr/bin/docker-registry"
                                             if os.path.exists("/usr/bin/docker-registry") else None)


def require_registry():
    """Skip (developer machine) or fail (CI) the calling test when a registry cannot be started."""
    from tests.support.require import unavailable
    reason = available()
    if reason:
        unavailable(reason)


def available():
    """None when a registry can be started, else the reason."""
    if not BINARY:
        return "docker-registry is not installed (apt-get install docker-registry)"
    try:
        import oras.client  # noqa: F401
    except ImportError:
        return "the oras Python package is not installed (pip install oras)"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _bcrypt_line(username, password):
    try:
        import bcrypt
        return f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
    except ImportError:
        htpasswd = shutil.which("htpasswd")
        if not htpasswd:
            raise RuntimeError("bcrypt (pip) or htpasswd (apt-get install apache2-utils) is needed for registry "
                               "auth") from None
        out = subprocess.run([htpasswd, "-nbB", "-C", "5", username, password], check=True,
                             capture_output=True, text=True).stdout
        return out.strip() + "\n"


def model_targz(files):
    """A tar.gz of {relative name: bytes} (the BYO packaging: model files at the archive root)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class DockerRegistry:
    """`tls=True`: https with a CA of its own (`self.ca`, a PEM file), as an on-prem registry has."""

    def __init__(self, username=None, password=None, tls=False):
        self.username, self.password = username, password
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="foundry-registry-")
        self.proc = None
        self.ca = None
        self.scheme = "https" if tls else "http"
        if tls:
            from tests.kube import pki
            self.ca, self.cert, self.key = pki.write_ca_and_cert(os.path.join(self.dir, "pki"), "registry",
                                                                 ["127.0.0.1"], [])

    def _config(self):
        lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.dir}/data", "  delete:", "    enabled: true",
                 "http:", f"  addr: 127.0.0.1:{self.port}", f"  secret: {os.urandom(8).hex()}"]
        if self.ca:
            lines += ["  tls:", f"    certificate: {self.cert}", f"    key: {self.key}"]
        if self.username:
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as fh:
                fh.write(_bcrypt_line(self.username, self.password))
            lines += ["auth:", "  htpasswd:", "    realm: foundry-test", f"    path: {path}"]
        path = os.path.join(self.dir, "config.yml")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def start(self, timeout=20):
        reason = available()
        if reason:
            raise RuntimeError(reason)
        config = self._config()
        self.log_path = os.path.join(self.dir, "registry.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([BINARY, "serve", config], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log()}")
            try:
                if requests.get(f"{self.scheme}://{self.address}/v2/", timeout=1,
                                verify=self.ca or True).status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer within {timeout}s: {self.log()}")

    def log(self):
        try:
            return open(self.log_path, errors="replace").read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- content ------------------------------------------------------------------------------------------------
    def client(self):
        import oras.client
        client = oras.client.OrasClient(hostname=self.address, insecure=True, auth_backend="basic")
        if self.username:
            client.login(hostname=self.address, username=self.username, password=self.password)
        return client

    def push_model(self, files, repository="models/model", tag="v1"):
        """`oras push <registry>/<repository>:<tag> model.tar.gz` with the oras Python package; returns the target."""
        work = tempfile.mkdtemp(prefix="oras-push-")
        cwd = os.getcwd()
        try:
            with open(os.path.join(work, "model.tar.gz"), "wb") as fh:
                fh.write(model_targz(files))
            os.chdir(work)            # oras records the path as given as the layer title
            target = f"{self.address}/{repository}:{tag}"
            resp = self.client().push(target=target, files=["model.tar.gz"], disable_path_validation=True)
            if getattr(resp, "status_code", 201) >= 300:
                raise RuntimeError(f"oras push failed: HTTP {resp.status_code} {getattr(resp, 'text', '')}")
            return target
        finally:
            os.chdir(cwd)
            shutil.rmtree(work, ignore_errors=True)

    def push_folder(self, folder, repository, tag="v1"):
        """push_model with a model folder's files (hidden ones left out); returns the target."""
        files = {f.name: f.read_bytes() for f in Path(folder).iterdir() if f.is_file() and f.name[0] != "."}
        return self.push_model(files, repository, tag)

    def manifest(self, repository, tag):
        auth = (self.username, self.password) if self.username else None
        resp = requests.get(f"http://{self.address}/v2/{repository}/manifests/{tag}", auth=auth, timeout=5,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        resp.raise_for_status()
        return resp.json()
