"""`foundry-inference activator`: what answers a scale-to-zero deployment's endpoint on a cluster while none of its
replicas is ready (the container of the `<name>-activator` pod, builders/activator.py; docs/autoscaling.md).

The same Gate and handlers as embedded mode (activator.py), behind the same nginx TLS sidecar as the model pods, on
127.0.0.1:PORT. A request is authenticated with the deployment's own keys and Entra settings (the pod's environment,
exactly as the model server), counted against the hold bounds (FOUNDRY_MAX_HELD_REQUESTS, 128 MiB of bodies: 429 +
Retry-After beyond them), then:
- wakes the Deployment through its scale subresource (0 -> 1 only; the pod's `inference-activator` account may do
  nothing else to it), at once, and again every second while it holds the request (a request that came as the
  deployment was going to zero found its last replica still there);
- waits for `GET /ready` on the Service `<name>-replicas` to answer 2xx (kube-proxy routes only to ready pods: the
  connection is refused while none is), reached at its ClusterIP (FOUNDRY_REPLICAS_ADDRESS, no cluster DNS needed)
  over HTTPS, verifying the deployment's certificate (the CA in its TLS Secret) under the main Service's name
  (FOUNDRY_SERVICE_HOST, which the certificate carries);
- forwards the request there with its credentials (the model server checks them again), the answer streaming back;
- while it holds requests, reads its ModelDeployment's status every second: state Error (a fetch that failed, an
  image that cannot be pulled, a server that keeps exiting) answers every held request 503 with that message;
- FOUNDRY_HOLD_TIMEOUT_S without a ready replica: 429 + Retry-After.
"""
import asyncio
import logging
import os
import ssl
import threading

import tornado.httpserver
import tornado.simple_httpclient
import tornado.web

from foundry_inference import logs
from foundry_inference.apps.lifecycle import stop_on_signals
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.config import ConfigurationError
from foundry_inference.envreader import EnvReader
from foundry_inference.store import errors

from . import cluster
from .activator import Activate, Gate, Probe

log = logging.getLogger("foundry_inference.operator.activator")
STATUS_POLL_S = 1.0


class Replicas:
    """The model pods behind `<name>-replicas`: what the Gate waits for and what Activate forwards to (the shape of
    authproxy.Upstream: base, client, max_body_bytes)."""

    def __init__(self, host, address, port, ca_file, max_body_bytes):
        context = ssl.create_default_context(cafile=ca_file if ca_file and os.path.exists(ca_file) else None)
        self.base = f"https://{host}:{port}"
        self.max_body_bytes = max_body_bytes
        # the URL names the main Service (SNI and the certificate check use it); the connection goes to the
        # replicas Service's address
        self.client = tornado.simple_httpclient.SimpleAsyncHTTPClient(
            force_instance=True, max_clients=1024, max_body_size=1 << 40, max_buffer_size=1 << 20,
            hostname_mapping={host: address}, defaults={"ssl_options": context})


class OwnerStatus:
    """The ModelDeployment's (or InferenceService's) state, read every second while requests are held; its message
    when the state is Error."""

    def __init__(self, store, kind, namespace, name):
        self.store, self.kind, self.namespace, self.name = store, kind, namespace, name
        self.failure = None
        self.wanted = threading.Event()

    def read(self):
        try:
            status = self.store.get(self.kind, self.namespace, self.name).get("status") or {}
        except errors.StoreError as exc:
            log.debug("status of %s/%s not read: %s", self.namespace, self.name, exc.message)
            return
        self.failure = (status.get("message") or "state Error") if status.get("state") == "Error" else None

    def run(self, stop, gate):
        while not stop.is_set():
            if gate.held:
                self.read()
            else:
                self.failure = None
            stop.wait(STATUS_POLL_S)


class ReplicasWorkload:
    """What the Gate asks of its workload, on a cluster."""

    def __init__(self, replicas, status):
        self.replicas, self.status = replicas, status

    def start_failure(self):
        return self.status.failure


class ReplicasGate(Gate):
    # a request that arrived in the instant between the autoscaler's switch of the Service to this pod and its
    # replicas-0 write found a replica there (no wake) that is now going away: held requests ask again every second
    rewake_s = 1.0
    # the route through `<name>-replicas` to a replica that was going away can outlive it for a moment (kube-proxy
    # catching up): a request sent there and not answered is held and woken again
    retry_unreachable = True

    async def _ready_port(self):
        resp = await self._get(self.workload.replicas.base + "/ready")
        return self.workload.replicas if resp is not None and 200 <= resp.code < 400 else None


