"""The model fetcher: the init container of every model pod (`python -m foundry_inference.operator.fetch`) and, the
same code, the embedded node agent's artifact step. It puts the model files in FOUNDRY_FETCH_DEST and logs progress.
Its network side (SSRF guard, registry auth, resumable downloads) is fetch_http.py.

Artifacts (FOUNDRY_FETCH_ARTIFACT, JSON, written by the operator):
- {"type": "oci", "registry", "repository", "tag"}: an OCI artifact (`oras push <registry>/<repo>:<tag> model.tar.gz`),
  pulled with the registry's token or basic auth (FOUNDRY_REGISTRY_USERNAME / FOUNDRY_REGISTRY_PASSWORD from the
  credentials Secret); each layer is verified against its digest, a tar.gz layer is unpacked safely, another layer is
  saved under its title.
- {"type": "uri", "uri": "https://...", "sha256"?, "size"?}: a plain download (a .tar.gz is unpacked), verified
  against `sha256` and exactly `size` bytes when the catalog gives them (an OCI layer's rules), never more than the
  model folder's limit.
- {"type": "uri", "uri": "azureml://registries/<r>/models/<name>/versions/<v>", "promptTemplate"?}: a Foundry
  catalog model, downloaded with the public protocol (azureml.py) into the cache (azureml_fetch.py). Without
  FOUNDRY_FETCH_CACHE (a Kubernetes pod) the cache is `.foundry-cache` beside the model folder, in the same volume,
  so that a restarted init container resumes the download. Endpoints: FOUNDRY_AZUREML_REGISTRY_URL,
  FOUNDRY_AZURE_REGION (docs/catalog.md).
- {"type": "builtin", "name"}: a sample built locally by `foundry_inference.samples.build(name, dest)` when that
  module exists; otherwise a clear "not available yet" failure.

Cache and limits (all optional):
- FOUNDRY_FETCH_CACHE: a directory holding a content-addressed cache of OCI layer blobs shared by every fetcher on the
  machine (operator/blobcache.py; the embedded node agent sets `<data-dir>/cache`). A blob is downloaded into
  `partial/sha256/<hex>.partial`, renamed to `blobs/sha256/<hex>` only after its sha256 digest verified, and reused
  by the next deployment of the same artifact (logged `cached`, no download). An interrupted download is resumed
  from the partial file's length with `Range: bytes=N-` (a registry that answers 200, or 206 with another range,
  is read from the start; a resumed blob whose digest does not match is discarded and downloaded once more from
  the start). A cached blob is verified again at each use; a corrupted one is deleted and fetched again. The model
  folder is still unpacked from the blob into a staging folder renamed into place; its files then become hard links
  to one shared copy per content (`files/sha256/<hex>`, operator/filestore.py), so deployments of one model use the
  disk once for their unpacked files. Without it, a layer goes to a
  temporary file in the staging folder and a failed download is discarded (Kubernetes pods: the emptyDir).
- FOUNDRY_FETCH_CACHE_LIMIT_BYTES: the cache's size limit (bytes, or a quantity such as 20Gi). The manifest's layer
  sizes are summed before anything is downloaded: an artifact larger than the limit fails at once ("model needs
  123.0 MiB (...) but the model cache limit is 100.0 MiB (...)"); otherwise least-recently-used blobs no fetcher is
  using are evicted until it fits, else the same kind of failure. Partial downloads count toward the usage.
- FOUNDRY_FETCH_LIMIT_BYTES: the model folder's limit (the operator passes the models volume's sizeLimit,
  `storeModel.modelsVolumeSizeLimit`): an artifact whose layers, or whose unpacked files, exceed it fails clearly
  instead of filling the volume.

SSRF guard (docs/api.md, decision 11): the registry or URI host is resolved and refused when any address is not global
(private, loopback, link-local, reserved, multicast), unless it is in FOUNDRY_REGISTRY_ALLOWLIST (`host[:port],...`,
the control plane's list, passed on by the operator) or FOUNDRY_FETCH_ALLOW_PRIVATE=1 (tests). Plain http needs
FOUNDRY_FETCH_INSECURE=1; https is always verified, against the system's CAs plus, for a private registry,
FOUNDRY_REGISTRY_CAS (`{"host[:port]": PEM}`, that registry's own CA, from the chart's registryTrust.caBundles).
A failure's `failed: <cause>` line also goes to FOUNDRY_FETCH_TERMINATION_LOG when set (the operator sets the init
container's terminationMessagePath, /dev/termination-log: the kubelet shows that file's content as the termination
message even when it lost the container's log). A finished fetch leaves `.foundry-artifact` (the artifact JSON) so
a restarted pod or agent does not download again, and beside the folder `.<dest name>.foundry-digests.json` (each
file's sha256): a copy that no longer matches (corrupted on disk) is fetched again. Exit status 0 on success, 1 with
the reason on stderr otherwise.
"""
import json
import os
import shutil
import ssl
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
from http.client import HTTPException
from typing import NamedTuple

