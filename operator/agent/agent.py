"""The embedded node agent: the kubelet + deployment controller of one machine.

Every tick it lists the operator's Deployments (every namespace) and the Secrets and ConfigMaps they mount, realises
each Deployment as local processes (workload.py), writes the Deployment's status (replicas, readyReplicas,
conditions; a fetch failure or a crash loop as Progressing=False with the reason) and its reachable endpoint
(annotation `foundry.azure.com/local-endpoint`, https://127.0.0.1:<port>), and writes the installation CA to
<data-dir>/tls/ca.crt (docs/api.md, decision 10). Every model fetcher it starts shares one content-addressed blob cache,
`<data-dir>/cache` (FOUNDRY_FETCH_CACHE), limited to FOUNDRY_MODEL_CACHE_LIMIT (a size such as 20Gi; `up
--model-cache-limit`) when that is set. A Deployment that disappears has its processes stopped and its
directory (keys, TLS key) removed; shutdown() stops everything it ever started.

Autoscaled Deployments (docs/autoscaling.md): the autoscaler (its own thread) writes their replicas; one that can
scale to zero gets an activator listener, the backup of its nginx upstream; a request held there wakes the agent at
once (kick) instead of at the next tick.
"""
import base64
import logging
import os
import shutil
import threading

from foundry_inference import logs
from foundry_inference.config import ConfigurationError
from foundry_inference.store import errors

from .. import names
from ..autoscale import params as scaling_params
from ..autoscale.activator import Activator
from ..autoscale.scaler import Scaler
from ..blobcache import parse_size
from ..status import changed as status_changed
from .workload import Workload

log = logging.getLogger("foundry_inference.operator.agent")


def cache_limit(raw, what="FOUNDRY_MODEL_CACHE_LIMIT"):
    """The model cache limit (`20Gi`, `500Mi`, bytes) as bytes, None when `raw` is None; a bad value is a
    configuration error naming `what`."""
    if raw is None:
        return None
    try:
        return parse_size(raw, what)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


