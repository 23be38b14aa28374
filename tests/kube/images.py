"""The platform's images for the test cluster, built from docker/*.Dockerfile with buildah, without any registry pull.

1. base: `debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates bookworm` from the Debian
   mirror of the machine's apt sources, turned into an image (`FROM scratch` + `ADD rootfs.tar /`).
2. every Dockerfile the chart's images come from, `FROM` that base (`--build-arg BASE=...`): platform (operator,
   control plane, model fetcher), predictive, chat, and the TLS sidecar from Debian's nginx-light
   (docker/nginx.Dockerfile; the chart's default stays the official nginx image).
3. the samples image (docker/samples.Dockerfile): the platform image plus the catalog's sample models prepared here
   (`foundry_inference.samples.prepare`), the model fetcher of the test cluster, so builtin samples deploy offline.
4. each image is saved as an OCI archive and imported into the node's containerd (`ctr -n k8s.io images import`).

Cache (~/.cache/foundry-inference/images): an archive is named by a hash of its Dockerfile, its locked Python
requirements (docker/requirements/<Dockerfile>.txt), the base's key and the package source it copies (pyproject.toml,
setup.cfg, README.md, the Python packages, the chart's catalog and CRDs); an archive already there is imported
without a build; superseded archives of an image (other keys, unused for an hour) are removed after each build
(`prune`). `python tests/kube/images.py` builds them all (progress on
stderr) and prints {name: {ref, archive, bytes, seconds}}. FOUNDRY_DEBIAN_MIRROR overrides the mirror taken from the
apt sources.
A build step that fails names the step and shows its output's tail (e.g. no network to the Debian mirror or PyPI).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FOUNDRY_IMAGE_CACHE", Path.home() / ".cache" / "foundry-inference" / "images"))
BUILDAH = ["buildah", "--root", str(CACHE / "buildah" / "root"), "--runroot", str(CACHE / "buildah" / "run"),
           "--storage-driver", "overlay"]
BASE_PACKAGES = "python3,python3-pip,ca-certificates"
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "foundry_inference", "operator", "apps", "auth",
           "charts/foundry-inference/files/catalog.json", "charts/foundry-inference/crds")
# chart image name -> Dockerfile
IMAGES = {"foundry-inference": "platform", "foundry-inference-predictive": "predictive",
          "foundry-inference-chat": "chat", "foundry-inference-nginx": "nginx"}
PREFIX = "localhost/foundry-inference"
SAMPLES = "foundry-inference-samples"


class BuildError(RuntimeError):
    pass


def log(msg, **fields):
    print(json.dumps({"component": "kube-images", "msg": msg, **fields}), file=sys.stderr, flush=True)


def step(name, args, **kwargs):
    """Run one build step; a failure raises BuildError naming the step with the output's tail."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-3000:]
        raise BuildError(f"image build step '{name}' failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def debian_mirror():
    if os.environ.get("FOUNDRY_DEBIAN_MIRROR"):
        return os.environ["FOUNDRY_DEBIAN_MIRROR"]
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if path.exists():
            match = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b", path.read_text())
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def _hash_tree(h, path):
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and "__pycache__" not in child.parts and child.suffix != ".pyc":
                h.update(str(child.relative_to(REPO)).encode())
                h.update(child.read_bytes())
    elif path.exists():
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())


def source_key():
    h = hashlib.sha256()
    for name in SOURCES:
        _hash_tree(h, REPO / name)
    return h.hexdigest()[:16]