from . import azureml, azureml_fetch
from .blobcache import HEX, BlobCache, CacheError, format_size, parse_size, sha256_file
from .fetch_http import DigestMismatch, FetchError, Http, check_host, download, log, open_from
from .filestore import FileStore

MARKER = ".foundry-artifact"
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json"))


class Layer(NamedTuple):
    hex: str
    size: int
    title: str
    unpack: bool


class Room:
    """What the model folder may still take (FOUNDRY_FETCH_LIMIT_BYTES: the models volume's sizeLimit)."""

    def __init__(self, limit=None):
        self.limit, self.used = limit, 0

    def check(self, size, verb="needs"):
        if self.limit is not None and self.used + size > self.limit:
            raise FetchError(f"model {verb} {format_size(self.used + size)} but the model volume limit is "
                             f"{format_size(self.limit)}")

    def take(self, size, verb):
        self.check(size, verb)
        self.used += size


def _safe_extract(archive, dest, room):
    """Unpack a tar archive refusing absolute paths, `..`, links, device files and more than the model folder's
    room."""
    root = os.path.realpath(dest)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        room.take(sum(m.size for m in members if m.isfile()), "unpacks to")
        for member in members:
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


def _store_blob(path, dest, name, room, unpack=False, keep=False):
    """Unpack an archive into `dest`, or put a plain file there under its name (copied when `keep`: a cached blob)."""
    if _is_archive(path, name, unpack):
        _safe_extract(path, dest, room)
        return
    room.take(os.path.getsize(path), "needs")
    target = os.path.join(dest, os.path.basename(name))
    shutil.copyfile(path, target) if keep else shutil.move(path, target)


def _layers(manifest, where):
    """The manifest's layers, refusing what neither a cache path nor a size limit could trust."""
    layers = (manifest.get("layers") or manifest.get("blobs") or []) if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise FetchError(f"{where}: the manifest is not an OCI image manifest")
    if not layers:
        raise FetchError(f"{where}: the manifest lists no layers")
    result = []
    for i, layer in enumerate(layers):
        algo, _, hexd = str(layer.get("digest")).partition(":")
        if algo != "sha256" or not HEX.fullmatch(hexd):
            raise FetchError(f"{where}: layer {i} has no sha256 digest ({str(layer.get('digest'))[:80]!r})")
        size = layer.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise FetchError(f"{where}: layer {i} has no valid size ({str(size)[:40]!r})")
        annotations = layer.get("annotations") if isinstance(layer.get("annotations"), dict) else {}
        title = os.path.basename(str(annotations.get("org.opencontainers.image.title") or ""))
        result.append(Layer(hexd, size, title if title not in ("", ".", "..") else f"layer-{i}",
                            annotations.get("io.deis.oras.content.unpack") == "true"))
    return result


def _cached_layer(cache, http, base, layer):
    """Download a layer into the cache (its lock held): resume what an interrupted fetch left, verify the digest,
    rename into place. A resumed download whose digest does not match is discarded and tried once from the start."""
    url = f"{base}/blobs/sha256:{layer.hex}"
    for attempt in (1, 2):
        offset = cache.resume_offset(layer.hex, layer.size)
        try:
            if offset == layer.size and layer.size:
                sha = sha256_file(cache.partial(layer.hex)).hexdigest()
                if sha != layer.hex:
                    raise DigestMismatch(f"{layer.title}: digest mismatch (expected sha256:{layer.hex}, got "
                                         f"sha256:{sha})")
                log(f"{layer.title}: 100% ({offset} bytes, from an earlier partial download)")
            else:
                resp, offset = open_from(http, url, offset, layer.size, layer.title)
                with resp:
                    download(resp, cache.partial(layer.hex), layer.size, f"sha256:{layer.hex}", layer.title, offset)
        except DigestMismatch:
            retry = bool(offset) and attempt == 1
            cache.discard(layer.hex, keep_reservation=retry)
            if not retry:
                raise
            log(f"{layer.title}: the resumed download does not match its digest; discarding the partial download "
                "and downloading from the start")
            continue
        return cache.commit(layer.hex)


