"""The chart under test, driven by real Helm code: the Helm v4 Go SDK through `helm-python-sdk` (no helm binary).

- `render(values)`: `helm template` (offline; schema validation included) -> `Rendered` (objects, NOTES).
- `lint(values)`: `helm lint --strict`.
- `install` / `upgrade` / `uninstall`: real releases on a cluster (the test apiserver). Helm v4 applies with
  server-side apply and discovers the cluster's capabilities, so the chart's 1.20 branches are exercised.
- `server_side_apply(api_client, objects)`: apply rendered objects the way `kubectl apply --server-side` does.
- `sa_kubeconfig(kube, ns, sa)`: a kubeconfig holding a ServiceAccount token from the TokenRequest API.
- `PodProcess`: run a container of a live Deployment as a local process the way a kubelet would: its command, its
  env (valueFrom resolved), its ConfigMap/Secret volumes written to files, under a given kubeconfig.
"""
import base64
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "foundry-inference"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DEFAULT_NAMESPACE = "foundry-local-operator"
DEFAULT_RELEASE = "foundry-inference"
# the console script next to the interpreter (never `python -m`: the repo root's operator/ would shadow the stdlib)
CLI = os.path.join(os.path.dirname(sys.executable), "foundry-inference")


def load_values(path):
    return yaml.safe_load(Path(path).read_text()) or {}


def chart_values():
    """The chart's default values (values.yaml)."""
    return load_values(CHART / "values.yaml")


def key(obj):
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace"), meta["name"]


@dataclass
class Rendered:
    files: dict                                  # template path -> rendered text
    objects: list = field(default_factory=list)  # every manifest document, in template order

    @classmethod
    def from_files(cls, files):
        objects = []
        for path in sorted(files):
            if not path.endswith((".yaml", ".yml")):
                continue
            for doc in yaml.safe_load_all(files[path]):
                if doc:
                    doc.setdefault("metadata", {})
                    objects.append(doc)
        return cls(files, objects)

    @property
    def notes(self):
        return next((text for path, text in self.files.items() if path.endswith("NOTES.txt")), "")

    def keys(self):
        return {key(o) for o in self.objects}

    def of_kind(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind, name, namespace=None):
        for obj in self.objects:
            meta = obj["metadata"]
            if obj["kind"] == kind and meta["name"] == name and (namespace is None or meta.get("namespace") ==
                                                                  namespace):
                return obj
        raise KeyError(f"{kind} {namespace or '*'}/{name} not rendered; rendered: {sorted(self.keys(), key=str)}")

    def container(self, deployment, index=0):
        return self.get("Deployment", deployment)["spec"]["template"]["spec"]["containers"][index]

    def env(self, deployment, index=0):
        return {e["name"]: e.get("value") for e in self.container(deployment, index).get("env", [])}

    def operator_config(self):
        return yaml.safe_load(self.get("ConfigMap", "inference-operator-config")["data"]["config.yaml"])


def offline(values):
    """Values for a render without a cluster: there the chart refuses to generate an admin key (it would change on
    every render) unless apiKey.generateWithoutCluster says so; a test that does not set it itself opts in."""
    values = {**(values or {})}
    values["apiKey"] = {"generateWithoutCluster": True, **(values.get("apiKey") or {})}
    return values


def render(values=None, *, release=DEFAULT_RELEASE, namespace=DEFAULT_NAMESPACE, strict=False):
    """`helm template`; raises helm.HelmValuesError (schema) or helm.HelmRenderError (a template's `fail`).
    `strict`: the values as given (else `offline(values)`)."""
    with helm.Chart.load(CHART) as chart:
        return Rendered.from_files(chart.render(values if strict else offline(values), name=release,
                                                namespace=namespace, is_install=True))


def lint(values=None, namespace=DEFAULT_NAMESPACE, kube_version=None):
    """`helm lint --strict` (with `--kube-version` when given: deprecated API checks for that version)."""
    return helm.lint(CHART, offline(values), strict=True, namespace=namespace, kube_version=kube_version)


def lint_problems(report):
    """Warnings and errors of a lint report (info such as 'icon is recommended' is not a problem)."""
    return [m for m in report["messages"] if m["severity"] >= 2] + [e for e in report.get("errors", [])
                                                                     if e not in {m["error"] for m in
                                                                                  report["messages"]}]