def settings_from_env(env=None):
    read = EnvReader(os.environ if env is None else env)
    found = {"port": read.integer("PORT", 5000, low=1, high=65535),
             "name": read.text("FOUNDRY_DEPLOYMENT_NAME"), "namespace": read.text("FOUNDRY_DEPLOYMENT_NAMESPACE"),
             "kind": read.text("FOUNDRY_OWNER_KIND") or "ModelDeployment",
             "service_host": read.text("FOUNDRY_SERVICE_HOST"), "address": read.text("FOUNDRY_REPLICAS_ADDRESS"),
             "replicas_port": read.integer("FOUNDRY_REPLICAS_PORT", 443, low=1, high=65535),
             "ca_file": read.text("FOUNDRY_CA_FILE"),
             "max_held": read.integer("FOUNDRY_MAX_HELD_REQUESTS", 64, low=0, high=100000),
             "hold_timeout_s": read.number("FOUNDRY_HOLD_TIMEOUT_S", 120.0, low=0.1, high=86400.0),
             "max_body_bytes": read.integer("FOUNDRY_MAX_BODY_BYTES", 50 << 20, low=1, high=1 << 34)}
    missing = [var for var, key in (("FOUNDRY_DEPLOYMENT_NAME", "name"), ("FOUNDRY_DEPLOYMENT_NAMESPACE", "namespace"),
                                    ("FOUNDRY_SERVICE_HOST", "service_host"),
                                    ("FOUNDRY_REPLICAS_ADDRESS", "address")) if not found[key]]
    if missing:
        raise ConfigurationError(f"{', '.join(missing)} required (the activator pod's environment)")
    if found["kind"] not in ("ModelDeployment", "InferenceService"):
        raise ConfigurationError(f"FOUNDRY_OWNER_KIND: {found['kind']!r} is not ModelDeployment or InferenceService")
    return found


def make_app(settings, store, *, auth=None, stop=None):
    """(Application, Gate, status thread) for one deployment; `stop` (threading.Event) ends the status thread."""
    replicas = Replicas(settings["service_host"], settings["address"], settings["replicas_port"],
                        settings["ca_file"], settings["max_body_bytes"])
    status = OwnerStatus(store, settings["kind"], settings["namespace"], settings["name"])
    namespace, name = settings["namespace"], settings["name"]

    def wake(_workload):
        try:
            if cluster.wake(store, namespace, name):
                logs.event(log, "waking", namespace=namespace, name=name)
        except errors.StoreError as exc:      # the held request times out (429) rather than failing here
            log.warning("could not wake %s/%s: %s", namespace, name, exc.message)

    gate = ReplicasGate(ReplicasWorkload(replicas, status), wake, settings["max_held"], settings["hold_timeout_s"],
                        replicas.client)
    auth = auth or AuthService.from_settings(AuthSettings.from_env())
    app = tornado.web.Application([(r"/(?:health|ready)", Probe), (r"/.*", Activate)], auth=auth, gate=gate,
                                  upstreams=lambda upstream: upstream, compress_response=False, xsrf_cookies=False)
    thread = threading.Thread(target=status.run, args=(stop or threading.Event(), gate), name="owner-status",
                              daemon=True)
    thread.start()
    return app, gate, thread


async def serve(settings, store, *, host="127.0.0.1", stop=None):
    done = threading.Event()
    app, _gate, thread = make_app(settings, store, stop=done)
    server = tornado.httpserver.HTTPServer(app, max_body_size=settings["max_body_bytes"] + 1,
                                          idle_connection_timeout=75)
    server.listen(settings["port"], host)
    logs.event(log, "activator listening", port=settings["port"], namespace=settings["namespace"],
               name=settings["name"])
    stop = stop_on_signals(stop)
    await stop.wait()
    server.stop()
    done.set()
    thread.join(5)
    return 0


def main(args):
    settings = settings_from_env()
    if getattr(args, "port", None):
        settings["port"] = args.port
    from foundry_inference.store.factory import open_store
    store = open_store("kubernetes", kubeconfig=getattr(args, "kubeconfig", None))
    try:
        return asyncio.run(serve(settings, store, host=getattr(args, "address", None) or "127.0.0.1"))
    finally:
        store.close()
