"""The model fetcher: the init container of every model pod (`python -m foundry_inference.operator.fetch`) and, the
same code, the embedded node agent's artifact step. It puts the model files in FOUNDRY_FETCH_DEST and logs progress.

Artifacts (FOUNDRY_FETCH_ARTIFACT, JSON, written by the operator):
- {"type": "oci", "registry", "repository", "tag"}: an OCI artifact (`oras push <registry>/<repo>:<tag> model.tar.gz`),
  pulled with the registry's token or basic auth (FOUNDRY_REGISTRY_USERNAME / FOUNDRY_REGISTRY_PASSWORD from the
  credentials Secret); each layer is verified against its digest, a tar.gz layer is unpacked safely, another layer is
  saved under its title.
- {"type": "uri", "uri": "https://..."}: a plain download (a .tar.gz is unpacked). `azureml://` URIs are not
  fetchable yet and fail with a message saying so.
- {"type": "builtin", "name"}: a sample built locally by `foundry_inference.samples.build(name, dest)` when that
  module exists; otherwise a clear "not available yet" failure.

SSRF guard (contract decision 11): the registry or URI host is resolved and refused when any address is not global
(private, loopback, link-local, reserved, multicast), unless it is in FOUNDRY_REGISTRY_ALLOWLIST (`host[:port],...`,
the control plane's list, passed on by the operator) or FOUNDRY_FETCH_ALLOW_PRIVATE=1 (tests). Plain http needs
FOUNDRY_FETCH_INSECURE=1. A finished fetch leaves `.foundry-artifact` (the artifact JSON) so a restarted pod or
agent does not download again, and beside the folder `.<dest name>.foundry-digests.json` (each file's sha256): a
copy that no longer matches (corrupted on disk) is fetched again. Exit status 0 on success, 1 with the reason on
stderr otherwise.
"""
import base64
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

MARKER = ".foundry-artifact"
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json"))
_CHUNK = 1 << 20


class FetchError(Exception):
    pass


def _log(message):
    print(f"model-fetcher: {message}", file=sys.stderr, flush=True)


def _allowlist(env=None):
    """FOUNDRY_REGISTRY_ALLOWLIST: the control plane's list of `host[:port]` admitted on private addresses."""
    raw = (os.environ if env is None else env).get("FOUNDRY_REGISTRY_ALLOWLIST") or ""
    return {item.strip().lower() for item in raw.split(",") if item.strip()}


def check_host(host, allow_private=False, allowlist=None):
    """Refuse hosts that resolve to internal addresses (SSRF guard, re-checked at fetch time)."""
    if allow_private:
        return
    allowlist = _allowlist() if allowlist is None else allowlist
    name = urllib.parse.urlsplit(f"//{host}").hostname or host
    if host.lower() in allowlist or name.lower() in allowlist:
        return
    try:
        infos = socket.getaddrinfo(name, None)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {name}: {exc.strerror}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast or addr.is_reserved:
            raise FetchError(f"refusing to fetch from {name}: it resolves to the internal address {addr}")


class _Http:
    def __init__(self, username=None, password=None, insecure=False, allow_private=False, timeout=60):
        self.username, self.password = username, password
        self.insecure, self.allow_private, self.timeout = insecure, allow_private, timeout
        self.token = None

    def _open(self, url, headers, auth=None):
        req = urllib.request.Request(url, headers={**headers, "User-Agent": "foundry-inference-fetcher"})
        if auth:
            req.add_header("Authorization", auth)
        return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - host checked by the caller

    def _basic(self):
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _bearer_token(self, challenge):
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise FetchError(f"registry sent an unusable auth challenge: {challenge}")
        check_host(urllib.parse.urlparse(realm).netloc, self.allow_private)
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        try:
            with self._open(url, {"Accept": "application/json"}, self._basic()) as resp:
                body = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:
            raise FetchError(f"registry token request refused: HTTP {exc.code} (check the credentials Secret)") \
                from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise FetchError("registry token response carried no token")
        return f"Bearer {token}"

    def get(self, url, headers):
        """Open `url`, answering one auth challenge (bearer token or basic)."""
        try:
            return self._open(url, headers, self.token)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            challenge = exc.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            self.token = self._bearer_token(challenge)
        else:
            self.token = self._basic()
            if self.token is None:
                raise FetchError("the registry requires credentials and none were configured")
        return self._open(url, headers, self.token)