class NodeAgent:
    def __init__(self, store, data_dir, settings, interval=1.0, nginx_binary=None, cache_limit_bytes=None):
        self.store = store
        self.data_dir = str(data_dir)
        limit = cache_limit_bytes or cache_limit(os.environ.get("FOUNDRY_MODEL_CACHE_LIMIT") or None)
        # for every fetcher: one shared blob cache; None removes a limit the agent's own environment might carry, and
        # the pod's termination-message file (a kubelet's; here the fetcher's log is the agent's own file)
        self.fetch_env = {"FOUNDRY_FETCH_CACHE": os.path.join(self.data_dir, "cache"),
                          "FOUNDRY_FETCH_CACHE_LIMIT_BYTES": str(limit) if limit else None,
                          "FOUNDRY_FETCH_TERMINATION_LOG": None}
        self.settings = settings
        self.interval = interval
        self.nginx = nginx_binary if nginx_binary is not None else shutil.which("nginx")
        self.workloads = {}           # uid -> Workload
        self.current = ()             # the workloads after the last tick (read by the autoscaler's thread)
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self.scaler = Scaler(store, lambda: self.current, self.kick, held=lambda uid: self.activator.held(uid))
        self.activator = Activator(self.scaler.wake)
        self._ca = None
        if not self.nginx:
            logs.event(log, "nginx is not installed: deployments are served over plain HTTP on 127.0.0.1 without "
                            "the TLS sidecar", level=logging.WARNING)

    def begin_life(self):
        """Void what an earlier life of this agent reported: no process of this life runs yet, so no Deployment has
        a ready replica until its model server and sidecar answer their probes again (a client waiting for Running
        would otherwise call an endpoint that refuses connections)."""
        message = "the node agent restarted: starting this deployment's processes"
        for dep in self.store.list_all("Deployment", None, label_selector=names.SELECTOR):
            st, meta = dep.get("status") or {}, dep["metadata"]
            replicas = int(st.get("replicas") or (dep.get("spec") or {}).get("replicas") or 0)
            try:
                self.store.patch_status("Deployment", meta["namespace"], meta["name"], {
                    "readyReplicas": 0, "availableReplicas": 0, "updatedReplicas": 0, "unavailableReplicas": replicas,
                    "conditions": [
                        {"type": "Available", "status": "False", "reason": names.NODE_RESTART_REASON,
                         "message": message},
                        {"type": "Progressing", "status": "True", "reason": names.NODE_RESTART_REASON,
                         "message": message}]})
            except errors.NotFound:
                pass

    def _secret(self, namespace, name):
        try:
            return self.store.get("Secret", namespace, name)
        except errors.NotFound:
            return None

    def _write_ca(self, secrets):
        ca = secrets.get((self.settings.operatorNamespace, names.CA_SECRET))
        cert = ((ca or {}).get("data") or {}).get("tls.crt")
        if not cert or cert == self._ca:
            return
        path = os.path.join(self.data_dir, "tls", "ca.crt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(base64.b64decode(cert))
        os.replace(tmp, path)
        self._ca = cert

    def tick(self):
        deployments = self.store.list_all("Deployment", None, label_selector=names.SELECTOR)
        secrets = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                   for o in self.store.list_all("Secret", None, label_selector=names.SELECTOR)}
        configmaps = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                      for o in self.store.list_all("ConfigMap", None, label_selector=names.SELECTOR)}
        self._write_ca(secrets)
        seen = set()
        with self._lock:
            for dep in deployments:
                uid = dep["metadata"]["uid"]
                seen.add(uid)
                workload = self.workloads.get(uid)
                if workload is None:
                    workload = self.workloads[uid] = Workload(dep, self.data_dir, self._secret, self.nginx,
                                                                   self.fetch_env)
                    logs.event(log, "realising deployment", namespace=workload.namespace, name=workload.name)
                try:
                    workload.sync(dep, secrets, configmaps)
                    self._activator_for(workload, dep)
                except Exception:  # noqa: BLE001 - one broken workload must not stop the others
                    log.exception("node agent: %s/%s failed", workload.namespace, workload.name)
                    workload.problem = ("AgentError", "the node agent could not run this deployment; see its log")
                self._report(dep, workload)
            for uid in [u for u in self.workloads if u not in seen]:
                self.activator.unregister(uid)
                workload = self.workloads.pop(uid)
                logs.event(log, "stopping deleted deployment", namespace=workload.namespace, name=workload.name)
                workload.stop(remove=True)

            self.current = tuple(self.workloads.values())

    def kick(self):
        """Run the next tick now (a request waits for a replica)."""
        self._kick.set()

    def _activator_for(self, workload, dep):
        """An activator listener while the Deployment can scale to zero (and the sidecar exists to route to it)."""
        params = scaling_params.of_deployment(dep)
        if params is not None and params.scales_to_zero and self.nginx:
            if workload.activator_port is None and workload.template is not None:
                try:
                    workload.activator_port = self.activator.register(workload, params)
                except (LookupError, ConfigurationError) as exc:
                    workload.problem = ("ActivatorError", f"the activator cannot check this deployment's "
                                                          f"credentials: {exc}")
                    return
            self.activator.update(workload, params)
        elif workload.activator_port is not None:
            self.activator.unregister(workload.uid, "the deployment no longer scales to zero")
            workload.activator_port = None

    def _report(self, dep, workload):
        meta = dep["metadata"]
        new = workload.status()
        try:
            if status_changed({k: v for k, v in (dep.get("status") or {}).items() if k in new}, new):
                self.store.patch_status("Deployment", meta["namespace"], meta["name"], new)
            annotations = meta.get("annotations") or {}
            wanted = {names.LOCAL_ENDPOINT: workload.endpoint(), names.LOCAL_METRICS: workload.metrics_endpoint()}
            patch = {k: v for k, v in wanted.items() if v and annotations.get(k) != v}
            if patch:
                self.store.patch("Deployment", meta["namespace"], meta["name"], {"metadata": {"annotations": patch}})
        except errors.NotFound:
            pass

    def run(self, stop_event):
        logs.event(log, "node agent started", data_dir=self.data_dir, nginx=self.nginx or "missing",
                   model_cache=self.fetch_env["FOUNDRY_FETCH_CACHE"],
                   model_cache_limit=self.fetch_env["FOUNDRY_FETCH_CACHE_LIMIT_BYTES"] or "none")
        scaler = threading.Thread(target=self.scaler.run, args=(stop_event, self.settings.autoscaling.periodSeconds),
                                  name="autoscaler", daemon=True)
        scaler.start()
        try:
            while not stop_event.is_set():
                try:
                    self.tick()
                except errors.StoreError as exc:
                    logs.event(log, "node agent tick failed", level=logging.WARNING, error=exc.message)
                self._kick.wait(self.interval)
                self._kick.clear()
        finally:
            scaler.join(10)
            self.shutdown()
            logs.event(log, "node agent stopped")

    def pids(self):
        with self._lock:
            return [pid for w in self.workloads.values() for pid in w.pids()]

    def shutdown(self):
        """Stop every process this agent started (idempotent). Workload directories stay for the next start."""
        self.activator.stop()            # held requests are answered (503) before their replicas go
        with self._lock:
            for workload in self.workloads.values():
                workload.stop()
            self.workloads.clear()