# --- releases on a cluster ------------------------------------------------------------------------------------------
def _config(kubeconfig, namespace):
    return helm.Config(kubeconfig_path=kubeconfig, namespace=namespace)


def install(kubeconfig, values, *, release=DEFAULT_RELEASE, namespace=DEFAULT_NAMESPACE, timeout=120):
    with helm.Chart.load(CHART) as chart, _config(kubeconfig, namespace) as cfg:
        return cfg.install(chart, release, values, namespace=namespace, timeout=timeout)


def upgrade(kubeconfig, values, *, release=DEFAULT_RELEASE, namespace=DEFAULT_NAMESPACE, timeout=120):
    with helm.Chart.load(CHART) as chart, _config(kubeconfig, namespace) as cfg:
        return cfg.upgrade(chart, release, values, namespace=namespace, timeout=timeout, reset_values=True)


def uninstall(kubeconfig, *, release=DEFAULT_RELEASE, namespace=DEFAULT_NAMESPACE):
    with _config(kubeconfig, namespace) as cfg:
        return cfg.uninstall(release, ignore_not_found=True, timeout=120)


def manifest_objects(manifest):
    return [d for d in yaml.safe_load_all(manifest or "") if d]


# --- applying and reading objects -----------------------------------------------------------------------------------
def _dynamic(api_client):
    from kubernetes.dynamic import DynamicClient
    return DynamicClient(api_client)


def is_hook(obj):
    return "helm.sh/hook" in ((obj.get("metadata") or {}).get("annotations") or {})


def server_side_apply(api_client, objects, field_manager="foundry-chart-test"):
    """Apply objects with server-side apply (PATCH application/apply-patch+yaml, not a dry run), hooks first as Helm
    orders them; returns the live objects."""
    dyn = _dynamic(api_client)
    live = []
    for obj in sorted(objects, key=lambda o: not is_hook(o)):
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        live.append(resource.server_side_apply(body=obj, field_manager=field_manager, force_conflicts=True).to_dict())
    return live


def read(api_client, obj):
    """The live object for a manifest object, or None."""
    from kubernetes.dynamic.exceptions import NotFoundError
    resource = _dynamic(api_client).resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    meta = obj["metadata"]
    try:
        return resource.get(name=meta["name"], namespace=meta.get("namespace")).to_dict()
    except NotFoundError:
        return None


def delete(api_client, obj):
    from kubernetes.dynamic.exceptions import NotFoundError
    resource = _dynamic(api_client).resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    meta = obj["metadata"]
    try:
        resource.delete(name=meta["name"], namespace=meta.get("namespace"))
    except NotFoundError:
        pass


def served(api_client, api_version, kind):
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
    try:
        _dynamic(api_client).resources.get(api_version=api_version, kind=kind)
        return True
    except ResourceNotFoundError:
        return False


def labelled(api_client, selector, kinds):
    """Every live object of `kinds` ((apiVersion, kind) pairs) carrying `selector`, as (kind, namespace, name)."""
    dyn = _dynamic(api_client)
    found = set()
    for api_version, kind in kinds:
        for item in dyn.resources.get(api_version=api_version, kind=kind).get(label_selector=selector).items:
            found.add((kind, item.metadata.namespace, item.metadata.name))
    return found


# --- running the chart's workloads as local processes ---------------------------------------------------------------
def sa_kubeconfig(kube, namespace, service_account, seconds=3600):
    """A kubeconfig for `service_account`, with a token from the TokenRequest API (as a projected token in a pod)."""
    import kubernetes
    core = kubernetes.client.CoreV1Api(kube.api_client())
    answer = core.create_namespaced_service_account_token(service_account, namespace,
                                                          {"spec": {"expirationSeconds": seconds}})
    return kube.token_kubeconfig(f"sa-{namespace}-{service_account}", answer.status.token)


