"""`foundry-inference models push`: put a model folder into an OCI registry, as the fetcher pulls it.

    foundry-inference models push DIR REGISTRY/REPOSITORY:TAG [--ca-file PEM]     # a bring-your-own model
    foundry-inference models push DIR --mirror REGISTRY [--prefix foundry-models]  # Foundry catalog models

The artifact is what `oras push <ref> model.tar.gz` makes: one tar.gz layer titled `model.tar.gz` holding the
folder's files at its root, an empty config, an OCI image manifest. With `--mirror`, DIR is read as `models import`
reads it (a model folder, a `<name>-<version>` download folder or a whole Foundry Local cache) and each model goes to
`<registry>/<prefix>/azureml/<name, lower case>:<version>` (operator/catalog_mirror.py), the reference a cluster
with `catalog.mirror.registry` pulls for that catalog variant; the pushed folder is the one holding
`genai_config.json`, with `inference_model.json` written as the Azure download would leave it.

https only, verified against the system's CAs plus `--ca-file` (a private registry's CA); `--plain-http` for a
registry without TLS. Credentials: `--username` with the password on stdin (`--password-stdin`) or
FOUNDRY_REGISTRY_PASSWORD; basic and bearer-token registries both work. Blobs the registry has are not sent again.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from . import catalog_mirror, names
from .fetch_http import FetchError, tls_context

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.unknown.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
_REF = re.compile(r"^(?P<registry>[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9a-fA-F:]+\](:[0-9]+)?)/(?P<repo>[^:@]+):(?P<tag>.+)$")


class PushError(Exception):
    pass


def parse_reference(ref):
    """`registry/repository:tag` -> (registry, repository, tag); PushError when it is not one."""
    match = _REF.fullmatch(ref or "")
    if not match or not names.OCI_PATH.fullmatch(match["repo"]) or not names.OCI_TAG.fullmatch(match["tag"]):
        raise PushError(f"{ref!r} is not a registry/repository:tag reference (lower-case repository, e.g. "
                        "registry.lab:5000/models/iris:v1)")
    return match["registry"].lower(), match["repo"], match["tag"]


def pack(folder, out):
    """A reproducible tar.gz of the folder's regular files (hidden ones and links left out) at the archive root;
    returns (sha256 hex, size)."""
    entries = []
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(current, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if os.path.islink(path) or not os.path.isfile(path) or name.startswith("."):
                continue
            entries.append((rel, path))
    if not entries:
        raise PushError(f"{folder}: no files to push")
    with open(out, "wb") as raw:
        import gzip
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            for rel, path in entries:
                info = tar.gettarinfo(path, arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                info.mode = 0o644
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
    sha = hashlib.sha256()
    with open(out, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest(), os.path.getsize(out)


class Registry:
    """The OCI distribution calls a push needs (check, upload, manifest), with one auth challenge answered."""

    def __init__(self, registry, ca_file=None, plain_http=False, username=None, password=None, timeout=300):
        self.registry, self.timeout = registry, timeout
        self.scheme = "http" if plain_http else "https"
        pem = None
        if ca_file:
            try:
                pem = open(ca_file).read()
            except OSError as exc:
                raise PushError(f"--ca-file: {exc}") from None
        try:
            self.context = tls_context(pem, registry) if not plain_http else None
        except FetchError as exc:
            raise PushError(str(exc)) from None
        self.username, self.password = username, password
        self.auth = None

    def url(self, path):
        return f"{self.scheme}://{self.registry}{path}"

    def _send(self, method, url, body=None, headers=None):
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if self.auth:
            request.add_header("Authorization", self.auth)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout, context=self.context)
        except urllib.error.HTTPError as exc:
            return exc
        except urllib.error.URLError as exc:
            raise PushError(f"{self.registry}: {exc.reason}") from None

    def request(self, method, url, body=None, headers=None, scope=None):
        """Send; on a 401 answer the challenge (basic, or a bearer token for `scope`) and send once more."""
        resp = self._send(method, url, body() if callable(body) else body, headers)
        if resp.status == 401 and not self.auth:
            resp.close()
            self.auth = self._answer(resp.headers.get("WWW-Authenticate", ""), scope)
            resp = self._send(method, url, body() if callable(body) else body, headers)
        return resp

    def _basic(self):
        if self.username is None:
            raise PushError(f"{self.registry} requires credentials (--username, password on stdin)")
        return "Basic " + base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()

    def _answer(self, challenge, scope):
        if not challenge.lower().startswith("bearer"):
            return self._basic()
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise PushError(f"{self.registry} sent an unusable auth challenge")
        if scope:
            params["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers={"Authorization": self._basic()} if self.username else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as resp:
                body = json.loads(resp.read(1 << 20))
        except (urllib.error.URLError, ValueError) as exc:
            raise PushError(f"{self.registry}: the token request failed ({exc})") from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise PushError(f"{self.registry}: the token answer carried no token")
        return f"Bearer {token}"

    def push_blob(self, repo, digest, size, opener):
        scope = f"repository:{repo}:pull,push"
        with self.request("HEAD", self.url(f"/v2/{repo}/blobs/{digest}"), scope=scope) as resp:
            if resp.status == 200:
                return False
        with self.request("POST", self.url(f"/v2/{repo}/blobs/uploads/"), b"", scope=scope) as resp:
            if resp.status != 202 or not resp.headers.get("Location"):
                raise PushError(f"{self.registry}/{repo}: upload refused (HTTP {resp.status} {_text(resp)})")
            location = urllib.parse.urljoin(self.url("/"), resp.headers["Location"])
        url = location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        with self.request("PUT", url, opener, {"Content-Type": "application/octet-stream",
                                               "Content-Length": str(size)}, scope) as resp:
            if resp.status != 201:
                raise PushError(f"{self.registry}/{repo}: blob upload failed (HTTP {resp.status} {_text(resp)})")
        return True

    def push_manifest(self, repo, tag, manifest):
        body = json.dumps(manifest, separators=(",", ":")).encode()
        with self.request("PUT", self.url(f"/v2/{repo}/manifests/{tag}"), body,
                          {"Content-Type": MANIFEST_TYPE}, f"repository:{repo}:pull,push") as resp:
            if resp.status != 201:
                raise PushError(f"{self.registry}/{repo}:{tag}: manifest refused (HTTP {resp.status} {_text(resp)})")
        return "sha256:" + hashlib.sha256(body).hexdigest()


def _text(resp):
    try:
        return resp.read(300).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - only for the message
        return ""


def push_folder(registry, repo, tag, folder, log=print):
    """Push `folder` as `registry/repo:tag` (a Registry); returns the manifest digest."""
    work = tempfile.mkdtemp(prefix="foundry-push-")
    try:
        layer = os.path.join(work, "model.tar.gz")
        hexd, size = pack(folder, layer)
        sent = registry.push_blob(repo, f"sha256:{hexd}", size, lambda: open(layer, "rb"))
        config = b"{}"
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        registry.push_blob(repo, config_digest, len(config), lambda: config)
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
                    "layers": [{"mediaType": LAYER_TYPE, "digest": f"sha256:{hexd}", "size": size,
                                "annotations": {"org.opencontainers.image.title": "model.tar.gz"}}]}
        digest = registry.push_manifest(repo, tag, manifest)
        log(f"pushed {registry.registry}/{repo}:{tag} ({size} bytes{'' if sent else ', layer already there'}) "
            f"{digest}")
        return digest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def catalog_folder(base, folder, asset):
    """The folder a mirror holds for a catalog model: the one with genai_config.json (else the model folder), with
    `inference_model.json` naming the model; returns (folder to push, temporary folder to remove or None)."""
    for current, dirs, files in os.walk(base):
        dirs.sort()
        if "genai_config.json" in files:
            folder = current
            break
    if os.path.isfile(os.path.join(folder, "inference_model.json")):
        return folder, None
    work = tempfile.mkdtemp(prefix="foundry-push-model-")
    target = os.path.join(work, "model")
    shutil.copytree(folder, target, symlinks=False, ignore=shutil.ignore_patterns(".*"))
    with open(os.path.join(target, "inference_model.json"), "w") as fh:
        json.dump({"Name": f"{asset.name}:{asset.version}"}, fh)
    return target, work


def add_parser(verbs):
    push = verbs.add_parser("push", help="push a model folder into an OCI registry (a BYO model or a catalog mirror)")
    push.add_argument("dir", metavar="DIR", help="a model folder (with --mirror: also a Foundry Local cache)")
    push.add_argument("ref", metavar="REF", nargs="?", help="registry/repository:tag (not with --mirror)")
    push.add_argument("--mirror", metavar="REGISTRY", help="push catalog models to this mirror registry (host[:port])")
    push.add_argument("--prefix", default="foundry-models",
                      help="the mirror's repository prefix (catalog.mirror.repositoryPrefix; default %(default)s)")
    push.add_argument("--name", help="with --mirror: the model name (default: inference_model.json or the folder)")
    push.add_argument("--version", help="with --mirror: the model version")
    push.add_argument("--ca-file", help="PEM bundle of the registry's CA (in addition to the system's)")
    push.add_argument("--plain-http", action="store_true", help="the registry speaks plain http (no TLS)")
    push.add_argument("--username", help="registry user name (the password from stdin or FOUNDRY_REGISTRY_PASSWORD)")
    push.add_argument("--password-stdin", action="store_true", help="read the password from stdin")


def main(args):
    from . import model_import
    try:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else \
            os.environ.get("FOUNDRY_REGISTRY_PASSWORD")
        if bool(args.mirror) == bool(args.ref):
            raise PushError("give either REF (registry/repository:tag) or --mirror REGISTRY")
        if args.mirror:
            if not names.OCI_PATH.fullmatch(args.prefix):
                raise PushError(f"--prefix {args.prefix!r} is not a lower-case repository path")
            registry = Registry(args.mirror.lower(), args.ca_file, args.plain_http, args.username, password)
            found = model_import.find_models(args.dir)
            if (args.name or args.version) and len(found) > 1:
                raise PushError(f"{args.dir} holds {len(found)} models: --name/--version apply to one model only")
            for base, folder in found:
                asset = model_import.identify(base, folder, args.name, args.version)
                repo, tag = catalog_mirror.repository(args.prefix, asset.uri)
                source, temporary = catalog_folder(base, folder, asset)
                try:
                    push_folder(registry, repo, tag, source)
                finally:
                    if temporary:
                        shutil.rmtree(temporary, ignore_errors=True)
                print(f"  {asset.uri} -> {registry.registry}/{repo}:{tag} (pulled by clusters with "
                      f"catalog.mirror.registry={registry.registry})")
        else:
            host, repo, tag = parse_reference(args.ref)
            if not os.path.isdir(args.dir):
                raise PushError(f"{args.dir}: not a directory")
            push_folder(Registry(host, args.ca_file, args.plain_http, args.username, password), repo, tag, args.dir)
    except (PushError, model_import.ImportError_, catalog_mirror.MirrorError, OSError) as exc:
        print(f"foundry-inference models push: {exc}", file=sys.stderr)
        return 1
    return 0