def fetch_oci(artifact, dest, http, cache=None, room=None):
    room = room or Room()
    registry, repo, tag = artifact["registry"], artifact["repository"], artifact.get("tag") or "latest"
    check_host(registry, http.allow_private, http.allowlist, http.resolver)
    scheme = "http" if http.insecure else "https"
    base = f"{scheme}://{registry}/v2/{repo}"
    log(f"pulling {registry}/{repo}:{tag}")
    try:
        with http.get(f"{base}/manifests/{tag}", {"Accept": MANIFEST_TYPES}) as resp:
            manifest = json.loads(resp.read(4 << 20))
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{registry}/{repo}:{tag}: manifest not available (HTTP {exc.code})") from None
    layers = _layers(manifest, f"{registry}/{repo}:{tag}")
    total = sum(layer.size for layer in layers)
    room.check(total)                                  # before a byte is downloaded
    if cache is not None:
        try:
            _fetch_layers_cached(cache, http, base, layers, dest, room)
        except CacheError as exc:
            raise FetchError(str(exc)) from None
        return
    for layer in layers:
        with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
            path = tmp.name
        try:
            with http.get(f"{base}/blobs/sha256:{layer.hex}", {"Accept": "*/*"}) as resp:
                download(resp, path, layer.size, f"sha256:{layer.hex}", layer.title)
            _store_blob(path, dest, layer.title, room, layer.unpack)
        finally:
            if os.path.exists(path):
                os.unlink(path)


def _fetch_layers_cached(cache, http, base, layers, dest, room):
    sizes = {layer.hex: layer.size for layer in layers}
    cache.check_fits(sum(layer.size for layer in layers), "model")
    with cache.holding(sizes):
        cached = {hexd for hexd in sizes if cache.verified(hexd)}
        cache.reserve(sizes, [hexd for hexd in sizes if hexd not in cached], "model")
        for layer in layers:
            if layer.hex in cached:
                log(f"{layer.title}: cached (sha256:{layer.hex[:12]}, {layer.size} bytes): not downloaded")
                path = cache.blob(layer.hex)
            else:
                path = _cached_layer(cache, http, base, layer)
                cached.add(layer.hex)
            _store_blob(path, dest, layer.title, room, layer.unpack, keep=True)


def fetch_uri(artifact, dest, http, room=None):
    room = room or Room()
    uri = artifact["uri"]
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("https", "http") or (parsed.scheme == "http" and not http.insecure):
        raise FetchError(f"{uri}: only https:// URIs can be fetched")
    check_host(parsed.netloc, http.allow_private, http.allowlist, http.resolver)
    name = os.path.basename(parsed.path) or "model"
    digest, size = artifact.get("sha256"), artifact.get("size")
    if digest is not None and not (isinstance(digest, str) and HEX.fullmatch(digest)):
        raise FetchError(f"{uri}: sha256 must be 64 lower-case hex digits")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise FetchError(f"{uri}: size must be a positive number of bytes")
    if size:
        room.check(size)                               # before a byte is downloaded, like an OCI layer
    with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
        path = tmp.name
    try:
        try:
            with http.get(uri, {"Accept": "*/*"}) as resp:
                room.check(int(resp.headers.get("Content-Length") or 0))
                # never more than the declared size (or the room left); the digest, when given, is verified
                download(resp, path, size=size, digest=f"sha256:{digest}" if digest else None, label=name,
                         cap=room.limit)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{uri}: HTTP {exc.code}") from None
        _store_blob(path, dest, name, room)
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
    return sha256_file(path).hexdigest()


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