def base_image():
    """(ref, key) of the debootstrap base, built and cached when missing."""
    mirror = debian_mirror()
    key = hashlib.sha256(f"bookworm|minbase|{BASE_PACKAGES}|python-symlink|1".encode()).hexdigest()[:12]
    ref = f"{PREFIX}/debian-base:{key}"
    if _has(ref):
        return ref, key
    archive = CACHE / f"debian-base-{key}.tar"
    if archive.exists():
        step("buildah pull base", [*BUILDAH, "pull", f"oci-archive:{archive}"])
        step("buildah tag base", [*BUILDAH, "tag", _archive_name(archive), ref])
        return ref, key
    log("debootstrap bookworm (about a minute)", mirror=mirror)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        step("debootstrap (needs the Debian mirror)", ["debootstrap", "--variant=minbase",
                                                       f"--include={BASE_PACKAGES}", "bookworm", rootfs, mirror])
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
        (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True)
        (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        step("tar the base rootfs", ["tar", "-C", rootfs, "--numeric-owner", "-cf", ctx / "rootfs.tar", "."])
        shutil.rmtree(rootfs)
        (ctx / "Dockerfile").write_text("FROM scratch\nADD rootfs.tar /\nRUN ln -sf python3 /usr/bin/python\n"
                                        'CMD ["/bin/sh"]\n')
        step("buildah bud base", [*BUILDAH, "bud", "--pull=never", "--network=host", "-t", ref, ctx])
    step("buildah push base", [*BUILDAH, "push", ref, f"oci-archive:{archive}:{ref}"])
    log("base image built", ref=ref, seconds=round(time.monotonic() - started, 1))
    return ref, key


def _archive_name(archive):
    return f"oci-archive:{archive}"


def _has(ref):
    return subprocess.run([*BUILDAH, "inspect", "--type", "image", ref], capture_output=True).returncode == 0


def host_mounts():
    """The host's CA bundle and pip configuration (a TLS-inspecting egress proxy, local wheel indexes), bind-mounted
    read-only into RUN steps only: they take part in the build, never in the image."""
    args = []
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/opt/wheels", "/opt/pypi", "/opt/pypi-more"):
        if os.path.exists(path):
            args += ["--volume", f"{path}:{path}:ro"]
    return args


def image_key(dockerfile, base_key, sources):
    h = hashlib.sha256()
    h.update((REPO / "docker" / f"{dockerfile}.Dockerfile").read_bytes())
    h.update(base_key.encode())
    if dockerfile != "nginx":
        h.update(sources.encode())
    lock = REPO / "docker" / "requirements" / f"{dockerfile}.txt"     # the locked Python requirements
    if lock.exists():
        h.update(lock.read_bytes())
    return h.hexdigest()[:16]


def build_all():
    """{chart image name: {ref, archive, bytes, seconds, cached}} with every archive present."""
    CACHE.mkdir(parents=True, exist_ok=True)
    sources = source_key()
    base_ref = base_key = None
    out = {}
    for name, dockerfile in IMAGES.items():
        if base_key is None:
            base_key = hashlib.sha256(f"bookworm|minbase|{BASE_PACKAGES}|python-symlink|1".encode()).hexdigest()[:12]
        key = image_key(dockerfile, base_key, sources)
        ref = f"{PREFIX}/{name}:{key}"
        archive = CACHE / f"{name}-{key}.tar"
        started = time.monotonic()
        cached = archive.exists()
        if not cached:
            if base_ref is None:
                base_ref, base_key = base_image()
            log(f"building {name} from docker/{dockerfile}.Dockerfile (minutes: pip downloads)")
            step(f"buildah bud docker/{dockerfile}.Dockerfile", [
                *BUILDAH, "bud", "--pull=never", "--network=host", "--layers=false", *host_mounts(), "-f",
                REPO / "docker" / f"{dockerfile}.Dockerfile", "--build-arg", f"BASE={base_ref}", "-t", ref, REPO])
            tmp = Path(str(archive) + ".tmp")
            tmp.unlink(missing_ok=True)
            step(f"buildah push {name}", [*BUILDAH, "push", ref, f"oci-archive:{tmp}:{ref}"])
            tmp.rename(archive)
            if name != "foundry-inference":       # the samples image is built FROM the platform image
                subprocess.run([*BUILDAH, "rmi", ref], capture_output=True)
            log(f"built {name}", seconds=round(time.monotonic() - started, 1), bytes=archive.stat().st_size)
        out[name] = {"ref": ref, "archive": str(archive), "bytes": archive.stat().st_size, "cached": cached,
                     "seconds": round(time.monotonic() - started, 1)}
    out[SAMPLES] = build_samples(out["foundry-inference"])
    in_use = [Path(image["archive"]) for image in out.values()]
    in_use += [CACHE / f"debian-base-{base_key}.tar"]
    prune(CACHE, in_use)
    return out


_ARCHIVE = re.compile(r"^(?P<name>[a-z0-9-]+?)-(?P<key>[0-9a-f]{12}|[0-9a-f]{16})\.tar$")
PRUNE_GRACE_S = 60 * 60


def prune(cache, in_use, now=None):
    """Remove superseded archives (each source change leaves ~1.3 GB behind): of each image, every archive but the
    one in use - which is touched, so its mtime is its last use - except those used in the last PRUNE_GRACE_S
    (another session on this machine, working on other sources, may be about to use it again). Other files stay.
    Returns the removed paths."""
    now = time.time() if now is None else now
    keep = {Path(p).name for p in in_use}
    for path in in_use:
        if Path(path).exists():
            os.utime(path)
    names = {*IMAGES, SAMPLES, "debian-base"}
    removed = []
    for path in sorted(Path(cache).glob("*.tar")):
        match = _ARCHIVE.match(path.name)
        if not match or match["name"] not in names or path.name in keep:
            continue
        try:
            if now - path.stat().st_mtime < PRUNE_GRACE_S:
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    if removed:
        log("removed superseded image archives", archives=[p.name for p in removed])
    return removed


def _in_buildah(ref, archive):
    if not _has(ref):
        step(f"buildah pull {ref}", [*BUILDAH, "pull", f"oci-archive:{archive}"])


def build_samples(platform):
    """The samples image (docker/samples.Dockerfile): the platform image plus the prepared sample folders."""
    from foundry_inference import samples
    folders = {name: samples.prepare(name, lambda m: log("samples: " + m)) for name in samples.NAMES}
    h = hashlib.sha256((REPO / "docker" / "samples.Dockerfile").read_bytes() + b"|a+rX")
    h.update(platform["ref"].encode())
    for name, folder in sorted(folders.items()):
        h.update(f"{name}={folder.name}".encode())
    key = h.hexdigest()[:16]
    ref = f"{PREFIX}/{SAMPLES}:{key}"
    archive = CACHE / f"{SAMPLES}-{key}.tar"
    started = time.monotonic()
    cached = archive.exists()
    if not cached:
        _in_buildah(platform["ref"], platform["archive"])
        with tempfile.TemporaryDirectory(dir=CACHE) as ctx:
            for name, folder in folders.items():
                shutil.copytree(folder, Path(ctx) / "samples" / name)
            # the cache's folders are private (0700); in the image any user id must read them
            step("chmod the samples", ["chmod", "-R", "a+rX,go-w", Path(ctx) / "samples"])
            step("buildah bud docker/samples.Dockerfile", [
                *BUILDAH, "bud", "--pull=never", "--layers=false", "-f", REPO / "docker" / "samples.Dockerfile",
                "--build-arg", f"PLATFORM={platform['ref']}", "-t", ref, ctx])
        tmp = Path(str(archive) + ".tmp")
        tmp.unlink(missing_ok=True)
        step("buildah push samples", [*BUILDAH, "push", ref, f"oci-archive:{tmp}:{ref}"])
        tmp.rename(archive)
        for r in (ref, platform["ref"]):
            subprocess.run([*BUILDAH, "rmi", r], capture_output=True)
        log(f"built {SAMPLES}", seconds=round(time.monotonic() - started, 1), bytes=archive.stat().st_size)
    return {"ref": ref, "archive": str(archive), "bytes": archive.stat().st_size, "cached": cached,
            "seconds": round(time.monotonic() - started, 1)}


def ensure(node):
    """Build what is missing and import every image into the node's containerd; returns build_all()'s answer."""
    from tests.kube import oci
    built = build_all()
    present = oci.images(node.sock)
    for name, image in built.items():
        if image["ref"] not in present:
            log(f"importing {name} into containerd")
            oci.import_archive(node.sock, image["archive"])
    return built


def write_values(node, built):
    """A Helm values file pointing the chart at the imported images and at the cluster's registry (BYO models and
    the catalog mirror); returns its path."""
    import yaml
    refs = {name: image["ref"] for name, image in built.items()}
    values = {"images": {
        "platform": refs["foundry-inference"], "pullPolicy": "Never",
        "roles": {"generative-cpu": refs["foundry-inference-chat"],
                  "generative-cpu-byo": refs["foundry-inference-chat"],
                  "predictive-cpu-byo": refs["foundry-inference-predictive"],
                  "nginx": refs["foundry-inference-nginx"], "model-fetcher": refs[SAMPLES]}}}
    # the cluster's own registry, as an on-prem admin declares theirs: allow-listed (a private address), its CA
    # trusted for it alone, and used as the catalog mirror (azureml:// variants are pulled from it: no internet)
    registry = node.info()["registry"]
    values["api"] = {"config": {"registryAllowlist": [registry]}}
    values["registryTrust"] = {"caBundles": {registry: Path(node.info()["registry_ca"]).read_text()}}
    values["catalog"] = {"mirror": {"registry": registry}}
    path = node.state / "local-images-values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)


def main():
    try:
        print(json.dumps(build_all(), indent=1))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