def _download(resp, target, size=None, digest=None, label="artifact"):
    """Stream `resp` into `target`, logging progress; verify the sha256 digest when given."""
    size = size or int(resp.headers.get("Content-Length") or 0) or None
    sha = hashlib.sha256()
    done, last_log, last_pct = 0, time.monotonic(), -10
    with open(target, "wb") as out:
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            sha.update(chunk)
            done += len(chunk)
            pct = int(done * 100 / size) if size else None
            if (pct is not None and pct >= last_pct + 10) or time.monotonic() - last_log > 10:
                _log(f"{label}: {pct if pct is not None else '?'}% ({done} of {size or '?'} bytes)")
                last_log, last_pct = time.monotonic(), pct if pct is not None else last_pct
    if digest:
        algo, _, expected = digest.partition(":")
        if algo != "sha256" or sha.hexdigest() != expected:
            raise FetchError(f"{label}: digest mismatch (expected {digest}, got sha256:{sha.hexdigest()})")
    if last_pct < 100:
        _log(f"{label}: 100% ({done} bytes)")
    return done


def _safe_extract(archive, dest):
    """Unpack a tar archive refusing absolute paths, `..`, links and device files."""
    root = os.path.realpath(dest)
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(dest, member.name))
            if os.path.isabs(member.name) or not (target == root or target.startswith(root + os.sep)):
                raise FetchError(f"archive entry {member.name!r} points outside the model directory")
            if not (member.isfile() or member.isdir()):
                raise FetchError(f"archive entry {member.name!r} is not a regular file or directory")
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)  # noqa: S202


def _is_archive(path, name, unpack=False):
    """oras labels every file layer `...tar`, so the media type says nothing: a .tar/.tar.gz/.tgz title, oras's
    unpack annotation (a pushed directory), or an untitled layer that is a tar archive is unpacked."""
    if unpack or name.endswith((".tar.gz", ".tgz", ".tar")):
        return True
    return name.startswith("layer-") and tarfile.is_tarfile(path)


def _store_blob(path, dest, name, unpack=False):
    if _is_archive(path, name, unpack):
        _safe_extract(path, dest)
    else:
        shutil.move(path, os.path.join(dest, os.path.basename(name)))


def fetch_oci(artifact, dest, http):
    registry, repo, tag = artifact["registry"], artifact["repository"], artifact.get("tag") or "latest"
    check_host(registry, http.allow_private)
    scheme = "http" if http.insecure else "https"
    base = f"{scheme}://{registry}/v2/{repo}"
    _log(f"pulling {registry}/{repo}:{tag}")
    try:
        with http.get(f"{base}/manifests/{tag}", {"Accept": MANIFEST_TYPES}) as resp:
            manifest = json.loads(resp.read(4 << 20))
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{registry}/{repo}:{tag}: manifest not available (HTTP {exc.code})") from None
    layers = manifest.get("layers") or manifest.get("blobs") or []
    if not layers:
        raise FetchError(f"{registry}/{repo}:{tag}: the manifest lists no layers")
    for i, layer in enumerate(layers):
        title = (layer.get("annotations") or {}).get("org.opencontainers.image.title") or f"layer-{i}"
        with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
            path = tmp.name
        try:
            with http.get(f"{base}/blobs/{layer['digest']}", {"Accept": "*/*"}) as resp:
                _download(resp, path, layer.get("size"), layer["digest"], title)
            unpack = (layer.get("annotations") or {}).get("io.deis.oras.content.unpack") == "true"
            _store_blob(path, dest, title, unpack)
        finally:
            if os.path.exists(path):
                os.unlink(path)