def fetch(artifact, dest, username=None, password=None, allow_private=False, insecure=False, cache=None, limit=None,
          allowlist=None):
    """Fetch `artifact` into `dest` (atomically: a partial download never looks finished). `cache`: a BlobCache for
    OCI layers; `limit`: the model folder's size limit in bytes; `allowlist`: registries admitted on private
    addresses (default FOUNDRY_REGISTRY_ALLOWLIST)."""
    marker = os.path.join(dest, MARKER)
    wanted = json.dumps(artifact, sort_keys=True)
    if os.path.exists(marker) and open(marker).read() == wanted:
        problem = _check_digests(dest)
        if problem is None:
            log("model already present (digests verified)")
            return dest
        log(f"the model already present is corrupt ({problem}); fetching it again")
    parent = os.path.dirname(os.path.abspath(dest)) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".fetch-", dir=parent)
    http = Http(username, password, insecure=insecure, allow_private=allow_private, allowlist=allowlist)
    try:
        kind = artifact.get("type")
        if kind == "oci":
            fetch_oci(artifact, staging, http, cache, Room(limit))
        elif kind == "uri" and str(artifact["uri"]).startswith("azureml:"):
            azureml_fetch.fetch(artifact, staging, cache or BlobCache(os.path.join(parent, ".foundry-cache"),
                                                                      log=log), Room(limit),
                                azureml.AzureSettings.from_env(insecure=insecure, allow_private=allow_private,
                                                               detected_region=artifact.get("region")))
        elif kind == "uri":
            fetch_uri(artifact, staging, http, Room(limit))
        elif kind == "builtin":
            fetch_builtin(artifact, staging)
        else:
            raise FetchError(f"unknown artifact type {kind!r}")
        digests = _digests(staging)
        if cache is not None:
            FileStore(cache.root, log).share(staging, digests)
        with open(os.path.join(staging, MARKER), "w") as fh:
            fh.write(wanted)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.rename(staging, dest)
        tmp = _digests_path(dest) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(digests, fh, indent=1, sort_keys=True)
        os.replace(tmp, _digests_path(dest))
    except KeyError as exc:
        raise FetchError(f"the {artifact.get('type')} artifact has no {exc.args[0]!r}") from None
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(f"the registry's TLS certificate is not trusted ({exc.verify_message}); a private "
                         "registry's CA goes in the chart value registryTrust.caBundles") from None
    except (OSError, urllib.error.URLError, tarfile.TarError, ValueError, HTTPException) as exc:
        raise FetchError(f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}") from None
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    log(f"model ready in {dest}")
    return dest


TERMINATION_LIMIT = 4000      # the kubelet keeps at most 4096 bytes of a termination message


def _flag(env, name):
    return (env.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def _size(env, name):
    if not (env.get(name) or "").strip():
        return None
    try:
        return parse_size(env[name], name)
    except ValueError as exc:
        raise FetchError(str(exc)) from None


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
        if not isinstance(artifact, dict):
            raise FetchError("FOUNDRY_FETCH_ARTIFACT is not a JSON object")
        cache = None
        if env.get("FOUNDRY_FETCH_CACHE"):
            cache = BlobCache(env["FOUNDRY_FETCH_CACHE"], _size(env, "FOUNDRY_FETCH_CACHE_LIMIT_BYTES"), log)
        fetch(artifact, dest, env.get("FOUNDRY_REGISTRY_USERNAME"), env.get("FOUNDRY_REGISTRY_PASSWORD"),
              allow_private=_flag(env, "FOUNDRY_FETCH_ALLOW_PRIVATE"), insecure=_flag(env, "FOUNDRY_FETCH_INSECURE"),
              cache=cache, limit=_size(env, "FOUNDRY_FETCH_LIMIT_BYTES"))
    except FetchError as exc:
        log(f"failed: {exc}")
        _termination_message(env, f"model-fetcher: failed: {exc}")
        return 1
    return 0


def _termination_message(env, line):
    """On a cluster (FOUNDRY_FETCH_TERMINATION_LOG, the container's terminationMessagePath) the cause also goes to
    the termination message file: the kubelet reads it before falling back to the log, which it may have lost."""
    path = env.get("FOUNDRY_FETCH_TERMINATION_LOG")
    if path:
        try:
            with open(path, "w") as fh:
                fh.write(line[:TERMINATION_LIMIT] + "\n")
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
