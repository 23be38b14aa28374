"""A real single-node Kubernetes for tests and for trying the chart: one command up, one command down.

    .venv/bin/python tests/kube/cluster.py up --state DIR      # builds what is missing (progress on stderr)
    .venv/bin/python tests/kube/cluster.py down --state DIR

`up` prints one JSON object: `kubeconfig` (admin, reaches the apiserver from the host through a loopback port),
`kubeconfig_in_netns` (the same inside the namespace), `netns` (use as `nsenter --net=<netns>`), `values` (Helm values
pointing the chart at the locally built images and the sample models), `registry` (host:port of the cluster's OCI
registry, reachable from inside the namespace; https with a CA of its own, `registry_ca`), `node_ip`, `state`. A
second `up` on a used state directory stops what is left of the previous run first (also after a crash). `down`
removes every process, container, mount, cgroup, the network namespace (with every iptables rule, which only ever
lived there) and the state directory.

Components: etcd, kube-apiserver, kube-controller-manager (all controllers), kube-scheduler, containerd + runc with
the CNI bridge/host-local/portmap plugins, kubelet (cgroupfs), kube-proxy (iptables mode), docker-registry. All of
them authenticate with one static admin token: this is a test cluster, not a hardened one. No cluster DNS: pods get
an empty resolv.conf; the chart's pods reach the apiserver through the `kubernetes` Service address.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.kube import oci, pki  # noqa: E402
from tests.kube.node import (  # noqa: E402
    API_PORT,
    API_SERVICE_IP,
    BIN,
    CACHE,
    HERE,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    REGISTRY_PORT,
    SERVICE_CIDR,
    TOKEN,
    Node,
    log,
    wait,
    which_all,
)

TOOLS = ("etcd", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "conntrack", "nsenter", "unshare",
         "ip", "gcc", "docker-registry")
CNI_DIR = "/usr/lib/cni"


class Cluster(Node):
    def up(self, images=True):
        started = time.monotonic()
        self.prerequisites()
        if self.info_path.exists() or Path(self.netns_path).exists():
            log("cleaning a previous run in the state directory", state=str(self.state))
            self.stop()
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        self.create_netns()
        self.create_mntns()
        self.write_config()
        self.start_etcd()
        self.start_apiserver()
        self.start_forward()
        self.start_controllers()
        self.start_containerd()
        self.start_kubelet()
        self.start_proxy()
        self.start_registry()
        self.wait_node_ready()
        info = self.info()
        if images:
            from tests.kube import images as image_builds
            info["images"] = image_builds.ensure(self)
            info["values"] = image_builds.write_values(self, info["images"])
        info["seconds"] = round(time.monotonic() - started, 1)
        (self.state / "cluster.json").write_text(json.dumps(info, indent=1))
        return info

    def info(self):
        return {"kubeconfig": str(self.state / "admin.kubeconfig"),
                "kubeconfig_in_netns": str(self.state / "netns.kubeconfig"), "netns": self.netns_path,
                "registry": f"{NODE_IP}:{REGISTRY_PORT}", "registry_ca": str(self.state / "pki" / "registry-ca.crt"),
                "node_ip": NODE_IP, "state": str(self.state),
                "ca": str(self.state / "pki" / "ca.crt"), "containerd": str(self.sock)}

    def prerequisites(self):
        missing = which_all(*TOOLS)
        bins = [b for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
                if not (BIN / b).exists()]
        if bins:
            log("building the Kubernetes binaries", missing=bins)
            subprocess.run(["bash", str(HERE / "build-kube.sh")], check=True)
        if missing:
            raise RuntimeError(f"missing tools: {', '.join(missing)} (bash scripts/setup.sh --test installs them)")
        if not Path(CNI_DIR, "bridge").exists():
            raise RuntimeError(f"CNI plugins missing in {CNI_DIR} (apt-get install containernetworking-plugins)")

    # --- configuration -------------------------------------------------------------------------------------------
    def write_config(self):
        s = self.state
        pki.write_pki(s / "pki", [NODE_IP, API_SERVICE_IP, "127.0.0.1"],
                      ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local", "localhost"])
        pki.write_tokens(s / "tokens.csv", {"admin": (TOKEN, ["system:masters"])})
        pki.write_kubeconfig(s / "netns.kubeconfig", f"https://{NODE_IP}:{API_PORT}", s / "pki" / "ca.crt", TOKEN)
        (s / "resolv.conf").write_text("# no cluster DNS in the test cluster\n")
        (s / "cni").mkdir()
        (s / "cni" / "10-foundry.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": self.netns, "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": str(s / "cni-ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (s / "containerd.toml").write_text(f"""version = 2