def fetch_uri(artifact, dest, http):
    uri = artifact["uri"]
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "azureml":
        raise FetchError(f"{uri}: azureml:// registry artifacts cannot be fetched by this platform yet")
    if parsed.scheme not in ("https", "http") or (parsed.scheme == "http" and not http.insecure):
        raise FetchError(f"{uri}: only https:// URIs can be fetched")
    check_host(parsed.netloc, http.allow_private)
    name = os.path.basename(parsed.path) or "model"
    with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
        path = tmp.name
    try:
        try:
            with http.get(uri, {"Accept": "*/*"}) as resp:
                _download(resp, path, label=name)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{uri}: HTTP {exc.code}") from None
        _store_blob(path, dest, name)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def fetch_builtin(artifact, dest):
    try:
        from foundry_inference import samples
    except ImportError:
        raise FetchError(f"builtin sample {artifact['name']!r} is not available yet: this build has no sample "
                         "builder (foundry_inference.samples)") from None
    try:
        samples.build(artifact["name"], dest)
    except samples.SampleError as exc:
        raise FetchError(str(exc)) from None


def _model_files(folder):
    for root, _dirs, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MARKER:
                yield rel


def _file_sha256(path):
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _digests_path(dest):
    """Beside the model folder, so that the folder holds only the model files and the marker."""
    dest = os.path.abspath(dest)
    return os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.foundry-digests.json")


def _digests(folder):
    """Every fetched file's sha256, so a later start can tell a corrupted copy from a good one."""
    return {rel: _file_sha256(os.path.join(folder, rel)) for rel in sorted(_model_files(folder))}


def _check_digests(folder):
    """None when the files match the digests recorded at fetch time (or none were recorded), else the problem."""
    path = _digests_path(folder)
    try:
        with open(path) as fh:
            digests = json.load(fh)
    except FileNotFoundError:
        return None                                   # fetched by an older version: nothing to compare with
    except (OSError, ValueError):
        return f"{os.path.basename(path)} is unreadable"
    for rel, expected in digests.items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            return f"{rel} is missing"
        if _file_sha256(path) != expected:
            return f"{rel} does not match its digest"
    return None


def fetch(artifact, dest, username=None, password=None, allow_private=False, insecure=False):
    """Fetch `artifact` into `dest` (atomically: a partial download never looks finished)."""
    marker = os.path.join(dest, MARKER)
    wanted = json.dumps(artifact, sort_keys=True)
    if os.path.exists(marker) and open(marker).read() == wanted:
        problem = _check_digests(dest)
        if problem is None:
            _log("model already present (digests verified)")
            return dest
        _log(f"the model already present is corrupt ({problem}); fetching it again")
    parent = os.path.dirname(os.path.abspath(dest)) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".fetch-", dir=parent)
    http = _Http(username, password, insecure=insecure, allow_private=allow_private)
    try:
        kind = artifact.get("type")
        if kind == "oci":
            fetch_oci(artifact, staging, http)
        elif kind == "uri":
            fetch_uri(artifact, staging, http)
        elif kind == "builtin":
            fetch_builtin(artifact, staging)
        else:
            raise FetchError(f"unknown artifact type {kind!r}")
        digests = _digests(staging)
        with open(os.path.join(staging, MARKER), "w") as fh:
            fh.write(wanted)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.rename(staging, dest)
        tmp = _digests_path(dest) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(digests, fh, indent=1, sort_keys=True)
        os.replace(tmp, _digests_path(dest))
    except (OSError, urllib.error.URLError, tarfile.TarError, ValueError) as exc:
        raise FetchError(f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}") from None
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    _log(f"model ready in {dest}")
    return dest


def _flag(env, name):
    return (env.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def main(env=None):
    env = os.environ if env is None else env
    try:
        raw = env.get("FOUNDRY_FETCH_ARTIFACT")
        dest = env.get("FOUNDRY_FETCH_DEST")
        if not raw or not dest:
            raise FetchError("FOUNDRY_FETCH_ARTIFACT and FOUNDRY_FETCH_DEST are required")
        try:
            artifact = json.loads(raw)
        except ValueError:
            raise FetchError("FOUNDRY_FETCH_ARTIFACT is not JSON") from None
        fetch(artifact, dest, env.get("FOUNDRY_REGISTRY_USERNAME"), env.get("FOUNDRY_REGISTRY_PASSWORD"),
              allow_private=_flag(env, "FOUNDRY_FETCH_ALLOW_PRIVATE"), insecure=_flag(env, "FOUNDRY_FETCH_INSECURE"))
    except FetchError as exc:
        _log(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
