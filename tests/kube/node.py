"""The processes of a single-node Kubernetes inside a network namespace: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd, kubelet, kube-proxy and a docker-registry, plus a loopback forwarder to the apiserver.

Everything lives under one state directory and one network namespace (`ip netns add`), so `stop()` can remove every
process, mount, cgroup, iptables rule (they are all inside the namespace) and file it made; a crashed run leaves a
`node.json` the next start reads to clean up first. What a machine without systemd and without CAP_SYS_RESOURCE
needs: the cgroupfs driver (containerd and kubelet), containerd's `restrict_oom_score_adj = true` and kubelet's
`--oom-score-adj=0`, and `nsenter --net=` rather than `ip netns exec` (which remounts /sys and breaks runc's cgroup
lookup).

Addresses (only inside the namespace): node 10.250.0.1 with a default route that leads nowhere (both ends of its
veth pair stay in the namespace, so nothing leaves it); pods 10.244.0.0/24 on the CNI bridge, Services 10.96.0.0/16.
The apiserver listens on 10.250.0.1:6443 there and on a loopback port of the host (tests/kube/forward.py) for
the tests and the Helm SDK.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("FOUNDRY_KUBE_CACHE", Path.home() / ".cache" / "foundry-inference" / "kube"))
BIN = CACHE / "bin"
HERE = Path(__file__).resolve().parent
NODE_IP = "10.250.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
API_PORT = 6443
REGISTRY_PORT = 5000
NODE_NAME = "foundry-node"
TOKEN = "admin-token"
PAUSE_IMAGE = "localhost/foundry/pause:1"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def log(msg, **fields):
    print(json.dumps({"component": "kube-node", "msg": msg, **fields}), file=sys.stderr, flush=True)


def run(*args, check=True, **kwargs):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def wait(predicate, timeout, what, proc=None, log_path=None, interval=0.25):
    """Wait for predicate() to be true; a component that exits or a timeout raises with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - anything short of success means "not yet"
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{_tail(log_path)}")


def _tail(path, n=3000):
    try:
        return Path(path).read_text(errors="replace")[-n:] if path else ""
    except OSError:
        return ""


def netns_name(state):
    return "foundry-" + hashlib.sha256(str(Path(state).resolve()).encode()).hexdigest()[:10]


