"""OCI image layouts written by hand, and importing image archives into the node's containerd.

- `pause_image(cache)`: the pod sandbox image, a static C binary (`gcc -Os -static`) in an otherwise empty rootfs,
  written as an OCI layout tar; cached by the hash of its source.
- `import_archive(sock, tar)`: `ctr -n k8s.io images import` (the kubelet's namespace).
"""
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop); signal(SIGTERM, stop); signal(SIGCHLD, reap);
  for (;;) pause();
  return 0;
}
"""


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def write_layout(path, name, files, config):
    """An OCI layout tar at `path` of one image named `name` (repo:tag) with one layer of `files`
    ({path in image: (bytes, mode)}) and the image `config` (Entrypoint, User...)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for member, (data, mode) in sorted(files.items()):
            _add(layer, member, data, mode)
    diff_id = _digest(raw.getvalue())
    compressed = gzip.compress(raw.getvalue(), mtime=0)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": [diff_id]}}, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(compressed),
                    "size": len(compressed)}]}, sort_keys=True).encode()
    tag = name.rsplit(":", 1)[1]
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}]})
    tmp = Path(str(path) + ".tmp")
    with tarfile.open(tmp, "w") as out:
        _add(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(out, "index.json", index.encode())
        for blob in (cfg, manifest, compressed):
            _add(out, "blobs/sha256/" + _digest(blob).split(":")[1], blob)
    tmp.rename(path)
    return path


def pause_image(cache, name):
    """The cached pause image archive (built when missing)."""
    key = hashlib.sha256((PAUSE_C + name).encode()).hexdigest()[:16]
    path = Path(cache) / f"pause-{key}.tar"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pause.c"
        src.write_text(PAUSE_C)
        subprocess.run(["gcc", "-Os", "-static", "-o", f"{tmp}/pause", str(src)], check=True, capture_output=True)
        subprocess.run(["strip", f"{tmp}/pause"], check=False)
        binary = Path(f"{tmp}/pause").read_bytes()
    return write_layout(path, name, {"pause": (binary, 0o755)}, {"Entrypoint": ["/pause"], "User": "65535:65535"})


def import_archive(sock, archive):
    args = ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "import", "--snapshotter", "overlayfs"]
    proc = subprocess.run([*args, str(archive)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def images(sock):
    out = subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "images", "ls", "-q"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())
