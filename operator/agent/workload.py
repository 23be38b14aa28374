"""One Deployment realised on this machine, the way a kubelet would run its pods.

- Volumes: Secret and ConfigMap volumes become directories of files under the workload's directory (rewritten when
  the object changes, so a rotated API key reaches the model server within a tick); emptyDirs become directories.
- The init container (the model fetcher) runs first, with its env resolved (secretKeyRef from the store), mount
  paths rewritten to the local directories and the agent's shared blob cache (FOUNDRY_FETCH_CACHE, its limit); it is
  retried with backoff and its failure (e.g. a model larger than the cache limit) is reported.
- Each replica is one model-server process with its own free port (PORT and `--port` rewritten, host 127.0.0.1);
  the nginx sidecar is a real nginx process rendered from the same template as the pod's ConfigMap, listening on
  127.0.0.1:<port> with the deployment's certificate and load-balancing over the replicas.
- Readiness is the container's readinessProbe path asked over HTTP on each replica's port.
"""
import base64
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request

from .. import fetch_log, names
from ..autoscale import params as scaling_params
from ..builders import nginx as nginx_builder
from .process import Process

log = logging.getLogger("foundry_inference.operator.agent")
CRASH_LOOP_RESTARTS = names.CRASH_LOOP_RESTARTS
# What a process the agent starts inherits from the agent's own environment; everything else (registry passwords,
# cloud tokens, whatever the shell that ran `up` held) stays out, as it would from a pod. The basics a process
# needs, GPU selection, the machine's proxy and CA settings, and the settings an admin gives the whole machine: the
# fetcher's and the samples' (caches, lab switches), the model servers' tuning (never their auth: the container's
# env sets that).
INHERITED_ENV = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "SYSTEMROOT",
    "XDG_CACHE_HOME", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "FOUNDRY_LOG_LEVEL", "FOUNDRY_LOG_FORMAT", "FOUNDRY_UVLOOP", "FOUNDRY_API_KEYS_RELOAD_S", "FOUNDRY_HTTP_FRONTEND",
    "FOUNDRY_TRACING",
    "FOUNDRY_FETCH_ALLOW_PRIVATE", "FOUNDRY_FETCH_INSECURE", "FOUNDRY_REGISTRY_ALLOWLIST",
    "FOUNDRY_SAMPLES_CACHE", "FOUNDRY_CHAT_BUILD_SCRIPT", "FOUNDRY_TEST_MODEL_CACHE", "FOUNDRY_AZURE_REGION",
    "FOUNDRY_EXECUTION_PROVIDERS", "FOUNDRY_INTRA_OP_THREADS", "FOUNDRY_INTRA_OP_SPINNING",
    "FOUNDRY_INTER_OP_THREADS", "FOUNDRY_MAX_BATCH_SIZE", "FOUNDRY_MAX_BATCH_WAIT_MS", "FOUNDRY_QUEUE_DEPTH",
    "FOUNDRY_TRANSCRIPTION_QUEUE_DEPTH", "FOUNDRY_MAX_BODY_BYTES", "FOUNDRY_AUDIO_MAX_BYTES",
    "FOUNDRY_MAX_IMAGE_PIXELS", "FOUNDRY_KEEP_ALIVE_TIMEOUT_S", "FOUNDRY_INLINE_RUN_MS", "FOUNDRY_ALLOW_NON_FINITE",
})
INHERITED_PREFIXES = ("FOUNDRY_CHAT_", "FOUNDRY_WHISPER_", "FOUNDRY_EMBEDDING_", "FOUNDRY_AZUREML_", "OTEL_", "LC_")


