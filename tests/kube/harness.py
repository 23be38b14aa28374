"""A real Kubernetes control plane on loopback for tests: etcd + kube-apiserver + kube-controller-manager.

Like controller-runtime's envtest: binaries built once by tests/kube/build-kube.sh (cached under
~/.cache/foundry-inference/kube/bin), started on free ports, the chart's CRDs installed, an admin kubeconfig and
static non-admin users (alice in group `devs`, bob with no group) handed to tests. Pods never run (no scheduler or
kubelet): tests patch Deployment status to simulate readiness. A full node where pods do run (kubelet, containerd,
kube-proxy) is tests/kube/cluster.py (tests/e2e/test_cluster.py).

Run by hand:  .venv/bin/python tests/kube/harness.py   (prints the admin kubeconfig path; Ctrl-C stops everything)
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CACHE = Path(os.environ.get("FOUNDRY_KUBE_CACHE", Path.home() / ".cache" / "foundry-inference" / "kube"))
BIN = CACHE / "bin"
REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "charts" / "foundry-inference" / "crds"
USERS = {"admin": ("admin-token", ["system:masters"]), "alice": ("alice-token", ["devs"]), "bob": ("bob-token", [])}


def _die_with_parent():
    """Children get SIGTERM when the test process dies, even by SIGKILL, so no cluster outlives its run (Linux)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def binaries_available():
    return (BIN / "kube-apiserver").exists() and (BIN / "kube-controller-manager").exists() and shutil.which("etcd")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - anything short of success means "not yet"
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout}s")


class KubeCluster:
    def __init__(self, workdir=None):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="foundry-kube-"))
        self.procs = {}
        self.etcd_port = _free_port()
        self.port = _free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = str(self.dir / "admin.kubeconfig")

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, crds=True):
        if not binaries_available():
            raise RuntimeError(f"Kubernetes test binaries missing in {BIN}: run tests/kube/build-kube.sh")
        self._write_credentials()
        self._start_etcd()
        self.start_apiserver()
        self._write_kubeconfigs()
        self._start_controller_manager()
        if crds:
            self.install_crds()
        return self

    def _spawn(self, name, args):
        log = self.dir / f"{name}.log"
        fh = open(log, "ab")
        self.procs[name] = (subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_die_with_parent), log)
        fh.close()
        return self.procs[name]

    def _write_credentials(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.dir / "sa.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                                            serialization.NoEncryption()))
        (self.dir / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        lines = [f'{token},{user},{user}-uid,"{",".join(groups)}"' for user, (token, groups) in USERS.items()]
        (self.dir / "tokens.csv").write_text("\n".join(lines) + "\n")

    def _start_etcd(self):
        url = f"http://127.0.0.1:{self.etcd_port}"
        proc, log = self._spawn("etcd", [
            shutil.which("etcd"), "--data-dir", str(self.dir / "etcd"), "--listen-client-urls", url,
            "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{_free_port()}",
            "--log-level", "warn"])
        import urllib.request
        _wait(lambda: b"true" in urllib.request.urlopen(f"{url}/health", timeout=1).read(), 30, "etcd", proc, log)

    def start_apiserver(self):
        proc, log = self._spawn("kube-apiserver", [
            str(BIN / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.dir / 'certs'}", "--service-cluster-ip-range=10.0.0.0/16",
            "--authorization-mode=RBAC", f"--token-auth-file={self.dir / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.dir / 'sa.key'}",
            "--disable-admission-plugins=ServiceAccount", "--insecure-port=0", "--v=0"])
        import ssl
        import urllib.request
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

        def ready():
            req = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": "Bearer admin-token"})
            return urllib.request.urlopen(req, timeout=2, context=ctx).read() == b"ok"

        _wait(ready, 90, "kube-apiserver", proc, log)

    def stop_apiserver(self):
        self._stop("kube-apiserver")

    def _start_controller_manager(self):
        self._spawn("kube-controller-manager", [
            str(BIN / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--controllers=garbagecollector,deployment,replicaset,namespace", "--leader-elect=false",
            "--secure-port=0", "--port=0", "--concurrent-gc-syncs=5"])

    def _kubeconfig(self, user, token):
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "test", "cluster": {"server": self.server,
                                                       "certificate-authority": str(self.dir / "certs" /
                                                                                    "apiserver.crt")}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "test", "user": user}}]}

    def _write_kubeconfigs(self):
        for user, (token, _groups) in USERS.items():
            path = self.dir / f"{user}.kubeconfig"
            path.write_text(yaml.safe_dump(self._kubeconfig(user, token)))

    def user_kubeconfig(self, name):
        """Kubeconfig path of a static user: admin (system:masters), alice (group devs), bob (no groups)."""
        return str(self.dir / f"{name}.kubeconfig")

    def token_kubeconfig(self, name, token):
        """A kubeconfig for any bearer token (e.g. a ServiceAccount token from the TokenRequest API)."""
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(self._kubeconfig(name, token)))
        return str(path)

    def api_client(self, user="admin"):
        import kubernetes
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=self.user_kubeconfig(user), client_configuration=cfg)
        return kubernetes.client.ApiClient(cfg)

    def install_crds(self, directory=CRD_DIR):
        import kubernetes
        api = kubernetes.client.ApiextensionsV1Api(self.api_client())
        names = []
        for path in sorted(Path(directory).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                try:
                    api.create_custom_resource_definition(doc)
                except kubernetes.client.ApiException as exc:
                    if exc.status != 409:
                        raise RuntimeError(f"CRD {path.name} refused: {exc.body}") from None
                names.append(doc["metadata"]["name"])

        def established():
            for name in names:
                crd = api.read_custom_resource_definition(name)
                conds = {c.type: c.status for c in (crd.status.conditions or [])}
                if conds.get("Established") != "True":
                    return False
            return True

        _wait(established, 30, "CRDs established")
        return names

    def create_namespace(self, name):
        import kubernetes
        core = kubernetes.client.CoreV1Api(self.api_client())
        try:
            core.create_namespace({"metadata": {"name": name}})
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
        return name

    def _stop(self, name):
        entry = self.procs.pop(name, None)
        if entry is None:
            return
        proc, _log = entry
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self, keep_dir=False):
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop(name)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self, name):
        entry = self.procs.get(name)
        return Path(entry[1]).read_text(errors="replace") if entry else ""


def main():
    cluster = KubeCluster().start()
    print(json.dumps({"kubeconfig": cluster.kubeconfig, "server": cluster.server,
                      "users": {u: cluster.user_kubeconfig(u) for u in USERS}}), flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