class Node:
    """One node's processes under `state` (a directory; short paths keep unix sockets under 108 bytes)."""

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet",
                  "kube-proxy", "registry", "forward")

    def __init__(self, state):
        self.state = Path(state).resolve()
        self.netns = netns_name(self.state)
        self.netns_path = f"/run/netns/{self.netns}"
        self.sock = self.state / "containerd.sock"
        self.info_path = self.state / "node.json"
        self.pids = {}
        self.api_local_port = None

    # --- network namespace -------------------------------------------------------------------------------------
    def ns(self, *args):
        return ["nsenter", f"--net={self.netns_path}", "--", *map(str, args)]

    def create_netns(self):
        run("ip", "netns", "add", self.netns)
        for cmd in (("link", "set", "lo", "up"), ("link", "add", "eth0", "type", "veth", "peer", "name", "eth0-end"),
                    ("link", "set", "eth0-end", "up"),
                    ("addr", "add", f"{NODE_IP}/24", "dev", "eth0"), ("link", "set", "eth0", "up"),
                    ("route", "add", "default", "via", "10.250.0.254", "dev", "eth0")):
            run("ip", "-n", self.netns, *cmd)
        for key, value in (("net.ipv4.ip_forward", 1), ("net.bridge.bridge-nf-call-iptables", 1),
                           ("net.ipv4.conf.all.route_localnet", 1)):
            run(*self.ns("sysctl", "-qw", f"{key}={value}"), check=False)

    # --- the node's own pod-log folders -------------------------------------------------------------------------
    @property
    def mntns_path(self):
        return self.state / "ns" / "mnt"

    def create_mntns(self):
        """A mount namespace for containerd and the kubelet where /var/log/pods and /var/log/containers are this
        node's own folders (bind mounts of state/podlogs and state/containerlogs). Those paths are fixed in the 1.20
        kubelet, and its garbage collector deletes every pod-log folder there whose pod it does not know: two nodes on
        one machine (the harness test's second cluster, another session's) would delete each other's logs, and
        `pods/log` would fail. Propagation is slave: the host's mounts still reach the node, the node's stay in it."""
        holder = self.mntns_path.parent
        holder.mkdir()
        run("mount", "--bind", holder, holder)                   # a namespace file needs a private parent mount
        run("mount", "--make-private", holder)
        self.mntns_path.touch()
        binds = []
        for name, target in (("podlogs", "/var/log/pods"), ("containerlogs", "/var/log/containers")):
            (self.state / name).mkdir()
            Path(target).mkdir(parents=True, exist_ok=True)
            binds.append(f"mount --bind {self.state / name} {target}")
        run("unshare", f"--mount={self.mntns_path}", "--propagation", "slave", "sh", "-c", " && ".join(binds))

    # --- processes ---------------------------------------------------------------------------------------------
    def spawn(self, name, args, in_netns=True, env=None, own_mounts=False):
        """Start a component (in the node's network namespace; with own_mounts, also in its mount namespace)."""
        path = self.state / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.ns(*args) if in_netns else [str(a) for a in args]
        if own_mounts:
            argv = ["nsenter", f"--mount={self.mntns_path}", *argv[1:]]
        with open(path, "ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        self.pids[name] = proc.pid
        self.save()
        return proc, path

    def save(self):
        self.info_path.write_text(json.dumps({"netns": self.netns, "pids": self.pids,
                                              "api_local_port": self.api_local_port}))

    def alive(self, name):
        pid = self.pids.get(name)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return False

    def log_tail(self, name, n=3000):
        return _tail(self.state / "logs" / f"{name}.log", n)

    # --- teardown ----------------------------------------------------------------------------------------------
    def stop(self):
        """Remove every process, container, mount, cgroup, netns and file of this node (also after a crash)."""
        if self.info_path.exists():
            try:
                saved = json.loads(self.info_path.read_text())
                self.pids = {**saved.get("pids", {}), **self.pids}
            except ValueError:
                pass
        for name in ("forward", "kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager", "registry"):
            self._kill(name)
        self._kill_pods()
        for name in ("containerd", "kube-apiserver", "etcd"):
            self._kill(name)
        self._kill_shims()
        self._unmount()
        self._remove_cgroups()
        if Path(self.netns_path).exists():
            run("ip", "netns", "delete", self.netns, check=False)
        for path in Path("/var/lib/cni/results").glob(f"{self.netns}-*"):
            path.unlink(missing_ok=True)
        self.pids = {}

    def _kill(self, name, timeout=10):
        pid = self.pids.get(name)
        if not pid:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            self.pids.pop(name, None)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive(name):
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        self.pids.pop(name, None)

    @property
    def cgroup_root(self):
        """The kubelet's --cgroup-root: its own, so two nodes (or another kubelet) never share pod cgroups."""
        return f"/{self.netns}"

    def create_cgroup_root(self):
        for controller in CGROUP_ROOT.iterdir():
            if controller.name == "unified" or not (controller / "cgroup.procs").exists():
                continue
            path = controller / self.netns
            path.mkdir(exist_ok=True)
            if controller.name == "cpuset":     # a v1 cpuset starts empty: inherit the parent's cpus and mems
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((controller / knob).read_text())

    def _kubepods(self):
        return [d for d in CGROUP_ROOT.glob(f"*/{self.netns}") if d.is_dir()]

    def _kill_pods(self):
        """Every process of this node's pod cgroups (pause, containers) gets SIGKILL; their shims then exit."""
        for _ in range(20):
            pids = set()
            for root in self._kubepods():
                # os.walk, not rglob: a container's cgroup vanishes while it is walked (it exits as we kill)
                for current, _dirs, files in os.walk(root):
                    if "cgroup.procs" not in files:
                        continue
                    try:
                        pids.update(int(p) for p in Path(current, "cgroup.procs").read_text().split())
                    except OSError:
                        pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.25)

    def _kill_shims(self):
        marker = str(self.sock).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except OSError:
                    pass
        for sock in Path("/run/containerd/s").glob("*"):
            # a shim's socket whose shim is gone (ours were just killed): connecting is refused
            import socket
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(sock))
                except ConnectionRefusedError:
                    sock.unlink(missing_ok=True)
                except OSError:
                    pass

    def _unmount(self):
        prefix = str(self.state) + "/"
        for _ in range(5):
            mounts = [line.split()[1].replace("\\040", " ") for line in Path("/proc/mounts").read_text().splitlines()]
            ours = [m for m in mounts if m.startswith(prefix) or m == self.netns_path]
            if not ours:
                return
            for mount in sorted(ours, key=len, reverse=True):
                run("umount", "-l", mount, check=False)

    def _remove_cgroups(self):
        for root in self._kubepods():
            for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    path.rmdir()
                except OSError:
                    pass
            try:
                root.rmdir()
            except OSError:
                pass


def kill_pod_processes_matching(node, text, pod_uid=None):
    """Test helper: SIGKILL the processes of `node`'s pods (of the pod `pod_uid` only, when given) whose command line
    contains `text`; returns the pids."""
    hit = []
    for root in CGROUP_ROOT.glob(f"pids/{node.netns}"):
        for procs in root.rglob("cgroup.procs"):
            if pod_uid and f"pod{pod_uid}" not in procs.parts:
                continue
            for pid in procs.read_text().split():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if text in cmdline:
                    os.kill(int(pid), signal.SIGKILL)
                    hit.append(int(pid))
    return hit


def which_all(*names):
    missing = [n for n in names if not shutil.which(n) and not os.access(f"/usr/sbin/{n}", os.X_OK)]
    return missing