class PodProcess:
    """One container of a live Deployment, run locally as the kubelet would run it in its pod.

    ConfigMap and Secret volumes are read from the apiserver (as admin, like the kubelet) and written under a
    temporary directory; environment values, arguments and mounted text files naming a mount path are pointed
    there. The process talks to the apiserver with `kubeconfig` (`--kubeconfig` is added: the stand-in for the
    in-cluster ServiceAccount token).
    `args_override` replaces argument values (e.g. {"--port": "12345"}); `extra_args` and `extra_env` are added.
    """

    def __init__(self, api_client, namespace, deployment, *, kubeconfig, container=0, args_override=None,
                 extra_args=(), extra_env=None, workdir=None):
        import kubernetes
        self.api_client = api_client
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"pod-{deployment}-"))
        apps = kubernetes.client.AppsV1Api(api_client)
        self.deployment = api_client.sanitize_for_serialization(apps.read_namespaced_deployment(deployment, namespace))
        self.namespace = namespace
        pod = self.deployment["spec"]["template"]["spec"]
        self.container = pod["containers"][container]
        self.mounts = self._materialize(pod.get("volumes", []), self.container.get("volumeMounts", []))
        self._redirect_paths_in_config_files()
        command = [*self.container.get("command", []), *self.container.get("args", [])]
        if not command or command[0] != "foundry-inference":
            raise ValueError(f"{deployment}: expected the foundry-inference console script, got {command}")
        args = self._local(command[1:])
        for flag, value in (args_override or {}).items():
            args[args.index(flag) + 1] = value
        self.argv = [CLI, *args, "--kubeconfig", kubeconfig, *extra_args]
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir), "LANG": "C.UTF-8",
                    "PYTHONSAFEPATH": "1", **self._environment(), **(extra_env or {})}
        self.log_path = self.dir / "process.log"
        self.proc = None

    def _local(self, values):
        """Values naming a file under a mount path point at the materialized copy."""
        out = []
        for value in values:
            for mount, local in self.mounts.items():
                if value == mount or value.startswith(mount.rstrip("/") + "/"):
                    value = str(local) + value[len(mount.rstrip("/")):]
                    break
            out.append(value)
        return out

    def _materialize(self, volumes, mounts):
        import kubernetes
        core = kubernetes.client.CoreV1Api(self.api_client)
        by_name = {v["name"]: v for v in volumes}
        placed = {}
        for mount in mounts:
            volume = by_name[mount["name"]]
            local = self.dir / "volumes" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                src = volume["configMap"]
                data = core.read_namespaced_config_map(src["name"], self.namespace).data or {}
                files = {k: v.encode() for k, v in data.items()}
            elif "secret" in volume:
                src = volume["secret"]
                raw = core.read_namespaced_secret(src["secretName"], self.namespace).data or {}
                files = {k: base64.b64decode(v) for k, v in raw.items()}
            elif "emptyDir" in volume:
                src, files = {}, {}
            else:
                raise ValueError(f"volume {mount['name']}: only configMap, secret and emptyDir are supported")
            items = src.get("items")
            if items:
                files = {item["path"]: files[item["key"]] for item in items}
            for path, content in files.items():
                target = local / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            placed[mount["mountPath"]] = local
        return placed

    def _redirect_paths_in_config_files(self):
        """A mounted configuration file naming a file of another mount (the operator's config names its catalog
        source) points at the materialized copy, as the path would resolve inside the pod."""
        mounts = sorted(self.mounts, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(m.rstrip("/")) + r"(?=/|\s|$|[\"'])" for m in mounts))
        targets = {m.rstrip("/"): str(local) for m, local in self.mounts.items()}
        for local in self.mounts.values():
            for path in local.rglob("*"):
                if not path.is_file():
                    continue
                try:
                    text = path.read_text()
                except UnicodeDecodeError:
                    continue
                changed = pattern.sub(lambda m: targets[m.group(0)], text)     # one pass: no double rewriting
                if changed != text:
                    path.write_text(changed)

    def _environment(self):
        import kubernetes
        core = kubernetes.client.CoreV1Api(self.api_client)
        env = {}
        for item in self.container.get("env", []):
            if "value" in item:
                env[item["name"]] = self._local([item["value"]])[0]
            elif "valueFrom" in item:
                ref = item["valueFrom"]
                if "secretKeyRef" in ref:
                    secret = core.read_namespaced_secret(ref["secretKeyRef"]["name"], self.namespace)
                    env[item["name"]] = base64.b64decode(secret.data[ref["secretKeyRef"]["key"]]).decode()
                elif "configMapKeyRef" in ref:
                    cm = core.read_namespaced_config_map(ref["configMapKeyRef"]["name"], self.namespace)
                    env[item["name"]] = cm.data[ref["configMapKeyRef"]["key"]]
                else:
                    raise ValueError(f"env {item['name']}: unsupported valueFrom {sorted(ref)}")
            else:
                env[item["name"]] = ""
        return env

    def start(self):
        out = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout=20):
        if self.running():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return None if self.proc is None else self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_for(predicate, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")