def inherited_env(environ=None):
    """The part of `environ` (default: the agent's environment) a started process may see."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items()
            if name in INHERITED_ENV or name.startswith(INHERITED_PREFIXES)}


def free_port(preferred=None):
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_command(argv):
    """The container command as a local command line: our own entry points run on this interpreter."""
    if not argv:
        return argv
    if argv[0] == "foundry-inference":
        return [sys.executable, "-m", "foundry_inference.cli", *argv[1:]]
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return list(argv)


def _write_files(directory, files, mode=0o600):
    """Make `directory` hold exactly `files` ({name: bytes}), each replaced atomically."""
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        path = os.path.join(directory, name)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    for name in os.listdir(directory):
        if name not in files and not name.startswith("."):
            os.unlink(os.path.join(directory, name))


def _probe(port, path, timeout=0.5):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:  # noqa: S310
            return 200 <= resp.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tcp_open(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class Workload:
    def __init__(self, deployment, data_dir, resolve_secret, nginx_binary=None, fetch_env=None):
        meta = deployment["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = os.path.join(data_dir, "workloads", self.namespace, self.name)
        self.resolve_secret = resolve_secret     # (namespace, name) -> Secret or None (registry credentials)
        self.nginx = nginx_binary
        self.fetch_env = dict(fetch_env or {})      # the agent's settings for every fetcher (the shared blob cache)
        self.template_hash = None
        self.init_hash = None
        self.replicas = 0
        self.generation = 0
        self.fetcher = None
        self.fetched = False
        self.fetch_failures = 0
        self.fetch_next = 0.0
        self.apps = []                # [(Process, port)]
        self.metrics_ports = []       # per replica: its keyless metrics port, or None
        self.draining = []            # [(Process, port, metrics port, since)]: out of nginx, stopped once idle
        self.scaling = None           # ScalingParams with spec.autoscaling, else None
        self.activator_port = None    # set by the agent for a deployment that can scale to zero
        self.ready_ports = ()         # replicas that passed their readiness probe at the last sync
        self.proxy = None
        preferred = None
        endpoint = (meta.get("annotations") or {}).get(names.LOCAL_ENDPOINT) or ""
        if endpoint.rpartition(":")[2].isdigit():
            preferred = int(endpoint.rpartition(":")[2])
        self.proxy_port = free_port(preferred)
        self.problem = None           # (reason, message) while something keeps the workload from progressing
        self._volume_versions = {}
        self.template = None

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _vol_dir(self, name):
        return os.path.join(self.dir, "volumes", name)

    def _mounts(self, container):
        return sorted(((m["mountPath"], self._vol_dir(m["name"])) for m in container.get("volumeMounts") or []),
                      key=lambda m: -len(m[0]))

    @staticmethod
    def _rewrite(value, mounts):
        for mount_path, local in mounts:
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return local + value[len(mount_path.rstrip("/")):]
        return value

    def _env(self, container, overrides=None):
        """The container's env as the kubelet would give it, over the short inherited allowlist (INHERITED_ENV)."""
        env = inherited_env()
        mounts = self._mounts(container)
        for item in container.get("env") or []:
            if "valueFrom" in item:
                ref = (item["valueFrom"] or {}).get("secretKeyRef") or {}
                secret = self.resolve_secret(self.namespace, ref.get("name"))
                raw = ((secret or {}).get("data") or {}).get(ref.get("key"))
                if raw is None:
                    if ref.get("optional"):
                        continue
                    raise LookupError(f"secret {ref.get('name')} has no key {ref.get('key')}")
                env[item["name"]] = base64.b64decode(raw).decode()
            else:
                env[item["name"]] = self._rewrite(item.get("value") or "", mounts)
        for name, value in (overrides or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def _containers(self):
        spec = self.template["spec"]
        app = next((c for c in spec["containers"] if c["name"] != "tls-proxy"), spec["containers"][0])
        proxy = next((c for c in spec["containers"] if c["name"] == "tls-proxy"), None)
        return (spec.get("initContainers") or []), app, proxy

    # --- volumes ---------------------------------------------------------------------------------------------------
    def _materialise(self, secrets, configmaps):
        """Bring Secret/ConfigMap volumes up to date; returns a problem message or None."""
        for vol in self.template["spec"].get("volumes") or []:
            directory = self._vol_dir(vol["name"])
            if "emptyDir" in vol:
                os.makedirs(directory, exist_ok=True)
                continue
            source = vol.get("secret") or vol.get("configMap")
            if source is None:
                continue
            is_secret = "secret" in vol
            ref = source.get("secretName") if is_secret else source.get("name")
            obj = (secrets if is_secret else configmaps).get((self.namespace, ref))
            if obj is None and is_secret:
                obj = self.resolve_secret(self.namespace, ref)
            if obj is None:
                if source.get("optional"):
                    if self._volume_versions.get(vol["name"]) is not None:
                        _write_files(directory, {})
                    os.makedirs(directory, exist_ok=True)
                    self._volume_versions[vol["name"]] = None
                    continue
                return f"{'Secret' if is_secret else 'ConfigMap'} {ref} not found for volume {vol['name']}"
            version = obj["metadata"].get("resourceVersion")
            if self._volume_versions.get(vol["name"]) == version and os.path.isdir(directory):
                continue
            data = obj.get("data") or {}
            files = ({k: base64.b64decode(v) for k, v in data.items()} if is_secret
                     else {k: v.encode() for k, v in data.items()})
            _write_files(directory, files)
            self._volume_versions[vol["name"]] = version
        return None

    # --- lifecycle -------------------------------------------------------------------------------------------------
    def stop(self, remove=False):
        for proc, _port in self.apps:
            proc.stop()
        for proc, *_rest in self.draining:
            proc.stop()
        self.apps = []
        self.metrics_ports = []
        self.draining = []
        if self.proxy:
            self.proxy.stop()
            self.proxy = None
        if self.fetcher:
            self.fetcher.stop()
            self.fetcher = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)     # keys and TLS keys do not linger on disk

    def pids(self):
        procs = [p for p, _ in self.apps] + [d[0] for d in self.draining] + [p for p in (self.proxy, self.fetcher)
                                                                               if p]
        return [p.pid for p in procs if p.running()]

    def sync(self, deployment, secrets, configmaps):
        """One kubelet-like step for this Deployment: adopt spec changes, fetch, run, supervise."""
        spec = deployment["spec"]
        self.generation = deployment["metadata"].get("generation") or 1
        template = spec["template"]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        init_containers, app, proxy = (None, None, None)
        if digest != self.template_hash:
            self.template = template
            init_containers, app, proxy = self._containers()
            init_digest = hashlib.sha256(json.dumps(init_containers, sort_keys=True).encode()).hexdigest()
            self.stop()                                      # Recreate: the old template's processes go first
            if init_digest != self.init_hash:
                self.fetched = False
            self.template_hash, self.init_hash = digest, init_digest
        init_containers, app, proxy = self._containers()
        known = {app["name"], (proxy or {}).get("name")}
        extra = [c["name"] for c in self.template["spec"]["containers"] if c["name"] not in known]
        if extra:
            # (a vLLM pod's auth-proxy): the agent runs one app behind nginx, so it would run the app unchecked
            self.problem = ("Unsupported", f"embedded mode runs one model server behind nginx; this pod also needs "
                                           f"{', '.join(extra)} (vLLM deployments need a cluster)")
            return
        self.replicas = int(spec.get("replicas", 1))
        self.scaling = scaling_params.of_deployment(deployment)
        problem = self._materialise(secrets, configmaps)
        if problem:
            self.problem = ("VolumeMissing", problem)
            return
        if not self.fetched:
            if not self._run_init(init_containers):
                return
        self._run_apps(app)
        self.ready_ports = tuple(self._probe_ready(app)) if self.scaling else ()
        self._run_proxy(proxy)
        self._drain()
        self.problem = self._crash_problem()

    def _run_init(self, init_containers):
        """Run the fetcher to completion; a failure is retried with backoff, each attempt with freshly resolved env
        (a fixed credentials Secret is picked up without a restart)."""
        if not init_containers:
            self.fetched = True
            return True
        if self.fetcher is not None:
            code = self.fetcher.proc.poll() if self.fetcher.proc else -1
            if code is None:
                return False
            if code == 0:
                self.fetcher, self.fetched, self.problem, self.fetch_failures = None, True, None, 0
                return True
            self.fetch_failures += 1
            why = fetch_log.failure_cause(self.fetcher.log_tail()) or self.fetcher.last_exit or f"exit {code}"
            self.problem = ("FetchFailed", f"model fetch failed (attempt {self.fetch_failures}): {why}")
            self.fetch_next = time.monotonic() + min(60.0, 2.0 ** (self.fetch_failures - 1))
            self.fetcher = None
            return False
        if time.monotonic() < self.fetch_next:
            return False
        container = init_containers[0]
        try:
            env = self._env(container, self.fetch_env)
        except LookupError as exc:
            self.problem = ("FetchFailed", f"model fetch cannot start: {exc}")
            return False
        self.fetcher = Process("model-fetcher", local_command(container.get("command") or []) +
                               list(container.get("args") or []), env, self.dir,
                               os.path.join(self.dir, "logs", "model-fetcher.log"))
        self.fetcher.start()
        return False

    def _app_env(self, app, port, metrics_port=None):
        overrides = {"PORT": str(port)}
        if any(e.get("name") == "FOUNDRY_PREDICTIVE_PORT" for e in app.get("env") or []):
            overrides["FOUNDRY_PREDICTIVE_PORT"] = str(port)
        if metrics_port is not None:
            overrides.update(FOUNDRY_METRICS_PORT=str(metrics_port), FOUNDRY_METRICS_HOST="127.0.0.1")
        return self._env(app, overrides)

    def _app_argv(self, app, port):
        args = [self._rewrite(a, self._mounts(app)) for a in app.get("args") or []]
        for i, arg in enumerate(args[:-1]):
            if arg == "--port":
                args[i + 1] = str(port)
            if arg == "--host":
                args[i + 1] = "127.0.0.1"
        return local_command(app.get("command") or []) + args

    def _run_apps(self, app):
        while len(self.apps) > self.replicas:
            proc, port = self.apps.pop()
            metrics_port = self.metrics_ports.pop()
            if self.scaling and proc.running():
                self.draining.append((proc, port, metrics_port, time.monotonic()))   # nginx forgets it first
            else:
                proc.stop()
        while len(self.apps) < self.replicas:
            index = len(self.apps)
            port = free_port()
            metrics_port = (free_port() if any(e.get("name") == "FOUNDRY_METRICS_PORT" for e in app.get("env") or [])
                            else None)
            try:
                env = self._app_env(app, port, metrics_port)
            except LookupError as exc:
                self.problem = ("ConfigError", str(exc))
                return
            proc = Process(f"{app['name']}-{index}", self._app_argv(app, port), env, self.dir,
                           os.path.join(self.dir, "logs", f"{app['name']}-{index}.log"))
            self.apps.append((proc, port))
            self.metrics_ports.append(metrics_port)
        for proc, _port in self.apps:
            proc.supervise()

    def _nginx_config(self):
        tls_dir = self._vol_dir("tls")
        run = os.path.join(self.dir, "nginx")
        os.makedirs(run, exist_ok=True)
        ports = tuple(port for _p, port in self.apps)
        if self.scaling:
            # an autoscaled deployment's nginx sends only to ready replicas (a loading one would answer 503), the
            # activator catching the rest; without an activator and no replica ready yet, all of them as before
            ports = self.ready_ports or (ports if not self.activator_port else ())
        params = nginx_builder.NginxParams(
            listen=f"127.0.0.1:{self.proxy_port}", app_ports=ports, activator_port=self.activator_port,
            cert_path=os.path.join(tls_dir, "tls.crt"), key_path=os.path.join(tls_dir, "tls.key"), temp_dir=run,
            pid_path=os.path.join(run, "nginx.pid"), error_log="stderr", access_log="off", workers="1")
        path = os.path.join(run, "nginx.conf")
        text = nginx_builder.render(params)
        changed = not os.path.exists(path) or open(path).read() != text
        if changed:
            with open(path, "w") as fh:
                fh.write(text)
        return path, changed

    def _run_proxy(self, proxy):
        if proxy is None or not self.nginx or not (self.apps or self.activator_port):
            return
        conf, changed = self._nginx_config()
        if self.proxy is None:
            # Started as root, nginx would run its workers as `nobody`, who cannot reach the temp dirs under a
            # private data dir (request bodies of uploads fail with EACCES): keep them the agent's own user.
            directives = "daemon off;" + (" user root;" if hasattr(os, "geteuid") and os.geteuid() == 0 else "")
            self.proxy = Process("tls-proxy", [self.nginx, "-e", "stderr", "-c", conf, "-p",
                                               os.path.dirname(conf), "-g", directives],
                                 inherited_env(), os.path.dirname(conf), os.path.join(self.dir, "logs", "nginx.log"))
        elif changed and self.proxy.running():
            os.kill(self.proxy.pid, 1)              # SIGHUP: reload the upstreams, keep the listening socket
        self.proxy.supervise()

    def _crash_problem(self):
        for proc, _port in self.apps:
            if proc.restarts >= CRASH_LOOP_RESTARTS and not proc.running():
                tail = [line for line in proc.log_tail().splitlines() if line.strip() and not line.startswith("---")]
                return ("CrashLoopBackOff", f"{proc.name} keeps exiting ({proc.last_exit}, {proc.restarts} restarts)"
                                            + (f": {tail[-1][:300]}" if tail else ""))
        if self.proxy and self.proxy.restarts >= CRASH_LOOP_RESTARTS and not self.proxy.running():
            return ("CrashLoopBackOff", f"nginx keeps exiting ({self.proxy.last_exit}): "
                                        f"{self.proxy.log_tail().strip().splitlines()[-1:]}")
        return None

    # --- autoscaling -----------------------------------------------------------------------------------------------
    def readiness_path(self):
        _init, app, _proxy = self._containers() if self.template else ([], {}, None)
        return ((app.get("readinessProbe") or {}).get("httpGet") or {}).get("path")

    def _probe_ready(self, app):
        path = ((app.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
        return [port for proc, port in self.apps if proc.running() and (_probe(port, path) if path else True)]

    def replica_ports(self):
        """(port, keyless metrics URL or None) of each replica whose process runs (ready or not): where the
        activator looks for a ready one."""
        return [(port, f"http://127.0.0.1:{m}{names.METRICS_PATH}" if m else None)
                for (proc, port), m in zip(list(self.apps), list(self.metrics_ports), strict=False) if proc.running()]

    def metrics_urls(self):
        """The keyless metrics URL of each ready replica (the autoscaler reads their gauges)."""
        ready = set(self.ready_ports)
        return [f"http://127.0.0.1:{m}{names.METRICS_PATH}" if m else None
                for (_proc, port), m in zip(list(self.apps), list(self.metrics_ports), strict=False) if port in ready]

    def start_failure(self):
        """Why a replica cannot come up now (a fetch failure, a model server that exited), else None."""
        if self.problem and self.problem[0] not in ("Restarting",):
            return self.problem[1]
        for proc, _port in list(self.apps):
            if proc.last_exit and not proc.running():
                tail = [line for line in proc.log_tail().splitlines() if line.strip() and not line.startswith("---")]
                return f"the model server {proc.last_exit}" + (f": {tail[-1][:300]}" if tail else "")
        return None

    def app_env(self):
        """The model server's environment as it runs here (the activator builds the same auth from it)."""
        _init, app, _proxy = self._containers()
        return self._env(app)

    def _drain(self, grace_s=2.0, limit_s=300.0):
        """Stop a removed replica once nginx has forgotten it (a reload ago) and it has nothing in flight."""
        from ..autoscale import gauges
        keep = []
        for proc, port, metrics_port, since in self.draining:
            waited = time.monotonic() - since
            idle = metrics_port is None or gauges.read(f"http://127.0.0.1:{metrics_port}{names.METRICS_PATH}")[0] == 0
            if not proc.running() or waited >= limit_s or (waited >= grace_s and idle):
                proc.stop()
            else:
                keep.append((proc, port, metrics_port, since))
        self.draining = keep

    # --- what it reports -------------------------------------------------------------------------------------------
    def ready_count(self):
        _init, app, proxy = self._containers() if self.template else ([], {}, None)
        path = ((app.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
        ready = 0
        for proc, port in self.apps:
            if proc.running() and (_probe(port, path) if path else True):
                ready += 1
        if proxy is not None and self.nginx and not (self.proxy and self.proxy.running() and
                                                     _tcp_open(self.proxy_port)):
            return 0
        return ready

    def download_progress(self):
        """'1.2 GiB of 5.0 GiB (24%)' from the running fetcher's last progress line, else None."""
        if self.fetcher is None or not self.fetcher.running():
            return None
        return fetch_log.download_progress(self.fetcher.log_tail())

    def endpoint(self):
        _init, _app, proxy = self._containers() if self.template else ([], {}, None)
        if proxy is not None and self.nginx:
            return f"https://127.0.0.1:{self.proxy_port}"
        if self.apps:
            return f"http://127.0.0.1:{self.apps[0][1]}"
        return None

    def metrics_endpoint(self):
        """The first replica's keyless metrics URL (each replica has its own port), or None."""
        if self.metrics_ports and self.metrics_ports[0]:
            return f"http://127.0.0.1:{self.metrics_ports[0]}{names.METRICS_PATH}"
        return None

    def status(self):
        ready = self.ready_count() if self.fetched else 0
        running = sum(1 for proc, _ in self.apps if proc.running())
        conditions = [{"type": "Available", "status": "True" if ready >= self.replicas else "False",
                       "reason": "MinimumReplicasAvailable" if ready >= self.replicas else "MinimumReplicasUnavailable",
                       "message": f"{ready}/{self.replicas} replicas ready"}]
        if self.problem:
            conditions.append({"type": "Progressing", "status": "False", "reason": self.problem[0],
                               "message": self.problem[1]})
        else:
            conditions.append({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"
                               if ready >= self.replicas else "ReplicaSetUpdated", "message": "local processes"})
        download = self.download_progress()
        if download:
            conditions.append({"type": names.DOWNLOAD_CONDITION, "status": "True", "reason": "Downloading",
                               "message": download})
        restarted = [proc for proc, _ in self.apps if proc.total_restarts]
        if restarted:
            conditions.append({"type": names.RESTARTS_CONDITION, "status": "True", "reason": "ProcessExited",
                               "message": "; ".join(f"{p.name} restarted {p.total_restarts} time(s), last "
                                                    f"{p.last_exit}" for p in restarted)})
        return {"observedGeneration": self.generation, "replicas": self.replicas, "updatedReplicas": running,
                "readyReplicas": ready, "availableReplicas": ready,
                "unavailableReplicas": max(0, self.replicas - ready), "conditions": conditions}