root = "{s}/containerd/root"
state = "{s}/containerd/state"
[grpc]
  address = "{self.sock}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_DIR}"
    conf_dir = "{s}/cni"
[plugins."io.containerd.internal.v1.opt"]
  path = "{s}/containerd/opt"
""")

    # --- control plane -------------------------------------------------------------------------------------------
    def _api_ready(self, kubeconfig_server=None):
        import ssl
        import urllib.request
        ctx = ssl.create_default_context(cafile=str(self.state / "pki" / "ca.crt"))
        server = kubeconfig_server or f"https://127.0.0.1:{self.api_local_port}"
        req = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
        return urllib.request.urlopen(req, timeout=2, context=ctx).read() == b"ok"

    def start_etcd(self):
        url = "http://127.0.0.1:2379"
        proc, path = self.spawn("etcd", ["etcd", "--data-dir", self.state / "etcd", "--listen-client-urls", url,
                                         "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:2380",
                                         "--log-level", "warn"])
        wait(lambda: self._ns_ok("etcdctl" if shutil.which("etcdctl") else None, url), 30, "etcd", proc, path)

    def _ns_ok(self, etcdctl, url):
        if etcdctl is None:
            time.sleep(1)
            return True
        return subprocess.run(self.ns(etcdctl, "--endpoints", url, "endpoint", "health"),
                              capture_output=True).returncode == 0

    def start_apiserver(self):
        p = self.state / "pki"
        self.api_proc = self.spawn("kube-apiserver", [
            BIN / "kube-apiserver", "--etcd-servers=http://127.0.0.1:2379", "--bind-address=0.0.0.0",
            f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT}", "--insecure-port=0",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=RBAC", "--allow-privileged=true",
            "--kubelet-preferred-address-types=InternalIP",
            f"--token-auth-file={self.state / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            "--v=0"])

    def start_forward(self):
        """The apiserver on a loopback port of the host (the apiserver itself only listens inside the namespace)."""
        path = self.state / "logs" / "forward.log"
        with open(path, "ab") as err:
            proc = subprocess.Popen([sys.executable, HERE / "forward.py", "--netns", self.netns_path, "--listen",
                                     "127.0.0.1:0", "--to", f"{NODE_IP}:{API_PORT}"], stdout=subprocess.PIPE,
                                    stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        self.api_local_port = int(proc.stdout.readline())
        self.pids["forward"] = proc.pid
        self.save()
        pki.write_kubeconfig(self.state / "admin.kubeconfig", f"https://127.0.0.1:{self.api_local_port}",
                             self.state / "pki" / "ca.crt", TOKEN)
        wait(self._api_ready, 90, "kube-apiserver", self.api_proc[0], self.api_proc[1])

    def start_controllers(self):
        k = self.state / "netns.kubeconfig"
        self.spawn("kube-controller-manager", [
            BIN / "kube-controller-manager", f"--kubeconfig={k}", "--leader-elect=false", "--secure-port=0",
            "--port=0", f"--service-account-private-key-file={self.state / 'pki' / 'sa.key'}",
            f"--root-ca-file={self.state / 'pki' / 'ca.crt'}", "--concurrent-gc-syncs=5",
            "--use-service-account-credentials=false", "--controllers=*,-nodeipam,-csrsigning"])
        self.spawn("kube-scheduler", [BIN / "kube-scheduler", f"--kubeconfig={k}", "--leader-elect=false",
                                      "--port=0", "--bind-address=127.0.0.1"])

    # --- node ----------------------------------------------------------------------------------------------------
    def start_containerd(self):
        proc, path = self.spawn("containerd", ["containerd", "--config", self.state / "containerd.toml"],
                                own_mounts=True)
        wait(lambda: subprocess.run(["ctr", "--address", self.sock, "version"], capture_output=True,
                                    timeout=5).returncode == 0, 30, "containerd", proc, path)
        archive = oci.pause_image(CACHE / "images", PAUSE_IMAGE)
        oci.import_archive(self.sock, archive)

    def start_kubelet(self):
        root = self.state / "kubelet"
        root.mkdir()
        self.create_cgroup_root()
        self.kubelet_proc = self.spawn("kubelet", [
            BIN / "kubelet", f"--kubeconfig={self.state / 'netns.kubeconfig'}", f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}", "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.sock}", "--cgroup-driver=cgroupfs", "--oom-score-adj=0",
            f"--cgroup-root={self.cgroup_root}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}", f"--resolv-conf={self.state / 'resolv.conf'}",
            "--fail-swap-on=false", "--read-only-port=0", "--healthz-port=0", "--port=10250",
            f"--volume-plugin-dir={root / 'plugins'}", "--serialize-image-pulls=false",
            "--eviction-hard=memory.available<50Mi,nodefs.available<1%,imagefs.available<1%",
            "--image-gc-high-threshold=100", "--image-gc-low-threshold=99", "--max-pods=40",
            "--runtime-request-timeout=5m", "--v=1"], own_mounts=True)

    def start_proxy(self):
        self.spawn("kube-proxy", [
            BIN / "kube-proxy", f"--kubeconfig={self.state / 'netns.kubeconfig'}", "--proxy-mode=iptables",
            f"--hostname-override={NODE_NAME}", f"--cluster-cidr={POD_CIDR}", "--conntrack-max-per-core=0",
            "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256"])

    def start_registry(self):
        """docker-registry on https with a CA of its own (not the cluster's), as an on-prem registry has."""
        (self.state / "registry").mkdir()
        _ca, cert, key = pki.write_ca_and_cert(self.state / "pki", "registry", [NODE_IP], [])
        config = self.state / "registry.yml"
        config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "warn"}, "storage": {"filesystem": {"rootdirectory":
                                                                                 str(self.state / "registry")},
                                                                  "delete": {"enabled": True}},
            "http": {"addr": f"{NODE_IP}:{REGISTRY_PORT}", "tls": {"certificate": cert, "key": key}}}))
        self.spawn("registry", ["docker-registry", "serve", config])

    def wait_node_ready(self, timeout=120):
        import kubernetes
        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(self.state /
                                                                                       "admin.kubeconfig")))

        def ready():
            node = api.read_node(NODE_NAME)
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        wait(ready, timeout, "node Ready", self.kubelet_proc[0], self.kubelet_proc[1], interval=1)

    def health(self):
        """Names of the components that are not running (empty when all are)."""
        return [name for name in self.COMPONENTS if name in self.pids and not self.alive(name)]


def down(state):
    node = Cluster(state)
    node.stop()
    shutil.rmtree(node.state, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="a real single-node Kubernetes for tests")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--state", required=True, help="state directory (keep the path short)")
    parser.add_argument("--no-images", action="store_true", help="up: skip building/importing the platform images")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("cluster.py needs root (network namespace, containers, cgroups)", file=sys.stderr)
        return 2
    if args.command == "down":
        down(args.state)
        return 0
    cluster = Cluster(args.state)
    try:
        info = cluster.up(images=not args.no_images)
    except BaseException:
        log("up failed: logs under " + str(cluster.state / "logs"))
        raise
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
